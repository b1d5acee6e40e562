"""One Redis client per app, created on first use (nothing connects at import or start-up).
Short timeouts: a request must fail fast rather than hang on a dead Redis."""
from flask import current_app
from redis import Redis

# Every Redis connection of the app (this client, the rate limiter's own) uses these.
TIMEOUTS = {"socket_connect_timeout": 1, "socket_timeout": 2}


def redis_client():
    """The app's Redis client, or None when REDIS_URL is not configured."""
    url = current_app.config["REDIS_URL"]
    if not url:
        return None
    client = current_app.extensions.get("credits.redis")
    if client is None:
        client = current_app.extensions["credits.redis"] = Redis.from_url(url, health_check_interval=30, **TIMEOUTS)
    return client
