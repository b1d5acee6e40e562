"""Reversals: a compensating entry of kind 'reversal' that names the entry it reverses, for
all of it or part, until it is fully reversed and never beyond. The original is never
changed.

Decided on the locked balance row, in one transaction of two steps: the first statement
locks the user's row, the next ones read the original and the sum of its earlier reversals.
Under READ COMMITTED each statement sees what committed before it began, so the sum includes
every reversal committed before the lock was granted; every reversal of an entry takes the
same user's lock, so none is missed (one statement would read the sum in a snapshot taken
before the lock wait). On SQLite BEGIN IMMEDIATE serialises the whole transaction.

Reversing a credit (an add, a daily grant) is a debit and needs the available balance, what
open holds do not keep (409 insufficient_credits); reversing a debit (a deduct, a reset, a
capture) is a credit and stops at MAX_BALANCE (409 balance_limit_exceeded). A keyed refusal is stored whole with its key, in
the transaction that decided it, and replayed as it was. Not on the hot path: this is not
the fast path.
"""
import json

from flask import current_app
from sqlalchemy import bindparam, exc, text

from ..exceptions import (BalanceLimitExceeded, Conflict, EntryNotFound, InsufficientCredits, NotReversible,
                          ReversalExceedsRemaining, UserNotFound)
from ..extensions import db
from ..types import UTCDateTime, utcnow
from . import alerts, holds
from ..events import outbox
from .changes import is_key_conflict, replay
from .records import ENTRY_COLUMNS, Change, entry_from_row
from .rules import PG_ENTRY_TIME, Op, check_amount, check_user_id, entry_time, request_hash

_LOCK = {"postgresql": text("SELECT credits, held, last_updated FROM credits WHERE user_id = :uid FOR UPDATE"),
         "sqlite": text("SELECT credits, held, last_updated FROM credits WHERE user_id = :uid")}
_LOCK = {dialect: stmt.columns(last_updated=UTCDateTime) for dialect, stmt in _LOCK.items()}
_ORIGINAL = text("SELECT id, kind, amount FROM ledger_entries WHERE id = :eid AND user_id = :uid")
_REVERSED = text("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_entries WHERE reverses = :eid")
_UPDATE = {
    "postgresql": text("UPDATE credits SET credits = credits + :delta, last_updated = "
                       + PG_ENTRY_TIME.format(previous="last_updated")
                       + " WHERE user_id = :uid RETURNING credits, last_updated").columns(last_updated=UTCDateTime),
    "sqlite": text("UPDATE credits SET credits = credits + :delta, last_updated = :now WHERE user_id = :uid "
                   "RETURNING credits, last_updated").bindparams(bindparam("now", type_=UTCDateTime)
                                                                  ).columns(last_updated=UTCDateTime),
}
_INSERT = text("INSERT INTO ledger_entries (user_id, kind, amount, balance_after, reason, actor, idempotency_key, "
               "reverses, created_at) VALUES (:uid, 'reversal', :delta, :balance, :reason, :actor, :key, :eid, :at) "
               f"RETURNING {ENTRY_COLUMNS}").bindparams(bindparam("at", type_=UTCDateTime)).columns(
    created_at=UTCDateTime)
_CLAIM = text("INSERT INTO idempotency_keys (scope, key, request_hash, status_code, refusal, created_at) "
              "VALUES (:actor, :key, :hash, :status, :refusal, :now)").bindparams(bindparam("now", type_=UTCDateTime))


