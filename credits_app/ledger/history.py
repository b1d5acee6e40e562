"""Balances in the past: as of an instant, and as a series of points for a chart.

"As of T" is the balance after the user's last entry at or before T (0 before the first).
It is exact because of the time rule (rules.PG_ENTRY_TIME): within a user, entries in time
order are in entry order and no two share a time, so ix_ledger_user_time finds that entry
in one index descent, however many entries the user has. An instant a moment old may still
gain an entry: a change's time is taken under its lock and it is visible when it commits.
"""
import json
from datetime import timedelta, timezone

from sqlalchemy import bindparam, text

from ..exceptions import InvalidRequest, UserNotFound
from ..extensions import db
from ..types import UTCDateTime, utcnow
from .rules import check_user_id

MAX_POINTS = 1000

_AS_OF = text("""
    SELECT u.user_id, COALESCE(l.balance_after, 0) AS credits, l.created_at AS last_updated
    FROM users u
    LEFT JOIN ledger_entries l ON l.id = (  -- the id alone, as _POINT says why
        SELECT id FROM ledger_entries WHERE user_id = :uid AND created_at <= :at
        ORDER BY created_at DESC, id DESC LIMIT 1)
    WHERE u.user_id = :uid""").bindparams(bindparam("at", type_=UTCDateTime)).columns(last_updated=UTCDateTime)

# The user, its current balance and the time of its first entry, in the history's snapshot.
_USER = text("""
    SELECT u.created_at, COALESCE(c.credits, 0) AS credits,
           (SELECT MIN(created_at) FROM ledger_entries WHERE user_id = :uid) AS first_entry
    FROM users u LEFT JOIN credits c ON c.user_id = u.user_id WHERE u.user_id = :uid""").columns(
    created_at=UTCDateTime, first_entry=UTCDateTime)

# The balance as of each instant: the entry's id from ix_ledger_user_time alone (an index-only
# descent), then its row by primary key. Asking the descent for balance_after too lets the
# planner walk ix_ledger_time instead, filtering on the user: for an instant before a heavy
# user's first entry that reads the whole ledger before it. PostgreSQL takes the instants as
# an array, SQLite as a JSON array of its stored text form.
_POINT = ("(SELECT l.balance_after FROM ledger_entries l WHERE l.id = (SELECT i.id FROM ledger_entries i "
          "WHERE i.user_id = :uid AND i.created_at <= {at} ORDER BY i.created_at DESC, i.id DESC LIMIT 1))")
_PG_POINTS = text(f"SELECT t.n, COALESCE({_POINT.format(at='t.at')}, 0) AS credits "
                  "FROM unnest(CAST(:ats AS timestamptz[])) WITH ORDINALITY AS t(at, n) ORDER BY t.n")
_SQLITE_POINTS = text(f"SELECT t.key AS n, COALESCE({_POINT.format(at='t.value')}, 0) AS credits "
                      "FROM json_each(:ats) AS t ORDER BY t.key")
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime in SQLite (naive UTC)


def as_of(user_id, at):
    """(credits, time of the entry that made it or None) as of `at`. Raises UserNotFound."""
    check_user_id(user_id)
    with db.engine.connect() as conn:
        row = conn.execute(_AS_OF, {"uid": user_id, "at": at}).first()
    if row is None:
        raise UserNotFound(user_id)
    return row.credits, row.last_updated


def history(user_id, *, since=None, until=None, points=100):
    """At most `points` (instant, balance) pairs: `since` to `until` cut into equal spans, the
    balance as of the end of each. `since` defaults to the user's creation (or first entry, if
    earlier; a day before `until` if that is earlier still), `until` to now, when the last
    point is the current balance. Returns (since, until, [(at, credits), ...]). Raises
    UserNotFound, InvalidRequest."""
    check_user_id(user_id)
    if not 1 <= points <= MAX_POINTS:
        raise InvalidRequest(f"points must be between 1 and {MAX_POINTS}", field="points")
    engine = db.engine
    with _snapshot(engine) as conn:
        user = conn.execute(_USER, {"uid": user_id}).first()
        if user is None:
            raise UserNotFound(user_id)
        now = utcnow()
        if since is None:
            since = min(t for t in (user.created_at, user.first_entry) if t is not None)
            if until is not None and until <= since:  # a history that ends before the user began
                since = until - timedelta(days=1)
        until_given, until = until is not None, until or max(now, since + timedelta(microseconds=1))
        if since >= until:
            raise InvalidRequest("since must be before until", field="since")
        ends = _bucket_ends(since, until, points)
        if engine.dialect.name == "postgresql":
            rows = conn.execute(_PG_POINTS, {"uid": user_id, "ats": ends}).all()
        else:
            stored = json.dumps([t.astimezone(timezone.utc).strftime(_SQLITE_TIME) for t in ends])
            rows = conn.execute(_SQLITE_POINTS, {"uid": user_id, "ats": stored}).all()
        series = [(at, row.credits) for at, row in zip(ends, rows)]
        if not until_given:
            series[-1] = (until, user.credits)
    return since, until, series


def _bucket_ends(since, until, points):
    """The ends of `points` equal spans of since..until, to the microsecond (fewer when the
    range is shorter than that many microseconds); the last is `until`."""
    span = (until - since) // timedelta(microseconds=1)
    n = min(points, span)
    return [since + timedelta(microseconds=span * (i + 1) // n) for i in range(n)]


def _snapshot(engine):
    """A connection whose statements all see one state of the database: REPEATABLE READ on
    PostgreSQL, a deferred transaction (a WAL snapshot that lets writers on) on SQLite."""
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        return conn.execution_options(isolation_level="REPEATABLE READ")
    return conn.execution_options(read_only=True)
