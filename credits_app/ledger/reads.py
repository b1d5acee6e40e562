"""Reading the ledger: a balance (through the fast path on PostgreSQL), a user's entries,
the books' check, and the purge of expired key claims."""
from datetime import datetime, timedelta, timezone

from flask import current_app
from sqlalchemy import bindparam, text

from ..config import BIGINT_MAX
from ..exceptions import UserNotFound
from ..extensions import db
from ..types import UTCDateTime, utcnow
from .fast_path import fetch_one
from .records import ENTRY_COLUMNS, UTC, Balance, entry_from_row
from .rules import check_user_id


# What is held counts open holds not yet past their time (holds.py): the stored `held` less
# those past it, in the read's one snapshot. Most rows hold nothing, and then the holds are
# not looked at.
_BALANCE = ("SELECT u.user_id, COALESCE(c.credits, 0) AS credits, c.last_updated, CASE WHEN c.held > 0 THEN "
            "c.held - (SELECT CAST(COALESCE(SUM(h.amount), 0) AS BIGINT) FROM holds h WHERE h.user_id = u.user_id "
            "AND h.status = 'open' AND h.expires_at <= {now}) ELSE 0 END AS held "
            "FROM users u LEFT JOIN credits c ON c.user_id = u.user_id WHERE u.user_id = :uid")
BALANCE = text(_BALANCE.format(now="statement_timestamp()")).columns(last_updated=UTCDateTime)
_SQLITE_BALANCE = text(_BALANCE.format(now=":now")).bindparams(bindparam("now", type_=UTCDateTime)).columns(
    last_updated=UTCDateTime)


def balance(user_id):
    """The current balance and what open holds keep of it. Raises UserNotFound."""
    check_user_id(user_id)
    engine = db.engine
    if engine.dialect.name == "postgresql":
        row = fetch_one(engine, BALANCE, {"uid": user_id})
    else:
        with engine.connect() as conn:
            row = conn.execute(_SQLITE_BALANCE, {"uid": user_id, "now": utcnow()}).first()
    if row is None:
        raise UserNotFound(user_id)
    return Balance(row.user_id, row.credits, UTC.process_result_value(row.last_updated, None), row.held)


# A user's entries newest first, in time order (entry order, by the time rule): one page
# before a position (created_at, id) and after `since`. The page's ids come from
# ix_ledger_user_time alone (an index-only range), then the rows by primary key: asked for
# whole rows, the planner may walk ix_ledger_time instead, filtering on the user, which for
# a window before a heavy user's first entry reads the whole ledger before it.
_ENTRIES = text(f"""
    SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE id IN (
        SELECT id FROM ledger_entries WHERE user_id = :uid AND created_at > :since AND (created_at, id) < (:at, :id)
        ORDER BY created_at DESC, id DESC LIMIT :limit)
    ORDER BY created_at DESC, id DESC""").bindparams(
    *(bindparam(name, type_=UTCDateTime) for name in ("since", "at"))).columns(created_at=UTCDateTime)
# The same page of the entries of some kinds: the same index-only range, each id's kind then
# looked up by primary key and the id kept when its kind is asked for, until the page is
# full. The kind is read in a scalar subquery, which the planner cannot turn into a join:
# as a join it may scan the whole ledger for a rare kind instead of following the user's
# range. A rare kind costs one lookup per entry of the window it is looked for in.
_KIND_ENTRIES = text(f"""
    SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE id IN (
        SELECT id FROM ledger_entries i WHERE user_id = :uid AND created_at > :since AND (created_at, id) < (:at, :id)
            AND (SELECT kind FROM ledger_entries k WHERE k.id = i.id) IN :kinds
        ORDER BY created_at DESC, id DESC LIMIT :limit)
    ORDER BY created_at DESC, id DESC""").bindparams(
    *(bindparam(name, type_=UTCDateTime) for name in ("since", "at")), bindparam("kinds", expanding=True)).columns(
    created_at=UTCDateTime)
# The ledger's kinds (ledger_entries' CHECK constraint `kind`).
KINDS = ("add", "deduct", "reset", "daily_grant", "reversal", "capture")
EARLIEST = datetime(1, 1, 2, tzinfo=timezone.utc)
LATEST = datetime(9999, 12, 30, tzinfo=timezone.utc)


def entries(user_id, *, limit, before=None, since=None, until=None, kinds=None):
    """Ledger entries of a user, newest first: those with since < created_at <= until, after
    the position `before` ((created_at, id) of the previous page's last entry), of one of
    `kinds` when given (None: all). Raises UserNotFound."""
    check_user_id(user_id)
    # `until` (inclusive) is a position too: the page starts at the earlier of the two, so
    # the index range starts where the page does.
    at, entry_id = min(before or (LATEST, BIGINT_MAX), (until or LATEST, BIGINT_MAX))
    params = {"uid": user_id, "since": since or EARLIEST, "at": at, "id": entry_id, "limit": limit}
    stmt = _ENTRIES
    if kinds:
        stmt, params["kinds"] = _KIND_ENTRIES, sorted(set(kinds))
    with db.engine.connect() as conn:
        rows = conn.execute(stmt, params).all()
        if not rows and conn.execute(text("SELECT 1 FROM users WHERE user_id = :uid"), {"uid": user_id}).first() is None:
            raise UserNotFound(user_id)
    return [entry_from_row(r) for r in rows]


def position(entry_id):
    """(created_at, id) of an entry, or None: where a page that ended on it continues."""
    with db.engine.connect() as conn:
        at = conn.execute(text("SELECT created_at FROM ledger_entries WHERE id = :id").columns(created_at=UTCDateTime),
                          {"id": entry_id}).scalar()
    return None if at is None else (at, entry_id)


def purge_idempotency_keys(now=None):
    """Delete key claims older than IDEMPOTENCY_TTL_HOURS; returns how many. Safe: the
    ledger's UNIQUE (actor, idempotency_key) still refuses a purged key that took effect
    (422 idempotency_key_expired), so nothing can apply twice."""
    cutoff = (now or utcnow()) - timedelta(hours=current_app.config["IDEMPOTENCY_TTL_HOURS"])
    with db.engine.begin() as conn:
        return conn.execute(text("DELETE FROM idempotency_keys WHERE created_at < :cutoff")
                            .bindparams(bindparam("cutoff", type_=UTCDateTime)), {"cutoff": cutoff}).rowcount


def verify():
    """Users whose stored balance differs from the sum of their ledger entries (every balance
    must equal it). Returns a list of (user_id, stored, ledger_sum); empty when the books
    balance."""
    stmt = text("""
        SELECT u.user_id, COALESCE(c.credits, 0) AS stored, COALESCE(l.total, 0) AS ledger_sum
        FROM users u
        LEFT JOIN credits c ON c.user_id = u.user_id
        LEFT JOIN (SELECT user_id, SUM(amount) AS total FROM ledger_entries GROUP BY user_id) l
               ON l.user_id = u.user_id
        WHERE COALESCE(c.credits, 0) <> COALESCE(l.total, 0)
        ORDER BY u.user_id""")
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(stmt)]
