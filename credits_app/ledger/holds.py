"""Holds: credits reserved before an action, then captured (all or part) or released.

The balance row keeps `held`, the sum of the user's open holds, under CHECK (0 <= held <=
credits): a debit spends only `credits - held` (rules.ALLOWED), and what a hold keeps can
always be captured. A capture is a ledger entry of kind `capture` naming its hold; creating,
releasing and expiring a hold change `held` only and write no entry.

Every operation locks the balance row first, then reads the hold in a later statement:
every change to a user's holds takes the same lock, so that statement sees them all (a
sum over hold rows read in a statement's own snapshot would miss holds created while it
waited). On SQLite BEGIN IMMEDIATE serialises the whole transaction.

Expiry uses the database's clock. A hold past `expires_at` no longer counts and can no
longer be captured, whether or not it has been recorded as expired: reads subtract such
holds in the read's own snapshot, every operation here first records the user's overdue
holds as expired (under the lock), a debit that would be refused while overdue holds exist
records them and decides again (changes.py), and the worker's sweep records the rest.

Keys: a keyed operation's answer (or refusal) is kept with its key in the transaction that
decided it and replayed as it was; UNIQUE (actor, idempotency_key) on holds (creation) and on
the ledger (capture) refuse a second effect after the record is purged.
"""
import functools
import json
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import bindparam, exc, text

from ..auth.claims import SYSTEM_PREFIX
from ..exceptions import (CaptureExceedsHold, Conflict, HoldNotFound, HoldNotOpen, InsufficientCredits,
                          InvalidRequest, UserNotFound)
from ..extensions import db
from ..types import UTCDateTime, utcnow
from . import alerts, changes
from ..events import outbox
from .records import ENTRY_COLUMNS, entry_from_row, entry_json, iso
from .rules import PG_ENTRY_TIME, check_amount, check_user_id, entry_time, request_hash

EXPIRY_ACTOR = SYSTEM_PREFIX + "hold-expiry"
STATUSES = ("open", "captured", "released", "expired")
# The database's clock: PostgreSQL's for every web and worker host; SQLite is in-process.
_NOW = {"postgresql": "statement_timestamp()", "sqlite": ":now"}
_TIMES = ("created_at", "expires_at", "closed_at")


def _sql(dialect, sql, *times):
    """`sql` for `dialect`: {now} is the database's clock, {lock} the row lock."""
    stmt = text(sql.format(now=_NOW[dialect], lock=" FOR UPDATE" if dialect == "postgresql" else ""))
    binds = [bindparam(name, type_=UTCDateTime) for name in ("now", *times) if f":{name}" in stmt.text]
    return (stmt.bindparams(*binds) if binds else stmt).columns(**{t: UTCDateTime for t in _TIMES + ("last_updated",)
                                                                  if t in stmt.text})


# A hold as written by the statement that wrote it: its status is the one just set.
_WRITTEN = ("id, user_id, amount, status, captured, reason, actor, idempotency_key, created_at, expires_at, "
            "closed_at, close_reason, CAST(:entry_id AS BIGINT) AS entry_id")


