"""JWTs: issuing, revoking, and the revocation check that runs on every request.

Revocations live in the database (a Redis flush cannot un-revoke). Each process keeps the
set of revoked ids in memory for REVOCATION_CACHE_SECONDS (default 5) to spare a query
per request: a revocation takes effect at once in the process that made it and within
that many seconds everywhere else. REVOCATION_CACHE_SECONDS=0 queries on every request."""
import re
import sys
import threading
import time
from datetime import timedelta

import click
from flask import current_app
from flask.cli import AppGroup
from flask_jwt_extended import JWTManager, create_access_token, decode_token
from sqlalchemy import bindparam, text

from . import users
from .claims import CLI_ACTOR, jti_problem, subject_problem
from .config import ASYMMETRIC
from .exceptions import InvalidRequest
from .extensions import db
from .roles import ROLES
from .types import UTCDateTime, utcnow


# --- verified-token cache ----------------------------------------------------------------
# Decoding a JWT (the unverified header for the key loader, the signature, then the header
# again) was the largest CPU cost of a request, and a service presents the same token
# thousands of times. So each process remembers the Authorization headers it has fully
# verified (flask-jwt-extended and auth.py's claim checks, all of which depend only on the
# token and the configuration) and serves them again while PyJWT would still accept them
# now: exp, nbf and iat are re-checked with the configured leeway, revocation is checked on
# every request, and an entry counts only under the keys and settings it was verified with.
# Anything else takes the full path, so every refusal and its message are the library's.

_VERIFIED_CACHE_SIZE = 1024
_SETTINGS = ("JWT_SECRET_KEY", "JWT_PUBLIC_KEY", "JWT_ALGORITHM", "JWT_DECODE_ALGORITHMS", "JWT_DECODE_AUDIENCE",
             "JWT_DECODE_ISSUER", "JWT_IDENTITY_CLAIM", "JWT_VERIFY_SUB", "JWT_DECODE_LEEWAY", "JWT_HEADER_NAME",
             "JWT_HEADER_TYPE", "JWT_TOKEN_LOCATION")


def _settings(config):
    return tuple(tuple(v) if isinstance(v, list) else v for v in map(config.get, _SETTINGS))


def recall(authorization):
    """Claims of an Authorization header verified before in this process, if PyJWT would
    accept its token now; None otherwise (and for a header never seen)."""
    if not authorization:
        return None
    app = current_app._get_current_object()  # one context lookup for both reads
    entry = app.extensions["credits.verified_tokens"].get(authorization)
    if entry is None:
        return None
    settings, claims = entry
    config = app.config
    if settings != _settings(config) or not _still_valid(claims, config.get("JWT_DECODE_LEEWAY") or 0):
        return None
    return dict(claims)  # a copy: the request may not alter the cached claims


def remember(authorization, claims):
    """Called only after the full verification of this header succeeded."""
    cache = current_app.extensions["credits.verified_tokens"]
    if len(cache) >= _VERIFIED_CACHE_SIZE:
        cache.clear()
    cache[authorization] = (_settings(current_app.config), dict(claims))


def _still_valid(claims, leeway):
    """What PyJWT checks against the clock (jwt/api_jwt.py _validate_exp/nbf/iat)."""
    if isinstance(leeway, timedelta):
        leeway = leeway.total_seconds()
    now = time.time()
    try:
        if "exp" in claims and int(claims["exp"]) <= now - leeway:
            return False
        if "nbf" in claims and int(claims["nbf"]) > now + leeway:
            return False
        if "iat" in claims and int(claims["iat"]) > now + leeway:
            return False
    except (ValueError, TypeError, OverflowError):
        return False
    return True


jwt = JWTManager()
MIN_TTL, MAX_TTL = 60, 90 * 86400  # seconds a token issued here may live


def issue(role, sub, *, user_id=None, ttl_seconds=None, user_must_exist=True):
    """Mint an HS256 access token. Returns (token, claims). Raises InvalidRequest, also for a
    subject claims.subject_problem() refuses (a reserved one among them), for a user token
    naming no user (an operator's typo would otherwise mint a token that reads
    nothing, or the wrong person's balance once that id is taken); tests that only exercise
    the rules may pass user_must_exist=False."""
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", field="role", role=role)
    problem = subject_problem(sub)
    if problem:
        raise InvalidRequest(f"sub {problem}", field="sub")
    if (role == "user") != (user_id is not None):
        raise InvalidRequest("user_id is required for role user, and only for it", field="user_id")
    if ttl_seconds is not None and not MIN_TTL <= ttl_seconds <= MAX_TTL:  # 0 is not "the default"
        raise InvalidRequest(f"ttl_seconds must be between {MIN_TTL} and {MAX_TTL}", field="ttl_seconds")
    if user_id is not None and user_must_exist and not users.exists(user_id):
        raise InvalidRequest(f"no user has user_id {user_id}", field="user_id", user_id=user_id)
    claims = {"role": role, **({"user_id": user_id} if user_id is not None else {})}
    ttl = timedelta(seconds=ttl_seconds if ttl_seconds is not None else current_app.config["JWT_DEFAULT_TTL_SECONDS"])
    token = create_access_token(identity=sub, additional_claims=claims, expires_delta=ttl)
    return token, decode_token(token)


