"""A change on PostgreSQL: ONE autocommit statement (lock the row, conditional UPDATE, ledger
INSERT, key claim), run through the fast path, so the success path costs one round trip."""
import functools

from sqlalchemy import bindparam, text

from ..types import UTCDateTime, utcnow
from .fast_path import fetch_one
from .records import ENTRY_COLUMNS, entry_from_row
from .rules import ALLOWED, PG_ENTRY_TIME, refusal


# `cur` locks the row and, under READ COMMITTED, returns its newest committed version, even
# when another change committed while this statement waited for the lock. Every decision and
# the new balance are computed from `cur.credits`, never from `c`: the UPDATE reads `c` as of
# the statement's snapshot, drops a row whose old version fails its WHERE without a look at
# the newest one, and checks the CHECK constraint on a value computed from the old version.
# The entry's time follows the time rule (rules.PG_ENTRY_TIME), under the same lock.
_PG_CHANGE = """
WITH cur AS (
    SELECT user_id, credits, last_updated FROM credits WHERE user_id = :uid FOR UPDATE
), upd AS (
    UPDATE credits AS c SET credits = cur.credits + {delta}, last_updated = {entry_time}
    FROM cur
    WHERE c.user_id = cur.user_id {allowed} {unclaimed}
    RETURNING c.user_id, c.credits, c.last_updated, {delta} AS amount
), led AS (
    INSERT INTO ledger_entries (user_id, kind, amount, balance_after, reason, actor, idempotency_key, created_at)
    SELECT user_id, :kind, amount, credits, :reason, :actor, :key, last_updated FROM upd
    RETURNING {entry_columns}
){claim}
SELECT (SELECT credits FROM cur) AS current_balance, {seen} AS seen, led.*
FROM (SELECT 1) AS one LEFT JOIN led ON TRUE
"""
_PG_UNCLAIMED = "AND NOT EXISTS (SELECT 1 FROM idempotency_keys WHERE scope = :actor AND key = :key)"
# A plain INSERT (no ON CONFLICT): if a concurrent request claimed the key first, this
# statement fails as a whole and the caller answers from the winner's record.
_PG_CLAIM = """, claim AS (
    INSERT INTO idempotency_keys (scope, key, request_hash, status_code, refused_balance, created_at)
    SELECT :actor, :key, :hash, CASE WHEN EXISTS (SELECT 1 FROM led) THEN 200 ELSE 409 END,
           CASE WHEN EXISTS (SELECT 1 FROM led) THEN NULL ELSE cur.credits END, :now
    FROM cur {unclaimed}
)"""


@functools.cache
def statement(kind, keyed):
    """The change statement of `kind`, with the Idempotency-Key claim when `keyed`."""
    unclaimed = _PG_UNCLAIMED if keyed else ""
    sql = _PG_CHANGE.format(
        delta="(-cur.credits)" if kind == "reset" else ":delta",
        allowed=ALLOWED[kind],
        unclaimed=unclaimed,
        entry_columns=ENTRY_COLUMNS,
        entry_time=PG_ENTRY_TIME.format(previous="cur.last_updated"),
        claim=_PG_CLAIM.format(unclaimed="WHERE TRUE " + unclaimed) if keyed else "",
        seen="(SELECT count(*) FROM idempotency_keys WHERE scope = :actor AND key = :key)" if keyed else "0",
    )
    stmt = text(sql).bindparams(bindparam("now", type_=UTCDateTime)) if keyed else text(sql)  # the claim's time
    return stmt.columns(created_at=UTCDateTime)


def apply(engine, op):
    params = {"uid": op.user_id, "delta": op.delta, "max_balance": op.max_balance, "kind": op.kind,
              "reason": op.reason, "actor": op.actor, "key": op.key, "hash": op.request_hash}
    if op.key is not None:
        params["now"] = utcnow()
    row = fetch_one(engine, statement(op.kind, op.key is not None), params)
    if row.seen:
        return "replay"
    if row.id is not None:
        return entry_from_row(row)
    if row.current_balance is None:
        return "no_credits_row"
    return refusal(op, row.current_balance)
