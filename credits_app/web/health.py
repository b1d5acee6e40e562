"""/healthz (the process is alive) and /readyz (dependencies reachable, migrations at head)."""
import os

from alembic.script import ScriptDirectory
from flask import current_app
from flask_smorest import Blueprint
from marshmallow import Schema, fields
from sqlalchemy import text

from ..extensions import db, openapi
from ..redis_client import redis_client

blp = Blueprint("health", __name__, description="Liveness and readiness probes (no token needed)")


class HealthOut(Schema):
    status = fields.String(metadata={"enum": ["ok"]})


class ReadyChecks(Schema):
    database = fields.String(metadata={"description": "`ok`, or what failed (unreachable, migrations not at head)"})
    redis = fields.String(metadata={"description": "`ok`, `not_configured` (no REDIS_URL), or what failed"})


class ReadyOut(Schema):
    status = fields.String(metadata={"enum": ["ready", "not_ready"]})
    checks = fields.Nested(ReadyChecks)


@blp.route("/healthz", methods=["GET"])
@blp.doc(security=[])
@blp.response(200, HealthOut)
def healthz():
    """The process is alive (it checks nothing else)."""
    return {"status": "ok"}


@blp.route("/readyz", methods=["GET"])
@blp.doc(security=[])
@blp.response(200, ReadyOut, description="ready: the database is at the migration head and Redis answers")
@blp.alt_response(503, schema=ReadyOut, description="not_ready: `checks` names what failed")
def readyz():
    """The service can take traffic: its database and Redis answer.

    200 when the database answers at the migration head and Redis (if configured) answers
    PING; else 503 naming what failed. Credit traffic itself needs only the database."""
    checks = {"database": _database(), "redis": _redis()}
    ready = all(value in ("ok", "not_configured") for value in checks.values())
    return {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503


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
    openapi.register_blueprint(blp)  # through the Api (initialised first), so the document shows the probes
