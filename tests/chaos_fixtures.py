"""Helpers and fixtures for the chaos, soak and wire-level tests: a PostgreSQL cluster of the
test's own (so stopping it never touches the session's shared one), gunicorn exactly as the
Procfile runs it, a small HTTP client that never raises on an HTTP status, and process
helpers (gunicorn workers, RSS)."""
import http.client
import json
import os
import socket
import time

import psutil
import psycopg2
import pytest

from tests.conftest import TEST_SECRET, _migrate, make_app, token_for
from tests.redis_fixtures import wait_for
from tests.services import Postgres, Web


class ChaosPostgres(Postgres):
    """A throwaway cluster for outage tests, with synchronous commits: the shared test
    cluster's synchronous_commit=off loses commits it already acknowledged when the server
    is killed (`pg_ctl stop -m immediate`), which the first run of the outage test caught as
    "answered 200, not in the ledger". fsync stays off: the tests kill the server, never the
    operating system. (Postgres keeps its settings in postgresql.conf, so restart() comes
    back on the same port.)"""

    def __init__(self):
        super().__init__(durable=True, extra=["-c fsync=off"])

    def connections(self, dbname, application_name="credits"):
        """Client connections the service holds open on `dbname` (pg_stat_activity)."""
        with psycopg2.connect(self.url("postgres")) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                        (dbname, application_name))
            count = cur.fetchone()[0]
        conn.close()
        return count


@pytest.fixture
def own_pg():
    """A PostgreSQL cluster for this test alone, with a migrated database `credits`."""
    server = ChaosPostgres().start()
    try:
        server.createdb("credits")
        _migrate(server.url("credits"))
        yield server
    finally:
        server.destroy()


def stack_env(database_url, **extra):
    """The environment of every service process in these tests."""
    env = {"DATABASE_URL": database_url, "JWT_SECRET_KEY": TEST_SECRET, "TESTING": "true",
           "RATELIMIT_ENABLED": "false", "TZ": "UTC"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def tokens_for(database_url, *roles):
    app = make_app(database_url)
    return [token_for(app, role, sub=f"chaos-{role}") for role in roles]


class Api:
    """A minimal HTTP client for a live server: one connection per call (so a killed worker
    costs one request, not a pooled socket), JSON in and out, never raises on a status.
    Network failures come back as status None with the exception's name."""

    def __init__(self, base_url, token=None, timeout=60):
        host, port = base_url.rsplit("/", 1)[-1].split(":")
        self.host, self.port, self.token, self.timeout = host, int(port), token, timeout

    def call(self, method, path, body=None, key=None, headers=None, raw=None):
        h = {"Content-Type": "application/json", **(headers or {})}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        if key is not None:
            h["Idempotency-Key"] = key
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=data, headers=h)
            resp = conn.getresponse()
            payload = resp.read()
            status, resp_headers = resp.status, dict(resp.getheaders())
        except (OSError, http.client.HTTPException) as e:
            return Reply(None, {"exception": type(e).__name__, "detail": str(e)[:200]}, {})
        finally:
            conn.close()
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = payload.decode(errors="replace")
        return Reply(status, parsed, resp_headers)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)

    def patch(self, path, body=None, **kw):
        return self.call("PATCH", path, body, **kw)


class Reply:
    def __init__(self, status, body, headers):
        self.status, self.body, self.headers = status, body, headers

    @property
    def error_code(self):
        return self.body["error"]["code"] if isinstance(self.body, dict) and "error" in self.body else None

    def __repr__(self):
        return f"Reply({self.status}, {str(self.body)[:200]})"


def is_error_shape(reply):
    """The one JSON error shape of DESIGN.md."""
    return (isinstance(reply.body, dict) and set(reply.body) == {"error"}
            and set(reply.body["error"]) == {"code", "message", "details"})


