"""The cron entries in rq-scheduler, and `python -m worker.schedule`: the scheduler process
(register the entries, record today as a scheduled date, queue a catch-up and a webhooks
dispatcher run, then run rq-scheduler's loop).

Four entries: on RQ_QUEUE the daily grant's tick (DAILY_GRANT_CRON) and the holds sweep
(HOLDS_SWEEP_CRON, worker.jobs.expire_holds); on WEBHOOKS_QUEUE the webhooks dispatcher
(WEBHOOKS_DISPATCH_CRON, worker.jobs.dispatch_webhooks) and the events prune
(EVENTS_PRUNE_CRON, worker.jobs.prune_events). Each lives under ONE fixed job id, so
registering again (every scheduler start, any number of schedulers) never duplicates it; a
changed cron (or amount, or queue) replaces it; an unchanged one keeps its next fire time,
so a fire that was due while the scheduler was down still happens when it comes back.
"""
import logging
import os
import sys
import time
import warnings
from datetime import datetime, timezone

from credits_app import grants

log = logging.getLogger("credits.scheduler")

# rq-scheduler asks crontab for cron times in local time, and crontab warns on every call
# that its default may change to UTC. Every process here runs with TZ=UTC (_force_utc), so
# local time is UTC under either default: the warning does not apply to us.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"rq_scheduler\.utils")

JOB_ID = grants.CRON_ENTRY_ID
TICK = grants.DAILY_TICK_JOB
SWEEP_JOB_ID = "credits-holds-sweep"
SWEEP = "worker.jobs.expire_holds"
DISPATCH_JOB_ID = "credits-webhooks-dispatch"
DISPATCH = "worker.jobs.dispatch_webhooks"
DISPATCH_NOW_JOB_ID = "credits-webhooks-dispatch-now"
PRUNE_JOB_ID = "credits-events-prune"
PRUNE = "worker.jobs.prune_events"
ENTRY_IDS = (JOB_ID, SWEEP_JOB_ID, DISPATCH_JOB_ID, PRUNE_JOB_ID)


def _force_utc():
    # rq-scheduler computes cron times from naive local time: local time must be UTC.
    os.environ["TZ"] = "UTC"
    time.tzset()


def next_fire(cron, now=None):
    """The next time `cron` fires after `now`, read in UTC (an aware datetime)."""
    import crontab

    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return crontab.CronTab(cron).next(now=now, return_datetime=True, default_utc=True)


def register(connection, cron, amount, queue_name):
    """Make the scheduler hold exactly one daily-grant entry with these settings. Returns
    (job, changed)."""
    return _register(connection, queue_name, JOB_ID, TICK, cron, {"amount": amount},
                     f"daily grant of {amount} ({cron} UTC)")


def register_sweep(connection, cron, queue_name):
    """Make the scheduler hold exactly one holds-sweep entry, firing on `cron`. Returns
    (job, changed)."""
    return _register(connection, queue_name, SWEEP_JOB_ID, SWEEP, cron, {}, f"expire overdue holds ({cron} UTC)")


def register_dispatch(connection, cron, queue_name):
    """Make the scheduler hold exactly one webhooks-dispatcher entry, firing on `cron` into
    `queue_name` (WEBHOOKS_QUEUE). Returns (job, changed)."""
    return _register(connection, queue_name, DISPATCH_JOB_ID, DISPATCH, cron, {},
                     f"dispatch webhook deliveries ({cron} UTC)")


def register_prune(connection, cron, queue_name):
    """Make the scheduler hold exactly one events-prune entry, firing on `cron` into
    `queue_name` (WEBHOOKS_QUEUE). Returns (job, changed)."""
    return _register(connection, queue_name, PRUNE_JOB_ID, PRUNE, cron, {}, f"prune old events ({cron} UTC)")


def dispatch_now(connection, queue_name):
    """Queue one dispatcher run at once (unless one is waiting already), so that delivery
    resumes when the scheduler starts or finds Redis emptied, not at the next fire. Returns
    whether it queued one."""
    from rq import Queue

    queue = Queue(queue_name, connection=connection)
    if DISPATCH_NOW_JOB_ID in queue.get_job_ids():
        return False
    queue.enqueue(DISPATCH, job_id=DISPATCH_NOW_JOB_ID, job_timeout=600, description="dispatch webhook deliveries")
    return True


