"""Applying an external schema update, and its record.

An update is applied on PostgreSQL only (SQLite answers 501: it has no transactional DDL
with lock timeouts, no advisory locks, and it is not the production target). One update is
one transaction: advisory lock (updates serialize), the name check, the statements one by
one under the time limits of _Budget, the checks only the database can answer
(probes.py), the record. Any error rolls all of it back.

Records (table schema_changes): `applied` rows, one per name; `failed` rows for attempts the
database refused (lock timeout, statement error), so the audit trail shows them. Refusals
(by the guard, or by a probe of what the statements made) and dry runs never reach the
database's state and are not recorded."""
import hashlib
import json
import re
import time

from flask import current_app
from pglast import ast
from sqlalchemy import exc, text

from . import guard, probes
from ..events import outbox
from ..exceptions import Conflict, DomainError, InvalidRequest
from ..extensions import db

SCHEMA_LOCK_KEY = 0x6372656473636865  # "credsche": the advisory lock all updates take
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
LOCK_NOT_AVAILABLE, QUERY_CANCELED = "55P03", "57014"


class SchemaChangeRefused(InvalidRequest):
    code = "schema_change_refused"


class SchemaChangeFailed(InvalidRequest):
    code = "schema_change_failed"


class SchemaLockTimeout(Conflict):
    code = "schema_lock_timeout"


class SchemaChangeBusy(Conflict):
    code = "schema_change_in_progress"


class SchemaNameConflict(Conflict):
    code = "schema_change_name_conflict"


class NotSupportedOnSQLite(DomainError):
    status, code = 501, "not_supported_on_sqlite"

    def __init__(self):
        super().__init__("external schema updates run on PostgreSQL only; on the embedded SQLite default "
                         "GET /api/schema and GET /api/schema/changes work, applying does not")


class SchemaLogMissing(DomainError):
    status, code = 503, "schema_changes_missing"

    def __init__(self):
        super().__init__("the schema_changes table does not exist: run `flask db upgrade`")


def checksum(sql):
    return hashlib.sha256(sql.strip().encode()).hexdigest()


def derived_name(sql):
    """Seed-era clients send no name: the same SQL always gets the same one."""
    return f"sql-{checksum(sql)[:16]}"


def apply(sql, *, actor, name=None, dry_run=False):
    """Apply `sql` (allowed additive DDL only) in one transaction and record it.

    Returns {"status": applied | already_applied | dry_run, "name", "checksum", "statements",
    "effects", "duration_ms", "change"}. Raises SchemaChangeRefused (guard or probe, 422),
    SchemaChangeFailed (database error or time limit, 422), SchemaLockTimeout /
    SchemaChangeBusy / SchemaNameConflict (409), NotSupportedOnSQLite (501); a database that
    cannot be reached raises SQLAlchemy's OperationalError (503 at the edge). On any error
    nothing is applied."""
    if name is not None and not NAME.match(name):
        raise InvalidRequest("name must be 1-200 characters: letters, digits, _ . : - (not first)", name=name)
    engine = db.engine
    if engine.dialect.name != "postgresql":
        raise NotSupportedOnSQLite()
    config = current_app.config
    statements = _refusing(guard.check, sql, config["SCHEMA_MAX_STATEMENTS"])
    digest, name = checksum(sql), name or derived_name(sql)
    with engine.connect() as conn:
        conn = conn.execution_options(no_parameters=True)  # the SQL goes to the server verbatim ('%' too)
        trans = conn.begin()
        try:
            existing = _lock_and_find(conn, name, config["SCHEMA_STATEMENT_TIMEOUT_MS"])
            if existing is not None:
                trans.rollback()
                if existing["checksum"] != digest:
                    raise SchemaNameConflict(f"{name!r} was applied with different SQL; choose a new name",
                                             name=name, applied_checksum=existing["checksum"], checksum=digest)
                return _result("already_applied", name, digest, statements, [], existing["duration_ms"], existing)
            budget = _Budget(config)
            before = _objects(conn)
            failure = _refusing(_run, conn, statements, sql, budget)
            duration_ms = budget.elapsed_ms()
            if failure is None:
                effects = sorted(_objects(conn) - before)
                if dry_run:
                    trans.rollback()
                    return _result("dry_run", name, digest, statements, effects, duration_ms, None)
                change = _record(conn, name, sql, digest, actor, duration_ms, "applied", None)
                outbox.emit(conn, "schema.applied", {
                    "change_id": change["id"], "name": name, "checksum": digest, "actor": actor,
                    "duration_ms": duration_ms, "statements": len(statements)}, at=change["applied_at"])
                trans.commit()
                return _result("applied", name, digest, statements, effects, duration_ms, change)
            trans.rollback()
        except BaseException:
            if trans.is_active:
                trans.rollback()
            raise
    if not dry_run:
        _record_failure(name, sql, digest, actor, duration_ms, failure)
    raise failure


