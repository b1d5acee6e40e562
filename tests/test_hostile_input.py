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


# --- numbers: huge, negative zero, floats in disguise ----------------------------------------

@pytest.mark.parametrize("literal", [b"1e309", b"-1e309", b"2e0", b"1E2", b"-0", b"-0.0", b"0.0", b"0e0",
                                     b"9223372036854775808", b"18446744073709551616", b"-9223372036854775809",
                                     str(2**63).encode(), str(10**4000).encode(), b"1" + b"0" * 4300])
def test_huge_and_negative_zero_amounts_change_nothing(app, client, uid, literal):
    """Injected: amounts beyond BIGINT, beyond float range (1e309 parses as inf), and negative
    zero. Observed: 422 (or 400 for a literal past Python's digit limit), balance intact."""
    before = snapshot(app)
    for op in ("add", "deduct"):
        r = raw_json(client, "POST", f"/api/credits/{uid}/{op}", b'{"amount": ' + literal + b"}")
        assert r.status_code in (400, 422), (literal[:30], r.status_code)
        assert_error(r)
    assert snapshot(app) == before


@pytest.mark.parametrize("segment", ["9223372036854775808", "99999999999999999999999", "0", "-0", "-1", "+1",
                                     "1e3", "1.0", "0x10", "%2B1", "1%20", "%EF%BC%91", "١", "01", "001", "00",
                                     "/1", "1/", "/"])
def test_hostile_user_ids_in_paths_are_404(app, client, uid, segment):
    """Injected: ids past BIGINT, zero, signs, exponents, hex, fullwidth and Arabic-Indic
    digits, leading zeros (another spelling of user 1) and doubled slashes (werkzeug's 308
    redirect with an HTML body) in every user-id path. Observed: 404 JSON everywhere;
    nothing changes."""
    before = snapshot(app)
    for method, path, body in [("GET", "/api/credits/{}", None), ("POST", "/api/credits/{}/add", {"amount": 1}),
                               ("POST", "/api/credits/{}/deduct", {"amount": 1}),
                               ("PATCH", "/api/credits/{}/reset", {}), ("GET", "/api/credits/{}/transactions", None),
                               ("GET", "/api/users/{}", None), ("PATCH", "/api/users/{}", {"name": "x"})]:
        assert_error(client.open(path.format(segment), method=method, json=body), 404)
    assert snapshot(app) == before


@pytest.mark.parametrize("value", ["9223372036854775808", "-0", "0", "1e309", "1.5", "inf", "NaN", "-1", "%20"])
def test_hostile_limits_are_422(client, uid, value):
    for path in (f"/api/credits/{uid}/transactions", "/api/users"):
        assert_error(client.get(f"{path}?limit={value}"), 422)


# --- nesting and bad encodings ---------------------------------------------------------------

@pytest.mark.parametrize("raw", [b'{"amount": 1, "reason": ' + b'{"a": ' * 9000 + b"1" + b"}" * 9001,
                                 b'{"amount": ' + b"[" * 20000 + b"]" * 20000 + b"}",
                                 b'{"amount": 1, "reason": ' + b'[{"a": ' * 5000 + b"1" + b"}]" * 5000 + b"}",
                                 b'{"amount": 1, "reason": "\xc0\xaf"}',  # overlong '/'
                                 b'{"amount": 1, "reason": "\xed\xa0\x80"}',  # a surrogate encoded (CESU-8)
                                 b'{"amount": 1, "reason": "\xf4\x90\x80\x80"}',  # past U+10FFFF
                                 b'{"amount": 1, "reason": "\xe2\x82"}',  # truncated sequence
                                 b'{"amount": 1, "reason": "ok"}\xff',
                                 b'\x00{"amount": 1}', b'{"amount": 1}\x00', b'{"amount"\x00: 1}'])
def test_deep_nesting_and_invalid_utf8_change_nothing(app, client, uid, raw):
    """Injected: nesting deep enough to overflow a recursive parser (kept under the body
    limit), invalid UTF-8 (overlong, CESU-8 surrogates, past U+10FFFF, truncated, trailing
    garbage) and raw NUL bytes. Observed: 400/422 JSON, nothing changes."""
    before = snapshot(app)
    r = raw_json(client, "POST", f"/api/credits/{uid}/add", raw)
    assert r.status_code in (400, 422), r.status_code
    assert_error(r)
    assert snapshot(app) == before


# --- SQL injection in every path, query, body and header field ------------------------------

INJECTIONS = ["' OR '1'='1", "1; DROP TABLE credits; --", "1) OR (1=1", "'; UPDATE credits SET credits=10^12; --",
              "\\'; TRUNCATE ledger_entries; --", "1 UNION SELECT user_id, credits FROM credits --",
              "$$; DELETE FROM users; $$", "'||pg_sleep(10)||'", "%' OR email LIKE '%"]


