"""HTTP benchmark (not a test: it prints figures and never asserts speed).

    .venv/bin/python bench/http_bench.py [--users 10000] [--duration 12] [--rounds 3] [--concurrency 32]
    (make bench)

Starts its own stack: a DURABLE throwaway PostgreSQL (fsync and synchronous_commit on, the
defaults), a redis-server, and two gunicorns with the checked-in gunicorn.conf.py:
  - the service (wsgi:app) with auth, validation, ledger, request log, metrics and the rate
    limiter all ON; the limit is raised to 1,000,000/second per subject so it is counted in
    Redis on every request (the production cost) but never refuses the offered load
    (--rate-limit off disables it, to show what it costs);
  - the bare-WSGI floor (bench/bare_wsgi.py) on a copy of the same database.
Loads N users with INSERT ... SELECT generate_series (each with a seed ledger entry), then for
each phase (balance read, add, deduct over random users, deduct on ONE hot user, mixed 80%
reads, hold: hold 2 credits of a random user then capture 1) runs, back to back at the same
concurrency:
  1. pgbench -M prepared with a custom script of exactly the hot-path statement (the floor
     database's own ceiling),
  2. wrk against the bare-WSGI floor,
  3. wrk against the service,
and repeats that round (--rounds, default 3): the table shows each target's median run, every
round's req/s, and the service's ratios as the median of the rounds' ratios, so a neighbour's
load burst on a shared machine costs one round rather than skewing one target.
CPU of the app, PostgreSQL and the load generator is sampled from /proc per phase. After each
run against the service the database is cross-checked against the successful responses
(ledger rows by kind, sum of balances, the hot user's balance), and at the end
`flask credits verify` must find no drift and no balance may be negative.

The hold phase counts PAIRS: a hold (201) and then the capture of part of it (200) is one
unit, two requests of different cost whose sum is what a caller pays, and a pgbench pair is
one run of its script. Its floors (pgbench, bench/bare_wsgi.py) run, in two transactions, the
service's own statements that the pair needs: lock the row, insert the hold, add it to `held`;
find the hold's user, lock the row, read the hold, update the balance, insert the capture
entry, close the hold. The service also records the user's overdue holds (whenever the user
holds something, so on every capture) and reads the hold again for each answer. Its
cross-check: a hold row per 201, a captured hold and a capture entry of 1 per 200 capture,
the balances down by as much, nothing refused, `held` equal to what the open holds keep;
the holds wrk left open when it stopped (at most one per connection) are then released
through the service, after which nothing may be held.
With `--against REV` a third gunicorn serves REV's tree (a git worktree, on its own database
migrated by its own code and loaded alike) and each round runs this tree and REV back to back,
in alternating order: the report gives this tree's req/s over REV's as the median of the
rounds' ratios with their range, and each tree's app CPU per request. Use it to compare two
revisions end to end (`--no-floors --phases read,add,deduct,mixed --rounds 5`); choose phases
REV serves.
Writes bench/out/http.md and bench/out/http.json and prints the table."""
import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import psycopg2  # noqa: E402

from bench.worktree import worktree  # noqa: E402
from tests.services import Postgres, Redis, free_port  # noqa: E402

LUA = os.path.join(ROOT, "bench", "credits.lua")
SECRET = "bench-only-jwt-secret-of-sufficient-length-0123456789abcdef"
SEED_BALANCE = 1_000           # every random user: enough that deducts of 1 rarely refuse
HOT_BALANCE = 1_000_000_000    # user 1, the hot user: never runs out within a phase
HOLD, CAPTURE = 2, 1           # the hold phase: hold 2 credits, capture 1 (the other is released)
PHASES = ("read", "add", "deduct", "hot", "mixed", "hold")
CLK = os.sysconf("SC_CLK_TCK")


# --- stack --------------------------------------------------------------------------------

