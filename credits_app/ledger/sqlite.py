"""A change on SQLite: the same steps as separate statements inside one BEGIN IMMEDIATE
transaction, which holds the only write lock, so the balance read in it is the newest. The
change's events (its deliveries, its alerts) are written in the same transaction."""
from sqlalchemy import bindparam, text

from . import alerts, holds
from ..events import outbox
from ..types import UTCDateTime
from .records import ENTRY_COLUMNS, entry_from_row
from .rules import allowed, entry_time, refusal


_BALANCE_ROW = text("SELECT credits, held, last_updated FROM credits WHERE user_id = :uid").columns(last_updated=UTCDateTime)


def apply(engine, op):
    with engine.begin() as conn:  # BEGIN IMMEDIATE: we hold the write lock from here
        if op.key is not None and conn.execute(
                text("SELECT 1 FROM idempotency_keys WHERE scope = :actor AND key = :key"),
                {"actor": op.actor, "key": op.key}).first():
            return "replay"
        row = conn.execute(_BALANCE_ROW, {"uid": op.user_id}).first()
        if row is None:
            return "no_credits_row"
        current, held, now = row.credits, row.held, entry_time(row.last_updated)
        delta = -current if op.kind == "reset" else op.delta
        if op.kind == "reset":
            holds.release_all(conn, op.user_id, op.actor)
        elif held and not allowed(op.kind, current, held, delta, op.max_balance):
            held -= holds.expire_overdue(conn, op.user_id)  # past their time, they no longer count
        outcome = None
        if allowed(op.kind, current, held, delta, op.max_balance):
            updated = conn.execute(
                text("UPDATE credits SET credits = credits + :delta, last_updated = :now"
                     + (", held = 0" if op.kind == "reset" else "")
                     + " WHERE user_id = :uid RETURNING credits").bindparams(bindparam("now", type_=UTCDateTime)),
                {"uid": op.user_id, "delta": delta, "now": now}).one()
            outcome = entry_from_row(conn.execute(
                text("INSERT INTO ledger_entries (user_id, kind, amount, balance_after, reason, actor, "
                     f"idempotency_key, created_at) VALUES (:uid, :kind, :delta, :bal, :reason, :actor, :key, :now) "
                     f"RETURNING {ENTRY_COLUMNS}").bindparams(bindparam("now", type_=UTCDateTime))
                .columns(created_at=UTCDateTime),
                {"uid": op.user_id, "kind": op.kind, "delta": delta, "bal": updated.credits, "reason": op.reason,
                 "actor": op.actor, "key": op.key, "now": now}).one())
            held_after = 0 if op.kind == "reset" else held
            outbox.entry_deliveries(conn, outcome)  # its credits.changed event is the entry
            alerts.record(conn, op.user_id, updated.credits, held_after, at=now, entry_id=outcome.id)
        if op.key is not None:
            conn.execute(
                text("INSERT INTO idempotency_keys (scope, key, request_hash, status_code, refused_balance, "
                     "refused_held, created_at) VALUES (:actor, :key, :hash, :status, :refused, :held, :now)"
                     ).bindparams(bindparam("now", type_=UTCDateTime)),
                {"actor": op.actor, "key": op.key, "hash": op.request_hash, "now": now,
                 "status": 200 if outcome else 409, "refused": None if outcome else current,
                 "held": None if outcome else held})
    return outcome or refusal(op, current, held)
