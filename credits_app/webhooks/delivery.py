"""One attempt at one claimed delivery: render the event, sign it, POST it, record the outcome.

A claim (dispatcher.py) sets a delivery's `next_attempt_at` to a lease. Every write here
names that lease in its WHERE: an attempt that ends after its lease ran out (when the
delivery may have been claimed again) cannot overwrite the newer outcome. The attempt row
(webhook_attempts) is written whatever happened, as the delivery's history.

A 2xx answer delivers. Anything else is a failure: another status (redirects are not
followed), a timeout, a refused connection, an unsafe destination, an unusable secret. A
failure counts an attempt and sets the next one min(BASE * 2**(attempts-1), MAX) seconds
later, scaled by a random factor in [0.8, 1.2] so that deliveries that failed together do
not all come back together, while the defaults still span more than a day; after
WEBHOOKS_MAX_ATTEMPTS attempts the delivery is `dead` (the dead letter, sent again only by a
retry or a replay). An event no longer stored (pruned) makes its delivery dead at once,
without an attempt.

Times that decide when a delivery is due come from the database's clock (PostgreSQL's, the
same for every worker host); SQLite is in-process, so there it is this process's clock.
"""
import functools
import json
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import urllib3
from flask import current_app
from sqlalchemy import bindparam, text

from ..events.catalog import event_id, render
from ..extensions import db
from ..types import UTCDateTime, utcnow
from . import signing

JITTER = 0.2  # the next attempt's delay is scaled by a random factor in [1 - JITTER, 1 + JITTER]
PRUNED = "event no longer stored (pruned)"


@dataclass(frozen=True)
class Settings:
    """The WEBHOOKS_* settings a delivery needs, read once per dispatcher run."""

    timeout: int
    max_attempts: int
    backoff_base: int
    backoff_max: int
    lease: int
    concurrency: int
    allow_private: bool

    @classmethod
    def from_config(cls, config):
        return cls(timeout=config["WEBHOOKS_TIMEOUT_SECONDS"], max_attempts=config["WEBHOOKS_MAX_ATTEMPTS"],
                   backoff_base=config["WEBHOOKS_BACKOFF_BASE_SECONDS"],
                   backoff_max=config["WEBHOOKS_BACKOFF_MAX_SECONDS"], lease=config["WEBHOOKS_LEASE_SECONDS"],
                   concurrency=config["WEBHOOKS_CONCURRENCY"], allow_private=config["WEBHOOKS_ALLOW_PRIVATE_URLS"])


