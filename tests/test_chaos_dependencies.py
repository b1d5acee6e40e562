"""Dependencies failing under real processes: gunicorn (as the Procfile runs it), the RQ
worker and the scheduler, against a PostgreSQL cluster and a redis-server of the test's own
(stopping them never touches the session's shared servers).

Every wait is a bounded poll with a generous bound stated in its failure message; no test
asserts on elapsed time. DESIGN.md invariants checked after every fault: 1 (no negative
balance), 2 (balances equal ledger sums), 3 (one daily grant per user and date), 4 (an
Idempotency-Key takes effect at most once; a retry gets the original outcome), 5 (a change
commits whole or not at all: a request answered 503 either never happened or is replayed)."""
import time
from collections import Counter
from datetime import timedelta

import pytest
from redis import Redis as RedisClient
from sqlalchemy import text

from credits_app import grants, ledger
from credits_app.extensions import db
from tests.chaos_fixtures import (Api, KeyedTraffic, gunicorn_workers, is_error_shape, stack_env, tokens_for,
                                  wait_until, web_log_tail)
from tests.conftest import make_app, token_for
from tests.redis_fixtures import RQProcesses
from tests.services import Redis, Web
from worker import schedule

pytestmark = pytest.mark.slow


def _users(api, n, prefix):
    ids = []
    for i in range(n):
        r = api.post("/api/users", {"email": f"{prefix}{i}@example.com", "name": f"{prefix} {i}"})
        assert r.status == 201, r
        ids.append(r.body["user_id"])
    return ids


def test_pooled_connections_after_a_postgres_restart(own_pg):
    """No pre-ping per statement: a connection idle longer than DB_PING_IDLE_SECONDS is
    pinged at checkout and replaced if dead, so the first request after a quiet restart
    succeeds; one reused within that time fails once with the JSON 503 (a change is not
    applied: the client retries it with its Idempotency-Key), and that failure invalidates
    the rest of the pool, so the next request succeeds."""
    url = own_pg.url("credits")
    pinging, trusting = make_app(url, DB_PING_IDLE_SECONDS="0"), make_app(url, DB_PING_IDLE_SECONDS="3600")
    admin = {"Authorization": f"Bearer {token_for(pinging)}"}
    uid = pinging.test_client().post("/api/users", json={"email": "p@example.com", "name": "P"},
                                     headers=admin).get_json()["user_id"]
    for app in (pinging, trusting):
        with app.app_context():
            db.engine.pool.dispose()
        for _ in range(3):  # two pooled connections each (one for auth's revocation load, one for the change)
            assert app.test_client().post(f"/api/credits/{uid}/add", json={"amount": 1}, headers=admin).status_code == 200
    own_pg.stop("immediate")
    own_pg.restart()

    r = pinging.test_client().post(f"/api/credits/{uid}/add", json={"amount": 1}, headers=admin)
    assert r.status_code == 200, r.get_json()
    r = trusting.test_client().post(f"/api/credits/{uid}/add", json={"amount": 1}, headers=admin,
                                    environ_base={"HTTP_IDEMPOTENCY_KEY": "after-restart"})
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "database_unavailable", r.get_json()
    for _ in range(3):  # the retry, then more: the pool was invalidated by that one failure
        r = trusting.test_client().post(f"/api/credits/{uid}/add", json={"amount": 1}, headers=admin,
                                        environ_base={"HTTP_IDEMPOTENCY_KEY": "after-restart"})
        assert r.status_code == 200, r.get_json()
    balance = pinging.test_client().get(f"/api/credits/{uid}", headers=admin).get_json()["credits"]
    assert balance == 6 + 1 + 1  # the 503 applied nothing; the retries applied once
    for app in (pinging, trusting):
        with app.app_context():
            db.engine.dispose()


