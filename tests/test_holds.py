"""Holds: reserve, then capture (all or part) or release; expiry on the database's clock;
a reset closes them; debits spend only what holds do not keep. On SQLite and PostgreSQL,
and racing on PostgreSQL."""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from credits_app import ledger
from credits_app.extensions import db
from credits_app.ledger import holds
from tests.conftest import client_as, new_user, token_for


def _add(client, uid, amount):
    r = client.post(f"/api/credits/{uid}/add", json={"amount": amount})
    assert r.status_code == 200, r.get_json()


def _hold(client, uid, amount, status=201, **body):
    r = client.post(f"/api/credits/{uid}/holds", json={"amount": amount, **body})
    assert r.status_code == status, r.get_json()
    return r.get_json()


def _balance(client, uid):
    return client.get(f"/api/credits/{uid}").get_json()


def _books(app):
    with app.app_context():
        assert ledger.verify() == []
        assert holds.verify_holds() == ([], [])


def test_hold_then_partial_capture_releases_the_rest(app):
    client = client_as(app)
    uid = new_user(client)
    _add(client, uid, 100)
    created = _hold(client, uid, 30, reason="render job")
    hold = created["hold"]
    assert created | {"hold": None} == {"hold": None, "user_id": uid, "credits": 100, "held": 30, "available": 70}
    assert hold["status"] == "open" and hold["amount"] == 30 and hold["reason"] == "render job"
    assert hold["expires_at"] > hold["created_at"] and hold["entry_id"] is None
    assert _balance(client, uid) | {"last_updated": None} == {"user_id": uid, "credits": 100, "held": 30,
                                                                "available": 70, "last_updated": None}
    r = client.post(f"/api/holds/{hold['hold_id']}/capture", json={"amount": 12})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert (body["credits"], body["held"], body["available"]) == (88, 0, 88)
    assert body["hold"]["status"] == "captured" and body["hold"]["captured"] == 12
    entry = body["entry"]
    assert (entry["kind"], entry["amount"], entry["balance_after"], entry["hold_id"]) == ("capture", -12, 88,
                                                                                          hold["hold_id"])
    assert entry["reason"] == "render job" and body["hold"]["entry_id"] == entry["id"]
    assert body["hold"]["close_reason"] is None  # a capture's reason is on its entry
    assert client.get(f"/api/holds/{hold['hold_id']}").get_json() == body["hold"]
    # Closed once: a second capture or a release is refused, and says why.
    for action in ("capture", "release"):
        r = client.post(f"/api/holds/{hold['hold_id']}/{action}")
        assert r.status_code == 409 and r.get_json()["error"]["code"] == "hold_not_open", r.get_json()
        assert r.get_json()["error"]["details"] == {"hold_id": hold["hold_id"], "status": "captured"}
    _books(app)


def test_a_debit_spends_only_what_holds_do_not_keep_and_the_refusal_says_so(app):
    client = client_as(app)
    uid = new_user(client)
    _add(client, uid, 105)
    _hold(client, uid, 80)
    r = client.post(f"/api/credits/{uid}/deduct", json={"amount": 50})
    assert r.status_code == 409
    error = r.get_json()["error"]
    assert error["code"] == "insufficient_credits"
    assert error["details"] == {"balance": 105, "held": 80, "available": 25, "requested": 50}
    assert error["message"] == "available 25 (balance 105, 80 held) is less than the requested 50"
    assert client.post(f"/api/credits/{uid}/deduct", json={"amount": 25}).get_json()["credits"] == 80
    # A hold is refused the same way, on what is available.
    refused = client.post(f"/api/credits/{uid}/holds", json={"amount": 1})
    assert refused.status_code == 409 and refused.get_json()["error"]["details"] == {
        "balance": 80, "held": 80, "available": 0, "requested": 1}
    _books(app)


def test_release_makes_the_credits_available_again(app):
    client = client_as(app)
    uid = new_user(client)
    _add(client, uid, 10)
    hold = _hold(client, uid, 10)["hold"]
    r = client.post(f"/api/holds/{hold['hold_id']}/release")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert (body["credits"], body["held"], body["available"], body["hold"]["status"]) == (10, 0, 10, "released")
    assert "entry" not in body and body["hold"]["close_reason"] is None  # no body: no reason, as before
    assert client.post(f"/api/credits/{uid}/deduct", json={"amount": 10}).status_code == 200
    _books(app)


