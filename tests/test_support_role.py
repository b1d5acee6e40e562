"""The `support` role: a person answering questions about users reads any user's balance,
ledger, history, holds, the grant runs and the webhooks' endpoints and deliveries, and is
refused every change (403 JSON), whatever the request carries; its token is issued like the
others' and its requests meet a rate limit of their own."""
from datetime import date

import jwt as pyjwt
import pytest

from credits_app import grants
from credits_app.auth.access import RULES, permissions_of
from credits_app.extensions import db
from tests.conftest import TEST_SECRET, _fresh_url, client_as, make_app, new_user

PUBLIC = "https://93.184.215.14/credits-hooks"  # an address literal: needs no DNS, nothing is sent


@pytest.fixture
def books(app):
    """Two users with entries, a hold, an endpoint with a delivery, a grant run."""
    admin = client_as(app)
    ann, bob = new_user(admin, "ann@example.com"), new_user(admin, "bob@example.com")
    r = admin.post("/api/webhooks/endpoints", json={"url": PUBLIC, "event_types": ["credits.changed"]})
    assert r.status_code == 201, r.get_json()
    endpoint = r.get_json()["endpoint_id"]
    for uid in (ann, bob):
        assert admin.post(f"/api/credits/{uid}/add", json={"amount": 20, "reason": "welcome"}).status_code == 200
    entry = admin.post(f"/api/credits/{ann}/deduct", json={"amount": 5}).get_json()["entry"]["id"]
    hold = admin.post(f"/api/credits/{ann}/holds", json={"amount": 3}).get_json()["hold"]["hold_id"]
    with app.app_context():
        grants.run_date(date(2026, 1, 1))
    delivery = admin.get(f"/api/webhooks/deliveries?endpoint={endpoint}").get_json()["items"][0]["delivery_id"]
    return {"ann": ann, "bob": bob, "entry": entry, "hold": hold, "endpoint": endpoint, "delivery": delivery}


def _ok(response):
    assert response.status_code == 200, (response.request.path, response.get_json())
    return response.get_json()


def test_support_reads_any_users_books(app, books):
    support, admin = client_as(app, "support", sub="sam"), client_as(app)
    ann, bob = books["ann"], books["bob"]
    for uid in (ann, bob):  # any user, not one of its own
        assert _ok(support.get(f"/api/credits/{uid}")) == _ok(admin.get(f"/api/credits/{uid}"))
        assert _ok(support.get(f"/api/users/{uid}"))["user_id"] == uid
    assert [u["user_id"] for u in _ok(support.get("/api/users"))["items"]] == [ann, bob]
    assert _ok(support.get("/api/users?email=BOB@example.com"))["items"][0]["user_id"] == bob
    ledger = _ok(support.get(f"/api/credits/{ann}/transactions"))["items"]
    assert [e["kind"] for e in ledger] == ["daily_grant", "deduct", "add"] and ledger[1]["id"] == books["entry"]
    assert _ok(support.get(f"/api/credits/{ann}?as_of={ledger[2]['created_at'].replace('+00:00', 'Z')}"))[
        "credits"] == 20
    assert _ok(support.get(f"/api/credits/{ann}/history?points=3"))["points"][-1]["credits"] == 20
    assert _ok(support.get(f"/api/credits/{ann}/alerts"))["user_id"] == ann
    assert [h["hold_id"] for h in _ok(support.get(f"/api/credits/{ann}/holds"))["items"]] == [books["hold"]]
    assert _ok(support.get(f"/api/holds/{books['hold']}"))["user_id"] == ann
    run = _ok(support.get("/api/grants/daily"))["items"][0]
    assert (run["grant_date"], run["status"], run["users_credited"]) == ("2026-01-01", "done", 2)
    assert [e["endpoint_id"] for e in _ok(support.get("/api/webhooks/endpoints"))["items"]] == [books["endpoint"]]
    endpoint = _ok(support.get(f"/api/webhooks/endpoints/{books['endpoint']}"))
    assert "secret" not in endpoint
    deliveries = _ok(support.get("/api/webhooks/deliveries"))["items"]
    assert books["delivery"] in [d["delivery_id"] for d in deliveries]
    assert _ok(support.get(f"/api/webhooks/deliveries/{books['delivery']}"))["event_type"] == "credits.changed"
    me = _ok(support.get("/api/auth/whoami"))
    assert (me["sub"], me["role"], me.get("user_id")) == ("sam", "support", None)
    assert me["permissions"] == ["auth:whoami", "credits:read", "grants:read", "holds:read", "users:read",
                                 "webhooks:read"]


def _refused(response):
    assert response.status_code == 403 and response.is_json, (response.request.path, response.status_code)
    error = response.get_json()["error"]
    assert error["code"] == "forbidden" and error["details"]["role"] == "support"
    return error


