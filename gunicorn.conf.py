"""gunicorn settings for the `web` process (Procfile). Environment: HOST, PORT,
WEB_CONCURRENCY, WEB_THREADS, WEB_REUSE_PORT, PROMETHEUS_MULTIPROC_DIR.

Worker class gthread, one process per core, 4 threads each (docs/benchmarks.md, "Figures
behind code choices", has the measurements):
- one listening socket shared by the workers (WEB_REUSE_PORT=false, the default): with a
  socket per worker (reuse_port) the kernel spreads connections evenly, but the connections
  waiting in a worker's own queue are reset when that worker dies or restarts, while a
  shared queue is served by the siblings. The price: a worker that wakes first can take
  most of a burst of long-lived connections, so the benchmark sets WEB_REUSE_PORT=true for
  the floor and the service alike;
- processes = cores: more processes than cores add memory and connections, not
  throughput. Python's default GIL switch interval stays: a shorter one gains less on
  writes than it costs on reads;
- threads = 4: enough to keep a process busy while requests wait on PostgreSQL (a change
  waits for its WAL flush) and Redis; more threads queue on the GIL. Where CPU is to spare,
  writes are bounded by the commits in flight (processes x threads), so a deployment with
  spare CPU should raise WEB_THREADS (and DB_POOL_SIZE with it);
- not gevent: psycopg2 blocks the hub without psycogreen, and gevent would not help a
  CPU-bound process; not sync: one request per process stalls on every round trip.
Each process's connection pool is DB_POOL_SIZE (default 10). Each thread keeps one pooled
connection for the hot path, up to half the pool (credits_app/ledger/thread_connections.py;
threads beyond that check out per request), so raise DB_POOL_SIZE to 2 x WEB_THREADS."""
import gc
import json
import multiprocessing
import os
import shutil
import tempfile
import uuid

from gunicorn import util
from gunicorn.glogging import Logger

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = 30
graceful_timeout = 30  # SIGTERM: in-flight requests get this long to finish
keepalive = 5
reuse_port = os.environ.get("WEB_REUSE_PORT", "false").lower() in ("1", "true", "yes")  # see above
# gunicorn answers an over-long request line itself, in HTML; 8190 (its maximum) lets every
# schema-valid query (320-char email + cursor, percent-encoded) reach the app's JSON errors.
limit_request_line = 8190
max_requests = 0
control_socket_disable = True  # several gunicorns on one machine (tests, bench) must not collide
raw_env = ["TZ=UTC"]
accesslog = None  # the app writes one JSON line per request itself (credits_app/web/logs.py)
errorlog = "-"


class NoAccessLog(Logger):
    """gunicorn writes an access line whenever a logconfig_dict is set, accesslog or not: a
    second line per request beside the app's own, paid for in the worker's CPU."""

    def access(self, resp, req, environ, request_time):
        pass


logger_class = NoAccessLog

# What gunicorn's parser refuses (a malformed request line or header, an over-long URI, a
# bad chunk) never reaches the app, and gunicorn answers it with an HTML page. Answer in the
# app's one error shape instead. gunicorn calls util.write_error from its worker at the time
# of the error, so replacing it here (in the master, before the workers fork) covers them.
def _json_wire_error(sock, status_int, reason, mesg):
    from credits_app.web.errors import HTTP_CODES, error_body
    body = json.dumps(error_body(HTTP_CODES.get(status_int, "bad_request"), f"the HTTP request was refused: {reason}",
                                 {"reason": str(mesg)[:200]} if mesg else None)).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-ID: {uuid.uuid4().hex}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


util.write_error = _json_wire_error
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "credits_app.web.logs.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    # gunicorn merges this over its defaults shallowly: name every logger its defaults name.
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {"gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
                "gunicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False}},
}

# Prometheus multiprocess mode: every worker writes samples to files in this directory,
# and /metrics in any worker aggregates them all. It must be set before the app imports
# prometheus_client, i.e. here in the master, and start empty.
# gunicorn reads this file again on SIGHUP, when the variable is set (by us): the marker
# says the directory is still ours to remove at exit.
_own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ or os.environ.get("CREDITS_OWN_METRICS_DIR") == "1"
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="credits-metrics-")
    os.environ["CREDITS_OWN_METRICS_DIR"] = "1"


def on_starting(server):
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        os.remove(os.path.join(path, name))


def post_worker_init(worker):
    # The worker has built the app: move what start-up allocated into the permanent
    # generation. Otherwise every full collection walks all of it, pausing every thread in
    # the worker: a latency spike for whatever is in flight.
    gc.freeze()
    # The request log is written by a thread of its own (credits_app/web/logs.py says why).
    from credits_app.web import logs
    logs.write_in_background()


def worker_exit(server, worker):
    import logging

    from credits_app.web import logs
    for handler in logging.getLogger("credits").handlers:
        if isinstance(handler, logs.BackgroundStreamHandler):
            # What the writer thread has not written yet; not forever: a stalled stderr must
            # not hold the exit.
            handler.flush(timeout=5)


def child_exit(server, worker):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
