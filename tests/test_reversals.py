"""Reversals: a compensating entry naming the entry it reverses, partial until the whole,
never beyond, decided on the locked row; on SQLite and PostgreSQL, and racing on PostgreSQL."""
import pytest

from credits_app import grants, ledger
from tests.conftest import client_as, make_app, new_user


def _change(client, uid, kind, amount, **body):
    r = client.post(f"/api/credits/{uid}/{kind}", json={"amount": amount, **body})
    assert r.status_code == 200, r.get_json()
    return r.get_json()["entry"]


def _reverse(client, uid, entry_id, amount=None, reason="refund", headers=None):
    body = {"reason": reason, **({"amount": amount} if amount is not None else {})}
    return client.post(f"/api/credits/{uid}/entries/{entry_id}/reverse", json=body, headers=headers or {})


def test_partial_reversals_until_the_whole_never_beyond(app):
    client = client_as(app)
    uid = new_user(client)
    _change(client, uid, "add", 100)
    spend = _change(client, uid, "deduct", 30)
    r = _reverse(client, uid, spend["id"], 10, reason="partial refund")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["credits"] == 80 and body["entry"]["kind"] == "reversal" and body["entry"]["amount"] == 10
    assert body["entry"]["reverses"] == spend["id"] and body["entry"]["reason"] == "partial refund"
    r = _reverse(client, uid, spend["id"], 25)
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "reversal_exceeds_remaining"
    assert r.get_json()["error"]["details"] | {"requested": 25} == {"entry_id": spend["id"], "remaining": 20,
                                                                     "requested": 25}
    assert _reverse(client, uid, spend["id"]).get_json()["credits"] == 100  # all that remains: 20
    r = _reverse(client, uid, spend["id"], 1)
    assert r.status_code == 409 and r.get_json()["error"]["details"]["remaining"] == 0
    # The original is unchanged; the books balance.
    items = client.get(f"/api/credits/{uid}/transactions").get_json()["items"]
    assert [(e["kind"], e["amount"]) for e in items] == [("reversal", 20), ("reversal", 10), ("deduct", -30),
                                                        ("add", 100)]
    with app.app_context():
        assert ledger.verify() == []


def test_reversing_a_credit_needs_the_balance_and_says_so(app):
    client = client_as(app)
    uid = new_user(client)
    grant = _change(client, uid, "add", 50)
    _change(client, uid, "deduct", 45)
    r = _reverse(client, uid, grant["id"], 10)
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "insufficient_credits"
    details = r.get_json()["error"]["details"]
    assert details == {"balance": 5, "held": 0, "available": 5, "requested": 10}
    assert details["available"] < details["requested"]
    assert details["available"] == details["balance"] - details["held"]
    assert _reverse(client, uid, grant["id"], 5).get_json()["credits"] == 0


@pytest.mark.parametrize("app_env", [{"MAX_AMOUNT": "100", "MAX_BALANCE": "100"}])
def test_reversing_a_reset_credits_back_up_to_the_cap(app):
    client = client_as(app)
    uid = new_user(client)
    _change(client, uid, "add", 60)
    reset = client.patch(f"/api/credits/{uid}/reset", json={}).get_json()["entry"]
    assert reset["amount"] == -60
    _change(client, uid, "add", 70)
    r = _reverse(client, uid, reset["id"])
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "balance_limit_exceeded"
    assert r.get_json()["error"]["details"] == {"balance": 70, "requested": 60, "max_balance": 100}
    assert _reverse(client, uid, reset["id"], 30).get_json()["credits"] == 100


def test_a_daily_grant_is_reversible_and_a_reversal_is_not(app):
    client = client_as(app)
    uid = new_user(client)
    with app.app_context():
        grants.run_date(grants.utc_today())
    (grant,) = client.get(f"/api/credits/{uid}/transactions").get_json()["items"]
    assert grant["kind"] == "daily_grant"
    reversal = _reverse(client, uid, grant["id"], 2).get_json()["entry"]
    r = _reverse(client, uid, reversal["id"])
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "not_reversible"


def test_what_cannot_be_reversed_is_refused_clearly(app):
    client = client_as(app)
    uid, other = new_user(client), new_user(client, "bob@example.com")
    mine = _change(client, uid, "add", 10)
    for path_uid, entry_id, code in ((uid, 999999, "entry_not_found"), (other, mine["id"], "entry_not_found"),
                                     (424242, mine["id"], "user_not_found")):
        r = _reverse(client, path_uid, entry_id)
        assert r.status_code == 404 and r.get_json()["error"]["code"] == code, (path_uid, entry_id, r.get_json())
    for body in ({"amount": 0, "reason": "x"}, {"amount": -5, "reason": "x"}, {"amount": 2.0, "reason": "x"},
                 {"amount": 1}, {"amount": 1, "reason": ""}, {"amount": True, "reason": "x"}):
        r = client.post(f"/api/credits/{uid}/entries/{mine['id']}/reverse", json=body)
        assert r.status_code == 422 and r.get_json()["error"]["code"] == "validation_error", (body, r.get_json())
    r = client.post(f"/api/credits/{uid}/entries/{mine['id']}/reverse", json={"amount": 10**10, "reason": "x"})
    assert r.status_code == 422, r.get_json()
    assert client.get(f"/api/credits/{uid}").get_json()["credits"] == 10


