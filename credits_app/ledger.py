"""The only code that changes balances.

Guarantees:
- a balance never goes below zero (the UPDATE is conditional and the CHECK constraint backs
  it), and an add never takes it above MAX_BALANCE;
- each change writes exactly one ledger row in the same transaction as the balance;
- an Idempotency-Key (scoped to the actor) takes effect at most once: the claim is written in
  the same transaction, and a UNIQUE index on the ledger refuses a second entry even if two
  requests race.

Rules for every statement that decides on a balance (refuse, cap, skip):
- A decision is made on the newest committed balance, read under the row lock, and a
  refusal reports that balance: on PostgreSQL the change statement locks the row first
  (`cur`) and computes both the condition and the new balance from it (_PG_CHANGE says why
  the UPDATE's own view of the row will not do); on SQLite BEGIN IMMEDIATE serialises
  writers, so the balance read inside the transaction is the newest.
- A credit checks `<= MAX_BALANCE` only, a debit `>= 0` only, a reset nothing (_ALLOWED).
- A stored (keyed) refusal is written in the same statement as the decision, with the
  balance it was made on, so it was right when it was made.
- The daily grant's cap skip is the one decision left to the UPDATE's own WHERE, on the
  statement's snapshot: a row that passes is re-checked on its newest version when another
  change committed first, and a row skipped as at the cap was at the cap at the snapshot,
  so each user's outcome is that of the grant running just before or just after the
  concurrent change (serializable per user). It reports no figures, and locking whole
  chunks first to decide on the newest rows would stall every change to those users.

On PostgreSQL a change is ONE autocommit statement (lock row, conditional UPDATE, ledger
INSERT, key claim), so the success path costs one round trip, run straight on the pooled
driver connection (see _pg_fetch_one). SQLite runs the same steps as separate statements
inside one BEGIN IMMEDIATE transaction, which serialises writers.
"""
import functools
import hashlib
import re
from collections import namedtuple
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from flask import current_app
from sqlalchemy import bindparam, exc, text

from . import thread_connections
from .claims import SYSTEM_PREFIX
from .config import BIGINT_MAX
from .exceptions import (BalanceLimitExceeded, IdempotencyKeyExpired, IdempotencyMismatch,
                         InsufficientCredits, InvalidRequest, UserNotFound)
from .extensions import db
from .types import UTCDateTime, utcnow

_UTC = UTCDateTime()  # also applied to rows read through the driver directly
ENTRY_COLUMNS = "id, user_id, kind, amount, balance_after, reason, actor, idempotency_key, grant_date, created_at"


@dataclass(frozen=True)
class Entry:
    id: int
    user_id: int
    kind: str
    amount: int
    balance_after: int
    reason: str | None
    actor: str
    idempotency_key: str | None
    grant_date: date | None
    created_at: datetime


@dataclass(frozen=True)
class Change:
    """The outcome of a balance change. `replayed` is true when an Idempotency-Key matched
    an earlier request and the original outcome is returned unchanged."""

    entry: Entry
    replayed: bool = False

    @property
    def user_id(self):
        return self.entry.user_id

    @property
    def credits(self):
        return self.entry.balance_after

    @property
    def last_updated(self):
        return self.entry.created_at


@dataclass(frozen=True)
class Balance:
    user_id: int
    credits: int
    last_updated: datetime | None  # None for a seed-era user who never had a credits row


# --- public API -------------------------------------------------------------------------

def add(user_id, amount, *, actor, reason=None, idempotency_key=None):
    """Add `amount` credits. Raises UserNotFound, InvalidRequest, BalanceLimitExceeded,
    IdempotencyMismatch, IdempotencyKeyExpired."""
    _check_amount(amount)
    return _change("add", user_id, amount, amount, actor, reason, idempotency_key)


def deduct(user_id, amount, *, actor, reason=None, idempotency_key=None):
    """Deduct `amount` credits; never below zero. Raises InsufficientCredits and as add()."""
    _check_amount(amount)
    return _change("deduct", user_id, -amount, amount, actor, reason, idempotency_key)


def reset(user_id, *, actor, reason=None, idempotency_key=None):
    """Set the balance to zero, recorded as a ledger entry of -(old balance)."""
    return _change("reset", user_id, None, None, actor, reason, idempotency_key)


