"""The daily grant with real processes: redis-server, `rqscheduler`, `rq worker` (and the
project's `python -m worker` / `python -m worker.schedule`) against a real PostgreSQL.
Every wait polls for an outcome; no test asserts on elapsed time."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq_scheduler import Scheduler
from sqlalchemy import text

from credits_app import grants, ledger
from credits_app.extensions import db
from tests.conftest import LiveServer, client_as, make_app, token_for
from tests.redis_fixtures import QUEUE, ROOT, db_url, wait_for
from tests.test_daily_grant import add_users, balances, grant_rows
from worker import schedule


@pytest.fixture
def app_env(redis_url):
    return {"REDIS_URL": redis_url, "RQ_QUEUE": QUEUE, "DAILY_GRANT_CHUNK_SIZE": "10",
            "DAILY_GRANT_RETRY_DELAYS": "0,0,0"}


@pytest.fixture(autouse=True)
def small_chunks(rq_processes):
    rq_processes.defaults["DAILY_GRANT_CHUNK_SIZE"] = 10


def redis(app):
    return Redis.from_url(app.config["REDIS_URL"])


def idle(app):
    """All queued and running jobs have finished (nothing failed for good)."""
    conn = redis(app)
    q = Queue(QUEUE, connection=conn)
    return q.count == 0 and StartedJobRegistry(QUEUE, connection=conn).count == 0


def done_runs():
    return [r for r in grants.recent_runs() if r.status == "done"]


def fire_soon(app, seconds=2):
    """Register the real cron entry, then move its next fire to a few seconds from now."""
    conn = redis(app)
    job, _ = schedule.register(conn, "0 0 * * *", 5, QUEUE)
    Scheduler(connection=conn).change_execution_time(job, datetime.now(timezone.utc) + timedelta(seconds=seconds))
    return job


def assert_granted_once(ids, amount=5, day=None):
    assert balances() == {uid: amount for uid in ids}
    rows = grant_rows(day or grants.recent_runs()[0].grant_date)
    assert sorted(rows) == sorted(ids) and set(rows.values()) == {1}
    assert ledger.verify() == []


def test_rqscheduler_and_rq_worker_run_the_cron_entry_once(pg, rq_processes):
    ids = add_users(35)
    job = fire_soon(pg)
    rq_processes.rqscheduler(db_url(pg))
    rq_processes.worker(db_url(pg))
    (run,) = wait_for(done_runs, "the scheduled grant to finish")
    wait_for(lambda: idle(pg), "the queue to drain")
    assert (run.users_credited, run.chunks_done, run.chunks_total) == (35, 4, 4)
    assert_granted_once(ids)
    assert FailedJobRegistry(QUEUE, connection=redis(pg)).count == 0
    # The entry re-armed itself for the next UTC midnight, still under its one id.
    scheduler = Scheduler(connection=redis(pg))
    entries = list(scheduler.get_jobs(with_times=True))
    assert [(j.id, t) for j, t in entries] == [(job.id, schedule.next_fire("0 0 * * *").replace(tzinfo=None))]


def test_registration_is_idempotent_and_a_changed_setting_replaces_the_entry(redis_url):
    conn = Redis.from_url(redis_url)
    scheduler = Scheduler(connection=conn)
    first, changed = schedule.register(conn, "0 0 * * *", 5, QUEUE)
    assert changed
    for _ in range(3):  # scheduler restarts
        assert schedule.register(conn, "0 0 * * *", 5, QUEUE)[1] is False
    assert [j.id for j in scheduler.get_jobs()] == [schedule.JOB_ID]
    _, changed = schedule.register(conn, "30 0 * * *", 7, QUEUE)
    (entry, when), = scheduler.get_jobs(with_times=True)
    assert changed and entry.kwargs == {"amount": 7} and entry.meta["cron_string"] == "30 0 * * *"
    assert (when.hour, when.minute) == (0, 30)


def test_duplicates_two_schedulers_two_workers_and_double_enqueues(pg, rq_processes):
    ids = add_users(40)
    fire_soon(pg)
    today = grants.utc_today()
    for _ in range(2):  # a manual run of the same date, twice, on top of the cron fire
        grants.enqueue_date(today)
    url = db_url(pg)
    rq_processes.rqscheduler(url)
    rq_processes.rqscheduler(url)
    rq_processes.worker(url)
    rq_processes.worker(url, entry_point=True)
    wait_for(lambda: done_runs() and idle(pg), "the grant to finish and the queue to drain")
    # Every chunk again, twice, after the run finished: still nothing more.
    run, _ = grants.start(today)
    for _ in range(2):
        grants.enqueue_chunks(run, [grants.Chunk(lo, lo + 10) for lo in range(min(ids), max(ids) + 1, 10)])
    wait_for(lambda: idle(pg), "the duplicate chunk jobs to finish")
    assert_granted_once(ids, day=today)
    assert grants.get_run(today).users_credited == 40
    assert FailedJobRegistry(QUEUE, connection=redis(pg)).count == 0


def _children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def blocked_grant():
    """How many grant statements wait on a row lock (a test holds one)."""
    with db.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                 "AND query LIKE '%UPDATE credits AS c SET credits = c.credits +%'")).scalar()


def test_a_chunk_sigkilled_mid_run_is_retried_and_credits_once(pg, rq_processes):
    ids = add_users(30)
    blocker = db.engine.connect()
    tx = blocker.begin()
    victim = ids[15]  # in the second chunk
    blocker.execute(text("SELECT credits FROM credits WHERE user_id = :u FOR UPDATE"), {"u": victim})
    # Retries re-queue at once (delay 0), so no RQ scheduler child: the only child is the horse.
    worker = rq_processes.worker(db_url(pg), with_scheduler=False)
    grants.enqueue_date(grants.utc_today())

    wait_for(blocked_grant, "the chunk job to block inside its transaction")
    (horse,) = wait_for(lambda: _children(worker.pid), "the work horse")
    os.kill(horse, signal.SIGKILL)
    assert grant_rows(grants.utc_today()).get(victim) is None  # nothing of that chunk committed
    tx.rollback()
    blocker.close()
    wait_for(lambda: done_runs() and idle(pg), "the retried chunk to finish")
    assert_granted_once(ids)
    run = grants.recent_runs()[0]
    assert (run.users_credited, run.chunks_done) == (30, 3)
    with open(worker.log_path) as f:
        assert "terminated unexpectedly" in f.read()
    assert FailedJobRegistry(QUEUE, connection=redis(pg)).count == 0


@pytest.mark.slow
def test_api_traffic_during_a_large_grant_is_never_undone_or_doubled(pg, rq_processes, redis_url):
    ids = add_users(20_000)
    hot = ids[::2500]  # 8 users spread over the chunks
    token = token_for(pg, "admin")
    done = {uid: 0 for uid in hot}
    stop = threading.Event()

    def call(path, amount):
        req = urllib.request.Request(f"{server.url}{path}", data=json.dumps({"amount": amount}).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code

    def traffic(uid):
        while not stop.is_set():
            if call(f"/api/credits/{uid}/add", 3) == 200:
                done[uid] += 3
            if call(f"/api/credits/{uid}/deduct", 2) == 200:
                done[uid] -= 2

    url = db_url(pg)
    with LiveServer(pg) as server:
        threads = [threading.Thread(target=traffic, args=(uid,)) for uid in hot]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: all(done.values()), "traffic on every hot user before the grant")
            grants.enqueue_date(grants.utc_today(), grants.queue())
            rq_processes.worker(url, entry_point=True, DAILY_GRANT_CHUNK_SIZE=2000)
            rq_processes.worker(url, entry_point=True, DAILY_GRANT_CHUNK_SIZE=2000)
            wait_for(lambda: done_runs() and idle(pg), "the large grant to finish", timeout=180)
        finally:
            stop.set()
            for t in threads:
                t.join()
    final = balances()
    assert {uid: final[uid] for uid in hot} == {uid: 5 + done[uid] for uid in hot}
    assert {final[uid] for uid in ids if uid not in done} == {5}
    assert set(grant_rows(grants.utc_today()).values()) == {1}
    assert ledger.verify() == []


@pytest.mark.parametrize("tz", ["America/Los_Angeles", "Pacific/Kiritimati"])
def test_the_grant_date_flips_at_utc_midnight_whatever_the_local_zone(pg, rq_processes, tz):
    """A process whose local zone is far from UTC (TZ set for real) runs the cron tick one
    second before and exactly at 00:00:00 UTC (the instant frozen by freezegun)."""
    ids = add_users(12)
    script = """
