"""Races through a real HTTP server on real PostgreSQL: many threads at once on one user."""
import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import text

from credits_app import ledger
from credits_app.extensions import db
from tests.conftest import LiveServer, client_as, new_user, token_for


def call(base, method, path, body=None, headers=None, token=None):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}",
                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _hammer(srv, jobs, workers=24):
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda job: call(srv.url, *job, token=srv.token), jobs))


def test_concurrent_deducts_never_go_negative(pg_app):
    client = client_as(pg_app)
    uid = new_user(client)
    client.post(f"/api/credits/{uid}/add", json={"amount": 100})
    with LiveServer(pg_app, token_for(pg_app, "service")) as srv:
        results = _hammer(srv, [("POST", f"/api/credits/{uid}/deduct", {"amount": 7})] * 40)
    ok = [b for s, b in results if s == 200]
    refused = [b for s, b in results if s == 409]
    assert len(ok) + len(refused) == 40, [s for s, _ in results if s not in (200, 409)]
    assert len(ok) == 100 // 7  # exactly as many as fit
    assert all(b["error"]["code"] == "insufficient_credits" and b["error"]["details"]["balance"] < 7 for b in refused)
    assert sorted(b["credits"] for b in ok) == sorted(100 - 7 * i for i in range(1, len(ok) + 1))
    final = client.get(f"/api/credits/{uid}").get_json()["credits"]
    assert final == 100 - 7 * len(ok) >= 0
    with pg_app.app_context():
        assert ledger.verify() == []


def test_concurrent_mixed_changes_are_all_counted(pg_app):
    client = client_as(pg_app)
    uid = new_user(client)
    jobs = [("POST", f"/api/credits/{uid}/add", {"amount": 3})] * 30 + \
           [("POST", f"/api/credits/{uid}/deduct", {"amount": 2})] * 30
    with LiveServer(pg_app, token_for(pg_app, "service")) as srv:
        results = _hammer(srv, jobs)
    added = sum(3 for (s, _), j in zip(results, jobs) if s == 200 and j[1].endswith("add"))
    deducted = sum(2 for (s, _), j in zip(results, jobs) if s == 200 and j[1].endswith("deduct"))
    assert all(s in (200, 409) for s, _ in results)
    assert added == 90
    assert client.get(f"/api/credits/{uid}").get_json()["credits"] == added - deducted
    with pg_app.app_context():
        assert ledger.verify() == []


def test_concurrent_identical_idempotency_keys_take_effect_once(pg_app):
    client = client_as(pg_app)
    uid = new_user(client)
    job = ("POST", f"/api/credits/{uid}/add", {"amount": 10}, {"Idempotency-Key": "same-key"})
    with LiveServer(pg_app, token_for(pg_app, "service")) as srv:
        results = _hammer(srv, [job] * 30)
    assert {s for s, _ in results} == {200}
    assert len({b["entry"]["id"] for _, b in results}) == 1
    assert client.get(f"/api/credits/{uid}").get_json()["credits"] == 10
    with pg_app.app_context():
        assert db.session.execute(text("SELECT count(*) FROM ledger_entries")).scalar() == 1


def test_concurrent_identical_keys_on_refused_deduct(pg_app):
    client = client_as(pg_app)
    uid = new_user(client)
    client.post(f"/api/credits/{uid}/add", json={"amount": 5})
    jobs = [("POST", f"/api/credits/{uid}/deduct", {"amount": 4}, {"Idempotency-Key": "d"})] * 20
    with LiveServer(pg_app, token_for(pg_app, "service")) as srv:
        results = _hammer(srv, jobs)
    assert {s for s, _ in results} == {200}
    assert client.get(f"/api/credits/{uid}").get_json()["credits"] == 1


def test_first_changes_of_a_seed_user_race_without_500(pg_app):
    """Seed flow: the user has no credits row; many first requests arrive at once."""
    with pg_app.app_context(), db.engine.begin() as conn:
        conn.execute(text("INSERT INTO users (user_id, email, name) VALUES (900, 'race@example.com', 'R')"))
    with LiveServer(pg_app, token_for(pg_app, "service")) as srv:
        results = _hammer(srv, [("POST", "/api/credits/900/add", {"amount": 1})] * 30)
    assert [s for s, _ in results] == [200] * 30
    assert client_as(pg_app).get("/api/credits/900").get_json()["credits"] == 30
    with pg_app.app_context():
        assert ledger.verify() == []
