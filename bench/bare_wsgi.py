"""The bare-WSGI floor for bench/http_bench.py: no framework, no auth, no validation beyond
what a request needs, no logging or metrics; a plain WSGI callable and a psycopg2 pool
running the SAME single statement per request as the service's hot path (the balance
SELECT, and ledger.postgres.statement() for add/deduct), prepared once per connection as the
service does (ledger.fast_path.Prepared), on the same URLs, under the same gunicorn settings:

    DATABASE_URL=postgresql://... gunicorn -c gunicorn.conf.py bench.bare_wsgi:app

A hold (POST /api/credits/<id>/holds) and its capture (POST /api/holds/<id>/capture) are one
transaction each of the service's own hold statements (ledger.holds), only those the work
needs, the same ones http_bench's pgbench hold script runs: lock the balance row, insert the
hold, add it to `held`; find the hold's user, lock the row, read the hold, take the capture
from `credits` and the hold from `held`, insert the capture entry, close the hold. Neither the
recording of overdue holds nor reading the hold again to answer with it.

It is a floor for the cost of "HTTP + Python + the statements' round trips", not a service."""
import json
import os
import re
import threading
from datetime import datetime, timezone

from psycopg2.pool import ThreadedConnectionPool
from sqlalchemy.dialects.postgresql.psycopg2 import dialect

from credits_app.ledger import holds
from credits_app.ledger.fast_path import Prepared
from credits_app.ledger.postgres import statement
from credits_app.ledger.reads import BALANCE as _BALANCE_STATEMENT

# The service's own statements, compiled to psycopg2's SQL and prepared as the service does.
_BALANCE = Prepared(str(_BALANCE_STATEMENT.compile(dialect=dialect())))
_CHANGE = {kind: Prepared(str(statement(kind, False).compile(dialect=dialect()))) for kind in ("add", "deduct")}
# The hold statements the work needs, in the order a hold and a capture run them.
HOLD_STATEMENTS = ("lock", "insert", "held", "owner", "hold", "capture", "entry", "close")
_HOLD = {name: Prepared(str(stmt.compile(dialect=dialect()))) for name, stmt in holds._stmts("postgresql").items()
         if name in HOLD_STATEMENTS}
HOLD_TTL_SECONDS = 900  # the service's default HOLD_DEFAULT_TTL_SECONDS
_prepared_on = {}  # connection -> names prepared there
_ROUTE = re.compile(r"^/api/credits/(\d+)(?:/(add|deduct|holds))?$")
_CAPTURE_ROUTE = re.compile(r"^/api/holds/(\d+)/capture$")
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


def _execute(cur, prepared, params):
    known = _prepared_on.setdefault(cur.connection, set())
    if prepared.name not in known:
        cur.execute(prepared.prepare)
        known.add(prepared.name)
    cur.execute(prepared.execute, params)


def _query(prepared, params):
    pool = _conn_pool()
    conn = pool.getconn()
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            _execute(cur, prepared, params)
            return cur.fetchone(), [d[0] for d in cur.description]
    finally:
        pool.putconn(conn)


def _transaction(work):
    """`work(run)` in one transaction, where `run(name, params)` runs a hold statement and
    returns its first row (None when it returns none). Rolled back when `work` answers an
    error (a (status, payload) pair whose status is not 2xx), committed otherwise."""
    pool = _conn_pool()
    conn = pool.getconn()
    try:
        conn.autocommit = False
        with conn.cursor() as cur:
            def run(name, params):
                _execute(cur, _HOLD[name], params)
                return cur.fetchone() if cur.description else None
            status, payload = work(run)
        if status.startswith("2"):
            conn.commit()
        else:
            conn.rollback()
        return status, payload
    except BaseException:
        conn.rollback()
        raise
    finally:
        pool.putconn(conn)


def _hold(run, uid, amount):
    row = run("lock", {"uid": uid})  # credits, held, last_updated
    if row is None:
        return "404 Not Found", {"error": "not_found"}
    if row[0] - row[1] < amount:
        return "409 Conflict", {"error": "refused", "balance": row[0], "held": row[1]}
    hold_id = run("insert", {"uid": uid, "amount": amount, "reason": None, "actor": "bare", "key": None,
                             "ttl": HOLD_TTL_SECONDS, "entry_id": None})[0]
    credits, held, _ = run("held", {"uid": uid, "amount": amount})
    return "201 Created", {"hold": {"hold_id": hold_id, "user_id": uid, "amount": amount, "status": "open"},
                           "user_id": uid, "credits": credits, "held": held, "available": credits - held}


def _capture(run, hold_id, amount):
    owner = run("owner", {"hid": hold_id})
    if owner is None:
        return "404 Not Found", {"error": "not_found"}
    uid = owner[0]
    run("lock", {"uid": uid})
    hold = run("hold", {"hid": hold_id})  # id, user_id, amount, status (as it is now), ...
    if hold[3] != "open" or amount > hold[2]:
        return "409 Conflict", {"error": "refused", "status": hold[3]}
    credits, held, at = run("capture", {"uid": uid, "amount": amount, "held": hold[2]})
    entry = run("entry", {"uid": uid, "delta": -amount, "balance": credits, "reason": None, "actor": "bare",
                          "key": None, "hid": hold_id, "at": at})
    run("close", {"hid": hold_id, "status": "captured", "captured": amount, "actor": "bare", "entry_id": entry[0],
                   "close_reason": None})
    return "200 OK", {"user_id": uid, "credits": credits, "held": held, "available": credits - held,
                      "entry": {"id": entry[0], "kind": "capture", "amount": -amount, "hold_id": hold_id}}


def _respond(start_response, status, payload):
    body = json.dumps(payload, default=str).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _body(environ):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return json.loads(environ["wsgi.input"].read(length))


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    match = _ROUTE.match(path)
    if not match:
        capture = _CAPTURE_ROUTE.match(path)
        if not capture:
            return _respond(start_response, "404 Not Found", {"error": "not_found"})
        amount = _body(environ)["amount"]
        return _respond(start_response, *_transaction(lambda run: _capture(run, int(capture.group(1)), amount)))
    uid, kind = int(match.group(1)), match.group(2)
    if kind is None:
        row, cols = _query(_BALANCE, {"uid": uid})
        if row is None:
            return _respond(start_response, "404 Not Found", {"error": "not_found"})
        return _respond(start_response, "200 OK", dict(zip(cols, row)))
    amount = _body(environ)["amount"]
    if kind == "holds":
        return _respond(start_response, *_transaction(lambda run: _hold(run, uid, amount)))
    params = {"uid": uid, "delta": amount if kind == "add" else -amount, "now": datetime.now(timezone.utc),
              "max_balance": 10**15, "kind": kind, "reason": None, "actor": "bare", "key": None, "hash": None,
              "low_default": 0}
    row, cols = _query(_CHANGE[kind], params)
    result = dict(zip(cols, row))
    if result["id"] is None:
        return _respond(start_response, "409 Conflict", {"error": "refused", "balance": result["current_balance"]})
    return _respond(start_response, "200 OK", {"user_id": uid, "credits": result["balance_after"],
                                               "entry": {k: result[k] for k in cols[2:]}})
