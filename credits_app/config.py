"""Configuration read from the environment (a `.env` file is honoured by the `flask` CLI
and by `wsgi.py`). Invalid values fail fast with a message naming the variable."""
import os

from .auth.roles import ROLES
from .web import rate_limit

PLACEHOLDER_SECRETS = {"", "change-me", "changeme", "secret", "your_jwt_secret", "dev"}


class ConfigError(RuntimeError):
    """A configuration variable is missing or invalid; the message names it."""


def _int(env, name, default, minimum=None, maximum=None):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def _bool(env, name, default):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def database_url(raw, instance_path):
    """Normalise DATABASE_URL. Platforms hand out `postgres://`; both spellings map to the
    pinned psycopg2 driver explicitly so a SQLAlchemy default change cannot swap it."""
    if not raw:
        return "sqlite:///" + os.path.join(instance_path, "credits.db")
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg2://" + raw[len(prefix):]
    if raw.startswith(("postgresql+psycopg2://", "sqlite:")):
        return raw
    raise ConfigError(f"DATABASE_URL must be a postgresql:// or sqlite: URL, got {raw.split(':')[0]}:")


# BIGINT holds 9.2e18; capping balances far below it means no sum can ever overflow.
BIGINT_MAX = 2**63 - 1


def load(env, instance_path):
    """Return the Flask config mapping for this environment."""
    max_amount = _int(env, "MAX_AMOUNT", 1_000_000_000, minimum=1)
    max_balance = _int(env, "MAX_BALANCE", 10**15, minimum=max_amount, maximum=BIGINT_MAX // 2)
    url = database_url(env.get("DATABASE_URL"), instance_path)
    return {
        "SQLALCHEMY_DATABASE_URI": url,
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(url, env),
        "DB_PING_IDLE_SECONDS": _int(env, "DB_PING_IDLE_SECONDS", 10, minimum=0),
        "MAX_AMOUNT": max_amount,
        "MAX_BALANCE": max_balance,
        "MAX_CONTENT_LENGTH": _int(env, "MAX_CONTENT_LENGTH", 64 * 1024, minimum=1024),
        "IDEMPOTENCY_TTL_HOURS": _int(env, "IDEMPOTENCY_TTL_HOURS", 72, minimum=24),
        "REDIS_URL": env.get("REDIS_URL", ""),
        "LOG_LEVEL": (env.get("LOG_LEVEL") or "INFO").upper(),
        **_schema_updates(env),
        "TESTING": _bool(env, "TESTING", False),
        "DEBUG": _bool(env, "FLASK_DEBUG", False),
        **_auth(env),
        # OpenAPI (flask-smorest)
        "API_TITLE": "credits",
        "API_VERSION": "1.0.0",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/",
        "OPENAPI_JSON_PATH": "openapi.json",
        # Served from credits_app/static/vendor (no CDN at run time).
        "OPENAPI_SWAGGER_UI_PATH": "/docs",
        "OPENAPI_SWAGGER_UI_URL": "/static/vendor/swagger-ui/",
        "OPENAPI_SWAGGER_UI_CONFIG": {"persistAuthorization": True, "displayRequestDuration": True},
        "OPENAPI_REDOC_PATH": "/redoc",
        "OPENAPI_REDOC_URL": "/static/vendor/redoc/redoc.standalone.js",
        "API_SPEC_OPTIONS": {
            "info": {"description": "Credit balances with an append-only ledger. Every /api call needs "
                                    "`Authorization: Bearer <jwt>`; errors have one shape: "
                                    "`{\"error\": {\"code\", \"message\", \"details\"}}`."},
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                                              "bearerFormat": "JWT"}}},
            "security": [{"bearerAuth": []}],
        },
        **_daily_grant(env, max_amount),
        **_holds(env),
        **_events(env),
    }