def test_postgres_stopped_and_restarted_under_load(own_pg):
    """Injected: `pg_ctl stop -m immediate` (every backend killed mid-statement) while six
    client threads send keyed add/deduct/reset to three hot users through gunicorn with two
    workers; PostgreSQL stays down a few seconds, then starts again on the same port.
    Observed: while it is down every answer is a 200 (before the stop), or a 503
    `database_unavailable` in the JSON error shape — no 500, no HTML, no request left hanging
    (each call has a 60 s client timeout and none expires); after the restart the same
    gunicorn master and workers (no restart) answer 200 again by themselves. Then every
    request whose outcome was unknown is retried with its Idempotency-Key: the ledger holds
    exactly the 2xx requests once each and nothing for the 409s (invariants 1, 2, 4, 5)."""
    url = own_pg.url("credits")
    (token,) = tokens_for(url, "admin")
    web = Web(stack_env(url, WEB_CONCURRENCY=2, DB_CONNECT_TIMEOUT=2, DB_POOL_TIMEOUT=5)).start()
    try:
        api = Api(web.url, token)
        hot = _users(api, 3, "pgdown")
        traffic = KeyedTraffic(api, hot, seed=1)
        for uid in hot:
            assert traffic.seed(uid, 100).status == 200
        pids = (web.proc.pid, sorted(gunicorn_workers(web)))
        load = traffic.start_background(threads=6, pause=0.01)
        wait_until(lambda: traffic.statuses()[200] >= 30, "load to get going", timeout=60)

        own_pg.stop("immediate")  # injected
        wait_until(lambda: traffic.statuses()[503] >= 10, "503s while PostgreSQL is down", timeout=60)
        down_reads = [api.get(f"/api/credits/{hot[0]}") for _ in range(5)]
        time.sleep(2)  # keep it down a while under load (not a timing assertion)
        own_pg.restart()  # the database returns

        # Recovers by itself: a bounded wait (generous 60 s) for a 200 from each hot user.
        wait_until(lambda: all(api.get(f"/api/credits/{u}").status == 200 for u in hot),
                   "the service to answer 200 again after PostgreSQL returned", timeout=60)
        recovered_at = sum(traffic.statuses().values())
        wait_until(lambda: sum(traffic.statuses().values()) >= recovered_at + 60,
                   "traffic to flow after recovery", timeout=90)
        traffic.stopped.set()
        load.join(120)
        assert not load.is_alive(), "a client thread hung"

        statuses = traffic.statuses()
        answers = [a for r in traffic.requests.values() for a in r["answers"]] + down_reads
        unexpected = [a for a in answers if a.status not in (200, 409, 503)]
        assert not unexpected, f"observed answers other than 200/409/503 (a 500, a hang, HTML): {unexpected[:5]}"
        outage = [a for a in answers if a.status == 503]
        assert outage and all(is_error_shape(a) and a.error_code == "database_unavailable" for a in outage), \
            f"a 503 without the JSON error shape: {[a for a in outage if not is_error_shape(a)][:3]}"
        assert all(a.status == 503 for a in down_reads), f"reads while down: {down_reads}"
        assert (web.proc.pid, sorted(gunicorn_workers(web))) == pids, "gunicorn or a worker was restarted"

        traffic.settle()  # retry unknown outcomes with their keys
        books = traffic.check_books(url, "chaos-admin")
        assert books["ok"] > 0 and statuses[503] > 0
        print(f"\n[pg outage] injected: immediate stop + restart; answers {dict(statuses)}; books {books}")
        assert "Traceback" not in web_log_tail(web, 200000), "a stack trace in the web log"
    finally:
        web.stop()


def _redis_env(url, redis_url, **extra):
    return stack_env(url, REDIS_URL=redis_url, RQ_QUEUE="credits", DAILY_GRANT_CHUNK_SIZE=4,
                     DAILY_GRANT_CATCHUP_DAYS=3, DAILY_GRANT_RETRY_DELAYS="0,0,0",
                     DAILY_GRANT_SCHEDULER_INTERVAL=1, **extra)


