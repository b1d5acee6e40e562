"""External schema updates: guard, apply, record, describe; and the `flask schema` commands.

An update is applied on PostgreSQL only (SQLite answers 501: it has no transactional DDL
with lock timeouts, no advisory locks, and it is not the production target). One update is
one transaction: advisory lock (updates serialize), `SET LOCAL` timeouts, the name check,
the statements one by one, the record. Any error rolls all of it back.

Records (table schema_changes): `applied` rows, one per name; `failed` rows for attempts the
database refused (lock timeout, statement error), so the audit trail shows them. Refusals
by the guard and dry runs never reach the database's state and are not recorded."""
import hashlib
import json
import re
import sys
import time
import warnings

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import create_engine, exc, inspect, text

from . import schema_guard
from .config import database_url
from .exceptions import Conflict, DomainError, InvalidRequest
from .extensions import db

SCHEMA_LOCK_KEY = 0x6372656473636865  # "credsche": the advisory lock all updates take
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
CLI_ACTOR = "cli"
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
    "effects", "duration_ms", "change"}. Raises SchemaChangeRefused (guard, 422),
    SchemaChangeFailed (database error, 422), SchemaLockTimeout / SchemaChangeBusy /
    SchemaNameConflict (409), NotSupportedOnSQLite (501); a database that cannot be reached
    raises SQLAlchemy's OperationalError (503 at the edge). On any error nothing is applied."""
    if name is not None and not NAME.match(name):
        raise InvalidRequest("name must be 1-200 characters: letters, digits, _ . : - (not first)", name=name)
    engine = db.engine
    if engine.dialect.name != "postgresql":
        raise NotSupportedOnSQLite()
    try:
        statements = schema_guard.check(sql)
    except schema_guard.Refused as e:
        raise SchemaChangeRefused(_refusal_message(e), statement=e.statement, statement_index=e.index,
                                  position=e.position, reason=e.reason) from None
    digest, name = checksum(sql), name or derived_name(sql)
    config = current_app.config
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
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(config['SCHEMA_LOCK_TIMEOUT_MS'])}ms'")
            before = _objects(conn)
            started = time.monotonic()
            for statement in statements:
                try:
                    conn.exec_driver_sql(statement.sql)
                except exc.DBAPIError as e:
                    failure = _failure(e, statement, sql)
                    break
            else:
                failure = None
            duration_ms = int((time.monotonic() - started) * 1000)
            if failure is None:
                effects = sorted(_objects(conn) - before)
                if any(e.startswith("column users.") for e in effects):
                    failure = _users_canary(conn)
            if failure is None:
                if dry_run:
                    trans.rollback()
                    return _result("dry_run", name, digest, statements, effects, duration_ms, None)
                change = _record(conn, name, sql, digest, actor, duration_ms, "applied", None)
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


def _users_canary(conn):
    """The guard refuses every constraint it can see on users, but a column's type can carry
    one (a NOT NULL domain). So prove it: insert a user inside a savepoint and roll it back.
    Costs one user_id from the sequence. Returns the error to raise, or None."""
    conn.exec_driver_sql("SAVEPOINT users_canary")
    try:
        conn.exec_driver_sql("INSERT INTO users (email, name) VALUES "
                             "('canary-' || gen_random_uuid() || '@schema-update.invalid', 'schema update canary')")
        error = None
    except exc.DBAPIError as e:
        if getattr(e.orig, "pgcode", None) is None:
            raise
        error = SchemaChangeFailed("after this change a user could no longer be created: "
                                   f"{e.orig.diag.message_primary}; nothing was applied",
                                   sqlstate=e.orig.pgcode, database_message=e.orig.diag.message_primary)
    conn.exec_driver_sql("ROLLBACK TO SAVEPOINT users_canary")
    return error


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


def _failure(e, statement, script):
    """Turn a database error on `statement` into the domain error to raise."""
    orig = e.orig
    code = getattr(orig, "pgcode", None)
    if code is None or e.connection_invalidated:
        raise e  # the database is down or the connection broke: 503 at the edge
    diag = orig.diag
    message = diag.message_primary or str(orig).strip()
    details = {"sqlstate": code, "statement_index": statement.index, "statement": statement.sql,
               "database_message": message}
    if diag.statement_position:
        position = statement.start + int(diag.statement_position)
        line = script.count("\n", 0, position - 1) + 1
        details.update(position=position, line=line)
    for key in ("message_detail", "message_hint"):
        if getattr(diag, key, None):
            details[key.removeprefix("message_")] = getattr(diag, key)
    if code == LOCK_NOT_AVAILABLE:
        return SchemaLockTimeout(f"statement {statement.index + 1} waited longer than lock_timeout "
                                 f"({current_app.config['SCHEMA_LOCK_TIMEOUT_MS']} ms) for a lock held by "
                                 "other traffic; nothing was applied, retry later", **details)
    if code == QUERY_CANCELED:
        return SchemaChangeFailed(f"statement {statement.index + 1} ran longer than statement_timeout "
                                  f"({current_app.config['SCHEMA_STATEMENT_TIMEOUT_MS']} ms); nothing was applied",
                                  **details)
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


def history(*, after_id=None, limit=50):
    """Recorded changes (applied and failed) by ascending id."""
    rows = db.session.execute(text(
        f"SELECT {_COLUMNS} FROM schema_changes WHERE id > :after ORDER BY id LIMIT :limit"),
        {"after": after_id or 0, "limit": limit}).mappings().all()
    return [_change(r) for r in rows]


