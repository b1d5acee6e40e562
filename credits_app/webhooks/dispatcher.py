"""The dispatcher: claim due deliveries under a lease, send each endpoint's on a thread.

One run (worker.jobs.dispatch_webhooks, fired every minute) loops for RUN_SECONDS. Every
POLL_SECONDS it picks the endpoints with the earliest due deliveries, leaving out those
that already have a batch in flight here, up to the free threads (WEBHOOKS_CONCURRENCY);
for each it CLAIMS up to BATCH due deliveries: one UPDATE moves their next_attempt_at to
now + WEBHOOKS_LEASE_SECONDS. On PostgreSQL the UPDATE selects them FOR UPDATE SKIP LOCKED,
so dispatchers running at once (several workers, a run overlapping the next) claim
disjoint sets; on SQLite it runs in a BEGIN IMMEDIATE transaction, which serialises claims.
Nothing is chosen by id order (ids are not commit order): only status and due time count.

A worker that dies mid-delivery leaves its claims due again when their lease ends, so every
delivery is sent at least once, always with its event's one id. A send starts only while
its lease has room for the longest send (connect and read timeouts, and its writes), so no
other dispatcher can claim a delivery while it is being sent.

A batch is sent in order on one thread and stops at the first failure: the rest go back,
due when the failed one is (the endpoint is left alone for its backoff). So a slow or dead
endpoint holds one thread at a time and never delays the others. A disabled endpoint's due
deliveries are moved PARK_SECONDS on, all at once, so they do not sit in front of every
claim; a deleted endpoint's are gone with it.

At RUN_SECONDS the run stops claiming and starting sends, puts back what it has not sent,
waits for the sends in flight and returns; the next cron fire starts the next run.
"""
import concurrent.futures
import functools
import logging
import threading
import time
from collections import Counter

from flask import current_app

from ..extensions import db
from ..types import UTCDateTime
from . import delivery
from .delivery import Claim, Settings, sql

log = logging.getLogger("credits.webhooks")

RUN_SECONDS = 55  # a run ends before the next minute's fire, so runs rarely overlap
POLL_SECONDS = 0.5  # how often a run looks for due deliveries: the delivery latency
BATCH = 100  # deliveries claimed for one endpoint at a time
SCAN = 1000  # due deliveries looked at to choose the endpoints of the next claims
PARK_SECONDS = 3600  # a disabled endpoint's due deliveries wait this long before they are looked at again
WRITE_MARGIN_SECONDS = 1  # the database writes around one send

_RETURNED = ("id, endpoint_id, entry_id, event_id, attempts, due_at, lease, url, secret, previous_secret, "
             "previous_secret_until")
_TIMES = {"due_at": UTCDateTime, "lease": UTCDateTime, "previous_secret_until": UTCDateTime}
# Which deliveries a claim takes (`w`: webhook_deliveries): an endpoint's due ones, or one by id.
_DUE = "w.endpoint_id = :endpoint AND w.status = 'pending' AND w.next_attempt_at <= {now}"
_ONE = "w.id = :id AND w.status = 'pending'"


def _claim_sql(dialect, which):
    if dialect == "postgresql":
        return sql(dialect, (
            "UPDATE webhook_deliveries AS d SET next_attempt_at = {later} "
            "FROM (SELECT w.id, w.next_attempt_at FROM webhook_deliveries w WHERE " + which + " "
            "ORDER BY w.next_attempt_at, w.id LIMIT :n FOR UPDATE SKIP LOCKED) AS due, webhook_endpoints AS e "
            "WHERE d.id = due.id AND e.id = d.endpoint_id AND e.enabled "
            "RETURNING d.id, d.endpoint_id, d.entry_id, d.event_id, d.attempts, due.next_attempt_at AS due_at, "
            "d.next_attempt_at AS lease, e.url, e.secret, e.previous_secret, e.previous_secret_until"), **_TIMES)
    # SQLite: read, then move (the "lease" statement), inside the BEGIN IMMEDIATE transaction
    # that serialises writers.
    return sql(dialect, (
        "SELECT w.id, w.endpoint_id, w.entry_id, w.event_id, w.attempts, w.next_attempt_at AS due_at, "
        ":later AS lease, e.url, e.secret, e.previous_secret, e.previous_secret_until "
        "FROM webhook_deliveries w JOIN webhook_endpoints e ON e.id = w.endpoint_id AND e.enabled "
        "WHERE " + which + " ORDER BY w.next_attempt_at, w.id LIMIT :n"), **_TIMES)


@functools.cache
def _statements(dialect):
    return {
        "due": _claim_sql(dialect, _DUE),
        "one": _claim_sql(dialect, _ONE),
        "lease": sql(dialect, "UPDATE webhook_deliveries SET next_attempt_at = :lease WHERE id IN :ids"),
        # The endpoints of the earliest due deliveries, earliest first, with whether each is enabled.
        "endpoints": sql(dialect, (
            "SELECT d.endpoint_id, e.enabled FROM (SELECT endpoint_id, next_attempt_at FROM webhook_deliveries "
            "WHERE status = 'pending' AND next_attempt_at <= {now} AND endpoint_id NOT IN :busy "
            "ORDER BY next_attempt_at LIMIT :scan) AS d JOIN webhook_endpoints e ON e.id = d.endpoint_id "
            "GROUP BY d.endpoint_id, e.enabled ORDER BY MIN(d.next_attempt_at)")),
        "park": sql(dialect, "UPDATE webhook_deliveries SET next_attempt_at = {later} "
                             "WHERE endpoint_id = :endpoint AND status = 'pending' AND next_attempt_at <= {now}"),
    }


