"""gunicorn settings for the `web` process (Procfile). Environment: HOST, PORT,
WEB_CONCURRENCY, WEB_THREADS, WEB_REUSE_PORT, PROMETHEUS_MULTIPROC_DIR.

Worker class gthread, one process per core, 4 threads each: chosen by measurement
(bench/http_bench.py, 2 cores, concurrency 32; STACK-NOTES for sync/gevent):
- one listening socket shared by the workers (WEB_REUSE_PORT=false, the default): with a
  socket per worker (reuse_port) the kernel spreads connections evenly, but the connections
  waiting in a worker's own queue are reset when that worker dies or restarts (a SIGKILL
  test saw it), while a shared queue is served by the siblings. The price: a worker that
  wakes first can take most of a burst of long-lived connections (the bare floor served
  1,969 reads/s at 106% CPU instead of ~3,300), so the benchmark sets WEB_REUSE_PORT=true
  for the floor and the service alike;
- processes x threads: 2x4, 4x2, 3x4 and 4x4 served 1,309-1,591 reads/s, 813-967 adds/s and
  737-984 hot-user deducts/s, differences inside one machine's run-to-run noise (a second
  2x8 run: no better for writes, worse for reads); more processes than cores add memory and
  connections, not throughput, so processes = cores. Re-measured after the hot path's CPU
  per request fell by a further ~15% (limiter off, each target's median of 2 rounds): 2x8
  gave adds 54% of the floor against 57% for 2x4 and reads 60% against 57%, inside the
  noise; 4x4 fell behind (adds 50%, a 391 ms p99 on reads). A 1 ms GIL switch interval
  (instead of 5 ms) helped writes a little (56% vs 53%) and cost reads (47% vs 60%): the
  default stays;
- threads = 4: enough to keep a process busy while requests wait on PostgreSQL (a change
  waits for its WAL flush) and Redis; more threads queue on the GIL. The bare-WSGI floor,
  which is not CPU-bound, is limited on writes by 2x4 = 8 commits in flight (group commit),
  so a deployment with spare CPU should raise WEB_THREADS (and DB_POOL_SIZE with it);
- not gevent: psycopg2 blocks the hub without psycogreen (STACK-NOTES), and it would not
  help a CPU-bound process; not sync: one request per process stalls on every round trip.
Each process's connection pool is DB_POOL_SIZE (default 10). Each thread keeps one pooled
connection for the hot path, up to half the pool (credits_app/thread_connections.py;
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
accesslog = None  # the app writes one JSON line per request itself (credits_app/logs.py)
errorlog = "-"


class NoAccessLog(Logger):
    """gunicorn writes an access line whenever a logconfig_dict is set, accesslog or not: a
    second line per request (and ~8% of a worker's CPU) beside the app's own."""

    def access(self, resp, req, environ, request_time):
        pass


logger_class = NoAccessLog

# What gunicorn's parser refuses (a malformed request line or header, an over-long URI, a
# bad chunk) never reaches the app, and gunicorn answers it with an HTML page. Answer in the
# app's one error shape instead. gunicorn calls util.write_error from its worker at the time
# of the error, so replacing it here (in the master, before the workers fork) covers them.
def _json_wire_error(sock, status_int, reason, mesg):
    from credits_app.errors import HTTP_CODES, error_body
    body = json.dumps(error_body(HTTP_CODES.get(status_int, "bad_request"), f"the HTTP request was refused: {reason}",
                                 {"reason": str(mesg)[:200]} if mesg else None)).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-ID: {uuid.uuid4().hex}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


util.write_error = _json_wire_error
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
    # The worker has built the app: move what start-up allocated (~130,000 objects) into
    # the permanent generation. Otherwise every full collection walks them all, a ~56 ms
    # pause of every thread in the worker about once per 20,000 requests (measured in
    # process): a latency spike for whatever was in flight.
    gc.freeze()
    # The request log is written by a thread of its own (credits_app/logs.py says why).
    from credits_app import logs
    logs.write_in_background()


def worker_exit(server, worker):
    import logging

    from credits_app import logs
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
