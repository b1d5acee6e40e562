"""gunicorn settings for the `web` process (Procfile). Environment: HOST, PORT,
WEB_CONCURRENCY, WEB_THREADS, PROMETHEUS_MULTIPROC_DIR.

Worker class: gthread. The API is I/O-bound (each request waits on PostgreSQL), so a few
threads per process overlap database round trips without gevent's monkey-patching (psycopg2
would block a gevent hub without psycogreen). Processes = WEB_CONCURRENCY (default: one per
core), threads = WEB_THREADS (default 4); each process's connection pool is sized by
DB_POOL_SIZE (default 10 >= threads)."""
import multiprocessing
import os
import shutil
import tempfile

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = 30
graceful_timeout = 30  # SIGTERM: in-flight requests get this long to finish
keepalive = 5
# gunicorn answers an over-long request line itself, in HTML; 8190 (its maximum) lets every
# schema-valid query (320-char email + cursor, percent-encoded) reach the app's JSON errors.
limit_request_line = 8190
max_requests = 0
control_socket_disable = True  # several gunicorns on one machine (tests, bench) must not collide
raw_env = ["TZ=UTC"]
accesslog = None  # the app writes one JSON line per request itself (credits_app/logs.py)
errorlog = "-"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "credits_app.logs.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    # gunicorn merges this over its defaults shallowly: name every logger its defaults name.
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {"gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
                "gunicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False}},
}

# Prometheus multiprocess mode: every worker writes samples to files in this directory,
# and /metrics in any worker aggregates them all. It must be set before the app imports
# prometheus_client, i.e. here in the master, and start empty.
_own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="credits-metrics-")


def on_starting(server):
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        os.remove(os.path.join(path, name))


def child_exit(server, worker):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
