"""A storm on hot users (PostgreSQL, a real threaded server): holds, captures (all or part),
releases, holds that expire mid-storm, deducts, adds, reversals and resets race, with the
daily grant and the expiry sweep running for the same users throughout. Afterwards: 0 <= held <= credits, held is
the sum of the open holds, ledger = balance, no 5xx, and every refusal is right: the figures
it reports justify it, and they are figures the user really had."""
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import pytest
from sqlalchemy import text

from credits_app import ledger
from credits_app.extensions import db
from credits_app.ledger import holds
from tests.conftest import LiveServer, client_as, new_user, token_for
from tests.test_concurrency import call

MAX_BALANCE = 5000


class Storm:
    """Sends random operations; picks holds and entries to act on from earlier answers."""

    def __init__(self, srv, users, seed):
        self.srv, self.users = srv, users
        self.rnd = random.Random(seed)
        self.lock = threading.Lock()
        self.hold_ids, self.entries = [], {uid: [] for uid in users}
        self.results = []  # (method, path, body, status, answer)

    def job(self, i):
        with self.lock:
            rnd = random.Random(self.rnd.random())
            hold_id = rnd.choice(self.hold_ids) if self.hold_ids else None
        uid = rnd.choice(self.users)
        headers = {"Idempotency-Key": f"storm-{i}"} if rnd.random() < 0.2 else {}
        roll = rnd.random()
        if roll < 0.25:
            body = {"amount": rnd.randint(1, 120), "ttl_seconds": rnd.choice([1, 1, 600])}
            return "POST", f"/api/credits/{uid}/holds", body, headers
        if roll < 0.40 and hold_id:
            body = {} if rnd.random() < 0.3 else {"amount": rnd.randint(1, 130)}
            return "POST", f"/api/holds/{hold_id}/capture", body, headers
        if roll < 0.48 and hold_id:
            return "POST", f"/api/holds/{hold_id}/release", None, headers
        if roll < 0.68:
            return "POST", f"/api/credits/{uid}/deduct", {"amount": rnd.randint(1, 150)}, headers
        if roll < 0.88:
            return "POST", f"/api/credits/{uid}/add", {"amount": rnd.randint(1, 200)}, headers
        if roll < 0.97:
            with self.lock:
                entries = self.entries[uid][-20:]
            if entries:
                body = {"reason": "storm", **({"amount": rnd.randint(1, 60)} if rnd.random() < 0.5 else {})}
                return "POST", f"/api/credits/{uid}/entries/{rnd.choice(entries)}/reverse", body, headers
        return "PATCH", f"/api/credits/{uid}/reset", {}, headers

    def send(self, i):
        method, path, body, headers = self.job(i)
        status, answer = call(self.srv.url, method, path, body, headers, token=self.srv.token)
        with self.lock:
            self.results.append((method, path, body, status, answer))
            if status in (200, 201):
                if "hold" in answer:
                    self.hold_ids.append(answer["hold"]["hold_id"])
                entry = answer.get("entry")
                if entry and entry["kind"] != "reversal":
                    self.entries[entry["user_id"]].append(entry["id"])


@pytest.mark.parametrize("app_env", [{"MAX_AMOUNT": "1000", "MAX_BALANCE": str(MAX_BALANCE),
                                      "AUTH_SERVICE_CAN_RESET": "true", "AUTH_SERVICE_CAN_REVERSE": "true"}])