def _statements(dialect):
    # A hold's status as it is now: an open hold past its time is expired, recorded or not.
    hold = ("SELECT id, user_id, amount, CASE WHEN status = 'open' AND expires_at <= {now} THEN 'expired' "
            "ELSE status END AS status, captured, reason, actor, idempotency_key, created_at, expires_at, closed_at, "
            "close_reason, (SELECT id FROM ledger_entries WHERE hold_id = holds.id) AS entry_id FROM holds ")
    return {
        "lock": _sql(dialect, "SELECT credits, held, last_updated FROM credits WHERE user_id = :uid{lock}"),
        "hold": _sql(dialect, hold + "WHERE id = :hid"),
        "owner": _sql(dialect, "SELECT user_id FROM holds WHERE id = :hid"),
        "page": _sql(dialect, "SELECT * FROM (" + hold + "WHERE user_id = :uid AND id < :before) AS h "
                              "WHERE :status IS NULL OR status = :status ORDER BY id DESC LIMIT :limit"),
        "expire": _sql(dialect, "UPDATE holds SET status = 'expired', closed_at = expires_at, closed_by = :system "
                                "WHERE user_id = :uid AND status = 'open' AND expires_at <= {now} RETURNING " + _WRITTEN),
        "release_all": _sql(dialect, "UPDATE holds SET status = CASE WHEN expires_at <= {now} THEN 'expired' "
                                     "ELSE 'released' END, closed_at = CASE WHEN expires_at <= {now} THEN expires_at "
                                     "ELSE {now} END, closed_by = :actor WHERE user_id = :uid AND status = 'open' "
                                     "RETURNING " + _WRITTEN),
        "unheld": _sql(dialect, "UPDATE credits SET held = held - :amount WHERE user_id = :uid "
                                "RETURNING credits, held, last_updated"),
        "insert": _sql(dialect, "INSERT INTO holds (user_id, amount, status, reason, actor, idempotency_key, "
                                "created_at, expires_at) VALUES (:uid, :amount, 'open', :reason, :actor, :key, "
                                + ("{now}, {now} + :ttl * interval '1 second'" if dialect == "postgresql"
                                   else ":now, :expires_at") + ") RETURNING " + _WRITTEN),
        "held": _sql(dialect, "UPDATE credits SET held = held + :amount WHERE user_id = :uid "
                              "RETURNING credits, held, last_updated"),
        "close": _sql(dialect, "UPDATE holds SET status = :status, captured = :captured, closed_at = {now}, "
                               "closed_by = :actor, close_reason = :close_reason WHERE id = :hid AND status = 'open' "
                               "RETURNING " + _WRITTEN),
        "capture": _sql(dialect, "UPDATE credits SET credits = credits - :amount, held = held - :held, "
                                 "last_updated = " + (PG_ENTRY_TIME.format(previous="last_updated")
                                                      if dialect == "postgresql" else ":at")
                        + " WHERE user_id = :uid RETURNING credits, held, last_updated", "at"),
        "entry": _sql(dialect, "INSERT INTO ledger_entries (user_id, kind, amount, balance_after, reason, actor, "
                               "idempotency_key, hold_id, created_at) VALUES (:uid, 'capture', :delta, :balance, "
                               f":reason, :actor, :key, :hid, :at) RETURNING {ENTRY_COLUMNS}", "at"),
        "claimed": _sql(dialect, "SELECT 1 FROM idempotency_keys WHERE scope = :actor AND key = :key"),
        "claim": _sql(dialect, "INSERT INTO idempotency_keys (scope, key, request_hash, status_code, refusal, answer, "
                               "created_at) VALUES (:actor, :key, :hash, :status, :refusal, :answer, :claimed_at)",
                      "claimed_at"),
    }


_stmts = functools.cache(_statements)  # built once per dialect


@dataclass(frozen=True)
class HoldAnswer:
    """What a hold operation answers: the API's body, as kept for a replay."""

    body: dict
    replayed: bool = False


def hold_json(row):
    return {"hold_id": row.id, "user_id": row.user_id, "amount": row.amount, "status": row.status,
            "captured": row.captured, "reason": row.reason, "actor": row.actor,
            "idempotency_key": row.idempotency_key, "created_at": iso(row.created_at),
            "expires_at": iso(row.expires_at), "closed_at": iso(row.closed_at), "close_reason": row.close_reason,
            "entry_id": row.entry_id}


def _balance_json(user_id, balance):
    return {"user_id": user_id, "credits": balance.credits, "held": balance.held,
            "available": balance.credits - balance.held}


def _announce(conn, event_type, hold, balance, at):
    """The hold.* event of `hold` (as written) and the balance after it, in this transaction;
    and the alerts its new available balance fires."""
    outbox.emit(conn, event_type, {**_balance_json(hold.user_id, balance), "hold": hold_json(hold)}, at=at,
                user_id=hold.user_id)
    alerts.record(conn, hold.user_id, balance.credits, balance.held, at=at, hold_id=hold.id)


# ---- operations ----------------------------------------------------------------------------

def create(user_id, amount, *, ttl_seconds=None, actor, reason=None, idempotency_key=None):
    """Hold `amount` of the user's available credits until captured, released or `ttl_seconds`
    (HOLD_DEFAULT_TTL_SECONDS; at most HOLD_MAX_TTL_SECONDS) have passed. Raises
    UserNotFound, InsufficientCredits, InvalidRequest and the key errors."""
    check_user_id(user_id)
    check_amount(amount)
    ttl = _ttl(ttl_seconds)
    op = _Op(actor, idempotency_key, request_hash("hold", user_id, (amount, ttl_seconds), reason))
    for _ in range(2):
        outcome = _run(op, lambda conn, s: _create(conn, s, op, user_id, amount, ttl, reason))
        if outcome != "no_credits_row":
            return outcome
        changes.ensure_credits_row(user_id)
    raise RuntimeError("credits row for user %s vanished while holding" % user_id)


