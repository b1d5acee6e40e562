"""The daily grant's set-based SQL: one statement credits a whole chunk of users, and one
more moves the alert state of those it lifts."""
from datetime import date, datetime

from flask import current_app
from sqlalchemy import bindparam, text

from ..auth.claims import SYSTEM_PREFIX
from ..events import outbox
from ..extensions import db
from ..types import UTCDateTime, utcnow
from . import alerts
from .rules import PG_ENTRY_TIME, check_amount, entry_time


GRANT_ACTOR = SYSTEM_PREFIX + "daily-grant"  # reserved: no token may carry it

# Two workers on the same (date, chunk) queue on this lock; the second then finds every
# user already granted. Taken in its own statement so the grant's snapshot is taken after it.
_PG_GRANT_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(:lock_name, 0))"
# Seed-era users without a credits row get one at zero, then take the grant like everyone.
_GRANT_ENSURE_CREDITS = """
INSERT INTO credits (user_id, credits, last_updated)
SELECT u.user_id, 0, :now FROM users u
WHERE u.user_id >= :lo AND u.user_id < :hi
  AND NOT EXISTS (SELECT 1 FROM credits c WHERE c.user_id = u.user_id)
ON CONFLICT (user_id) DO NOTHING"""
# One statement: add to the LIVE balance (a concurrent add/deduct is re-read by the UPDATE's
# row lock), skip users already granted this date or at the cap, and write their ledger rows.
# The NOT EXISTS repeats the chunk's range (implied by l.user_id = c.user_id): statistics
# taken before today's grant estimate 1 row for today's date, and without the range the
# planner loops over every row granted so far per user, which on a large table runs past
# the statement timeout.
# Each entry's time follows the time rule (rules.PG_ENTRY_TIME) on the row the UPDATE locked.
_PG_GRANT = """
WITH upd AS (
    UPDATE credits AS c SET credits = c.credits + :amount, last_updated = %s
    WHERE c.user_id >= :lo AND c.user_id < :hi AND c.credits <= :max_balance - :amount
      AND NOT EXISTS (SELECT 1 FROM ledger_entries l WHERE l.user_id = c.user_id AND l.grant_date = :gd
                      AND l.user_id >= :lo AND l.user_id < :hi)
    RETURNING c.user_id, c.credits, c.last_updated
)
INSERT INTO ledger_entries (user_id, kind, amount, balance_after, reason, actor, grant_date, created_at)
SELECT user_id, 'daily_grant', :amount, credits, :reason, :actor, :gd, last_updated FROM upd""" % (
    PG_ENTRY_TIME.format(previous="c.last_updated"))
# SQLite: BEGIN IMMEDIATE holds the only write lock, so the ledger rows can be written
# first from the balances read in this transaction and the same users updated after. One
# time for the chunk, after the newest last_updated in it (the time rule).
_SQLITE_CHUNK_LAST_UPDATED = text("SELECT MAX(last_updated) AS last_updated FROM credits "
                                  "WHERE user_id >= :lo AND user_id < :hi").columns(last_updated=UTCDateTime)
_SQLITE_GRANT_LEDGER = """
INSERT INTO ledger_entries (user_id, kind, amount, balance_after, reason, actor, grant_date, created_at)
SELECT c.user_id, 'daily_grant', :amount, c.credits + :amount, :reason, :actor, :gd, :now FROM credits c
WHERE c.user_id >= :lo AND c.user_id < :hi AND c.credits <= :max_balance - :amount
  AND NOT EXISTS (SELECT 1 FROM ledger_entries l WHERE l.user_id = c.user_id AND l.grant_date = :gd)"""