def _refusing(check, *args):
    """Run `check`, turning the guard's Refused into the API's 422."""
    try:
        return check(*args)
    except guard.Refused as e:
        raise SchemaChangeRefused(_refusal_message(e), statement=e.statement, statement_index=e.index,
                                  position=e.position, reason=e.reason) from None


def _run(conn, statements, script, budget):
    """Run the statements, each checked as soon as it ran where the database alone can tell
    (an index's real key size), then the checks of what they made together. Returns the
    error to raise if the database refused a statement or time ran out, else None; raises
    guard.Refused if what a statement made breaks a rule."""
    max_indexes = current_app.config["SCHEMA_MAX_TABLE_INDEXES"]
    known_indexes = probes.index_oids(conn)
    for statement in statements:
        if not budget.start(conn, statement):
            return budget.exhausted(statement)
        try:
            conn.exec_driver_sql(statement.sql)
            if isinstance(statement.node, ast.IndexStmt):
                probes.check_new_indexes(conn, statement, known_indexes, max_indexes)
        except exc.DBAPIError as e:
            return _failure(e, statement, script, budget)
    if not any(s.touches_core for s in statements):
        return None
    if not budget.start(conn, None):
        return budget.exhausted(None)
    try:
        probes.check_users_columns(conn, statements)
        error = probes.users_canary(conn)
    except exc.DBAPIError as e:
        error = e
    return None if error is None else _failure(error, None, script, budget)


