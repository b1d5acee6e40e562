"""Hostile input, in process (SQLite and PostgreSQL): every request below gets a 4xx JSON
error (never a 500, never an HTML page) and changes nothing — no balance, ledger row, user,
idempotency claim or revocation appears. tests/test_validation.py covers the basic bad
amounts and bodies; this file adds what an attacker tries next. The raw-socket part (what
a test client cannot send) is tests/test_hostile_wire.py.

Injected: lone UTF-16 surrogates, NUL characters, duplicate keys, huge and negative-zero
numbers, deep nesting, invalid UTF-8, SQL-injection strings in every path, query, body and
header field, unicode edge cases in names and emails.
Observed: the status and JSON error shape of each answer, and the tables before/after.
Invariants (DESIGN.md): 1 (no negative balance), 2 (ledger = balance), 4 (a refused
request burns no Idempotency-Key) and the one error shape."""
import json

import pytest
from sqlalchemy import text

from credits_app import ledger
from credits_app.extensions import db
from tests.conftest import new_user

TABLES = ("users", "credits", "ledger_entries", "idempotency_keys", "revoked_tokens")


def snapshot(app):
    """Everything a request could change: row counts, balances, user rows, and the ledger."""
    with app.app_context():
        with db.engine.connect() as conn:
            counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in TABLES}
            balances = dict(conn.execute(text("SELECT user_id, credits FROM credits")).all())
            users = sorted(tuple(r) for r in conn.execute(text("SELECT user_id, email, name FROM users")).all())
        assert ledger.verify() == [], "invariant 2: a balance drifted from its ledger"
    assert all(b >= 0 for b in balances.values()), "invariant 1: a balance went negative"
    return counts, balances, users


def assert_error(r, status=None, code=None):
    """A 4xx answer in the one JSON error shape, with a request id."""
    assert 400 <= r.status_code < 500, (r.status_code, r.data[:300])
    if status is not None:
        assert r.status_code == status, (r.status_code, r.data[:300])
    assert r.is_json, ("not JSON", r.status_code, r.data[:300])
    err = r.get_json()["error"]
    assert set(err) == {"code", "message", "details"}, err
    if code is not None:
        assert err["code"] == code, err
    assert r.headers.get("X-Request-ID"), "no request id on an error"
    return err


@pytest.fixture
def uid(client):
    user = new_user(client, "victim@example.com", "Victim")
    assert client.post(f"/api/credits/{user}/add", json={"amount": 50}).status_code == 200
    return user


def raw_json(client, method, path, raw, headers=None):
    return client.open(path, method=method, data=raw, content_type="application/json", headers=headers or {})


def body_targets(uid):
    """(method, path, JSON template with a {} where the hostile string goes) for every body
    string field of every endpoint that takes one."""
    return [
        ("POST", f"/api/credits/{uid}/add", '{"amount": 1, "reason": %s}'),
        ("POST", f"/api/credits/{uid}/deduct", '{"amount": 1, "reason": %s}'),
        ("PATCH", f"/api/credits/{uid}/reset", '{"reason": %s}'),
        ("POST", "/api/users", '{"email": "new@example.com", "name": %s}'),
        ("POST", "/api/users", '{"email": %s, "name": "N"}'),
        ("PATCH", f"/api/users/{uid}", '{"name": %s}'),
        ("PATCH", f"/api/users/{uid}", '{"email": %s}'),
        ("POST", "/api/auth/revoke", '{"jti": %s}'),
        ("POST", "/api/auth/revoke", '{"jti": "x", "reason": %s}'),
        ("POST", "/api/auth/tokens", '{"role": "service", "sub": %s}'),
        ("POST", "/api/grants/daily/run", '{"date": %s}'),
    ]


# --- lone surrogates: valid JSON syntax, no valid text -------------------------------------

@pytest.mark.parametrize("escape", ["\\ud800", "\\uDFFF", "x\\udbff", "\\ude00\\ud83d"])
def test_lone_surrogate_escapes_are_400_in_every_body_field(app, client, uid, escape):
    """Injected: a JSON string escape naming half a UTF-16 pair in each body field (and as a
    key). Before the fix these reached the driver and answered 500 (or, for a token subject,
    minted a token whose subject could not be stored). Observed: 400 malformed_json."""
    before = snapshot(app)
    for method, path, template in body_targets(uid):
        r = raw_json(client, method, path, (template % f'"{escape}"').encode())
        assert_error(r, 400, "malformed_json")
    assert_error(raw_json(client, "POST", f"/api/credits/{uid}/add", f'{{"amount": 1, "{escape}": 1}}'.encode()),
                 400, "malformed_json")
    assert snapshot(app) == before, "a refused request changed something"


def test_surrogate_pairs_and_escaped_backslashes_are_ordinary_text(client, uid):
    """The surrogate check refuses only halves: a real pair is one astral character, and an
    escaped backslash followed by 'ud800' is six plain characters."""
    r = raw_json(client, "POST", f"/api/credits/{uid}/add", b'{"amount": 1, "reason": "\\uD83D\\uDE00 \\\\ud800"}')
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["entry"]["reason"] == "\U0001F600 \\ud800"


# --- NUL characters: PostgreSQL text cannot hold them ---------------------------------------

def test_nul_in_any_body_field_is_422(app, client, uid):
    """Injected: "\\u0000" inside each body string field (and a key). Before the fix, the
    revoke endpoint's jti/reason reached psycopg2 and answered 500 on PostgreSQL.
    Observed: 422 validation_error naming the field; nothing stored."""
    before = snapshot(app)
    for method, path, template in body_targets(uid):
        r = raw_json(client, method, path, (template % '"a\\u0000b"').encode())
        err = assert_error(r, 422, "validation_error")
        assert err["details"].get("fields"), err
    assert_error(raw_json(client, "POST", f"/api/credits/{uid}/add", b'{"amount": 1, "re\\u0000ason": "x"}'), 422)
    assert snapshot(app) == before


@pytest.mark.parametrize("query", ["/api/users?email=a%00b@example.com", "/api/users?cursor=%00",
                                   "/api/users?limit=1%00", "/api/credits/{uid}/transactions?cursor=v1%00",
                                   "/api/credits/{uid}/transactions?limit=%00", "/api/grants/daily?limit=%00",
                                   "/api/schema/changes?cursor=%00"])
def test_nul_in_any_query_parameter_is_422(app, client, uid, query):
    """Injected: %00 in each query parameter. Before the fix, ?email= with a NUL answered 500
    on PostgreSQL. Observed: 422 naming the parameter."""
    before = snapshot(app)
    r = client.get(query.format(uid=uid))
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite") and query.startswith("/api/schema"):
        assert r.status_code == 200 or 400 <= r.status_code < 500
        return
    assert_error(r, 422, "validation_error")
    assert snapshot(app) == before


# --- duplicate keys: parsers disagree on which one wins -------------------------------------

@pytest.mark.parametrize("raw", [b'{"amount": 1, "amount": 1000000}', b'{"amount": 5, "reason": "a", "reason": "b"}',
                                 b'{"amount": 5, "reason": {"x": 1, "x": 2}}'])
def test_duplicate_keys_are_400(app, client, uid, raw):
    """Injected: the same key twice. Before the fix the last one silently won (an add of
    1,000,000 where a proxy that keeps the first key saw 1). Observed: 400 malformed_json."""
    before = snapshot(app)
    for op in ("add", "deduct"):
        assert_error(raw_json(client, "POST", f"/api/credits/{uid}/{op}", raw), 400, "malformed_json")
    assert snapshot(app) == before
