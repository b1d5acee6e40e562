"""Token revocation across processes: a token revoked anywhere is refused by every other app
instance on the same database within REVOCATION_CACHE_SECONDS, however long the deny-list;
revocations of expired tokens are purged. The only times asserted are that window."""
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import jwt as pyjwt
from freezegun import freeze_time
from sqlalchemy import bindparam, event, text

from credits_app.auth import tokens
from credits_app.extensions import db
from credits_app.types import UTCDateTime, utcnow
from tests.conftest import _fresh_url, client_as, make_app, token_for
from tests.services import ROOT

WINDOW = 1  # REVOCATION_CACHE_SECONDS for the instances under test


def _jti(token):
    return pyjwt.decode(token, options={"verify_signature": False})["jti"]


def _exp(token):
    return pyjwt.decode(token, options={"verify_signature": False})["exp"]


def _status(client, token):
    return client.get("/api/auth/whoami", headers={"Authorization": f"Bearer {token}"}).status_code


def _instances(backend, request, tmp_path, **env):
    url = _fresh_url(backend, request, tmp_path)
    return make_app(url, **env), make_app(url, REVOCATION_CACHE_SECONDS=str(WINDOW), **env)


def _dispose(*apps):
    for app in apps:
        with app.app_context():
            db.engine.dispose()


