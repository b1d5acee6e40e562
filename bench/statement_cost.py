"""The database's side of the hot path, this tree against a git revision: each tree's own
statements (bench/http_bench.pgbench_scripts) on each tree's own schema (its migrations, so
its indexes), run by pgbench -M prepared on one durable PostgreSQL, interleaved.

    .venv/bin/python bench/statement_cost.py --against REV [--rounds 5] [--duration 8]

http_bench's floors answer "how far is the service from the database's ceiling"; this
answers "did a change to the statement or to the ledger's indexes make the database's work
dearer". Each round runs every phase once per tree, in alternating order, so a neighbour's
load burst hits both alike; the table shows each tree's median transactions per second and
the median of the rounds' ratios (this tree / REV)."""
import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.http_bench import load_users, pgbench  # noqa: E402
from bench.worktree import worktree  # noqa: E402
from tests.services import Postgres  # noqa: E402

PHASES = ("read", "add", "deduct", "hot", "mixed")


def tree_scripts(tree, workdir, users):
    """pgbench scripts of `tree`'s own statements, written by `tree`'s own http_bench."""
    code = ("import json, sys; sys.path.insert(0, '.'); from bench.http_bench import pgbench_scripts; "
            f"print(json.dumps(pgbench_scripts({workdir!r}, {users})))")
    env = dict(os.environ, JWT_SECRET_KEY="x" * 48, TESTING="true")
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def migrate(tree, url):
    env = dict(os.environ, DATABASE_URL=url, JWT_SECRET_KEY="x" * 48, FLASK_APP="wsgi", TESTING="true")
    subprocess.run([sys.executable, "-m", "flask", "db", "upgrade"], cwd=tree, env=env, capture_output=True,
                   check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="a git revision")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--phases", default=",".join(PHASES))
    args = parser.parse_args()
    phases = args.phases.split(",")
    workdir = tempfile.mkdtemp(prefix="credits-statement-cost-")
    trees_checked_out = contextlib.ExitStack()
    pg = Postgres(durable=True)  # fsync and synchronous_commit on, as production
    try:
        other = trees_checked_out.enter_context(worktree(args.against))
        pg.start()
        trees = {"this tree": ROOT, args.against: other}
        scripts = {}
        for i, (name, tree) in enumerate(trees.items()):
            db = f"tree{i}"
            migrate(tree, pg.createdb(db))
            load_users(pg, db, args.users)
            os.makedirs(os.path.join(workdir, db))
            scripts[name] = (db, tree_scripts(tree, os.path.join(workdir, db), args.users))
        with open(os.path.join(pg.dir, "data", "postmaster.pid")) as f:
            roots = {"postgres": int(f.readline())}
        options = types.SimpleNamespace(concurrency=args.concurrency, wrk_threads=2, duration=args.duration)
        tps = {(phase, name): [] for phase in phases for name in trees}
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]
            for phase in phases:
                for name in order:
                    db, paths = scripts[name]
                    tps[(phase, name)].append(pgbench(pg, db, phase, paths, options, roots, workdir)["rps"])
            print(f"round {r + 1}/{args.rounds} done", flush=True)
        print(f"\npgbench -M prepared, {args.concurrency} clients, {args.duration} s a run, {args.rounds} rounds, "
              f"{args.users:,} users, durable PostgreSQL; transactions per second (median)")
        print(f"{'phase':<8}{'this tree':>12}{args.against[:12]:>14}{'ratio':>9}   rounds' ratios")
        for phase in phases:
            mine, theirs = tps[(phase, "this tree")], tps[(phase, args.against)]
            ratios = [a / b for a, b in zip(mine, theirs)]
            print(f"{phase:<8}{statistics.median(mine):>12.0f}{statistics.median(theirs):>14.0f}"
                  f"{statistics.median(ratios):>9.1%}   " + " ".join(f"{x:.0%}" for x in ratios))
    finally:
        pg.destroy()
        trees_checked_out.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
