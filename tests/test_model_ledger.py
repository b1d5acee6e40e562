"""Model-based testing: Hypothesis drives random sequences of create user / add / deduct /
reset / reversal of a random entry / hold / capture (all or part) / release / a hold's time
passing / the expiry sweep / daily grant for random dates / Idempotency-Key replays (same key
and body; same key, different body) through the HTTP API (Flask test client) against real
PostgreSQL, and after every step checks every balance, what is held, every hold's status and
every user's whole ledger against a plain in-memory model.

Each example runs in a database of its own, cloned from the migrated template (the ledger
refuses DELETE/TRUNCATE, so nothing is ever cleaned in place). The daily grant runs through
credits_app.grants.run_date, the function the worker's jobs call (the HTTP endpoint only
enqueues it to Redis). MAX_AMOUNT/MAX_BALANCE are small so the balance cap is reached.

Size: MODEL_EXAMPLES (default 40) examples of MODEL_STEPS (default 30) steps, under a
minute. DESIGN.md invariants checked after every step: 1 (never negative), 2 (balance equals
the ledger sum: here, the exact ledger), 3 (one grant per user and date), 4 (a key takes
effect once, a replay returns the original answer, a different request with it is 422), and
the holds' rules: 0 <= held <= credits, held is the sum of the open holds not past their
time, a debit spends only credits - held, a hold closes once."""
import itertools
import os
from datetime import date

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, multiple, rule, \
    run_state_machine_as_test

from sqlalchemy import text

from credits_app import grants, ledger
from credits_app.extensions import db
from credits_app.ledger import holds
from tests.conftest import client_as, make_app

MAX_AMOUNT, MAX_BALANCE, GRANT = 1000, 3000, 5
DATES = [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)]
_SERVER = {}
_dbs = itertools.count()


