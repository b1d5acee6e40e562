"""Hostile tokens and headers: claims the service stores must fit and be storable, no token
may carry a subject the service reserves for itself, and the bearer scheme is read in any
case. Identity-provider tokens (RS256, a generated key) are held to the same rules as the
service's own."""
from datetime import datetime, timedelta, timezone

import jwt as pyjwt
import pytest
from sqlalchemy import text

from credits_app.auth import claims
from credits_app import ledger
from credits_app.cli import auth as auth_cli, credits as credits_cli, schema as schema_cli
from credits_app.extensions import db
from tests.conftest import TEST_SECRET, _fresh_url, client_as, make_app, new_user, token_for
from tests.test_auth import _claims, _rsa_pair

AUDIENCE = "credits-api"


@pytest.fixture
def idp(request, tmp_path):
    """An app on PostgreSQL that also accepts an identity provider's RS256 tokens; `sign`
    makes such a token from claims (an admin's by default, as _claims builds them)."""
    key, public = _rsa_pair()
    app = make_app(_fresh_url("postgresql", request, tmp_path), JWT_PUBLIC_KEY=public, JWT_AUDIENCE=AUDIENCE)
    app.sign = lambda **over: pyjwt.encode(_claims(aud=AUDIENCE, **over), key, algorithm="RS256")
    yield app
    with app.app_context():
        db.engine.dispose()


def _bearer(token, scheme="Bearer"):
    return {"Authorization": f"{scheme} {token}"}


def _ledger_actors(app):
    with app.app_context(), db.engine.connect() as conn:
        return conn.execute(text("SELECT actor FROM ledger_entries ORDER BY id")).scalars().all()


# --- claims the service stores ----------------------------------------------------------

@pytest.mark.parametrize("claim, value", [
    ("sub", "s" * 201),  # longer than ledger_entries.actor
    ("sub", "a\x00b"),  # PostgreSQL text cannot hold a NUL
    ("sub", "a\ud800b"),  # half a character: no UTF-8 for it
    ("sub", ""),
    ("jti", "j" * 129),  # longer than POST /api/auth/revoke accepts: it could never be revoked
    ("jti", "a\x00b"),
    ("jti", "a\udc80b"),
    ("user_id", "7"),
    ("user_id", True),
    ("user_id", 0),
    ("user_id", 2**63),
])
def test_identity_provider_claims_that_cannot_be_stored_are_401(idp, claim, value):
    uid = new_user(client_as(idp))
    token = idp.sign(role="service", **{claim: value})
    r = idp.test_client().post(f"/api/credits/{uid}/add", json={"amount": 5}, headers=_bearer(token))
    assert r.status_code == 401, r.get_json()
    assert r.get_json()["error"]["code"] == "invalid_token"
    assert r.get_json()["error"]["details"]["claim"] == claim
    assert _ledger_actors(idp) == []
    r = idp.test_client().get("/api/auth/whoami", headers=_bearer(token))  # echoes claims: never a 500
    assert r.status_code == 401 and r.get_json()["error"]["details"]["claim"] == claim


def test_identity_provider_claims_at_their_limits_work_and_can_be_revoked(idp):
    admin = client_as(idp)
    uid = new_user(admin)
    sub, jti = "é" * 200, "j" * 128
    headers = _bearer(idp.sign(role="service", sub=sub, jti=jti))
    r = idp.test_client().post(f"/api/credits/{uid}/add", json={"amount": 5}, headers=headers)
    assert r.status_code == 200 and r.get_json()["entry"]["actor"] == sub
    assert _ledger_actors(idp) == [sub]
    r = admin.post("/api/auth/revoke", json={"jti": jti})
    assert r.status_code == 200 and r.get_json()["revoked"] is True
    r = idp.test_client().get("/api/users", headers=headers)
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "token_revoked"


def test_revocation_refuses_ids_no_token_may_carry(app):
    admin = client_as(app)
    for body in ({"jti": "j" * 129}, {"jti": "a\x00b"}, {"jti": "ok", "reason": "a\x00b"}):
        r = admin.post("/api/auth/revoke", json=body)
        assert r.status_code == 422 and set(r.get_json()["error"]["details"]["fields"]) <= {"jti", "reason"}, body
    bad = app.test_cli_runner().invoke(args=["auth", "revoke", "j" * 129])
    assert bad.exit_code == 1 and "jti must be a string of 1-128 characters" in bad.output
    with app.app_context(), db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM revoked_tokens")).scalar() == 0


# --- reserved subjects ------------------------------------------------------------------

RESERVED = ["cli", "CLI", " cli ", "cli\n", "\tCli", "system:daily-grant", "SYSTEM:daily-grant", "System:anything",
            "system:", " system : x", "ｃｌｉ", "ｓｙｓｔｅｍ：x", "c\u200bli", "c\u00adli", "cl\u0131", "c1i", "cIi",
            "\u0441li", "\u0455ystem:x", "sy\u0455t\u0435m:daily-grant", "system\u2236x", "system\ua789x",
            "\U0001d41c\U0001d425\U0001d422", "c\u0301li"]
