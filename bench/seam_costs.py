"""What each speed seam saves, one at a time: the stock way and the seam's way timed side by
side in one process, as many times as one request does it. A figure to set against a
request's CPU (bench/profile_hot_path.py), where a seam must earn 3% to stay
(docs/stock.md). Not a test: it prints figures and asserts nothing.

    .venv/bin/python bench/seam_costs.py [--number 20000]
"""
import argparse
import json
import logging
import os
import sys
import timeit
import uuid
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from flask import Flask, request  # noqa: E402
from prometheus_client import CollectorRegistry, Counter  # noqa: E402

from credits_app import create_app  # noqa: E402
from credits_app.api.common import Blueprint  # noqa: E402
from credits_app.api.schemas import AmountIn, ChangeOut, change_json  # noqa: E402
from credits_app.ledger import Change, Entry  # noqa: E402

# How often one credit change does each thing (counted in the code paths of a POST .../add).
PER_REQUEST = {"ensure_sync": 16, "proxy_reads": 30}


def _quick_load(data):
    """The shortcut AmountIn once had: load()'s answer for a plain valid body."""
    amount, reason = data.get("amount"), data.get("reason")
    if type(amount) is int and amount >= 1 and set(data) <= {"amount", "reason"} and (
            reason is None or (type(reason) is str and len(reason) <= 500 and "\x00" not in reason)):
        return {"amount": amount, "reason": reason}
    return None


def timed(fn, number):
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=20000)
    n = parser.parse_args().number
    app = create_app({"DATABASE_URL": "sqlite:///:memory:", "JWT_SECRET_KEY": "x" * 40})
    rows = []

    def row(name, stock, seam, times=1, kept=True):
        rows.append((name, timed(stock, n) * times, timed(seam, n) * times, kept))

    body = {"amount": 5, "reason": "publish"}
    entry = Entry(1, 2, "add", 5, 105, "publish", "svc", None, None, datetime.now(timezone.utc))
    change = Change(entry)
    with app.test_request_context("/api/credits/2/add", method="POST", json=body,
                                  headers={"Authorization": "Bearer abc"}):
        def hook():
            return None
        remembered = {hook}
        row(f"ensure_sync x{PER_REQUEST['ensure_sync']}: asked vs remembered", lambda: Flask.ensure_sync(app, hook),
            lambda: hook if hook in remembered else None, PER_REQUEST["ensure_sync"], kept=False)
        req = request._get_current_object()
        row(f"attribute reads x{PER_REQUEST['proxy_reads']}", lambda: request.path,
            lambda: req.path, PER_REQUEST["proxy_reads"])
        row("argument schema: class per request vs instance", lambda: AmountIn(), lambda: None)
        schema = AmountIn()
        row("AmountIn: marshmallow load vs a hand-written check", lambda: schema.load(body),
            lambda: _quick_load(body), kept=False)
        dumper = ChangeOut()
        row("change answer: ChangeOut.dump vs change_json", lambda: dumper.dump(change),
            lambda: change_json(change))
        # Seams judged and removed, for the record: what the stock way costs more.
        encoder = json.JSONEncoder(separators=(",", ":"))
        payload = change_json(change)
        row("JSON answer: json.dumps per answer vs one encoder",
            lambda: json.dumps(payload, separators=(",", ":")), lambda: encoder.encode(payload), kept=False)
        row("3 headers: request.headers.get vs environ", lambda: (
            request.headers.get("X-Request-ID"), request.headers.get("Authorization"),
            request.headers.get("Idempotency-Key")), lambda: (
            req.environ.get("HTTP_X_REQUEST_ID"), req.environ.get("HTTP_AUTHORIZATION"),
            req.environ.get("HTTP_IDEMPOTENCY_KEY")), kept=False)
        strict = Blueprint.ARGUMENTS_PARSER
        row("parser: request proxy vs object", lambda: strict.parse(schema, location="json"),
            lambda: strict.parse(schema, req=req, location="json"), kept=False)
        batch = os.urandom(16 * 256).hex()  # drawn once per 256 ids: its share is left out
        row("request id: uuid4().hex vs a slice of a batch (kept for the GIL)", lambda: uuid.uuid4().hex,
            lambda: batch[64:96])
        registry = CollectorRegistry()
        counter = Counter("c", "c", ["a", "b", "c"], registry=registry)
        child = counter.labels("GET", "/api/credits/<int:user_id>", "200")
        row("metrics: 3 x labels() vs remembered children",
            lambda: counter.labels("GET", "/api/credits/<int:user_id>", "200"), lambda: child, 3, kept=False)
        now = datetime.now(timezone.utc).timestamp()
        second = datetime.fromtimestamp(int(now), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        row("log timestamp: isoformat per line vs the second's text kept",
            lambda: datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds"),
            lambda: f"{second}.{int(now % 1 * 1000):03d}+00:00", kept=False)
        logger = logging.getLogger("seam-costs")
        row("log line: the caller's frame searched vs not", lambda: logger.findCaller(), lambda: None, kept=False)
    print(f"µs per request, stock vs seam (min of 5 x {n:,}):")
    print(f"  {'seam':<52}{'stock':>8}{'seam':>8}{'saves':>8}  status")
    for name, stock, seam, kept in rows:
        print(f"  {name:<52}{stock:>8.1f}{seam:>8.1f}{stock - seam:>8.1f}  {'kept' if kept else 'removed'}")


if __name__ == "__main__":
    main()
