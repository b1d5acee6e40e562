"""CPU per request of the hot path, in process (no HTTP server, no load generator), so
before/after comparisons are not drowned by the noise of a shared 2-core machine.

    .venv/bin/python bench/profile_hot_path.py [--requests 3000] [--profile read|add|deduct]
    .venv/bin/python bench/profile_hot_path.py --against REV   # this tree vs a git revision
    .venv/bin/python bench/profile_hot_path.py --against A --against B   # several, interleaved

Starts a durable throwaway PostgreSQL and Redis, loads 10,000 users, builds the app exactly
as wsgi.py does (production settings, rate limiter on in Redis, request log and metrics on)
and calls the WSGI app directly from one thread with a prepared environ, as gunicorn would:
GET balance, POST add, POST deduct. Prints CPU microseconds per request (process time:
Python and driver, not the database's). With --against, each measured batch runs once per
tree in alternation, each tree in its own process on the same database, so a neighbour's
load burst hits all alike. `--profile KIND` adds a cProfile of that kind."""
import argparse
import contextlib
import io
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

KINDS = ("read", "add", "deduct")


def _environ(kind, token):
    uid = random.randint(2, 10_000)
    body = b'{"amount": 1}' if kind != "read" else b""
    return {
        "REQUEST_METHOD": "GET" if kind == "read" else "POST",
        "PATH_INFO": f"/api/credits/{uid}" + ("" if kind == "read" else f"/{kind}"),
        "QUERY_STRING": "", "SERVER_NAME": "localhost", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "localhost:8000", "HTTP_AUTHORIZATION": f"Bearer {token}",
        "CONTENT_TYPE": "application/json" if body else "", "CONTENT_LENGTH": str(len(body)) if body else "",
        "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.version": (1, 0),
    }


def serve(root, env_json):
    """Child process: build the app from `root` and answer 'KIND N' lines with CPU us/request."""
    sys.path.insert(0, root)
    os.chdir(root)
    os.environ.update(json.loads(env_json))
    from credits_app import create_app
    app = create_app()
    logging.getLogger("credits").handlers[0].stream = open(os.devnull, "w")  # formatting still runs
    with app.app_context():
        try:
            from credits_app.auth import tokens
        except ImportError:  # a revision from before the auth package
            from credits_app import tokens
        token, _ = tokens.issue("service", "bench")
    status = []

    def start_response(s, headers, exc_info=None):
        status.append(s)

    def one(kind):
        status.clear()
        body = b"".join(app(_environ(kind, token), start_response))
        assert status[0].startswith("200"), (status, body)

    for line in sys.stdin:
        kind, n = line.split()
        if kind == "profile":
            _profile(one, n)
            print("done", flush=True)
            continue
        cpu = time.process_time()
        for _ in range(int(n)):
            one(kind)
        print((time.process_time() - cpu) / int(n) * 1e6, flush=True)


def _profile(one, kind):
    import cProfile
    import pstats
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(3000):
        one(kind)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stderr).strip_dirs()
    stats.sort_stats("cumulative").print_stats(60)
    stats.sort_stats("tottime").print_stats(30)
    if os.environ.get("PROFILE_CALLERS"):
        stats.print_callers(os.environ["PROFILE_CALLERS"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--processes", type=int, default=1, help="processes per tree (default 1)")
    parser.add_argument("--against", metavar="REV", action="append", default=[],
                        help="also measure this git revision, interleaved (repeatable)")
    parser.add_argument("--profile", choices=KINDS)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the app, e.g. PROMETHEUS_MULTIPROC_DIR=/tmp/m")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from http_bench import flask, flask_env, load_users
    from worktree import worktree
    from tests.services import Postgres, Redis
    pg, redis = Postgres(durable=True).start(), Redis().start()
    trees, children, checked_out = {}, {}, contextlib.ExitStack()
    try:
        for rev in args.against:
            trees[rev if rev not in trees else f"{rev}#{len(trees) + 1}"] = checked_out.enter_context(worktree(rev))
        trees["this tree"] = ROOT
        url = pg.createdb("credits")
        env = flask_env(url, redis.url, dict(e.split("=", 1) for e in args.env))
        flask(env, "db", "upgrade").check_returncode()
        load_users(pg, "credits", 10_000)
        child_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
        for name, root in trees.items():
            # Several processes per tree: two processes of the same code can differ by several
            # percent (memory layout, hash seeds), a difference no interleaving removes.
            children[name] = [subprocess.Popen(
                [sys.executable, __file__, "--serve", root, json.dumps(child_env)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True, cwd=root) for _ in range(args.processes)]

        def ask(child, line):
            child.stdin.write(line + "\n")
            child.stdin.flush()
            return child.stdout.readline().strip()

        batch = max(50, args.requests // args.rounds)
        print(f"CPU microseconds per request: median of {args.rounds} interleaved rounds of a batch of {batch} "
              f"in each of {args.processes} processes per tree; in brackets, the difference from the first tree")
        results = {name: {} for name in trees}
        for kind in KINDS:
            samples = {name: [] for name in trees}
            for name in trees:
                for child in children[name]:
                    ask(child, f"{kind} 200")  # warm: pools, plans, caches
            for _ in range(args.rounds):
                for name in trees:
                    for child in children[name]:
                        samples[name].append(float(ask(child, f"{kind} {batch}")))
            for name, values in samples.items():
                results[name][kind] = statistics.median(values)
        first = next(iter(results.values()))
        print(f"  {'tree':<12}" + "".join(f"{kind:>18}" for kind in KINDS))
        for name, medians in results.items():
            print(f"  {name[:12]:<12}" + "".join(f"{medians[k]:>9.0f} ({(medians[k] / first[k] - 1) * 100:+5.1f}%)"
                                                 for k in KINDS), flush=True)
        if args.profile:
            ask(children["this tree"][0], f"profile {args.profile}")
    finally:
        for child in (c for group in children.values() for c in group):
            child.stdin.close()
            child.wait(30)
        checked_out.close()
        redis.destroy()
        pg.destroy()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3])
    else:
        main()