def test_sql_injection_in_every_field_is_inert(app, client, uid):
    """Injected: classic injection strings in the user-id path segment, every query
    parameter, every body text field, the Idempotency-Key header (a visible-ASCII variant)
    and X-Request-ID. Observed: paths 404, queries 400/422 or an empty page, text fields
    stored literally (it is text, not SQL) or refused as invalid emails, keys used literally;
    no table lost a row, no balance moved except by the requests that legitimately added."""
    from urllib.parse import quote
    before_counts, before_balances, _ = snapshot(app)
    added = 0
    for i, evil in enumerate(INJECTIONS):
        q = quote(evil, safe="")
        for path in (f"/api/credits/{q}", f"/api/credits/{q}/add", f"/api/users/{q}", f"/api/credits/{uid}/{q}"):
            assert_error(client.post(path, json={"amount": 1}) if path.endswith("add") else client.get(path))
        for query in (f"/api/users?email={q}", f"/api/users?cursor={q}", f"/api/users?limit={q}",
                      f"/api/credits/{uid}/transactions?cursor={q}", f"/api/credits/{uid}/transactions?limit={q}"):
            r = client.get(query)
            assert r.status_code in (200, 400, 422), (query, r.status_code)
            if r.status_code == 200:
                assert r.get_json()["items"] == [], (query, r.get_json())
            else:
                assert_error(r)
        key = evil.replace(" ", "_").replace(",", ";")  # a valid key: no space, no comma
        r = client.post(f"/api/credits/{uid}/add", json={"amount": 1, "reason": evil},
                        headers={"Idempotency-Key": key + f"-{i}", "X-Request-ID": evil})
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["entry"]["reason"] == evil and r.get_json()["entry"]["idempotency_key"] == key + f"-{i}"
        assert r.headers["X-Request-ID"] != evil  # not a sane id: replaced, never echoed
        added += 1
        assert_error(client.post("/api/users", json={"email": evil, "name": "x"}), 422)
        r = client.post("/api/users", json={"email": f"inj{i}@example.com", "name": evil})
        assert r.status_code == 201 and r.get_json()["name"] == evil
        assert_error(client.get(f"/api/users?email={q}&limit=0"), 422)
    counts, balances, _ = snapshot(app)
    assert counts["ledger_entries"] == before_counts["ledger_entries"] + added
    assert balances[uid] == before_balances[uid] + added
    assert counts["users"] == before_counts["users"] + len(INJECTIONS)
    assert all(balances[u] == b for u, b in before_balances.items() if u != uid)


# --- unicode edge cases in names and emails ------------------------------------------------

NAMES = ["\u202eevil\u202c", "zero\u200bwidth", "e\u0301\u0301\u0301", "👩‍👩‍👧‍👦", "\U0001F600" * 200,
         "ǅ ß ﬁ İ ı", "名前", "\ufeffbom", "a\u2028b\u2029c", "\u00a0", "\t", "x" * 200, "𝔘𝔫𝔦𝔠𝔬𝔡𝔢"]
EMAILS = ["ÄNN@example.com", "änn@example.com", "用户@例子.广告", "a@xn--e1afmkfd.xn--p1ai", "a\u200b@example.com",
          "\u202eann@example.com", "ann@exa\u0301mple.com", "İ@example.com", "i̇@example.com", "K@example.com",
          "\u212a@example.com", "a@[127.0.0.1]", '"a b"@example.com', "a@b", "a" * 65 + "@example.com",
          "ann@example.com\n", " ann2@example.com"]


@pytest.mark.parametrize("name", NAMES)
def test_unicode_names_round_trip_or_are_refused(client, name):
    """Injected: bidi overrides, zero-width and combining characters, ZWJ emoji, astral
    characters at the length limit, BOM, line/paragraph separators. Observed: a 201 whose
    name reads back exactly, or a 4xx JSON error — never a 500 or a mangled name."""
    r = client.post("/api/users", json={"email": "uni@example.com", "name": name})
    if r.status_code == 201:
        user = r.get_json()
        assert user["name"] == name
        assert client.get(f"/api/users/{user['user_id']}").get_json()["name"] == name
    else:
        assert_error(r)
    assert_error(client.post("/api/users", json={"email": "uni2@example.com", "name": "\U0001F600" * 201}), 422)


def test_unicode_emails_are_refused_or_found_by_themselves(app, client):
    """Injected: unicode local parts and domains, case pairs that only unicode folds (Ä/ä,
    K/KELVIN SIGN, İ/i̇), invisible and bidi characters, quoted and IP-literal forms.
    Observed: each is a 4xx JSON error or a 201; a created user is found by its exact email
    (and by no other user's), and no two created users collide on an email lookup."""
    created = {}
    for email in EMAILS:
        r = client.post("/api/users", json={"email": email, "name": "U"})
        if r.status_code == 201:
            created[email] = r.get_json()["user_id"]
        else:
            assert_error(r)
    for email, user_id in created.items():
        from urllib.parse import quote
        found = [u["user_id"] for u in client.get(f"/api/users?email={quote(email)}").get_json()["items"]]
        assert user_id in found, f"user {user_id} is not found by its own email {email!r}: {found}"


def test_a_hostile_path_is_not_echoed_at_length(client, anon):
    """Injected: a path segment of 5,000 characters (and control and bidi characters) where a
    user id goes, and under no route at all. Observed: 404 not_found whose message names the
    path cut short, with the same answer for an anonymous caller."""
    for segment in ("9" * 20 + "x" * 5000, "\u202e\t" * 2000):
        for path in (f"/api/credits/{segment}", f"/api/{segment}"):
            answers = []
            for who in (client, anon):
                err = assert_error(who.get(path), 404, "not_found")
                assert len(err["message"]) < 250, len(err["message"])
                answers.append((err["message"], err["details"]))
            assert answers[0] == answers[1]