def _revoked_rows(app, count):
    """`count` revocations inserted by plain SQL, as an operator or another tool might."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        sql = ("INSERT INTO revoked_tokens (jti, revoked_by) "
               "SELECT 'bulk-' || g, 'sql' FROM generate_series(1, :n) g")
    else:
        sql = ("WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :n) "
               "INSERT INTO revoked_tokens (jti, revoked_by) SELECT 'bulk-' || i, 'sql' FROM g")
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text(sql), {"n": count})


def _refused_within_window(client, token, revoke, threads=4):
    """Revoke, keep calling from several threads, and require every call that starts more
    than WINDOW seconds after the revocation committed to be refused; once refused in this
    process, a token stays refused."""
    revoke()
    deadline = time.monotonic() + WINDOW

    def poll(_):
        own, seen = client.application.test_client(), []
        while True:
            started = time.monotonic()
            seen.append((started > deadline, _status(own, token)))
            if started > deadline + 0.2:
                return seen

    with ThreadPoolExecutor(threads) as pool:
        for seen in pool.map(poll, range(threads)):
            assert {status for late, status in seen if late} == {401}, seen
            statuses = [status for _, status in seen]
            assert statuses == sorted(statuses, key=lambda s: s == 401), seen  # never 200 after a 401


def test_a_revocation_elsewhere_is_refused_within_the_window_with_a_long_list(backend, request, tmp_path):
    issuer, other = _instances(backend, request, tmp_path)
    _revoked_rows(issuer, 200_000)
    client = other.test_client()
    by_api, by_cli, by_sql, bystander = (token_for(issuer, "service", sub=f"s{i}") for i in range(4))
    for token in (by_api, by_cli, by_sql, bystander):
        assert _status(client, token) == 200  # the first call loads the whole list

    admin = client_as(issuer)
    _refused_within_window(client, by_api, lambda: admin.post("/api/auth/revoke", json={"jti": _jti(by_api)}))
    _refused_within_window(client, by_cli, lambda: issuer.test_cli_runner().invoke(
        args=["auth", "revoke", _jti(by_cli)]))

    def insert_by_sql():
        with issuer.app_context(), db.engine.begin() as conn:
            conn.execute(text("INSERT INTO revoked_tokens (jti, revoked_by) VALUES (:jti, 'dba')"),
                         {"jti": _jti(by_sql)})
    _refused_within_window(client, by_sql, insert_by_sql)

    assert _status(client, bystander) == 200
    assert _status(issuer.test_client(), by_api) == 401
    _dispose(issuer, other)


def test_the_window_counts_from_the_start_of_a_load(request, tmp_path):
    """A load that ends long after it started (a long list) must not stretch the window: a
    revocation committed while it ran is refused WINDOW seconds after it committed."""
    issuer, other = _instances("postgresql", request, tmp_path)
    token = token_for(issuer, "service")
    client = other.test_client()
    assert _status(client, token) == 200
    time.sleep(WINDOW + 0.1)  # the next call loads again
    committed = []

    def slow_load(_conn, _cursor, statement, *_):
        if "FROM revoked_tokens" in statement and not committed:
            with issuer.app_context():
                tokens.revoke(_jti(token), actor="test")
            committed.append(time.monotonic())
            time.sleep(WINDOW + 0.5)  # the rest of a slow load

    with other.app_context():
        engine = db.engine
    event.listen(engine, "after_cursor_execute", slow_load)
    try:
        assert _status(client, token) == 200  # this load's snapshot predates the revocation
    finally:
        event.remove(engine, "after_cursor_execute", slow_load)
    assert time.monotonic() > committed[0] + WINDOW
    assert _status(client, token) == 401
    _dispose(issuer, other)


def _revoke_in(app, jti):
    with app.app_context():
        tokens.revoke(jti, actor="test")


def test_a_revocation_that_commits_late_is_not_skipped(request, tmp_path):
    """Revocation A takes its place in the order, then stalls before committing; B, started
    after it, must wait, so a load in between can never see B without A."""
    issuer, other = _instances("postgresql", request, tmp_path)
    a, b = token_for(issuer, "service", sub="a"), token_for(issuer, "service", sub="b")
    client = other.test_client()
    assert _status(client, a) == _status(client, b) == 200
    with issuer.app_context():
        stalled = db.engine.connect()
        transaction = stalled.begin()
        stalled.execute(text("INSERT INTO revoked_tokens (jti, revoked_by) VALUES (:jti, 'slow')"), {"jti": _jti(a)})
        second = threading.Thread(target=_revoke_in, args=(issuer, _jti(b)))
        second.start()
        with db.engine.connect() as conn:
            while not conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                        "AND NOT granted")).scalar():
                time.sleep(0.01)
    time.sleep(WINDOW + 0.1)
    assert _status(client, a) == _status(client, b) == 200  # a load: neither has committed
    transaction.commit()
    stalled.close()
    second.join()
    deadline = time.monotonic() + WINDOW
    time.sleep(WINDOW + 0.05)
    assert time.monotonic() > deadline
    assert _status(client, a) == _status(client, b) == 401
    _dispose(issuer, other)


def _set_revoked_at(app, jti, when):
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("UPDATE revoked_tokens SET revoked_at = :when WHERE jti = :jti")
                     .bindparams(bindparam("when", type_=UTCDateTime)), {"when": when, "jti": jti})


def _stored_jtis(app):
    with app.app_context(), db.engine.connect() as conn:
        return set(conn.execute(text("SELECT jti FROM revoked_tokens WHERE revoked_by <> 'sql'")).scalars())


def test_purge_drops_revocations_of_expired_tokens_and_keeps_the_rest(app, runner):
    admin = client_as(app)
    leeway = app.config["JWT_DECODE_LEEWAY"]
    now = int(time.time())
    live = token_for(app, "service", sub="live", ttl_seconds=3600)
    long_lived = token_for(app, "service", sub="long-lived", ttl_seconds=2 * 86400)
    bystander = token_for(app, "service", sub="bystander", ttl_seconds=2 * 86400)
    for jti, expires_at in (("expired", now - leeway - 60), ("within-leeway", now - 5), (_jti(live), _exp(live)),
                            (_jti(long_lived), _exp(long_lived)), ("unknown-recent", None), ("unknown-old", None)):
        r = admin.post("/api/auth/revoke", json={"jti": jti, "expires_at": expires_at})
        assert r.status_code == 200 and r.get_json()["revoked"] is True, r.get_json()
    result = runner.invoke(args=["auth", "revoke", "expired-by-cli", "--expires-at", str(now - leeway - 60)])
    assert result.exit_code == 0, result.output
    # Revoked longer ago than the longest lifetime of a token issued here, expiry unknown.
    _set_revoked_at(app, "unknown-old", utcnow() - timedelta(seconds=tokens.MAX_TTL + leeway + 60))
    _set_revoked_at(app, "unknown-recent", utcnow() - timedelta(seconds=tokens.MAX_TTL + leeway - 60))
    for bad in ({"jti": "x", "expires_at": "soon"}, {"jti": "x", "expires_at": -1}, {"jti": "x", "expires_at": 1.5}):
        assert admin.post("/api/auth/revoke", json=bad).status_code == 422, bad

    result = runner.invoke(args=["auth", "purge-revocations"])
    assert result.exit_code == 0 and result.output.strip() == "purged 3 revocation(s) of expired tokens"
    assert _stored_jtis(app) == {"within-leeway", _jti(live), _jti(long_lived), "unknown-recent"}
    assert runner.invoke(args=["auth", "purge-revocations"]).output.strip() == \
        "purged 0 revocation(s) of expired tokens"
    client = app.test_client()
    assert _status(client, live) == 401  # still refused here...
    fresh = make_app(app.config["SQLALCHEMY_DATABASE_URI"], REVOCATION_CACHE_SECONDS=str(WINDOW))
    assert _status(fresh.test_client(), live) == 401  # ...and by an instance that loads the purged list
    _dispose(fresh)
    revocations = app.extensions["credits.revocations"]
    assert "expired" in revocations.current(5)  # this instance revoked it before the purge...
    with freeze_time(datetime.now(timezone.utc) + timedelta(hours=2)):  # ...and reads the whole list hourly
        for _ in range(2):
            assert _status(client, long_lived) == 401
            assert _status(client, bystander) == 200
        assert set(revocations.current(5)) == _stored_jtis(app)


def test_the_daily_job_purges_revocations(pg_app, rq_processes):
    with pg_app.app_context():
        tokens.revoke("long-expired", actor="t", expires_at=int(time.time()) - 3600)
        tokens.revoke("still-live", actor="t", expires_at=int(time.time()) + 3600)
    url = pg_app.config["SQLALCHEMY_DATABASE_URI"].replace("+psycopg2", "")
    result = subprocess.run([sys.executable, "-c", "from worker import jobs; jobs.daily_grant_tick(amount=5)"],
                            cwd=ROOT, env=rq_processes.env(url), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert _stored_jtis(pg_app) == {"still-live"}
