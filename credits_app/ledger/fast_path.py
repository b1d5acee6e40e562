"""The PostgreSQL fast path, the one place that runs statements outside SQLAlchemy's
execution layer: each statement prepared once per connection, run in autocommit on the
thread's kept connection (thread_connections). Any statement that must cost one round trip
(a balance read, a change) goes through fetch_one(); everything else uses SQLAlchemy."""
import hashlib
import re
from collections import namedtuple

from flask import current_app
from sqlalchemy import exc

from . import thread_connections


class Prepared:
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


def fetch_one(engine, stmt, params):
    """Run ONE statement as its own transaction on the thread's pooled PostgreSQL connection
    (thread_connections) and return its first row (a named tuple) or None.

    The hot path skips SQLAlchemy's execution layer (a per-execution context and result
    metadata, built on every call): the statement is compiled once to the driver's SQL and
    prepared on each connection (Prepared), and the connection is in autocommit, so there
    is no BEGIN/COMMIT round trip. What SQLAlchemy would do on an error is kept: the
    driver's error is raised as SQLAlchemy's (IntegrityError, OperationalError: web/errors.py
    and _change() handle those), and a lost connection is invalidated and the pool
    replaced, so connections to a restarted server are not tried one by one."""
    prepared = _PREPARED.get(stmt)
    if prepared is None:
        prepared = _PREPARED[stmt] = Prepared(str(stmt.compile(dialect=engine.dialect)))
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