def test_an_idempotency_key_reverses_once(app):
    client = client_as(app)
    uid = new_user(client)
    _change(client, uid, "add", 10)
    spend = _change(client, uid, "deduct", 8)
    key = {"Idempotency-Key": "refund-1"}
    first = _reverse(client, uid, spend["id"], 3, headers=key)
    again = _reverse(client, uid, spend["id"], 3, headers=key)
    assert first.status_code == again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json() and again.get_json()["credits"] == 5
    r = _reverse(client, uid, spend["id"], 4, headers=key)
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "idempotency_key_reused"
    # A keyed refusal is replayed as it was, even once the reversal could apply.
    grant = _change(client, uid, "add", 20)
    _change(client, uid, "deduct", 25)
    retry = {"Idempotency-Key": "undo-grant"}
    refused = _reverse(client, uid, grant["id"], 5, headers=retry)
    assert refused.status_code == 409
    assert refused.get_json()["error"]["details"] == {"balance": 0, "held": 0, "available": 0, "requested": 5}
    _change(client, uid, "add", 5)
    again = _reverse(client, uid, grant["id"], 5, headers=retry)
    assert (again.status_code, again.get_json()) == (409, refused.get_json())
    assert again.headers["Idempotent-Replayed"] == "true"
    assert client.get(f"/api/credits/{uid}").get_json()["credits"] == 5


def test_only_admins_reverse_unless_service_is_allowed(backend, request, tmp_path):
    from tests.conftest import _fresh_url

    for switch, status in (("false", 403), ("true", 200)):
        (tmp_path / switch).mkdir()
        app = make_app(_fresh_url(backend, request, tmp_path / switch), AUTH_SERVICE_CAN_REVERSE=switch)
        admin = client_as(app)
        uid = new_user(admin)
        entry = _change(admin, uid, "add", 10)
        r = _reverse(client_as(app, "service"), uid, entry["id"])
        assert r.status_code == status, (switch, r.get_json())
        assert _reverse(client_as(app, "user", user_id=uid), uid, entry["id"]).status_code == 403


def test_cli_reverse(app, runner):
    client = client_as(app)
    uid = new_user(client)
    entry = _change(client, uid, "add", 10)
    r = runner.invoke(args=["credits", "reverse", str(uid), str(entry["id"]), "4", "--reason", "typo"])
    assert r.exit_code == 0 and f"user {uid}: 6 credits" in r.output and "reversal -4" in r.output, r.output
    r = runner.invoke(args=["credits", "reverse", str(uid), str(entry["id"]), "7", "--reason", "again"])
    assert r.exit_code == 1 and "reversal_exceeds_remaining" in r.output and "remaining: 6" in r.output, r.output


def test_racing_reversals_and_deducts_never_pass_the_original(pg_app):
    """Partial reversals of one entry race each other and deducts through a real server: the
    reversals never add up past the original, every refusal's figures justify it, and the
    books balance."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import LiveServer, token_for
    from tests.test_concurrency import call

    client = client_as(pg_app)
    uid = new_user(client)
    _change(client, uid, "add", 500)
    spend = _change(client, uid, "deduct", 100)
    jobs = [("POST", f"/api/credits/{uid}/entries/{spend['id']}/reverse", {"amount": 7, "reason": "race"})] * 30
    jobs += [("POST", f"/api/credits/{uid}/deduct", {"amount": 3})] * 30
    with LiveServer(pg_app, token_for(pg_app, "admin")) as srv:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda job: call(srv.url, *job, token=srv.token), jobs))
    assert {status for status, _ in results} <= {200, 409}, results
    reversed_total = sum(b["entry"]["amount"] for s, b in results if s == 200 and b["entry"]["kind"] == "reversal")
    assert reversed_total == 14 * 7  # 100 // 7 reversals fit; the rest are refused
    for status, body in results:
        if status == 409:
            error = body["error"]
            assert error["code"] == "reversal_exceeds_remaining", error
            assert error["details"]["remaining"] < error["details"]["requested"], error
    with pg_app.app_context():
        assert ledger.verify() == [] and ledger.over_reversed() == []


def test_verify_reports_an_entry_reversed_past_its_amount(app, runner):
    """What the service never writes, written by hand: verify names it."""
    from sqlalchemy import text

    from credits_app.extensions import db

    client = client_as(app)
    uid = new_user(client)
    entry = _change(client, uid, "add", 10)
    assert "no entry is reversed past its amount" in runner.invoke(args=["credits", "verify"]).output
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("INSERT INTO ledger_entries (user_id, kind, amount, balance_after, actor, reverses) "
                          "VALUES (:u, 'reversal', -11, 0, 'hand', :e)"), {"u": uid, "e": entry["id"]})
        conn.execute(text("UPDATE credits SET credits = 0 WHERE user_id = :u"), {"u": uid})
    r = runner.invoke(args=["credits", "verify"])
    assert r.exit_code == 1 and f"entry {entry['id']} of user {uid}: amount 10, reversed -11" in r.output, r.output
