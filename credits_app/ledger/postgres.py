"""A change on PostgreSQL: ONE autocommit statement (lock the row, conditional UPDATE, ledger
INSERT, key claim), run through the fast path, so the success path costs one round trip.
A reset is two statements in one transaction, as it closes the user's holds too."""
import functools

from sqlalchemy import bindparam, text

from . import alerts, holds
from ..events import outbox
from ..types import UTCDateTime, utcnow
from .fast_path import fetch_one
from .records import ENTRY_COLUMNS, entry_from_row
from .rules import ALLOWED, PG_ENTRY_TIME, refusal


# `cur` locks the row and, under READ COMMITTED, returns its newest committed version, even
# when another change committed while this statement waited for the lock. Every decision and
# every column of the new row are computed from `cur`, never from `c`: the UPDATE reads `c` as
# of the statement's snapshot, drops a row whose old version fails its WHERE without a look
# at the newest one, and builds the new row from the old version (a column it does not set,
# such as `held`, would go back to what it was before a hold committed meanwhile).
# The entry's time follows the time rule (rules.PG_ENTRY_TIME), under the same lock.
_PG_CHANGE = """
WITH cur AS (
    SELECT user_id, credits, held, last_updated, alert_state, COALESCE(low_balance_threshold, :low_default) AS threshold
    FROM credits WHERE user_id = :uid {guard} FOR UPDATE
), upd AS (
    UPDATE credits AS c SET credits = cur.credits + {delta}, held = {held}, last_updated = {entry_time},
                            alert_state = {alert_state}
    FROM cur
    WHERE c.user_id = cur.user_id {allowed} {unclaimed}
    RETURNING c.user_id, c.credits, c.held, c.last_updated, c.alert_state, {delta} AS amount
), led AS (
    INSERT INTO ledger_entries (user_id, kind, amount, balance_after, reason, actor, idempotency_key, created_at)
    SELECT user_id, :kind, amount, credits, :reason, :actor, :key, last_updated FROM upd
    RETURNING {entry_columns}
){alert}{deliveries}{overdue}{claim}
SELECT (SELECT credits FROM cur) AS current_balance, (SELECT held FROM cur) AS current_held,
       {is_overdue} AS overdue, {seen} AS seen, EXISTS (SELECT 1 FROM webhook_subscriptions) AS subscribed,
       {own_threshold} AS own_threshold, led.*
FROM (SELECT 1) AS one LEFT JOIN led ON TRUE
"""
# The change's events commit with it (events/outbox.py): the alerts its new balance fires
# from the row's stored state (alerts.py), and, while any endpoint subscribes to anything,
# the deliveries of its credits.changed event (the entry is the event) and of its alerts.
# Each table and index a statement writes is one more lock and node per change, so a part
# that cannot apply is left out: the deliveries while nobody subscribes (the default), the
# alerts while LOW_BALANCE_THRESHOLD is 0 (the default) for a user without a threshold of
# their own. Guards in `cur`, read in the statement's own snapshot, make the lean variants
# exact: when a part does apply after all, the statement changes nothing and says which
# (`subscribed`, `own_threshold`), and apply() runs the statement with it.
_PG_ALERT = """, alert AS (
    INSERT INTO events (event_type, user_id, data, created_at)
    SELECT fired.event_type, upd.user_id, CAST(json_build_object(
               'user_id', upd.user_id, 'credits', upd.credits, 'held', upd.held, 'available', upd.credits - upd.held,
               'threshold', cur.threshold, 'entry_id', led.id, 'hold_id', NULL) AS TEXT), led.created_at
    FROM cur JOIN upd ON TRUE JOIN led ON TRUE CROSS JOIN LATERAL {fired} WHERE fired.fires
    RETURNING id, event_type, created_at
)"""
_PG_ALERT_DELIVERIES = """, alert_deliveries AS (
    {alert_deliveries}
)"""
_PG_ENTRY_DELIVERIES = """, entry_deliveries AS (
    {entry_deliveries}
)"""
_PG_UNSUBSCRIBED = "AND NOT EXISTS (SELECT 1 FROM webhook_subscriptions)"
_PG_NO_OWN_THRESHOLD = "AND low_balance_threshold IS NULL"
# A refused debit while some of the user's open holds are past their time (seen in the
# statement's snapshot): those no longer count (holds.py), so the caller records them as
# expired and decides again; the refusal is not kept with the key, as it is not final.
_PG_OVERDUE = """, overdue AS (
    SELECT cur.held > 0 AND NOT EXISTS (SELECT 1 FROM led) AND EXISTS (
        SELECT 1 FROM holds WHERE user_id = :uid AND status = 'open' AND expires_at <= statement_timestamp()) AS yes
    FROM cur
)"""
_PG_UNCLAIMED = "AND NOT EXISTS (SELECT 1 FROM idempotency_keys WHERE scope = :actor AND key = :key)"
# A plain INSERT (no ON CONFLICT): if a concurrent request claimed the key first, this
# statement fails as a whole and the caller answers from the winner's record.
_PG_CLAIM = """, claim AS (
    INSERT INTO idempotency_keys (scope, key, request_hash, status_code, refused_balance, refused_held, created_at)
    SELECT :actor, :key, :hash, CASE WHEN EXISTS (SELECT 1 FROM led) THEN 200 ELSE 409 END,
           CASE WHEN EXISTS (SELECT 1 FROM led) THEN NULL ELSE cur.credits END,
           CASE WHEN EXISTS (SELECT 1 FROM led) THEN NULL ELSE cur.held END, :now
    FROM cur {unclaimed}
)"""