def test_a_release_keeps_its_reason_on_the_hold(app):
    client = client_as(app)
    uid = new_user(client)
    _add(client, uid, 10)
    hold_id = _hold(client, uid, 4, reason="render job")["hold"]["hold_id"]
    key = {"Idempotency-Key": "release-1"}
    r = client.post(f"/api/holds/{hold_id}/release", json={"reason": "job cancelled"}, headers=key)
    assert r.status_code == 200, r.get_json()
    hold = r.get_json()["hold"]
    assert (hold["status"], hold["reason"], hold["close_reason"]) == ("released", "render job", "job cancelled")
    assert client.get(f"/api/holds/{hold_id}").get_json() == hold
    assert client.get(f"/api/credits/{uid}/holds?status=released").get_json()["items"] == [hold]
    with app.app_context(), db.engine.connect() as conn:
        assert conn.execute(text("SELECT close_reason FROM holds WHERE id = :h"), {"h": hold_id}).scalar() == \
            "job cancelled"
    # The same key and reason replay the answer; the key with another reason, or none, is misuse.
    replay = client.post(f"/api/holds/{hold_id}/release", json={"reason": "job cancelled"}, headers=key)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == r.get_json()
    for other in ({"reason": "another"}, {}):
        reused = client.post(f"/api/holds/{hold_id}/release", json=other, headers=key)
        assert reused.status_code == 422 and reused.get_json()["error"]["code"] == "idempotency_key_reused", other
    assert client.get(f"/api/holds/{hold_id}").get_json()["close_reason"] == "job cancelled"
    # An empty object is as no body: a release without a reason.
    second = _hold(client, uid, 2)["hold"]["hold_id"]
    r = client.post(f"/api/holds/{second}/release", json={})
    assert r.status_code == 200 and r.get_json()["hold"]["close_reason"] is None
    _books(app)


@pytest.mark.parametrize("reason", ["x" * 501, "a\x00b", 5])
def test_a_bad_release_reason_is_a_clear_422_and_releases_nothing(app, reason):
    client = client_as(app)
    uid = new_user(client)
    _add(client, uid, 10)
    hold_id = _hold(client, uid, 4)["hold"]["hold_id"]
    r = client.post(f"/api/holds/{hold_id}/release", json={"reason": reason})
    assert r.status_code == 422, r.get_json()
    assert "reason" in r.get_json()["error"]["details"]["fields"]
    assert client.get(f"/api/holds/{hold_id}").get_json()["status"] == "open"
    assert client.post(f"/api/holds/{hold_id}/release", json={"reason": "x" * 500}).get_json()["hold"][
        "close_reason"] == "x" * 500


def test_capture_more_than_held_is_refused(app):
    client = client_as(app)
    uid = new_user(client)
    _add(client, uid, 50)
    hold = _hold(client, uid, 20)["hold"]
    r = client.post(f"/api/holds/{hold['hold_id']}/capture", json={"amount": 21})
    assert r.status_code == 409 and r.get_json()["error"] == {
        "code": "capture_exceeds_hold", "message": f"hold {hold['hold_id']} holds 20, less than the requested 21",
        "details": {"hold_id": hold["hold_id"], "amount": 20, "requested": 21}}
    assert client.post(f"/api/holds/{hold['hold_id']}/capture").get_json()["credits"] == 30  # all of it


def test_an_expired_hold_does_not_count_and_cannot_be_captured(app):
    client = client_as(app)
    uid = new_user(client)
    _add(client, uid, 40)
    hold = _hold(client, uid, 30, ttl_seconds=1)["hold"]
    assert _balance(client, uid)["available"] == 10
    time.sleep(1.1)
    # No sweep has run: reads already leave it out, and its status says so.
    assert (_balance(client, uid)["held"], _balance(client, uid)["available"]) == (0, 40)
    assert client.get(f"/api/holds/{hold['hold_id']}").get_json()["status"] == "expired"
    listed = client.get(f"/api/credits/{uid}/holds?status=expired").get_json()["items"]
    assert listed[0]["close_reason"] is None
    assert [h["hold_id"] for h in listed] == [hold["hold_id"]]
    assert client.get(f"/api/credits/{uid}/holds?status=open").get_json()["items"] == []
    r = client.post(f"/api/holds/{hold['hold_id']}/capture")
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "hold_expired"
    assert r.get_json()["error"]["details"] == {"hold_id": hold["hold_id"], "status": "expired"}
    with app.app_context(), db.engine.connect() as conn:  # the refused capture recorded the expiry
        assert conn.execute(text("SELECT status, held FROM holds JOIN credits USING (user_id) WHERE id = :id"),
                            {"id": hold["hold_id"]}).one() == ("expired", 0)
    _books(app)