def flask_env(url, redis_url, extra=None, rate_limit=True):
    # WEB_REUSE_PORT: a listening socket per gunicorn worker, for the floor and the service
    # alike, so that wrk's 32 connections are spread over the workers (gunicorn.conf.py).
    # The rate limits are the production defaults: the service token's own limit is far above
    # what one node serves, so the limiter costs its Redis round trip and refuses nothing.
    env = dict(os.environ, DATABASE_URL=url, REDIS_URL=redis_url, JWT_SECRET_KEY=SECRET, TZ="UTC",
               RATELIMIT_ENABLED="true" if rate_limit else "false", WEB_REUSE_PORT="true", PYTHONPATH=ROOT)
    for name in ("PROMETHEUS_MULTIPROC_DIR", "RATELIMIT_DEFAULT", "RATELIMIT_SERVICE", "RATELIMIT_ADMIN",
                 "RATELIMIT_USER", "RATELIMIT_ANONYMOUS"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def flask(env, *args, tree=ROOT):
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=tree, env=env,
                          capture_output=True, text=True)


def load_users(pg, dbname, n):
    """N users, each with a balance and the seed ledger entry that explains it."""
    pg.psql(dbname, f"""
        INSERT INTO users (email, name) SELECT 'u' || i || '@example.com', 'U' || i FROM generate_series(1, {n}) i;
        INSERT INTO credits (user_id, credits, last_updated)
            SELECT user_id, CASE WHEN user_id = 1 THEN {HOT_BALANCE} ELSE {SEED_BALANCE} END, now() FROM users;
        INSERT INTO ledger_entries (user_id, kind, amount, balance_after, reason, actor, created_at)
            SELECT user_id, 'add', credits, credits, 'bench seed', 'bench-seed', now() FROM credits;
        VACUUM ANALYZE;""")


