"""Authentication and authorization: the role matrix comes from auth.RULES itself, so the
tests cannot drift from the rules; every forged or stale token is refused."""
import base64
import hashlib
import hmac
import json
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from credits_app.auth.access import ROLES, RULES, roles_for
from credits_app.extensions import db
from tests.conftest import TEST_SECRET, client_as, make_app, new_user, token_for

OWN_ID = 1


def _api_routes(app):
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            view = app.view_functions[rule.endpoint]
            # The own user's id, and 1 for any other id in the path (an entry, a hold).
            path = re.sub(r"<int:(\w+)>", lambda m: str(OWN_ID) if m[1] == "user_id" else "1", rule.rule)
            yield method, path, getattr(view, "permission", None)


def _call(client, method, path, token):
    kwargs = {"headers": {"Authorization": f"Bearer {token}"} if token else {}}
    if method in ("POST", "PATCH", "PUT"):
        kwargs["json"] = {}
    return client.open(path, method=method, **kwargs)


def test_every_api_route_declares_a_permission(app):
    routes = list(_api_routes(app))
    assert len(routes) >= 10
    assert [r for r in routes if r[2] is None] == []


def test_role_matrix_follows_the_rule_table(app):
    client = app.test_client()
    with app.app_context():
        new_user(client_as(app), "own@example.com")
    assert {"admin", "service", "user", "support"} <= set(ROLES)
    tokens = {role: token_for(app, role, user_id=OWN_ID if role == "user" else None) for role in ROLES}
    checked = 0
    for method, path, permission in _api_routes(app):
        for role in ROLES:
            r = _call(client, method, path, tokens[role])
            assert r.status_code < 500 or r.status_code == 503, (method, path, role, r.get_json())
            assert r.is_json or (path == "/api/ledger/export" and r.status_code == 200), (method, path, role)
            if role in roles_for(permission):
                assert r.status_code not in (401, 403), (method, path, role, r.get_json())
            else:
                assert r.status_code == 403, (method, path, role, r.status_code)
                assert r.get_json()["error"]["code"] == "forbidden"
            checked += 1
    assert checked >= 30


def test_no_token_is_401_everywhere(app):
    client = app.test_client()
    for method, path, _ in _api_routes(app):
        r = _call(client, method, path, None)
        assert r.status_code == 401, (method, path)
        assert r.get_json()["error"]["code"] == "missing_token"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_open_endpoints_need_no_token(app):
    client = app.test_client()
    assert client.get("/openapi.json").status_code == 200


def test_user_token_reads_only_itself(app):
    admin = client_as(app)
    me, other = new_user(admin, "me@example.com"), new_user(admin, "other@example.com")
    user = client_as(app, "user", user_id=me)
    assert user.get(f"/api/credits/{me}").status_code == 200
    assert user.get(f"/api/credits/{me}/transactions").status_code == 200
    for path in (f"/api/credits/{other}", f"/api/credits/{other}/transactions"):
        r = user.get(path)
        assert r.status_code == 403 and r.get_json()["error"]["code"] == "forbidden"
    assert user.post(f"/api/credits/{me}/add", json={"amount": 1}).status_code == 403
    assert user.get("/api/auth/whoami").get_json()["user_id"] == me