def test_redis_down_money_flows_scheduling_degrades_and_missed_grant_is_caught_up(own_pg, tmp_path):
    """Injected: the stack (gunicorn, `python -m worker`, `python -m worker.schedule`) runs
    while redis-server is down — it crashed before midnight, so yesterday's daily grant was
    never run (the last run is the day before) — then Redis comes back EMPTY (no
    persistence), and later is stopped and restarted again under credit traffic.
    Observed while down: credit reads and writes answer 200; POST /api/grants/daily/run is a
    503 `queue_unavailable` in the JSON shape; /readyz is 503 naming redis; rate limits still
    bite, counted in process memory (429 with the JSON shape); the worker and the scheduler
    stay up (before the fix the scheduler exited on its first Redis error, and nothing ever
    put the daily-grant entry back into an emptied Redis). When Redis returns: the entry is
    registered again, yesterday's and today's grants run exactly once for every user
    (invariant 3), the day before is not granted again, and the books balance (invariants
    1, 2)."""
    url = own_pg.url("credits")
    admin, service = tokens_for(url, "admin", "service")
    # Its own subject, so only this client's burst meets the rate limit.
    limited = token_for(make_app(url), "admin", sub="burst-client")
    app = make_app(url)
    today = grants.utc_today()
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO users (email, name, created_at) SELECT 'r' || i || '@example.com', 'R', "
                              "CURRENT_TIMESTAMP FROM generate_series(1, 10) i"))
            conn.execute(text("INSERT INTO credits (user_id, credits, last_updated) SELECT user_id, 0, "
                              "CURRENT_TIMESTAMP FROM users"))
            ids = [r[0] for r in conn.execute(text("SELECT user_id FROM users ORDER BY user_id"))]
        grants.plan(today - timedelta(days=2), scheduled=True)  # the last scheduled grant before Redis went down
        grants.run_date(today - timedelta(days=2))
        db.engine.dispose()

    redis = Redis()  # not started: it is down when the stack starts
    procs = RQProcesses(redis.url, str(tmp_path))
    env = _redis_env(url, redis.url, RATELIMIT_ENABLED="true", RATELIMIT_DEFAULT="30/10second")
    web = Web(env).start()
    try:
        worker = procs.worker(url, entry_point=True, **{k: v for k, v in env.items() if k.startswith("DAILY")})
        scheduler = procs.scheduler(url, **{k: v for k, v in env.items() if k.startswith("DAILY")})
        api, svc = Api(web.url, admin), Api(web.url, service)

        # --- Redis down -----------------------------------------------------------------
        for uid in ids[:3]:
            assert svc.post(f"/api/credits/{uid}/add", {"amount": 7}).status == 200
            assert svc.post(f"/api/credits/{uid}/deduct", {"amount": 2}).status == 200
            assert svc.get(f"/api/credits/{uid}").body["credits"] == 5 + 7 - 2  # the last grant, then these
        queued = api.post("/api/grants/daily/run", {})
        assert queued.status == 503 and is_error_shape(queued) and queued.error_code == "queue_unavailable", queued
        ready = api.get("/readyz")
        assert ready.status == 503 and ready.body["checks"]["redis"].startswith("error"), ready
        burst = Counter(Api(web.url, limited).get(f"/api/credits/{ids[0]}").status for _ in range(100))
        assert burst[429] > 0 and set(burst) <= {200, 429}, f"in-memory rate limits while Redis is down: {burst}"
        time.sleep(2)  # the worker and scheduler have met the outage (each retries every second)
        assert worker.poll() is None, "the RQ worker exited while Redis was down"
        assert scheduler.poll() is None, "the scheduler exited while Redis was down"
        with app.app_context():
            assert [r.grant_date for r in grants.recent_runs()] == [today - timedelta(days=2)]

        # --- Redis returns, empty -------------------------------------------------------
        redis.start()
        conn = RedisClient.from_url(redis.url)
        wait_until(lambda: schedule.JOB_ID in _scheduler(conn), "the daily-grant entry to be registered", 60)
        with app.app_context():
            for day, what in ((today - timedelta(days=1), "yesterday's missed grant"), (today, "today's grant")):
                wait_until(lambda: (grants.get_run(day) or 0) and grants.get_run(day).status == "done",
                           f"{what} to be caught up", 90)
        wait_until(lambda: api.get("/readyz").status == 200, "readiness to recover", 60)

        # --- Redis stopped and restarted (empty again) under credit traffic ----------------
        traffic = KeyedTraffic(api, ids[:3], seed=2, ops=("add", "deduct"))
        load = traffic.start_background(threads=1, pause=0.5)  # under the 30/10 s limit
        redis.stop()
        time.sleep(3)
        redis.start()
        wait_until(lambda: schedule.JOB_ID in _scheduler(RedisClient.from_url(redis.url)),
                   "the entry to be registered again after the second restart", 60)
        traffic.stopped.set()
        load.join(60)
        statuses = traffic.statuses()
        assert set(statuses) <= {200, 409}, f"credit traffic across the Redis restart: {statuses}"
        books = traffic.check_books(url, "chaos-admin")
        time.sleep(2)  # a second catch-up was queued; let the worker take it

        with app.app_context():
            with db.engine.connect() as c:
                per_date = dict(c.execute(text("SELECT grant_date, count(*) FROM ledger_entries WHERE "
                                               "kind = 'daily_grant' GROUP BY grant_date")).all())
                doubled = c.execute(text("SELECT count(*) FROM (SELECT user_id, grant_date FROM ledger_entries "
                                         "WHERE grant_date IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1) d")).scalar()
            assert per_date == {today - timedelta(days=n): len(ids) for n in range(3)}, per_date
            assert doubled == 0, "invariant 3: a user was granted twice for one date"
            assert ledger.verify() == []
            db.engine.dispose()
        assert worker.poll() is None and scheduler.poll() is None
        print(f"\n[redis outage] burst while down {dict(burst)}; traffic across restart {dict(statuses)}; {books}")
    except AssertionError:
        print(procs.logs(), web_log_tail(web))
        raise
    finally:
        procs.stop_all()
        web.stop()
        redis.destroy()


def _scheduler(conn):
    from rq_scheduler import Scheduler
    return Scheduler(connection=conn)