# Alerts: the grant moves the stored state (alerts.py) only of the users it credited for this
# date whose state is low or depleted, so a run costs one indexed pass over the chunk and
# writes balance.recovered only for those it lifts to their threshold (depleted -> low moves
# silently), never an event per user granted.
_PG_GRANT_ALERTS = """
WITH moved AS (
    UPDATE credits AS c SET alert_state = {state}
    WHERE c.user_id >= :lo AND c.user_id < :hi AND c.alert_state IN ('low', 'depleted')
      AND {state} IS DISTINCT FROM c.alert_state
      AND EXISTS (SELECT 1 FROM ledger_entries l WHERE l.user_id = c.user_id AND l.grant_date = :gd
                  AND l.user_id >= :lo AND l.user_id < :hi)
    RETURNING c.user_id, c.credits, c.held, c.alert_state, {threshold} AS threshold,
              (SELECT l.id FROM ledger_entries l WHERE l.user_id = c.user_id AND l.grant_date = :gd) AS entry_id
), recovered AS (
    INSERT INTO events (event_type, user_id, data, created_at)
    SELECT 'balance.recovered', user_id, CAST(json_build_object(
               'user_id', user_id, 'credits', credits, 'held', held, 'available', credits - held,
               'threshold', threshold, 'entry_id', entry_id, 'hold_id', NULL) AS TEXT), :now
    FROM moved WHERE alert_state = 'ok'
    RETURNING id, event_type, created_at
)
{deliveries}""".format(state=alerts.pg_state("c.credits - c.held", "COALESCE(c.low_balance_threshold, :low_default)"),
                       threshold="COALESCE(c.low_balance_threshold, :low_default)",
                       deliveries=outbox.PG_EVENT_DELIVERIES.format(events="recovered"))
_SQLITE_GRANT_ALERTING = text("""
SELECT c.user_id, c.credits, c.held, l.id AS entry_id FROM credits c
JOIN ledger_entries l ON l.user_id = c.user_id AND l.grant_date = :gd
WHERE c.user_id >= :lo AND c.user_id < :hi AND c.alert_state IN ('low', 'depleted')""")
_SQLITE_GRANT_CREDITS = """
UPDATE credits SET credits = credits + :amount, last_updated = :now
WHERE user_id IN (SELECT user_id FROM ledger_entries WHERE id > :after_id AND grant_date = :gd)"""


def grant_daily_chunk(grant_date, amount, lo, hi, *, bookkeeping=None):
    """Grant `amount` to every user with lo <= user_id < hi who has no daily grant for
    `grant_date` yet; return how many users were credited.

    Exactly once per (user, date): the UNIQUE (user_id, grant_date) index refuses a second
    grant, and concurrent runs of the same chunk serialise on a lock and then credit nobody.
    Users whose balance would pass MAX_BALANCE are skipped (no credit, no ledger row).
    `bookkeeping(conn, users_credited)`, if given, runs inside the same transaction, so
    progress records commit with the credits or not at all. Raises on any database error.
    """
    if not isinstance(grant_date, date) or isinstance(grant_date, datetime):
        raise TypeError("grant_date must be a datetime.date")
    check_amount(amount)
    params = {"gd": grant_date, "amount": amount, "lo": lo, "hi": hi, "now": utcnow(),
              "max_balance": current_app.config["MAX_BALANCE"], "actor": GRANT_ACTOR,
              "reason": f"daily grant {grant_date.isoformat()}",
              "lock_name": f"daily-grant:{grant_date.isoformat()}:{lo}", "low_default": alerts.default_threshold()}
    now_type = bindparam("now", type_=UTCDateTime)
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(_PG_GRANT_LOCK), params)
            conn.execute(text(_GRANT_ENSURE_CREDITS).bindparams(now_type), params)
            credited = conn.execute(text(_PG_GRANT), params).rowcount
            if credited:
                conn.execute(text(_PG_GRANT_ALERTS).bindparams(now_type), params)
        else:
            conn.execute(text(_GRANT_ENSURE_CREDITS).bindparams(now_type), params)
            params["after_id"] = conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM ledger_entries")).scalar()
            params["now"] = entry_time(conn.execute(_SQLITE_CHUNK_LAST_UPDATED, params).scalar())
            credited = conn.execute(text(_SQLITE_GRANT_LEDGER).bindparams(now_type), params).rowcount
            conn.execute(text(_SQLITE_GRANT_CREDITS).bindparams(now_type), params)
            for user in conn.execute(_SQLITE_GRANT_ALERTING, params).all():
                alerts.record(conn, user.user_id, user.credits, user.held, at=params["now"], entry_id=user.entry_id)
        if bookkeeping is not None:
            bookkeeping(conn, credited)
    return credited
