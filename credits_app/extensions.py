"""Extension objects, created unbound here and attached in `create_app()`."""
import time

from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event, exc

# Stable constraint names so Alembic migrations and schema.sql never depend on the dialect.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING))
migrate = Migrate()


class CreditsApi(Api):
    """flask-smorest, documenting the error body web/errors.py really sends (its own default
    describes a different shape)."""

    @property
    def ERROR_SCHEMA(self):  # noqa: N802 (flask-smorest's attribute name)
        from .api.schemas import ErrorOut  # the api package imports this module
        return ErrorOut


openapi = CreditsApi()  # validation + the OpenAPI document


def configure_sqlite(engine):
    """SQLite is the embedded default: enforce foreign keys, allow readers beside a writer
    (WAL), and take the write lock at BEGIN so two writers queue instead of deadlocking
    on a lock upgrade. A connection with the execution option `read_only=True` begins a
    deferred transaction instead: a snapshot that lets writers on, for reads that run long
    (an export) or must see one state across statements (a history)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("read_only") else "BEGIN IMMEDIATE")



def ping_idle_connections(engine, idle_seconds):
    """Ping a pooled PostgreSQL connection at checkout only if it sat idle for longer than
    `idle_seconds` (0: always, like pool_pre_ping). Under load connections never idle, so
    the hot path pays no extra round trip; after a quiet spell (a restarted server, a
    firewall that dropped the socket) a dead connection is replaced before a request uses
    it. A connection that dies while in use fails its statement (a JSON 503) and SQLAlchemy
    then invalidates every connection in the pool that is older than the failure."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn, record, _proxy):
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since <= idle_seconds:
            return
        try:
            with dbapi_conn.cursor() as cursor:
                cursor.execute("SELECT 1")
            dbapi_conn.rollback()  # end the transaction the driver opened, as the pool expects
        except engine.dialect.dbapi.Error as e:
            raise exc.DisconnectionError() from e  # the pool connects afresh and checks out again
