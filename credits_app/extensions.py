"""Extension objects, created unbound here and attached in `create_app()`."""
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event

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
    """flask-smorest, documenting the error body errors.py really sends (its own default
    describes a different shape)."""

    @property
    def ERROR_SCHEMA(self):  # noqa: N802 (flask-smorest's attribute name)
        from .api.schemas import ErrorOut  # the api package imports this module
        return ErrorOut


openapi = CreditsApi()  # validation + the OpenAPI document


def configure_sqlite(engine):
    """SQLite is the embedded default: enforce foreign keys, allow readers beside a writer
    (WAL), and take the write lock at BEGIN so two writers queue instead of deadlocking
    on a lock upgrade."""

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
        conn.exec_driver_sql("BEGIN IMMEDIATE")

