"""Each thread keeps its hot-path PostgreSQL connection (credits_app/ledger/thread_connections.py):
reused by the thread, at most half the pool, closed after dispose(), replaced when the
server dropped it, never touched by a forked child; its prepared statements survive a
migration (ledger.fast_path.fetch_one). Against the real PostgreSQL."""
import os
import threading

import psycopg2
import pytest

from credits_app.ledger import thread_connections
from credits_app.extensions import db
from tests.conftest import client_as, make_app, new_user
from tests.redis_fixtures import wait_for


@pytest.fixture
def app_env():
    return {"DB_POOL_SIZE": "4", "DB_MAX_OVERFLOW": "2", "DB_PING_IDLE_SECONDS": "3600"}


def _connect(app):
    return psycopg2.connect(app.config["SQLALCHEMY_DATABASE_URI"].replace("postgresql+psycopg2://", "postgresql://"))


def _backends(app):
    """Server processes connected to the app's database, as PostgreSQL itself counts them."""
    with _connect(app) as conn, conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'credits'")
        pids = {row[0] for row in cur.fetchall()}
    conn.close()
    return pids


def _closed(app, *pids):
    """True once the server lists none of `pids`: a backend ends a moment after its client
    closes the connection, so this waits for the server to catch up."""
    return wait_for(lambda: not _backends(app) & set(pids), f"backends {pids} to end", timeout=30)


def _pid_of_a_read(app, client, uid):
    """The server process that answered one balance read made in this thread."""
    assert client.get(f"/api/credits/{uid}").status_code == 200
    with app.app_context():
        kept = thread_connections.kept_by_this_thread(db.engine)
    return kept.driver_connection.get_backend_pid() if kept else None


def _in_thread(fn):
    out = {}
    thread = threading.Thread(target=lambda: out.update(value=fn()))
    thread.start()
    thread.join(30)
    return out["value"]


def test_a_thread_keeps_one_connection_and_the_pool_keeps_half_for_the_rest(pg_app):
    client = client_as(pg_app)
    uid = new_user(client)
    first = _pid_of_a_read(pg_app, client, uid)
    assert first is not None and {_pid_of_a_read(pg_app, client, uid) for _ in range(20)} == {first}

    # Four threads at once, a pool of 4: two keep one (with this thread's, the half), the
    # others check out per read and give it back; every read is answered.
    barrier = threading.Barrier(4)
    pids, statuses = [], []

    def reader():
        c = client_as(pg_app)
        barrier.wait()
        for _ in range(10):
            statuses.append(c.get(f"/api/credits/{uid}").status_code)
        with pg_app.app_context():
            kept = thread_connections.kept_by_this_thread(db.engine)
        pids.append(kept.driver_connection.get_backend_pid() if kept else None)
        barrier.wait()  # all still alive: no slot is freed by a thread that ended

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [200] * 40
    assert sum(pid is not None for pid in pids) == 1  # 4 // 2 = 2 kept in all, one of them this thread's
    with pg_app.app_context():
        assert db.engine.pool.checkedout() == 2  # the two kept; the rest went back

        # The readers have ended: a new thread takes a slot one of them held.
        assert _in_thread(lambda: _pid_of_a_read(pg_app, client_as(pg_app), uid)) is not None
        assert db.engine.pool.checkedout() == 2


def test_dispose_closes_kept_connections_of_this_thread_and_of_ended_threads(pg_app):
    client = client_as(pg_app)
    uid = new_user(client)
    mine = _pid_of_a_read(pg_app, client, uid)
    ended = _in_thread(lambda: _pid_of_a_read(pg_app, client_as(pg_app), uid))
    assert {mine, ended} <= _backends(pg_app)
    with pg_app.app_context():
        db.session.remove()
        db.engine.dispose()
    assert _closed(pg_app, mine, ended)  # the server saw them close
    with pg_app.app_context():
        assert thread_connections.kept_by_this_thread(db.engine) is None
    # and the next read gets a connection of the new pool
    after = _pid_of_a_read(pg_app, client, uid)
    assert after not in (mine, ended) and after in _backends(pg_app)


def test_a_live_thread_leaves_a_disposed_pool_at_its_next_read(pg_app):
    client = client_as(pg_app)
    uid = new_user(client)
    go, done = threading.Event(), threading.Event()
    seen = []

    def worker():
        c = client_as(pg_app)
        seen.append(_pid_of_a_read(pg_app, c, uid))
        done.set()
        go.wait(30)
        seen.append(_pid_of_a_read(pg_app, c, uid))

    thread = threading.Thread(target=worker)
    thread.start()
    done.wait(30)
    with pg_app.app_context():
        db.engine.dispose()  # from this thread, while the worker's connection is idle but kept
    assert seen[0] in _backends(pg_app)  # a live thread's is never closed under it
    go.set()
    thread.join(30)
    assert seen[1] != seen[0]
    assert _closed(pg_app, seen[0]) and seen[1] in _backends(pg_app)