def test_support_is_refused_every_change_and_nothing_changes(app, books):
    support, admin = client_as(app, "support"), client_as(app)
    ann, entry, hold = books["ann"], books["entry"], books["hold"]
    before = {uid: _ok(admin.get(f"/api/credits/{uid}/transactions"))["items"] for uid in (ann, books["bob"])}
    key = {"Idempotency-Key": "support-try"}
    calls = [
        (support.post, f"/api/credits/{ann}/add", {"amount": 5}, "credits:add"),
        (support.post, f"/api/credits/{ann}/deduct", {"amount": 5}, "credits:deduct"),
        (support.patch, f"/api/credits/{ann}/reset", {"reason": "r"}, "credits:reset"),
        (support.post, f"/api/credits/{ann}/entries/{entry}/reverse", {"reason": "r"}, "credits:reverse"),
        (support.post, f"/api/credits/{ann}/holds", {"amount": 1}, "holds:create"),
        (support.post, f"/api/holds/{hold}/release", {}, "holds:release"),
        (support.post, f"/api/holds/{hold}/capture", {}, "holds:capture"),
        (support.put, f"/api/credits/{ann}/alerts", {"low_balance_threshold": 1}, "credits:alerts"),
        (support.post, "/api/grants/daily/run", {"date": "2026-01-01"}, "grants:run"),
        (support.post, "/api/schema/apply", {"sql": "CREATE TABLE t (id int)", "dry_run": True}, "schema:apply"),
        (support.post, "/api/webhooks/endpoints", {"url": PUBLIC, "event_types": ["credits.changed"]},
         "webhooks:manage"),
        (support.post, f"/api/webhooks/deliveries/{books['delivery']}/retry", {}, "webhooks:manage"),
        (support.post, "/api/auth/tokens", {"role": "admin", "sub": "sam-again"}, "tokens:issue"),
        (support.post, "/api/auth/revoke", {"jti": "x"}, "tokens:revoke"),
        (support.post, "/api/users", {"email": "eve@example.com", "name": "Eve"}, "users:create"),
        (support.patch, f"/api/users/{ann}", {"name": "Ann B"}, "users:update"),
        (support.post, "/api/queues/credits/failed/x/requeue", {}, "jobs:requeue"),
    ]
    for call, path, body, permission in calls:
        assert _refused(call(path, json=body, headers=key))["details"]["permission"] == permission
    for uid, items in before.items():
        assert _ok(admin.get(f"/api/credits/{uid}/transactions"))["items"] == items
    assert _ok(admin.get(f"/api/holds/{hold}"))["status"] == "open"
    assert len(_ok(admin.get("/api/users"))["items"]) == 2
    assert len(_ok(admin.get("/api/webhooks/endpoints"))["items"]) == 1


def test_support_changes_nothing_by_the_rule_table(app):
    """Every route that is not a read is refused to support, and support holds no
    permission but reads (so a new change endpoint cannot be granted to it by accident)."""
    support = client_as(app, "support")
    writes = 0
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = rule.rule.replace("<int:", "<").replace("<user_id>", "1")
        for part in ("<entry_id>", "<hold_id>", "<endpoint_id>", "<delivery_id>"):
            path = path.replace(part, "1")
        for method in rule.methods - {"GET", "HEAD", "OPTIONS"}:
            _refused(support.open(path.replace("<name>", "credits").replace("<job_id>", "x"), method=method, json={}))
            writes += 1
    assert writes >= 20
    assert all(p.endswith((":read", ":whoami")) for p in permissions_of("support"))
    assert set(permissions_of("support")) == {p for p, roles in RULES.items() if "support" in roles}
    # Not the admin's reads of the whole ledger, the schema, the events feed or the queues.
    for path in ("/api/ledger/export", "/api/schema", "/api/schema/changes", "/api/events?since=2026-01-01T00:00:00Z",
                 "/api/queues"):
        _refused(support.get(path))


def test_support_tokens_are_issued_by_the_cli_and_the_api(app, runner):
    r = runner.invoke(args=["auth", "issue-token", "--role", "support", "--sub", "alice", "--ttl", "8h"])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[0]
    claims = pyjwt.decode(token, TEST_SECRET, algorithms=["HS256"])
    assert (claims["role"], claims["sub"], claims.get("user_id")) == ("support", "alice", None)
    assert app.test_client().get("/api/users", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    bad = runner.invoke(args=["auth", "issue-token", "--role", "support", "--sub", "alice", "--user-id", "1"])
    assert bad.exit_code == 1 and "--user-id" in bad.output  # a user id is for role user only
    r = client_as(app).post("/api/auth/tokens", json={"role": "support", "sub": "bea"})
    assert r.status_code == 201 and r.get_json()["role"] == "support" and r.get_json()["user_id"] is None
    who = app.test_client().get("/api/auth/whoami", headers={"Authorization": f"Bearer {r.get_json()['token']}"})
    assert who.get_json()["sub"] == "bea" and who.get_json()["role"] == "support"


def test_support_has_a_rate_limit_of_its_own(backend, request, tmp_path):
    app = make_app(_fresh_url(backend, request, tmp_path), RATELIMIT_ENABLED="true", RATELIMIT_SUPPORT="3/minute")
    sam, sue, admin = client_as(app, "support", sub="sam"), client_as(app, "support", sub="sue"), client_as(app)
    assert [sam.get("/api/users").status_code for _ in range(4)] == [200, 200, 200, 429]
    r = sam.get("/api/users")
    assert r.get_json()["error"]["code"] == "rate_limited" and r.headers["X-RateLimit-Limit"] == "3"
    assert sue.get("/api/users").status_code == 200  # per person
    assert admin.get("/api/users").status_code == 200
    with app.app_context():
        db.engine.dispose()
