"""Rate limits (credits_app/web/rate_limit.py): clock-aligned windows counted in Redis in one
round trip, X-RateLimit-* headers, the in-memory fallback while Redis is down and the way
back. Window arithmetic is tested with an explicit clock (`now`), so no test depends on
when it runs."""
import json
import math
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from redis import Redis as RedisClient
from sqlalchemy import text

from credits_app.config import RATE_LIMIT_DEFAULTS, ConfigError
from credits_app.extensions import db
from credits_app.web.rate_limit import Limiter, parse
from credits_app.auth.roles import ROLES
from tests.conftest import LiveServer, _fresh_url, client_as, make_app, new_user, token_for
from tests.services import Redis

T0 = 1_800_000_000.0  # a multiple of 10 and of 60: windows start here


@pytest.fixture(params=["memory", "redis"])
def storage(request):
    return "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")


def counts(results):
    return [count for _, _, count, _ in results]


def test_counts_per_window_and_resets_at_the_window_end(storage):
    limiter = Limiter({"service": parse("3/10second;5/minute")}, storage)
    assert [limiter.hit("service", "a", T0 + i) for i in range(3)][-1] == [(3, 10, 3, T0 + 10), (5, 60, 3, T0 + 60)]
    # A new 10-second window starts from zero; the minute keeps counting.
    assert limiter.hit("service", "a", T0 + 10) == [(3, 10, 1, T0 + 20), (5, 60, 4, T0 + 60)]
    assert counts(limiter.hit("service", "b", T0 + 10)) == [1, 1]  # per subject
    assert counts(limiter.hit("service", "a", T0 + 60)) == [1, 1]


def test_processes_share_counts_through_redis(redis_url):
    limits = {"service": parse("10/minute")}
    one, two = Limiter(limits, redis_url), Limiter(limits, redis_url)
    one.hit("service", "s", T0)
    two.hit("service", "s", T0 + 1)
    assert counts(one.hit("service", "s", T0 + 2)) == [3]
    keys = RedisClient.from_url(redis_url).keys("ratelimit:service:s:*")
    assert len(keys) == 1 and 0 < RedisClient.from_url(redis_url).ttl(keys[0]) <= 61  # windows expire


def test_a_flushed_script_cache_is_reloaded(redis_url):
    limiter = Limiter({"service": parse("10/minute")}, redis_url)
    limiter.hit("service", "s", T0)
    RedisClient.from_url(redis_url).script_flush()  # as after a Redis restart
    assert counts(limiter.hit("service", "s", T0 + 1)) == [2]  # still Redis's count, not a fresh in-memory one
    assert RedisClient.from_url(redis_url).get(f"ratelimit:service:s:10/60:{int(T0 // 60)}") == b"2"


def test_a_connection_redis_closed_is_replaced_at_once(redis_url):
    limiter = Limiter({"service": parse("10/minute")}, redis_url)
    limiter.hit("service", "s", T0)
    conn = limiter._thread.conn  # this thread's own connection
    conn.send_command("CLIENT", "ID")
    admin = RedisClient.from_url(redis_url)
    assert admin.client_kill_filter(_id=conn.read_response()) == 1  # as a restart or idle timeout would
    assert counts(limiter.hit("service", "s", T0 + 1)) == [2]  # Redis's count on a new connection, not memory's 1
    assert admin.get(f"ratelimit:service:s:10/60:{int(T0 // 60)}") == b"2"


def test_redis_down_counts_in_memory_then_back_to_redis():
    redis = Redis()  # not started yet
    try:
        limiter = Limiter({"service": parse("100/hour")}, redis.url)
        assert counts(limiter.hit("service", "s", T0)) == [1]  # connection refused: counted in memory
        assert counts(limiter.hit("service", "s", T0 + 0.5)) == [2]  # Redis not retried within the second
        redis.start()
        assert counts(limiter.hit("service", "s", T0 + 0.9)) == [3]
        assert counts(limiter.hit("service", "s", T0 + 2)) == [1]  # Redis again, which had counted nothing
        assert RedisClient.from_url(redis.url).get(f"ratelimit:service:s:100/3600:{int(T0 // 3600)}") == b"1"
        redis.stop()
        assert counts(limiter.hit("service", "s", T0 + 3)) == [4]  # memory again, continuing its own count
    finally:
        redis.destroy()