class _Budget:
    """The update's time limits, set as statement_timeout and lock_timeout before each
    statement. Service traffic queues behind the locks an update waits for and holds, and
    every balance read joins users: so from the first statement that names one of the
    service's tables to the end, the update must finish within SCHEMA_LOCK_TIMEOUT_MS, the
    same time a single statement may wait for a lock. The whole update must finish within
    SCHEMA_UPDATE_TIMEOUT_MS, each statement within SCHEMA_STATEMENT_TIMEOUT_MS."""

    def __init__(self, config):
        self.started = time.monotonic()
        self.lock_ms, self.statement_ms = config["SCHEMA_LOCK_TIMEOUT_MS"], config["SCHEMA_STATEMENT_TIMEOUT_MS"]
        self.deadline = self.started + config["SCHEMA_UPDATE_TIMEOUT_MS"] / 1000
        self.limit = ("SCHEMA_UPDATE_TIMEOUT_MS", config["SCHEMA_UPDATE_TIMEOUT_MS"])
        self.first_core = None  # the first statement that named a service table
        self.cut = {}  # SQLSTATE -> whether the budget, not the statement's own limit, set that timeout

    def elapsed_ms(self):
        return int((time.monotonic() - self.started) * 1000)

    def start(self, conn, statement):
        """Set the limits for `statement` (None: the checks after the last one). False if
        no time is left for it."""
        now = time.monotonic()
        opens_window = False
        if statement is not None and statement.touches_core and self.first_core is None:
            self.first_core = statement
            if now + self.lock_ms / 1000 < self.deadline:
                self.deadline, self.limit = now + self.lock_ms / 1000, ("SCHEMA_LOCK_TIMEOUT_MS", self.lock_ms)
                opens_window = True
        remaining_ms = self.lock_ms if opens_window else int((self.deadline - now) * 1000)
        if remaining_ms < 1:
            return False
        # A lock wait gives up a little before the statement would, so that a statement blocked
        # from its start is reported as waiting for a lock (retry later), not as out of time.
        lock_ms = max(min(self.lock_ms, remaining_ms - remaining_ms // 10), 1)
        statement_ms = min(self.statement_ms, remaining_ms)
        self.cut = {QUERY_CANCELED: statement_ms < self.statement_ms,
                    LOCK_NOT_AVAILABLE: remaining_ms < self.lock_ms}
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = '{statement_ms}ms'; SET LOCAL lock_timeout = '{lock_ms}ms'")
        return True

    def exhausted(self, statement, **details):
        variable, limit_ms = self.limit
        where = f"statement {statement.index + 1}" if statement else "the checks after the last statement"
        if variable == "SCHEMA_LOCK_TIMEOUT_MS":
            why = (f"from statement {self.first_core.index + 1}, the first to name one of the service's tables, "
                   f"the update must finish within {variable} ({limit_ms} ms): the service's traffic waits "
                   "behind its locks")
        else:
            why = f"the whole update must finish within {variable} ({limit_ms} ms)"
        if statement is not None:
            details.update(statement_index=statement.index, statement=statement.sql)
        return SchemaChangeFailed(f"{where} ran out of time: {why}; nothing was applied: split the update",
                                  limit=variable, limit_ms=limit_ms, **details)


def _refusal_message(e):
    if e.index is None:
        return f"the SQL was refused: {e.reason}"
    return f"statement {e.index + 1} was refused: {e.reason}"


def _lock_and_find(conn, name, statement_timeout_ms):
    """Take the advisory lock (bounded by statement_timeout: waiting here stalls no credit
    traffic) and return the applied record named `name`, if any."""
    conn.exec_driver_sql(f"SET LOCAL statement_timeout = '{int(statement_timeout_ms)}ms'")
    conn.exec_driver_sql("SET LOCAL search_path = public")  # the guard assumes unqualified = public
    try:
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")
    except exc.DBAPIError as e:
        if getattr(e.orig, "pgcode", None) in (QUERY_CANCELED, LOCK_NOT_AVAILABLE):
            raise SchemaChangeBusy("another schema update held the lock for too long; retry") from None
        raise
    if conn.exec_driver_sql("SELECT to_regclass('public.schema_changes')").scalar() is None:
        raise SchemaLogMissing()
    row = conn.execute(text(f"SELECT {_COLUMNS} FROM schema_changes WHERE name = :name AND outcome = 'applied'"),
                       {"name": name}).mappings().first()
    return dict(row) if row else None


def _failure(e, statement, script, budget):
    """Turn a database error on `statement` (None: the users canary after the last one)
    into the domain error to raise."""
    orig = e.orig
    code = getattr(orig, "pgcode", None)
    if code is None or e.connection_invalidated:
        raise e  # the database is down or the connection broke: 503 at the edge
    diag = orig.diag
    message = diag.message_primary or str(orig).strip()
    details = {"sqlstate": code, "database_message": message}
    for key in ("message_detail", "message_hint"):
        if getattr(diag, key, None):
            details[key.removeprefix("message_")] = getattr(diag, key)
    config = current_app.config
    if budget.cut.get(code):
        return budget.exhausted(statement, **details)
    if statement is None:
        return SchemaChangeFailed(f"after this change a user could no longer be created: {message}; "
                                  "nothing was applied", **details)
    details.update(statement_index=statement.index, statement=statement.sql)
    if diag.statement_position:
        position = statement.start + int(diag.statement_position)
        details.update(position=position, line=script.count("\n", 0, position - 1) + 1)
    if code == LOCK_NOT_AVAILABLE:
        return SchemaLockTimeout(f"statement {statement.index + 1} waited longer than lock_timeout "
                                 f"({config['SCHEMA_LOCK_TIMEOUT_MS']} ms) for a lock held by "
                                 "other traffic; nothing was applied, retry later", **details)
    if code == QUERY_CANCELED:
        return SchemaChangeFailed(f"statement {statement.index + 1} ran longer than statement_timeout "
                                  f"({config['SCHEMA_STATEMENT_TIMEOUT_MS']} ms); nothing was applied", **details)
    return SchemaChangeFailed(f"the database refused statement {statement.index + 1}: {message}; "
                              "nothing was applied", **details)


_COLUMNS = "id, name, sql, checksum, actor, applied_at, duration_ms, outcome, error"


def _record(conn, name, sql, digest, actor, duration_ms, outcome, error):
    row = conn.execute(text(
        f"INSERT INTO schema_changes (name, sql, checksum, actor, duration_ms, outcome, error) "
        f"VALUES (:name, :sql, :checksum, :actor, :duration_ms, :outcome, :error) RETURNING {_COLUMNS}"),
        {"name": name, "sql": sql, "checksum": digest, "actor": actor, "duration_ms": duration_ms,
         "outcome": outcome, "error": error}).mappings().one()
    return _change(row)


def _record_failure(name, sql, digest, actor, duration_ms, failure):
    """Audit a failed attempt in its own short transaction. Best effort: if the database is
    gone the caller still gets the real error."""
    error = json.dumps({"code": failure.code, "message": failure.message, **failure.details})
    try:
        with db.engine.begin() as conn:
            _record(conn, name, sql, digest, actor, duration_ms, "failed", error)
    except exc.SQLAlchemyError:
        current_app.logger.warning("could not record the failed schema update %s", name)


def _change(row):
    change = dict(row)
    if change.get("error"):
        change["error"] = json.loads(change["error"])
    return change


def _result(status, name, digest, statements, effects, duration_ms, change):
    return {"status": status, "name": name, "checksum": digest, "statements": len(statements),
            "effects": effects, "duration_ms": duration_ms, "change": _change(change) if change else None}


# What an update changed, as a set of labels; diffed before/after inside the transaction.
_OBJECTS = """
SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view' WHEN 'S' THEN 'sequence'
       WHEN 'i' THEN 'index' WHEN 'I' THEN 'index' WHEN 'c' THEN 'type' ELSE 'relation' END || ' ' || c.relname
  FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
UNION ALL
SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v') AND a.attnum > 0
   AND NOT a.attisdropped
UNION ALL
SELECT 'constraint ' || conrelid::regclass::text || '.' || conname FROM pg_constraint
 WHERE connamespace = 'public'::regnamespace AND conrelid <> 0
UNION ALL
SELECT 'type ' || t.typname || coalesce(' value ' || e.enumlabel, '')
  FROM pg_type t LEFT JOIN pg_enum e ON e.enumtypid = t.oid
 WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('e', 'd')
"""


def _objects(conn):
    return set(conn.exec_driver_sql(_OBJECTS).scalars())


def recorded(conn):
    """Every recorded change on `conn`'s database, by ascending id."""
    return [dict(r) for r in conn.execute(text(f"SELECT {_COLUMNS} FROM schema_changes ORDER BY id")).mappings()]


def history(*, after_id=None, limit=50):
    """Recorded changes (applied and failed) by ascending id."""
    with db.engine.connect() as conn:
        rows = conn.execute(text(f"SELECT {_COLUMNS} FROM schema_changes WHERE id > :after ORDER BY id LIMIT :limit"),
                            {"after": after_id or 0, "limit": limit}).mappings().all()
    return [_change(r) for r in rows]