def _events(env):
    """Events, alerts and webhooks (credits_app/events, credits_app/webhooks).

    LOW_BALANCE_THRESHOLD is every user's threshold unless the user has one of their own;
    0 turns alerts off. A failed delivery is tried again after BASE * 2**(n-1) seconds (at
    most MAX, with jitter) until WEBHOOKS_MAX_ATTEMPTS tries, then kept as dead: the
    defaults try for about a day and a half. Receivers on private, loopback or link-local
    addresses are refused unless WEBHOOKS_ALLOW_PRIVATE_URLS (a receiver on the same host
    or network, and the tests)."""
    timeout = _int(env, "WEBHOOKS_TIMEOUT_SECONDS", 10, minimum=1, maximum=120)
    # A claimed delivery's lease must outlast a send (connect and read) with room to record it.
    lease = _int(env, "WEBHOOKS_LEASE_SECONDS", 120, maximum=3600)
    if lease < 2 * timeout + 2:
        raise ConfigError(f"WEBHOOKS_LEASE_SECONDS must be >= 2 * WEBHOOKS_TIMEOUT_SECONDS + 2 ({2 * timeout + 2}), "
                          f"got {lease}")
    queue = _queue_name(env, "WEBHOOKS_QUEUE", "credits-webhooks")
    if queue == _queue_name(env, "RQ_QUEUE", "credits"):  # slow receivers must never hold the grant's worker
        raise ConfigError(f"WEBHOOKS_QUEUE must differ from RQ_QUEUE, got {queue!r} for both")
    return {
        "LOW_BALANCE_THRESHOLD": _int(env, "LOW_BALANCE_THRESHOLD", 0, minimum=0, maximum=BIGINT_MAX),
        "WEBHOOKS_QUEUE": queue,
        "WEBHOOKS_ALLOW_PRIVATE_URLS": _bool(env, "WEBHOOKS_ALLOW_PRIVATE_URLS", False),
        "WEBHOOKS_TIMEOUT_SECONDS": timeout,
        "WEBHOOKS_MAX_ATTEMPTS": _int(env, "WEBHOOKS_MAX_ATTEMPTS", 16, minimum=1, maximum=100),
        "WEBHOOKS_BACKOFF_BASE_SECONDS": _int(env, "WEBHOOKS_BACKOFF_BASE_SECONDS", 30, minimum=1, maximum=86400),
        "WEBHOOKS_BACKOFF_MAX_SECONDS": _int(env, "WEBHOOKS_BACKOFF_MAX_SECONDS", 6 * 3600, minimum=1,
                                             maximum=7 * 86400),
        "WEBHOOKS_LEASE_SECONDS": lease,
        "WEBHOOKS_CONCURRENCY": _int(env, "WEBHOOKS_CONCURRENCY", 8, minimum=1, maximum=256),
        "WEBHOOKS_DISPATCH_CRON": _cron(env, "WEBHOOKS_DISPATCH_CRON", "* * * * *"),
        "WEBHOOKS_SECRET_OVERLAP_SECONDS": _int(env, "WEBHOOKS_SECRET_OVERLAP_SECONDS", 86400, minimum=0,
                                                maximum=30 * 86400),
        "EVENTS_RETENTION_DAYS": _int(env, "EVENTS_RETENTION_DAYS", 30, minimum=1, maximum=3650),
        "EVENTS_PRUNE_CRON": _cron(env, "EVENTS_PRUNE_CRON", "17 * * * *"),
    }


def _holds(env):
    """Holds: how long one lasts unless the caller says (at most the maximum), and how often
    the worker records the expired ones (a hold past its time never counts, recorded or not)."""
    maximum = _int(env, "HOLD_MAX_TTL_SECONDS", 7 * 86400, minimum=1, maximum=366 * 86400)
    cron = _cron(env, "HOLDS_SWEEP_CRON", "* * * * *")
    return {"HOLD_DEFAULT_TTL_SECONDS": _int(env, "HOLD_DEFAULT_TTL_SECONDS", 900, minimum=1, maximum=maximum),
            "HOLD_MAX_TTL_SECONDS": maximum, "HOLDS_SWEEP_CRON": cron}


def _queue_name(env, name, default):
    queue = env.get(name) or default
    if not queue.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"{name} must be letters, digits, '-', '_' or '.', got {queue!r}")
    return queue


def _cron(env, name, default):
    cron = env.get(name) or default
    try:
        import crontab  # the parser rq-scheduler itself uses, so what passes here runs there
        crontab.CronTab(cron)
    except ValueError as e:
        raise ConfigError(f"{name} must be a 5-field cron expression, got {cron!r}: {e}") from None
    if len(cron.split()) != 5:
        raise ConfigError(f"{name} must be a 5-field cron expression, got {cron!r}")
    return cron


def _daily_grant(env, max_amount):
    """The daily grant: amount, schedule, fan-out, catch-up window, queue."""
    cron = _cron(env, "DAILY_GRANT_CRON", "0 0 * * *")
    raw_delays = env.get("DAILY_GRANT_RETRY_DELAYS") or "10,60,300"
    try:
        delays = [int(d) for d in raw_delays.split(",")]
    except ValueError:
        delays = [-1]
    if not delays or min(delays) < 0:
        raise ConfigError(f"DAILY_GRANT_RETRY_DELAYS must be comma-separated seconds >= 0, got {raw_delays!r}")
    queue = _queue_name(env, "RQ_QUEUE", "credits")
    return {
        "DAILY_GRANT_AMOUNT": _int(env, "DAILY_GRANT_AMOUNT", 5, minimum=1, maximum=max_amount),
        "DAILY_GRANT_CRON": cron,
        "DAILY_GRANT_CHUNK_SIZE": _int(env, "DAILY_GRANT_CHUNK_SIZE", 20_000, minimum=1, maximum=1_000_000),
        "DAILY_GRANT_CATCHUP_DAYS": _int(env, "DAILY_GRANT_CATCHUP_DAYS", 7, minimum=0, maximum=366),
        "DAILY_GRANT_RETRY_DELAYS": delays,
        "DAILY_GRANT_SCHEDULER_INTERVAL": _int(env, "DAILY_GRANT_SCHEDULER_INTERVAL", 5, minimum=1, maximum=60),
        "RQ_QUEUE": queue,
    }