_BALANCE = text("SELECT u.user_id, COALESCE(c.credits, 0) AS credits, c.last_updated FROM users u "
                "LEFT JOIN credits c ON c.user_id = u.user_id WHERE u.user_id = :uid"
                ).columns(last_updated=UTCDateTime)


def balance(user_id):
    """The current balance. Raises UserNotFound."""
    _check_user_id(user_id)
    engine = db.engine
    if engine.dialect.name == "postgresql":
        row = _pg_fetch_one(engine, _BALANCE, {"uid": user_id})
    else:
        with engine.connect() as conn:
            row = conn.execute(_BALANCE, {"uid": user_id}).first()
    if row is None:
        raise UserNotFound(user_id)
    return Balance(row.user_id, row.credits, _UTC.process_result_value(row.last_updated, None))


def entries(user_id, *, limit, before_id=None):
    """Ledger entries of a user, newest first, with id < before_id. Raises UserNotFound."""
    _check_user_id(user_id)
    stmt = text(f"SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE user_id = :uid AND id < :before "
                "ORDER BY id DESC LIMIT :limit").columns(created_at=UTCDateTime)
    with db.engine.connect() as conn:
        rows = conn.execute(stmt, {"uid": user_id, "before": before_id or BIGINT_MAX, "limit": limit}).all()
        if not rows and conn.execute(text("SELECT 1 FROM users WHERE user_id = :uid"), {"uid": user_id}).first() is None:
            raise UserNotFound(user_id)
    return [_entry(r) for r in rows]


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


# --- validation --------------------------------------------------------------------------

def _check_user_id(user_id):
    # Ids outside BIGINT cannot exist; refusing them here keeps the driver from overflowing.
    if not isinstance(user_id, int) or isinstance(user_id, bool) or not 1 <= user_id <= BIGINT_MAX:
        raise UserNotFound(user_id)


def _check_amount(amount):
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise InvalidRequest("amount must be an integer", field="amount")
    if amount <= 0:
        raise InvalidRequest("amount must be positive", field="amount", amount=amount)
    maximum = current_app.config["MAX_AMOUNT"]
    if amount > maximum:
        raise InvalidRequest(f"amount must be at most {maximum}", field="amount", maximum=maximum)


def _request_hash(kind, user_id, amount, reason):
    return hashlib.sha256(repr((kind, user_id, amount, reason)).encode()).hexdigest()


# --- the change itself -------------------------------------------------------------------

@dataclass
class _Op:
    kind: str
    user_id: int
    delta: int | None  # None for reset: the delta is minus the locked balance
    amount: int | None  # what the caller asked for (positive), for error details
    actor: str
    reason: str | None
    key: str | None
    request_hash: str | None
    max_balance: int


def _change(kind, user_id, delta, amount, actor, reason, key):
    _check_user_id(user_id)
    op = _Op(kind, user_id, delta, amount, actor, reason, key,
             _request_hash(kind, user_id, amount, reason) if key else None,
             current_app.config["MAX_BALANCE"])
    engine = db.engine
    apply = _apply_postgres if engine.dialect.name == "postgresql" else _apply_sqlite
    for _ in range(3):
        try:
            outcome = apply(engine, op)
        except exc.IntegrityError as e:
            # A concurrent request with the same key won the race (claim PK or ledger UNIQUE).
            if key and _is_key_conflict(e):
                return _replay(op)
            raise
        if outcome == "replay":
            return _replay(op)
        if outcome == "no_credits_row":
            _ensure_credits_row(user_id)
            continue
        if isinstance(outcome, Exception):
            raise outcome
        return Change(outcome)
    raise RuntimeError("credits row for user %s vanished during the change" % user_id)