def revoke(jti, *, actor, reason=None):
    """Revoke a token id. Returns False if it was already revoked. Raises InvalidRequest for
    an id no token may carry (claims.jti_problem)."""
    problem = jti_problem(jti)
    if problem:
        raise InvalidRequest(f"jti {problem}", field="jti")
    with db.engine.begin() as conn:
        inserted = conn.execute(
            text("INSERT INTO revoked_tokens (jti, revoked_at, revoked_by, reason) VALUES (:jti, :now, :by, :reason) "
                 "ON CONFLICT (jti) DO NOTHING").bindparams(bindparam("now", type_=UTCDateTime)),
            {"jti": jti, "by": actor, "reason": reason, "now": utcnow()}).rowcount
    _cache().invalidate()
    return inserted == 1


def is_revoked(jti):
    """Whether `jti` was revoked. False for an id no revocation can name (no string, too long,
    not storable text): such a token is refused by auth's claim checks, and a query with it
    would fail."""
    if jti_problem(jti):
        return False
    app = current_app._get_current_object()
    ttl = app.config["REVOCATION_CACHE_SECONDS"]
    if ttl == 0:
        with db.engine.connect() as conn:
            return conn.execute(text("SELECT 1 FROM revoked_tokens WHERE jti = :jti"), {"jti": jti}).first() is not None
    return jti in app.extensions["credits.revocations"].current(ttl)


class _RevokedSet:
    def __init__(self):
        self._jtis = frozenset()
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def invalidate(self):
        self._loaded_at = float("-inf")

    def current(self, ttl):
        if time.monotonic() - self._loaded_at > ttl:
            with self._lock:
                if time.monotonic() - self._loaded_at > ttl:
                    with db.engine.connect() as conn:
                        self._jtis = frozenset(conn.execute(text("SELECT jti FROM revoked_tokens")).scalars())
                    self._loaded_at = time.monotonic()
        return self._jtis


def _cache():
    return current_app.extensions["credits.revocations"]


def _decode_key(header, _payload):
    # Pick the key by the token's algorithm, so an RS256 public key is never tried as an
    # HMAC secret (the classic HS/RS confusion) and vice versa.
    if header.get("alg") in ASYMMETRIC:
        return current_app.config["JWT_PUBLIC_KEY"]
    return current_app.config["JWT_SECRET_KEY"]


# --- CLI ---------------------------------------------------------------------------------

auth_cli = AppGroup("auth", help="Issue and revoke API tokens.")
_TTL = re.compile(r"^(\d+)([smhd]?)$")


def parse_ttl(value):
    match = _TTL.match(value.strip())
    if not match:
        raise click.BadParameter("use a number with s, m, h or d, e.g. 1h or 30d")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


@auth_cli.command("issue-token")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--sub", required=True, help="the subject, recorded as the actor of every change")
@click.option("--user-id", type=int, help="for role user: the user it may read")
@click.option("--ttl", default="1h", show_default=True, help="lifetime, e.g. 15m, 1h, 30d")
def issue_token_command(role, sub, user_id, ttl):
    """Print a signed access token (the jti goes to stderr, for revocation)."""
    try:
        token, claims = issue(role, sub, user_id=user_id, ttl_seconds=parse_ttl(ttl))
    except InvalidRequest as e:
        option = {"role": "--role", "sub": "--sub", "user_id": "--user-id", "ttl_seconds": "--ttl"}
        fields = list(e.details.get("fields", ()))
        click.echo(f"error: {option[fields[0]] + ': ' if fields else ''}{e.message}", err=True)
        sys.exit(1)
    click.echo(token)
    click.echo(f"jti={claims['jti']} role={role} sub={sub} expires={claims['exp']}", err=True)


@auth_cli.command("revoke")
@click.argument("jti")
@click.option("--reason")
def revoke_command(jti, reason):
    """Revoke a token by its jti."""
    try:
        fresh = revoke(jti, actor=CLI_ACTOR, reason=reason)
    except InvalidRequest as e:
        click.echo(f"error: {e.message}", err=True)
        sys.exit(1)
    click.echo(f"revoked {jti}" if fresh else f"{jti} was already revoked")


def init_app(app):
    jwt.init_app(app)
    jwt.token_in_blocklist_loader(lambda _header, payload: is_revoked(payload.get("jti")))
    jwt.decode_key_loader(_decode_key)
    app.extensions["credits.revocations"] = _RevokedSet()
    app.extensions["credits.verified_tokens"] = {}
    app.cli.add_command(auth_cli)