def test_a_debit_refused_while_overdue_holds_exist_expires_them_and_decides_again(app):
    client = client_as(app)
    uid = new_user(client)
    _add(client, uid, 50)
    _hold(client, uid, 40, ttl_seconds=1)
    time.sleep(1.1)
    r = client.post(f"/api/credits/{uid}/deduct", json={"amount": 45}, headers={"Idempotency-Key": "spend-1"})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["credits"] == 5
    with app.app_context(), db.engine.connect() as conn:
        assert conn.execute(text("SELECT held FROM credits WHERE user_id = :u"), {"u": uid}).scalar() == 0
        assert conn.execute(text("SELECT status FROM holds WHERE user_id = :u"), {"u": uid}).scalar() == "expired"
    _books(app)


def test_the_sweep_records_expired_holds(app):
    client = client_as(app)
    users = [new_user(client, email=f"u{i}@example.com") for i in range(3)]
    for uid in users:
        _add(client, uid, 10)
        _hold(client, uid, 4, ttl_seconds=1)
        _hold(client, uid, 3, ttl_seconds=600)
    time.sleep(1.1)
    with app.app_context():
        assert holds.sweep(batch=2) == 3
        assert holds.sweep() == 0
    for uid in users:
        assert (_balance(client, uid)["held"], _balance(client, uid)["available"]) == (3, 7)
        items = client.get(f"/api/credits/{uid}/holds").get_json()["items"]
        listed = sorted((h["status"], h["close_reason"]) for h in items)
        assert listed == [("expired", None), ("open", None)]
    _books(app)


def test_reset_closes_every_hold_and_is_never_refused(app):
    client = client_as(app)
    uid = new_user(client)
    _add(client, uid, 30)
    first = _hold(client, uid, 10)["hold"]
    _hold(client, uid, 15)
    r = client.patch(f"/api/credits/{uid}/reset", json={"reason": "closing"})
    assert r.status_code == 200 and r.get_json()["credits"] == 0
    assert _balance(client, uid) | {"last_updated": None} == {"user_id": uid, "credits": 0, "held": 0, "available": 0,
                                                                "last_updated": None}
    closed = client.get(f"/api/credits/{uid}/holds").get_json()["items"]
    assert {(h["status"], h["close_reason"]) for h in closed} == {("released", None)}  # the reason is on the entry
    assert client.post(f"/api/holds/{first['hold_id']}/capture").status_code == 409
    _books(app)


def test_the_daily_grant_leaves_holds_alone(app):
    from datetime import date
    client = client_as(app)
    uid = new_user(client)
    _add(client, uid, 10)
    _hold(client, uid, 10)
    with app.app_context():
        assert ledger.grant_daily_chunk(date(2026, 11, 30), 5, uid, uid + 1) == 1
    assert (_balance(client, uid)["credits"], _balance(client, uid)["held"]) == (15, 10)
    _books(app)