def send_budget(settings):
    """The longest one send may take: connect and read timeouts, and its writes."""
    return 2 * settings.timeout + WRITE_MARGIN_SECONDS


def _claim(which, params, settings, limit):
    engine = db.engine
    dialect = engine.dialect.name
    statement = _statements(dialect)[which]
    with engine.begin() as conn:
        values = {**params, "n": limit, **delivery.clock(settings.lease)}
        rows = conn.execute(statement, values).all()
        if dialect == "sqlite" and rows:
            conn.execute(_statements(dialect)["lease"], {"ids": [r.id for r in rows], "lease": values["later"]})
    return sorted((Claim(**{name: getattr(r, name) for name in _RETURNED.split(", ")}) for r in rows),
                  key=lambda c: (c.due_at, c.id))


def claim_due(endpoint_id, settings, limit=None):
    """Claim up to `limit` (BATCH) of an enabled endpoint's due deliveries, earliest first."""
    return _claim("due", {"endpoint": endpoint_id}, settings, limit or BATCH)


def claim_one(delivery_id, settings):
    """Claim one pending delivery of an enabled endpoint, due or not; None if there is none."""
    claims = _claim("one", {"id": delivery_id}, settings, 1)
    return claims[0] if claims else None


def due_endpoints(busy):
    """[(endpoint id, enabled)] of the earliest due deliveries, leaving out `busy` ids."""
    engine = db.engine
    with engine.connect().execution_options(read_only=True) as conn:
        return [tuple(r) for r in conn.execute(_statements(engine.dialect.name)["endpoints"], {
            "busy": sorted(busy) or [0], "scan": SCAN, **delivery.clock()}).all()]  # ids start at 1


def park(endpoint_id):
    """Move a disabled endpoint's due deliveries PARK_SECONDS on. Returns how many."""
    engine = db.engine
    with engine.begin() as conn:
        return conn.execute(_statements(engine.dialect.name)["park"],
                            {"endpoint": endpoint_id, **delivery.clock(PARK_SECONDS)}).rowcount


def send_batch(claims, settings, *, claimed_at, ended):
    """Send one endpoint's claims in order, stopping at the first failure (the rest go back
    due when the failed one is), when `ended()` or when the lease has no room left for a
    send (the rest go back due now). `claimed_at`: time.monotonic() before the claim.
    Returns a Counter of outcomes."""
    counts = Counter()
    room = settings.lease - send_budget(settings)
    for i, claim in enumerate(claims):
        if ended() or time.monotonic() - claimed_at >= room:
            counts["released"] += delivery.release(claims[i:])
            break
        outcome = delivery.attempt(claim, settings)
        counts["pruned" if outcome.error == delivery.PRUNED else outcome.status] += 1
        if not outcome.recorded:
            counts["late"] += 1
        if outcome.retry_in is not None:
            counts["released"] += delivery.release(claims[i + 1:], delay=outcome.retry_in)
            break
    return counts


def run(seconds=RUN_SECONDS, stop=None):
    """Dispatch for `seconds` (or until the threading.Event `stop` is set), then wait for
    the sends in flight. Returns the counts of
    outcomes (delivered, pending: failed and to be tried again, dead, pruned, released,
    late: outcomes not recorded because their lease had run out, parked). Raises the first
    error a batch raised, after the others finished (their claims come back when their
    lease ends)."""
    app = current_app._get_current_object()
    settings = Settings.from_config(app.config)
    if settings.lease <= send_budget(settings):
        raise ValueError(f"WEBHOOKS_LEASE_SECONDS ({settings.lease}) must exceed twice WEBHOOKS_TIMEOUT_SECONDS "
                         f"plus {WRITE_MARGIN_SECONDS} ({send_budget(settings)}): a send must end within its lease")
    stop_at = time.monotonic() + seconds
    stop = stop or threading.Event()

    def ended():
        return stop.is_set() or time.monotonic() >= stop_at
    counts, errors, in_flight = Counter(), [], {}

    def reap(done):
        for endpoint_id in [e for e, f in in_flight.items() if f in done]:
            future = in_flight.pop(endpoint_id)
            if future.exception() is not None:
                errors.append(future.exception())
                log.error("webhook batch failed", exc_info=future.exception(),
                          extra={"fields": {"endpoint_id": endpoint_id}})
            else:
                counts.update(future.result())

    def in_app(function, *args, **kwargs):
        with app.app_context():
            return function(*args, **kwargs)

    with concurrent.futures.ThreadPoolExecutor(settings.concurrency, thread_name_prefix="webhooks") as pool:
        while not ended():
            reap({f for f in in_flight.values() if f.done()})
            free = settings.concurrency - len(in_flight)
            for endpoint_id, enabled in (due_endpoints(in_flight) if free else []):
                if not enabled:
                    counts["parked"] += park(endpoint_id)
                    continue
                if free == 0:
                    continue
                claimed_at = time.monotonic()
                claims = claim_due(endpoint_id, settings)
                if claims:
                    counts["claimed"] += len(claims)
                    in_flight[endpoint_id] = pool.submit(in_app, send_batch, claims, settings,
                                                         claimed_at=claimed_at, ended=ended)
                    free -= 1
            stop.wait(min(POLL_SECONDS, max(stop_at - time.monotonic(), 0)))
        reap(concurrent.futures.wait(in_flight.values()).done)
    if errors:
        raise errors[0]
    return dict(counts)