@functools.cache
def statement(kind, keyed, subscribed=False, alerting=False):
    """The change statement of `kind`, with the Idempotency-Key claim when `keyed`; with
    the deliveries of its events when `subscribed` (else only while no endpoint subscribes
    to anything); with its alerts when `alerting` (else only for a user without a threshold
    of their own, with LOW_BALANCE_THRESHOLD 0). The defaults are the default deployment's."""
    unclaimed = _PG_UNCLAIMED if keyed else ""
    debit = kind == "deduct"
    deliveries = ""
    if subscribed:
        deliveries = _PG_ENTRY_DELIVERIES.format(entry_deliveries=outbox.PG_ENTRY_DELIVERIES.format(entry="led"))
        if alerting:
            deliveries += _PG_ALERT_DELIVERIES.format(
                alert_deliveries=outbox.PG_EVENT_DELIVERIES.format(events="alert"))
    sql = _PG_CHANGE.format(
        guard=("" if subscribed else _PG_UNSUBSCRIBED) + ("" if alerting else " " + _PG_NO_OWN_THRESHOLD),
        alert=_PG_ALERT.format(fired=alerts.pg_fired("cur.alert_state", "upd.alert_state")) if alerting else "",
        own_threshold="FALSE" if alerting else
        "(SELECT low_balance_threshold IS NOT NULL FROM credits WHERE user_id = :uid)",
        deliveries=deliveries,
        delta="(-cur.credits)" if kind == "reset" else ":delta",
        held="0" if kind == "reset" else "cur.held",  # apply_reset closed the holds first
        overdue=_PG_OVERDUE if debit else "",
        is_overdue="(SELECT yes FROM overdue)" if debit else "FALSE",
        allowed=ALLOWED[kind],
        unclaimed=unclaimed,
        entry_columns=ENTRY_COLUMNS,
        entry_time=PG_ENTRY_TIME.format(previous="cur.last_updated"),
        alert_state=alerts.pg_state("0" if kind == "reset" else "cur.credits - cur.held + :delta", "cur.threshold")
        if alerting else "NULL",
        claim=_PG_CLAIM.format(unclaimed="WHERE TRUE " + unclaimed + (
            " AND NOT (SELECT yes FROM overdue)" if debit else "")) if keyed else "",
        seen="(SELECT count(*) FROM idempotency_keys WHERE scope = :actor AND key = :key)" if keyed else "0",
    )
    stmt = text(sql).bindparams(bindparam("now", type_=UTCDateTime)) if keyed else text(sql)  # the claim's time
    return stmt.columns(created_at=UTCDateTime)


def _params(op):
    params = {"uid": op.user_id, "delta": op.delta, "max_balance": op.max_balance, "kind": op.kind,
              "reason": op.reason, "actor": op.actor, "key": op.key, "hash": op.request_hash,
              "low_default": alerts.default_threshold()}
    if op.key is not None:
        params["now"] = utcnow()
    return params


# Hints, per database, of which variant to run first; a wrong guess costs one more round
# trip, never a missed event. Subscriptions: as the last change found them. Alerts: once a
# change meets a user with a threshold of their own, alerts are in use, and every later
# change in this process runs with them rather than pay a second trip for each such user.
_SUBSCRIBED = {}
_ALERTING = set()


def apply(engine, op):
    keyed, params, database = op.key is not None, _params(op), str(engine.url)
    subscribed = _SUBSCRIBED.get(database, False)
    alerting = params["low_default"] > 0 or database in _ALERTING
    row = fetch_one(engine, statement(op.kind, keyed, subscribed, alerting), params)
    if (row.subscribed and not subscribed) or row.own_threshold:  # a guard stopped the change: run it whole
        if row.own_threshold:
            _ALERTING.add(database)
        row = fetch_one(engine, statement(op.kind, keyed, row.subscribed, True), params)
    _SUBSCRIBED[database] = row.subscribed
    return _outcome(op, row)


def apply_reset(engine, op):
    """A reset closes the user's open holds and zeroes `credits` and `held` in one
    transaction, never refused. The first statement locks the row; the next ones start
    after it, so they see every hold committed before the lock (each hold operation takes
    the same lock), which one statement's snapshot, taken before the lock wait, would not."""
    with engine.begin() as conn:
        if op.key is not None and conn.execute(text("SELECT 1 FROM idempotency_keys WHERE scope = :actor AND "
                                                    "key = :key"), {"actor": op.actor, "key": op.key}).first():
            return "replay"
        conn.execute(text("SELECT 1 FROM credits WHERE user_id = :uid FOR UPDATE"), {"uid": op.user_id})
        holds.release_all(conn, op.user_id, op.actor)
        return _outcome(op, conn.execute(statement(op.kind, op.key is not None, True, True), _params(op)).first())


def _outcome(op, row):
    if row.seen:
        return "replay"
    if row.id is not None:
        return entry_from_row(row)
    if row.current_balance is None:
        return "no_credits_row"
    if row.overdue:
        return "overdue_holds"
    return refusal(op, row.current_balance, row.current_held)
