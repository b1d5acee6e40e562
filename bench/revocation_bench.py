"""Benchmark (not a test): how long a process takes to bring its revoked-token set up to date
with N rows in `revoked_tokens`, on a DURABLE throwaway PostgreSQL: the first (full) load,
an incremental load after a few new revocations, the hourly full re-read, and for comparison
the former full reload (`SELECT jti` into a frozenset, every REVOCATION_CACHE_SECONDS).

    .venv/bin/python bench/revocation_bench.py [N] [--new K] [--repeat R]

Each figure is the median of R runs, measured in-process around the same code the web
process runs (tokens._RevokedSet)."""
import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from credits_app import create_app  # noqa: E402
from credits_app.auth import tokens  # noqa: E402
from credits_app.extensions import db  # noqa: E402
from tests.services import Postgres  # noqa: E402

SECRET = "bench-only-secret-key-of-sufficient-length-0123456789"


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=1_000_000, help="rows in revoked_tokens")
    parser.add_argument("--new", type=int, default=10, help="revocations between two incremental loads")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    server = Postgres(durable=True).start()
    try:
        url = server.createdb("bench_revocations")
        env = dict(os.environ, DATABASE_URL=url, TESTING="true", TZ="UTC", JWT_SECRET_KEY=SECRET)
        subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env,
                       check=True, capture_output=True)
        app = create_app({"DATABASE_URL": url, "TESTING": "true", "JWT_SECRET_KEY": SECRET})
        with app.app_context():
            start = time.perf_counter()  # through psql: the app's statement_timeout would cut a big insert
            server.psql("bench_revocations", "INSERT INTO revoked_tokens (jti, revoked_by) "
                        f"SELECT gen_random_uuid()::text, 'bench' FROM generate_series(1, {args.n})")
            inserted = time.perf_counter() - start
            server.psql("bench_revocations", "VACUUM ANALYZE revoked_tokens")

            def former_full():
                with db.engine.connect() as conn:
                    frozenset(conn.exec_driver_sql("SELECT jti FROM revoked_tokens").scalars())

            def first_load():
                tokens._RevokedSet()._load()

            loaded = tokens._RevokedSet()
            loaded._load()
            counter = iter(range(10**9))

            def incremental():
                for _ in range(args.new):
                    tokens.revoke(f"bench-new-{next(counter)}", actor="bench")
                start = time.perf_counter()
                loaded._load()
                return time.perf_counter() - start

            # Interleaved rounds, so that a busy moment on the machine spreads over every figure.
            cases = {
                "former full reload (SELECT jti -> frozenset)": lambda: timed(former_full),
                "first load (max(seq), then every jti)": lambda: timed(first_load),
                f"incremental load after {args.new} new revocations": incremental,
                "incremental load, nothing new": lambda: timed(loaded._load),
                "hourly full re-read, outside the lock (one request)": lambda: timed(loaded._read_all_again),
            }
            runs = {name: [] for name in cases}
            for _ in range(args.repeat):
                for name, case in cases.items():
                    runs[name].append(case())
            figures = {name: statistics.median(seconds) for name, seconds in runs.items()}
            assert len(loaded._jtis) == args.n + args.new * args.repeat, len(loaded._jtis)
            db.engine.dispose()
    finally:
        server.destroy()

    print(f"revoked_tokens: {args.n:,} rows (inserted in {inserted:.1f} s), median of {args.repeat} runs, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    for name, seconds in figures.items():
        print(f"  {name:<55} {seconds * 1000:9.1f} ms")


if __name__ == "__main__":
    main()