def test_keyed_hold_operations_take_effect_once_and_replay(app):
    client = client_as(app)
    uid = new_user(client)
    _add(client, uid, 100)
    key = {"Idempotency-Key": "hold-1"}
    first = client.post(f"/api/credits/{uid}/holds", json={"amount": 40}, headers=key)
    again = client.post(f"/api/credits/{uid}/holds", json={"amount": 40}, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_json() == first.get_json()
    assert _balance(client, uid)["held"] == 40
    other = client.post(f"/api/credits/{uid}/holds", json={"amount": 41}, headers=key)
    assert other.status_code == 422 and other.get_json()["error"]["code"] == "idempotency_key_reused"
    hold_id = first.get_json()["hold"]["hold_id"]
    capture = {"Idempotency-Key": "capture-1"}
    done = client.post(f"/api/holds/{hold_id}/capture", json={"amount": 25}, headers=capture)
    replay = client.post(f"/api/holds/{hold_id}/capture", json={"amount": 25}, headers=capture)
    assert done.status_code == replay.status_code == 200 and replay.get_json() == done.get_json()
    assert replay.headers["Idempotent-Replayed"] == "true" and _balance(client, uid)["credits"] == 75
    # A keyed refusal replays as it was.
    refused = client.post(f"/api/credits/{uid}/holds", json={"amount": 500}, headers={"Idempotency-Key": "big"})
    _add(client, uid, 1000)
    again = client.post(f"/api/credits/{uid}/holds", json={"amount": 500}, headers={"Idempotency-Key": "big"})
    assert refused.status_code == again.status_code == 409 and again.get_json() == refused.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    _books(app)


def test_a_purged_hold_key_is_still_refused(app):
    client = client_as(app)
    uid = new_user(client)
    _add(client, uid, 10)
    key = {"Idempotency-Key": "hold-once"}
    assert client.post(f"/api/credits/{uid}/holds", json={"amount": 5}, headers=key).status_code == 201
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("DELETE FROM idempotency_keys"))
    r = client.post(f"/api/credits/{uid}/holds", json={"amount": 5}, headers=key)
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "idempotency_key_expired"
    assert _balance(client, uid)["held"] == 5


def test_holds_by_role(app):
    admin = client_as(app)
    ann, bob = new_user(admin), new_user(admin, email="bob@example.com")
    _add(admin, ann, 20)
    _add(admin, bob, 20)
    service = client_as(app, "service")
    ann_hold = _hold(service, ann, 5)["hold"]
    bob_hold = _hold(service, bob, 5)["hold"]
    as_ann = client_as(app, "user", user_id=ann)
    assert as_ann.get(f"/api/holds/{ann_hold['hold_id']}").status_code == 200
    assert as_ann.get(f"/api/credits/{ann}/holds").status_code == 200
    hidden = as_ann.get(f"/api/holds/{bob_hold['hold_id']}")
    assert hidden.status_code == 404 and hidden.get_json()["error"]["code"] == "hold_not_found"
    assert as_ann.get(f"/api/credits/{bob}/holds").status_code == 403
    for method, path in (("post", f"/api/credits/{ann}/holds"), ("post", f"/api/holds/{ann_hold['hold_id']}/capture"),
                         ("post", f"/api/holds/{ann_hold['hold_id']}/release")):
        assert getattr(as_ann, method)(path, json={"amount": 1}).status_code == 403
    assert app.test_client().get(f"/api/holds/{ann_hold['hold_id']}").status_code == 401


@pytest.mark.parametrize("body, field", [({"amount": 0}, "amount"), ({"amount": 1.5}, "amount"),
                                         ({"amount": "5"}, "amount"), ({"amount": 5, "ttl_seconds": 0}, "ttl_seconds"),
                                         ({"amount": 5, "ttl_seconds": 10**9}, "ttl_seconds"),
                                         ({"amount": 5, "ttl_seconds": True}, "ttl_seconds"),
                                         ({"amount": 10**10}, "amount"), ({}, "amount")])
def test_bad_hold_input_is_a_clear_422(app, body, field):
    client = client_as(app)
    uid = new_user(client)
    r = client.post(f"/api/credits/{uid}/holds", json=body)
    assert r.status_code == 422, r.get_json()
    assert field in r.get_json()["error"]["details"]["fields"]


def test_unknown_holds_and_users_are_404(app):
    client = client_as(app)
    for path in ("/api/holds/999", "/api/holds/999/capture", "/api/holds/999/release", "/api/holds/99999999999999999999"):
        r = client.get(path) if path.count("/") == 3 else client.post(path)
        assert r.status_code == 404 and r.get_json()["error"]["code"] in ("hold_not_found", "not_found"), path
    r = client.post("/api/credits/12345/holds", json={"amount": 1})
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "user_not_found"