def capture(hold_id, amount=None, *, actor, reason=None, idempotency_key=None):
    """Capture `amount` of an open hold (default: all of it) as a ledger entry of kind
    `capture`; a partial capture releases the rest. Raises HoldNotFound, HoldNotOpen (also
    `hold_expired`), CaptureExceedsHold, InvalidRequest and the key errors."""
    _check_hold_id(hold_id)
    if amount is not None:
        check_amount(amount)
    op = _Op(actor, idempotency_key, request_hash("capture", hold_id, amount, reason))
    return _run(op, lambda conn, s: _close(conn, s, op, hold_id, "captured", amount, reason))


def release(hold_id, *, actor, idempotency_key=None, reason=None):
    """Release an open hold: its credits are available again. `reason` is kept on the hold
    (`close_reason`), written by the statement that closes it. Raises HoldNotFound,
    HoldNotOpen (also `hold_expired`) and the key errors."""
    _check_hold_id(hold_id)
    op = _Op(actor, idempotency_key, request_hash("release", hold_id, None, reason))
    return _run(op, lambda conn, s: _close(conn, s, op, hold_id, "released", None, reason))


def get(hold_id):
    """The hold, with its status as it is now. Raises HoldNotFound."""
    _check_hold_id(hold_id)
    engine = db.engine
    with engine.connect() as conn:
        row = conn.execute(_stmts(engine.dialect.name)["hold"], {"hid": hold_id, "now": utcnow()}).first()
    if row is None:
        raise HoldNotFound(hold_id)
    return hold_json(row)


def holds_of(user_id, *, status=None, limit, before=None):
    """A user's holds, newest first, after the hold id `before`; only those whose status
    is now `status`, if given. Raises UserNotFound."""
    check_user_id(user_id)
    engine = db.engine
    with engine.connect() as conn:
        rows = conn.execute(_stmts(engine.dialect.name)["page"], {
            "uid": user_id, "before": before or 2**63 - 1, "status": status, "limit": limit, "now": utcnow()}).all()
        if not rows and conn.execute(text("SELECT 1 FROM users WHERE user_id = :uid"), {"uid": user_id}).first() is None:
            raise UserNotFound(user_id)
    return [hold_json(row) for row in rows]


def _check_hold_id(hold_id):
    if not isinstance(hold_id, int) or isinstance(hold_id, bool) or not 1 <= hold_id < 2**63:
        raise HoldNotFound(hold_id)


def _ttl(ttl_seconds):
    config = current_app.config
    if ttl_seconds is None:
        return config["HOLD_DEFAULT_TTL_SECONDS"]
    maximum = config["HOLD_MAX_TTL_SECONDS"]
    if not isinstance(ttl_seconds, int) or isinstance(ttl_seconds, bool) or not 1 <= ttl_seconds <= maximum:
        raise InvalidRequest(f"ttl_seconds must be an integer from 1 to {maximum}", field="ttl_seconds",
                             maximum=maximum)
    return ttl_seconds


@dataclass(frozen=True)
class _Op:
    actor: str
    key: str | None
    request_hash: str


def _run(op, decide):
    """Run `decide(conn, statements)` in one transaction with the key's claim; answer a
    replay from the claim. `decide` returns a body (dict), a Conflict, or "no_credits_row"."""
    engine = db.engine
    stmts = _stmts(engine.dialect.name)
    try:
        with engine.begin() as conn:
            if op.key is not None and conn.execute(stmts["claimed"], {"actor": op.actor, "key": op.key}).first():
                outcome = "replay"
            else:
                outcome = decide(conn, stmts)
                if op.key is not None and outcome != "no_credits_row":
                    refused = isinstance(outcome, Conflict)
                    conn.execute(stmts["claim"], {
                        "actor": op.actor, "key": op.key, "hash": op.request_hash, "claimed_at": utcnow(),
                        "status": 409 if refused else 200,
                        "refusal": json.dumps({"code": outcome.code, "message": outcome.message,
                                               "details": outcome.details}) if refused else None,
                        "answer": None if refused else json.dumps(outcome)})
    except exc.IntegrityError as e:
        if op.key is not None and changes.is_key_conflict(e):  # a concurrent request with the same key won
            outcome = "replay"
        else:
            raise
    if outcome == "replay":
        return HoldAnswer(json.loads(changes.recall(op).answer), replayed=True)
    if isinstance(outcome, Conflict):
        raise outcome
    return outcome if outcome == "no_credits_row" else HoldAnswer(outcome)


