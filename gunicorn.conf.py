"""gunicorn settings for the `web` process (Procfile). Environment: PORT, WEB_CONCURRENCY,
WEB_THREADS. The API is I/O-bound (each request waits on PostgreSQL), so threads per worker
let one process overlap several database round trips."""
import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = 30
graceful_timeout = 30
keepalive = 5
control_socket_disable = True  # several gunicorns on one machine (tests, bench) must not collide
raw_env = ["TZ=UTC"]
