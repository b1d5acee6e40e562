"""Rate limits on /api, per role and token subject (anonymous requests, those without a
valid token, per address): fixed windows aligned to the clock, counted in Redis so every
process shares them, in ONE round trip per request. The limits are configuration
(config.RATE_LIMIT_DEFAULTS says why they are what they are).

Why not Flask-Limiter: with its X-RateLimit headers on, it spends three Redis round trips
per request, and a large share of the hot path's CPU. The limit grammar is still the
`limits` library's (`RATELIMIT_USER="10/second;300/minute"`).
Each thread keeps its own Redis connection and speaks to it directly: redis-py's client adds
a pool checkout, a retry wrapper and a health check to every command, all CPU spent in
Python. hiredis (in requirements.txt) is redis-py's C reply parser and command packer,
cheaper than the Python one on every round trip (redis-py picks it up when it is installed).

If Redis is unreachable the API keeps working: each process counts in its own memory and
tries Redis again after a second (losing exact limits for a while beats refusing money
traffic). A connection Redis closed after it had worked is retried once at once, so a Redis
restart or idle timeout does not send a whole process to memory for that second."""
import hashlib
import logging
import threading
import time

from flask import current_app, g, request
from limits import parse_many
from redis.connection import ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError, NoScriptError, RedisError

from ..exceptions import DomainError, Forbidden, Unauthorized
from ..redis_client import TIMEOUTS
from .errors import error_response

log = logging.getLogger(__name__)

RETRY_REDIS_AFTER = 1.0  # seconds of in-memory counting after a Redis error
ANONYMOUS = "anonymous"  # the limits of requests without a valid token

# INCR every window's counter; the first hit of a window sets its expiry.
_HIT = """
local counts = {}
for i, key in ipairs(KEYS) do
    local n = redis.call('INCR', key)
    if n == 1 then redis.call('EXPIRE', key, ARGV[i]) end
    counts[i] = n
end
return counts
"""
_HIT_SHA = hashlib.sha1(_HIT.encode()).hexdigest()


class RateLimited(DomainError):
    status, code = 429, "rate_limited"


def parse(spec):
    """"100/second;5000/hour" -> [(amount, window seconds)]; ValueError when unparseable."""
    return [(item.amount, item.get_expiry()) for item in parse_many(spec)]