def test_headers_on_every_api_answer_and_429_with_retry_after(backend, request, tmp_path, storage):
    app = make_app(_fresh_url(backend, request, tmp_path), RATELIMIT_ENABLED="true",
                   RATELIMIT_DEFAULT="3/hour;1000/second", RATELIMIT_STORAGE_URI=storage)
    client = client_as(app, "service", sub="headers")
    answers = [client.get("/api/users") for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in answers] == ["2", "1", "0", "0"]
    assert {r.headers["X-RateLimit-Limit"] for r in answers} == {"3"}  # the limit nearest to refusal
    reset = int(answers[0].headers["X-RateLimit-Reset"])
    assert reset % 3600 == 0 and time.time() < reset <= time.time() + 3600
    refused = answers[-1]
    assert refused.get_json()["error"]["code"] == "rate_limited"
    assert refused.get_json()["error"]["details"] == {"limit": 3, "window_seconds": 3600}
    assert 0 < int(refused.headers["Retry-After"]) <= 3600
    # Not for what is not /api; a request authentication refuses counts as anonymous.
    assert "X-RateLimit-Limit" not in app.test_client().get("/healthz").headers
    anonymous = app.test_client().get("/api/users")
    assert anonymous.status_code == 401 and anonymous.headers["X-RateLimit-Remaining"] == "2"


@pytest.mark.parametrize("env, name", [
    ({"RATELIMIT_DEFAULT": "lots"}, "RATELIMIT_DEFAULT"),
    ({"RATELIMIT_DEFAULT": "0/second"}, "RATELIMIT_DEFAULT"),
    ({"RATELIMIT_DEFAULT": ""}, "RATELIMIT_DEFAULT"),
    ({"RATELIMIT_STORAGE_URI": "memcached://localhost"}, "RATELIMIT_STORAGE_URI"),
    ({"RATELIMIT_USER": "lots"}, "RATELIMIT_USER"),
    ({"RATELIMIT_SERVICE": ""}, "RATELIMIT_SERVICE"),
    ({"RATELIMIT_ADMIN": "0/second"}, "RATELIMIT_ADMIN"),
    ({"RATELIMIT_ANONYMOUS": "5 per fortnight"}, "RATELIMIT_ANONYMOUS"),
])
def test_bad_limits_refuse_to_start(tmp_path, env, name):
    with pytest.raises(ConfigError, match=name):
        make_app(f"sqlite:///{tmp_path}/x.db", RATELIMIT_ENABLED="true", **env)


# --- limits per role ---------------------------------------------------------------------