def test_whoami_echoes_the_documented_claims(app):
    """sub, role, user_id, jti, iat and exp, as the README lists them; and the OpenAPI
    document describes each of them."""
    token = token_for(app, "user", sub="ann", user_id=OWN_ID)
    claims = pyjwt.decode(token, TEST_SECRET, algorithms=["HS256"])
    r = app.test_client().get("/api/auth/whoami", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.get_json()
    assert r.get_json() == {"sub": "ann", "role": "user", "user_id": OWN_ID, "jti": claims["jti"],
                            "iat": claims["iat"], "exp": claims["exp"],
                            "permissions": ["auth:whoami", "credits:read", "holds:read"]}
    spec = app.test_client().get("/openapi.json").get_json()
    schema = spec["components"]["schemas"]["WhoAmIOut"]["properties"]
    assert set(schema) == {"sub", "role", "user_id", "jti", "iat", "exp", "permissions"}
    assert schema["iat"]["type"] == "integer"
    assert schema["permissions"] == {"type": "array", "items": {"type": "string"},
                                     "description": schema["permissions"]["description"]}


def _permissions(app, role):
    r = client_as(app, role, user_id=OWN_ID if role == "user" else None).get("/api/auth/whoami")
    assert r.status_code == 200, r.get_json()
    return r.get_json()["permissions"]


def test_whoami_lists_what_each_role_may_do_as_the_rule_table_says(app):
    for role in ROLES:
        held = _permissions(app, role)
        assert held == sorted(p for p in RULES if role in RULES[p]), role
    assert "queues:read" in _permissions(app, "admin") and "credits:reset" not in _permissions(app, "service")


@pytest.mark.parametrize("switch, permission", [("AUTH_SERVICE_CAN_RESET", "credits:reset"),
                                                ("AUTH_SERVICE_CAN_REVERSE", "credits:reverse")])
def test_whoami_permissions_follow_the_configuration(backend, request, tmp_path, switch, permission):
    """What a service token may do depends on settings: whoami says what this service allows."""
    from tests.conftest import _fresh_url
    url = _fresh_url(backend, request, tmp_path)
    off, on = make_app(url), make_app(url, **{switch: "true"})
    assert permission not in _permissions(off, "service")
    assert _permissions(on, "service") == sorted([*_permissions(off, "service"), permission])
    for role in set(ROLES) - {"service"}:  # the switch is the service's alone
        assert _permissions(on, role) == _permissions(off, role)
    for a in (off, on):
        with a.app_context():
            db.engine.dispose()


def test_service_reset_is_a_config_switch(backend, request, tmp_path):
    from tests.conftest import _fresh_url
    url = _fresh_url(backend, request, tmp_path)
    for switch, expected in (("false", 403), ("true", 200)):
        app = make_app(url, AUTH_SERVICE_CAN_RESET=switch)
        uid = new_user(client_as(app), f"r{switch}@example.com")
        assert client_as(app, "service").patch(f"/api/credits/{uid}/reset").status_code == expected
        with app.app_context():
            db.engine.dispose()


# --- attack tokens ---------------------------------------------------------------------

def _claims(**over):
    now = int(time.time())
    claims = {"sub": "mallory", "role": "admin", "jti": str(uuid.uuid4()), "iat": now, "nbf": now,
              "exp": now + 600, "type": "access"}
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_with(key_bytes, claims):
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(key_bytes, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def _rsa_pair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, pub.decode()


def _expect_401(client, token, code="invalid_token"):
    r = client.get("/api/users", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401, (token[:40], r.get_json())
    assert r.get_json()["error"]["code"] == code
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_forged_and_stale_tokens_are_401(app):
    client = app.test_client()
    sign = lambda claims, key=TEST_SECRET: pyjwt.encode(claims, key, algorithm="HS256")  # noqa: E731
    _expect_401(client, "garbage")
    _expect_401(client, "a.b.c")
    _expect_401(client, sign(_claims(exp=int(time.time()) - 3600)), "token_expired")
    _expect_401(client, sign(_claims(nbf=int(time.time()) + 3600)))
    _expect_401(client, sign(_claims(), "another-secret-key-that-is-long-enough-000"))
    _expect_401(client, pyjwt.encode(_claims(), None, algorithm="none"))
    none_token = _b64(b'{"alg":"none","typ":"JWT"}') + "." + _b64(json.dumps(_claims()).encode()) + "."
    _expect_401(client, none_token)
    _expect_401(client, sign(_claims(role=None)))
    _expect_401(client, sign(_claims(jti=None)))
    _expect_401(client, sign(_claims(exp=None)))
    _expect_401(client, sign(_claims(sub=None)))
    _expect_401(client, sign(_claims(sub=42)))
    _expect_401(client, sign(_claims(role="user")))  # a user token without user_id
    valid = token_for(app)
    head, body, sig = valid.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(body + "==="))
    tampered["role"] = "admin"
    tampered["sub"] = "someone-else"
    _expect_401(client, f"{head}.{_b64(json.dumps(tampered).encode())}.{sig}")
    for header in ("Bearer", "Basic abc", f"Token {valid}", "Bearer  "):
        r = client.get("/api/users", headers={"Authorization": header})
        assert r.status_code == 401, header


def test_a_remembered_token_is_checked_again_against_the_clock_keys_and_rules(app):
    """A verified Authorization header is served from the process's cache afterwards; the
    cache must refuse exactly what a full verification would."""
    from freezegun import freeze_time
    client = app.test_client()
    token = token_for(app, "user", user_id=5, ttl_seconds=120)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/auth/whoami", headers=headers).status_code == 200  # now remembered
    assert client.get("/api/credits/6", headers=headers).status_code == 403  # the rules still apply
    assert len(app.extensions["credits.verified_tokens"]) == 1
    with freeze_time(datetime.now(timezone.utc) + timedelta(seconds=120 + 31)):  # past exp and the 30 s leeway
        r = client.get("/api/auth/whoami", headers=headers)
        assert r.status_code == 401 and r.get_json()["error"]["code"] == "token_expired"
    assert client.get("/api/auth/whoami", headers=headers).status_code == 200
    app.config["JWT_SECRET_KEY"] = "a-rotated-secret-that-is-long-enough-0123456789"
    _expect_401(client, token)  # verified under the old key only


def test_unknown_role_is_403(app):
    token = pyjwt.encode(_claims(role="superuser"), TEST_SECRET, algorithm="HS256")
    r = app.test_client().get("/api/users", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403 and r.get_json()["error"]["details"]["role"] == "superuser"


def test_external_identity_provider_keys(backend, request, tmp_path):
    from tests.conftest import _fresh_url
    rsa_key, rsa_pub = _rsa_pair()
    app = make_app(_fresh_url(backend, request, tmp_path), JWT_PUBLIC_KEY=rsa_pub, JWT_AUDIENCE="credits-api")
    client = app.test_client()
    good = pyjwt.encode(_claims(sub="idp|42", role="service", aud="credits-api"), rsa_key, algorithm="RS256")
    r = client.get("/api/users", headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 200
    # Signed by the same provider for another application, or for none: not for us.
    _expect_401(client, pyjwt.encode(_claims(role="service", aud="billing-ui"), rsa_key, algorithm="RS256"))
    _expect_401(client, pyjwt.encode(_claims(role="service", aud=["billing-ui", "crm"]), rsa_key, algorithm="RS256"))
    _expect_401(client, pyjwt.encode(_claims(role="service"), rsa_key, algorithm="RS256"))
    # Our own tokens carry the audience too, and still work.
    own = client_as(app, "service")
    assert own.get("/api/users").status_code == 200
    assert pyjwt.decode(own.token, options={"verify_signature": False})["aud"] == "credits-api"
    # HS/RS confusion: the public key used as an HMAC secret must not verify.
    _expect_401(client, _hs256_with(rsa_pub.encode(), _claims()))
    other_key, _ = _rsa_pair()
    _expect_401(client, pyjwt.encode(_claims(), other_key, algorithm="RS256"))
    with app.app_context():
        db.engine.dispose()

    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_pub = ec_key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    (tmp_path / "ec").mkdir()
    app = make_app(_fresh_url(backend, request, tmp_path / "ec"), JWT_PUBLIC_KEY=ec_pub, JWT_AUDIENCE="credits-api")
    token = pyjwt.encode(_claims(role="service", aud="credits-api"), ec_key, algorithm="ES256")
    assert app.test_client().get("/api/users", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    with app.app_context():
        db.engine.dispose()


def test_rs256_is_refused_when_no_public_key_is_configured(app):
    key, _ = _rsa_pair()
    _expect_401(app.test_client(), pyjwt.encode(_claims(), key, algorithm="RS256"))


# --- revocation -------------------------------------------------------------------------

def test_revoke_through_the_api(app):
    admin = client_as(app)
    victim = client_as(app, "service", sub="leaky-service")
    assert victim.get("/api/users").status_code == 200
    jti = victim.get("/api/auth/whoami").get_json()["jti"]
    r = admin.post("/api/auth/revoke", json={"jti": jti, "reason": "leaked in a log"})
    assert r.status_code == 200 and r.get_json() == {"jti": jti, "revoked": True, "already_revoked": False}
    r = victim.get("/api/users")
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "token_revoked"
    assert admin.post("/api/auth/revoke", json={"jti": jti}).get_json()["already_revoked"] is True


def test_revocation_is_in_the_database_and_seen_by_other_processes(backend, request, tmp_path):
    from tests.conftest import _fresh_url
    url = _fresh_url(backend, request, tmp_path)
    issuer = make_app(url)
    other = make_app(url, REVOCATION_CACHE_SECONDS="0")  # another process, no cache
    token = token_for(issuer, "service")
    client = other.test_client()
    assert client.get("/api/users", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    jti = pyjwt.decode(token, options={"verify_signature": False})["jti"]
    result = issuer.test_cli_runner().invoke(args=["auth", "revoke", jti, "--reason", "test"])
    assert result.exit_code == 0 and f"revoked {jti}" in result.output
    assert client.get("/api/users", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    for a in (issuer, other):
        with a.app_context():
            db.engine.dispose()


def test_cli_issues_working_tokens(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["auth", "issue-token", "--role", "service", "--sub", "platform", "--ttl", "15m"])
    assert result.exit_code == 0
    token = result.stdout.strip().splitlines()[0]
    claims = pyjwt.decode(token, TEST_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "platform" and claims["role"] == "service" and claims["jti"]
    assert 890 <= claims["exp"] - claims["iat"] <= 910
    r = app.test_client().get("/api/users", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    bad = runner.invoke(args=["auth", "issue-token", "--role", "user", "--sub", "u"])
    assert bad.exit_code == 1 and "--user-id" in bad.output
    # A user token must name a user: a typo would mint a token for whoever takes that id later.
    me = new_user(client_as(app), email="cli-token@example.com")
    good = runner.invoke(args=["auth", "issue-token", "--role", "user", "--sub", "me", "--user-id", str(me)])
    assert good.exit_code == 0 and pyjwt.decode(good.stdout.split()[0], TEST_SECRET,
                                                algorithms=["HS256"])["user_id"] == me
    for unknown in (me + 1000, 2**63 - 1, 2**63, 0, -5):
        bad = runner.invoke(args=["auth", "issue-token", "--role", "user", "--sub", "u", "--user-id", str(unknown)])
        assert bad.exit_code == 1 and f"--user-id: no user has user_id {unknown}" in bad.output, (unknown, bad.output)
    for ttl in ("0", "59s", "91d"):  # 0 is not "the default hour"
        bad = runner.invoke(args=["auth", "issue-token", "--role", "service", "--sub", "s", "--ttl", ttl])
        assert bad.exit_code == 1 and "--ttl: ttl_seconds must be between 60 and 7776000" in bad.output, ttl


def test_api_token_fields_are_strict_json_integers(app):
    admin = client_as(app, "admin")
    for body in ({"role": "user", "sub": "u", "user_id": "1"}, {"role": "user", "sub": "u", "user_id": 1.0},
                 {"role": "service", "sub": "s", "ttl_seconds": "60"}, {"role": "service", "sub": "s", "ttl_seconds": 60.9},
                 {"role": "service", "sub": "s", "ttl_seconds": True}):
        r = admin.post("/api/auth/tokens", json=body)
        assert r.status_code == 422, body
        assert set(r.get_json()["error"]["details"]["fields"]) <= {"user_id", "ttl_seconds"}
    r = admin.post("/api/auth/tokens", json={"role": "user", "sub": "u"})
    assert r.status_code == 422 and r.get_json()["error"]["details"] == {
        "fields": {"user_id": ["user_id is required for role user, and only for it"]}}


def test_actor_and_idempotency_scope_follow_the_subject(app):
    uid = new_user(client_as(app))
    a = client_as(app, "service", sub="svc-a")
    b = client_as(app, "service", sub="svc-b")
    h = {"Idempotency-Key": "shared-key"}
    ra = a.post(f"/api/credits/{uid}/add", json={"amount": 2}, headers=h).get_json()
    rb = b.post(f"/api/credits/{uid}/add", json={"amount": 2}, headers=h).get_json()
    assert ra["entry"]["actor"] == "svc-a" and rb["entry"]["actor"] == "svc-b"
    assert ra["entry"]["id"] != rb["entry"]["id"]
    assert a.post(f"/api/credits/{uid}/add", json={"amount": 2}, headers=h).headers["Idempotent-Replayed"] == "true"
    assert client_as(app).get(f"/api/credits/{uid}").get_json()["credits"] == 4


# --- rate limits ------------------------------------------------------------------------

@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_rate_limit_is_per_subject_with_retry_after(backend, request, tmp_path, storage):
    from tests.conftest import _fresh_url
    env = {"RATELIMIT_ENABLED": "true", "RATELIMIT_DEFAULT": "5/minute"}
    if storage == "redis":
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
    app = make_app(_fresh_url(backend, request, tmp_path), **env)
    noisy, quiet = client_as(app, "service", sub="noisy"), client_as(app, "service", sub="quiet")
    statuses = [noisy.get("/api/users").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    r = noisy.get("/api/users")
    assert r.status_code == 429 and r.get_json()["error"]["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) > 0
    assert quiet.get("/api/users").status_code == 200
    assert app.test_client().get("/openapi.json").status_code == 200  # only /api is limited
    with app.app_context():
        db.engine.dispose()


def test_unreachable_redis_does_not_stop_the_api(backend, request, tmp_path):
    from tests.conftest import _fresh_url
    from tests.services import free_port
    app = make_app(_fresh_url(backend, request, tmp_path), RATELIMIT_ENABLED="true",
                   RATELIMIT_DEFAULT="100/second", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    admin = client_as(app)
    uid = new_user(admin)
    assert admin.post(f"/api/credits/{uid}/add", json={"amount": 3}).status_code == 200
    assert admin.get(f"/api/credits/{uid}").get_json()["credits"] == 3
    with app.app_context():
        db.engine.dispose()


# --- start-up refusal --------------------------------------------------------------------

@pytest.mark.parametrize("secret, why", [(None, "not set"), ("short", "too short"),
                                         ("change-me-change-me-change-me-change-me", "placeholder")])
def test_wsgi_refuses_to_start_without_a_real_secret(tmp_path, secret, why):
    # Set even when "missing" (empty): wsgi's load_dotenv() never overrides a variable, so a
    # developer's .env cannot mask the refusal.
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "JWT_SECRET_KEY": secret or ""}
    result = subprocess.run([sys.executable, "-c", "import wsgi"], env=env, capture_output=True, text=True,
                            cwd=str(__import__("pathlib").Path(__file__).parent.parent))
    assert result.returncode != 0
    assert "JWT_SECRET_KEY" in result.stderr and why in result.stderr


def test_admin_issues_tokens_over_the_api(app):
    admin = client_as(app)
    uid = new_user(admin)
    r = admin.post("/api/auth/tokens", json={"role": "user", "sub": f"user-{uid}", "user_id": uid, "ttl_seconds": 600})
    assert r.status_code == 201
    body = r.get_json()
    claims = pyjwt.decode(body["token"], TEST_SECRET, algorithms=["HS256"])
    assert claims["role"] == "user" and claims["user_id"] == uid and claims["jti"] == body["jti"]
    r = admin.post("/api/auth/tokens", json={"role": "user", "sub": "typo", "user_id": uid + 1000})
    assert r.status_code == 422 and r.get_json()["error"]["details"] == {
        "fields": {"user_id": [f"no user has user_id {uid + 1000}"]}, "user_id": uid + 1000}
    assert claims["exp"] - claims["iat"] == 600
    assert admin.post("/api/auth/tokens", json={"role": "user", "sub": "u"}).status_code == 422
    assert admin.post("/api/auth/tokens", json={"role": "root", "sub": "u"}).status_code == 422
    assert client_as(app, "service").post("/api/auth/tokens", json={"role": "admin", "sub": "x"}).status_code == 403


def test_options_is_answered_without_a_token_and_without_a_500(app):
    """Found by schemathesis: OPTIONS used to crash auth (the JWT library skips OPTIONS)."""
    for client in (app.test_client(), client_as(app)):
        for method, path, _ in _api_routes(app):
            r = client.options(path)
            assert r.status_code == 204 and not r.data and "Content-Type" not in r.headers, (path, r.status_code)
            assert method in r.headers["Allow"]
