"""Configuration fails fast and names the variable."""
import pytest

from credits_app import config
from credits_app.config import ConfigError


@pytest.mark.parametrize("raw", ["postgres://u:p@h:5432/d", "postgresql://u:p@h:5432/d"])
def test_postgres_urls_use_the_pinned_driver(raw):
    assert config.database_url(raw, "/i") == "postgresql+psycopg2://u:p@h:5432/d"


def test_default_is_sqlite_in_instance_folder():
    assert config.database_url(None, "/inst") == "sqlite:////inst/credits.db"


def test_bad_values_name_the_variable():
    with pytest.raises(ConfigError, match="MAX_AMOUNT"):
        config.load({"MAX_AMOUNT": "lots"}, "/i")
    with pytest.raises(ConfigError, match="MAX_BALANCE"):
        config.load({"MAX_AMOUNT": "100", "MAX_BALANCE": "10"}, "/i")
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        config.load({"DATABASE_URL": "mysql://x"}, "/i")
    # No default token lifetime past what a token may be asked for (90 days).
    with pytest.raises(ConfigError, match="JWT_DEFAULT_TTL_SECONDS must be <= 7776000"):
        config.load({"JWT_DEFAULT_TTL_SECONDS": "7776001", "JWT_SECRET_KEY": "k" * 40}, "/i")


def test_an_identity_providers_key_needs_an_audience():
    base = {"TESTING": "1", "JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----\n"}
    with pytest.raises(ConfigError, match="JWT_AUDIENCE"):
        config.load(base, "/i")
    loaded = config.load({**base, "JWT_AUDIENCE": "credits-api"}, "/i")
    assert loaded["JWT_DECODE_AUDIENCE"] == loaded["JWT_ENCODE_AUDIENCE"] == "credits-api"
    assert config.load({"TESTING": "1"}, "/i")["JWT_DECODE_AUDIENCE"] is None  # our own tokens alone: optional


def test_webhook_settings_keep_their_rules():
    base = {"TESTING": "1"}
    # A claimed delivery's lease outlasts a send (connect and read timeouts) with room to spare.
    with pytest.raises(ConfigError, match="WEBHOOKS_LEASE_SECONDS must be >= 2 \\* WEBHOOKS_TIMEOUT_SECONDS"):
        config.load({**base, "WEBHOOKS_TIMEOUT_SECONDS": "60"}, "/i")
    assert config.load({**base, "WEBHOOKS_TIMEOUT_SECONDS": "60", "WEBHOOKS_LEASE_SECONDS": "122"},
                       "/i")["WEBHOOKS_LEASE_SECONDS"] == 122
    # Slow receivers must never hold the daily grant's worker.
    with pytest.raises(ConfigError, match="WEBHOOKS_QUEUE must differ from RQ_QUEUE"):
        config.load({**base, "RQ_QUEUE": "jobs", "WEBHOOKS_QUEUE": "jobs"}, "/i")
    with pytest.raises(ConfigError, match="LOW_BALANCE_THRESHOLD must be >= 0"):
        config.load({**base, "LOW_BALANCE_THRESHOLD": "-1"}, "/i")


def test_the_support_role_has_its_own_rate_limit():
    base = {"TESTING": "1"}
    assert config.load(base, "/i")["RATELIMITS"]["support"] == config.RATE_LIMIT_DEFAULTS["support"]
    assert config.load({**base, "RATELIMIT_SUPPORT": "5/second"}, "/i")["RATELIMITS"]["support"] == "5/second"
    assert config.load({**base, "RATELIMIT_DEFAULT": "7/second"}, "/i")["RATELIMITS"]["support"] == "7/second"
    for bad in ("lots", "0/second", ""):
        with pytest.raises(ConfigError, match="RATELIMIT_SUPPORT"):
            config.load({**base, "RATELIMIT_SUPPORT": bad}, "/i")