ALLOWED = ["client", "clip", "cli-backend", "system", "systems:x", "system-daily-grant", "platform", "idp|42"]


def test_every_actor_the_service_records_for_itself_is_reserved():
    for actor in (ledger.GRANT_ACTOR, credits_cli.CLI_ACTOR, auth_cli.CLI_ACTOR, schema_cli.CLI_ACTOR, claims.CLI_ACTOR):
        assert claims.is_reserved_subject(actor), actor
        assert claims.subject_problem(actor) is not None, actor
    for sub in RESERVED:
        assert claims.is_reserved_subject(sub), repr(sub)
    for sub in ALLOWED:
        assert not claims.is_reserved_subject(sub), sub


def test_admins_cannot_mint_reserved_subjects_over_the_api(app):
    admin = client_as(app)
    for sub in RESERVED:
        r = admin.post("/api/auth/tokens", json={"role": "admin", "sub": sub})
        assert r.status_code == 422, (sub, r.get_json())
        assert list(r.get_json()["error"]["details"]["fields"]) == ["sub"]
    for sub in ALLOWED:
        assert admin.post("/api/auth/tokens", json={"role": "service", "sub": sub}).status_code == 201, sub


def test_admins_cannot_mint_reserved_subjects_with_the_cli(app):
    runner = app.test_cli_runner()
    for sub in ("system:daily-grant", "cli", " CLI", "ｃｌｉ"):
        bad = runner.invoke(args=["auth", "issue-token", "--role", "admin", "--sub", sub])
        assert bad.exit_code == 1 and "--sub: sub is reserved" in bad.output, (sub, bad.output)
        assert "." not in bad.stdout  # no token printed


def test_tokens_with_reserved_subjects_are_401_whoever_signed_them(idp):
    uid = new_user(client_as(idp))
    # Signed with the service's own key (as tokens minted before the rule were), and by the provider.
    forged = [pyjwt.encode(_claims(sub=sub, aud=AUDIENCE), TEST_SECRET, algorithm="HS256")
              for sub in ("system:daily-grant", "cli")]
    forged += [idp.sign(sub=sub) for sub in ("system:daily-grant", " CLI", "\u0455ystem:x")]
    for token in forged:
        r = idp.test_client().post(f"/api/credits/{uid}/add", json={"amount": 5}, headers=_bearer(token))
        assert r.status_code == 401, r.get_json()
        assert r.get_json()["error"]["code"] == "invalid_token" and r.get_json()["error"]["details"]["claim"] == "sub"
    assert _ledger_actors(idp) == []


# --- the bearer scheme ------------------------------------------------------------------

def test_the_bearer_scheme_is_case_insensitive(app):
    token = token_for(app)
    for scheme in ("bearer", "BEARER", "bEaReR", "Bearer ", "bearer  ", "bearer\t", "  bearer"):
        r = app.test_client().get("/api/auth/whoami", headers={"Authorization": f"{scheme} {token}"})
        assert r.status_code == 200, (scheme, r.get_json())
        assert r.get_json()["sub"] == "test-admin"


def test_malformed_bearer_headers_stay_401(app):
    token = token_for(app)
    for header in ("bearer", "bearer ", "bearerX {t}", "bearer {t} {t}", "bearer {t}, Basic x", "bearer \u00a0{t}",
                   "bearer {t}\x0b", "basic {t}", "bearer: {t}"):
        r = app.test_client().get("/api/users", headers={"Authorization": header.format(t=token)})
        assert r.status_code == 401, header
        assert r.get_json()["error"]["code"] in ("missing_token", "invalid_token")


def test_a_remembered_token_is_checked_again_whatever_the_spelling_of_its_scheme(app):
    """Verified headers are remembered by their canonical spelling, so another spelling of a
    revoked, expired or tampered token is refused as the canonical one is."""
    from freezegun import freeze_time
    admin = client_as(app)
    token = token_for(app, "service", ttl_seconds=120)
    assert app.test_client().get("/api/users", headers=_bearer(token)).status_code == 200
    assert app.test_client().get("/api/users", headers=_bearer(token, "bearer")).status_code == 200
    assert len(app.extensions["credits.verified_tokens"]) == 1
    with freeze_time(datetime.now(timezone.utc) + timedelta(seconds=120 + 31)):
        r = app.test_client().get("/api/users", headers=_bearer(token, "BEARER"))
        assert r.status_code == 401 and r.get_json()["error"]["code"] == "token_expired"
    head, body, sig = token.split(".")
    r = app.test_client().get("/api/users", headers=_bearer(f"{head}.{body}.{sig[:-4]}AAAA", "bearer"))
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "invalid_token"
    jti = pyjwt.decode(token, options={"verify_signature": False})["jti"]
    assert admin.post("/api/auth/revoke", json={"jti": jti}).status_code == 200
    for scheme in ("Bearer", "bearer"):
        r = app.test_client().get("/api/users", headers=_bearer(token, scheme))
        assert r.status_code == 401 and r.get_json()["error"]["code"] == "token_revoked"
