"""The service's RQ queues as operators see them: the daily grant's (RQ_QUEUE) and the
webhooks' (WEBHOOKS_QUEUE), their workers, the scheduler's entries, and the failed jobs
put back by hand. `flask queue ...` (cli/queue.py) and /api/queues (api/queues.py) both
read and mend the queues through these functions alone.

Only the configured queues are reachable by name. Every Redis failure is raised as
grants.RedisUnavailable (503 queue_unavailable)."""
import contextlib
from datetime import timezone

from flask import current_app
from redis.exceptions import RedisError

from .exceptions import NotFound
from .grants import RedisUnavailable
from .redis_client import redis_client

# What each configured queue is for, by its setting.
PURPOSES = (("RQ_QUEUE", "grants"), ("WEBHOOKS_QUEUE", "webhooks"))
ERROR_MAX = 2000  # characters of a failed job's traceback shown: its last lines, where the exception is


class QueueNotFound(NotFound):
    code = "queue_not_found"

    def __init__(self, name):
        super().__init__(f"no configured queue is named {name!r}", name=name, queues=names())


class JobNotFound(NotFound):
    code = "job_not_found"

    def __init__(self, name, job_id):
        super().__init__(f"queue {name!r} has no failed job {job_id!r}", name=name, job_id=job_id)


def names():
    """The configured queues' names, the grant's first."""
    return [current_app.config[setting] for setting, _ in PURPOSES]


@contextlib.contextmanager
def _reachable():
    try:
        yield
    except RedisError as e:
        raise RedisUnavailable(type(e).__name__) from e


def _connection():
    client = redis_client()
    if client is None:
        raise RedisUnavailable("REDIS_URL is not set")
    return client


def _queue(name, connection=None):
    """A configured queue by name (known without Redis); raises QueueNotFound."""
    from rq import Queue

    if name not in names():
        raise QueueNotFound(name)
    return Queue(name, connection=connection or _connection())


def _utc(at):
    """An aware UTC datetime (rq-scheduler hands out naive UTC ones), or None."""
    if at is None:
        return None
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


def overview():
    """{"queues", "workers", "schedule"}: each configured queue's counts, the workers that
    serve one of them (by name), and every scheduler entry (soonest first)."""
    from rq import Worker
    from rq_scheduler import Scheduler

    connection = _connection()
    with _reachable():
        queues, workers = [], {}
        for setting, purpose in PURPOSES:
            q = _queue(current_app.config[setting], connection)
            queues.append({"name": q.name, "purpose": purpose, "waiting": q.count,
                           "running": q.started_job_registry.count, "failed": q.failed_job_registry.count,
                           "scheduled": q.scheduled_job_registry.count})
            for w in Worker.all(queue=q):
                workers[w.name] = {"name": w.name, "state": w.get_state(), "queues": w.queue_names(),
                                   "current_job_id": w.get_current_job_id(), "last_heartbeat": _utc(w.last_heartbeat)}
        schedule = [{"id": job.id, "cron": job.meta.get("cron_string"), "next_run_at": _utc(at), "func": _func(job)}
                    for job, at in Scheduler(connection=connection).get_jobs(with_times=True)]
    return {"queues": queues, "workers": [workers[n] for n in sorted(workers)],
            "schedule": sorted(schedule, key=lambda e: (e["next_run_at"], e["id"]))}


def _func(job):
    """The job's function by import path; None when its data cannot be read here (a job
    enqueued by other code, with arguments this process cannot unpickle)."""
    from rq.exceptions import DeserializationError

    try:
        return job.func_name
    except DeserializationError:
        return None


def _error(job):
    """The last lines of the failed attempt's traceback, at most ERROR_MAX characters."""
    result = job.latest_result()
    text = result.exc_string if result is not None else None
    return tail(text, ERROR_MAX) if text else None


def tail(text, limit):
    """The end of `text` within `limit` characters, starting at a line when one fits."""
    if len(text) <= limit:
        return text
    end = text[-limit:]
    cut = end.find("\n")
    return end[cut + 1:] if 0 <= cut < len(end) - 1 else end


def failed_jobs(name, limit):
    """Up to `limit` jobs of queue `name`'s failed registry, the latest failure first.
    Raises QueueNotFound."""
    from rq.job import Job

    q = _queue(name)
    with _reachable():
        ids = q.failed_job_registry.get_job_ids(0, limit - 1, desc=True)
        jobs = [job for job in Job.fetch_many(ids, connection=q.connection) if job is not None]
        return [{"id": job.id, "func": _func(job), "description": job.description,
                 "enqueued_at": _utc(job.enqueued_at), "ended_at": _utc(job.ended_at), "error": _error(job)}
                for job in jobs]


def requeue(name, job_id):
    """Put one failed job of queue `name` back on it; returns its id. Safe to repeat: a job
    leaves the failed registry in the same step (a second request finds nothing), and the
    jobs themselves are idempotent (a grant credits a user once per date, a delivery is
    claimed under a lease). Raises QueueNotFound, JobNotFound."""
    from rq.exceptions import InvalidJobOperation, NoSuchJobError
    from rq.job import validate_job_id

    q = _queue(name)
    try:
        validate_job_id(job_id)  # RQ reads an id with a colon as another job's
    except ValueError:
        raise JobNotFound(name, job_id) from None
    with _reachable():
        try:
            return q.failed_job_registry.requeue(job_id).id
        except (InvalidJobOperation, NoSuchJobError):
            raise JobNotFound(name, job_id) from None


def requeue_all(name):
    """Put every failed job of queue `name` back on it; returns how many. Raises QueueNotFound."""
    registry = _queue(name).failed_job_registry
    with _reachable():
        count = 0
        for job_id in registry.get_job_ids():
            try:
                requeue(name, job_id)
            except JobNotFound:  # requeued by someone else meanwhile, or expired
                continue
            count += 1
        return count