def test_a_reversal_of_a_credit_needs_what_holds_do_not_keep(app):
    client = client_as(app)
    uid = new_user(client)
    added = client.post(f"/api/credits/{uid}/add", json={"amount": 50}).get_json()["entry"]
    _hold(client, uid, 40)
    r = client.post(f"/api/credits/{uid}/entries/{added['id']}/reverse", json={"amount": 20, "reason": "refund"})
    assert r.status_code == 409 and r.get_json()["error"]["details"] == {
        "balance": 50, "held": 40, "available": 10, "requested": 20}
    capture_hold = _hold(client, uid, 10)["hold"]
    capture = client.post(f"/api/holds/{capture_hold['hold_id']}/capture").get_json()["entry"]
    # A capture is a debit: reversing it credits back, and the hold stays captured.
    r = client.post(f"/api/credits/{uid}/entries/{capture['id']}/reverse", json={"reason": "refund"})
    assert r.status_code == 200 and r.get_json()["credits"] == 50
    _books(app)


def test_capture_and_release_racing_on_one_hold_exactly_one_wins(pg_app):
    client = client_as(pg_app)
    uid = new_user(client)
    _add(client, uid, 1000)
    hold_ids = [_hold(client, uid, 10)["hold"]["hold_id"] for _ in range(20)]
    token = token_for(pg_app)

    def act(job):
        hold_id, action = job
        with pg_app.test_client() as c:
            r = c.post(f"/api/holds/{hold_id}/{action}", headers={"Authorization": f"Bearer {token}"})
            return hold_id, action, r.status_code, r.get_json()

    jobs = [(h, a) for h in hold_ids for a in ("capture", "release", "capture", "release")]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(act, jobs))
    for hold_id in hold_ids:
        mine = [r for r in results if r[0] == hold_id]
        wins = [r for r in mine if r[2] == 200]
        assert len(wins) == 1, mine
        for _, _, status, body in mine:
            if status != 200:
                assert status == 409 and body["error"]["code"] == "hold_not_open", body
                assert body["error"]["details"]["status"] == wins[0][3]["hold"]["status"]
    captured = sum(1 for r in results if r[2] == 200 and r[1] == "capture")
    assert _balance(client, uid) | {"last_updated": None} == {
        "user_id": uid, "credits": 1000 - 10 * captured, "held": 0, "available": 1000 - 10 * captured,
        "last_updated": None}
    _books(pg_app)


def test_a_hold_created_while_a_reset_waits_is_closed_or_kept_never_lost(pg_app):
    """Reset locks, then closes holds in a later statement: a hold committed while it
    waited for the lock is closed with the others, so `held` never outlives its holds."""
    client = client_as(pg_app)
    uid = new_user(client)
    _add(client, uid, 10_000)
    token = token_for(pg_app)

    def act(i):
        with pg_app.test_client() as c:
            auth = {"Authorization": f"Bearer {token}"}
            if i % 10 == 0:
                return c.patch(f"/api/credits/{uid}/reset", headers=auth).status_code
            if i % 10 == 5:
                return c.post(f"/api/credits/{uid}/add", json={"amount": 500}, headers=auth).status_code
            return c.post(f"/api/credits/{uid}/holds", json={"amount": 7}, headers=auth).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(act, range(200)))
    assert set(statuses) <= {200, 201, 409}, statuses
    _books(pg_app)


class _HoldHolder:
    """A second PostgreSQL connection that creates (or releases) a hold as the service would,
    locking the user's row first, inside a transaction it keeps open until `commit()`."""

    def __init__(self, app, uid, amount=None, release=None):
        from sqlalchemy import create_engine
        self.engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
        self.conn = self.engine.connect()
        self.trans = self.conn.begin()
        self.conn.execute(text("SELECT 1 FROM credits WHERE user_id = :u FOR UPDATE"), {"u": uid})
        if release is None:
            self.conn.execute(text("INSERT INTO holds (user_id, amount, status, actor, created_at, expires_at) "
                                   "VALUES (:u, :a, 'open', 'other', now(), now() + interval '1 hour')"),
                              {"u": uid, "a": amount})
            self.conn.execute(text("UPDATE credits SET held = held + :a WHERE user_id = :u"), {"u": uid, "a": amount})
        else:
            amount = self.conn.execute(text("UPDATE holds SET status = 'released', closed_at = now() WHERE id = :h "
                                            "RETURNING amount"), {"h": release}).scalar_one()
            self.conn.execute(text("UPDATE credits SET held = held - :a WHERE user_id = :u"), {"u": uid, "a": amount})
        self.pid = self.conn.execute(text("SELECT pg_backend_pid()")).scalar_one()

    def race(self, send):
        """Start `send()`, let it queue on the row lock, commit; return its response."""
        import threading
        out = {}
        thread = threading.Thread(target=lambda: out.setdefault("response", send()))
        thread.start()
        try:
            deadline = time.monotonic() + 10
            with self.engine.connect() as watcher:
                while not watcher.execute(text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY("
                                               "pg_blocking_pids(pid))"), {"pid": self.pid}).scalar_one():
                    watcher.rollback()
                    assert time.monotonic() < deadline and thread.is_alive(), "the request never waited"
                    time.sleep(0.01)
        finally:
            self.trans.commit()
            self.conn.close()
            thread.join(30)
            self.engine.dispose()
        return out["response"]