def test_a_storm_of_holds_keeps_every_rule_and_every_refusal_right(pg_app):
    client = client_as(pg_app)
    users = [new_user(client, email=f"hot{i}@example.com") for i in range(3)]
    for uid in users:
        assert client.post(f"/api/credits/{uid}/add", json={"amount": 500}).status_code == 200
    stop = threading.Event()

    def grant_days():
        day = date(2026, 1, 1)
        with pg_app.app_context():
            while not stop.is_set():
                ledger.grant_daily_chunk(day, 5, min(users), max(users) + 1)
                day += timedelta(days=1)

    def sweep():  # the worker's sweep records expired holds while the storm runs
        with pg_app.app_context():
            while not stop.wait(0.05):
                holds.sweep()

    workers = [threading.Thread(target=grant_days), threading.Thread(target=sweep)]
    for worker in workers:
        worker.start()
    try:
        with LiveServer(pg_app, token_for(pg_app, "service")) as srv:
            storm = Storm(srv, users, seed=21)
            with ThreadPoolExecutor(12) as pool:
                for wave in range(3):  # the short holds of one wave are past their time in the next
                    list(pool.map(storm.send, range(wave * 250, (wave + 1) * 250)))
                    time.sleep(1.1)
    finally:
        stop.set()
        for worker in workers:
            worker.join()

    with pg_app.app_context():
        holds.sweep()
        assert ledger.verify() == [] and holds.verify_holds() == ([], [])
        with db.engine.connect() as conn:
            rows = conn.execute(text("SELECT user_id, credits, held FROM credits WHERE user_id = ANY(:u)"),
                                {"u": users}).all()
            had = {uid: {0} for uid in users}  # every balance each user really had
            for uid, balance in conn.execute(text("SELECT user_id, balance_after FROM ledger_entries")):
                had.setdefault(uid, {0}).add(balance)
            final = dict(conn.execute(text("SELECT id, status FROM holds")).all())
            amounts = dict(conn.execute(text("SELECT id, amount FROM holds")).all())
    for _, credits, held in rows:
        assert 0 <= held <= credits
    seen = {"insufficient_credits": 0, "hold_not_open": 0, "hold_expired": 0}
    for method, path, body, status, answer in storm.results:
        assert status < 500, (path, body, answer)
        if status in (200, 201):
            continue
        code, details = answer["error"]["code"], answer["error"]["details"]
        seen[code] = seen.get(code, 0) + 1
        if code == "insufficient_credits":
            assert details["available"] == details["balance"] - details["held"] < details["requested"], answer
            assert 0 <= details["held"] <= details["balance"], answer
            uid = int(path.split("/")[3])
            assert details["balance"] in had[uid], answer  # a balance the user really had
        elif code == "balance_limit_exceeded":
            assert details["balance"] + details["requested"] > details["max_balance"], answer
        elif code in ("hold_not_open", "hold_expired"):
            # A hold's status moves once: the one reported is the one it kept.
            assert details["status"] == final[details["hold_id"]] != "open", answer
            assert (code == "hold_expired") == (details["status"] == "expired")
        elif code == "capture_exceeds_hold":
            assert details["requested"] > details["amount"] == amounts[details["hold_id"]], answer
        elif code == "reversal_exceeds_remaining":
            assert details["requested"] is None or details["requested"] > details["remaining"], answer
        else:
            raise AssertionError(f"unexpected refusal {answer}")
    # The mix really reaches every limit it tests.
    assert seen["insufficient_credits"] > 10 and seen["hold_not_open"] + seen["hold_expired"] > 10, seen
    assert seen["hold_expired"] > 0, seen


def test_the_sweep_and_the_daily_grant_never_deadlock(pg_app):
    """The grant locks a chunk's balance rows in the order it finds them; the sweep must never
    hold one user's row while it waits for another's, or the two can wait on each other."""
    client = client_as(pg_app)
    users = [new_user(client, email=f"s{i}@example.com") for i in range(30)]
    for uid in users:
        assert client.post(f"/api/credits/{uid}/add", json={"amount": 1000}).status_code == 200
    stop, errors = threading.Event(), []

    def loop(step):
        def run():
            with pg_app.app_context():
                i = 0
                while not stop.is_set():
                    try:
                        step(i)
                    except Exception as e:  # noqa: BLE001 - every failure is the test's finding
                        errors.append(e)
                        return
                    i += 1
        return threading.Thread(target=run)

    def hold_and_age(i):  # a hold already past its time, as if its TTL had run out
        holds.create(users[i % len(users)], 1, actor="storm")
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE holds SET created_at = created_at - interval '1 day', "
                              "expires_at = statement_timestamp() - interval '1 second' WHERE status = 'open'"))

    threads = [loop(lambda i: ledger.grant_daily_chunk(date(2026, 1, 1) + timedelta(days=i), 5, min(users),
                                                       max(users) + 1)),
               loop(lambda i: holds.sweep(batch=7)), loop(lambda i: holds.sweep(batch=7)), loop(hold_and_age)]
    for thread in threads:
        thread.start()
    time.sleep(6)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    with pg_app.app_context():
        holds.sweep()
        assert ledger.verify() == [] and holds.verify_holds() == ([], [])