class Gunicorn:
    def __init__(self, name, app, env, log_path, probe, cwd=ROOT):
        self.name, self.port, self.cwd = name, free_port(), cwd
        self.env = dict(env, HOST="127.0.0.1", PORT=str(self.port))
        self.app, self.log_path, self.probe = app, log_path, probe
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, token):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", self.app],
                                     cwd=self.cwd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} gunicorn exited:\n{open(self.log_path).read()[-3000:]}")
            try:
                req = urllib.request.Request(self.url + self.probe, headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(req, timeout=1):
                    return self
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"{self.name} did not answer {self.probe}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()


# --- CPU accounting -------------------------------------------------------------------------

def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after the comm: state ppid ... utime(11) stime(12) cutime(13) cstime(14) (0-based from state)
    return int(fields[1]), [int(x) for x in fields[11:15]]


def tree_cpu(root):
    """CPU seconds used so far by `root` and every live descendant, plus what its reaped
    children used (the root's cutime/cstime), so processes that came and went count too."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stats[int(entry)] = _stat(entry)
            except (OSError, IndexError):
                pass
    children = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            utime, stime, cutime, cstime = stats[pid][1]
            total += utime + stime + (cutime + cstime if pid == root else 0)
        todo.extend(children.get(pid, []))
    return total / CLK


def run_measured(cmd, roots, env=None):
    """Run a load generator; return (stdout, wall s, {name: CPU s of that process tree})."""
    before = {name: tree_cpu(pid) for name, pid in roots.items()}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    after = {name: tree_cpu(pid) for name, pid in roots.items()}
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{err}\n{out}")
    return out, wall, {name: after[name] - before[name] for name in roots}


def children_cpu():
    r = os.times()
    return r.children_user + r.children_system


# --- load generators ------------------------------------------------------------------------

def wrk(target_url, phase, args, token, roots, workdir):
    out_json = os.path.join(workdir, f"wrk-{phase}.json")
    cmd = ["wrk", "-t", str(args.wrk_threads), "-c", str(args.concurrency), "-d", f"{args.duration}s",
           "--timeout", "10s", "--latency", "-s", LUA, target_url, "--", phase, str(args.users), str(HOLD),
           str(CAPTURE)]
    gen_before = children_cpu()
    _, wall, cpu = run_measured(cmd, roots, env=dict(os.environ, BENCH_TOKEN=token, BENCH_OUT=out_json))
    cpu["generator"] = children_cpu() - gen_before
    with open(out_json) as f:
        result = json.load(f)
    seconds = result["duration_us"] / 1e6
    # The hold phase's unit is a completed pair (a hold, then its capture answered 200): two
    # requests of different cost, so counting requests would double the figure.
    done = result["kinds"].get("capture", 0) if phase == "hold" else result["requests"]
    return {
        "rps": done / seconds,
        "requests": result["requests"],
        "requests_per_s": result["requests"] / seconds,
        "p50_ms": result["latency_us"]["p50"] / 1000, "p90_ms": result["latency_us"]["p90"] / 1000,
        "p99_ms": result["latency_us"]["p99"] / 1000, "max_ms": result["latency_us"]["max"] / 1000,
        "statuses": {k: v for k, v in sorted(result["statuses"].items())},
        "socket_errors": {k: v for k, v in result["errors"].items() if k != "status" and v},
        "kinds": result["kinds"],
        "cpu_pct": {name: round(100 * s / wall, 1) for name, s in cpu.items()},
        "seconds": round(seconds, 2),
    }


PGBENCH_SCRIPTS = ("read", "add", "deduct", "hot", "hold")


def pgbench_sql(stmt, values, gset=None):
    """`stmt` as one pgbench command: each bind parameter named in `values` replaced by its
    literal (or by a pgbench variable, ":name"), the others left as pgbench variables, which
    -M prepared binds as parameters; `gset`: keep the row's columns as variables `gset`name."""
    sql = re.sub(r"(?<![:\w]):(\w+)", lambda m: values.get(m.group(1), m.group(0)), str(stmt))
    return " ".join(sql.split()) + (f" \\gset {gset}" if gset else ";")


def hold_script():
    """A hold and its capture as the bare-WSGI floor runs them (bench/bare_wsgi.py says which
    of the service's hold statements): two transactions, one pgbench transaction."""
    from bench.bare_wsgi import HOLD_TTL_SECONDS
    from credits_app.ledger.holds import _stmts
    s, actor = _stmts("postgresql"), "'pgbench'"
    return "\n".join([
        "BEGIN;",
        pgbench_sql(s["lock"], {}),
        pgbench_sql(s["insert"], {"amount": str(HOLD), "reason": "NULL", "actor": actor, "key": "NULL",
                                  "ttl": str(HOLD_TTL_SECONDS), "entry_id": "NULL"}, gset="h_"),
        pgbench_sql(s["held"], {"amount": str(HOLD)}),
        "COMMIT;",
        "BEGIN;",
        pgbench_sql(s["owner"], {"hid": ":h_id"}, gset="o_"),
        pgbench_sql(s["lock"], {"uid": ":o_user_id"}),
        pgbench_sql(s["hold"], {"hid": ":h_id"}),
        pgbench_sql(s["capture"], {"uid": ":o_user_id", "amount": str(CAPTURE), "held": str(HOLD)}, gset="c_"),
        pgbench_sql(s["entry"], {"uid": ":o_user_id", "delta": str(-CAPTURE), "balance": ":c_credits",
                                 "reason": "NULL", "actor": actor, "key": "NULL", "hid": ":h_id",
                                 "at": ":c_last_updated"}, gset="e_"),
        pgbench_sql(s["close"], {"hid": ":h_id", "status": "'captured'", "captured": str(CAPTURE), "actor": actor,
                                 "entry_id": ":e_id", "close_reason": "NULL"}),
        "COMMIT;"])


def pgbench_scripts(workdir, users):
    """The service's own statements, verbatim, with pgbench variables: the user id is a
    bound parameter (-M prepared); the other values are the literals psycopg2 would send."""
    from credits_app.ledger.postgres import statement
    from credits_app.ledger.reads import BALANCE

    def change(kind, delta):
        return pgbench_sql(statement(kind, False), {
            "delta": str(delta), "now": "now()", "max_balance": str(10**15), "kind": f"'{kind}'", "reason": "NULL",
            "actor": "'pgbench'", "key": "NULL", "low_default": "0"})

    random_uid = f"\\set uid random(2, {users})\n"
    scripts = {"read": random_uid + pgbench_sql(BALANCE, {}), "add": random_uid + change("add", 1),
               "deduct": random_uid + change("deduct", -1), "hot": "\\set uid 1\n" + change("deduct", -1),
               "hold": random_uid + hold_script()}
    paths = {}
    for name, body in scripts.items():
        paths[name] = os.path.join(workdir, f"pgbench-{name}.sql")
        with open(paths[name], "w") as f:
            f.write(body + "\n")
    return paths


def pgbench(pg, dbname, phase, scripts, args, roots, workdir):
    if phase == "mixed":
        files = ["-f", f"{scripts['read']}@8", "-f", f"{scripts['add']}@1", "-f", f"{scripts['deduct']}@1"]
    else:
        files = ["-f", scripts[phase]]
    logdir = tempfile.mkdtemp(dir=workdir, prefix=f"pgbench-{phase}-")
    cmd = [os.path.join(pg.bindir, "pgbench"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-n",
           "-M", "prepared", "-c", str(args.concurrency), "-j", str(args.wrk_threads), "-T", str(args.duration),
           "-l", "--log-prefix", os.path.join(logdir, "tx"), *files, dbname]
    gen_before = children_cpu()
    out, wall, cpu = run_measured(cmd, roots)
    cpu["generator"] = children_cpu() - gen_before
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out).group(1))
    latencies = []
    for name in os.listdir(logdir):
        with open(os.path.join(logdir, name)) as f:
            latencies.extend(int(line.split()[2]) for line in f)
    shutil.rmtree(logdir)
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] / 1000 if latencies else 0.0
    failed = re.search(r"number of failed transactions: (\d+)", out)
    return {"rps": tps, "requests": len(latencies), "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
            "max_ms": latencies[-1] / 1000 if latencies else 0.0,
            "statuses": {"failed": int(failed.group(1)) if failed else 0},
            "cpu_pct": {name: round(100 * s / wall, 1) for name, s in cpu.items()}, "seconds": args.duration}