import json, time
from freezegun import freeze_time
from worker import jobs, schedule
from rq_scheduler.utils import get_next_scheduled_time
out = {}
for instant in ("2026-03-01 23:59:59", "2026-03-02 00:00:00"):
    with freeze_time(instant):
        out[instant] = {"started": jobs.daily_grant_tick(amount=5),
                        "next_fire": schedule.next_fire("0 0 * * *").isoformat()}
with freeze_time("2026-03-01 23:59:59"):
    out["rq_scheduler_local"] = get_next_scheduled_time("0 0 * * *").isoformat()
schedule._force_utc()  # what the scheduler process does first
with freeze_time("2026-03-01 23:59:59"):
    out["rq_scheduler_utc"] = get_next_scheduled_time("0 0 * * *").isoformat()
print(json.dumps(out))
"""
    env = rq_processes.env(db_url(pg), TZ=tz)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["2026-03-01 23:59:59"] == {"started": ["2026-03-01"], "next_fire": "2026-03-02T00:00:00+00:00"}
    assert out["2026-03-02 00:00:00"]["started"][-1] == "2026-03-02"
    assert out["2026-03-02 00:00:00"]["next_fire"] == "2026-03-03T00:00:00+00:00"
    # rq-scheduler reads cron in local time: wrong in this zone, right once TZ=UTC is forced.
    assert out["rq_scheduler_local"] != "2026-03-02T00:00:00+00:00"
    assert out["rq_scheduler_utc"] == "2026-03-02T00:00:00+00:00"
    subprocess.run([sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", pg.config["REDIS_URL"], QUEUE],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    assert [(str(r.grant_date), r.status, r.users_credited) for r in grants.recent_runs()] == [
        ("2026-03-02", "done", 12), ("2026-03-01", "done", 12)]
    assert balances() == {uid: 10 for uid in ids} and ledger.verify() == []


def test_scheduler_process_catches_up_a_date_missed_while_down(pg, rq_processes):
    ids = add_users(15)
    today = grants.utc_today()
    grants.plan(today - timedelta(days=3), scheduled=True)  # the schedule worked, then everything was down
    grants.run_date(today - timedelta(days=3))
    url = db_url(pg)
    rq_processes.scheduler(url, DAILY_GRANT_CATCHUP_DAYS=2)  # registers the entry, queues catch-up
    rq_processes.worker(url, entry_point=True)
    wait_for(lambda: len(done_runs()) == 4 and idle(pg), "the missed dates and today to be granted")
    granted = [r.grant_date for r in grants.recent_runs()]
    # today - 2 and today - 1 are caught up, and today (its 00:00 UTC has passed) with them.
    assert granted == [today - timedelta(days=n) for n in range(4)]
    assert balances() == {uid: 20 for uid in ids} and ledger.verify() == []
    # Each cron entry once: the daily grant's, the holds sweep's, the webhooks dispatch's and prune's.
    assert sorted(j.id for j in Scheduler(connection=redis(pg)).get_jobs()) == sorted(schedule.ENTRY_IDS)


def test_a_midnight_tick_lost_with_redis_is_granted_the_same_day(pg, rq_processes):
    """Injected: the scheduler is up and no worker is; the midnight tick is queued, then Redis
    loses everything (FLUSHALL), then a worker starts. With DAILY_GRANT_CATCHUP_DAYS=0.
    Observed: the scheduler puts its entry back and queues a catch-up that includes today,
    so today's grant happens now rather than at the next midnight."""
    ids = add_users(12)
    today = grants.utc_today()
    url = db_url(pg)
    rq_processes.scheduler(url, DAILY_GRANT_CATCHUP_DAYS=0)
    conn = redis(pg)
    wait_for(lambda: schedule.JOB_ID in Scheduler(connection=conn), "the entry to be registered")
    fire_soon(pg, seconds=1)
    wait_for(lambda: schedule.JOB_ID in Queue(QUEUE, connection=conn).job_ids, "the tick to be queued")
    conn.flushall()
    wait_for(lambda: schedule.JOB_ID in Scheduler(connection=conn), "the entry to be registered again")
    rq_processes.worker(url, entry_point=True, DAILY_GRANT_CATCHUP_DAYS=0)
    wait_for(lambda: done_runs() and idle(pg), "today's grant")
    assert [(r.grant_date, r.users_credited) for r in grants.recent_runs()] == [(today, 12)]
    assert_granted_once(ids, day=today)
    when = {j.id: t for j, t in Scheduler(connection=conn).get_jobs(with_times=True)}
    assert when[schedule.JOB_ID] == schedule.next_fire("0 0 * * *").replace(tzinfo=None)  # the next midnight