# `cur` locks the row and, under READ COMMITTED, returns its newest committed version, even
# when another change committed while this statement waited for the lock. Every decision and
# the new balance are computed from `cur.credits`, never from `c`: the UPDATE reads `c` as of
# the statement's snapshot, drops a row whose old version fails its WHERE without a look at
# the newest one, and checks the CHECK constraint on a value computed from the old version.
_PG_CHANGE = """
WITH cur AS (
    SELECT user_id, credits FROM credits WHERE user_id = :uid FOR UPDATE
), upd AS (
    UPDATE credits AS c SET credits = cur.credits + {delta}, last_updated = :now
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


# What each kind checks, on the locked balance: a credit may not pass MAX_BALANCE, a debit may
# not go below zero, a reset always applies. The cap limits what an add may reach and nothing
# else, so lowering it below existing balances never blocks spending them.
_ALLOWED = {"add": "AND cur.credits + :delta <= :max_balance", "deduct": "AND cur.credits + :delta >= 0",
            "reset": ""}


@functools.cache
def _pg_statement(kind, keyed):
    unclaimed = _PG_UNCLAIMED if keyed else ""
    sql = _PG_CHANGE.format(
        delta="(-cur.credits)" if kind == "reset" else ":delta",
        allowed=_ALLOWED[kind],
        unclaimed=unclaimed,
        entry_columns=ENTRY_COLUMNS,
        claim=_PG_CLAIM.format(unclaimed="WHERE TRUE " + unclaimed) if keyed else "",
        seen="(SELECT count(*) FROM idempotency_keys WHERE scope = :actor AND key = :key)" if keyed else "0",
    )
    return text(sql).bindparams(bindparam("now", type_=UTCDateTime)).columns(created_at=UTCDateTime)


def _apply_postgres(engine, op):
    params = {"uid": op.user_id, "delta": op.delta, "now": utcnow(), "max_balance": op.max_balance,
              "kind": op.kind, "reason": op.reason, "actor": op.actor, "key": op.key, "hash": op.request_hash}
    row = _pg_fetch_one(engine, _pg_statement(op.kind, op.key is not None), params)
    if row.seen:
        return "replay"
    if row.id is not None:
        return _entry(row)
    if row.current_balance is None:
        return "no_credits_row"
    return _refusal(op, row.current_balance)


class _Prepared:
    """A statement as a server-side prepared statement: PREPARE once per connection, then
    EXECUTE with the values. PostgreSQL parses and plans the change's CTE once per connection
    instead of once per request: planning is a large part of the database's CPU per change,
    CPU the app competes for when they share a machine (the pgbench floor uses -M prepared
    too)."""

    _PLACEHOLDER = re.compile(r"%\((\w+)\)s")

    def __init__(self, driver_sql):
        names = list(dict.fromkeys(self._PLACEHOLDER.findall(driver_sql)))
        number = {name: f"${i}" for i, name in enumerate(names, 1)}
        # Named by the SQL itself: two processes, threads or statements can never disagree.
        self.name = "credits_" + hashlib.sha1(driver_sql.encode()).hexdigest()[:20]
        self.prepare = f"PREPARE {self.name} AS " + self._PLACEHOLDER.sub(lambda m: number[m.group(1)], driver_sql)
        self.execute = f"EXECUTE {self.name} (" + ", ".join(f"%({name})s" for name in names) + ")"
        self.row_type = None


_PREPARED = {}


def _pg_fetch_one(engine, stmt, params):
    """Run ONE statement as its own transaction on the thread's pooled PostgreSQL connection
    (thread_connections) and return its first row (a named tuple) or None.

    The hot path skips SQLAlchemy's execution layer (a per-execution context and result
    metadata, built on every call): the statement is compiled once to the driver's SQL and
    prepared on each connection (_Prepared), and the connection is in autocommit, so there
    is no BEGIN/COMMIT round trip. What SQLAlchemy would do on an error is kept: the
    driver's error is raised as SQLAlchemy's (IntegrityError, OperationalError: errors.py
    and _change() handle those), and a lost connection is invalidated and the pool
    replaced, so connections to a restarted server are not tried one by one."""
    prepared = _PREPARED.get(stmt)
    if prepared is None:
        prepared = _PREPARED[stmt] = _Prepared(str(stmt.compile(dialect=engine.dialect)))
    try:
        pooled, kept = thread_connections.checkout(engine, current_app.config["DB_PING_IDLE_SECONDS"])
    except engine.dialect.dbapi.Error as e:  # cannot connect: raised as engine.connect() would
        raise exc.DBAPIError.instance(None, None, e, engine.dialect.dbapi.Error, dialect=engine.dialect) from e
    driver = pooled.driver_connection
    sql = prepared.execute
    try:
        with driver.cursor() as cursor:
            known = pooled.info.setdefault("prepared", set())  # emptied when the connection is replaced
            for attempt in (1, 2):
                if prepared.name not in known:
                    sql = prepared.prepare
                    cursor.execute(sql)
                    known.add(prepared.name)
                sql = prepared.execute
                try:
                    cursor.execute(sql, params)
                    break
                except engine.dialect.dbapi.Error as e:
                    if attempt == 2 or not _stale_plan(e):
                        raise
                    # A migration changed a column under the prepared statement (or the session
                    # lost it): it failed before it ran, as one autocommit statement, so nothing
                    # was applied. Prepare it again and run it once more.
                    known.discard(prepared.name)
                    if e.pgcode == "0A000":
                        cursor.execute(f"DEALLOCATE {prepared.name}")
            row = cursor.fetchone()
            if row is None:
                return None
            if prepared.row_type is None:  # psycopg2's NamedTupleCursor rebuilt this per fetch
                prepared.row_type = namedtuple("Row", [column.name for column in cursor.description])
            return prepared.row_type._make(row)
    except engine.dialect.dbapi.Error as e:
        lost = engine.dialect.is_disconnect(e, driver, None)
        if lost:
            thread_connections.discard(engine, pooled, e)
            engine.dispose()
        raise exc.DBAPIError.instance(sql, params, e, engine.dialect.dbapi.Error, connection_invalidated=lost,
                                      dialect=engine.dialect) from e
    finally:
        if not kept:
            thread_connections.checkin(pooled)


def _stale_plan(error):
    """PostgreSQL refused to run a prepared statement as prepared: its result type changed
    (0A000, "cached plan must not change result type") or the session has no such statement
    (26000). Both are raised before the statement runs."""
    code = getattr(error, "pgcode", None)
    return code == "26000" or (code == "0A000" and "cached plan must not change result type" in str(error))


def _apply_sqlite(engine, op):
    now = utcnow()
    with engine.begin() as conn:  # BEGIN IMMEDIATE: we hold the write lock from here
        if op.key is not None and conn.execute(
                text("SELECT 1 FROM idempotency_keys WHERE scope = :actor AND key = :key"),
                {"actor": op.actor, "key": op.key}).first():
            return "replay"
        current = conn.execute(text("SELECT credits FROM credits WHERE user_id = :uid"), {"uid": op.user_id}).scalar()
        if current is None:
            return "no_credits_row"
        delta = -current if op.kind == "reset" else op.delta
        outcome = None
        if _allowed(op.kind, current, delta, op.max_balance):
            updated = conn.execute(
                text("UPDATE credits SET credits = credits + :delta, last_updated = :now "
                     "WHERE user_id = :uid RETURNING credits").bindparams(bindparam("now", type_=UTCDateTime)),
                {"uid": op.user_id, "delta": delta, "now": now}).one()
            outcome = _entry(conn.execute(
                text("INSERT INTO ledger_entries (user_id, kind, amount, balance_after, reason, actor, "
                     f"idempotency_key, created_at) VALUES (:uid, :kind, :delta, :bal, :reason, :actor, :key, :now) "
                     f"RETURNING {ENTRY_COLUMNS}").bindparams(bindparam("now", type_=UTCDateTime))
                .columns(created_at=UTCDateTime),
                {"uid": op.user_id, "kind": op.kind, "delta": delta, "bal": updated.credits, "reason": op.reason,
                 "actor": op.actor, "key": op.key, "now": now}).one())
        if op.key is not None:
            conn.execute(
                text("INSERT INTO idempotency_keys (scope, key, request_hash, status_code, refused_balance, created_at)"
                     " VALUES (:actor, :key, :hash, :status, :refused, :now)"
                     ).bindparams(bindparam("now", type_=UTCDateTime)),
                {"actor": op.actor, "key": op.key, "hash": op.request_hash, "now": now,
                 "status": 200 if outcome else 409, "refused": None if outcome else current})
    return outcome or _refusal(op, current)


def _allowed(kind, current, delta, max_balance):
    """_ALLOWED for SQLite, where BEGIN IMMEDIATE makes `current` the newest balance."""
    if kind == "add":
        return current + delta <= max_balance
    if kind == "deduct":
        return current + delta >= 0
    return True


def _refusal(op, current_balance):
    if op.kind == "deduct":
        return InsufficientCredits(current_balance, op.amount)
    return BalanceLimitExceeded(current_balance, op.amount, op.max_balance)


def _replay(op):
    """Answer a request whose key was claimed before: the original outcome, unchanged."""
    with db.engine.connect() as conn:
        claim = conn.execute(text("SELECT request_hash, status_code, refused_balance FROM idempotency_keys "
                                  "WHERE scope = :actor AND key = :key"), {"actor": op.actor, "key": op.key}).first()
        if claim is None:
            # The claim was purged after its TTL but the ledger still knows the key.
            raise IdempotencyKeyExpired(op.key)
        if claim.request_hash != op.request_hash:
            raise IdempotencyMismatch(op.key)
        if claim.status_code != 200:
            refusal = _refusal(op, claim.refused_balance)
            refusal.replayed = True  # the API says so, as it does for a replayed change
            raise refusal
        row = conn.execute(text(f"SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE actor = :actor "
                                "AND idempotency_key = :key").columns(created_at=UTCDateTime),
                           {"actor": op.actor, "key": op.key}).one()
    return Change(_entry(row), replayed=True)


def _ensure_credits_row(user_id):
    """Seed-era users may have no credits row: create it at zero, race-free. Raises UserNotFound."""
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO credits (user_id, credits, last_updated) "
                          "SELECT user_id, 0, :now FROM users WHERE user_id = :uid "
                          "ON CONFLICT (user_id) DO NOTHING").bindparams(bindparam("now", type_=UTCDateTime)),
                     {"uid": user_id, "now": utcnow()})
        if conn.execute(text("SELECT 1 FROM users WHERE user_id = :uid"), {"uid": user_id}).first() is None:
            raise UserNotFound(user_id)


def _is_key_conflict(error):
    message = str(error.orig)
    return "idempotency_key" in message  # the claim PK or the ledger UNIQUE (both dialects)


def _entry(row):
    grant_date = row.grant_date
    if isinstance(grant_date, str):  # SQLite returns DATE as text from raw SQL
        grant_date = date.fromisoformat(grant_date)
    return Entry(row.id, row.user_id, row.kind, row.amount, row.balance_after, row.reason, row.actor,
                 row.idempotency_key, grant_date, _UTC.process_result_value(row.created_at, None))


# --- the daily grant -----------------------------------------------------------------------

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
_PG_GRANT = """
WITH upd AS (
    UPDATE credits AS c SET credits = c.credits + :amount, last_updated = :now
    WHERE c.user_id >= :lo AND c.user_id < :hi AND c.credits <= :max_balance - :amount
      AND NOT EXISTS (SELECT 1 FROM ledger_entries l WHERE l.user_id = c.user_id AND l.grant_date = :gd
                      AND l.user_id >= :lo AND l.user_id < :hi)
    RETURNING c.user_id, c.credits
)
INSERT INTO ledger_entries (user_id, kind, amount, balance_after, reason, actor, grant_date, created_at)
SELECT user_id, 'daily_grant', :amount, credits, :reason, :actor, :gd, :now FROM upd"""
# SQLite: BEGIN IMMEDIATE holds the only write lock, so the ledger rows can be written
# first from the balances read in this transaction and the same users updated after.
_SQLITE_GRANT_LEDGER = """
INSERT INTO ledger_entries (user_id, kind, amount, balance_after, reason, actor, grant_date, created_at)
SELECT c.user_id, 'daily_grant', :amount, c.credits + :amount, :reason, :actor, :gd, :now FROM credits c
WHERE c.user_id >= :lo AND c.user_id < :hi AND c.credits <= :max_balance - :amount
  AND NOT EXISTS (SELECT 1 FROM ledger_entries l WHERE l.user_id = c.user_id AND l.grant_date = :gd)"""
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
    _check_amount(amount)
    params = {"gd": grant_date, "amount": amount, "lo": lo, "hi": hi, "now": utcnow(),
              "max_balance": current_app.config["MAX_BALANCE"], "actor": GRANT_ACTOR,
              "reason": f"daily grant {grant_date.isoformat()}",
              "lock_name": f"daily-grant:{grant_date.isoformat()}:{lo}"}
    now_type = bindparam("now", type_=UTCDateTime)
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(_PG_GRANT_LOCK), params)
            conn.execute(text(_GRANT_ENSURE_CREDITS).bindparams(now_type), params)
            credited = conn.execute(text(_PG_GRANT).bindparams(now_type), params).rowcount
        else:
            conn.execute(text(_GRANT_ENSURE_CREDITS).bindparams(now_type), params)
            params["after_id"] = conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM ledger_entries")).scalar()
            credited = conn.execute(text(_SQLITE_GRANT_LEDGER).bindparams(now_type), params).rowcount
            conn.execute(text(_SQLITE_GRANT_CREDITS).bindparams(now_type), params)
        if bookkeeping is not None:
            bookkeeping(conn, credited)
    return credited
