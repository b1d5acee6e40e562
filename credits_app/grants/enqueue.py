"""The daily grant's queue: the RQ jobs this layer enqueues, by import path, and the cron
entry's id. The jobs themselves are in worker/jobs.py (the worker process imports this
package, so this package must not import worker/)."""
from flask import current_app

from ..exceptions import DomainError
from ..redis_client import redis_client
from .runs import parse_date

# tests/test_daily_grant.py resolves every name, so none can go stale.
GRANT_DATE_JOB = "worker.jobs.grant_date"
GRANT_CHUNK_JOB = "worker.jobs.grant_chunk"
CHUNK_FAILED_CALLBACK = "worker.jobs.chunk_failed"
CATCH_UP_JOB = "worker.jobs.catch_up"
DAILY_TICK_JOB = "worker.jobs.daily_grant_tick"
# The cron entry's one fixed id in rq-scheduler (worker/schedule.py registers it).
CRON_ENTRY_ID = "credits-daily-grant"

def queue():
    """The RQ queue the worker serves, on the app's one Redis client (short timeouts: a web
    request fails fast with 503 rather than hang). Raises RedisUnavailable when REDIS_URL is
    not set."""
    from rq import Queue

    client = redis_client()
    if client is None:
        raise RedisUnavailable("REDIS_URL is not set")
    return Queue(current_app.config["RQ_QUEUE"], connection=client)


def retry():
    from rq import Retry

    delays = current_app.config["DAILY_GRANT_RETRY_DELAYS"]
    return Retry(max=len(delays), interval=delays)


JOB_TIMEOUT = 600  # seconds; a chunk takes well under one


def enqueue_date(grant_date, q=None):
    """Enqueue the job that plans `grant_date` and fans its chunks out. Returns the RQ job."""
    grant_date = parse_date(grant_date)
    q = q or queue()
    return q.enqueue(GRANT_DATE_JOB, grant_date.isoformat(), retry=retry(), job_timeout=JOB_TIMEOUT,
                     description=f"daily grant {grant_date.isoformat()}")


def enqueue_chunks(run, chunks, q=None):
    from rq import Callback

    q = q or queue()
    day = run.grant_date.isoformat()
    # RQ calls the callback after every failed attempt; it marks the run only after the last.
    failed = Callback(CHUNK_FAILED_CALLBACK)
    return [q.enqueue(GRANT_CHUNK_JOB, day, run.amount, c.lo, c.hi, retry=retry(), on_failure=failed,
                      job_timeout=JOB_TIMEOUT, description=f"daily grant {day} users [{c.lo}, {c.hi})")
            for c in chunks]


class RedisUnavailable(DomainError):
    status, code = 503, "queue_unavailable"

    def __init__(self, why):
        super().__init__(f"the job queue is unavailable: {why}")