def _register(connection, queue_name, job_id, func, cron, kwargs, description):
    """The entry `job_id`: kept as it is (with its next fire time) when it already runs
    `func(**kwargs)` on `cron` in `queue_name`, else replaced."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job
    from rq_scheduler import Scheduler

    scheduler = Scheduler(queue_name=queue_name, connection=connection)
    try:
        job = Job.fetch(job_id, connection=connection)
    except NoSuchJobError:
        job = None
    if (job is not None and job_id in scheduler and job.func_name == func and job.origin == queue_name
            and job.meta.get("cron_string") == cron and job.kwargs == kwargs):
        return job, False
    scheduler.cancel(job_id)
    job = scheduler.cron(cron, func, kwargs=kwargs, id=job_id, queue_name=queue_name, timeout=600,
                         description=description)
    # scheduler.cron() reads the cron in this process's local time; pin the first fire to UTC.
    connection.zadd(Scheduler.scheduled_jobs_key, {job_id: next_fire(cron).timestamp()})
    return job, True


class EntryLost(Exception):
    """An entry vanished from Redis (e.g. Redis restarted without persistence)."""


def _scheduler_class():
    from rq_scheduler import Scheduler

    class GuardedScheduler(Scheduler):
        def enqueue_jobs(self):
            # Runs under the scheduler lock, where no other scheduler is moving an entry. The
            # sweep is guarded like the grant: no read counts an overdue hold, but without its
            # entry idle users' `held` would stay stale until a restart; the catch-up that
            # comes with EntryLost grants nothing twice. Without the webhooks entries delivery
            # would stop (its state is in the database, so nothing is lost meanwhile).
            lost = [job_id for job_id in ENTRY_IDS if job_id not in self]
            if lost:
                raise EntryLost(", ".join(lost))
            return super().enqueue_jobs()
    return GuardedScheduler


def main():
    _force_utc()
    from credits_app.web import logs
    logs.configure()
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy.exc import SQLAlchemyError

    from credits_app import create_app

    app = create_app()  # validates the configuration; connects to nothing
    url = app.config["REDIS_URL"]
    if not url:
        sys.exit("REDIS_URL is not set: the scheduler needs Redis")
    connection = Redis.from_url(url)
    interval = app.config["DAILY_GRANT_SCHEDULER_INTERVAL"]
    # Redis or the database down must not end the process (a supervisor such as honcho would
    # take the whole stack down with it) nor, when Redis comes back empty, leave it without
    # its entries: on every (re)connection register them again, record today as a scheduled
    # date and queue a catch-up of the due dates, today included.
    while True:
        try:
            with app.app_context():
                _, changed = register(connection, app.config["DAILY_GRANT_CRON"], app.config["DAILY_GRANT_AMOUNT"],
                                      app.config["RQ_QUEUE"])
                log.info("daily grant entry %s %s", JOB_ID, "registered" if changed else "unchanged")
                _, changed = register_sweep(connection, app.config["HOLDS_SWEEP_CRON"], app.config["RQ_QUEUE"])
                log.info("holds sweep entry %s %s", SWEEP_JOB_ID, "registered" if changed else "unchanged")
                webhooks = app.config["WEBHOOKS_QUEUE"]
                _, changed = register_dispatch(connection, app.config["WEBHOOKS_DISPATCH_CRON"], webhooks)
                log.info("webhooks dispatch entry %s %s", DISPATCH_JOB_ID, "registered" if changed else "unchanged")
                _, changed = register_prune(connection, app.config["EVENTS_PRUNE_CRON"], webhooks)
                log.info("events prune entry %s %s", PRUNE_JOB_ID, "registered" if changed else "unchanged")
                # Planned here, in the database, so catch-up counts from today even if no worker
                # runs before Redis loses the queued jobs.
                grants.plan(grants.utc_today(), app.config["DAILY_GRANT_AMOUNT"], scheduled=True)
                grants.queue().enqueue(grants.CATCH_UP_JOB, retry=grants.retry(), job_timeout=grants.JOB_TIMEOUT)
                dispatch_now(connection, webhooks)
            _scheduler_class()(queue_name=app.config["RQ_QUEUE"], connection=connection, interval=interval).run()
            return
        except (RedisConnectionError, RedisTimeoutError, EntryLost, SQLAlchemyError) as e:
            log.warning("redis or database unavailable, or redis emptied (%s: %s); starting again in %s s",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "", interval)
            time.sleep(interval)


if __name__ == "__main__":
    main()
