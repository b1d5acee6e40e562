"""Real redis-server, `rq worker` and `rqscheduler` processes for the tests that need them.

Subprocesses run the repo's interpreter (sys.executable) from the repo root and get their
DATABASE_URL / REDIS_URL through the environment, like the Procfile's processes."""
import os
import signal
import subprocess
import sys
import time

import pytest
from redis import Redis as RedisClient

from tests.services import Redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUEUE = "credits"


@pytest.fixture(scope="session")
def redis_server():
    server = Redis().start()
    yield server
    server.destroy()


@pytest.fixture
def redis_url(redis_server):
    """A clean Redis database for each test."""
    client = RedisClient.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def pg(pg_app):
    """A PostgreSQL app for the process tests, its app context pushed."""
    with pg_app.app_context():
        yield pg_app


def db_url(app):
    """The app's database URL as the RQ processes take it (DATABASE_URL, no driver name)."""
    return app.config["SQLALCHEMY_DATABASE_URI"].replace("+psycopg2", "")


def wait_for(condition, what, timeout=90, every=0.1):
    """Poll until `condition()` is truthy and return it. The timeout only stops a hung test;
    it is never what a test asserts."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


class RQProcesses:
    """Starts real RQ processes against one database and one Redis; stops them all."""

    def __init__(self, redis_url, log_dir):
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.procs = []
        self.defaults = {}  # extra environment for every process a test starts

    def env(self, database_url, **extra):
        from tests.conftest import TEST_SECRET

        env = dict(os.environ)
        env.update({"DATABASE_URL": database_url, "REDIS_URL": self.redis_url, "TESTING": "true",
                    "JWT_SECRET_KEY": TEST_SECRET, "RATELIMIT_ENABLED": "false", "TZ": "UTC",
                    "RQ_QUEUE": QUEUE, "DAILY_GRANT_RETRY_DELAYS": "0,0,0", "PYTHONPATH": ROOT})
        env.update({k: str(v) for k, v in {**self.defaults, **extra}.items()})
        return env

    def _start(self, name, cmd, env):
        log = open(os.path.join(self.log_dir, f"{name}-{len(self.procs)}.log"), "w")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        proc.log_path = log.name
        log.close()
        self.procs.append(proc)
        return proc

    def worker(self, database_url, entry_point=False, with_scheduler=True, **extra):
        """`rq worker` (or the project's `python -m worker`) on the queue, forking per job.
        `with_scheduler` runs RQ's own scheduler (delayed retries) in a child process."""
        if entry_point:
            cmd = [sys.executable, "-m", "worker"]
        else:
            cmd = [sys.executable, "-m", "rq.cli", "worker", "--url", self.redis_url, QUEUE]
            cmd += ["--with-scheduler"] if with_scheduler else []
        return self._start("worker", cmd, self.env(database_url, **extra))

    def rqscheduler(self, database_url, interval=1, **extra):
        """The stock `rqscheduler` process, polling every `interval` seconds."""
        cmd = [sys.executable, "-m", "rq_scheduler.scripts.rqscheduler", "--url", self.redis_url,
               "-i", str(interval)]
        return self._start("rqscheduler", cmd, self.env(database_url, **extra))

    def scheduler(self, database_url, **extra):
        """The project's scheduler process (`python -m worker.schedule`)."""
        extra.setdefault("DAILY_GRANT_SCHEDULER_INTERVAL", 1)
        return self._start("scheduler", [sys.executable, "-m", "worker.schedule"], self.env(database_url, **extra))

    def logs(self):
        out = []
        for proc in self.procs:
            with open(proc.log_path) as f:
                out.append(f"--- {proc.log_path}\n{f.read()[-3000:]}")
        return "\n".join(out)

    def stop_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # A forked work horse outlives a killed parent only briefly; reap nothing else.
        self.procs = []


@pytest.fixture
def rq_processes(redis_url, tmp_path, request):
    procs = RQProcesses(redis_url, str(tmp_path))
    yield procs
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print(procs.logs())
    procs.stop_all()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Lets rq_processes print the subprocess logs of a failed test.
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)