def gunicorn_workers(web):
    """PIDs of the gunicorn worker processes (children of the master)."""
    try:
        return [p.pid for p in psutil.Process(web.proc.pid).children() if p.status() != psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


def rss_mib(pid):
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.NoSuchProcess:
        return None


def wait_until(condition, what, timeout=60, every=0.1):
    """Poll `condition` until truthy; the bound only stops a hung test and is stated in the
    failure message. It is never the assertion itself."""
    return wait_for(condition, f"{what} (generous bound: {timeout} s)", timeout=timeout, every=every)


def web_log_tail(web, chars=4000):
    try:
        with open(web.log_path) as f:
            return f.read()[-chars:]
    except OSError:
        return ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


__all__ = ["Api", "ChaosPostgres", "Reply", "Web", "gunicorn_workers", "is_error_shape", "own_pg", "rss_mib",
           "stack_env", "tokens_for", "wait_until", "web_log_tail", "free_port", "os"]


# --- keyed traffic whose every outcome can be checked against the ledger --------------------

SETTLED = (200, 409)  # the request's outcome is known: it took effect, or it was refused


class KeyedTraffic:
    """Client threads sending add / deduct / reset to a few hot users, every request with its
    own Idempotency-Key, and recording every answer. After faults, `settle()` retries each
    request whose outcome is unknown (5xx, dropped connection) with the SAME key and body,
    as a well-behaved client would; `check_books()` then proves that the ledger holds exactly
    the requests answered 2xx, once each, and nothing for those answered 409."""

    def __init__(self, api, users, seed=0, ops=("add", "add", "deduct", "deduct", "reset"), max_amount=20):
        import random
        import threading
        self.api, self.users, self.ops, self.max_amount = api, list(users), ops, max_amount
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = {}  # key -> dict(op, user, amount, answers=[Reply...])
        self.counter = 0
        self.stopped = threading.Event()

    def _next(self, thread_name):
        with self.lock:
            self.counter += 1
            op = self.rng.choice(self.ops)
            user = self.rng.choice(self.users)
            amount = self.rng.randint(1, self.max_amount)
            key = f"{thread_name}-{self.counter}"
            self.requests[key] = {"op": op, "user": user, "amount": amount, "answers": []}
        return key

    def seed(self, user, amount):
        """A keyed add recorded like the traffic's own requests (for starting balances)."""
        key = f"seed-{user}-{amount}"
        self.requests[key] = {"op": "add", "user": user, "amount": amount, "answers": []}
        return self.send(key)

    def send(self, key):
        req = self.requests[key]
        if req["op"] == "reset":
            reply = self.api.patch(f"/api/credits/{req['user']}/reset", {}, key=key)
        else:
            reply = self.api.post(f"/api/credits/{req['user']}/{req['op']}", {"amount": req["amount"]}, key=key)
        with self.lock:
            req["answers"].append(reply)
        return reply

    def run(self, threads=6, duration=None, requests_per_thread=None, pause=0.0):
        """Run client threads until `duration` seconds pass, each sent `requests_per_thread`,
        or stop() is called. Returns when all threads are done."""
        import threading
        deadline = time.monotonic() + duration if duration else None

        def client(name):
            sent = 0
            while not self.stopped.is_set():
                if deadline and time.monotonic() > deadline:
                    return
                if requests_per_thread is not None and sent >= requests_per_thread:
                    return
                self.send(self._next(name))
                sent += 1
                if pause:
                    time.sleep(pause)

        workers = [threading.Thread(target=client, args=(f"t{i}",), daemon=True) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def start_background(self, **kwargs):
        import threading
        thread = threading.Thread(target=self.run, kwargs=kwargs, daemon=True)
        thread.start()
        return thread

    def statuses(self):
        from collections import Counter
        return Counter(a.status for r in self.requests.values() for a in r["answers"])

    def unsettled(self):
        return [k for k, r in self.requests.items() if r["answers"][-1].status not in SETTLED]

    def settle(self, rounds=30, pause=0.5):
        """Retry every request whose outcome is unknown, with its own key, until each has an
        answer (a replay of the original outcome, or the first one). Bounded."""
        for _ in range(rounds):
            todo = self.unsettled()
            if not todo:
                return
            for key in todo:
                self.send(key)
            time.sleep(pause)
        raise AssertionError(f"{len(self.unsettled())} requests never got a 200/409 after {rounds} retries: "
                             f"{[self.requests[k]['answers'][-1] for k in self.unsettled()[:5]]}")

    def check_books(self, database_url, actor):
        """The ledger holds exactly one entry per request answered 200 (the entry that answer
        returned), none for a request answered 409, no entry of `actor` without a key;
        every balance is >= 0 and equals the sum of its ledger. Returns the summary."""
        from credits_app import ledger
        from credits_app.extensions import db
        from sqlalchemy import text

        app = make_app(database_url)
        with app.app_context():
            with db.engine.connect() as conn:
                rows = conn.execute(text("SELECT idempotency_key, id, user_id, amount, kind FROM ledger_entries "
                                         "WHERE actor = :a"), {"a": actor}).all()
                balances = dict(conn.execute(text("SELECT user_id, credits FROM credits")).all())
            drift = ledger.verify()
            db.engine.dispose()
        by_key = {}
        for key, entry_id, user, amount, kind in rows:
            assert key is not None, f"a ledger entry of {actor} without its Idempotency-Key (id {entry_id})"
            assert key not in by_key, f"key {key} took effect twice"
            by_key[key] = (entry_id, user, amount, kind)
        ok = refused = 0
        for key, req in self.requests.items():
            final = req["answers"][-1]
            assert final.status in SETTLED, f"{key} unsettled: {final}"
            # Every answer the client got for this key is the same outcome (replays included).
            settled = [a for a in req["answers"] if a.status in SETTLED]
            assert len({a.status for a in settled}) == 1, f"{key} answered both 200 and 409: {settled}"
            if final.status == 200:
                ok += 1
                assert key in by_key, f"{key} answered 200 but is not in the ledger (lost change)"
                entry_ids = {a.body["entry"]["id"] for a in settled}
                assert entry_ids == {by_key[key][0]}, f"{key}: answers name entries {entry_ids}, ledger has {by_key[key]}"
                assert by_key[key][3] == req["op"] and by_key[key][1] == req["user"]
            else:
                refused += 1
                assert key not in by_key, f"{key} answered 409 but changed the ledger: {by_key[key]}"
        assert len(by_key) == ok, f"{len(by_key) - ok} ledger entries answer no 200 request"
        assert drift == [], f"invariant 2: balances drifted from the ledger: {drift}"
        assert all(b >= 0 for b in balances.values()), f"invariant 1: negative balance {balances}"
        replayed = sum(1 for r in self.requests.values() for a in r["answers"]
                       if a.headers.get("Idempotent-Replayed") == "true")
        return {"ok": ok, "refused": refused, "replayed": replayed, "requests": len(self.requests),
                "answers": sum(len(r["answers"]) for r in self.requests.values())}
