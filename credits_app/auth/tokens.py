"""JWTs: issuing, revoking, and the revocation check that runs on every request.

Revocations live in the database (a Redis flush cannot un-revoke). Each process keeps the
revoked ids in memory to spare a query per request, and brings them up to date by loading
only the rows revoked since its last load: a revocation takes effect at once in the process
that made it and within REVOCATION_CACHE_SECONDS (default 5) everywhere else, however long
the list. REVOCATION_CACHE_SECONDS=0 queries on every request. A revocation is purged once
its token has expired (purge_revocations)."""
import threading
import time
from datetime import datetime, timedelta, timezone

from flask import current_app
from flask_jwt_extended import JWTManager, create_access_token, decode_token
from sqlalchemy import bindparam, text

from .. import users
from ..config import ASYMMETRIC
from ..exceptions import InvalidRequest
from ..extensions import db
from ..types import UTCDateTime, utcnow
from .claims import jti_problem, subject_problem
from .roles import ROLES


# --- verified-token cache ----------------------------------------------------------------
# Decoding a JWT (the unverified header for the key loader, the signature, then the header
# again) costs a request more CPU than anything else it does, and a service presents the
# same token over and over. So each process remembers the Authorization headers it has fully
# verified (flask-jwt-extended and access.py's claim checks, all of which depend only on the
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
    app = current_app._get_current_object()  # behind the proxy, once (docs/stock.md, 5)
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


def revoke(jti, *, actor, reason=None, expires_at=None):
    """Revoke a token id. `expires_at` (unix time) is the token's `exp`, if the revoker knows
    it: the revocation may be purged once the token has expired; without it the revocation
    is kept for the longest lifetime a token issued here can have. Returns False if the id
    was already revoked (the first revocation's expiry stands). Raises InvalidRequest for
    an id no token may carry (claims.jti_problem)."""
    problem = jti_problem(jti)
    if problem:
        raise InvalidRequest(f"jti {problem}", field="jti")
    now = utcnow()
    expires = datetime.fromtimestamp(expires_at, timezone.utc) if expires_at is not None else None
    with db.engine.begin() as conn:
        inserted = conn.execute(_REVOKE, {"jti": jti, "by": actor, "reason": reason, "now": now,
                                          "expires_at": expires}).rowcount
    _cache().add(jti)
    return inserted == 1


MAX_EXPIRES_AT = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime holds

_REVOKE = text(
    "INSERT INTO revoked_tokens (jti, revoked_at, revoked_by, reason, expires_at) "
    "VALUES (:jti, :now, :by, :reason, :expires_at) ON CONFLICT (jti) DO NOTHING"
).bindparams(bindparam("now", type_=UTCDateTime), bindparam("expires_at", type_=UTCDateTime))


def _leeway_seconds(config):
    leeway = config.get("JWT_DECODE_LEEWAY") or 0
    return int(leeway.total_seconds() if isinstance(leeway, timedelta) else leeway)


def purge_revocations(now=None):
    """Delete revocations whose token has expired, leeway included (past `expires_at`, or
    past the longest lifetime after `revoked_at` when the expiry is unknown); returns how
    many. Safe: PyJWT refuses those tokens as expired anyway."""
    config = current_app.config
    now = now or utcnow()
    expired_before = now - timedelta(seconds=_leeway_seconds(config))
    with db.engine.begin() as conn:
        return conn.execute(_PURGE, {"expired_before": expired_before,
                                     "revoked_before": expired_before - timedelta(seconds=MAX_TTL)}
                            ).rowcount


_PURGE = text(
    "DELETE FROM revoked_tokens WHERE (expires_at IS NOT NULL AND expires_at < :expired_before) "
    "OR (expires_at IS NULL AND revoked_at < :revoked_before)"
).bindparams(bindparam("expired_before", type_=UTCDateTime), bindparam("revoked_before", type_=UTCDateTime))


def is_revoked(jti):
    """Whether `jti` was revoked. False for an id no revocation can name (no string, too long,
    not storable text): such a token is refused by auth's claim checks, and a query with it
    would fail."""
    if jti_problem(jti):
        return False
    app = current_app._get_current_object()  # behind the proxy, once (docs/stock.md, 5)
    ttl = app.config["REVOCATION_CACHE_SECONDS"]
    if ttl == 0:
        with db.engine.connect() as conn:
            return conn.execute(text("SELECT 1 FROM revoked_tokens WHERE jti = :jti"), {"jti": jti}).first() is not None
    return jti in app.extensions["credits.revocations"].current(ttl)


