"""Benchmark (not a test): reads of the ledger by time (as-of, history, a window of entries,
the export) on ONE user with a long ledger, among other users' entries, on a DURABLE
throwaway PostgreSQL.

    .venv/bin/python bench/ledger_time_bench.py [--entries 1000000] [--others 3000000] [--users 10000]
                                                [--runs 7] [--export-sizes 100000,1000000] [--out DIR]

1. Loads with SQL (generate_series, one INSERT ... SELECT in time order, so entry ids and
   heap order follow time as they do in production): user 1 with --entries entries, each a
   microsecond-exact step later than the one before, from --user-from (a fraction of the year
   ending today) on, and --others entries spread over --users other users across the whole
   year; every user created a day before it; every balance_after is the running sum; each
   credits row is the final balance, worked out independently of the ledger. VACUUM ANALYZE.
2. Times ledger.history (100 and 1000 points), ledger.as_of (an instant in the middle) and
   ledger.entries (a page of 50 in a window ending in the middle) in process, inside an app
   context: the median of --runs calls after one warm-up call.
3. Prints EXPLAIN (ANALYZE, BUFFERS) of the statements behind them, and the plans the
   export's server-side cursors actually ran (auto_explain, reported to the client as a
   NOTICE): a cursor is planned for a fast start (cursor_tuple_fraction), which a plain
   EXPLAIN of the same SELECT would not show.
4. Exports through GET /api/ledger/export under gunicorn (gunicorn.conf.py, Redis, the
   production rate limits) with a client that counts lines and discards them, and through
   `flask credits export --output /dev/null`, at each --export-sizes (one user, and all
   users in a window from the start of the ledger) and the whole ledger; samples the
   gunicorn workers' RSS with psutil while each export runs, and takes the CLI's peak RSS
   from wait4(). Then checks an NDJSON export of the user (row count, time order, sum of
   amounts = final balance) and a CSV export of the whole ledger (every user's sum of
   amounts = its credits row).
Writes bench/out/ledger_time.md and ledger_time.json (or under --out) as well as printing."""
import argparse
import csv
import http.client
import importlib
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timedelta, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import psutil  # noqa: E402
import psycopg2  # noqa: E402

from bench.grant_bench import env_for, migrate, vacuum  # noqa: E402
from tests.services import Postgres, Redis, Web  # noqa: E402

UID = 1
SPAN_US = 365 * 86400 * 10**6  # the ledger: the year before today (UTC), so a default history spans it
T0 = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(microseconds=SPAN_US)
EXPLAIN_TIMEOUT_MS = 120_000
SECRET = "bench-only-jwt-secret-of-sufficient-length-0123456789abcdef"

# Per user, entry j (1-based) is +10, +10, -15, +10, +10, -15, ...: never below zero, and the
# balance after entry j has a closed form, so the credits rows need not be read from the ledger.
KIND = "CASE WHEN {j} % 3 = 0 THEN 'deduct' ELSE 'add' END"
AMOUNT = "CASE WHEN {j} % 3 = 0 THEN -15 ELSE 10 END"
BALANCE = "(5 * ({j} / 3) + 10 * ({j} % 3))"


