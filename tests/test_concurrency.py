"""Races through a real HTTP server on real PostgreSQL: many threads at once on one user."""
import json
import random
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import pytest

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
    for b in refused:
        details = b["error"]["details"]
        assert b["error"]["code"] == "insufficient_credits" and details["requested"] == 7, b
        assert details["available"] < details["requested"] and details["held"] == 0, b
        assert details["available"] == details["balance"] - details["held"], b
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


class _Log:
    """What each request saw: the entry ids of the changes that had completed when it was
    sent, and its own outcome, in the order things happened."""

    def __init__(self):
        self.lock = threading.Lock()
        self.newest_done = 0  # the highest entry id among the changes completed so far

    def send(self, srv, job):
        method, path, body, headers = job
        with self.lock:
            floor = self.newest_done
        status, answer = call(srv.url, method, path, body, headers, token=srv.token)
        if status == 200:
            with self.lock:
                self.newest_done = max(self.newest_done, answer["entry"]["id"])
        return floor, status, answer


def _hot_user_jobs(uid, count, seed):
    rnd = random.Random(seed)
    jobs = []
    for i in range(count):
        roll = rnd.random()
        headers = {"Idempotency-Key": f"k-{seed}-{i}"} if rnd.random() < 0.3 else {}
        if roll < 0.45:
            jobs.append(("POST", f"/api/credits/{uid}/add", {"amount": rnd.randint(1, 40)}, headers))
        elif roll < 0.93:
            jobs.append(("POST", f"/api/credits/{uid}/deduct", {"amount": rnd.randint(1, 80)}, headers))
        else:
            jobs.append(("PATCH", f"/api/credits/{uid}/reset", {}, headers))
    return jobs


@pytest.mark.parametrize("app_env", [{"MAX_AMOUNT": "100", "MAX_BALANCE": "400", "AUTH_SERVICE_CAN_RESET": "true"}])
def test_every_refusal_is_justified_by_a_balance_no_older_than_the_request(pg_app):
    """The oracle is the refusal itself: a refused deduct reports a balance smaller than it
    asked for, a refused add one the cap cannot take it from, and that balance is one the
    user really had after the last change that completed before the request was sent (the
    balance_after of an entry no older than that change). A reset is never refused. The
    daily grant runs for the same user throughout, as it does beside real traffic."""
    client = client_as(pg_app)
    uid = new_user(client)
    client.post(f"/api/credits/{uid}/add", json={"amount": 50})
    jobs = _hot_user_jobs(uid, 360, seed=17)
    log = _Log()
    stop = threading.Event()

    def grant_days():
        day = date(2026, 1, 1)
        with pg_app.app_context():
            while not stop.is_set():
                ledger.grant_daily_chunk(day, 5, uid, uid + 1)
                day += timedelta(days=1)

    granter = threading.Thread(target=grant_days)
    granter.start()
    try:
        with LiveServer(pg_app, token_for(pg_app, "service")) as srv:
            with ThreadPoolExecutor(12) as pool:
                results = list(pool.map(lambda job: log.send(srv, job), jobs))
            replays = {i: call(srv.url, *job, token=srv.token) for i, job in enumerate(jobs) if job[3]}
    finally:
        stop.set()
        granter.join()

    with pg_app.app_context(), db.engine.connect() as conn:
        after = dict(conn.execute(text("SELECT id, balance_after FROM ledger_entries WHERE user_id = :u"),
                                  {"u": uid}).all())
        assert ledger.verify() == []
    refusals = 0
    for i, (job, (floor, status, answer)) in enumerate(zip(jobs, results)):
        method, path, body, headers = job
        if headers:  # a keyed answer, refusal or not, is stored and replayed as it was made
            assert replays[i] == (status, answer)
        if path.endswith("/reset"):
            assert status == 200, answer
            continue
        assert status in (200, 409), answer
        if status == 200:
            continue
        refusals += 1
        details = answer["error"]["details"]
        if path.endswith("/deduct"):
            assert answer["error"]["code"] == "insufficient_credits"
            assert details["requested"] == body["amount"] and details["available"] < details["requested"], answer
            assert details["available"] == details["balance"] - details["held"], answer
        else:
            assert answer["error"]["code"] == "balance_limit_exceeded"
            assert details["balance"] + body["amount"] > details["max_balance"], answer
        seen = [i for i, b in after.items() if i >= floor and b == details["balance"]]
        assert seen, f"{path} {body}: balance {details['balance']} is older than entry {floor}"
    assert refusals > 20  # the mix really pushes the balance to both of its limits
