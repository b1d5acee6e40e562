"""/api/queues: the RQ queues (the grant's and the webhooks'), their workers, the scheduler's
entries and failed jobs, and requeueing one. Admin only. Thin: credits_app.queues does it."""
from marshmallow import Schema, fields, validate

from .. import queues
from ..auth.access import require
from .common import Blueprint
from .schemas import ErrorOut

blp = Blueprint("queues", __name__, url_prefix="/api/queues",
                description="The job queues: depth, workers, the scheduler's entries, failed jobs")


class QueueOut(Schema):
    name = fields.String(metadata={"description": "the queue's name (RQ_QUEUE, WEBHOOKS_QUEUE)"})
    purpose = fields.String(metadata={"enum": ["grants", "webhooks"], "description": "grants: the daily grant and "
                                      "the holds sweep; webhooks: the webhooks dispatcher and the events prune"})
    waiting = fields.Integer(metadata={"description": "jobs queued for a worker"})
    running = fields.Integer(metadata={"description": "jobs a worker is running"})
    failed = fields.Integer(metadata={"description": "jobs that failed their last try (kept until requeued or "
                                                     "they expire)"})
    scheduled = fields.Integer(metadata={"description": "retries waiting for their time"})


class WorkerOut(Schema):
    name = fields.String()
    state = fields.String(metadata={"description": "RQ's word: idle, busy, suspended, started..."})
    queues = fields.List(fields.String(), metadata={"description": "the queues it serves"})
    current_job_id = fields.String(allow_none=True)
    last_heartbeat = fields.DateTime(allow_none=True)


class ScheduleEntryOut(Schema):
    id = fields.String(metadata={"description": "the entry's fixed id, e.g. credits-daily-grant"})
    cron = fields.String(allow_none=True, metadata={"description": "null for a one-off entry"})
    next_run_at = fields.DateTime(metadata={"description": "when the scheduler next queues it"})
    func = fields.String(allow_none=True, metadata={"description": "the job's function (null: unreadable here)"})


class QueuesOut(Schema):
    queues = fields.List(fields.Nested(QueueOut))
    workers = fields.List(fields.Nested(WorkerOut), metadata={"description": "live workers of these queues, by name"})
    schedule = fields.List(fields.Nested(ScheduleEntryOut), metadata={"description": "soonest first"})


class FailedArgs(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


class FailedJobOut(Schema):
    id = fields.String()
    func = fields.String(allow_none=True, metadata={"description": "the job's function (null: unreadable here)"})
    description = fields.String(allow_none=True)
    enqueued_at = fields.DateTime(allow_none=True)
    ended_at = fields.DateTime(allow_none=True)
    error = fields.String(allow_none=True, metadata={
        "description": f"the last lines of the traceback, at most {queues.ERROR_MAX} characters"})


class FailedJobList(Schema):
    items = fields.List(fields.Nested(FailedJobOut))


class RequeuedOut(Schema):
    id = fields.String()
    status = fields.String(metadata={"enum": ["queued"]})


@blp.route("", methods=["GET"])
@require("queues:read")
@blp.response(200, QueuesOut)
@blp.alt_response(503, schema=ErrorOut, description="queue_unavailable")
def overview():
    """Each configured queue's waiting, running, failed and scheduled jobs; the live
    workers serving them; the scheduler's entries (the daily grant, the holds sweep, the
    webhooks dispatcher, the events prune)."""
    return queues.overview()


@blp.route("/<name>/failed", methods=["GET"])
@require("queues:read")
@blp.arguments(FailedArgs(), location="query")
@blp.response(200, FailedJobList)
@blp.alt_response(404, schema=ErrorOut, description="queue_not_found")
@blp.alt_response(503, schema=ErrorOut, description="queue_unavailable")
def failed(args, name):
    """The queue's failed jobs, the latest failure first."""
    return {"items": queues.failed_jobs(name, args["limit"])}


@blp.route("/<name>/failed/<job_id>/requeue", methods=["POST"])
@require("jobs:requeue")
@blp.response(200, RequeuedOut)
@blp.alt_response(404, schema=ErrorOut, description="queue_not_found, job_not_found (not among the queue's "
                                                     "failed jobs, e.g. already requeued)")
@blp.alt_response(503, schema=ErrorOut, description="queue_unavailable")
def requeue(name, job_id):
    """Put one failed job back on its queue, to run again from the start. Jobs are safe to
    run again: a grant credits a user once per date, a delivery is claimed under a lease."""
    return {"id": queues.requeue(name, job_id), "status": "queued"}