def test_a_scheduler_starting_on_an_empty_redis_grants_today(pg, rq_processes):
    """Injected: midnights missed with nothing running, then the scheduler starts on an empty
    Redis (as `make run`'s Redis, which keeps nothing on disk, always is), with
    DAILY_GRANT_CATCHUP_DAYS=0. Observed: today is granted now."""
    ids = add_users(5)
    today = grants.utc_today()
    grants.run_date(today - timedelta(days=2))
    url = db_url(pg)
    rq_processes.scheduler(url, DAILY_GRANT_CATCHUP_DAYS=0)
    rq_processes.worker(url, entry_point=True, DAILY_GRANT_CATCHUP_DAYS=0)
    wait_for(lambda: len(done_runs()) == 2 and idle(pg), "today's grant")
    assert [r.grant_date for r in grants.recent_runs()] == [today, today - timedelta(days=2)]
    assert balances() == {uid: 10 for uid in ids} and ledger.verify() == []


def test_the_scheduler_waits_for_the_database_then_records_today(pg_server, rq_processes):
    """Injected: the scheduler starts while its database does not exist yet. Observed: it
    stays up with its entry registered, and once the database is there it plans today's
    run, marked scheduled."""
    name = f"late_{os.getpid()}_{int(time.time() * 1000)}"
    scheduler = rq_processes.scheduler(pg_server.url(name))
    conn = Redis.from_url(rq_processes.redis_url)
    wait_for(lambda: schedule.JOB_ID in Scheduler(connection=conn), "the entry to be registered")
    wait_for(lambda: "OperationalError" in open(scheduler.log_path).read(), "the scheduler to meet the database")
    assert scheduler.poll() is None, "the scheduler exited without its database"
    pg_server.psql("postgres", f"CREATE DATABASE {name} TEMPLATE template_credits")
    app = make_app(pg_server.url(name))
    with app.app_context():
        run = wait_for(lambda: grants.get_run(grants.utc_today()), "today's run to be planned")
        assert run.scheduled and run.status == "done" and run.chunks_total == 0  # no users yet
        db.engine.dispose()
    assert scheduler.poll() is None


