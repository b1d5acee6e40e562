"""Add, deduct, reset: validate, pick the dialect's statement, and answer a replayed
Idempotency-Key with the original outcome (recall() and replay(), which reversals.py and
holds.py use too)."""
import json

from flask import current_app
from sqlalchemy import bindparam, exc, text

from ..exceptions import Conflict, IdempotencyKeyExpired, IdempotencyMismatch, UserNotFound
from ..extensions import db
from ..types import UTCDateTime, utcnow
from . import holds, postgres, sqlite
from .records import ENTRY_COLUMNS, Change, entry_from_row
from .rules import Op, check_amount, check_user_id, refusal, request_hash


def add(user_id, amount, *, actor, reason=None, idempotency_key=None):
    """Add `amount` credits. Raises UserNotFound, InvalidRequest, BalanceLimitExceeded,
    IdempotencyMismatch, IdempotencyKeyExpired."""
    check_amount(amount)
    return _change("add", user_id, amount, amount, actor, reason, idempotency_key)


def deduct(user_id, amount, *, actor, reason=None, idempotency_key=None):
    """Deduct `amount` credits; never below zero. Raises InsufficientCredits and as add()."""
    check_amount(amount)
    return _change("deduct", user_id, -amount, amount, actor, reason, idempotency_key)


def reset(user_id, *, actor, reason=None, idempotency_key=None):
    """Set the balance to zero, recorded as a ledger entry of -(old balance)."""
    return _change("reset", user_id, None, None, actor, reason, idempotency_key)


def _change(kind, user_id, delta, amount, actor, reason, key):
    check_user_id(user_id)
    op = Op(kind, user_id, delta, amount, actor, reason, key,
             request_hash(kind, user_id, amount, reason) if key else None,
             current_app.config["MAX_BALANCE"])
    engine = db.engine
    apply = postgres.apply if engine.dialect.name == "postgresql" else sqlite.apply
    if kind == "reset" and engine.dialect.name == "postgresql":
        apply = postgres.apply_reset
    for _ in range(4):
        try:
            outcome = apply(engine, op)
        except exc.IntegrityError as e:
            # A concurrent request with the same key won the race (claim PK or ledger UNIQUE).
            if key and is_key_conflict(e):
                return replay(op)
            raise
        if outcome == "replay":
            return replay(op)
        if outcome == "no_credits_row":
            ensure_credits_row(user_id)
            continue
        if outcome == "overdue_holds":
            # Refused while holds past their time still counted: record them, decide again.
            holds.expire_due(user_id)
            continue
        if isinstance(outcome, Exception):
            raise outcome
        return Change(outcome)
    raise RuntimeError("credits row for user %s vanished during the change" % user_id)


def recall(op):
    """The claim of a request whose key was claimed before, if it succeeded; raises the
    original refusal (marked replayed) if it was refused, and IdempotencyMismatch or
    IdempotencyKeyExpired when the key cannot answer this request."""
    with db.engine.connect() as conn:
        claim = conn.execute(text("SELECT request_hash, status_code, refused_balance, refused_held, refusal, answer "
                                  "FROM idempotency_keys WHERE scope = :actor AND key = :key"),
                             {"actor": op.actor, "key": op.key}).first()
    if claim is None:
        # The claim was purged after its TTL but the ledger (or the holds) still know the key.
        raise IdempotencyKeyExpired(op.key)
    if claim.request_hash != op.request_hash:
        raise IdempotencyMismatch(op.key)
    if claim.status_code != 200:
        if claim.refusal is not None:  # kept whole (a reversal's, a hold's): code, message, details
            stored = json.loads(claim.refusal)
            refused = Conflict(stored["message"], **stored["details"])
            refused.code = stored["code"]
        else:  # a balance refusal: rebuilt from the figures it was decided on
            refused = refusal(op, claim.refused_balance, claim.refused_held)
        refused.replayed = True  # the API says so, as it does for a replayed change
        raise refused
    return claim


def replay(op):
    """Answer a request whose key was claimed before: the original outcome, unchanged."""
    recall(op)
    with db.engine.connect() as conn:
        row = conn.execute(text(f"SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE actor = :actor "
                                "AND idempotency_key = :key").columns(created_at=UTCDateTime),
                           {"actor": op.actor, "key": op.key}).one()
    return Change(entry_from_row(row), replayed=True)


def ensure_credits_row(user_id):
    """Seed-era users may have no credits row: create it at zero, race-free. Raises UserNotFound."""
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO credits (user_id, credits, last_updated) "
                          "SELECT user_id, 0, :now FROM users WHERE user_id = :uid "
                          "ON CONFLICT (user_id) DO NOTHING").bindparams(bindparam("now", type_=UTCDateTime)),
                     {"uid": user_id, "now": utcnow()})
        if conn.execute(text("SELECT 1 FROM users WHERE user_id = :uid"), {"uid": user_id}).first() is None:
            raise UserNotFound(user_id)


def is_key_conflict(error):
    message = str(error.orig)
    return "idempotency_key" in message  # the claim PK or the ledger UNIQUE (both dialects)
