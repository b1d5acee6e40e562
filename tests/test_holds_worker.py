"""The holds sweep with real processes: `rq worker --burst` runs worker.jobs.expire_holds
against PostgreSQL, `rqscheduler` fires the sweep's cron entry, and the project's scheduler
process keeps exactly one entry in a real redis-server. Every wait polls for an outcome."""
import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq_scheduler import Scheduler
from sqlalchemy import text

from credits_app import ledger
from credits_app.extensions import db
from credits_app.ledger import holds
from tests.redis_fixtures import QUEUE, ROOT, db_url, wait_for
from tests.test_daily_grant import add_users
from worker import schedule


@pytest.fixture
def app_env(redis_url):
    return {"REDIS_URL": redis_url, "RQ_QUEUE": QUEUE}


def users_with_overdue_holds(count):
    """`count` users with 10 credits, each holding 4 for one second and 3 for ten minutes;
    returns their ids once the short holds are past their time (none recorded yet)."""
    ids = add_users(count)
    for uid in ids:
        ledger.add(uid, 10, actor="test")
        holds.create(uid, 4, ttl_seconds=1, actor="test")
        holds.create(uid, 3, ttl_seconds=600, actor="test")
    time.sleep(1.1)
    assert stored_holds(ids) == {uid: (7, ["open", "open"]) for uid in ids}
    return ids


def stored_holds(ids):
    """Per user: `held` and the holds' statuses as stored (not as a read computes them)."""
    with db.engine.connect() as conn:
        held = dict(conn.execute(text("SELECT user_id, held FROM credits")).all())
        rows = conn.execute(text("SELECT user_id, status FROM holds ORDER BY id")).all()
    return {uid: (held[uid], [status for user_id, status in rows if user_id == uid]) for uid in ids}


def assert_swept(ids):
    assert stored_holds(ids) == {uid: (3, ["expired", "open"]) for uid in ids}
    with db.engine.connect() as conn:
        closed_by = conn.execute(text("SELECT DISTINCT closed_by FROM holds WHERE status = 'expired'")).scalars().all()
    assert closed_by == [holds.EXPIRY_ACTOR]
    assert holds.verify_holds() == ([], []) and ledger.verify() == []
    for uid in ids:  # expiry writes no ledger entry
        assert [e.kind for e in ledger.entries(uid, limit=10)] == ["add"]


def burst(rq_processes, app, *cmd):
    """Run a stock RQ process (`rq worker`, `rqscheduler`) until it has nothing left to do;
    returns what it printed."""
    result = subprocess.run([sys.executable, "-m", *cmd, "--burst", "--url", rq_processes.redis_url], cwd=ROOT,
                            env=rq_processes.env(db_url(app)), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_rq_worker_runs_the_sweep_job(pg, rq_processes):
    ids = users_with_overdue_holds(3)
    job = Queue(QUEUE, connection=Redis.from_url(pg.config["REDIS_URL"])).enqueue(schedule.SWEEP)
    output = burst(rq_processes, pg, "rq.cli", "worker", QUEUE)
    job.refresh()
    assert job.get_status() == "finished" and job.return_value() == 3
    assert_swept(ids)
    (line,) = [json.loads(raw) for raw in output.splitlines() if raw.startswith("{") and '"expire_holds"' in raw]
    assert (line["job"], line["outcome"], line["result"]) == ("expire_holds", "ok", 3)


def test_rqscheduler_fires_the_sweep_entry_and_rearms_it(pg, rq_processes):
    ids = users_with_overdue_holds(2)
    conn = Redis.from_url(pg.config["REDIS_URL"])
    job, _ = schedule.register_sweep(conn, "* * * * *", QUEUE)
    Scheduler(connection=conn).change_execution_time(job, datetime.now(timezone.utc) - timedelta(seconds=1))
    burst(rq_processes, pg, "rq_scheduler.scripts.rqscheduler")
    assert Queue(QUEUE, connection=conn).job_ids == [schedule.SWEEP_JOB_ID]
    burst(rq_processes, pg, "rq.cli", "worker", QUEUE)
    assert_swept(ids)
    assert Job.fetch(schedule.SWEEP_JOB_ID, connection=conn).return_value() == 2
    # Still one entry, armed for the next minute.
    ((entry, when),) = Scheduler(connection=conn).get_jobs(with_times=True)
    assert entry.id == schedule.SWEEP_JOB_ID
    assert when == schedule.next_fire("* * * * *").replace(tzinfo=None)


def test_registering_the_sweep_again_keeps_one_entry_and_a_changed_cron_replaces_it(redis_url):
    conn = Redis.from_url(redis_url)
    scheduler = Scheduler(connection=conn)
    first, changed = schedule.register_sweep(conn, "* * * * *", QUEUE)
    assert changed
    schedule.register(conn, "0 0 * * *", 5, QUEUE)
    for _ in range(3):  # scheduler restarts
        assert schedule.register_sweep(conn, "* * * * *", QUEUE)[1] is False
        assert schedule.register(conn, "0 0 * * *", 5, QUEUE)[1] is False
    assert sorted(j.id for j in scheduler.get_jobs()) == sorted([schedule.JOB_ID, schedule.SWEEP_JOB_ID])
    (entry,) = [j for j in scheduler.get_jobs() if j.id == schedule.SWEEP_JOB_ID]
    assert (entry.func_name, entry.kwargs, entry.origin) == (schedule.SWEEP, {}, QUEUE)
    _, changed = schedule.register_sweep(conn, "*/5 * * * *", QUEUE)
    assert changed
    when = {j.id: (j, t) for j, t in scheduler.get_jobs(with_times=True)}
    assert sorted(when) == sorted([schedule.JOB_ID, schedule.SWEEP_JOB_ID])
    entry, at = when[schedule.SWEEP_JOB_ID]
    assert entry.meta["cron_string"] == "*/5 * * * *" and at.minute % 5 == 0
    assert at == schedule.next_fire("*/5 * * * *").replace(tzinfo=None)


def test_the_scheduler_process_registers_the_sweep_and_puts_it_back_when_lost(pg, rq_processes):
    """Injected: the sweep's entry is removed from Redis while the scheduler runs. Observed:
    the scheduler registers it again, with HOLDS_SWEEP_CRON, still under its one id."""
    conn = Redis.from_url(rq_processes.redis_url)
    scheduler = Scheduler(connection=conn)

    def sweep_entry():
        return next((j for j in scheduler.get_jobs() if j.id == schedule.SWEEP_JOB_ID), None)

    rq_processes.scheduler(db_url(pg), HOLDS_SWEEP_CRON="*/10 * * * *")
    entry = wait_for(sweep_entry, "the sweep entry to be registered")
    assert entry.meta["cron_string"] == "*/10 * * * *" and entry.func_name == schedule.SWEEP
    scheduler.cancel(schedule.SWEEP_JOB_ID)
    entry = wait_for(sweep_entry, "the sweep entry to be registered again")
    assert entry.meta["cron_string"] == "*/10 * * * *"
    assert sorted(j.id for j in scheduler.get_jobs()) == sorted(schedule.ENTRY_IDS)