def describe():
    """The live schema: every table and view with its columns, keys, constraints, indexes.
    Reflected on each call (an admin endpoint; correctness over speed). Works on SQLite too."""
    with warnings.catch_warnings():
        # SQLite cannot reflect expression indexes (uq_users_email_lower); they are left out there.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection", exc.SAWarning)
        return _describe(inspect(db.engine), db.engine.dialect)


def _describe(insp, dialect):
    tables = [(n, "table") for n in insp.get_table_names()] + [(n, "view") for n in insp.get_view_names()]
    out = []
    for name, kind in sorted(tables):
        entry = {"name": name, "kind": kind, "core": schema_guard.is_core(name),
                 "columns": [_column(c, dialect) for c in insp.get_columns(name)]}
        if kind == "table":
            pk = insp.get_pk_constraint(name)
            entry.update(
                primary_key={"name": pk.get("name"), "columns": pk.get("constrained_columns", [])},
                foreign_keys=[{"name": fk.get("name"), "columns": fk["constrained_columns"],
                               "references": fk["referred_table"], "referred_columns": fk["referred_columns"]}
                              for fk in insp.get_foreign_keys(name)],
                unique_constraints=[{"name": u.get("name"), "columns": u["column_names"]}
                                    for u in insp.get_unique_constraints(name)],
                check_constraints=[{"name": c.get("name"), "sqltext": str(c["sqltext"])}
                                   for c in insp.get_check_constraints(name)],
                indexes=[{"name": i["name"], "unique": bool(i["unique"]),
                          "columns": [c for c in i["column_names"] if c],
                          "expressions": [e for e in i.get("expressions", []) if e] if any(
                              c is None for c in i["column_names"]) else []}
                         for i in insp.get_indexes(name)],
            )
        out.append(entry)
    return {"dialect": dialect.name, "tables": out}


def _column(c, dialect):
    try:
        type_name = c["type"].compile(dialect=dialect)
    except exc.CompileError:
        type_name = str(c["type"])
    default = c.get("default")
    return {"name": c["name"], "type": type_name, "nullable": bool(c["nullable"]),
            "default": None if default is None else str(default)}


# ---- flask schema ... ------------------------------------------------------------------

schema_cli = AppGroup("schema", help="External schema updates (PostgreSQL): apply, history, replay.")


def _fail(e):
    click.echo(f"error: {e.code}: {e.message}", err=True)
    for key in ("statement", "database_message", "position", "reason"):
        if e.details.get(key) is not None:
            click.echo(f"  {key}: {e.details[key]}", err=True)
    sys.exit(1)


def _echo_result(result):
    click.echo(f"{result['status']}: {result['name']} ({result['statements']} statements, "
               f"{result['duration_ms']} ms)")
    for effect in result["effects"]:
        click.echo(f"  + {effect}")


@schema_cli.command("apply")
@click.argument("file", type=click.File("r"))
@click.option("--name", help="Stable name; default: derived from the SQL's checksum.")
@click.option("--dry-run", is_flag=True, help="Run it and roll back, reporting what would change.")
def apply_command(file, name, dry_run):
    try:
        _echo_result(apply(file.read(), actor=CLI_ACTOR, name=name, dry_run=dry_run))
    except DomainError as e:
        _fail(e)


@schema_cli.command("history")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the input `flask schema replay` takes).")
def history_command(as_json):
    changes = []
    after = None
    while True:
        batch = history(after_id=after, limit=500)
        changes += batch
        if len(batch) < 500:
            break
        after = batch[-1]["id"]
    if as_json:
        click.echo(json.dumps(changes, default=str, indent=2))
        return
    for c in changes:
        click.echo(f"{c['id']:>5} {c['applied_at']:%Y-%m-%dT%H:%M:%SZ} {c['outcome']:<8} {c['name']} "
                   f"by {c['actor']} ({c['duration_ms']} ms)")


@schema_cli.command("replay")
@click.argument("source")
@click.option("--dry-run", is_flag=True)
def replay_command(source, dry_run):
    """Re-apply the changes applied on SOURCE, in order, to this app's database. SOURCE is a
    PostgreSQL URL or a JSON file from `flask schema history --json`. Changes already applied
    here are skipped (same name, same SQL), so a replay can be resumed."""
    changes = [c for c in _load_source(source) if c["outcome"] == "applied"]
    for c in sorted(changes, key=lambda c: c["id"]):
        try:
            _echo_result(apply(c["sql"], actor=CLI_ACTOR, name=c["name"], dry_run=dry_run))
        except DomainError as e:
            _fail(e)
    click.echo(f"replayed {len(changes)} changes")


def _load_source(source):
    if "://" not in source:
        try:
            with open(source) as f:
                changes = json.load(f)
            if not (isinstance(changes, list) and all(isinstance(c, dict) and {"id", "name", "sql", "outcome"} <= set(c)
                                                      for c in changes)):
                raise ValueError("not a list of changes")
        except (OSError, ValueError) as e:
            raise click.ClickException(
                f"{source}: not a history file ({e}). SOURCE is a PostgreSQL URL or the output of "
                "`flask schema history --json`; to apply a .sql file use `flask schema apply FILE`") from None
        return changes
    engine = create_engine(database_url(source, current_app.instance_path))
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(text(
                f"SELECT {_COLUMNS} FROM schema_changes ORDER BY id")).mappings()]
    finally:
        engine.dispose()


def init_app(app):
    app.cli.add_command(schema_cli)