@dataclass(frozen=True)
class Claim:
    """A delivery claimed until `lease` (its next_attempt_at as the claim set it), with
    what sending it needs from its endpoint."""

    id: int
    endpoint_id: int
    entry_id: int | None
    event_id: int | None
    attempts: int
    due_at: datetime
    lease: datetime
    url: str
    secret: str
    previous_secret: str | None
    previous_secret_until: datetime | None

    @property
    def msg_id(self):
        return event_id(entry_id=self.entry_id, event_row_id=self.event_id)


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to. `retry_in`: after a failed attempt, the seconds until the
    next one (for a dead delivery, the endpoint's other deliveries wait as long); None when
    delivered or pruned. `recorded`: False when the lease had run out, so the delivery's
    state was left to whoever holds it now."""

    delivery_id: int
    status: str  # delivered, pending (to be tried again), dead
    status_code: int | None
    error: str | None
    retry_in: float | None
    recorded: bool

    @property
    def delivered(self):
        return self.status == "delivered"


def backoff(attempts, settings, rand=random.random):
    """Seconds from a failed attempt (the `attempts`-th) to the next one, with jitter."""
    delay = min(settings.backoff_base * 2 ** min(attempts - 1, 62), settings.backoff_max)
    return delay * (1 - JITTER + 2 * JITTER * rand())


# The database's clock: {now} at the statement, {later} :delay seconds after it, {started}
# :ms milliseconds before it (when the attempt began). SQLite takes the values bound.
_CLOCK = {
    "postgresql": {"now": "statement_timestamp()", "later": "statement_timestamp() + :delay * interval '1 second'",
                   "started": "statement_timestamp() - :ms * interval '1 millisecond'"},
    "sqlite": {"now": ":now", "later": ":later", "started": ":started"},
}
_HELD = "WHERE id = :id AND status = 'pending' AND next_attempt_at = :lease"


def sql(dialect, template, **columns):
    """`template` for `dialect`, its times bound as UTCDateTime (shared with dispatcher.py)."""
    stmt = text(template.format(**_CLOCK[dialect]))
    times = [bindparam(n, type_=UTCDateTime) for n in ("now", "later", "started", "lease") if f":{n}" in stmt.text]
    expanding = [bindparam(n, expanding=True) for n in ("ids", "busy") if f":{n}" in stmt.text]
    stmt = stmt.bindparams(*times, *expanding)
    return stmt.columns(**columns) if columns else stmt


@functools.cache
def _statements(dialect):
    return {
        "delivered": sql(dialect, "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, "
                                  "last_attempt_at = {started}, last_status_code = :code, last_error = NULL, "
                                  "delivered_at = {now} " + _HELD),
        "failed": sql(dialect, "UPDATE webhook_deliveries SET status = :status, attempts = attempts + 1, "
                               "next_attempt_at = {later}, last_attempt_at = {started}, last_status_code = :code, "
                               "last_error = :error " + _HELD),
        "pruned": sql(dialect, "UPDATE webhook_deliveries SET status = 'dead', next_attempt_at = {now}, "
                               "last_error = :error " + _HELD),
        "attempt": sql(dialect, "INSERT INTO webhook_attempts (delivery_id, attempted_at, duration_ms, status_code, "
                                "error) SELECT :id, {started}, :ms, :code, :error "
                                "WHERE EXISTS (SELECT 1 FROM webhook_deliveries WHERE id = :id)"),
        # Deliveries claimed but not attempted go back, due :delay seconds from now, uncounted.
        "release": sql(dialect, "UPDATE webhook_deliveries SET next_attempt_at = {later} "
                                "WHERE id IN :ids AND status = 'pending' AND next_attempt_at = :lease"),
    }


def clock(delay=0.0, ms=0):
    """Values for sql()'s clock placeholders (PostgreSQL reads :delay and :ms, SQLite the times)."""
    now = utcnow()
    return {"now": now, "later": now + timedelta(seconds=delay), "started": now - timedelta(milliseconds=ms),
            "delay": delay, "ms": ms}


_http = None


def _pool():
    global _http
    if _http is None:
        # No retries (a failed attempt is rescheduled with backoff), no redirects (a 3xx fails:
        # following one would send signed events to where the endpoint's URL does not say).
        _http = urllib3.PoolManager(retries=False, maxsize=4, block=False)
    return _http


def post(url, body, headers, settings):
    """POST `body` to `url`: (status code, None) for an answer, (None, error) for none.
    The host is resolved and checked first (urls.check_resolved), and the connection goes
    to the address that was checked."""
    from . import urls

    timeout = urllib3.Timeout(connect=settings.timeout, read=settings.timeout)
    try:
        address = urls.check_resolved(url, allow_private=settings.allow_private)
        if address is None:
            response = _pool().request("POST", url, body=body.encode(), headers=headers, redirect=False,
                                       preload_content=False, timeout=timeout)
        else:
            response = _post_to(address, url, body, headers, timeout)
    except urls.UnsafeDestination as e:
        return None, f"unsafe destination: {e}"[:500]
    except (urllib3.exceptions.HTTPError, OSError) as e:
        return None, f"{type(e).__name__}: {e}"[:500]
    # The answer's body is never read: only the status counts, and a huge or endless body
    # must not hold the sender. Closing drops the connection instead of reusing it.
    response.close()
    return response.status, (None if 200 <= response.status < 300 else f"HTTP {response.status}")


def _post_to(address, url, body, headers, timeout):
    """POST to `url` over a connection to `address`: the request still names the URL's host
    (Host header; for https also the TLS server name and the name the certificate must
    carry), but the name is not resolved again, so it cannot be pointed elsewhere between
    the check and the connection."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    tls = {"server_hostname": parts.hostname, "assert_hostname": parts.hostname} if scheme == "https" else None
    pool = _pool().connection_from_host(address, port=parts.port or (443 if scheme == "https" else 80),
                                        scheme=scheme, pool_kwargs=tls)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return pool.urlopen("POST", target, body=body.encode(), headers={**headers, "Host": parts.netloc},
                        redirect=False, retries=False, assert_same_host=False, preload_content=False,
                        timeout=timeout)


def attempt(claim, settings):
    """Send `claim` once and record the outcome under its lease. Returns the Outcome."""
    engine = db.engine
    statements = _statements(engine.dialect.name)
    with engine.connect().execution_options(read_only=True) as conn:
        payload = render(conn, entry_id=claim.entry_id, event_row_id=claim.event_id)
    if payload is None:
        with engine.begin() as conn:
            recorded = conn.execute(statements["pruned"], {"id": claim.id, "lease": claim.lease, "error": PRUNED,
                                                           **clock()}).rowcount == 1
        return Outcome(claim.id, "dead", None, PRUNED, None, recorded)

    body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    started = time.perf_counter()
    try:
        secrets = signing.secrets_in_force(claim.secret, claim.previous_secret, claim.previous_secret_until, utcnow())
        code, error = post(claim.url, body, signing.headers(claim.msg_id, body, secrets, utcnow()), settings)
    except ValueError as e:  # an unusable secret
        code, error = None, str(e)[:500]
    ms = round((time.perf_counter() - started) * 1000)

    if error is None:
        status, delay, statement = "delivered", None, "delivered"
    else:
        count = claim.attempts + 1
        status = "dead" if count >= settings.max_attempts else "pending"
        delay = backoff(count, settings)
        statement = "failed"
    values = {"id": claim.id, "lease": claim.lease, "code": code, "error": error, "status": status,
              **clock(0.0 if status == "dead" else (delay or 0.0), ms)}
    with engine.begin() as conn:
        recorded = conn.execute(statements[statement], values).rowcount == 1
        conn.execute(statements["attempt"], values)
    return Outcome(claim.id, status, code, error, delay, recorded)


def release(claims, delay=0.0):
    """Put claimed deliveries back, due `delay` seconds from now, without counting an
    attempt. Those whose lease ran out are left as they are. Returns how many went back."""
    if not claims:
        return 0
    engine = db.engine
    by_lease = {}
    for claim in claims:
        by_lease.setdefault(claim.lease, []).append(claim.id)
    released = 0
    with engine.begin() as conn:
        for lease, ids in by_lease.items():
            released += conn.execute(_statements(engine.dialect.name)["release"],
                                     {"ids": ids, "lease": lease, **clock(delay)}).rowcount
    return released


def deliver_now(delivery_id):
    """One attempt at a pending delivery, now, whether or not it is due, and synchronously:
    its Outcome, or None when it is not pending or its endpoint is disabled. A dispatcher
    may be sending the same delivery under its lease: the receiver may then get it twice,
    with its one id (at least once)."""
    from . import dispatcher

    settings = Settings.from_config(current_app.config)
    claim = dispatcher.claim_one(delivery_id, settings)
    return None if claim is None else attempt(claim, settings)
