"""/healthz (the process is alive) and /readyz (dependencies reachable, migrations at head)."""
import os

from alembic.script import ScriptDirectory
from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from .extensions import db
from .redis_client import redis_client

blp = Blueprint("health", __name__)


@blp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@blp.get("/readyz")
def readyz():
    """200 when the database answers at the migration head and Redis (if configured) answers
    PING; else 503 naming what failed. Credit traffic itself needs only the database."""
    checks = {"database": _database(), "redis": _redis()}
    ready = all(value in ("ok", "not_configured") for value in checks.values())
    response = jsonify(status="ready" if ready else "not_ready", checks=checks)
    response.status_code = 200 if ready else 503
    return response


def _database():
    try:
        with db.engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception as e:  # any failure means not ready; the reason goes to the caller
        return f"error: {type(e).__name__}"
    heads = current_app.extensions["credits.migration_heads"]
    return "ok" if version in heads else f"migrations not at head (at {version}, head {', '.join(sorted(heads))})"


def _redis():
    client = redis_client()
    if client is None:
        return "not_configured"
    try:
        client.ping()
        return "ok"
    except Exception as e:  # redis-py raises several families; all mean unreachable
        return f"error: {type(e).__name__}"


def init_app(app):
    # Read the migration scripts once at start-up (files only; no database).
    scripts = ScriptDirectory(os.path.join(os.path.dirname(app.root_path), "migrations"))
    app.extensions["credits.migration_heads"] = set(scripts.get_heads())
    app.register_blueprint(blp)
