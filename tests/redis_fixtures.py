"""Real redis-server (and, later, RQ processes) for the tests that need them."""
import pytest
from redis import Redis as RedisClient

from tests.services import Redis


@pytest.fixture(scope="session")
def redis_server():
    server = Redis().start()
    yield server
    server.destroy()


@pytest.fixture
def redis_url(redis_server):
    """A clean Redis database for each test."""
    client = RedisClient.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url