# --- cross-checks ---------------------------------------------------------------------------

def snapshot(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT COALESCE(SUM(credits), 0), COALESCE(SUM(held), 0), "
                    "(SELECT credits FROM credits WHERE user_id = 1) FROM credits")
        total, held, hot = cur.fetchone()
        cur.execute("SELECT count(*) FILTER (WHERE kind = 'add' AND actor <> 'bench-seed'), "
                    "count(*) FILTER (WHERE kind = 'deduct'), count(*) FILTER (WHERE kind = 'capture'), "
                    "COALESCE(SUM(amount) FILTER (WHERE kind = 'capture'), 0) FROM ledger_entries")
        adds, deducts, captures, captured_entries = cur.fetchone()
        cur.execute("SELECT count(*), count(*) FILTER (WHERE status = 'captured'), COALESCE(SUM(captured), 0), "
                    "count(*) FILTER (WHERE status = 'open'), COALESCE(SUM(amount) FILTER (WHERE status = 'open'), 0) "
                    "FROM holds")
        holds, captured_holds, captured, open_holds, open_amount = cur.fetchone()
    return {"total": int(total), "held": int(held), "hot": int(hot), "add": adds, "deduct": deducts,
            "capture": captures, "capture_amounts": int(captured_entries), "holds": holds,
            "captured_holds": captured_holds, "captured": int(captured), "open_holds": open_holds,
            "open_amount": int(open_amount)}


def settle(log_path):
    """Wait until the server has answered everything wrk left in flight (wrk stops counting
    at its deadline; the server still finishes and commits those requests)."""
    size, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 0.5:
        time.sleep(0.1)
        current = os.path.getsize(log_path)
        if current != size:
            size, stable_since = current, time.monotonic()
    return size


_ROUTE_KINDS = {"add": "add", "deduct": "deduct", "holds": "hold", "capture": "capture", "release": "release"}


def served(log_path, offset):
    """What the service's own JSON request log says it answered since `offset`:
    {"add 200": n, "deduct 409": n, "hold 201": n, ...} (every request, including those wrk gave
    up on)."""
    counts = {}
    with open(log_path) as f:
        f.seek(offset)
        for line in f:
            if '"msg": "request"' not in line:
                continue
            entry = json.loads(line)
            route = (entry.get("route") or "").rsplit("/", 1)[-1]
            kind = _ROUTE_KINDS.get(route, "read") if entry.get("method") == "POST" else "read"
            key = f"{kind} {entry['status']}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def cross_check(phase, before, after, result, server_counts, concurrency):
    """Every successful change is in the ledger and the balances, and nothing else is: exact
    against the service's request log, and within wrk's in-flight window against wrk's count."""
    if phase == "hold":
        return cross_check_holds(before, after, result, server_counts, concurrency)
    adds, deducts = server_counts.get("add 200", 0), server_counts.get("deduct 200", 0)
    seen_adds, seen_deducts = result["kinds"].get("add", 0), result["kinds"].get("deduct", 0)
    checks = {
        "ledger add rows == 200 add responses": after["add"] - before["add"] == adds,
        "ledger deduct rows == 200 deduct responses": after["deduct"] - before["deduct"] == deducts,
        "sum of balances moved by adds - deducts": after["total"] - before["total"] == adds - deducts,
        "wrk's 200s within the in-flight window of the log's":
            0 <= adds - seen_adds <= concurrency and 0 <= deducts - seen_deducts <= concurrency,
        "no status other than 200/409": all(k.endswith((" 200", " 409")) for k in server_counts),
    }
    if phase == "hot":
        checks["hot user lost no update"] = before["hot"] - after["hot"] == deducts
    else:
        checks["hot user untouched"] = before["hot"] == after["hot"]
    return checks