def test_a_backdated_first_grant_by_hand_does_not_grant_the_days_between(pg, rq_processes):
    """Injected: on a fresh install an operator grants today - 7 by hand (the CLI), then the
    scheduler and a worker start. Observed: the scheduler grants today only; the six days
    in between were never scheduled and nobody asked for them."""
    ids = add_users(4)
    today = grants.utc_today()
    manual = pg.test_cli_runner().invoke(args=["credits", "grant-daily", "--date", str(today - timedelta(days=7))])
    assert manual.exit_code == 0, manual.output
    url = db_url(pg)
    rq_processes.scheduler(url, DAILY_GRANT_CATCHUP_DAYS=7)
    worker = rq_processes.worker(url, entry_point=True, DAILY_GRANT_CATCHUP_DAYS=7)
    wait_for(lambda: len(done_runs()) == 2 and idle(pg), "today's grant")
    wait_for(lambda: any(line["job"] == "catch_up" for line in _job_lines(worker)), "the catch-up job")
    assert [(r.grant_date, r.scheduled) for r in grants.recent_runs()] == [
        (today, True), (today - timedelta(days=7), False)]
    assert balances() == {uid: 10 for uid in ids} and ledger.verify() == []


def test_api_enqueues_a_date_and_the_worker_runs_it(pg, rq_processes):
    ids = add_users(5)
    client = client_as(pg, "admin")
    yesterday = str(grants.utc_today() - timedelta(days=1))
    response = client.post("/api/grants/daily/run", json={"date": yesterday})
    assert response.status_code == 202
    body = response.get_json()
    assert body["date"] == yesterday and body["status"] == "queued"
    assert Queue(QUEUE, connection=redis(pg)).fetch_job(body["job_id"])
    default = client.post("/api/grants/daily/run", json={})
    assert default.status_code == 202 and default.get_json()["date"] == str(grants.utc_today())
    rq_processes.worker(db_url(pg), entry_point=True)
    wait_for(lambda: len(done_runs()) == 2 and idle(pg), "both dates to be granted")
    items = client.get("/api/grants/daily").get_json()["items"]
    assert [(i["grant_date"], i["status"], i["users_credited"]) for i in items] == [
        (str(grants.utc_today()), "done", 5), (yesterday, "done", 5)]
    assert balances() == {uid: 10 for uid in ids}
    again = client.post("/api/grants/daily/run", json={"date": yesterday})
    assert again.status_code == 200 and again.get_json()["status"] == "already_done"


