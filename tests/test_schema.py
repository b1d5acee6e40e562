"""schema.sql is generated from the migrations, applies cleanly, and serves the seed flow."""
import os

from flask_migrate import upgrade
from sqlalchemy import text

from credits_app import ledger
from credits_app.extensions import db
from migrations.schema_sql import render
from tests.conftest import make_app

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_schema_sql_matches_migrations():
    with open(os.path.join(ROOT, "schema.sql")) as f:
        committed = f.read()
    assert committed == render(), "schema.sql drifted from migrations/: run `make schema`"


def test_schema_sql_applies_and_supports_seed_flow(pg_server):
    pg_server.psql("postgres", "CREATE DATABASE from_schema_sql")
    url = pg_server.url("from_schema_sql")
    with open(os.path.join(ROOT, "schema.sql")) as f:
        pg_server.psql("from_schema_sql", f.read())
    # The seed's own flow: users inserted by SQL, no credits row.
    pg_server.psql("from_schema_sql", "INSERT INTO users (email, name) VALUES ('seed@example.com', 'Seed')")
    app = make_app(url)
    with app.app_context():
        upgrade()  # migrations continue from the revision schema.sql recorded: nothing to do
        assert ledger.add(1, 5, actor="t").credits == 5
        assert ledger.balance(1).credits == 5
        assert db.session.execute(text("SELECT version_num FROM alembic_version")).scalar()
        db.session.remove()
        db.engine.dispose()
