"""/api/grants/daily: the daily grant's runs, and enqueueing a date by hand. Admin only."""
from marshmallow import Schema, fields, validate
from redis.exceptions import RedisError

from .. import grants
from ..auth.access import require
from .common import Blueprint
from .schemas import ErrorOut

blp = Blueprint("grants", __name__, url_prefix="/api/grants", description="The daily credit grant")


class RunOut(Schema):
    grant_date = fields.Date()
    status = fields.String(metadata={"enum": ["running", "done", "failed"], "description":
                                     "failed: a chunk failed its last retry; the next catch-up resumes the run"})
    amount = fields.Integer()
    chunk_size = fields.Integer()
    chunks_total = fields.Integer()
    chunks_done = fields.Integer()
    users_credited = fields.Integer()
    started_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)
    max_user_id = fields.Integer(allow_none=True, metadata={
        "description": "the run covers users with user_id <= max_user_id, the largest id when it was planned "
                       "(null: no users then, or a run planned before this was recorded)"})
    scheduled = fields.Boolean(metadata={"description": "the schedule asked for this date (false: only an operator "
                                                        "did); catch-up counts from the first scheduled date"})
    last_error = fields.String(allow_none=True,
                               metadata={"description": "the latest chunk failure after its last retry"})


class RunList(Schema):
    items = fields.List(fields.Nested(RunOut))


class RunsArgs(Schema):
    limit = fields.Integer(load_default=30, validate=validate.Range(min=1, max=366))


class RunIn(Schema):
    date = fields.Date(load_default=None, metadata={"description": "UTC date, YYYY-MM-DD; default today (UTC)"})


class EnqueuedOut(Schema):
    status = fields.String(metadata={"enum": ["queued", "already_done"]})
    job_id = fields.String(allow_none=True, metadata={"description": "null when the date was already done"})
    date = fields.Date()


@blp.route("/daily", methods=["GET"])
@require("grants:read")
@blp.arguments(RunsArgs(), location="query")
@blp.response(200, RunList)
def runs(args):
    """Recent daily-grant runs, newest date first."""
    return {"items": grants.recent_runs(args["limit"])}


@blp.route("/daily/run", methods=["POST"])
@require("grants:run")
@blp.arguments(RunIn(), required=False)
@blp.response(202, EnqueuedOut)
@blp.alt_response(200, schema=EnqueuedOut, description="already_done: nothing to run")
@blp.alt_response(422, schema=ErrorOut, description="a date in the future or before the catch-up window")
@blp.alt_response(503, schema=ErrorOut, description="queue_unavailable")
def run(body):
    """Enqueue a date's grant for the worker: today (UTC, the default) or one of the
    DAILY_GRANT_CATCHUP_DAYS before it. Idempotent: users already granted that date are not
    granted again, and a date whose run is done answers 200 `already_done` without a job.
    A run covers the users with ids up to the largest id when it was planned (max_user_id)."""
    day = grants.check_requested_date(body.get("date") or grants.utc_today())
    existing = grants.get_run(day)
    if existing is not None and existing.status == "done":
        return {"status": "already_done", "job_id": None, "date": day}, 200
    try:
        job = grants.enqueue_date(day)
    except RedisError as e:
        raise grants.RedisUnavailable(type(e).__name__) from None
    return {"status": "queued", "job_id": job.id, "date": day}
