"""A refusal must be right, not only safe (DESIGN.md invariant 6).

Every decision on a balance is made on the newest committed balance, read under the row
lock. The deterministic tests here hold the user's credits row in a second real PostgreSQL
connection, send the request (which then waits for the lock), and commit the other change
while the request waits: the request must decide on the balance that other change left,
not on the one its statement's snapshot saw. The cap tests check that MAX_BALANCE limits
what an add may reach and nothing else, on both dialects."""
import threading
import time

import pytest
from sqlalchemy import create_engine, text

from credits_app.extensions import db
from tests.conftest import client_as, new_user

MAX_BALANCE = 1000


def _set_balance(app, uid, credits):
    """Bring a fresh user to `credits` through the API, so the books balance."""
    client = client_as(app)
    while credits:
        amount = min(credits, app.config["MAX_AMOUNT"])
        assert client.post(f"/api/credits/{uid}/add", json={"amount": amount}).status_code == 200
        credits -= amount


class RowHolder:
    """A second connection that changes a user's balance (with its ledger row, as the service
    would) inside a transaction it keeps open until `commit()`."""

    def __init__(self, app, uid, delta):
        self.engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
        self.conn = self.engine.connect()
        self.trans = self.conn.begin()
        balance = self.conn.execute(text(
            "UPDATE credits SET credits = credits + :d, last_updated = now() WHERE user_id = :u RETURNING credits"),
            {"d": delta, "u": uid}).scalar_one()
        self.conn.execute(text(
            "INSERT INTO ledger_entries (user_id, kind, amount, balance_after, reason, actor, created_at) "
            "VALUES (:u, CASE WHEN :d >= 0 THEN 'add' ELSE 'deduct' END, :d, :b, 'concurrent', 'other', now())"),
            {"d": delta, "u": uid, "b": balance})
        self.pid = self.conn.execute(text("SELECT pg_backend_pid()")).scalar_one()

    def wait_until_blocking(self, thread, timeout=10):
        """Return once another backend waits for a lock this connection holds."""
        deadline = time.monotonic() + timeout
        with self.engine.connect() as watcher:
            while time.monotonic() < deadline and thread.is_alive():
                if watcher.execute(text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
                                   {"pid": self.pid}).scalar_one():
                    return
                watcher.rollback()  # pg_stat_activity is a snapshot per transaction
                time.sleep(0.01)
        raise AssertionError("the request never waited for the held row (it ended, or took too long)")

    def commit(self):
        self.trans.commit()
        self.conn.close()
        self.engine.dispose()


def _race(app, uid, delta, send):
    """Hold the row changed by `delta`, start `send()` in a thread, let it queue on the row
    lock, then commit; return send()'s response."""
    holder = RowHolder(app, uid, delta)
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("response", send()))
    thread.start()
    try:
        holder.wait_until_blocking(thread)
    finally:
        holder.commit()
        thread.join(30)
    return out["response"]


def _send(app, method, path, body, key):
    client = client_as(app, "admin", sub="racer")
    headers = {"Idempotency-Key": key} if key else {}
    return lambda: client.open(path, method=method, json=body, headers=headers)


def _balance_and_books(app, uid):
    client = client_as(app)
    credits = client.get(f"/api/credits/{uid}").get_json()["credits"]
    with app.app_context():
        from credits_app import ledger
        assert ledger.verify() == []
    return credits