def _locked(conn, s, user_id):
    """Lock the user's balance row and record its overdue holds as expired; the row after."""
    row = conn.execute(s["lock"], {"uid": user_id}).first()
    if row is not None and row.held > 0 and expire_overdue(conn, user_id):
        row = conn.execute(s["lock"], {"uid": user_id}).first()
    return row


def _create(conn, s, op, user_id, amount, ttl, reason):
    row = _locked(conn, s, user_id)
    if row is None:
        if conn.execute(text("SELECT 1 FROM users WHERE user_id = :uid"), {"uid": user_id}).first() is None:
            raise UserNotFound(user_id)
        return "no_credits_row"
    if row.credits - row.held < amount:
        return InsufficientCredits(row.credits, amount, row.held)
    now = utcnow()
    hold = conn.execute(s["insert"], {"uid": user_id, "amount": amount, "reason": reason, "actor": op.actor,
                                      "key": op.key, "ttl": ttl, "now": now, "entry_id": None,
                                      "expires_at": now + timedelta(seconds=ttl)}).one()
    balance = conn.execute(s["held"], {"uid": user_id, "amount": amount}).one()
    _announce(conn, "hold.created", hold, balance, hold.created_at)
    return {"hold": hold_json(hold), **_balance_json(user_id, balance)}


def _close(conn, s, op, hold_id, status, amount, reason):
    """Capture (`amount` of it) or release an open hold, decided on the locked row. A
    capture's `reason` goes on its entry (the hold's own by default); a release's, having no
    entry, on the hold as `close_reason`."""
    user_id = conn.execute(s["owner"], {"hid": hold_id}).scalar()  # a hold's user never changes
    if user_id is None:
        raise HoldNotFound(hold_id)
    row = _locked(conn, s, user_id)
    hold = conn.execute(s["hold"], {"hid": hold_id, "now": utcnow()}).one()
    if hold.status != "open":
        return HoldNotOpen(hold_id, hold.status)
    captured = None
    answer = {}
    if status == "captured":
        captured = hold.amount if amount is None else amount
        if captured > hold.amount:
            return CaptureExceedsHold(hold_id, hold.amount, captured)
        # held <= credits and captured <= hold.amount <= held: the balance cannot go below zero.
        at = entry_time(row.last_updated)
        row = conn.execute(s["capture"], {"uid": user_id, "amount": captured, "held": hold.amount, "at": at}).one()
        entry = conn.execute(s["entry"], {"uid": user_id, "delta": -captured, "balance": row.credits,
                                          "reason": reason if reason is not None else hold.reason,
                                          "actor": op.actor, "key": op.key, "hid": hold_id,
                                          "at": row.last_updated}).one()
        entry = entry_from_row(entry)
        answer["entry"] = entry_json(entry)
        outbox.entry_deliveries(conn, entry)  # a capture's credits.changed event is its entry
        alerts.record(conn, user_id, row.credits, row.held, at=entry.created_at, entry_id=entry.id, hold_id=hold_id)
    else:
        row = conn.execute(s["unheld"], {"uid": user_id, "amount": hold.amount}).one()
    hold = conn.execute(s["close"], {"hid": hold_id, "status": status, "captured": captured, "actor": op.actor,
                                     "close_reason": reason if status == "released" else None, "now": utcnow(),
                                     "entry_id": answer["entry"]["id"] if answer else None}).one()
    if status == "released":
        _announce(conn, "hold.released", hold, row, hold.closed_at)
    return {"hold": hold_json(hold), **_balance_json(user_id, row), **answer}


# ---- expiry --------------------------------------------------------------------------------

def expire_overdue(conn, user_id):
    """Record the user's open holds past their time as expired and take them off `held`;
    returns how much they held. Runs under the balance row's lock (taken before, in the same
    transaction), so it sees every hold of the user."""
    return sum(hold.amount for hold in _expire(conn, user_id))