def _call(base, method, path, token=None, body=None):
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(base + path, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def _burst(base, n, *args, **kwargs):
    """n requests at once, sent as a one-second window starts (so they meet as few windows as
    they can): each thread waits for the others and for that moment before sending."""
    ready = threading.Barrier(n + 1)

    def one(_):
        ready.wait()
        return _call(base, *args, **kwargs)
    with ThreadPoolExecutor(n) as pool:
        answers = pool.map(one, range(n))
        while ready.n_waiting < n:
            time.sleep(0.01)
        time.sleep(1 - time.time() % 1)
        ready.wait()
        return list(answers)


def test_a_burst_from_the_backend_meets_no_limit_and_a_user_token_does(request, tmp_path, redis_url):
    """The platform's backend is one service subject: a burst of 200 concurrent deducts from it,
    through a real threaded server with the default limits counted in Redis, is all served.
    A user token bursting the same way is limited."""
    app = make_app(_fresh_url("postgresql", request, tmp_path), RATELIMIT_ENABLED="true", REDIS_URL=redis_url)
    admin = client_as(app)
    uid = new_user(admin)
    assert admin.post(f"/api/credits/{uid}/add", json={"amount": 1000}).status_code == 200
    with LiveServer(app) as srv:
        # Room to queue the whole burst, as gunicorn's backlog has: with werkzeug's 128, the
        # connections past it would be retried by TCP a second later, thinning the burst out.
        srv.server.socket.listen(2048)
        backend = _burst(srv.url, 200, "POST", f"/api/credits/{uid}/deduct", token_for(app, "service", sub="platform"),
                         body={"amount": 1})
        started = time.monotonic()
        user = _burst(srv.url, 200, "GET", f"/api/credits/{uid}", token_for(app, "user", user_id=uid))
        user_windows = math.ceil(time.monotonic() - started) + 1  # one-second windows the burst can have met
        started = time.monotonic()
        anonymous = _burst(srv.url, 100, "GET", "/api/users")
        anonymous_windows = math.ceil(time.monotonic() - started) + 1
    assert [status for status, _, _ in backend] == [200] * 200, [b for s, b, _ in backend if s != 200][:3]
    assert {h["X-RateLimit-Limit"] for _, _, h in backend} == {"20000"}
    assert admin.get(f"/api/credits/{uid}").get_json()["credits"] == 800
    with app.app_context(), db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ledger_entries WHERE actor = 'platform' AND kind = 'deduct'")
                            ).scalar() == 200
    user_statuses = [status for status, _, _ in user]
    assert set(user_statuses) == {200, 429} and user_statuses.count(200) <= 10 * user_windows  # 10 a second
    assert all(b["error"]["code"] == "rate_limited" and int(h["Retry-After"]) >= 1 for s, b, h in user if s == 429)
    anonymous_statuses = [status for status, _, _ in anonymous]
    # No valid token: counted by address, 20 a second.
    assert set(anonymous_statuses) == {401, 429} and anonymous_statuses.count(401) <= 20 * anonymous_windows
    with app.app_context():
        db.engine.dispose()


def test_each_role_has_its_own_limit_and_rate_limit_default_is_the_fallback(tmp_path):
    url = f"sqlite:///{tmp_path}/x.db"
    assert make_app(url).config["RATELIMITS"] == RATE_LIMIT_DEFAULTS
    assert set(RATE_LIMIT_DEFAULTS) == {*ROLES, "anonymous"}
    assert make_app(url, RATELIMIT_DEFAULT="50/second").config["RATELIMITS"] == dict.fromkeys(RATE_LIMIT_DEFAULTS,
                                                                                             "50/second")
    limits = make_app(url, RATELIMIT_DEFAULT="50/second", RATELIMIT_USER="2/second",
                      RATELIMIT_ANONYMOUS="1/second").config["RATELIMITS"]
    assert limits == {"admin": "50/second", "service": "50/second", "user": "2/second", "support": "50/second",
                      "anonymous": "1/second"}


def test_refused_requests_count_too(backend, request, tmp_path, storage):
    """A flood of bad tokens is limited by address, a user token calling what it may not by its
    subject; neither spends another caller's limit."""
    app = make_app(_fresh_url(backend, request, tmp_path), RATELIMIT_ENABLED="true", RATELIMIT_STORAGE_URI=storage,
                   RATELIMIT_ANONYMOUS="2/minute", RATELIMIT_USER="2/minute")
    anonymous = app.test_client()
    answers = [anonymous.get("/api/users", headers={"Authorization": "Bearer forged"}) for _ in range(3)]
    assert [r.status_code for r in answers] == [401, 401, 429]
    assert answers[-1].get_json()["error"]["code"] == "rate_limited" and int(answers[-1].headers["Retry-After"]) >= 1
    user = client_as(app, "user", user_id=1)
    assert [user.get("/api/users").status_code for _ in range(3)] == [403, 403, 429]
    assert client_as(app, "user", sub="another-user", user_id=2).get("/api/users").status_code == 403
    assert client_as(app, "service").get("/api/users").status_code == 200  # same address, its own limit