def test_a_kept_connection_the_server_dropped_is_replaced(pg_app, pg_server):
    # DB_PING_IDLE_SECONDS=0: pinged before each use, like the pool's idle ping.
    pg_app.config["DB_PING_IDLE_SECONDS"] = 0
    client = client_as(pg_app)
    uid = new_user(client)
    old = _pid_of_a_read(pg_app, client, uid)
    with _connect(pg_app) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (old,))  # injected: the server ends the session
    conn.close()
    assert client.post(f"/api/credits/{uid}/add", json={"amount": 2}).status_code == 200
    assert client.get(f"/api/credits/{uid}").get_json()["credits"] == 2
    assert _pid_of_a_read(pg_app, client, uid) != old


def test_without_the_idle_ping_a_dropped_connection_fails_one_request_cleanly(pg_app):
    client = client_as(pg_app)
    uid = new_user(client)
    old = _pid_of_a_read(pg_app, client, uid)
    with _connect(pg_app) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (old,))
    conn.close()
    r = client.post(f"/api/credits/{uid}/add", json={"amount": 2})
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "database_unavailable"
    assert client.post(f"/api/credits/{uid}/add", json={"amount": 2}).status_code == 200
    assert client.get(f"/api/credits/{uid}").get_json()["credits"] == 2  # the failed one changed nothing


def test_a_forked_child_never_touches_its_parents_kept_connection(pg_app):
    client = client_as(pg_app)
    uid = new_user(client)
    parent = _pid_of_a_read(pg_app, client, uid)
    # A second thread keeps one too (the pool's half: 2 of 4), and is alive at the fork.
    kept, release = threading.Event(), threading.Event()
    sibling = []

    def keeper():
        sibling.append(_pid_of_a_read(pg_app, client_as(pg_app), uid))
        kept.set()
        release.wait(60)
        sibling.append(_pid_of_a_read(pg_app, client_as(pg_app), uid))
    thread = threading.Thread(target=keeper)
    thread.start()
    kept.wait(30)
    child = os.fork()
    if child == 0:  # as an RQ horse does: drop (never close) what the parent holds, then work
        code = 1
        try:
            with pg_app.app_context():
                db.engine.dispose(close=False)
            status = client_as(pg_app).get(f"/api/credits/{uid}").status_code
            mine = _pid_of_a_read(pg_app, client_as(pg_app), uid)
            code = 0 if status == 200 and mine not in (None, parent) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    release.set()
    thread.join(30)
    assert {parent, sibling[0]} <= _backends(pg_app)
    assert _pid_of_a_read(pg_app, client, uid) == parent  # still this process's, still working
    assert sibling[1] == sibling[0]


def test_two_apps_in_one_thread_keep_a_connection_each(pg_app):
    other = make_app(pg_app.config["SQLALCHEMY_DATABASE_URI"], DB_POOL_SIZE="4")
    client, other_client = client_as(pg_app), client_as(other)
    uid = new_user(client)
    mine, theirs = _pid_of_a_read(pg_app, client, uid), _pid_of_a_read(other, other_client, uid)
    assert None not in (mine, theirs) and mine != theirs
    for _ in range(3):  # taking turns leaves each with its own, both alive
        assert _pid_of_a_read(pg_app, client, uid) == mine and _pid_of_a_read(other, other_client, uid) == theirs
    with other.app_context():
        db.engine.dispose()
    assert _closed(pg_app, theirs) and mine in _backends(pg_app)


def test_a_migration_under_the_prepared_statements_does_not_break_changes(pg_app):
    # The hot path's statements are prepared once per connection. A column type change (a
    # migration run out of band) makes PostgreSQL refuse the prepared plan before it runs:
    # the statement is prepared again and runs once, and nothing applies twice.
    client = client_as(pg_app)
    uid = new_user(client)
    assert client.post(f"/api/credits/{uid}/add", json={"amount": 1, "reason": "warm"}).status_code == 200
    with _connect(pg_app) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE ledger_entries ALTER COLUMN reason TYPE varchar(1000)")
    conn.close()
    r = client.post(f"/api/credits/{uid}/add", json={"amount": 2, "reason": "after"})
    assert r.status_code == 200 and r.get_json()["entry"]["reason"] == "after", r.get_json()
    assert client.post(f"/api/credits/{uid}/deduct", json={"amount": 1}).status_code == 200
    assert client.get(f"/api/credits/{uid}").get_json()["credits"] == 2

    # A session that lost its prepared statements (DEALLOCATE ALL, as a pooler may send).
    with pg_app.app_context():
        kept = thread_connections.kept_by_this_thread(db.engine)
        with kept.driver_connection.cursor() as cur:
            cur.execute("DEALLOCATE ALL")
    assert client.post(f"/api/credits/{uid}/add", json={"amount": 5}).status_code == 200
    assert client.get(f"/api/credits/{uid}").get_json()["credits"] == 7
    with _connect(pg_app) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), sum(amount) FROM ledger_entries WHERE user_id = %s", (uid,))
        assert cur.fetchone() == (4, 7)  # each change exactly once
    conn.close()