def balance_after(j):
    return 5 * (j // 3) + 10 * (j % 3)


def user_start(user_from):
    return T0 + timedelta(microseconds=int(SPAN_US * user_from))


def user_time(i, layout):
    """created_at of user 1's entry i, exactly as the load writes it."""
    start, step_us = layout
    return start + timedelta(microseconds=i * step_us)


def rfc3339(t):
    return t.isoformat().replace("+00:00", "Z")


# --- load ---------------------------------------------------------------------------------

def load(pg, dbname, entries, others, users, user_from):
    """User 1 and `users` others, all created a day before the ledger starts; the ledger in one
    INSERT ... SELECT ordered by time. User 1's entries fill the year from `user_from` (a
    fraction of it) on, so reads before its first entry (a default history) are measured too.
    Returns user 1's layout: (time of entry 0, microseconds between entries)."""
    start = user_start(user_from)
    step = (SPAN_US - int(SPAN_US * user_from)) // entries
    other_step = SPAN_US // max(others, 1)
    cols = "user_id, kind, amount, balance_after, reason, actor, created_at"
    mine = (f"SELECT {UID} AS user_id, {KIND.format(j='i')} AS kind, {AMOUNT.format(j='i')} AS amount, "
            f"{BALANCE.format(j='i')} AS balance_after, 'bench' AS reason, 'bench' AS actor, "
            f"timestamptz '{start.isoformat()}' + (i::bigint * {step}) * interval '1 microsecond' AS created_at "
            f"FROM generate_series(1, {entries}) i")
    # Row r goes to user 2 + r % users as that user's entry r / users + 1, half a step off
    # user 1's grid.
    theirs = (f"SELECT 2 + r % {users}, {KIND.format(j=f'(r / {users} + 1)')}, {AMOUNT.format(j=f'(r / {users} + 1)')}, "
              f"{BALANCE.format(j=f'(r / {users} + 1)')}, 'bench', 'bench', "
              f"timestamptz '{T0.isoformat()}' + (r::bigint * {other_step} + {other_step // 2}) * interval '1 microsecond' "
              f"FROM generate_series(0, {others - 1}) r")
    # n entries of user u: others / users, plus one for the first others % users of them.
    count = f"({others} / {users} + CASE WHEN u - 2 < {others} % {users} THEN 1 ELSE 0 END)"
    pg.psql(dbname, f"""
        SET work_mem = '256MB';
        INSERT INTO users (email, name, created_at)
            SELECT 'u' || i || '@example.com', 'U' || i, timestamptz '{T0.isoformat()}' - interval '1 day'
            FROM generate_series(1, {users + 1}) i;
        INSERT INTO ledger_entries ({cols})
            SELECT {cols} FROM ({mine} UNION ALL {theirs}) e ORDER BY created_at, user_id;
        INSERT INTO credits (user_id, credits, last_updated)
            SELECT {UID}, {BALANCE.format(j=str(entries))}, timestamptz '{start.isoformat()}' + ({entries}::bigint * {step}) * interval '1 microsecond'
            UNION ALL
            SELECT u, {BALANCE.format(j=count)}, now() FROM generate_series(2, {users + 1}) u;""")
    return start, step


# --- in process -----------------------------------------------------------------------------

def timed(fn, runs):
    """(median ms, [ms of each run], None), or (ms, [ms], error) for a call that raised (a
    statement timeout, say): reported as such, not retried."""
    times = []
    for n in range(runs + 1):  # the first call warms up: first plans, the pool's connections
        t = time.perf_counter()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            ms = (time.perf_counter() - t) * 1000
            return ms, [ms], f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        if n:
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), times, None


def explain(conn, stmt, params):
    """EXPLAIN (ANALYZE, BUFFERS), given up to EXPLAIN_TIMEOUT; past it, the plain plan."""
    from sqlalchemy import text
    sql = getattr(stmt, "element", stmt).text
    conn.execute(text(f"SET statement_timeout = {EXPLAIN_TIMEOUT_MS}"))
    try:
        rows = conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql), params).scalars().all()
    except Exception as e:  # noqa: BLE001 - the plan without ANALYZE instead
        conn.rollback()
        rows = [f"(EXPLAIN ANALYZE gave up after {EXPLAIN_TIMEOUT_MS} ms: {type(e).__name__}; the plan:)",
                *conn.execute(text("EXPLAIN " + sql), params).scalars().all()]
    conn.rollback()
    return "\n".join(rows)


def cursor_plans(db, ledger, exports):
    """The plans the export's server-side cursors ran: auto_explain on fresh connections of the
    app's own engine, its report sent to the client as a NOTICE when the cursor closes."""
    from sqlalchemy import event
    conns = []

    def on_connect(dbapi_conn, _record):
        with dbapi_conn.cursor() as cur:
            cur.execute("LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; "
                        "SET auto_explain.log_analyze = on; SET auto_explain.log_buffers = on; "
                        "SET auto_explain.log_level = notice")
        dbapi_conn.commit()
        conns.append(dbapi_conn)

    engine = db.engine
    event.listen(engine, "connect", on_connect)
    engine.dispose()
    try:
        plans = {}
        for name, kwargs in exports:
            for conn in conns:
                del conn.notices[:]
            rows = 0
            for chunk in ledger.export("csv", **kwargs):
                rows += chunk.count("\n")
            notices = [n for conn in conns for n in conn.notices if "ledger_entries" in n and "plan:" in n]
            plans[name] = (rows - 1, notices[-1] if notices else "(no plan reported: %r)" % [n for c in conns for n in c.notices])
    finally:
        event.remove(engine, "connect", on_connect)
        engine.dispose()
    return plans


