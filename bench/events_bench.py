"""What events and webhooks cost credit traffic (not a test: it prints figures, asserts no speed).

    .venv/bin/python bench/events_bench.py [--against REV] [--users 10000] [--duration 10] [--rounds 3]

Writes bench/out/events.json (or under --out) as well as printing.

One durable throwaway PostgreSQL and one redis-server; the service's gunicorn with the
production defaults (rate limiter on, as bench/http_bench.py runs it; alerts off unless
--low-balance-threshold); its webhooks worker and scheduler running. A DEAD endpoint, a
TCP listener on the loopback that accepts connections and never answers, and a HEALTHY one,
an HTTP server in this process that answers 204 at once, are subscribed to every event type
(WEBHOOKS_ALLOW_PRIVATE_URLS=true). Each round runs every phase (add, deduct, mixed: 80%
reads, read) once per mode, back to back, in alternating order:
  - before: REV's service (with --against; a worktree, its own database, no events);
  - quiet: this tree, both endpoints disabled: every change writes its events (alerts, the
    delivery lookup) but no delivery;
  - healthy: the healthy endpoint enabled: every change also writes a delivery, which the
    webhooks worker sends (on the same machine, competing for its cores);
  - dead: the dead endpoint enabled instead: every change writes a delivery, and the
    dispatcher keeps trying the endpoint that never answers (each try waits out the timeout).
dead against healthy is what a dead receiver itself costs credit traffic; healthy against
quiet is what writing (and sending) a delivery per change costs.
The table shows each mode's median req/s and the median of the rounds' ratios. Checks: in
each healthy and dead run, one credits.changed delivery per change made; every delivery to
the healthy endpoint delivered in the end, none to the dead one; the dispatcher tried the
dead endpoint; `flask credits verify` finds no drift."""
import argparse
import contextlib
import http.server
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import psycopg2  # noqa: E402

from bench.http_bench import Gunicorn, flask, flask_env, load_users, wrk  # noqa: E402
from bench.worktree import worktree  # noqa: E402
from tests.services import Postgres, Redis  # noqa: E402

PHASES = ("add", "deduct", "mixed", "read")


