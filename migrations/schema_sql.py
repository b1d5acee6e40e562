"""Render schema.sql from the Alembic migrations (offline SQL for PostgreSQL).
`python migrations/schema_sql.py > schema.sql`; tests/test_schema.py fails when it drifts."""
import os
import subprocess
import sys

HEADER = """-- schema.sql: GENERATED from migrations/ by `make schema`. Do not edit by hand.
-- Apply to an empty PostgreSQL database with: psql "$DATABASE_URL" -f schema.sql
-- It records the Alembic revision, so `flask db upgrade` continues from here.

"""


def render():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # Offline: nothing connects and no token is ever checked, so no real secret is needed.
    env = dict(os.environ, DATABASE_URL="postgresql://offline@localhost/credits", FLASK_APP="wsgi", TESTING="true")
    out = subprocess.run([sys.executable, "-m", "flask", "db", "upgrade", "--sql"], cwd=root, env=env,
                         capture_output=True, text=True, check=True).stdout
    return HEADER + out


if __name__ == "__main__":
    sys.stdout.write(render())
