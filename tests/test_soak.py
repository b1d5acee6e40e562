"""Load held: a bounded soak of mixed traffic against the production-shaped stack (gunicorn
with 2 workers, a real rq worker, redis-server, PostgreSQL), sampling the memory (RSS) of
every long-lived process and the service's PostgreSQL connections throughout.

Duration: SOAK_SECONDS (default 150). Traffic: keyed add/deduct/reset on a few hot users,
balance and ledger reads, user creation and lookups, Idempotency-Key replays, and a daily
grant for a recent date enqueued every 10 s (run by the worker).
Observed and asserted:
- no answer other than 2xx and the expected 409 (insufficient credits) / 429 (rate limit);
- no memory growth trend per process: the median RSS of the last third of the run is
  within a generous margin of the median of the first third after warm-up (a trend check,
  not a timing threshold);
- no connection leak: the count in pg_stat_activity never exceeds the configured pool
  ceiling, and late samples stay within the early maximum plus a small slack;
- no gunicorn worker restarted; the books equal the 200-answered requests once each, every
  balance >= 0 and equal to its ledger, every daily grant once per user (DESIGN.md 1-4)."""
import itertools
import os
import random
import statistics
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import text

from credits_app import grants, ledger
from credits_app.extensions import db
from tests.chaos_fixtures import Api, KeyedTraffic, gunicorn_workers, rss_mib, stack_env, tokens_for, wait_until
from tests.conftest import _fresh_url, make_app
from tests.redis_fixtures import QUEUE
from tests.services import Web

pytestmark = pytest.mark.slow

SOAK_SECONDS = int(os.environ.get("SOAK_SECONDS", 150))
WORKERS, POOL, OVERFLOW = 2, 5, 2


