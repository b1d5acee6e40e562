"""Health, readiness, metrics and the per-request JSON log (in-process; the real gunicorn
stack is in test_production_stack.py)."""
import contextlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading

from flask_migrate import upgrade

from credits_app.extensions import db
from credits_app.web.logs import BackgroundStreamHandler, JsonFormatter
from tests.conftest import _fresh_url, make_app, new_user
from tests.redis_fixtures import wait_for
from tests.services import free_port


def test_healthz_needs_nothing(anon):
    r = anon.get("/healthz")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}


def test_readyz_without_redis_configured(anon):
    r = anon.get("/readyz")
    assert r.status_code == 200
    assert r.get_json() == {"status": "ready", "checks": {"database": "ok", "redis": "not_configured"}}


def test_readyz_with_redis_up_and_down(backend, request, tmp_path, redis_url):
    url = _fresh_url(backend, request, tmp_path)
    up = make_app(url, REDIS_URL=redis_url)
    assert up.test_client().get("/readyz").get_json()["checks"]["redis"] == "ok"
    down = make_app(url, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    r = down.test_client().get("/readyz")
    assert r.status_code == 503 and r.get_json()["status"] == "not_ready"
    assert r.get_json()["checks"]["redis"].startswith("error") and r.get_json()["checks"]["database"] == "ok"
    for a in (up, down):
        with a.app_context():
            db.engine.dispose()


def test_readyz_reports_a_database_behind_the_migrations(pg_server):
    pg_server.psql("postgres", "CREATE DATABASE behind")
    app = make_app(pg_server.url("behind"))
    with app.app_context():
        upgrade(revision="0001")
    r = app.test_client().get("/readyz")
    assert r.status_code == 503 and "migrations not at head" in r.get_json()["checks"]["database"]
    with app.app_context():
        upgrade()
    assert app.test_client().get("/readyz").status_code == 200
    with app.app_context():
        db.engine.dispose()


def test_readyz_with_the_database_down(tmp_path):
    app = make_app(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing", DB_CONNECT_TIMEOUT="1")
    r = app.test_client().get("/readyz")
    assert r.status_code == 503 and r.get_json()["checks"]["database"].startswith("error")


def test_health_and_metrics_are_in_the_openapi_document_without_auth(anon):
    """/healthz, /readyz and /metrics are documented like the API, each marked as needing no
    token (security: []), with the responses and content types they really send."""
    spec = anon.get("/openapi.json").get_json()
    operations = {path: spec["paths"][path] for path in ("/healthz", "/readyz", "/metrics")}
    for path, item in operations.items():
        assert set(item) == {"get"}, (path, item)
        assert item["get"]["security"] == [], path
    assert spec["security"] == [{"bearerAuth": []}]  # the API itself still needs a token

    def content(path, status):
        return operations[path]["get"]["responses"][status]["content"]

    assert content("/healthz", "200")["application/json"]["schema"] == {"$ref": "#/components/schemas/HealthOut"}
    for status in ("200", "503"):
        assert content("/readyz", status)["application/json"]["schema"] == {"$ref": "#/components/schemas/ReadyOut"}
    ready = spec["components"]["schemas"]["ReadyOut"]["properties"]
    assert ready["status"]["enum"] == ["ready", "not_ready"] and "checks" in ready
    r = anon.get("/metrics")
    assert content("/metrics", "200") == {r.headers["Content-Type"]: {"schema": {"type": "string"}}}
    assert r.headers["Content-Type"].startswith("text/plain")
    # Documenting them changed nothing they answer.
    assert anon.get("/healthz").get_json() == {"status": "ok"}
    assert anon.get("/readyz").get_json()["status"] == "ready"


def _sample(text, name, **labels):
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_credit_operations(client, anon):
    uid = new_user(client)
    before = anon.get("/metrics").get_data(as_text=True)
    client.post(f"/api/credits/{uid}/add", json={"amount": 5})
    client.post(f"/api/credits/{uid}/deduct", json={"amount": 50})
    client.post(f"/api/credits/{uid}/deduct", json={"amount": 2}, headers={"Idempotency-Key": "m1"})
    client.post(f"/api/credits/{uid}/deduct", json={"amount": 2}, headers={"Idempotency-Key": "m1"})
    client.post(f"/api/credits/{uid}/deduct", json={"amount": 70}, headers={"Idempotency-Key": "m2"})
    client.post(f"/api/credits/{uid}/deduct", json={"amount": 70}, headers={"Idempotency-Key": "m2"})
    after = anon.get("/metrics").get_data(as_text=True)

    def delta(name, **labels):
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    assert delta("credits_operations_total", kind="add", outcome="ok") == 1
    assert delta("credits_operations_total", kind="deduct", outcome="refused") == 2
    assert delta("credits_operations_total", kind="deduct", outcome="ok") == 1
    assert delta("credits_operations_total", kind="deduct", outcome="replayed") == 2  # a change, a refusal
    assert delta("credits_insufficient_credits_total") == 2  # a replayed refusal refuses nothing new
    assert delta("credits_http_requests_total", method="POST", route="/api/credits/<int:user_id>/deduct",
                 status="200") == 2
    assert delta("credits_http_request_duration_seconds_count", method="POST",
                 route="/api/credits/<int:user_id>/add") == 1
    assert "credits_daily_grant_last_success_timestamp_seconds" in after


def test_invented_methods_share_one_metric_label(anon):
    before = anon.get("/metrics").get_data(as_text=True)
    for verb in ("BREW", "WHEN", "X" * 40):
        assert anon.open("/api/credits/1", method=verb).status_code == 405
    text = anon.get("/metrics").get_data(as_text=True)
    assert "BREW" not in text and "WHEN" not in text
    route = "unmatched"  # a 405 matched no rule
    assert (_sample(text, "credits_http_requests_total", method="other", route=route, status="405")
            - _sample(before, "credits_http_requests_total", method="other", route=route, status="405")) == 3


def test_python_warnings_are_json_log_lines(tmp_path):
    # rq-scheduler's crontab raises a FutureWarning at every schedule computation: it used
    # to reach stderr as raw text between the JSON lines.
    script = ("from credits_app import create_app\ncreate_app()\n"
              "from rq_scheduler.utils import get_next_scheduled_time\nget_next_scheduled_time('0 0 * * *')\n")
    env = {**os.environ, "JWT_SECRET_KEY": "w" * 40, "DATABASE_URL": f"sqlite:///{tmp_path}/w.db", "TESTING": "1"}
    out = subprocess.run([sys.executable, "-W", "default", "-c", script], env=env, capture_output=True, text=True,
                         timeout=60, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert lines and all(json.loads(line) for line in lines), out.stderr  # every line is JSON
    warning = json.loads(lines[-1])
    assert warning["level"] == "warning" and warning["logger"] == "py.warnings" and "FutureWarning" in warning["msg"]


def test_log_timestamps_are_utc_iso_with_milliseconds():
    formatter = JsonFormatter()
    for created, expected in ((0.0, "1970-01-01T00:00:00.000+00:00"),
                              (1764130000.9995, "2025-11-26T04:06:40.999+00:00"),
                              (1764130001.25, "2025-11-26T04:06:41.250+00:00"),
                              (1764130000.123, "2025-11-26T04:06:40.123+00:00"),  # 0.12299990654 as a float
                              (1764130000.9999997, "2025-11-26T04:06:41.000+00:00")):  # rounds into the next second
        record = logging.LogRecord("credits.request", logging.INFO, __file__, 1, "request", (), None)
        record.created = created
        assert json.loads(formatter.format(record))["ts"] == expected


@contextlib.contextmanager
def _request_log_lines():
    """The request log lines written inside the block, parsed (the list fills at the end)."""
    stream, lines = io.StringIO(), []
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("credits.request")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        lines.extend(json.loads(line) for line in stream.getvalue().splitlines())


def test_one_json_log_line_per_request(client):
    with _request_log_lines() as lines:
        uid = new_user(client)
        client.get(f"/api/credits/{uid}", headers={"X-Request-ID": "trace-42"})
    assert len(lines) == 2
    line = lines[1]
    assert line["request_id"] == "trace-42" and line["status"] == 200 and line["subject"] == "test-admin"
    assert line["route"] == "/api/credits/<int:user_id>" and line["duration_ms"] >= 0 and line["msg"] == "request"


class _Writes(io.StringIO):
    """A stream that remembers each write() (a write is one system call on a real stream)."""

    def __init__(self):
        super().__init__()
        self.writes = []

    def write(self, text):
        self.writes.append(text)
        return super().write(text)


@contextlib.contextmanager
def _background_logger(stream, name, max_pending=None):
    """A logger of its own writing through a BackgroundStreamHandler to `stream`."""
    handler = BackgroundStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    if max_pending is not None:
        handler.MAX_PENDING = max_pending
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_background_log_writer_keeps_every_line_whole_and_in_order():
    stream = _Writes()
    with _background_logger(stream, "credits.test-background") as (logger, _):
        def log(thread):
            for i in range(500):
                logger.warning("line", extra={"fields": {"thread": thread, "i": i, "pad": "x" * (i % 300)}})
        threads = [threading.Thread(target=log, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # The writer thread writes on its own: wait for it (no flush() called yet).
        wait_for(lambda: stream.getvalue().count("\n") == 2000, "the writer thread to write every line")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    for thread in range(4):
        assert [line["i"] for line in lines if line["thread"] == thread] == list(range(500))
    # Whole lines per write, and no write longer than a pipe writes atomically (unless a
    # single line is longer by itself): another worker's lines cannot land inside one.
    assert all(w.endswith("\n") for w in stream.writes)
    assert all(len(w) <= BackgroundStreamHandler.CHUNK or w.count("\n") == 1 for w in stream.writes)
    assert len(stream.writes) < 2000  # batched


def test_background_log_writer_flush_writes_what_is_pending_at_once():
    stream = _Writes()
    handler = BackgroundStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.INTERVAL = 3600  # only flush() writes from here on (the thread is asleep already)
    record = logging.LogRecord("credits.request", logging.INFO, __file__, 1, "request", (), None)
    record.fields = {"status": 200}
    handler.handle(record)
    handler.flush()
    assert json.loads(stream.getvalue())["status"] == 200
    huge = logging.LogRecord("credits.request", logging.INFO, __file__, 1, "x" * 10_000, (), None)
    handler.handle(huge)
    handler.flush()
    assert stream.writes[-1].count("\n") == 1 and json.loads(stream.writes[-1])["msg"] == "x" * 10_000
    handler.close()


class _Refusing(_Writes):
    """stderr on a full disk or a closed pipe: every write fails until `ok` is set."""

    def __init__(self):
        super().__init__()
        self.ok = False

    def write(self, text):
        if not self.ok:
            raise OSError(28, "No space left on device")
        return super().write(text)


def test_background_log_writer_holds_a_bounded_number_of_lines_and_counts_what_it_drops():
    stream = _Refusing()
    with _background_logger(stream, "credits.test-refusing", max_pending=100) as (logger, handler):
        for i in range(5000):
            logger.warning("line", extra={"fields": {"i": i}})
            assert len(handler._pending) <= 100  # memory stays bounded while stderr refuses
        handler.flush()
        assert not handler._pending and stream.getvalue() == ""
        stream.ok = True  # the disk has room again
        logger.warning("line", extra={"fields": {"i": "after"}})
        handler.flush()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["logger"] == "credits.logs" and lines[0]["level"] == "warning"
    assert lines[0]["dropped"] == 5000  # every line that was never written, counted once
    assert [line["i"] for line in lines[1:]] == ["after"]


def test_background_log_writer_never_blocks_the_caller_on_a_stalled_stream():
    release = threading.Event()

    class Stalled(_Writes):  # a pipe whose reader stopped reading
        def write(self, text):
            release.wait(30)
            return super().write(text)

    stream = Stalled()
    with _background_logger(stream, "credits.test-stalled", max_pending=50) as (logger, handler):
        try:
            logger.warning("first")
            wait_for(lambda: not handler._pending, "the writer thread to take the first line")  # stuck in write()
            for i in range(500):  # the request threads go on; memory stays bounded
                logger.warning("line", extra={"fields": {"i": i}})
            assert len(handler._pending) == 50 and handler.dropped == 450
            assert handler.flush(timeout=0.1) is False  # what worker_exit does: it gives up, not hangs
        finally:
            release.set()  # the reader reads again; closing the handler writes what waits
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line.get("dropped") for line in lines if line["logger"] == "credits.logs"] == [450]
    assert [line["i"] for line in lines if "i" in line] == list(range(50))


def test_the_request_log_keeps_at_most_1000_characters_of_a_path(client):
    with _request_log_lines() as lines:
        assert client.get("/" + "a" * 6000).status_code == 404
    line = lines[-1]
    assert line["path"] == "/" + "a" * 999 and line["status"] == 404


def test_gunicorn_workers_write_the_request_log_in_the_background(tmp_path):
    # post_worker_init swaps the handler every app logger shares; worker_exit writes what is
    # left. Run both hooks as gunicorn does, in a process of their own.
    script = ("import logging, runpy\n"
              "import wsgi\n"
              "hooks = runpy.run_path('gunicorn.conf.py')\n"
              "hooks['post_worker_init'](None)\n"
              "names = ['credits', 'credits.request', 'credits_app', 'worker', 'py.warnings']\n"
              "kinds = {type(h).__name__ for n in names for h in logging.getLogger(n).handlers "
              "or logging.getLogger('credits').handlers}\n"
              "print(sorted(kinds), flush=True)\n"
              "with wsgi.app.test_client() as c:\n"
              "    c.get('/healthz')\n"
              "hooks['worker_exit'](None, None)\n"
              "import os; os._exit(0)\n")  # no interpreter shutdown: only worker_exit writes the line
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "JWT_SECRET_KEY": "x" * 40,
           "DATABASE_URL": f"sqlite:///{tmp_path}/app.db", "RATELIMIT_STORAGE_URI": "memory://"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['BackgroundStreamHandler']"
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert [line["path"] for line in lines if line["logger"] == "credits.request"] == ["/healthz"]


def test_metrics_report_the_last_finished_daily_grant(client, anon, runner):
    for i in range(3):
        new_user(client, f"g{i}@example.com")
    assert runner.invoke(args=["credits", "grant-daily"]).exit_code == 0  # today (UTC)
    text = anon.get("/metrics").get_data(as_text=True)
    assert _sample(text, "credits_daily_grant_last_users_credited") == 3
    assert _sample(text, "credits_daily_grant_last_success_timestamp_seconds") > 1.7e9
    assert _sample(text, "credits_daily_grant_last_duration_seconds") >= 0