def _job_lines(proc):
    lines = []
    with open(proc.log_path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("msg") == "job":
                lines.append(record)
    return lines


def test_the_worker_logs_one_json_line_per_job(pg, rq_processes):
    add_users(25)
    worker = rq_processes.worker(db_url(pg), entry_point=True)
    grants.enqueue_date(grants.utc_today())
    wait_for(lambda: len(done_runs()) == 1 and idle(pg), "the grant")
    lines = wait_for(lambda: len(_job_lines(worker)) >= 4 and _job_lines(worker), "the job log lines")
    by_job = {}
    for line in lines:
        by_job.setdefault(line["job"], []).append(line)
    assert len(by_job["grant_date"]) == 1 and len(by_job["grant_chunk"]) == 3  # 25 users, chunks of 10
    for line in lines:
        assert line["outcome"] == "ok" and line["job_id"] and line["duration_ms"] >= 0 and line["level"] == "info"
        assert line["retries_left"] == 3  # a first run: DAILY_GRANT_RETRY_DELAYS "0,0,0" all still left
    assert sum(line["result"] for line in by_job["grant_chunk"]) == 25


def test_sigterm_lets_the_running_grant_job_finish(pg, rq_processes):
    """Injected: SIGTERM to `python -m worker` while a chunk job waits on a locked row.
    Observed: RQ's warm shutdown lets the job finish, then the worker exits; every user of
    the date is credited exactly once."""
    ids = add_users(30)
    blocker = db.engine.connect()
    tx = blocker.begin()
    blocker.execute(text("SELECT credits FROM credits WHERE user_id = :u FOR UPDATE"), {"u": ids[15]})
    worker = rq_processes.worker(db_url(pg), entry_point=True)
    grants.enqueue_date(grants.utc_today())

    wait_for(blocked_grant, "the chunk job to block inside its transaction")
    worker.send_signal(signal.SIGTERM)
    time.sleep(1)
    assert worker.poll() is None, "the worker quit with its job still running"
    tx.rollback()
    blocker.close()
    assert worker.wait(60) == 0
    # What was still queued behind the interrupted worker is finished by the next one.
    rq_processes.worker(db_url(pg), entry_point=True)
    wait_for(lambda: len(done_runs()) == 1 and idle(pg), "the rest of the grant")
    assert_granted_once(ids)
    assert ledger.verify() == []


def failed_chunk_jobs(app):
    return FailedJobRegistry(QUEUE, connection=redis(app)).count


def test_a_chunk_that_fails_every_retry_marks_its_run_failed_until_catch_up(pg, rq_processes):
    """Injected: another connection holds one user's credits row locked while the worker's
    statement timeout is 300 ms, so that chunk fails its first run and both retries.
    Observed: the run is `failed` (API, CLI, metric) with the database's error, the other
    chunks are granted; once the lock is gone, the scheduler's catch-up finishes the run and
    every user is credited once."""
    ids = add_users(30)
    blocker = db.engine.connect()
    tx = blocker.begin()
    blocker.execute(text("SELECT credits FROM credits WHERE user_id = :u FOR UPDATE"), {"u": ids[15]})
    url = db_url(pg)
    worker = rq_processes.worker(url, entry_point=True, DB_STATEMENT_TIMEOUT_MS=300, DAILY_GRANT_RETRY_DELAYS="0,0")
    today = grants.utc_today()
    grants.enqueue_date(today)
    wait_for(lambda: failed_chunk_jobs(pg) == 1 and idle(pg), "the locked chunk to fail its last retry")
    run = grants.get_run(today)
    assert (run.status, run.chunks_done, run.chunks_total, run.users_credited) == ("failed", 2, 3, 20)
    assert run.last_error == "QueryCanceled: canceling statement due to statement timeout"
    attempts = [line for line in _job_lines(worker) if line["job"] == "grant_chunk" and line["outcome"] == "failed"]
    assert [line["retries_left"] for line in attempts] == [2, 1, 0]  # marked only after the last of them
    (item,) = client_as(pg, "admin").get("/api/grants/daily").get_json()["items"]
    assert (item["status"], item["last_error"]) == ("failed", run.last_error)
    assert f"{today}  failed" in pg.test_cli_runner().invoke(args=["credits", "grant-status"]).output
    assert "credits_daily_grant_failed_runs 1.0" in pg.test_client().get("/metrics").get_data(as_text=True)

    tx.rollback()
    blocker.close()
    rq_processes.scheduler(url)  # (re)starting the scheduler queues a catch-up
    wait_for(lambda: grants.get_run(today).status == "done" and idle(pg), "the catch-up to finish the run")
    run = grants.get_run(today)
    assert (run.chunks_done, run.users_credited) == (3, 30)
    assert_granted_once(ids, day=today)
    assert "credits_daily_grant_failed_runs 0.0" in pg.test_client().get("/metrics").get_data(as_text=True)


def _horse(worker_pid):
    """The work horse: the worker's child that holds a PostgreSQL connection waiting on a lock
    (the worker's other child, RQ's scheduler, holds none)."""
    with db.engine.connect() as conn:
        ports = {r[0] for r in conn.execute(text("SELECT client_port FROM pg_stat_activity "
                                                 "WHERE wait_event_type = 'Lock'"))}
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) in ports:
                    inodes.add(fields[9])
    for pid in _children(worker_pid):
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        if any(f"socket:[{inode}]" in links for inode in inodes):
            return pid
    return None