def test_soak_mixed_traffic_memory_and_connections_hold(pg_server, request, tmp_path, redis_url, rq_processes):
    url = _fresh_url("postgresql", request, tmp_path).replace("+psycopg2", "")
    dbname = url.rsplit("/", 1)[1]
    env = stack_env(url, REDIS_URL=redis_url, RQ_QUEUE=QUEUE, WEB_CONCURRENCY=WORKERS, WEB_THREADS=4,
                    DB_POOL_SIZE=POOL, DB_MAX_OVERFLOW=OVERFLOW, RATELIMIT_ENABLED="true",
                    RATELIMIT_DEFAULT="400/second", DAILY_GRANT_CHUNK_SIZE=1000)
    web = Web(env).start()
    rq_worker = rq_processes.worker(url, with_scheduler=False, DAILY_GRANT_CHUNK_SIZE=1000)
    admin, service = tokens_for(url, "admin", "service")
    api, svc = Api(web.url, admin), Api(web.url, service)
    try:
        users = [svc.post("/api/users", {"email": f"soak{i}@example.com", "name": "S"}).body["user_id"]
                 for i in range(40)]
        hot = users[:4]
        traffic = KeyedTraffic(api, hot, seed=11)
        for uid in hot:
            assert traffic.seed(uid, 1000).status == 200
        web_pids = sorted(gunicorn_workers(web))
        processes = {"gunicorn master": web.proc.pid, "rq worker": rq_worker.pid,
                     **{f"gunicorn worker {i}": pid for i, pid in enumerate(web_pids)}}

        stop = threading.Event()
        other = Counter()
        lock = threading.Lock()

        def mixed(seed):
            rng = random.Random(seed)
            n = 0
            while not stop.is_set():
                n += 1
                uid = rng.choice(users)
                pick = rng.random()
                if pick < 0.4:
                    r = svc.get(f"/api/credits/{uid}")
                elif pick < 0.6:
                    r = svc.get(f"/api/credits/{uid}/transactions?limit=20")
                elif pick < 0.7:
                    r = svc.post("/api/users", {"email": f"m{seed}-{n}@example.com", "name": "M"})
                elif pick < 0.8:
                    r = svc.get(f"/api/users?email=soak{rng.randrange(40)}@example.com")
                else:
                    key = rng.choice(list(traffic.requests)[-200:])
                    r = traffic.send(key)  # a replay: the original answer again, nothing changes
                with lock:
                    other[r.status] += 1

        def granter():
            # A grant every 10 s for today or a date in the catch-up window (7 days), each date
            # twice or more: the re-runs credit nobody (200 already_done once a run is done).
            for i in itertools.count():
                if stop.wait(10):
                    return
                day = grants.utc_today() - timedelta(days=(i // 2) % 8)
                r = api.post("/api/grants/daily/run", {"date": day.isoformat()})
                with lock:
                    other[r.status] += 1

        samples = []  # (t, {name: rss}, connections)

        def sample():
            t0 = time.monotonic()
            while not stop.is_set():
                rss = {name: rss_mib(pid) for name, pid in processes.items()}
                samples.append((time.monotonic() - t0, rss, pg_server_connections(pg_server, dbname)))
                stop.wait(2)

        threads = [threading.Thread(target=mixed, args=(i,), daemon=True) for i in range(3)]
        threads += [threading.Thread(target=sample, daemon=True), threading.Thread(target=granter, daemon=True)]
        load = traffic.start_background(threads=3, pause=0.005)
        for t in threads:
            t.start()
        time.sleep(SOAK_SECONDS)  # the soak itself: the duration is the test's size, not a threshold
        stop.set()
        traffic.stopped.set()
        load.join(120)
        for t in threads:
            t.join(120)
        wait_until(lambda: _queue_idle(redis_url), "the grant jobs to finish", 180)

        statuses = traffic.statuses() + other
        unexpected = {s: c for s, c in statuses.items() if s not in (200, 201, 202, 409, 429)}
        assert not unexpected, f"answers other than 2xx/409/429 during the soak: {unexpected} of {dict(statuses)}"
        assert sorted(gunicorn_workers(web)) == web_pids, "a gunicorn worker was restarted during the soak"

        # Memory: compare the first third (after a 20 % warm-up) with the last third.
        warm = [s for s in samples if s[0] >= SOAK_SECONDS * 0.2]
        third = max(1, len(warm) // 3)
        early, late = warm[:third], warm[-third:]
        report = {}
        for name in processes:
            e = statistics.median(s[1][name] for s in early if s[1][name] is not None)
            l_ = statistics.median(s[1][name] for s in late if s[1][name] is not None)
            report[name] = (round(e, 1), round(l_, 1))
            assert l_ <= e * 1.25 + 15, f"{name}: RSS grew from a median {e:.1f} MiB early to {l_:.1f} MiB late"

        # Connections: never past the pool ceiling, no upward drift.
        conns = [s[2] for s in samples]
        ceiling = WORKERS * (POOL + OVERFLOW)
        assert max(conns) <= ceiling, f"{max(conns)} connections open, above the pool ceiling {ceiling}"
        early_max = max(s[2] for s in early)
        assert max(s[2] for s in late) <= early_max + 2, f"connections drifted up: {conns}"

        # A keyed change refused by the rate limit (429) took no effect: the client retries it
        # with its key, as a real one would, before the books are checked.
        traffic.settle()
        books = traffic.check_books(url, "chaos-admin")
        app = make_app(url)
        with app.app_context():
            with db.engine.connect() as conn:
                doubled = conn.execute(text("SELECT count(*) FROM (SELECT 1 FROM ledger_entries WHERE grant_date "
                                            "IS NOT NULL GROUP BY user_id, grant_date HAVING count(*) > 1) d")).scalar()
            assert doubled == 0 and ledger.verify() == []
            db.engine.dispose()
        print(f"\n[soak {SOAK_SECONDS}s] answers {dict(statuses)}; requests {sum(statuses.values())}; "
              f"RSS early/late MiB {report}; connections min/max {min(conns)}/{max(conns)}; {books}")
    finally:
        web.stop()


def pg_server_connections(server, dbname):
    import psycopg2
    conn = psycopg2.connect(server.url("postgres"))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'credits'",
                        (dbname,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def _queue_idle(redis_url):
    from redis import Redis
    from rq import Queue
    from rq.registry import StartedJobRegistry
    conn = Redis.from_url(redis_url)
    return Queue(QUEUE, connection=conn).count == 0 and StartedJobRegistry(QUEUE, connection=conn).count == 0