@pytest.mark.parametrize("app_env", [{"MAX_AMOUNT": "500", "MAX_BALANCE": str(MAX_BALANCE)}])
@pytest.mark.parametrize("key", [None, "k-1"])
class TestDecidedOnTheLockedRow:
    def test_deduct_sees_a_concurrent_add(self, pg_app, key):
        uid = new_user(client_as(pg_app))
        _set_balance(pg_app, uid, 5)
        r = _race(pg_app, uid, +100, _send(pg_app, "POST", f"/api/credits/{uid}/deduct", {"amount": 50}, key))
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["credits"] == 55
        assert _balance_and_books(pg_app, uid) == 55
        if key:  # the stored answer is the right one: a replay says 200 too
            replay = _send(pg_app, "POST", f"/api/credits/{uid}/deduct", {"amount": 50}, key)()
            assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"

    def test_reset_sees_a_concurrent_add(self, pg_app, key):
        uid = new_user(client_as(pg_app))
        _set_balance(pg_app, uid, 5)
        r = _race(pg_app, uid, +100, _send(pg_app, "PATCH", f"/api/credits/{uid}/reset", {}, key))
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["credits"] == 0 and r.get_json()["entry"]["amount"] == -105
        assert _balance_and_books(pg_app, uid) == 0

    def test_reset_sees_a_concurrent_deduct(self, pg_app, key):
        uid = new_user(client_as(pg_app))
        _set_balance(pg_app, uid, 100)
        r = _race(pg_app, uid, -60, _send(pg_app, "PATCH", f"/api/credits/{uid}/reset", {}, key))
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["entry"]["amount"] == -40
        assert _balance_and_books(pg_app, uid) == 0

    def test_add_near_the_cap_sees_a_concurrent_deduct(self, pg_app, key):
        uid = new_user(client_as(pg_app))
        _set_balance(pg_app, uid, MAX_BALANCE - 5)
        r = _race(pg_app, uid, -100, _send(pg_app, "POST", f"/api/credits/{uid}/add", {"amount": 50}, key))
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["credits"] == MAX_BALANCE - 55
        assert _balance_and_books(pg_app, uid) == MAX_BALANCE - 55

    def test_a_right_refusal_reports_the_newest_balance(self, pg_app, key):
        """The other way round: the snapshot would allow it, the newest balance does not."""
        uid = new_user(client_as(pg_app))
        _set_balance(pg_app, uid, 60)
        r = _race(pg_app, uid, -30, _send(pg_app, "POST", f"/api/credits/{uid}/deduct", {"amount": 50}, key))
        assert r.status_code == 409
        details = r.get_json()["error"]["details"]
        assert details == {"balance": 30, "held": 0, "available": 30, "requested": 50}
        assert details["available"] < details["requested"]
        assert details["available"] == details["balance"] - details["held"]
        assert _balance_and_books(pg_app, uid) == 30
        if key:  # the stored refusal was right when made, and replays as made
            replay = _send(pg_app, "POST", f"/api/credits/{uid}/deduct", {"amount": 50}, key)()
            assert replay.status_code == 409 and replay.get_json()["error"]["details"] == details

    def test_a_right_cap_refusal_reports_the_newest_balance(self, pg_app, key):
        uid = new_user(client_as(pg_app))
        _set_balance(pg_app, uid, MAX_BALANCE - 100)
        r = _race(pg_app, uid, +80, _send(pg_app, "POST", f"/api/credits/{uid}/add", {"amount": 50}, key))
        assert r.status_code == 409
        assert r.get_json()["error"]["code"] == "balance_limit_exceeded"
        assert r.get_json()["error"]["details"]["balance"] == MAX_BALANCE - 20
        assert _balance_and_books(pg_app, uid) == MAX_BALANCE - 20


class TestTheCapLimitsCreditsOnly:
    """MAX_BALANCE caps what an add may reach; a deduct checks `>= 0` only and a reset
    nothing, so lowering the cap below existing balances never blocks spending them."""

    @pytest.fixture
    def over_cap(self, app):
        uid = new_user(client_as(app))
        _set_balance(app, uid, 90)
        app.config["MAX_BALANCE"] = 50  # an operator lowered the cap below this balance
        return uid

    def test_deduct_above_the_cap(self, app, over_cap):
        r = client_as(app).post(f"/api/credits/{over_cap}/deduct", json={"amount": 10})
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["credits"] == 80

    def test_reset_above_the_cap(self, app, over_cap):
        r = client_as(app).patch(f"/api/credits/{over_cap}/reset", json={})
        assert r.status_code == 200 and r.get_json()["credits"] == 0

    def test_add_above_the_cap_is_refused_with_figures_that_justify_it(self, app, over_cap):
        r = client_as(app).post(f"/api/credits/{over_cap}/add", json={"amount": 1})
        assert r.status_code == 409
        error = r.get_json()["error"]
        assert error["code"] == "balance_limit_exceeded"
        assert error["details"] == {"balance": 90, "requested": 1, "max_balance": 50}
        assert error["details"]["balance"] + error["details"]["requested"] > error["details"]["max_balance"]

    def test_deduct_beyond_the_balance_is_refused_for_the_balance_not_the_cap(self, app, over_cap):
        r = client_as(app).post(f"/api/credits/{over_cap}/deduct", json={"amount": 91})
        assert r.status_code == 409
        assert r.get_json()["error"]["details"] == {"balance": 90, "held": 0, "available": 90, "requested": 91}
        with app.app_context():
            assert db.session.execute(text("SELECT count(*) FROM ledger_entries WHERE user_id = :u"),
                                      {"u": over_cap}).scalar() == 1
