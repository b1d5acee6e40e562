"""Idempotency-Key: a replay returns the original answer and changes nothing."""
from sqlalchemy import text

from credits_app import ledger
from credits_app.exceptions import IdempotencyMismatch
from credits_app.extensions import db
from tests.conftest import new_user


def _balance(client, uid):
    return client.get(f"/api/credits/{uid}").get_json()["credits"]


def test_replay_returns_original_and_changes_nothing(client):
    uid = new_user(client)
    headers = {"Idempotency-Key": "order-17"}
    first = client.post(f"/api/credits/{uid}/add", json={"amount": 10}, headers=headers)
    again = client.post(f"/api/credits/{uid}/add", json={"amount": 10}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.get_json() == again.get_json()
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _balance(client, uid) == 10
    assert len(client.get(f"/api/credits/{uid}/transactions").get_json()["items"]) == 1


def test_replay_after_later_changes_still_returns_original(client):
    uid = new_user(client)
    h = {"Idempotency-Key": "k1"}
    first = client.post(f"/api/credits/{uid}/add", json={"amount": 10}, headers=h).get_json()
    client.post(f"/api/credits/{uid}/deduct", json={"amount": 3})
    assert client.post(f"/api/credits/{uid}/add", json={"amount": 10}, headers=h).get_json() == first
    assert _balance(client, uid) == 7


def test_same_key_different_request_is_422(client):
    uid = new_user(client)
    h = {"Idempotency-Key": "k2"}
    client.post(f"/api/credits/{uid}/add", json={"amount": 10}, headers=h)
    for path, body in [("add", {"amount": 11}), ("deduct", {"amount": 10}), ("add", {"amount": 10, "reason": "x"})]:
        r = client.post(f"/api/credits/{uid}/{path}", json=body, headers=h)
        assert r.status_code == 422 and r.get_json()["error"]["code"] == "idempotency_key_reused"
    assert _balance(client, uid) == 10


def test_refused_request_replays_its_refusal(client):
    uid = new_user(client)
    h = {"Idempotency-Key": "k3"}
    first = client.post(f"/api/credits/{uid}/deduct", json={"amount": 5}, headers=h)
    assert first.status_code == 409 and "Idempotent-Replayed" not in first.headers
    client.post(f"/api/credits/{uid}/add", json={"amount": 100})
    again = client.post(f"/api/credits/{uid}/deduct", json={"amount": 5}, headers=h)
    assert again.status_code == 409 and again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _balance(client, uid) == 100


def test_reset_is_idempotent(client):
    uid = new_user(client)
    client.post(f"/api/credits/{uid}/add", json={"amount": 9})
    h = {"Idempotency-Key": "reset-1"}
    first = client.patch(f"/api/credits/{uid}/reset", json={}, headers=h).get_json()
    client.post(f"/api/credits/{uid}/add", json={"amount": 4})
    assert client.patch(f"/api/credits/{uid}/reset", json={}, headers=h).get_json() == first
    assert _balance(client, uid) == 4


def test_unknown_user_does_not_burn_the_key(client):
    h = {"Idempotency-Key": "k4"}
    assert client.post("/api/credits/777/add", json={"amount": 1}, headers=h).status_code == 404
    uid = new_user(client)
    assert client.post(f"/api/credits/{uid}/add", json={"amount": 1}, headers=h).status_code == 200


def test_keys_are_scoped_to_the_actor(app, client):
    uid = new_user(client)
    with app.app_context():
        a = ledger.add(uid, 5, actor="svc-a", idempotency_key="same")
        b = ledger.add(uid, 5, actor="svc-b", idempotency_key="same")
        assert a.entry.id != b.entry.id and not a.replayed and not b.replayed
        assert ledger.add(uid, 5, actor="svc-a", idempotency_key="same").replayed
        try:
            ledger.add(uid, 6, actor="svc-b", idempotency_key="same")
            raise AssertionError("expected IdempotencyMismatch")
        except IdempotencyMismatch:
            pass
    assert _balance(client, uid) == 10


def test_expired_key_never_takes_effect_twice(app, client):
    uid = new_user(client)
    h = {"Idempotency-Key": "old"}
    client.post(f"/api/credits/{uid}/add", json={"amount": 5}, headers=h)
    with app.app_context(), db.engine.begin() as conn:  # the purge of expired records
        conn.execute(text("DELETE FROM idempotency_keys"))
    r = client.post(f"/api/credits/{uid}/add", json={"amount": 5}, headers=h)
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "idempotency_key_expired"
    assert _balance(client, uid) == 5


def test_malformed_keys_are_400(client):
    uid = new_user(client)
    for key in ["", "a" * 256, "has space", "caf\xe9", "tab\tkey", "a,b"]:
        r = client.post(f"/api/credits/{uid}/add", json={"amount": 1}, headers={"Idempotency-Key": key})
        assert r.status_code == 400, repr(key)
        assert r.get_json()["error"]["code"] == "invalid_header"
    assert _balance(client, uid) == 0  # two headers on the wire: test_hostile_wire


def test_expired_key_records_are_purged_and_still_never_apply_twice(app, client, runner):
    from datetime import timedelta

    from credits_app.types import utcnow

    uid = new_user(client)
    h = {"Idempotency-Key": "purge-me"}
    client.post(f"/api/credits/{uid}/add", json={"amount": 5}, headers=h)
    with app.app_context():
        assert ledger.purge_idempotency_keys() == 0  # fresh: kept for IDEMPOTENCY_TTL_HOURS
        ttl = app.config["IDEMPOTENCY_TTL_HOURS"]
        assert ledger.purge_idempotency_keys(now=utcnow() + timedelta(hours=ttl - 1)) == 0
        assert ledger.purge_idempotency_keys(now=utcnow() + timedelta(hours=ttl, minutes=1)) == 1
    r = client.post(f"/api/credits/{uid}/add", json={"amount": 5}, headers=h)
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "idempotency_key_expired"
    assert _balance(client, uid) == 5
    assert runner.invoke(args=["credits", "purge-keys"]).output.strip() == "purged 0 idempotency key record(s)"