def _expire(conn, user_id):
    """The user's overdue holds, now recorded as expired, off `held`, and announced."""
    s = _stmts(conn.dialect.name)
    expired = conn.execute(s["expire"], {"uid": user_id, "system": EXPIRY_ACTOR, "now": utcnow(),
                                         "entry_id": None}).all()
    if expired:
        balance = conn.execute(s["unheld"], {"uid": user_id, "amount": sum(hold.amount for hold in expired)}).one()
        recorded = utcnow()  # the event's time is when the expiry is recorded, not the hold's end
        for hold in expired:
            outbox.emit(conn, "hold.expired", {**_balance_json(user_id, balance), "hold": hold_json(hold)},
                        at=recorded, user_id=user_id)
        alerts.record(conn, user_id, balance.credits, balance.held, at=recorded)
    return expired


def expire_due(user_id):
    """expire_overdue() in its own transaction (a debit refused while overdue holds exist,
    on PostgreSQL, records them here and decides again)."""
    engine = db.engine
    with engine.begin() as conn:
        if conn.execute(_stmts(engine.dialect.name)["lock"], {"uid": user_id}).first() is None:
            return 0
        return expire_overdue(conn, user_id)


def release_all(conn, user_id, actor):
    """A reset's part: close every open hold of the user (those past their time as expired,
    the rest as released). Runs under the balance row's lock; the reset sets `held` to 0, and
    the holds' events report the balance as the reset leaves it (0)."""
    closed = conn.execute(_stmts(conn.dialect.name)["release_all"],
                          {"uid": user_id, "actor": actor, "now": utcnow(), "entry_id": None}).all()
    for hold in closed:
        outbox.emit(conn, f"hold.{hold.status}", {"user_id": user_id, "credits": 0, "held": 0, "available": 0,
                                                  "hold": hold_json(hold)}, at=utcnow(), user_id=user_id)


# Users with open holds past their time, in user order, after a user id (the sweep's cursor).
_DUE_USERS = text("SELECT DISTINCT user_id FROM holds WHERE status = 'open' AND expires_at <= :now "
                  "AND user_id > :after ORDER BY user_id LIMIT :limit").bindparams(bindparam("now", type_=UTCDateTime))


def sweep(batch=500):
    """The worker's sweep: record every open hold past its time as expired. Each user in a
    transaction of its own, which locks that user's balance row alone: a transaction that
    held two balance rows and waited for a third could deadlock with the daily grant, which
    locks a chunk's rows in the order it finds them. Returns how many holds it expired."""
    engine = db.engine
    lock = _stmts(engine.dialect.name)["lock"]
    expired, after = 0, 0
    while True:
        with engine.connect() as conn:
            users = conn.execute(_DUE_USERS, {"after": after, "limit": batch, "now": utcnow()}).scalars().all()
        for user_id in users:
            with engine.begin() as conn:
                if conn.execute(lock, {"uid": user_id}).first() is not None:
                    expired += len(_expire(conn, user_id))
        if len(users) < batch:
            return expired
        after = users[-1]


_HELD_MISMATCHES = text("""
    SELECT c.user_id, c.held, COALESCE(h.total, 0) AS open_total
    FROM credits c LEFT JOIN (SELECT user_id, CAST(SUM(amount) AS BIGINT) AS total FROM holds WHERE status = 'open'
                              GROUP BY user_id) h ON h.user_id = c.user_id
    WHERE c.held <> COALESCE(h.total, 0) ORDER BY c.user_id""")
_CAPTURE_MISMATCHES = text("""
    SELECT h.id FROM holds h LEFT JOIN ledger_entries l ON l.hold_id = h.id
    WHERE (h.status = 'captured') <> (l.id IS NOT NULL) OR l.amount <> -h.captured ORDER BY h.id""")


def verify_holds():
    """What breaks the holds' rules: users whose `held` is not the sum of their open holds
    (user id, held, open total), and holds whose capture entry is missing, extra or of
    another amount (hold ids). Both empty when the books hold; `flask credits verify`
    reports them."""
    with db.engine.connect() as conn:
        return ([tuple(row) for row in conn.execute(_HELD_MISMATCHES)],
                conn.execute(_CAPTURE_MISMATCHES).scalars().all())