class LedgerMachine(RuleBasedStateMachine):
    users = Bundle("users")
    keys = Bundle("keys")
    holds = Bundle("holds")

    def __init__(self):
        super().__init__()
        server = _SERVER["pg"]
        self.dbname = f"model_{os.getpid()}_{next(_dbs)}"
        server.psql("postgres", f"CREATE DATABASE {self.dbname} TEMPLATE template_credits")
        self.app = make_app(server.url(self.dbname), MAX_AMOUNT=str(MAX_AMOUNT), MAX_BALANCE=str(MAX_BALANCE),
                            DAILY_GRANT_AMOUNT=str(GRANT), DAILY_GRANT_CHUNK_SIZE="2", AUTH_SERVICE_CAN_RESET="true",
                            AUTH_SERVICE_CAN_REVERSE="true")
        self.client = client_as(self.app, "service", sub="model")
        self.balance = {}  # user -> credits
        self.entries = {}  # user -> [(kind, amount, balance_after)], oldest first
        self.granted_dates = set()
        self.answers = {}  # key -> (request, status, json)
        self.reversed = {}  # entry id -> credits reversed so far (positive)
        self.hold = {}  # hold id -> [user, amount, status]; "expired" once its time has passed
        self.emails = itertools.count()

    def teardown(self):
        with self.app.app_context():
            db.engine.dispose()
        _SERVER["pg"].psql("postgres", f"DROP DATABASE {self.dbname}")

    # --- the model --------------------------------------------------------------------
    def _held(self, user):
        return sum(amount for owner, amount, status in self.hold.values() if owner == user and status == "open")

    def _expect(self, op, user, amount):
        """(status, delta) the model predicts for an unkeyed request."""
        bal = self.balance[user]
        if op == "add":
            return (200, amount) if bal + amount <= MAX_BALANCE else (409, 0)
        if op == "deduct":
            return (200, -amount) if amount <= bal - self._held(user) else (409, 0)
        return 200, -bal  # reset

    def _send(self, op, user, amount, reason, key):
        headers = {"Idempotency-Key": key} if key else {}
        if op == "reset":
            body = {} if reason is None else {"reason": reason}
            return self.client.patch(f"/api/credits/{user}/reset", json=body, headers=headers)
        body = {"amount": amount} if reason is None else {"amount": amount, "reason": reason}
        return self.client.post(f"/api/credits/{user}/{op}", json=body, headers=headers)

    def _apply(self, op, user, amount, reason, key):
        status, delta = self._expect(op, user, amount)
        r = self._send(op, user, amount, reason, key)
        assert r.status_code == status, (op, user, amount, self.balance[user], r.status_code, r.get_json())
        body = r.get_json()
        if status == 200:
            if op == "reset":  # closes every hold of the user
                for hold in self.hold.values():
                    if hold[0] == user and hold[2] == "open":
                        hold[2] = "released"
            self.balance[user] += delta
            self.entries[user].append((op, delta, self.balance[user]))
            assert body["credits"] == self.balance[user] and body["entry"]["amount"] == delta
            assert body["entry"]["idempotency_key"] == key and body["entry"]["actor"] == "model"
            assert "Idempotent-Replayed" not in r.headers
        else:
            assert body["error"]["code"] == ("insufficient_credits" if op == "deduct" else "balance_limit_exceeded")
            assert body["error"]["details"]["balance"] == self.balance[user]
            if op == "deduct":
                held = self._held(user)
                assert body["error"]["details"] == {"balance": self.balance[user], "held": held,
                                                    "available": self.balance[user] - held, "requested": amount}
        if key:
            self.answers[key] = ((op, user, amount, reason), status, body)
        return status

    # --- rules -------------------------------------------------------------------------
    @rule(target=users, name=st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s))
    def create_user(self, name):
        r = self.client.post("/api/users", json={"email": f"m{next(self.emails)}@example.com", "name": name})
        assert r.status_code == 201, r.get_json()
        user = r.get_json()["user_id"]
        self.balance[user], self.entries[user] = 0, []
        return user

    @rule(user=users, op=st.sampled_from(["add", "deduct"]), amount=st.integers(1, MAX_AMOUNT),
          reason=st.none() | st.text(max_size=10).filter(lambda s: "\x00" not in s))
    def change(self, user, op, amount, reason):
        self._apply(op, user, amount, reason, None)

    @rule(user=users)
    def reset(self, user):
        self._apply("reset", user, None, None, None)

    @rule(target=keys, user=users, op=st.sampled_from(["add", "deduct", "reset"]),
          amount=st.integers(1, MAX_AMOUNT), reason=st.none() | st.sampled_from(["a", "b"]),
          key=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e, exclude_characters=","),  # a valid key
                      min_size=1, max_size=12))
    def keyed_change(self, user, op, amount, reason, key):
        if key in self.answers:  # a reused key is the replay rules' business
            return multiple()
        self._apply(op, user, None if op == "reset" else amount, reason, key)
        return key

    @rule(key=keys)
    def replay_same(self, key):
        (op, user, amount, reason), status, body = self.answers[key]
        r = self._send(op, user, amount, reason, key)
        assert (r.status_code, r.get_json()) == (status, body), "a replay must return the original answer"
        if status == 200:
            assert r.headers.get("Idempotent-Replayed") == "true"

    @rule(key=keys, change=st.sampled_from(["amount", "reason", "op", "user"]), data=st.data())
    def replay_different(self, key, change, data):
        (op, user, amount, reason), _, _ = self.answers[key]
        if change == "amount" and op != "reset":
            amount = amount % MAX_AMOUNT + 1
        elif change == "reason" or (change == "amount" and op == "reset"):
            reason = "other" if reason != "other" else "other2"
        elif change == "op":
            op, amount = ("add", amount or 1) if op != "add" else ("deduct", amount)
        else:
            others = [u for u in self.balance if u != user]
            if not others:
                reason = "other" if reason != "other" else "other2"
            else:
                user = data.draw(st.sampled_from(others))
        r = self._send(op, user, amount, reason, key)
        assert r.status_code == 422 and r.get_json()["error"]["code"] == "idempotency_key_reused", r.get_json()

    @rule(user=users, data=st.data())
    def reverse(self, user, data):
        """Reverse a random entry of the user, all that remains or a random amount."""
        if not self.entries[user]:
            return
        ids = [e["id"] for e in self.client.get(f"/api/credits/{user}/transactions?limit=200").get_json()["items"]]
        index = data.draw(st.integers(0, min(len(ids), len(self.entries[user])) - 1))
        entry_id, (kind, original, _) = ids[index], self.entries[user][::-1][index]
        amount = data.draw(st.none() | st.integers(1, MAX_AMOUNT))
        body = {"reason": "model", **({"amount": amount} if amount is not None else {})}
        r = self.client.post(f"/api/credits/{user}/entries/{entry_id}/reverse", json=body)
        error = (r.get_json().get("error") or {}).get("code")
        if kind == "reversal":
            assert (r.status_code, error) == (422, "not_reversible"), r.get_json()
            return
        remaining = abs(original) - self.reversed.get(entry_id, 0)
        requested = remaining if amount is None else amount
        delta = requested if original < 0 else -requested
        bal = self.balance[user]
        if requested == 0 or requested > remaining:
            expected = (409, "reversal_exceeds_remaining")
        elif bal - self._held(user) + delta < 0:
            expected = (409, "insufficient_credits")
        elif bal + delta > MAX_BALANCE:
            expected = (409, "balance_limit_exceeded")
        else:
            expected = (200, None)
        assert (r.status_code, error) == expected, (kind, original, remaining, amount, bal, r.get_json())
        if r.status_code == 200:
            self.reversed[entry_id] = self.reversed.get(entry_id, 0) + requested
            self.balance[user] += delta
            self.entries[user].append(("reversal", delta, self.balance[user]))
            assert r.get_json()["entry"]["reverses"] == entry_id

    @rule(target=holds, user=users, amount=st.integers(1, MAX_AMOUNT))
    def create_hold(self, user, amount):
        r = self.client.post(f"/api/credits/{user}/holds", json={"amount": amount})
        bal, held = self.balance[user], self._held(user)
        if amount > bal - held:
            assert r.status_code == 409 and r.get_json()["error"]["details"] == {
                "balance": bal, "held": held, "available": bal - held, "requested": amount}, r.get_json()
            return multiple()
        assert r.status_code == 201, (bal, held, amount, r.get_json())
        body = r.get_json()
        self.hold[body["hold"]["hold_id"]] = [user, amount, "open"]
        assert (body["credits"], body["held"], body["available"]) == (bal, held + amount, bal - held - amount)
        return body["hold"]["hold_id"]

    @rule(hold_id=holds, amount=st.none() | st.integers(1, MAX_AMOUNT))
    def capture(self, hold_id, amount):
        user, held_amount, status = self.hold[hold_id]
        r = self.client.post(f"/api/holds/{hold_id}/capture", json={} if amount is None else {"amount": amount})
        error = (r.get_json().get("error") or {}).get("code")
        if status != "open":
            assert (r.status_code, error) == (409, "hold_expired" if status == "expired" else "hold_not_open")
            return
        if amount is not None and amount > held_amount:
            assert (r.status_code, error) == (409, "capture_exceeds_hold"), r.get_json()
            return
        taken = held_amount if amount is None else amount
        assert r.status_code == 200, r.get_json()
        self.hold[hold_id][2] = "captured"
        self.balance[user] -= taken
        self.entries[user].append(("capture", -taken, self.balance[user]))
        assert r.get_json()["entry"]["hold_id"] == hold_id and r.get_json()["hold"]["captured"] == taken

    @rule(hold_id=holds)
    def release(self, hold_id):
        status = self.hold[hold_id][2]
        r = self.client.post(f"/api/holds/{hold_id}/release")
        if status != "open":
            assert r.status_code == 409 and r.get_json()["error"]["details"]["status"] == status
            return
        assert r.status_code == 200 and r.get_json()["hold"]["status"] == "released", r.get_json()
        self.hold[hold_id][2] = "released"

    @rule(hold_id=holds)
    def time_passes(self, hold_id):
        """The hold's time runs out: moved into the past in the database (the clock the
        service reads), as if its TTL had passed."""
        with self.app.app_context(), db.engine.begin() as conn:
            conn.execute(text("UPDATE holds SET created_at = created_at - interval '1 day', "
                              "expires_at = statement_timestamp() - interval '1 second' WHERE id = :id"),
                         {"id": hold_id})
        if self.hold[hold_id][2] == "open":
            self.hold[hold_id][2] = "expired"

    @rule()
    def sweep(self):
        with self.app.app_context():
            holds.sweep()
            with db.engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM holds WHERE status = 'open' "
                                         "AND expires_at <= statement_timestamp()")).scalar() == 0

    @rule(day=st.sampled_from(DATES))
    def daily_grant(self, day):
        with self.app.app_context():
            run = grants.run_date(day)
        if day not in self.granted_dates:
            # The run plans the users that exist now; every one below the cap gets the grant.
            self.granted_dates.add(day)
            credited = 0
            for user in sorted(self.balance):
                if self.balance[user] + GRANT <= MAX_BALANCE:
                    self.balance[user] += GRANT
                    self.entries[user].append(("daily_grant", GRANT, self.balance[user]))
                    credited += 1
            assert run.users_credited == credited
        assert run.status == "done"

    @rule(op=st.sampled_from(["add", "deduct", "reset"]), user=st.integers(10**6, 2**63 - 1),
          key=st.none() | st.just("k-404"))
    def unknown_user(self, op, user, key):
        r = self._send(op, user, 1, None, key)
        if key in self.answers:  # the key already took effect for another request
            assert r.status_code == 422 and r.get_json()["error"]["code"] == "idempotency_key_reused"
            return
        assert r.status_code == 404 and r.get_json()["error"]["code"] == "user_not_found"
        if key and self.balance:  # a 404 does not burn the key: it still works for a real user
            some = min(self.balance)
            self._apply("add", some, 1, None, key)

    @rule(user=users, amount=st.sampled_from([0, -1, MAX_AMOUNT + 1, 1.5, True, "1", None]))
    def invalid_amount(self, user, amount):
        r = self.client.post(f"/api/credits/{user}/add", json={"amount": amount})
        assert r.status_code == 422

    # --- invariants: every balance and every ledger, after every step --------------------
    @invariant()
    def books_match_the_model(self):
        for user, expected in self.balance.items():
            r = self.client.get(f"/api/credits/{user}")
            held = self._held(user)
            assert r.status_code == 200 and r.get_json()["credits"] == expected, (user, expected, r.get_json())
            assert (r.get_json()["held"], r.get_json()["available"]) == (held, expected - held), r.get_json()
            assert 0 <= held <= expected
            rows, cursor = [], None
            while True:
                page = self.client.get(f"/api/credits/{user}/transactions?limit=200"
                                       + (f"&cursor={cursor}" if cursor else "")).get_json()
                rows += [(e["kind"], e["amount"], e["balance_after"]) for e in page["items"]]
                cursor = page["next_cursor"]
                if not cursor:
                    break
            assert rows[::-1] == self.entries[user], f"user {user}: ledger {rows[::-1]} != model {self.entries[user]}"
            assert expected >= 0
        for hold_id, (_, _, status) in self.hold.items():
            assert self.client.get(f"/api/holds/{hold_id}").get_json()["status"] == status
        with self.app.app_context():
            assert ledger.verify() == []
            assert holds.verify_holds() == ([], [])


@pytest.mark.slow
def test_ledger_matches_a_model_under_random_operation_sequences(pg_server):
    """Injected: random operation sequences (Hypothesis, shrinking on failure).
    Observed: after every step, balances and ledgers equal the in-memory model's."""
    _SERVER["pg"] = pg_server
    run_state_machine_as_test(LedgerMachine, settings=settings(
        max_examples=int(os.environ.get("MODEL_EXAMPLES", 40)),
        stateful_step_count=int(os.environ.get("MODEL_STEPS", 30)),
        deadline=None, database=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]))