_REREAD_EVERY = 3600  # seconds between two full reads, which drop from the set what was purged


class _RevokedSet:
    """The revoked ids this process knows.

    The window: a load records the moment it starts, before the database takes its
    snapshot, so every revocation committed before that moment is in the set; the set is
    used for at most `ttl` seconds after it.

    Loads are incremental: the rows whose `seq` is above the highest seen. The database
    assigns `seq` while the inserting transaction holds a lock it keeps until it commits, so
    `seq` order is commit order: once a `seq` is seen, every lower one has committed or never
    will. The first load reads the whole table; the next ones what was revoked since.

    Once the set is half `ttl` old, the one thread that gets the lock refreshes it while the
    others keep using it, still within the window; past `ttl` every thread waits for a fresh
    load. Once an hour one request reads the whole table again outside the lock, so that the
    set forgets what the purge deleted, and swaps it in with the rows revoked meanwhile."""

    def __init__(self):
        self._jtis = set()
        self._seq = None  # every row with a seq up to this one is in the set; None: nothing loaded
        self._loaded_at = float("-inf")  # time.monotonic() when the last load started
        self._read_all_at = time.monotonic()
        self._lock = threading.Lock()
        self._reading_all = threading.Lock()

    def add(self, jti):
        """Record a revocation this process has just committed."""
        with self._lock:
            self._jtis.add(jti)

    def current(self, ttl):
        age = time.monotonic() - self._loaded_at
        if age >= ttl / 2 and self._lock.acquire(blocking=age > ttl):
            try:
                if time.monotonic() - self._loaded_at >= ttl / 2:
                    self._load()
            finally:
                self._lock.release()
        elif time.monotonic() - self._read_all_at > _REREAD_EVERY and self._reading_all.acquire(blocking=False):
            try:
                self._read_all_again()
            finally:
                self._reading_all.release()
        return self._jtis

    def _load(self):
        started = time.monotonic()
        with db.engine.connect() as conn:
            if self._seq is None:
                self._jtis, self._seq = _read_all(conn)
                self._read_all_at = started
            else:
                jtis, self._seq = _read_since(conn, self._seq)
                self._jtis.update(jtis)
        self._loaded_at = started

    def _read_all_again(self):
        self._read_all_at = time.monotonic()  # also after a failure: try again in an hour
        with db.engine.connect() as conn:
            jtis, seq = _read_all(conn)
        with self._lock:  # the rows revoked while the table was read, then the swap
            started = time.monotonic()
            with db.engine.connect() as conn:
                since, seq = _read_since(conn, seq)
            jtis.update(since)
            self._jtis, self._seq, self._loaded_at = jtis, seq, started


def _read_all(conn):
    """Every revoked id, and a seq every row up to which is among them. The highest seq is
    read first: its rows, and all below it, have committed before the second statement's
    snapshot (read the other way round, a row committed in between would be skipped)."""
    seq = conn.execute(text("SELECT COALESCE(MAX(seq), 0) FROM revoked_tokens")).scalar()
    return set(conn.execute(text("SELECT jti FROM revoked_tokens")).scalars()), seq


def _read_since(conn, seq):
    rows = conn.execute(text("SELECT jti, seq FROM revoked_tokens WHERE seq > :seq"), {"seq": seq}).all()
    return [jti for jti, _ in rows], max((row_seq for _, row_seq in rows), default=seq)


def _cache():
    return current_app.extensions["credits.revocations"]


def _decode_key(header, _payload):
    # Pick the key by the token's algorithm, so an RS256 public key is never tried as an
    # HMAC secret (the classic HS/RS confusion) and vice versa.
    if header.get("alg") in ASYMMETRIC:
        return current_app.config["JWT_PUBLIC_KEY"]
    return current_app.config["JWT_SECRET_KEY"]


def init_app(app):
    jwt.init_app(app)
    jwt.token_in_blocklist_loader(lambda _header, payload: is_revoked(payload.get("jti")))
    jwt.decode_key_loader(_decode_key)
    app.extensions["credits.revocations"] = _RevokedSet()
    app.extensions["credits.verified_tokens"] = {}
