"""Prometheus metrics at /metrics.

Counters and histograms are recorded at the HTTP edge (no code below the blueprints knows
about metrics). Under gunicorn with several workers, PROMETHEUS_MULTIPROC_DIR (set by
gunicorn.conf.py) makes every worker write its samples to files that any worker's /metrics
aggregates. State that lives elsewhere — the last daily grant, queue depth, failed jobs —
is read from its source at scrape time, so it is right whichever process did the work."""
import os
import time

from flask import Response, current_app, g, request
from flask_smorest import Blueprint
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest,
                               multiprocess)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import text

from ..extensions import db, openapi
from ..redis_client import redis_client
from ..types import UTCDateTime

REQUESTS = Counter("credits_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("credits_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
OPERATIONS = Counter("credits_operations_total", "Credit changes by kind and outcome", ["kind", "outcome"])
INSUFFICIENT = Counter("credits_insufficient_credits_total", "Deducts refused for insufficient credits")

_CREDIT_KINDS = {"credits.add": "add", "credits.deduct": "deduct", "credits.reset": "reset",
                 "credits.reverse": "reversal", "holds.create": "hold", "holds.capture": "capture",
                 "holds.release": "release"}

blp = Blueprint("metrics", __name__, description="Prometheus metrics (no token needed)")


def _outcome(response):
    if response.headers.get("Idempotent-Replayed"):  # a replayed change or refusal took no effect now
        return "replayed"
    if response.status_code in (200, 201):
        return "ok"
    return {409: "refused", 404: "not_found", 401: "unauthorized", 403: "forbidden", 429: "rate_limited"}.get(
        response.status_code, "invalid" if response.status_code < 500 else "error")


def _before():
    g.started = time.perf_counter()


_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def _after(response):
    started = g.pop("started", None)
    if started is None:
        return response
    req = request._get_current_object()  # behind the proxy, once (docs/stock.md, 5)
    route = req.url_rule.rule if req.url_rule else "unmatched"
    method = req.method if req.method in _METHODS else "other"  # a label per invented verb would grow forever
    REQUESTS.labels(method, route, str(response.status_code)).inc()
    LATENCY.labels(method, route).observe(time.perf_counter() - started)
    kind = _CREDIT_KINDS.get(req.endpoint)
    if kind:
        outcome = _outcome(response)
        OPERATIONS.labels(kind, outcome).inc()
        if kind == "deduct" and outcome == "refused" and b"insufficient_credits" in response.get_data()[:200]:
            INSUFFICIENT.inc()
    return response


class StateCollector:
    """Gauges read at scrape time from PostgreSQL/SQLite and Redis."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        yield from self._daily_grant()
        yield from self._queue()

    def _daily_grant(self):
        success = GaugeMetricFamily("credits_daily_grant_last_success_timestamp_seconds",
                                    "When the last completed daily grant finished (unix time)")
        duration = GaugeMetricFamily("credits_daily_grant_last_duration_seconds", "Duration of the last completed grant")
        users = GaugeMetricFamily("credits_daily_grant_last_users_credited", "Users credited by the last completed grant")
        failed = GaugeMetricFamily("credits_daily_grant_failed_runs",
                                   "Daily-grant runs whose chunk failed its last retry and that are not finished yet")
        try:
            with db.engine.connect() as conn:
                row = conn.execute(text("SELECT started_at, finished_at, users_credited FROM daily_grant_runs "
                                        "WHERE status = 'done' ORDER BY grant_date DESC LIMIT 1")
                                   .columns(started_at=UTCDateTime, finished_at=UTCDateTime)).first()
                failed_runs = conn.execute(text("SELECT count(*) FROM daily_grant_runs "
                                                "WHERE status = 'failed'")).scalar()
        except Exception:  # no table yet, database down: report nothing rather than fail the scrape
            row = failed_runs = None
        if row is not None:
            success.add_metric([], row.finished_at.timestamp())
            duration.add_metric([], (row.finished_at - row.started_at).total_seconds())
            users.add_metric([], row.users_credited)
        if failed_runs is not None:
            failed.add_metric([], failed_runs)
        yield from (success, duration, users, failed)

    def _queue(self):
        up = GaugeMetricFamily("credits_redis_up", "1 if Redis answered the scrape")
        depth = GaugeMetricFamily("credits_queue_depth", "Jobs waiting in the RQ queue", labels=["queue"])
        failed = GaugeMetricFamily("credits_queue_failed_jobs", "Jobs in the RQ failed-job registry", labels=["queue"])
        client = redis_client()
        if client is not None:
            from rq import Queue
            name = current_app.config.get("RQ_QUEUE", "credits")
            try:
                queue = Queue(name, connection=client)
                depth.add_metric([name], queue.count)
                failed.add_metric([name], queue.failed_job_registry.count)
                up.add_metric([], 1)
            except Exception:  # Redis down: say so instead of failing the scrape
                up.add_metric([], 0)
        yield from (up, depth, failed)


@blp.route("/metrics", methods=["GET"])
@blp.doc(security=[])
@blp.response(200, {"type": "string"}, content_type=CONTENT_TYPE_LATEST,
              description="the Prometheus text exposition format")
def metrics():
    """Request counters and latencies, credit operations, the last daily grant, the queue."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY
        registry = REGISTRY
    body = generate_latest(registry)
    body += generate_latest(_state_registry())
    return Response(body, content_type=CONTENT_TYPE_LATEST)


def _state_registry():
    registry = CollectorRegistry()
    registry.register(StateCollector(current_app))
    return registry


def init_app(app):
    app.before_request(_before)
    app.after_request(_after)
    openapi.register_blueprint(blp)  # through the Api (initialised first), so the document shows /metrics
