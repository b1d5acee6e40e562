"""Rate limits (credits_app/rate_limit.py): clock-aligned windows counted in Redis in one
round trip, X-RateLimit-* headers, the in-memory fallback while Redis is down and the way
back. Window arithmetic is tested with an explicit clock (`now`), so no test depends on
when it runs."""
import time

import pytest
from redis import Redis as RedisClient

from credits_app.config import ConfigError
from credits_app.rate_limit import Limiter, parse
from tests.conftest import _fresh_url, client_as, make_app
from tests.services import Redis

T0 = 1_800_000_000.0  # a multiple of 10 and of 60: windows start here


@pytest.fixture(params=["memory", "redis"])
def storage(request):
    return "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")


def counts(results):
    return [count for _, _, count, _ in results]


def test_counts_per_window_and_resets_at_the_window_end(storage):
    limiter = Limiter(parse("3/10second;5/minute"), storage)
    assert [limiter.hit("a", T0 + i) for i in range(3)][-1] == [(3, 10, 3, T0 + 10), (5, 60, 3, T0 + 60)]
    # A new 10-second window starts from zero; the minute keeps counting.
    assert limiter.hit("a", T0 + 10) == [(3, 10, 1, T0 + 20), (5, 60, 4, T0 + 60)]
    assert counts(limiter.hit("b", T0 + 10)) == [1, 1]  # per subject
    assert counts(limiter.hit("a", T0 + 60)) == [1, 1]


def test_processes_share_counts_through_redis(redis_url):
    one, two = Limiter(parse("10/minute"), redis_url), Limiter(parse("10/minute"), redis_url)
    one.hit("s", T0)
    two.hit("s", T0 + 1)
    assert counts(one.hit("s", T0 + 2)) == [3]
    keys = RedisClient.from_url(redis_url).keys("ratelimit:s:*")
    assert len(keys) == 1 and 0 < RedisClient.from_url(redis_url).ttl(keys[0]) <= 61  # windows expire


def test_a_flushed_script_cache_is_reloaded(redis_url):
    limiter = Limiter(parse("10/minute"), redis_url)
    limiter.hit("s", T0)
    RedisClient.from_url(redis_url).script_flush()  # as after a Redis restart
    assert counts(limiter.hit("s", T0 + 1)) == [2]  # still Redis's count, not a fresh in-memory one
    assert RedisClient.from_url(redis_url).get(f"ratelimit:s:10/60:{int(T0 // 60)}") == b"2"


def test_a_connection_redis_closed_is_replaced_at_once(redis_url):
    limiter = Limiter(parse("10/minute"), redis_url)
    limiter.hit("s", T0)
    conn = limiter._thread.conn  # this thread's own connection
    conn.send_command("CLIENT", "ID")
    admin = RedisClient.from_url(redis_url)
    assert admin.client_kill_filter(_id=conn.read_response()) == 1  # as a restart or idle timeout would
    assert counts(limiter.hit("s", T0 + 1)) == [2]  # Redis's count on a new connection, not memory's 1
    assert admin.get(f"ratelimit:s:10/60:{int(T0 // 60)}") == b"2"


def test_redis_down_counts_in_memory_then_back_to_redis():
    redis = Redis()  # not started yet
    try:
        limiter = Limiter(parse("100/hour"), redis.url)
        assert counts(limiter.hit("s", T0)) == [1]  # connection refused: counted in memory
        assert counts(limiter.hit("s", T0 + 0.5)) == [2]  # Redis not retried within the second
        redis.start()
        assert counts(limiter.hit("s", T0 + 0.9)) == [3]
        assert counts(limiter.hit("s", T0 + 2)) == [1]  # Redis again, which had counted nothing
        assert RedisClient.from_url(redis.url).get(f"ratelimit:s:100/3600:{int(T0 // 3600)}") == b"1"
        redis.stop()
        assert counts(limiter.hit("s", T0 + 3)) == [4]  # memory again, continuing its own count
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
    # Not for what is not /api, and not for requests refused by authentication.
    assert "X-RateLimit-Limit" not in app.test_client().get("/healthz").headers
    assert "X-RateLimit-Limit" not in app.test_client().get("/api/users").headers


@pytest.mark.parametrize("env, name", [
    ({"RATELIMIT_DEFAULT": "lots"}, "RATELIMIT_DEFAULT"),
    ({"RATELIMIT_DEFAULT": "0/second"}, "RATELIMIT_DEFAULT"),
    ({"RATELIMIT_DEFAULT": ""}, "RATELIMIT_DEFAULT"),
    ({"RATELIMIT_STORAGE_URI": "memcached://localhost"}, "RATELIMIT_STORAGE_URI"),
])
def test_bad_limits_refuse_to_start(tmp_path, env, name):
    with pytest.raises(ConfigError, match=name):
        make_app(f"sqlite:///{tmp_path}/x.db", RATELIMIT_ENABLED="true", **env)