def _schema_updates(env):
    """External schema updates. Service traffic queues behind the locks an update waits for
    and holds, so a statement may wait SCHEMA_LOCK_TIMEOUT_MS for a lock, and once the update
    has named one of the service's tables the rest of it must finish within that same time.
    A statement may run SCHEMA_STATEMENT_TIMEOUT_MS, the whole update SCHEMA_UPDATE_TIMEOUT_MS
    (by default below gunicorn's 30 s worker timeout), with at most SCHEMA_MAX_STATEMENTS
    statements; no table may end up with more than SCHEMA_MAX_TABLE_INDEXES indexes (its own
    included), since each is written on every insert."""
    lock = _int(env, "SCHEMA_LOCK_TIMEOUT_MS", 2000, minimum=1, maximum=60000)
    statement = _int(env, "SCHEMA_STATEMENT_TIMEOUT_MS", 20000, minimum=100, maximum=3600000)
    update = _int(env, "SCHEMA_UPDATE_TIMEOUT_MS", 25000, minimum=100, maximum=3600000)
    if update < max(lock, statement):
        raise ConfigError(f"SCHEMA_UPDATE_TIMEOUT_MS (the whole update, {update}) must be at least "
                          f"SCHEMA_LOCK_TIMEOUT_MS ({lock}) and SCHEMA_STATEMENT_TIMEOUT_MS ({statement})")
    return {
        "SCHEMA_LOCK_TIMEOUT_MS": lock,
        "SCHEMA_STATEMENT_TIMEOUT_MS": statement,
        "SCHEMA_UPDATE_TIMEOUT_MS": update,
        "SCHEMA_MAX_STATEMENTS": _int(env, "SCHEMA_MAX_STATEMENTS", 100, minimum=1, maximum=10000),
        "SCHEMA_MAX_TABLE_INDEXES": _int(env, "SCHEMA_MAX_TABLE_INDEXES", 10, minimum=1, maximum=100),
    }


# Insecure on purpose and only ever used under FLASK_DEBUG/TESTING without a configured key.
DEV_SECRET = "insecure-development-only-secret-key-do-not-deploy"
ASYMMETRIC = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256")


def _auth(env):
    """JWT (flask-jwt-extended) and rate-limit settings. Outside debug and
    testing a missing, short or placeholder JWT_SECRET_KEY refuses to start."""
    relaxed = _bool(env, "TESTING", False) or _bool(env, "FLASK_DEBUG", False)
    secret = env.get("JWT_SECRET_KEY", "")
    if not relaxed:
        if not secret:
            raise ConfigError("JWT_SECRET_KEY is not set: set it to a random string of at least 32 bytes")
        if len(secret.encode()) < 32:
            raise ConfigError("JWT_SECRET_KEY is too short: use at least 32 bytes")
        if secret.lower() in PLACEHOLDER_SECRETS or secret == DEV_SECRET or "change" in secret.lower():
            raise ConfigError("JWT_SECRET_KEY is a known placeholder: set a random secret")
    public_key = env.get("JWT_PUBLIC_KEY", "")
    if not public_key and env.get("JWT_PUBLIC_KEY_FILE"):
        try:
            with open(env["JWT_PUBLIC_KEY_FILE"]) as f:
                public_key = f.read()
        except OSError as e:
            raise ConfigError(f"JWT_PUBLIC_KEY_FILE cannot be read: {e}") from None
    external_algs = [a.strip() for a in env.get("JWT_PUBLIC_KEY_ALGORITHMS", "RS256,ES256").split(",") if a.strip()]
    if public_key and not set(external_algs) <= set(ASYMMETRIC):
        raise ConfigError(f"JWT_PUBLIC_KEY_ALGORITHMS must be asymmetric algorithms from {', '.join(ASYMMETRIC)}")
    audience = env.get("JWT_AUDIENCE", "").strip() or None
    if public_key and not audience:
        # An identity provider signs tokens for every application it serves; only the
        # audience claim says a token was meant for this one.
        raise ConfigError("JWT_PUBLIC_KEY needs JWT_AUDIENCE (the `aud` your identity provider puts in tokens "
                          "for this service): without it a token issued for any other application is accepted")
    return {
        "JWT_SECRET_KEY": secret or DEV_SECRET,
        "JWT_ALGORITHM": "HS256",
        "JWT_PUBLIC_KEY": public_key,
        # HS256 for our own tokens; asymmetric ones only when an identity provider's key is set.
        "JWT_DECODE_ALGORITHMS": ["HS256"] + (external_algs if public_key else []),
        "JWT_DECODE_LEEWAY": _int(env, "JWT_LEEWAY_SECONDS", 30, minimum=0, maximum=600),
        # When set, every token must name it in `aud`, ours included (they are issued with it).
        "JWT_DECODE_AUDIENCE": audience,
        "JWT_ENCODE_AUDIENCE": audience,
        "JWT_TOKEN_LOCATION": ["headers"],
        "JWT_EXEMPT_METHODS": [],  # auth/access.py decides what is open; the library never skips a check
        # At most what a token may be asked for (auth.tokens.MAX_TTL, 90 days): a revocation
        # of a token of unknown expiry is kept that long.
        "JWT_DEFAULT_TTL_SECONDS": _int(env, "JWT_DEFAULT_TTL_SECONDS", 3600, minimum=60, maximum=90 * 86400),
        "AUTH_SERVICE_CAN_RESET": _bool(env, "AUTH_SERVICE_CAN_RESET", False),
        "AUTH_SERVICE_CAN_REVERSE": _bool(env, "AUTH_SERVICE_CAN_REVERSE", False),
        "REVOCATION_CACHE_SECONDS": _int(env, "REVOCATION_CACHE_SECONDS", 5, minimum=0, maximum=300),
        # Per role and token subject (web/rate_limit.py), in the `limits` grammar: "100/second;5000/hour".
        "RATELIMIT_ENABLED": _bool(env, "RATELIMIT_ENABLED", True),
        "RATELIMITS": _rate_limits(env),
        "RATELIMIT_STORAGE_URI": _rate_limit_storage(env),
    }