def cross_check_holds(before, after, result, server_counts, concurrency):
    """The hold phase: every 201 is a hold row, every 200 capture a captured hold with its
    ledger entry of CAPTURE, the balances fell by exactly that, and the holds still open are
    the ones wrk stopped before capturing (at most one per connection), kept in `held`."""
    held, captures = server_counts.get("hold 201", 0), server_counts.get("capture 200", 0)
    taken = captures * CAPTURE
    return {
        "only 201 holds and 200 captures (no refusal, no error)": set(server_counts) <= {"hold 201", "capture 200"},
        "hold rows == 201 hold responses": after["holds"] - before["holds"] == held,
        "ledger capture rows == 200 capture responses, each -CAPTURE":
            after["capture"] - before["capture"] == captures
            and after["capture_amounts"] - before["capture_amounts"] == -taken,
        "captured holds == 200 capture responses, each CAPTURE":
            after["captured_holds"] - before["captured_holds"] == captures
            and after["captured"] - before["captured"] == taken,
        "sum of balances fell by the captures": before["total"] - after["total"] == taken,
        "no add or deduct entry": (after["add"], after["deduct"]) == (before["add"], before["deduct"]),
        "holds left open == holds - captures, at most one per connection":
            before["open_holds"] == 0 and after["open_holds"] == held - captures <= concurrency,
        "credits.held == what the open holds keep": after["held"] == after["open_amount"] == HOLD * (held - captures),
        "wrk's 201s and 200s within the in-flight window of the log's":
            0 <= held - result["kinds"].get("hold", 0) <= concurrency
            and 0 <= captures - result["kinds"].get("capture", 0) <= concurrency,
        "hot user untouched": before["hot"] == after["hot"],
    }