class Limiter:
    def __init__(self, limits, storage_uri):
        self.limits = limits  # {role or ANONYMOUS: [(amount, window seconds)]}
        self._storage_uri = storage_uri  # a redis:// URL, or memory:// for this process only
        self._connections = None  # made on first use: no connection at start-up
        self._thread = threading.local()
        self._memory = {}
        self._memory_lock = threading.Lock()
        self._redis_down_until = 0.0

    def hit(self, kind, subject, now):
        """Count one request of `subject` under the limits of `kind` (a role, or ANONYMOUS with
        an address for the subject); [(amount, window, count, reset_at)] for each limit."""
        windows = [(amount, window, int(now // window)) for amount, window in self.limits[kind]]
        # The kind is part of the key: a token subject never shares a count with an address,
        # nor with the same subject under another role.
        keys = [f"ratelimit:{kind}:{subject}:{amount}/{window}:{start}" for amount, window, start in windows]
        counts = self._count_in_redis(keys, windows, now)
        if counts is None:
            counts = self._count_in_memory(keys, windows, now)
        return [(amount, window, count, (start + 1) * window)
                for (amount, window, start), count in zip(windows, counts)]

    def _count_in_redis(self, keys, windows, now):
        if self._storage_uri.startswith("memory://") or now < self._redis_down_until:
            return None
        expiries = [window + 1 for _, window, _ in windows]
        try:
            try:
                counts = self._hit_redis(keys, expiries)
            except RedisConnectionError:
                if not getattr(self._thread, "answered", False):
                    raise
                # Redis closed a connection that had worked (a restart, its idle timeout,
                # CLIENT KILL): one more try on a new connection before counting in memory.
                self._thread.conn.disconnect()
                counts = self._hit_redis(keys, expiries)
        except RedisError as e:
            self._thread.answered = False
            if getattr(self._thread, "conn", None) is not None:
                self._thread.conn.disconnect()  # reconnects on the next use
            if not self._redis_down_until:
                log.warning("rate limits counted in process memory until Redis answers again: %s", e)
            self._redis_down_until = now + RETRY_REDIS_AFTER
            return None
        if self._redis_down_until:
            log.info("rate limits counted in Redis again")
            self._redis_down_until = 0.0
        return counts

    def _hit_redis(self, keys, expiries):
        conn = self._connection()
        try:
            counts = self._evalsha(conn, keys, expiries)
        except NoScriptError:  # a restarted or flushed Redis: load the script once more
            conn.send_command("SCRIPT", "LOAD", _HIT)
            conn.read_response()
            counts = self._evalsha(conn, keys, expiries)
        self._thread.answered = True
        return counts

    @staticmethod
    def _evalsha(conn, keys, expiries):
        conn.send_command("EVALSHA", _HIT_SHA, len(keys), *keys, *expiries)
        return conn.read_response()

    def _connection(self):
        conn = getattr(self._thread, "conn", None)
        if conn is None:
            if self._connections is None:
                self._connections = ConnectionPool.from_url(self._storage_uri, **TIMEOUTS)
            conn = self._thread.conn = self._connections.make_connection()
        return conn

    def _count_in_memory(self, keys, windows, now):
        with self._memory_lock:
            if len(self._memory) > 10_000:  # drop windows that have ended
                self._memory = {k: v for k, v in self._memory.items() if v[1] > now}
            counts = []
            for key, (_, window, start) in zip(keys, windows):
                count, ends = self._memory.get(key, (0, (start + 1) * window))
                self._memory[key] = (count + 1, ends)
                counts.append(count + 1)
            return counts


def _check():
    """before_request (after authentication, so the subject is known)."""
    req, ctx = request._get_current_object(), g._get_current_object()  # behind the proxy, once (docs/stock.md, 5)
    if not req.path.startswith("/api/"):
        return
    limiter = current_app.extensions["credits.rate_limit"]
    claims = ctx.get("claims")
    if claims is None:
        kind, subject = ANONYMOUS, req.remote_addr or "unknown"
    else:
        kind, subject = claims["role"], claims["sub"]
    now = time.time()
    results = limiter.hit(kind, subject, now)
    # Report the limit closest to being exceeded, as X-RateLimit-* headers on the response.
    amount, window, count, reset_at = min(results, key=lambda r: (r[0] - r[2], r[3]))
    headers = ctx.rate_limit_headers = {"X-RateLimit-Limit": str(amount),
                                        "X-RateLimit-Remaining": str(max(0, amount - count)),
                                        "X-RateLimit-Reset": str(reset_at)}
    if count > amount:
        error = RateLimited(f"rate limit exceeded ({amount} per {window} second{'s' if window > 1 else ''})",
                            limit=amount, window_seconds=window)
        error.headers = {**headers, "Retry-After": str(max(1, int(reset_at - now + 0.999)))}
        raise error


def _refused(e):
    """Error handler for what authentication refuses: those requests count too (a 401 as
    anonymous, by address; a 403 against its token), so a flood of bad tokens or forbidden
    calls meets a limit as well. Past the limit the answer is the 429."""
    if g.get("rate_limit_headers") is None:  # not counted yet
        try:
            _check()
        except RateLimited as limited:
            e = limited
    return error_response(e.status, e.code, e.message, e.details, e.headers)


def _headers(response):
    headers = g.get("rate_limit_headers")
    if headers:
        response.headers.update(headers)
    return response


def init_app(app):
    if not app.config["RATELIMIT_ENABLED"]:
        return
    limits = {kind: parse(spec) for kind, spec in app.config["RATELIMITS"].items()}
    app.extensions["credits.rate_limit"] = Limiter(limits, app.config["RATELIMIT_STORAGE_URI"])
    app.before_request(_check)
    app.register_error_handler(Unauthorized, _refused)
    app.register_error_handler(Forbidden, _refused)
    app.after_request(_headers)