@pytest.mark.parametrize("key", [None, "k-1"])
def test_a_debit_decides_on_what_is_held_when_it_gets_the_lock(pg_app, key):
    """A hold committed while a deduct waits for the row: the deduct sees it (and reports
    it); a hold released while one waits: the deduct may spend what it kept."""
    client = client_as(pg_app)
    uid = new_user(client)
    _add(client, uid, 105)
    headers = {"Idempotency-Key": key} if key else {}
    deduct = lambda amount: lambda: client_as(pg_app, sub="racer").post(  # noqa: E731
        f"/api/credits/{uid}/deduct", json={"amount": amount}, headers=headers)
    refused = _HoldHolder(pg_app, uid, amount=80).race(deduct(50))
    assert refused.status_code == 409, refused.get_json()
    assert refused.get_json()["error"]["details"] == {"balance": 105, "held": 80, "available": 25, "requested": 50}
    hold_id = client.get(f"/api/credits/{uid}/holds").get_json()["items"][0]["hold_id"]
    if key:
        headers = {"Idempotency-Key": key + "-again"}
    spent = _HoldHolder(pg_app, uid, release=hold_id).race(deduct(100))
    assert spent.status_code == 200 and spent.get_json()["credits"] == 5, spent.get_json()
    _books(pg_app)


def test_a_reset_closes_a_hold_committed_while_it_waited(pg_app):
    client = client_as(pg_app)
    uid = new_user(client)
    _add(client, uid, 50)
    r = _HoldHolder(pg_app, uid, amount=30).race(lambda: client_as(pg_app).patch(f"/api/credits/{uid}/reset"))
    assert r.status_code == 200 and r.get_json()["credits"] == 0
    assert [h["status"] for h in client.get(f"/api/credits/{uid}/holds").get_json()["items"]] == ["released"]
    _books(pg_app)


def test_metrics_count_hold_operations(app):
    from tests.test_observability import _sample
    client = client_as(app)
    uid = new_user(client)
    _add(client, uid, 10)
    before = app.test_client().get("/metrics").get_data(as_text=True)
    first = _hold(client, uid, 4)["hold"]["hold_id"]
    second = _hold(client, uid, 4)["hold"]["hold_id"]
    _hold(client, uid, 5, status=409)
    client.post(f"/api/holds/{first}/capture", json={"amount": 1})
    client.post(f"/api/holds/{second}/release")
    client.post(f"/api/holds/{second}/release")
    after = app.test_client().get("/metrics").get_data(as_text=True)

    def delta(kind, outcome):
        labels = {"kind": kind, "outcome": outcome}
        return _sample(after, "credits_operations_total", **labels) - _sample(before, "credits_operations_total",
                                                                                **labels)

    assert (delta("hold", "ok"), delta("hold", "refused")) == (2, 1)
    assert (delta("capture", "ok"), delta("release", "ok"), delta("release", "refused")) == (1, 1, 1)


def test_a_balance_as_of_an_instant_says_nothing_of_holds(app):
    client = client_as(app)
    uid = new_user(client)
    _add(client, uid, 50)
    _hold(client, uid, 30)
    now = client.get(f"/api/credits/{uid}").get_json()
    past = client.get(f"/api/credits/{uid}?as_of=9999-01-01T00:00:00Z").get_json()
    assert (now["held"], now["available"]) == (30, 20)
    assert sorted(past) == ["as_of", "credits", "last_updated", "user_id"] and past["credits"] == 50
