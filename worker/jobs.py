"""RQ job functions: plain values in, an app context built once per process, failures raised.

`rq worker` forks a work horse per job. The app (config, engine object) may be built in the
parent before the fork; connections never are: each horse disposes the inherited pool
before its first query, so no socket is shared across the fork.
"""
import os

from credits_app import create_app, grants
from credits_app.extensions import db

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


def daily_grant_tick(amount=None):
    """The cron entry's job: today's UTC date plus any missed dates (catch-up), each planned
    and fanned out as chunk jobs. Returns the ISO dates it started."""
    with _context():
        return _start(grants.due_dates(include_today=True), amount)


def catch_up():
    """Complete missed or unfinished dates only (run when the scheduler starts)."""
    with _context():
        return _start(grants.due_dates(include_today=False), None)


def grant_date(date_iso, amount=None):
    """Plan one date (if not yet planned) and enqueue its unfinished chunks."""
    with _context():
        return _start([grants.parse_date(date_iso)], amount)


def grant_chunk(date_iso, amount, lo, hi):
    """Credit users lo <= user_id < hi for the date; returns how many this call credited."""
    with _context():
        return grants.run_chunk(date_iso, amount, lo, hi)


def _start(dates, amount):
    q = grants.queue()
    started = []
    for day in dates:
        run, chunks = grants.start(day, amount)
        grants.enqueue_chunks(run, chunks, q)
        started.append(run.grant_date.isoformat())
    return started
