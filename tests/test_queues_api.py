"""/api/queues against a real redis-server and real RQ workers: the configured queues' counts,
live workers, the scheduler's entries, a job that really failed listed with its traceback and
requeued once; Redis down is 503 queue_unavailable; admin only."""
import subprocess
import sys

import pytest
from redis import Redis
from rq import Queue

from credits_app import queues
from credits_app.extensions import db
from tests.conftest import _fresh_url, client_as, make_app
from tests.redis_fixtures import QUEUE, ROOT, db_url, wait_for
from tests.services import free_port
from worker import schedule

WEBHOOKS = "credits-webhooks"  # WEBHOOKS_QUEUE's default
FAILING = "worker.jobs.grant_date"  # refuses a date that is not YYYY-MM-DD


@pytest.fixture
def app_env(redis_url):
    return {"REDIS_URL": redis_url}


def burst(rq_processes, app, *queue_names):
    """A stock `rq worker --burst`: runs what is queued, then exits."""
    result = subprocess.run([sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", rq_processes.redis_url,
                             *queue_names], cwd=ROOT, env=rq_processes.env(db_url(app)), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_overview_counts_each_configured_queue_and_lists_the_schedule(client, redis_url):
    r = client.get("/api/queues")
    assert r.status_code == 200, r.get_json()
    assert r.get_json() == {
        "queues": [{"name": QUEUE, "purpose": "grants", "waiting": 0, "running": 0, "failed": 0, "scheduled": 0},
                   {"name": WEBHOOKS, "purpose": "webhooks", "waiting": 0, "running": 0, "failed": 0,
                    "scheduled": 0}],
        "workers": [], "schedule": []}
    conn = Redis.from_url(redis_url)
    schedule.register(conn, "0 0 * * *", 5, QUEUE)
    schedule.register_dispatch(conn, "* * * * *", WEBHOOKS)
    Queue(QUEUE, connection=conn).enqueue(FAILING, "2026-01-01")
    Queue(QUEUE, connection=conn).enqueue(FAILING, "2026-01-02")
    Queue(WEBHOOKS, connection=conn).enqueue(schedule.DISPATCH)
    body = client.get("/api/queues").get_json()
    assert [(q["name"], q["waiting"]) for q in body["queues"]] == [(QUEUE, 2), (WEBHOOKS, 1)]
    entries = {e["id"]: e for e in body["schedule"]}
    assert set(entries) == {schedule.JOB_ID, schedule.DISPATCH_JOB_ID}
    assert entries[schedule.JOB_ID]["cron"] == "0 0 * * *" and entries[schedule.JOB_ID]["func"] == schedule.TICK
    assert entries[schedule.JOB_ID]["next_run_at"].endswith("T00:00:00+00:00")
    assert entries[schedule.DISPATCH_JOB_ID]["func"] == schedule.DISPATCH
    assert body["schedule"][0]["id"] == schedule.DISPATCH_JOB_ID  # soonest first: it fires every minute


def test_a_live_worker_is_listed_with_its_queues_and_heartbeat(client, app, rq_processes):
    rq_processes.worker(db_url(app))
    # Listed from its birth; idle once it waits for work.
    workers = wait_for(lambda: [w for w in client.get("/api/queues").get_json()["workers"] if w["state"] == "idle"],
                       "the worker to wait for work")
    (worker,) = workers
    assert worker["queues"] == [QUEUE] and worker["current_job_id"] is None and worker["name"]
    assert worker["last_heartbeat"].endswith("+00:00")


def test_a_failed_job_is_listed_and_requeued_once(client, app, rq_processes, redis_url):
    conn = Redis.from_url(redis_url)
    job = Queue(QUEUE, connection=conn).enqueue(FAILING, "not-a-date", description="a grant for no date")
    other = Queue(WEBHOOKS, connection=conn).enqueue(FAILING, "nor-this")
    burst(rq_processes, app, QUEUE, WEBHOOKS)
    assert [q["failed"] for q in client.get("/api/queues").get_json()["queues"]] == [1, 1]

    r = client.get(f"/api/queues/{QUEUE}/failed")
    assert r.status_code == 200, r.get_json()
    (item,) = r.get_json()["items"]
    assert set(item) == {"id", "func", "description", "enqueued_at", "ended_at", "error"}
    assert (item["id"], item["func"], item["description"]) == (job.id, FAILING, "a grant for no date")
    assert item["enqueued_at"] <= item["ended_at"] and item["ended_at"].endswith("+00:00")
    assert item["error"].startswith("Traceback") and "date must be YYYY-MM-DD" in item["error"]
    assert [i["id"] for i in client.get(f"/api/queues/{WEBHOOKS}/failed").get_json()["items"]] == [other.id]

    # Only the queue it failed in requeues it.
    r = client.post(f"/api/queues/{WEBHOOKS}/failed/{job.id}/requeue")
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "job_not_found"
    r = client.post(f"/api/queues/{QUEUE}/failed/{job.id}/requeue")
    assert r.status_code == 200 and r.get_json() == {"id": job.id, "status": "queued"}
    assert Queue(QUEUE, connection=conn).job_ids == [job.id]
    assert client.get(f"/api/queues/{QUEUE}/failed").get_json() == {"items": []}
    # A second click finds nothing to requeue: the job is queued once.
    r = client.post(f"/api/queues/{QUEUE}/failed/{job.id}/requeue")
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "job_not_found"
    assert Queue(QUEUE, connection=conn).job_ids == [job.id]
    # It really runs again (and fails again, the date being no better).
    burst(rq_processes, app, QUEUE)
    assert [i["id"] for i in client.get(f"/api/queues/{QUEUE}/failed").get_json()["items"]] == [job.id]


def test_failed_jobs_come_latest_first_within_the_limit(client, app, rq_processes, redis_url):
    q = Queue(QUEUE, connection=Redis.from_url(redis_url))
    ids = [q.enqueue(FAILING, f"bad-{n}").id for n in range(3)]
    burst(rq_processes, app, QUEUE)
    assert [i["id"] for i in client.get(f"/api/queues/{QUEUE}/failed").get_json()["items"]] == ids[::-1]
    assert [i["id"] for i in client.get(f"/api/queues/{QUEUE}/failed?limit=2").get_json()["items"]] == ids[:0:-1]
    for limit in ("0", "201", "x"):
        r = client.get(f"/api/queues/{QUEUE}/failed?limit={limit}")
        assert r.status_code == 422 and r.get_json()["error"]["code"] == "validation_error"


def test_unknown_queues_and_jobs_are_404(client):
    for path in ("/api/queues/default/failed", "/api/queues/rq:queue:credits/failed",
                 "/api/queues/nope/failed/abc/requeue"):
        r = client.get(path) if path.endswith("failed") else client.post(path)
        assert r.status_code == 404 and r.get_json()["error"]["code"] == "queue_not_found", path
        assert r.get_json()["error"]["details"]["queues"] == [QUEUE, WEBHOOKS]
    # Ids RQ would read as another job's (a colon) or never issues are no job of the queue.
    for job_id in ("missing", "abc:def", "a%20b", "%C3%A9"):
        r = client.post(f"/api/queues/{QUEUE}/failed/{job_id}/requeue")
        assert r.status_code == 404 and r.get_json()["error"]["code"] == "job_not_found", job_id


def test_admin_only(app):
    for role, user_id in (("service", None), ("user", 1)):
        caller = client_as(app, role, user_id=user_id)
        for r in (caller.get("/api/queues"), caller.get(f"/api/queues/{QUEUE}/failed"),
                  caller.post(f"/api/queues/{QUEUE}/failed/x/requeue")):
            assert r.status_code == 403 and r.get_json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize("redis", ["unreachable", "not configured"])
def test_redis_down_is_503_queue_unavailable(backend, request, tmp_path, redis):
    url = f"redis://127.0.0.1:{free_port()}/0" if redis == "unreachable" else ""
    app = make_app(_fresh_url(backend, request, tmp_path), REDIS_URL=url)
    admin = client_as(app)
    for r in (admin.get("/api/queues"), admin.get(f"/api/queues/{QUEUE}/failed"),
              admin.post(f"/api/queues/{QUEUE}/failed/abc/requeue")):
        assert r.status_code == 503 and r.is_json, r.data
        assert r.get_json()["error"]["code"] == "queue_unavailable"
    # A name that is not configured is known to be wrong without Redis.
    assert admin.get("/api/queues/nope/failed").status_code == 404
    with app.app_context():
        db.engine.dispose()


def test_an_error_keeps_the_traceback_end_from_a_line_start():
    traceback = "Traceback (most recent call last):\n" + "".join(f'  File "x.py", line {n}\n' for n in range(500))
    traceback += "ValueError: the reason\n"
    shown = queues.tail(traceback, queues.ERROR_MAX)
    assert len(shown) <= queues.ERROR_MAX and shown.endswith("ValueError: the reason\n")
    assert shown.startswith('  File "x.py"') and traceback.endswith(shown)
    assert queues.tail("short", 10) == "short" and queues.tail("x" * 20, 10) == "x" * 10


def test_cli_reads_and_requeues_through_the_same_functions(app, rq_processes, redis_url):
    conn = Redis.from_url(redis_url)
    Queue(QUEUE, connection=conn).enqueue(FAILING, "bad")
    Queue(WEBHOOKS, connection=conn).enqueue(FAILING, "bad")
    burst(rq_processes, app, QUEUE, WEBHOOKS)
    runner = app.test_cli_runner()
    out = runner.invoke(args=["queue", "status"]).output
    assert f"queue {QUEUE}: 0 waiting, 0 running, 1 failed, 0 scheduled retries (grants)" in out
    assert f"queue {WEBHOOKS}: 0 waiting, 0 running, 1 failed, 0 scheduled retries (webhooks)" in out
    assert runner.invoke(args=["queue", "requeue-failed", "--queue", WEBHOOKS]).output.strip() == \
        "requeued 1 failed job(s)"
    assert [q["waiting"] for q in client_as(app).get("/api/queues").get_json()["queues"]] == [0, 1]
    assert runner.invoke(args=["queue", "requeue-failed"]).output.strip() == "requeued 1 failed job(s)"
    r = runner.invoke(args=["queue", "requeue-failed", "--queue", "nope"])
    assert r.exit_code == 1 and "queue_not_found" in r.output