def in_process(url, entries, layout, runs):
    os.environ.update(env_for(url))
    from credits_app import create_app, ledger
    from credits_app.extensions import db
    # The modules, not the functions of the same name that credits_app.ledger exports.
    history_module = importlib.import_module("credits_app.ledger.history")
    reads = importlib.import_module("credits_app.ledger.reads")

    mid = entries // 2
    mid_at = user_time(mid, layout) + timedelta(microseconds=layout[1] // 2)  # between entries mid and mid + 1
    early = T0 + (layout[0] - T0) / 2  # before the user's first entry: balance 0
    window = (user_time(mid - 1000, layout), user_time(mid, layout))  # (since, until]: 1000 entries
    app = create_app()
    results, checks, plans = {}, {}, {}
    with app.app_context():
        for points in (100, 1000):
            results[f"history points={points} (since the user's creation)"] = timed(
                lambda: ledger.history(UID, points=points), runs)
            results[f"history points={points} (since its first entry)"] = timed(
                lambda: ledger.history(UID, since=layout[0], points=points), runs)
        results["as_of (middle instant)"] = timed(lambda: ledger.as_of(UID, mid_at), runs)
        results["as_of (before the first entry)"] = timed(lambda: ledger.as_of(UID, early), runs)
        results["entries limit=50 (window ending in the middle)"] = timed(
            lambda: ledger.entries(UID, limit=50, since=window[0], until=window[1]), runs)
        results["entries limit=50 (until before the first entry: none)"] = timed(
            lambda: ledger.entries(UID, limit=50, until=early), runs)

        since, until, series = ledger.history(UID, since=layout[0], points=1000)
        checks["history: 1000 points, the last one the current balance"] = (
            len(series) == 1000 and series[-1][1] == balance_after(entries))
        since, until = T0 - timedelta(days=1), datetime.now(timezone.utc)  # a default history: creation to now
        credits, last = ledger.as_of(UID, mid_at)
        checks["as_of: the balance after the entry before the instant"] = (
            credits == balance_after(mid) and last == user_time(mid, layout))
        checks["as_of before the first entry: 0"] = ledger.as_of(UID, early) == (0, None)
        page = ledger.entries(UID, limit=50, since=window[0], until=window[1])
        checks["entries: the window's 50 newest, newest first"] = (
            [e.balance_after for e in page] == [balance_after(mid - k) for k in range(50)])
        checks["flask credits verify: every balance is the sum of its entries"] = ledger.verify() == []

        ends = history_module._bucket_ends(since, until, 100)
        with db.engine.connect() as conn:
            plans["as-of (GET /api/credits/<id>?as_of=)"] = explain(conn, history_module._AS_OF,
                                                                   {"uid": UID, "at": mid_at})
            plans["as-of before the first entry"] = explain(conn, history_module._AS_OF, {"uid": UID, "at": early})
            plans["history, 100 points since the user's creation (GET /api/credits/<id>/history)"] = explain(
                conn, history_module._PG_POINTS, {"uid": UID, "ats": ends})
            plans["entries page (GET /api/credits/<id>/transactions?since&until)"] = explain(
                conn, reads._ENTRIES, {"uid": UID, "since": window[0], "at": window[1],  # a first page: until
                                       "id": 2**63 - 1, "limit": 51})
        # The all-users window: a tenth of the year from its middle (a month of everyone's entries).
        all_window = (T0 + timedelta(microseconds=SPAN_US // 2), T0 + timedelta(microseconds=SPAN_US // 2 + SPAN_US // 10))
        for name, (rows, plan) in cursor_plans(db, ledger, [
                ("export, one user, whole ledger (server-side cursor)", {"user_id": UID}),
                ("export, all users, a tenth of the year (server-side cursor)",
                 {"since": all_window[0], "until": all_window[1]})]).items():
            plans[f"{name}: {rows:,} rows"] = plan
    return results, checks, plans


# --- export: HTTP and CLI -------------------------------------------------------------------

class RssSampler:
    """Peak RSS of a set of processes, sampled every 20 ms until stopped."""

    def __init__(self, pids):
        self.procs = [psutil.Process(pid) for pid in pids]
        self.before = {p.pid: p.memory_info().rss for p in self.procs}
        self.peak = dict(self.before)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.02):
            for p in self.procs:
                try:
                    self.peak[p.pid] = max(self.peak[p.pid], p.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def http_export(web, token, query, check=None):
    """(rows, bytes, seconds, worker RSS MiB before, peak MiB during): the body read in 256 KiB
    reads and counted, or given to `check` (a callable taking the text stream) instead."""
    workers = [c.pid for c in psutil.Process(web.proc.pid).children()]
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=600)
    with RssSampler(workers) as rss:
        t = time.perf_counter()
        conn.request("GET", "/api/ledger/export?" + urllib.parse.urlencode(query),
                     headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise SystemExit(f"export answered {resp.status}: {resp.read()[:500]!r}")
        if check is not None:
            result = check(io.TextIOWrapper(resp, encoding="utf-8", newline=""))
            seconds = time.perf_counter() - t
            conn.close()
            return result, seconds
        size = lines = 0
        while chunk := resp.read(256 * 1024):
            size += len(chunk)
            lines += chunk.count(b"\n")
        seconds = time.perf_counter() - t
    conn.close()
    mib = 1024 * 1024
    rows = lines - (1 if query.get("format", "csv") == "csv" else 0)
    return rows, size, seconds, max(rss.before.values()) / mib, max(rss.peak.values()) / mib


def cli_export(env, args):
    """(seconds, peak RSS MiB from wait4) of `flask credits export ... --output /dev/null`."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "credits", "export", *args,
                             "--output", "/dev/null"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    _, status, rusage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"flask credits export failed:\n{proc.stderr.read()}")
    proc.stderr.close()
    return seconds, rusage.ru_maxrss / 1024


def check_user_ndjson(stream):
    rows, total, last, ordered = 0, 0, None, True
    for line in stream:
        e = json.loads(line)
        key = (e["created_at"], e["id"])
        ordered = ordered and (last is None or key > last) and e["user_id"] == UID
        last, rows, total = key, rows + 1, total + e["amount"]
    return rows, total, ordered


def check_all_csv(stream):
    reader = csv.reader(stream)
    header = next(reader)
    uid, amount = header.index("user_id"), header.index("amount")
    sums, rows = {}, 0
    for row in reader:
        sums[int(row[uid])] = sums.get(int(row[uid]), 0) + int(row[amount])
        rows += 1
    return rows, sums


def exports(pg, dbname, url, entries, total, layout, sizes, out):
    """Every export through HTTP and the CLI; returns (rows of the table, checks)."""
    conn = psycopg2.connect(pg.url(dbname))
    with conn.cursor() as cur:
        # The instant of the n-th entry of the whole ledger in time order: a window from the
        # start of the ledger that holds exactly n entries of all users.
        def nth(n):
            cur.execute("SELECT created_at FROM ledger_entries ORDER BY created_at, id OFFSET %s LIMIT 1", (n - 1,))
            return cur.fetchone()[0].astimezone(timezone.utc)
        cases = [(f"one user, {n:,}", {"user_id": UID, "until": user_time(n, layout)}, n)
                 for n in sorted({min(s, entries) for s in sizes})]
        cases += [(f"all users, {n:,}", {"until": nth(n)}, n) for n in sorted({min(s, total) for s in sizes}) if n < total]
        cases.append((f"all users, whole ledger ({total:,})", {}, total))
        cur.execute("SELECT user_id, credits FROM credits")
        credits = dict(cur.fetchall())
    conn.close()

    redis = Redis().start()
    env = {k: v for k, v in env_for(url).items() if not k.startswith("RATELIMIT_")}
    env.pop("TESTING")  # production settings: a real key, the default rate limits counting in Redis
    env.update(REDIS_URL=redis.url, JWT_SECRET_KEY=SECRET)
    web = None
    table, checks = [], {}
    try:
        issued = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "auth", "issue-token", "--role",
                                 "admin", "--sub", "bench", "--ttl", "1d"], cwd=ROOT, env=env, capture_output=True,
                                text=True)
        if issued.returncode != 0:
            raise SystemExit(issued.stderr)
        token = issued.stdout.strip()
        web = Web(env, log_path=os.path.join(out, "ledger_time_web.log")).start()
        http_export(web, token, {"user_id": UID, "until": rfc3339(user_time(1, layout))})  # warm both paths
        _, cli_base = cli_export(env, ["--until", rfc3339(T0)])  # an empty window: the process alone
        print(f"CLI baseline (an empty export): peak RSS {cli_base:.1f} MiB", flush=True)
        for name, kwargs, expected in cases:
            query = {k: rfc3339(v) if isinstance(v, datetime) else v for k, v in kwargs.items()}
            rows, size, http_s, before, peak = http_export(web, token, query)
            cli_args = [a for k, v in query.items() for a in (f"--{k.replace('_', '-')}", str(v))]
            cli_s, cli_rss = cli_export(env, cli_args)
            checks[f"export {name}: {expected:,} rows"] = rows == expected
            table.append({"export": name, "rows": rows, "mb": round(size / 1e6, 1), "http_s": round(http_s, 2),
                          "http_rows_per_s": round(rows / http_s), "worker_rss_before_mib": round(before, 1),
                          "worker_rss_peak_mib": round(peak, 1), "cli_s": round(cli_s, 2),
                          "cli_peak_rss_mib": round(cli_rss, 1)})
            print(f"export {name:<34} {rows:>10,} rows {size / 1e6:8.1f} MB  HTTP {http_s:6.2f} s "
                  f"({rows / http_s:8,.0f} rows/s), worker RSS {before:6.1f} -> peak {peak:6.1f} MiB  "
                  f"CLI {cli_s:6.2f} s, peak RSS {cli_rss:6.1f} MiB", flush=True)
        (rows, total_amount, ordered), s = http_export(web, token, {"user_id": UID, "format": "ndjson"},
                                                       check=check_user_ndjson)
        checks["export one user (NDJSON): every entry, in time order"] = rows == entries and ordered
        checks["export one user: sum of amounts = the final balance"] = total_amount == credits[UID]
        (rows, sums), s2 = http_export(web, token, {}, check=check_all_csv)
        checks["export whole ledger (CSV): every entry"] = rows == total
        checks["export whole ledger: every user's sum of amounts = its balance"] = (
            {u: c for u, c in credits.items() if c or u in sums} == sums)
        print(f"checked: the user's NDJSON export parsed in {s:.1f} s, the whole ledger's CSV in {s2:.1f} s", flush=True)
    finally:
        if web is not None:
            web.stop()
        redis.destroy()
    return table, checks, cli_base


# --- report ---------------------------------------------------------------------------------

def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} x {cpu}, {mem:.1f} GiB"


def report(args, load_s, size_mb, results, checks, plans, table, cli_base, out):
    lines = [f"Reads by time: user {UID} with {args.entries:,} entries among {args.entries + args.others:,} "
             f"({args.users:,} other users); ledger_entries {size_mb:,.0f} MB with its indexes, loaded in "
             f"{load_s:.0f} s; durable PostgreSQL; machine: {machine()}; load average "
             f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", "",
             f"| call (in process) | median ms of {args.runs} | runs ms |", "|---|---:|---|"]
    for name, (median, times, error) in results.items():
        lines.append(f"| {name} | {median:.2f} | {' '.join(f'{t:.1f}' for t in times)} |" if error is None else
                     f"| {name} | FAILED after {median:,.0f} ms | {error} |")
    lines += ["", f"CLI baseline (an empty export): peak RSS {cli_base:.1f} MiB", "",
              "| export (CSV) | rows | MB | HTTP s | rows/s | worker RSS before -> peak MiB | CLI s | CLI peak RSS MiB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        lines.append(f"| {r['export']} | {r['rows']:,} | {r['mb']} | {r['http_s']:.2f} | {r['http_rows_per_s']:,} | "
                     f"{r['worker_rss_before_mib']:.1f} -> {r['worker_rss_peak_mib']:.1f} | {r['cli_s']:.2f} | "
                     f"{r['cli_peak_rss_mib']:.1f} |")
    lines += ["", "Checks:"] + [f"- {'ok  ' if ok else 'FAIL'} {name}" for name, ok in checks.items()]
    text = "\n".join(lines) + "\n"
    plan_text = "".join(f"\n### {name}\n\n```\n{plan}\n```\n" for name, plan in plans.items())
    print("\n" + text + plan_text)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "ledger_time.md"), "w") as f:
        f.write(text + plan_text)
    with open(os.path.join(out, "ledger_time.json"), "w") as f:
        json.dump({"entries": args.entries, "others": args.others, "users": args.users, "machine": machine(),
                   "load_s": round(load_s, 1), "ledger_mb": round(size_mb), "calls_ms": {
                       k: {"median": round(m, 3), "runs": [round(t, 3) for t in ts], "error": err}
                       for k, (m, ts, err) in results.items()},
                   "exports": table, "cli_baseline_rss_mib": round(cli_base, 1), "checks": checks, "plans": plans},
                  f, indent=2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="user 1's entries")
    parser.add_argument("--others", type=int, default=3_000_000, help="other users' entries, in all")
    parser.add_argument("--users", type=int, default=10_000, help="other users")
    parser.add_argument("--user-from", type=float, default=0.5,
                        help="when in the year user 1's first entry falls (0-1); the other users' span all of it")
    parser.add_argument("--runs", type=int, default=7, help="timed calls per read (the median is reported)")
    parser.add_argument("--export-sizes", default="100000,1000000",
                        help="export windows, in entries (capped at what there is)")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    parser.add_argument("--keep", action="store_true", help="leave the PostgreSQL running, to look at plans")
    args = parser.parse_args()
    if args.entries < 3000 or args.others < 1 or args.users < 1:
        raise SystemExit("--entries must be at least 3000 (the middle window holds 1000), --others and --users >= 1")
    sizes = [int(s) for s in args.export_sizes.split(",") if s]
    os.makedirs(args.out, exist_ok=True)
    server = Postgres(durable=True).start()  # fsync on: figures worth reporting
    try:
        url = server.createdb("ledger")
        migrate(url)
        t = time.perf_counter()
        layout = load(server, "ledger", args.entries, args.others, args.users, args.user_from)
        conn = psycopg2.connect(server.url("ledger"))
        vacuum(conn)
        load_s = time.perf_counter() - t
        with conn.cursor() as cur:
            cur.execute("SELECT pg_total_relation_size('ledger_entries') / 1e6")
            size_mb = float(cur.fetchone()[0])
        conn.close()
        print(f"loaded {args.entries:,} entries of user {UID} and {args.others:,} of {args.users:,} others in "
              f"{load_s:.1f} s (ledger_entries with indexes: {size_mb:,.0f} MB)", flush=True)
        results, checks, plans = in_process(url, args.entries, layout, args.runs)
        for name, (median, times, error) in results.items():
            print(f"{name:<56} " + (f"median {median:8.2f} ms  ({' '.join(f'{t:.1f}' for t in times)})" if error is None
                                    else f"FAILED after {median:,.0f} ms: {error}"), flush=True)
        table, export_checks, cli_base = exports(server, "ledger", url, args.entries, args.entries + args.others,
                                                 layout, sizes, args.out)
        checks.update(export_checks)
        report(args, load_s, size_mb, results, checks, plans, table, cli_base, args.out)
        if not all(checks.values()):
            raise SystemExit("a check failed: " + ", ".join(name for name, ok in checks.items() if not ok))
    finally:
        if args.keep:
            print(f"PostgreSQL kept: {server.url('ledger')} (data in {server.dir}; stop it with "
                  f"pg_ctl -D {server.dir}/data stop, as the user that runs it)")
        else:
            server.destroy()


if __name__ == "__main__":
    main()