def reverse(user_id, entry_id, amount=None, *, actor, reason, idempotency_key=None):
    """Reverse `amount` of entry `entry_id` of `user_id` (default: all that remains). Raises
    UserNotFound, EntryNotFound, NotReversible, ReversalExceedsRemaining, InsufficientCredits,
    BalanceLimitExceeded, InvalidRequest, IdempotencyMismatch, IdempotencyKeyExpired."""
    check_user_id(user_id)
    if not isinstance(entry_id, int) or isinstance(entry_id, bool) or not 1 <= entry_id < 2**63:
        raise EntryNotFound(user_id, entry_id)
    if amount is not None:
        check_amount(amount)
    key = idempotency_key
    op = Op("reversal", user_id, None, amount, actor, reason, key,
            request_hash("reversal", (user_id, entry_id), amount, reason) if key else None,
            current_app.config["MAX_BALANCE"])
    try:
        outcome = _apply(db.engine, op, entry_id)
    except exc.IntegrityError as e:
        if key and is_key_conflict(e):  # a concurrent request with the same key won
            return replay(op)
        raise
    if outcome == "replay":
        return replay(op)
    if isinstance(outcome, Conflict):
        raise outcome
    return Change(outcome)


def _apply(engine, op, entry_id):
    dialect = engine.dialect.name
    with engine.begin() as conn:
        if op.key is not None and conn.execute(text("SELECT 1 FROM idempotency_keys WHERE scope = :actor AND "
                                                    "key = :key"), {"actor": op.actor, "key": op.key}).first():
            return "replay"
        row = conn.execute(_LOCK[dialect], {"uid": op.user_id}).first()
        original = conn.execute(_ORIGINAL, {"eid": entry_id, "uid": op.user_id}).first()
        if row is None or original is None:  # no credits row: no entries either
            if conn.execute(text("SELECT 1 FROM users WHERE user_id = :uid"), {"uid": op.user_id}).first() is None:
                raise UserNotFound(op.user_id)
            raise EntryNotFound(op.user_id, entry_id)
        if original.kind == "reversal":
            raise NotReversible(entry_id, original.kind)
        sign = 1 if original.amount > 0 else -1
        remaining = sign * (original.amount + conn.execute(_REVERSED, {"eid": entry_id}).scalar())
        amount = remaining if op.amount is None else op.amount
        delta = -sign * amount
        outcome = None
        held = row.held
        if delta < 0 and held and row.credits - held + delta < 0:
            held -= holds.expire_overdue(conn, op.user_id)  # past their time, they no longer count
        if amount == 0 or amount > remaining:
            outcome = ReversalExceedsRemaining(entry_id, remaining, op.amount)
        elif delta < 0 and row.credits - held + delta < 0:
            outcome = InsufficientCredits(row.credits, amount, held)
        elif delta > 0 and row.credits + delta > op.max_balance:
            outcome = BalanceLimitExceeded(row.credits, amount, op.max_balance)
        else:
            params = {"uid": op.user_id, "delta": delta, "eid": entry_id, "reason": op.reason, "actor": op.actor,
                      "key": op.key, "now": entry_time(row.last_updated)}
            updated = conn.execute(_UPDATE[dialect], params).one()
            outcome = entry_from_row(conn.execute(_INSERT, {**params, "balance": updated.credits,
                                                            "at": updated.last_updated}).one())
            outbox.entry_deliveries(conn, outcome)  # its credits.changed event is the entry
            alerts.record(conn, op.user_id, updated.credits, held, at=outcome.created_at, entry_id=outcome.id)
        if op.key is not None:
            refused = isinstance(outcome, Conflict)
            conn.execute(_CLAIM, {"actor": op.actor, "key": op.key, "hash": op.request_hash, "now": utcnow(),
                                  "status": 409 if refused else 200, "refusal": json.dumps(
                                      {"code": outcome.code, "message": outcome.message, "details": outcome.details}
                                  ) if refused else None})
    return outcome


_OVER_REVERSED = text("""
    SELECT o.id, o.user_id, o.amount, CAST(SUM(r.amount) AS BIGINT) AS reversed
    FROM ledger_entries r JOIN ledger_entries o ON o.id = r.reverses
    GROUP BY o.id, o.user_id, o.amount
    HAVING ABS(SUM(r.amount)) > ABS(o.amount) OR SUM(r.amount) * o.amount > 0
    ORDER BY o.id""")


def over_reversed():
    """Entries whose reversals pass them (or have their sign): (entry id, user id, amount,
    reversed). Empty when every reversal kept its rule; `flask credits verify` reports them."""
    with db.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(_OVER_REVERSED)]