def test_a_chunk_whose_horse_is_killed_on_its_last_attempt_marks_its_run_failed(pg, rq_processes):
    """Injected: the work horse running the locked chunk is SIGKILLed on its first run and on
    its one retry (no failure callback runs in a killed process). Observed: the run is
    `failed`, saying the horse was killed."""
    ids = add_users(30)
    blocker = db.engine.connect()
    tx = blocker.begin()
    blocker.execute(text("SELECT credits FROM credits WHERE user_id = :u FOR UPDATE"), {"u": ids[15]})
    worker = rq_processes.worker(db_url(pg), entry_point=True, DAILY_GRANT_RETRY_DELAYS="0")
    today = grants.utc_today()
    grants.enqueue_date(today)
    killed = set()
    for _ in range(2):
        horse = wait_for(lambda: (pid := _horse(worker.pid)) not in killed | {None} and pid, "the blocked horse")
        os.kill(horse, signal.SIGKILL)
        killed.add(horse)
    wait_for(lambda: failed_chunk_jobs(pg) == 1 and idle(pg), "the chunk to fail for good")
    tx.rollback()
    blocker.close()
    run = grants.get_run(today)
    assert (run.status, run.chunks_done, run.users_credited) == ("failed", 2, 20)
    assert run.last_error == "work horse killed (waitpid status 9)"


def test_the_scheduler_process_prints_no_dependency_warning_about_cron_time():
    """rq-scheduler's cron arithmetic makes crontab warn about a future default (UTC vs local
    time) on every call; the scheduler runs with TZ=UTC, where both defaults agree, so the
    warning is silenced where it arises and nothing else is."""
    script = ("import warnings, worker.schedule\n"
              "from rq_scheduler.utils import get_next_scheduled_time\n"
              "get_next_scheduled_time('0 0 * * *')\n"
              "warnings.warn('another FutureWarning', FutureWarning)\n")
    result = subprocess.run([sys.executable, "-W", "default", "-c", script], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "TZ": "UTC"}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "crontab" not in result.stderr and "another FutureWarning" in result.stderr