def release_open_holds(server, token, conn):
    """Release, through the service, the holds wrk left open when it stopped; how many it
    released, or None when one release did not answer 200."""
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM holds WHERE status = 'open' ORDER BY id")
        ids = [row[0] for row in cur.fetchall()]
    for hold_id in ids:
        req = urllib.request.Request(f"{server.url}/api/holds/{hold_id}/release", data=b"{}", method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as answer:
                if answer.status != 200:
                    return None
        except urllib.error.HTTPError:
            return None
    return len(ids)


# --- another revision ------------------------------------------------------------------------

def start_against(tree, rev, pg, redis, args):
    """REV's tree (checked out in `tree`) serving its own database ("against", migrated by
    REV's own code, loaded as this tree's) through its own gunicorn.conf.py, on Redis
    database 1; returns (its Gunicorn, its service token)."""
    url = pg.createdb("against")
    env = flask_env(url, redis.url.rsplit("/", 1)[0] + "/1", {"PYTHONPATH": tree},
                    rate_limit=args.rate_limit == "on")
    migrated = flask(env, "db", "upgrade", tree=tree)
    if migrated.returncode != 0:
        raise SystemExit(f"{rev}: flask db upgrade failed:\n{migrated.stderr}")
    load_users(pg, "against", args.users)
    token = flask(env, "auth", "issue-token", "--role", "service", "--sub", "bench", "--ttl", "1d",
                  tree=tree).stdout.strip()
    server = Gunicorn("against", "wsgi:app", env, os.path.join(args.out, "against.log"), "/api/credits/2",
                      cwd=tree).start(token)
    return server, token


def app_cpu_us(run):
    """The service's CPU (its gunicorn's processes) per request, in µs."""
    return run["cpu_pct"].get("app", 0) * 1e4 / run["requests_per_s"] if run.get("requests_per_s") else 0.0


def against_summary(rounds):
    """This tree over REV: the median of the rounds' req/s ratios, their range, and each
    tree's median app CPU per request."""
    ratios = sorted(r["app"]["rps"] / r["against"]["rps"] for r in rounds)
    return {"ratio": statistics.median(ratios), "min": ratios[0], "max": ratios[-1],
            "app_cpu_us": statistics.median(app_cpu_us(r["app"]) for r in rounds),
            "against_cpu_us": statistics.median(app_cpu_us(r["against"]) for r in rounds)}


# --- report ---------------------------------------------------------------------------------

def machine():
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {"nproc": os.cpu_count(), "cpu": model, "memory_gib": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version()}


def fmt_statuses(statuses):
    return " ".join(f"{k}:{v}" for k, v in statuses.items()) or "-"


def median_round(rounds):
    """Per target, the run with the median req/s, plus every run's req/s; and the service's
    ratios to the floors as the median of each round's ratio (a round's runs are adjacent)."""
    out = {}
    for target in rounds[0]:
        runs = sorted((r[target] for r in rounds), key=lambda r: r["rps"])
        out[target] = {**runs[(len(runs) - 1) // 2], "rps_runs": [round(r[target]["rps"]) for r in rounds]}
    for target, floor in (("app", "bare"), ("app", "pgbench"), ("bare", "pgbench")):
        if target in out and floor in out:
            out[target][f"vs_{floor}"] = statistics.median(r[target]["rps"] / r[floor]["rps"] for r in rounds)
    return out


def markdown(report):
    lines = [f"HTTP benchmark: {report['users']:,} users, concurrency {report['concurrency']}, "
             f"{report['duration']} s per run, median of {report['rounds']} rounds (req/s of each round in "
             f"'runs'), gunicorn {report['gunicorn']}; rate limiter {report['rate_limit']}; "
             f"machine: {report['machine']['nproc']} x {report['machine']['cpu']}, "
             f"{report['machine']['memory_gib']} GiB; load average before {report['loadavg_before']}", "",
             "| phase | target | req/s | runs | p50 ms | p90 ms | p99 ms | responses | CPU% app | CPU% PG | CPU% gen "
             "| vs bare | vs pgbench |",
             "|---|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for phase in report["phases"]:
        runs = report["results"][phase]
        for target in ("pgbench", "bare", "app", "against"):
            r = runs.get(target)
            if r is None:
                continue
            vs_bare = f"{r['vs_bare']:.0%}" if "vs_bare" in r else ""
            vs_pg = f"{r['vs_pgbench']:.0%}" if "vs_pgbench" in r else ""
            cpu = r["cpu_pct"]
            spread = " ".join(f"{x:,}" for x in r["rps_runs"])
            label = "hold (pairs/s)" if phase == "hold" else phase
            lines.append(f"| {label} | {target} | {r['rps']:,.0f} | {spread} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | "
                         f"{r['p99_ms']:.1f} | {fmt_statuses(r['statuses'])} | {cpu.get('app', 0):.0f} | "
                         f"{cpu.get('postgres', 0):.0f} | {cpu.get('generator', 0):.0f} | {vs_bare} | {vs_pg} |")
    if "hold" in report["phases"]:
        runs = report["results"]["hold"]
        per_request = ", ".join(f"{target} {runs[target]['requests_per_s']:,.0f}" for target in ("bare", "app")
                                if target in runs)
        lines += ["", "hold: the req/s column counts completed pairs, a hold and then the capture of part of it "
                  f"(HTTP requests/s: {per_request}); pgbench's pair is one run of its script (two transactions). "
                  "wrk's latencies are per request (a hold or a capture), pgbench's per pair. The bare-WSGI floor "
                  "and pgbench run only the statements the pair needs (bench/bare_wsgi.py)."]
    if report.get("against"):
        lines += ["", f"This tree against {report['against']} ('against'), each round both back to back in "
                  "alternating order: req/s ratio (median of the rounds, their range) and app CPU per request "
                  "(median, µs):", ""]
        for phase in report["phases"]:
            s = report["vs_against"][phase]
            lines.append(f"- {phase}: ×{s['ratio']:.3f} ({s['min']:.3f}..{s['max']:.3f}); CPU "
                         f"{s['app_cpu_us']:,.0f} vs {s['against_cpu_us']:,.0f} µs "
                         f"({s['app_cpu_us'] / s['against_cpu_us'] - 1:+.1%})")
    lines.append("")
    failed = [f"{phase}: {name}" for phase, checks in report["checks"].items() for name, ok in checks.items() if not ok]
    lines.append("Cross-checks: " + ("all passed (" + ", ".join(report["checks_summary"]) + ")" if not failed
                                     else "FAILED: " + "; ".join(failed)))
    return "\n".join(lines) + "\n"


# --- main -----------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=int(os.environ.get("BENCH_DURATION", 12)),
                        help="seconds per run (each phase runs pgbench, bare and app)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)),
                        help="rounds per phase (pgbench, bare, service each); the median is reported")
    parser.add_argument("--no-floors", action="store_true", help="only the service (quick before/after)")
    parser.add_argument("--rate-limit", choices=("on", "off"), default="on",
                        help="on (default): limiter counting in Redis at 1,000,000/s per subject; off: disabled")
    parser.add_argument("--against", metavar="REV",
                        help="also serve REV's tree (a git worktree) and run it beside this one in every round")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    args = parser.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    os.makedirs(args.out, exist_ok=True)
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install -y wrk")
    workdir = tempfile.mkdtemp(prefix="credits-bench-")
    pg = Postgres(durable=True)  # fsync and synchronous_commit on: figures worth reporting
    redis = Redis()
    servers = []
    trees = contextlib.ExitStack()  # REV's worktree, with --against
    try:
        pg.start()
        redis.start()
        app_url = pg.createdb("credits")
        env = flask_env(app_url, redis.url, rate_limit=args.rate_limit == "on")
        migrated = flask(env, "db", "upgrade")
        if migrated.returncode != 0:
            raise SystemExit(migrated.stderr)
        t = time.perf_counter()
        load_users(pg, "credits", args.users)
        load_s = time.perf_counter() - t
        pg.psql("postgres", "CREATE DATABASE floor TEMPLATE credits")
        token = flask(env, "auth", "issue-token", "--role", "service", "--sub", "bench", "--ttl", "1d").stdout.strip()
        app = Gunicorn("app", "wsgi:app", env, os.path.join(args.out, "app.log"), "/api/credits/2").start(token)
        servers.append(app)
        bare = None
        if not args.no_floors:
            bare = Gunicorn("bare", "bench.bare_wsgi:app", flask_env(pg.url("floor"), redis.url),
                            os.path.join(args.out, "bare.log"), "/api/credits/2").start(token)
            servers.append(bare)
        against = None
        tokens = {"app": token, "bare": token}
        if args.against:
            tree = trees.enter_context(worktree(args.against))
            against, tokens["against"] = start_against(tree, args.against, pg, redis, args)
            servers.append(against)
        with open(os.path.join(pg.dir, "data", "postmaster.pid")) as f:
            pg_pid = int(f.readline())
        scripts = pgbench_scripts(workdir, args.users)
        conns = {"credits": psycopg2.connect(app_url), "floor": psycopg2.connect(pg.url("floor"))}
        for c in conns.values():
            c.autocommit = True
        # Reading the config runs it: given a metrics directory, it makes none of its own
        # (one left in /tmp per run otherwise; the workdir goes at the end).
        gunicorn_settings = subprocess.run(
            [sys.executable, "-c", "import runpy; c = runpy.run_path('gunicorn.conf.py'); "
             "print(f\"{c['worker_class']}, {c['workers']} workers x {c['threads']} threads, reuse_port={c['reuse_port']}\")"],
            cwd=ROOT, env={**env, "PROMETHEUS_MULTIPROC_DIR": workdir}, capture_output=True, text=True).stdout.strip()
        report = {"users": args.users, "concurrency": args.concurrency, "duration": args.duration,
                  "rounds": args.rounds, "gunicorn": gunicorn_settings, "machine": machine(),
                  "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                  "rate_limit": ("on, 1000000/second per subject (Redis storage): counted, never refuses"
                                 if args.rate_limit == "on" else "off (RATELIMIT_ENABLED=false)"),
                  "postgres": "durable: fsync=on, synchronous_commit=on (defaults)", "load_users_s": round(load_s, 2),
                  "phases": phases, "results": {}, "checks": {}, "loadavg": {}, "against": args.against,
                  "vs_against": {}}
        print(f"stack up: {args.users:,} users loaded in {load_s:.1f} s; gunicorn {gunicorn_settings}; "
              f"load average {report['loadavg_before']}", flush=True)
        # Warm both servers (imports, pools, first plans) outside the measurements.
        for server in servers:
            warm = argparse.Namespace(**{**vars(args), "duration": 2})
            for phase in ("mixed", "hold") if "hold" in phases else ("mixed",):
                wrk(server.url, phase, warm, tokens[server.name], {}, workdir)
        if "hold" in phases:
            release_open_holds(app, token, conns["credits"])
        for phase in phases:
            # Rounds of floor, floor, service back to back: a neighbour's burst on this shared
            # machine then hits one round, not one target, and the median round is reported.
            rounds, checks = [], {}
            for round_no in range(args.rounds):
                runs = {}
                def run_against():
                    runs["against"] = wrk(against.url, phase, args, tokens["against"],
                                          {"app": against.proc.pid, "postgres": pg_pid}, workdir)
                if against and round_no % 2 == 1:  # REV first in odd rounds, after this tree in even ones
                    run_against()
                if not args.no_floors:
                    runs["pgbench"] = pgbench(pg, "floor", phase, scripts, args, {"postgres": pg_pid}, workdir)
                    runs["bare"] = wrk(bare.url, phase, args, token, {"app": bare.proc.pid, "postgres": pg_pid},
                                       workdir)
                offset = settle(app.log_path)
                before = snapshot(conns["credits"])
                runs["app"] = wrk(app.url, phase, args, token, {"app": app.proc.pid, "postgres": pg_pid}, workdir)
                settle(app.log_path)
                runs["app"]["served"] = served(app.log_path, offset)
                run_checks = cross_check(phase, before, snapshot(conns["credits"]), runs["app"],
                                         runs["app"]["served"], args.concurrency)
                if phase == "hold":
                    runs["app"]["released_after"] = release_open_holds(app, token, conns["credits"])
                    settle(app.log_path)
                    end = snapshot(conns["credits"])
                    run_checks["the holds left open released (200), then nothing held"] = (
                        runs["app"]["released_after"] is not None and end["open_holds"] == 0 and end["held"] == 0)
                if against and round_no % 2 == 0:
                    run_against()
                for name, ok in run_checks.items():
                    checks[name] = checks.get(name, True) and ok
                for target, r in runs.items():
                    unit = "pairs/s" if phase == "hold" else "req/s"
                    print(f"{phase:>6} {target:>7}: {r['rps']:8,.0f} {unit}  p50 {r['p50_ms']:6.1f}  "
                          f"p90 {r['p90_ms']:6.1f}  p99 {r['p99_ms']:6.1f} ms  {fmt_statuses(r['statuses'])}  "
                          f"cpu {r['cpu_pct']}", flush=True)
                rounds.append(runs)
            report["results"][phase] = median_round(rounds)
            if against:
                report["vs_against"][phase] = against_summary(rounds)
            report["checks"][phase] = checks
            report["loadavg"][phase] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        verify = flask(env, "credits", "verify")
        with conns["credits"].cursor() as cur:
            cur.execute("SELECT count(*) FROM credits WHERE credits < 0")
            negatives = cur.fetchone()[0]
        report["checks"]["end"] = {"flask credits verify: no drift": verify.returncode == 0,
                                   "no negative balance": negatives == 0}
        report["checks_summary"] = sorted({name for checks in report["checks"].values() for name in checks})
        report["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        for c in conns.values():
            c.close()
        table = markdown(report)
        print("\n" + table)
        with open(os.path.join(args.out, "http.md"), "w") as f:
            f.write(table)
        with open(os.path.join(args.out, "http.json"), "w") as f:
            json.dump(report, f, indent=2)
        print(f"written: {os.path.relpath(args.out, ROOT)}/http.md, http.json")
    finally:
        for server in servers:
            server.stop()
        trees.close()
        redis.destroy()
        pg.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
