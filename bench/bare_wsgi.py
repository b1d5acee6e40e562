"""The bare-WSGI floor for bench/http_bench.py: no framework, no auth, no validation beyond
what a request needs, no logging or metrics; a plain WSGI callable and a psycopg2 pool
running the SAME single statement per request as the service's hot path (the balance
SELECT, and ledger.postgres.statement() for add/deduct), prepared once per connection as the
service does (ledger.fast_path.Prepared), on the same URLs, under the same gunicorn settings:

    DATABASE_URL=postgresql://... gunicorn -c gunicorn.conf.py bench.bare_wsgi:app

It is a floor for the cost of "HTTP + Python + one round trip", not a service."""
import json
import os
import re
import threading
from datetime import datetime, timezone

from psycopg2.pool import ThreadedConnectionPool
from sqlalchemy.dialects.postgresql.psycopg2 import dialect

from credits_app.ledger.fast_path import Prepared
from credits_app.ledger.postgres import statement
from credits_app.ledger.reads import BALANCE as _BALANCE_STATEMENT

# The service's own statements, compiled to psycopg2's SQL and prepared as the service does.
_BALANCE = Prepared(str(_BALANCE_STATEMENT.compile(dialect=dialect())))
_CHANGE = {kind: Prepared(str(statement(kind, False).compile(dialect=dialect()))) for kind in ("add", "deduct")}
_prepared_on = {}  # connection -> names prepared there
_ROUTE = re.compile(r"^/api/credits/(\d+)(?:/(add|deduct))?$")
_THREADS = int(os.environ.get("WEB_THREADS", "4"))

_pool = None
_pool_lock = threading.Lock()


def _conn_pool():
    # Created lazily in each gunicorn worker (never across the fork).
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                # minconn = maxconn: psycopg2's pool closes a returned connection beyond
                # minconn, which would cost a new backend per request.
                _pool = ThreadedConnectionPool(_THREADS, _THREADS, os.environ["DATABASE_URL"])
    return _pool


def _query(prepared, params):
    pool = _conn_pool()
    conn = pool.getconn()
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            known = _prepared_on.setdefault(conn, set())
            if prepared.name not in known:
                cur.execute(prepared.prepare)
                known.add(prepared.name)
            cur.execute(prepared.execute, params)
            return cur.fetchone(), [d[0] for d in cur.description]
    finally:
        pool.putconn(conn)


def _respond(start_response, status, payload):
    body = json.dumps(payload, default=str).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    match = _ROUTE.match(environ.get("PATH_INFO", ""))
    if not match:
        return _respond(start_response, "404 Not Found", {"error": "not_found"})
    uid, kind = int(match.group(1)), match.group(2)
    if kind is None:
        row, cols = _query(_BALANCE, {"uid": uid})
        if row is None:
            return _respond(start_response, "404 Not Found", {"error": "not_found"})
        return _respond(start_response, "200 OK", dict(zip(cols, row)))
    length = int(environ.get("CONTENT_LENGTH") or 0)
    amount = json.loads(environ["wsgi.input"].read(length))["amount"]
    params = {"uid": uid, "delta": amount if kind == "add" else -amount, "now": datetime.now(timezone.utc),
              "max_balance": 10**15, "kind": kind, "reason": None, "actor": "bare", "key": None, "hash": None}
    row, cols = _query(_CHANGE[kind], params)
    result = dict(zip(cols, row))
    if result["id"] is None:
        return _respond(start_response, "409 Conflict", {"error": "refused", "balance": result["current_balance"]})
    return _respond(start_response, "200 OK", {"user_id": uid, "credits": result["balance_after"],
                                               "entry": {k: result[k] for k in cols[2:]}})
