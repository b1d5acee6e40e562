"""Per-request CPU cost of the hot path, in process (no HTTP server, no load generator), so
before/after comparisons are not drowned by the noise of a shared 2-core machine.

    .venv/bin/python bench/profile_hot_path.py [--requests 3000] [--profile read|add|deduct]

Starts a durable throwaway PostgreSQL and Redis, loads 10,000 users, builds the app exactly
as wsgi.py does (production settings, rate limiter on in Redis, request log on) and drives
GET balance / POST add / POST deduct through Flask's test client from one thread. Prints CPU
microseconds per request (process time: Python + driver, not the database's) for the hot path
before each kept change and after it, interleaved (see _variants). `--profile KIND` adds a cProfile of that kind (cumulative and own time)."""
import argparse
import logging
import os
import random
import statistics
import sys
import time
from contextlib import contextmanager

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from http_bench import SECRET, flask, flask_env, load_users  # noqa: E402
from tests.services import Postgres, Redis  # noqa: E402


class _NoCache(dict):
    def get(self, key, default=None):
        return default

    def __setitem__(self, key, value):
        pass


def _variants(app):
    """The hot path as it was before each kept change, to measure that change in the same
    process: `before` = a plain SQLAlchemy connection for reads (BEGIN ... ROLLBACK) and
    isolation_level="AUTOCOMMIT" for changes (a SET at checkout and return), no verified-token
    cache; then each change added in turn."""
    from credits_app import ledger
    from credits_app.extensions import db
    current, cache = ledger._single_statement, app.extensions["credits.verified_tokens"]

    @contextmanager
    def old_read():
        with db.engine.connect() as conn:
            yield conn

    @contextmanager
    def old_change():
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn

    def setup(single_statement, token_cache):
        def apply(kind):
            ledger._single_statement = single_statement or (old_read if kind == "read" else old_change)
            app.extensions["credits.verified_tokens"] = token_cache
        return apply
    return {"before": setup(None, _NoCache()), "+autocommit": setup(current, _NoCache()),
            "+token-cache": setup(current, cache)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--profile", choices=("read", "add", "deduct"))
    args = parser.parse_args()
    pg, redis = Postgres(durable=True).start(), Redis().start()
    try:
        url = pg.createdb("credits")
        env = flask_env(url, redis.url)
        flask(env, "db", "upgrade").check_returncode()
        load_users(pg, "credits", 10_000)
        os.environ.update(env)
        from credits_app import create_app
        app = create_app()
        logging.getLogger("credits").handlers[0].stream = open(os.devnull, "w")  # log formatting still runs
        with app.app_context():
            from credits_app import tokens
            token, _ = tokens.issue("service", "bench")
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        variants = _variants(app)

        def one(kind):
            uid = random.randint(2, 10_000)
            if kind == "read":
                r = client.get(f"/api/credits/{uid}", headers=headers)
            else:
                r = client.post(f"/api/credits/{uid}/{kind}", headers=headers, json={"amount": 1})
            assert r.status_code == 200, (r.status_code, r.get_data())

        # Variants interleaved in small batches and compared by their median batch, so a
        # neighbour's load burst hits all of them alike.
        batch = max(50, args.requests // args.rounds)
        print(f"CPU microseconds per request (median of {args.rounds} interleaved batches of {batch}):")
        for kind in ("read", "add", "deduct"):
            samples = {name: [] for name in variants}
            for name, apply in variants.items():
                apply(kind)
                for _ in range(100):  # warm: pools, plans, caches
                    one(kind)
            for _ in range(args.rounds):
                for name, apply in variants.items():
                    apply(kind)
                    cpu = time.process_time()
                    for _ in range(batch):
                        one(kind)
                    samples[name].append((time.process_time() - cpu) / batch * 1e6)
            print(f"  {kind:>6}: " + "  ".join(f"{name} {statistics.median(v):5.0f}" for name, v in samples.items()),
                  flush=True)
            variants[list(variants)[-1]](kind)
        if args.profile:
            import cProfile
            import pstats
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.requests):
                one(args.profile)
            profiler.disable()
            stats = pstats.Stats(profiler).strip_dirs()
            stats.sort_stats("cumulative").print_stats(60)
            stats.sort_stats("tottime").print_stats(30)
    finally:
        redis.destroy()
        pg.destroy()


if __name__ == "__main__":
    main()
