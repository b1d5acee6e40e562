"""RQ job functions: plain values in, an app context built once per process, failures raised.

`rq worker` forks a work horse per job. The app (config, engine object) may be built in the
parent before the fork; connections never are: each horse disposes the inherited pool
before its first query, so no socket is shared across the fork.
"""
import functools
import logging
import os
import signal
import threading
import time

from flask import current_app
from rq import get_current_job

from credits_app import create_app, grants, ledger
from credits_app.auth import tokens
from credits_app.extensions import db
from credits_app.webhooks import dispatcher, prune

log = logging.getLogger("credits.job")

# A warm shutdown's word to the job running in the work horse (worker/__main__.py): a job
# that can end early (the webhooks dispatcher) ends when it gets it; every other job ignores
# it and finishes.
STOP_SIGNAL = signal.SIGUSR1

_app = None
_pid = None


def _context():
    global _app, _pid
    if _app is None:
        _app = create_app()
    if _pid != os.getpid():
        with _app.app_context():
            db.engine.dispose(close=False)  # drop (never close) connections a parent may hold
        _pid = os.getpid()
    return _app.app_context()


def preload():
    """Build the app in the worker's parent process so each forked horse starts warm.
    Returns the app (its config is validated here: a bad value stops the worker)."""
    _context()
    return _app


def logged(job):
    """One JSON line per job run: id, function, arguments, outcome, duration. Failures are
    logged and re-raised, so RQ keeps the failed job and applies its retry policy."""
    @functools.wraps(job)
    def run(*args, **kwargs):
        current = get_current_job()
        fields = {"job_id": current.id if current else None, "job": job.__name__, "args": list(args),
                  # RQ counts retries down: 3 (of DAILY_GRANT_RETRY_DELAYS "10,60,300") on a first run
                  "retries_left": current.retries_left if current else None}
        started = time.perf_counter()
        try:
            result = job(*args, **kwargs)
        except Exception as e:
            fields.update(outcome="failed", error=f"{type(e).__name__}: {e}"[:500])
            raise
        else:
            fields.update(outcome="ok", result=result)
            return result
        finally:
            fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
            log.info("job", extra={"fields": fields})
    return run


@logged
def daily_grant_tick(amount=None):
    """The cron entry's job: every due date (today and missed dates, see credits_app.grants),
    each planned and fanned out as chunk jobs; then expired Idempotency-Key records and
    revocations of expired tokens are purged. Returns the ISO dates it started."""
    with _context():
        started = _start(grants.due_dates(), amount, scheduled=True)
        ledger.purge_idempotency_keys()
        tokens.purge_revocations()
        return started


@logged
def catch_up():
    """The same due dates as the tick, today included (queued when the scheduler starts or
    finds Redis emptied, so a lost tick is made up at once, not a day later)."""
    with _context():
        return _start(grants.due_dates(), None, scheduled=True)


@logged
def grant_date(date_iso, amount=None):
    """Plan one date (if not yet planned) and enqueue its unfinished chunks."""
    with _context():
        return _start([grants.parse_date(date_iso)], amount)


@logged
def grant_chunk(date_iso, amount, lo, hi):
    """Credit users lo <= user_id < hi for the date; returns how many this call credited."""
    with _context():
        return grants.run_chunk(date_iso, amount, lo, hi)


@logged
def expire_holds():
    """The holds sweep's cron job: record every open hold past its time as expired, taking it
    off its user's `held` (no read counts it even before). Returns how many it recorded;
    fails loudly, and the next fire sweeps again."""
    with _context():
        return ledger.holds.sweep()


@logged
def dispatch_webhooks(seconds=None):
    """The webhooks dispatcher's cron job (on WEBHOOKS_QUEUE): claim and send due deliveries
    for `seconds` (default: dispatcher.RUN_SECONDS, a minute's fire), then return the counts
    of outcomes. A run that dies leaves its claims due again when their lease ends."""
    with _context():
        return dispatcher.run(dispatcher.RUN_SECONDS if seconds is None else seconds, stop=_stop_on_signal())


def _stop_on_signal():
    """An Event set when the worker asks the running job to end early (STOP_SIGNAL). Signals
    reach only a process's main thread, so elsewhere (a job run on a thread) it stays unset."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(STOP_SIGNAL, lambda *_: stop.set())
    return stop


@logged
def prune_events():
    """The events prune's cron job (on WEBHOOKS_QUEUE): delete finished deliveries and
    events older than EVENTS_RETENTION_DAYS, in batches. Returns the rows deleted."""
    with _context():
        return prune.prune(current_app.config["EVENTS_RETENTION_DAYS"])


def chunk_failed(job, connection, exc_type, exc, tb):
    """RQ's failure callback for chunk jobs (it runs after every failed attempt): once no
    retry is left, the chunk's run is marked `failed` with the error, so a run that cannot
    finish says so instead of staying `running`."""
    if job.should_retry:
        return
    cause = getattr(exc, "orig", None) or exc  # the driver's error, without the SQL and its parameters
    lines = str(cause).strip().splitlines()
    _mark_failed(job, f"{type(cause).__name__}: {lines[0] if lines else ''}")


def horse_killed(job, retpid, ret_val, rusage):
    """The worker's handler for a work horse that died mid-job (SIGKILL, out of memory): no
    failure callback runs then, so a chunk job's last attempt is recorded here."""
    if job.func_name == grants.GRANT_CHUNK_JOB and not job.should_retry:
        _mark_failed(job, f"work horse killed (waitpid status {ret_val})")


def _mark_failed(job, error):
    date_iso, _amount, lo, _hi = job.args
    with _context():
        marked = grants.mark_failed(date_iso, lo, error)
    log.error("daily grant chunk failed for good", extra={"fields": {
        "job_id": job.id, "grant_date": date_iso, "lo": lo, "error": error, "run_marked_failed": marked}})


def _start(dates, amount, scheduled=False):
    q = grants.queue()
    started = []
    for day in dates:
        run, chunks = grants.start(day, amount, scheduled=scheduled)
        grants.enqueue_chunks(run, chunks, q)
        started.append(run.grant_date.isoformat())
    return started
