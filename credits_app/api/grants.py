"""/api/grants/daily: the daily grant's runs, and enqueueing a date by hand. Admin only."""
from marshmallow import Schema, fields, validate
from redis.exceptions import RedisError

from .. import grants
from ..auth import require
from .common import Blueprint
from .schemas import ErrorOut

blp = Blueprint("grants", __name__, url_prefix="/api/grants", description="The daily credit grant")


class RunOut(Schema):
    grant_date = fields.Date()
    status = fields.String(metadata={"enum": ["running", "done"]})
    amount = fields.Integer()
    chunk_size = fields.Integer()
    chunks_total = fields.Integer()
    chunks_done = fields.Integer()
    users_credited = fields.Integer()
    started_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)


class RunList(Schema):
    items = fields.List(fields.Nested(RunOut))


class RunsArgs(Schema):
    limit = fields.Integer(load_default=30, validate=validate.Range(min=1, max=366))


class RunIn(Schema):
    date = fields.Date(load_default=None, metadata={"description": "UTC date, YYYY-MM-DD; default today (UTC)"})


class EnqueuedOut(Schema):
    job_id = fields.String()
    date = fields.Date()


@blp.route("/daily", methods=["GET"])
@require("grants:read")
@blp.arguments(RunsArgs, location="query")
@blp.response(200, RunList)
def runs(args):
    """Recent daily-grant runs, newest date first."""
    return {"items": grants.recent_runs(args["limit"])}


@blp.route("/daily/run", methods=["POST"])
@require("grants:run")
@blp.arguments(RunIn, required=False)
@blp.response(202, EnqueuedOut)
@blp.alt_response(503, schema=ErrorOut, description="queue_unavailable")
def run(body):
    """Enqueue a date's grant for the worker. Idempotent: users already granted that date
    are not granted again."""
    day = body.get("date") or grants.utc_today()
    try:
        job = grants.enqueue_date(day)
    except RedisError as e:
        raise grants.RedisUnavailable(type(e).__name__) from None
    return {"job_id": job.id, "date": day}