# Limits per role and for anonymous requests (no valid token, counted by address). They
# protect against a runaway client, and the one client that must never meet them is the
# platform's own backend: usually one `service` subject carrying every user's traffic. So
# service and admin tokens get limits far above what a web node serves, user tokens and
# anonymous callers tight ones. A support token is one person at the console: room for a
# view's burst of reads, not for a script paging through every user's ledger.
RATE_LIMIT_DEFAULTS = {"admin": "20000/second", "service": "20000/second", "user": "10/second;300/minute",
                       "support": "20/second;600/minute", rate_limit.ANONYMOUS: "20/second;600/minute"}


def _rate_limits(env):
    """{role or anonymous: spec} from RATELIMIT_<KIND>, else RATELIMIT_DEFAULT (one limit for
    every kind without a variable of its own), else RATE_LIMIT_DEFAULTS."""
    fallback = _rate_limit(env, "RATELIMIT_DEFAULT") if "RATELIMIT_DEFAULT" in env else None
    limits = {}
    for kind in (*ROLES, rate_limit.ANONYMOUS):
        name = f"RATELIMIT_{kind.upper()}"
        limits[kind] = _rate_limit(env, name) if name in env else fallback or RATE_LIMIT_DEFAULTS[kind]
    return limits


def _rate_limit(env, name):
    spec = env[name]
    try:
        parsed = rate_limit.parse(spec)
    except ValueError:
        parsed = None
    if not parsed or any(amount < 1 for amount, _ in parsed):
        raise ConfigError(f"{name}={spec!r} is not a rate limit such as 100/second or 30/10second")
    return spec


def _rate_limit_storage(env):
    uri = env.get("RATELIMIT_STORAGE_URI") or env.get("REDIS_URL") or "memory://"
    if not uri.startswith(("memory://", "redis://", "rediss://", "unix://")):
        raise ConfigError("RATELIMIT_STORAGE_URI must be a redis://, rediss:// or unix:// URL, or memory://")
    return uri


def _engine_options(url, env):
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {
        # No pool_pre_ping (a SELECT 1 round trip before every statement): connections idle
        # for DB_PING_IDLE_SECONDS are pinged at checkout (extensions.ping_idle_connections),
        # and a connection found dead in use invalidates the whole pool.
        "pool_size": _int(env, "DB_POOL_SIZE", 10, minimum=1),
        "max_overflow": _int(env, "DB_MAX_OVERFLOW", 5, minimum=0),
        "pool_timeout": _int(env, "DB_POOL_TIMEOUT", 10, minimum=1),
        "connect_args": {
            "connect_timeout": _int(env, "DB_CONNECT_TIMEOUT", 5, minimum=1),
            "application_name": "credits",
            # A stuck statement must not hold a request (and a pooled connection) forever.
            "options": f"-c statement_timeout={_int(env, 'DB_STATEMENT_TIMEOUT_MS', 15000, minimum=100)}",
        },
    }