class DeadEndpoint:
    """Accepts every connection and never answers: the slowest receiver there is."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/hooks"

    def _accept(self):
        while True:
            try:
                self.held.append(self.sock.accept()[0])  # kept open, never read, never answered
            except OSError:
                return


class HealthyEndpoint:
    """Answers every delivery 204 at once, counting them."""

    def __init__(self):
        endpoint = self
        self.received = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                endpoint.received += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"


def settled(conn):
    """counts() once the requests wrk left in flight have finished (two reads alike)."""
    last = None
    while True:
        now = counts(conn)
        if now == last:
            return now
        last = now
        time.sleep(0.5)


def counts(conn, dead_id=None):
    """(changes made, credits.changed deliveries written, deliveries delivered, tries; the
    last two to the dead endpoint only, given its id)."""
    with conn.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM ledger_entries WHERE kind IN ('add', 'deduct') "
                    "AND actor <> 'bench-seed'), (SELECT count(*) FROM webhook_deliveries WHERE entry_id IS NOT NULL), "
                    "(SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered' "
                    " AND (%(dead)s IS NULL OR endpoint_id = %(dead)s)), "
                    "(SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id "
                    " WHERE %(dead)s IS NULL OR d.endpoint_id = %(dead)s)", {"dead": dead_id})
        return cur.fetchone()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", help="a git revision before events, run as the 'before' mode")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--low-balance-threshold", type=int, default=0,
                        help="LOW_BALANCE_THRESHOLD for this tree (default 0, the default: alerts off)")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    args = parser.parse_args()
    args.wrk_threads = 2
    phases = args.phases.split(",")
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install -y wrk")
    workdir = tempfile.mkdtemp(prefix="credits-events-bench-")
    pg, redis, procs, servers, logs = Postgres(durable=True), Redis(), [], {}, []
    other = None  # REV's tree, with --against
    trees_checked_out = contextlib.ExitStack()
    try:
        pg.start()
        redis.start()
        dead, healthy = DeadEndpoint(), HealthyEndpoint()
        env = flask_env(pg.createdb("credits"), redis.url, {"LOW_BALANCE_THRESHOLD": str(args.low_balance_threshold),
                                                            "WEBHOOKS_ALLOW_PRIVATE_URLS": "true"})
        trees = {"quiet": (ROOT, env)}
        if args.against:
            other = trees_checked_out.enter_context(worktree(args.against))
            trees["before"] = (other, flask_env(pg.createdb("before"), redis.url, {"PYTHONPATH": other}))
        for tree, tree_env in trees.values():
            migrated = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=tree,
                                      env=tree_env, capture_output=True, text=True)
            if migrated.returncode:
                raise SystemExit(migrated.stderr)
        load_users(pg, "credits", args.users)
        if other:
            load_users(pg, "before", args.users)
        for receiver in (dead, healthy):
            created = flask(env, "webhooks", "create", receiver.url, *[f"--type={t}" for t in (
                "credits.changed", "balance.low", "balance.recovered", "balance.depleted", "hold.created")])
            if created.returncode:
                raise SystemExit(created.stderr)
        token = flask(env, "auth", "issue-token", "--role", "service", "--sub", "bench", "--ttl", "1d").stdout.strip()
        for name, (tree, tree_env) in trees.items():
            servers[name] = Gunicorn(name, "wsgi:app", tree_env, os.path.join(workdir, f"{name}.log"),
                                     "/api/credits/2", cwd=tree).start(token)
        servers["healthy"] = servers["dead"] = servers["quiet"]
        for command in (["-m", "worker", "--queue", "webhooks"], ["-m", "worker.schedule"]):
            log = open(os.path.join(workdir, f"{command[-1]}.log"), "w")
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env, stdout=log,
                                          stderr=subprocess.STDOUT))
        conn = psycopg2.connect(pg.url("credits"))
        conn.autocommit = True

        with conn.cursor() as cur:
            cur.execute("SELECT id FROM webhook_endpoints WHERE url = %s", (dead.url,))
            dead_id = cur.fetchone()[0]

        def enable(mode):
            with conn.cursor() as cur:
                cur.execute("UPDATE webhook_endpoints SET enabled = (url = %s)",
                            ({"dead": dead.url, "healthy": healthy.url}.get(mode, ""),))

        with open(os.path.join(pg.dir, "data", "postmaster.pid")) as f:
            roots = {"postgres": int(f.readline())}
        for server in set(servers.values()):  # warm: imports, pools, first plans
            wrk(server.url, "mixed", argparse.Namespace(**{**vars(args), "duration": 2}), token, {}, workdir)
        modes = list(trees) + ["healthy", "dead"]
        rps = {(phase, mode): [] for phase in phases for mode in modes}
        checks = {"one credits.changed delivery per change in every healthy and dead run": True}
        for r in range(args.rounds):
            for phase in phases:
                for mode in (modes if r % 2 == 0 else modes[::-1]):
                    enable(mode)
                    before = settled(conn)
                    server = servers[mode]
                    result = wrk(server.url, phase, args, token, {**roots, "app": server.proc.pid}, workdir)
                    rps[(phase, mode)].append(result["rps"])
                    if mode in ("healthy", "dead"):
                        after = settled(conn)
                        checks["one credits.changed delivery per change in every healthy and dead run"] &= (
                            after[0] - before[0] == after[1] - before[1])
                    print(f"{phase:>6} {mode:>6}: {result['rps']:8,.0f} req/s  p50 {result['p50_ms']:6.1f}  "
                          f"p99 {result['p99_ms']:6.1f} ms  {result['statuses']}", flush=True)
        # The dispatcher's tries end in the timeout; one change with the endpoint enabled, then
        # wait for a try to be recorded (the dispatcher parks a disabled endpoint's deliveries).
        enable("dead")
        flask(env, "credits", "add", "2", "1")
        deadline = time.monotonic() + 90
        while counts(conn, dead_id)[3] == 0 and time.monotonic() < deadline:
            time.sleep(1)
        final = counts(conn, dead_id)
        checks["nothing delivered to the dead endpoint"] = final[2] == 0
        checks["the dispatcher tried it"] = final[3] > 0
        # The healthy endpoint's backlog (parked while it was disabled) drains once enabled and
        # made due, as enabling it through the API does.
        enable("healthy")
        deadline = time.monotonic() + 300
        with conn.cursor() as cur:
            cur.execute("UPDATE webhook_deliveries SET next_attempt_at = now() WHERE status = 'pending' "
                        "AND endpoint_id = (SELECT id FROM webhook_endpoints WHERE url = %s)", (healthy.url,))
            while time.monotonic() < deadline:
                cur.execute("SELECT count(*) FROM webhook_deliveries d JOIN webhook_endpoints e "
                            "ON e.id = d.endpoint_id WHERE e.url = %s AND d.status <> 'delivered'", (healthy.url,))
                undelivered = cur.fetchone()[0]
                if undelivered == 0:
                    break
                time.sleep(1)
        checks["every delivery to the healthy endpoint delivered"] = undelivered == 0
        checks["flask credits verify: no drift"] = flask(env, "credits", "verify").returncode == 0
        conn.close()
        base = "before" if other else "quiet"
        print(f"\n{args.users:,} users, concurrency {args.concurrency}, {args.duration} s a run, {args.rounds} rounds, "
              f"durable PostgreSQL, rate limiter on, LOW_BALANCE_THRESHOLD {args.low_balance_threshold}; req/s "
              f"(median of rounds); ratios vs {base} (median of rounds)")
        print(f"{'phase':<8}" + "".join(f"{m:>10}" for m in modes) + "".join(
            f"{m + '/' + base:>16}" for m in modes if m != base))
        for phase in phases:
            line = f"{phase:<8}" + "".join(f"{statistics.median(rps[(phase, m)]):>10,.0f}" for m in modes)
            for m in modes:
                if m != base:
                    ratios = [a / b for a, b in zip(rps[(phase, m)], rps[(phase, base)])]
                    line += f"{statistics.median(ratios) - 1:>+16.1%}"
            print(line)
        print(f"deliveries written {final[1]:,}; to the dead endpoint: delivered {final[2]}, tries {final[3]}; "
              f"the healthy endpoint received {healthy.received:,}")
        for name, ok in checks.items():
            print(f"{'ok  ' if ok else 'FAIL'} {name}")
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "events.json"), "w") as f:
            json.dump({"modes": modes, "rps": {f"{phase} {mode}": runs for (phase, mode), runs in rps.items()},
                       "deliveries": final[1], "dead_delivered": final[2], "dead_attempts": final[3],
                       "healthy_received": healthy.received, "checks": checks}, f,
                      indent=2)
        if not all(checks.values()):
            for log in logs:
                log.flush()
                print(f"--- {log.name}\n" + open(log.name).read()[-3000:])
            raise SystemExit(1)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for server in {id(s): s for s in servers.values()}.values():
            server.stop()
        for log in logs:
            log.close()
        redis.destroy()
        pg.destroy()
        trees_checked_out.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
