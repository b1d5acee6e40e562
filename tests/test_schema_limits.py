"""An external schema update is bounded as a whole: in statements, in time, and above all in
how long the service's traffic can wait behind its locks. Real PostgreSQL, real threads,
through the HTTP API. Latencies are asserted against the lock timeout only: that is the
correctness bound the service promises (no assertion on speed otherwise)."""
import itertools
import threading
import time

import psycopg2
import pytest
import requests

from credits_app import config
from credits_app.config import ConfigError
from tests.conftest import LiveServer, client_as, new_user, token_for
from tests.test_schema_hostile import psql, refused
from tests.test_schema_updates import _wait_until, _waiting, apply, catalog, changes, dsn, query

LOCK_TIMEOUT_MS = 2000  # the default


@pytest.fixture
def admin(pg_app):
    return client_as(pg_app, "admin")


def test_limits_are_validated():
    base = {"TESTING": "1"}
    loaded = config.load(base, "/i")
    assert (loaded["SCHEMA_LOCK_TIMEOUT_MS"], loaded["SCHEMA_STATEMENT_TIMEOUT_MS"], loaded["SCHEMA_UPDATE_TIMEOUT_MS"],
            loaded["SCHEMA_MAX_STATEMENTS"], loaded["SCHEMA_MAX_TABLE_INDEXES"]) == (2000, 20000, 25000, 100, 10)
    for env, variable in (({"SCHEMA_UPDATE_TIMEOUT_MS": "1000"}, "SCHEMA_UPDATE_TIMEOUT_MS"),
                          ({"SCHEMA_LOCK_TIMEOUT_MS": "30000"}, "SCHEMA_UPDATE_TIMEOUT_MS"),
                          ({"SCHEMA_MAX_STATEMENTS": "0"}, "SCHEMA_MAX_STATEMENTS"),
                          ({"SCHEMA_MAX_TABLE_INDEXES": "many"}, "SCHEMA_MAX_TABLE_INDEXES")):
        with pytest.raises(ConfigError, match=variable):
            config.load({**base, **env}, "/i")


def test_the_number_of_statements_is_capped(pg_app, admin):
    # One ALTER on users, then 120 indexes: each statement within its timeouts, the whole far too long.
    script = "ALTER TABLE users ADD COLUMN tier varchar(20);\n" + \
        ";\n".join(f"CREATE INDEX ix_{i} ON users (tier)" for i in range(120))
    before = catalog(pg_app)
    for dry_run in (True, False):
        error = refused(apply(admin, script, dry_run=dry_run), "CREATE INDEX ix_99 ON users (tier)", 100)
        assert "at most 100 statements (SCHEMA_MAX_STATEMENTS)" in error["message"]
    assert catalog(pg_app) == before and changes(pg_app) == []


@pytest.fixture
def blocked(pg_app, admin):
    """Tables `a` and `b` (operators' own), each with a transaction holding a lock that
    CREATE INDEX waits for; `release(name)` commits one."""
    assert apply(admin, "CREATE TABLE a (x int); CREATE TABLE b (x int)").status_code == 200
    holders = {}
    for table in ("a", "b"):
        conn = holders[table] = psycopg2.connect(dsn(pg_app))
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {table} VALUES (1)")  # ROW EXCLUSIVE: CREATE INDEX needs SHARE
    watcher = psycopg2.connect(dsn(pg_app))
    watcher.autocommit = True

    class Blocked:
        @staticmethod
        def release(table):
            holders[table].commit()

        @staticmethod
        def waiting(fragment):
            return _waiting(watcher, fragment) == 1

    yield Blocked
    for conn in (*holders.values(), watcher):
        conn.close()


