"""The web process as production runs it — gunicorn with the checked-in config, several
workers — against real PostgreSQL and Redis: readiness, metrics across workers, Redis
going away and coming back, and SIGTERM during a request."""
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import psycopg2
import pytest

from credits_app.extensions import db
from tests.conftest import _fresh_url, make_app, token_for
from tests.services import Redis, Web

SECRET = "stack-test-secret-0123456789abcdefghijklmnop"


def http(base, method, path, body=None, token=None, timeout=30):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def wait_for(predicate, timeout=20, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


@pytest.fixture
def stack_db(pg_server, request, tmp_path):
    url = _fresh_url("postgresql", request, tmp_path)
    app = make_app(url, JWT_SECRET_KEY=SECRET)
    yield url, token_for(app, "service", sub="platform")
    with app.app_context():
        db.engine.dispose()


def _sum_metric(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.slow
def test_gunicorn_stack_readiness_metrics_and_redis_outage(stack_db):
    url, token = stack_db
    redis = Redis().start()
    web = Web({"DATABASE_URL": url, "REDIS_URL": redis.url, "JWT_SECRET_KEY": SECRET, "WEB_CONCURRENCY": "2",
               "RATELIMIT_DEFAULT": "1000/second"}).start()
    try:
        status, body = http(web.url, "GET", "/readyz")
        assert status == 200 and body["checks"] == {"database": "ok", "redis": "ok"}

        status, user = http(web.url, "POST", "/api/users", {"email": "stack@example.com", "name": "S"}, token)
        uid = user["user_id"]
        for _ in range(6):
            assert http(web.url, "POST", f"/api/credits/{uid}/add", {"amount": 5}, token)[0] == 200
        assert http(web.url, "POST", f"/api/credits/{uid}/deduct", {"amount": 1000}, token)[0] == 409

        # Any worker's /metrics aggregates every worker's samples.
        for _ in range(4):
            _, text = http(web.url, "GET", "/metrics")
            assert _sum_metric(text, "credits_operations_total", kind="add", outcome="ok") == 6
            assert _sum_metric(text, "credits_operations_total", kind="deduct", outcome="refused") == 1
        assert "credits_redis_up 1.0" in text and 'credits_queue_depth{queue="credits"}' in text

        redis.stop()
        status, body = http(web.url, "GET", "/readyz")
        assert status == 503 and body["checks"]["redis"].startswith("error") and body["checks"]["database"] == "ok"
        # Money traffic does not need Redis: reads and writes go on (rate limits count in memory).
        assert http(web.url, "GET", f"/api/credits/{uid}", token=token)[1]["credits"] == 30
        assert http(web.url, "POST", f"/api/credits/{uid}/deduct", {"amount": 10}, token)[0] == 200
        assert http(web.url, "POST", f"/api/credits/{uid}/add", {"amount": 1}, token)[0] == 200
        _, text = http(web.url, "GET", "/metrics")
        assert "credits_redis_up 0.0" in text

        redis.start()
        assert wait_for(lambda: http(web.url, "GET", "/readyz")[0] == 200), "readiness did not recover"
        assert http(web.url, "GET", f"/api/credits/{uid}", token=token)[1]["credits"] == 21

        # One JSON line per request, the app's: gunicorn's own access line stays off.
        lines = [json.loads(line) for line in open(web.log_path) if line.startswith("{")]
        assert not [line for line in lines if line["logger"] == "gunicorn.access"], "gunicorn's access log is on"
        adds = [line for line in lines if line["logger"] == "credits.request" and line["path"].endswith("/add")]
        assert len(adds) == 7 and {line["status"] for line in adds} == {200}
    finally:
        assert web.stop() == 0
        redis.destroy()


@pytest.mark.slow
def test_sigterm_lets_the_request_in_flight_finish(stack_db):
    url, token = stack_db
    web = Web({"DATABASE_URL": url, "JWT_SECRET_KEY": SECRET, "WEB_CONCURRENCY": "1"}).start()
    try:
        _, user = http(web.url, "POST", "/api/users", {"email": "term@example.com", "name": "T"}, token)
        uid = user["user_id"]
        http(web.url, "POST", f"/api/credits/{uid}/add", {"amount": 10}, token)

        blocker = psycopg2.connect(url)
        cur = blocker.cursor()
        cur.execute("SELECT credits FROM credits WHERE user_id = %s FOR UPDATE", (uid,))  # hold the row
        result = {}
        caller = threading.Thread(target=lambda: result.update(
            r=http(web.url, "POST", f"/api/credits/{uid}/deduct", {"amount": 3}, token, timeout=60)))
        caller.start()
        watcher = psycopg2.connect(url)
        watcher.autocommit = True
        wcur = watcher.cursor()

        def request_is_waiting():
            wcur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            return wcur.fetchone()[0] > 0
        assert wait_for(request_is_waiting), "the deduct never reached the database"

        web.proc.send_signal(signal.SIGTERM)  # injected: shutdown while the request waits
        time.sleep(1)
        assert web.proc.poll() is None, "gunicorn quit before its request finished"
        blocker.rollback()  # let the request through
        caller.join(30)
        status, body = result["r"]
        assert status == 200 and body["credits"] == 7  # observed: the in-flight request completed
        assert web.proc.wait(30) == 0
        # Its log line was written before the worker exited (the log writer's last batch).
        lines = [json.loads(line) for line in open(web.log_path) if line.startswith("{")]
        assert [line["status"] for line in lines
                if line["logger"] == "credits.request" and line["path"].endswith("/deduct")] == [200]
        cur.execute("SELECT credits FROM credits WHERE user_id = %s", (uid,))
        assert cur.fetchone()[0] == 7
        blocker.close()
        watcher.close()
    finally:
        web.stop()


def test_each_web_worker_freezes_what_start_up_allocated(tmp_path):
    # gunicorn calls post_worker_init in each worker once the app is built; run that hook as
    # gunicorn would, in a process of its own (freezing this one would outlive the test).
    script = ("import gc, runpy\n"
              "import wsgi\n"
              "hooks = runpy.run_path('gunicorn.conf.py')\n"
              "before = gc.get_freeze_count()\n"
              "hooks['post_worker_init'](None)\n"
              "print(before, gc.get_freeze_count(), len(gc.get_objects()))\n")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "JWT_SECRET_KEY": SECRET,
           "DATABASE_URL": f"sqlite:///{tmp_path}/app.db", "RATELIMIT_STORAGE_URI": "memory://"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    before, frozen, still_collected = map(int, out.stdout.split())
    assert before == 0
    assert frozen > 10_000  # the app's modules, schemas, SQLAlchemy metadata ...
    assert still_collected < frozen / 10  # ... are no longer walked by each full collection


def test_the_metrics_directory_is_removed_at_exit_even_after_a_reload(tmp_path):
    # gunicorn makes a metrics directory for its workers; SIGHUP re-reads gunicorn.conf.py
    # (when the variable is already set), and the directory must still be removed at exit.
    pattern = os.path.join(tempfile.gettempdir(), "credits-metrics-*")
    before = set(glob.glob(pattern))
    web = Web({"DATABASE_URL": f"sqlite:///{tmp_path}/app.db", "JWT_SECRET_KEY": SECRET,
               "WEB_CONCURRENCY": "1"}).start()
    try:
        made = set(glob.glob(pattern)) - before
        assert len(made) == 1, made
        web.proc.send_signal(signal.SIGHUP)  # injected: an operator reloads the config
        time.sleep(1)
        assert wait_for(lambda: http(web.url, "GET", "/healthz")[0] == 200)
        assert all(os.path.isdir(d) for d in made)
    finally:
        assert web.stop() == 0
    assert not [d for d in made if os.path.exists(d)]