def test_once_an_update_holds_a_service_table_the_rest_must_fit_the_lock_timeout(pg_app, admin, blocked):
    """ALTER users takes its ACCESS EXCLUSIVE lock at once (every balance read joins users);
    the next statement waits for a lock that never comes. Alone it could wait lock_timeout,
    but users is held, so what is left of the update's SCHEMA_LOCK_TIMEOUT_MS is all it gets:
    the update, and the service's traffic queued behind it, wait less than the lock timeout."""
    uid = new_user(admin)
    r = apply(admin, "ALTER TABLE users ADD COLUMN tier varchar(20);\nCREATE INDEX ix_a ON a (x)", name="holds-users")
    assert r.status_code == 422, r.get_json()
    error = r.get_json()["error"]
    assert error["code"] == "schema_change_failed" and error["details"]["limit"] == "SCHEMA_LOCK_TIMEOUT_MS"
    assert error["details"]["statement_index"] == 1 and error["details"]["sqlstate"] in ("55P03", "57014")
    assert "from statement 1, the first to name one of the service's tables" in error["message"]
    assert query(pg_app, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'tier'") == [(0,)]
    assert query(pg_app, "SELECT name, outcome, duration_ms < :bound FROM schema_changes ORDER BY id DESC LIMIT 1",
                 bound=LOCK_TIMEOUT_MS) == [("holds-users", "failed", True)]
    # The same wait on an operator's table alone is an ordinary lock timeout: retry later.
    r = apply(admin, "CREATE INDEX ix_a ON a (x)")
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "schema_lock_timeout"
    assert admin.get(f"/api/credits/{uid}").status_code == 200


@pytest.mark.parametrize("app_env", [{"SCHEMA_LOCK_TIMEOUT_MS": "2000", "SCHEMA_STATEMENT_TIMEOUT_MS": "2000",
                                      "SCHEMA_UPDATE_TIMEOUT_MS": "3000"}])
def test_the_whole_update_must_fit_its_time_limit(pg_app, admin, blocked, app_env):
    """Each statement within its own limits, the two together past SCHEMA_UPDATE_TIMEOUT_MS."""
    result = {}
    update = threading.Thread(target=lambda: result.update(r=apply(
        admin, "CREATE INDEX ix_a ON a (x);\nCREATE INDEX ix_b ON b (x)", name="too-long")))
    update.start()
    _wait_until(lambda: blocked.waiting("ix_a"))
    time.sleep(1.2)  # most of the first statement's lock_timeout, then it gets its lock
    blocked.release("a")
    update.join()
    r = result["r"]
    assert r.status_code == 422, r.get_json()
    error = r.get_json()["error"]
    assert error["details"]["limit"] == "SCHEMA_UPDATE_TIMEOUT_MS" and error["details"]["statement_index"] == 1
    assert "the whole update must finish within SCHEMA_UPDATE_TIMEOUT_MS (3000 ms)" in error["message"]
    assert query(pg_app, "SELECT to_regclass('ix_a')") == [(None,)]


class Traffic:
    """Two threads sending balance reads and credit changes (100-character reasons) through
    a real HTTP server, timing each request; `worst(start, end)` is the slowest of each kind
    among those that overlapped that span."""

    def __init__(self, app, users):
        self.app, self.users = app, users
        self.spans, self.statuses = {"read": [], "change": []}, []
        self.stop = threading.Event()

    def __enter__(self):
        self.server = LiveServer(self.app).__enter__()
        token = token_for(self.app, "service")
        self.threads = [threading.Thread(target=self._run, args=(token, self.users[i::2])) for i in range(2)]
        for t in self.threads:
            t.start()
        _wait_until(lambda: len(self.statuses) >= 20)  # flowing
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()
        self.server.__exit__(*exc)

    def _run(self, token, users):
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        for i in itertools.count():
            if self.stop.is_set():
                return
            uid = users[i % len(users)]
            started = time.monotonic()
            if i % 2:
                kind, r = "read", session.get(f"{self.server.url}/api/credits/{uid}", timeout=60)
            else:
                kind, r = "change", session.post(f"{self.server.url}/api/credits/{uid}/add",
                                                 json={"amount": 1, "reason": "r" * 100}, timeout=60)
            self.spans[kind].append((started, time.monotonic()))
            self.statuses.append(r.status_code)

    def after(self, moment):
        _wait_until(lambda: any(start > moment for start, _ in self.spans["read"]))

    def worst(self, start, end):
        worst = {}
        for kind, spans in self.spans.items():
            during = [b - a for a, b in spans if a < end and b > start]
            assert during, f"no {kind} overlapped the update"
            worst[kind] = max(during) * 1000
        return worst


def test_credit_traffic_waits_less_than_the_lock_timeout_behind_a_large_update(pg_app, pg_server, admin):
    users = [new_user(admin, f"u{i}@example.com") for i in range(4)]
    # Enough users that each index on users takes a while to build.
    psql(pg_app, pg_server, "INSERT INTO users (email, name) SELECT 'bulk' || g || '@example.com', 'bulk user ' || g "
                            "FROM generate_series(1, 5000) g")
    script = ";\n".join(
        ["ALTER TABLE users ADD COLUMN tier varchar(20) DEFAULT 'basic', ADD COLUMN region char(2) DEFAULT 'eu'"]
        + [f"CREATE INDEX ix_users_{i} ON users ({columns})" for i, columns in enumerate(
            ("tier", "region", "name", "created_at", "tier, region", "email, tier", "name, created_at", "region, name"))]
        + [f"CREATE TABLE side_{i} (id bigint PRIMARY KEY, user_id bigint REFERENCES users (user_id))" for i in range(40)]
        + [f"COMMENT ON TABLE side_{i} IS 'side table {i}'" for i in range(40)]
        + ["CREATE VIEW user_tiers AS SELECT user_id, tier, region FROM users"])
    with Traffic(pg_app, users) as traffic:
        started = time.monotonic()
        r = apply(admin, script, name="large")
        finished = time.monotonic()
        traffic.after(finished)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["statements"] == 90
    assert set(traffic.statuses) == {200}
    worst = traffic.worst(started, finished)
    assert worst["read"] < LOCK_TIMEOUT_MS and worst["change"] < LOCK_TIMEOUT_MS, worst
