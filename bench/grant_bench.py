"""Benchmark (not a test): the daily grant over 100,000 and 1,000,000 users on a DURABLE
throwaway PostgreSQL, against the floor of a bare `UPDATE credits SET credits = credits + 5`
plus a ledger `INSERT ... SELECT` over the same rows in the same run.

    .venv/bin/python bench/grant_bench.py [N ...] [--out DIR]     (make bench-grant)
    .venv/bin/python bench/grant_bench.py N --against REV [--rounds 4]

The grant runs in its own process (as a job would: the same code the worker runs, chunk
after chunk, DAILY_GRANT_CHUNK_SIZE users each); its peak RSS comes from wait4().

Then subscribers: runs without any (the endpoint disabled), with an enabled endpoint
subscribed to every event type, and with it and one user in ten in the `low` alert state
with a threshold the grant lifts them to (so the grant writes a balance.recovered event and
its delivery for each of them, 100,000 at 1M users), alternating, two of each on the next
dates; the table shows each mode's mean and its ratio to the runs without.
Writes bench/out/grant.md and bench/out/grant.json (or under --out) as well as printing."""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import psycopg2  # noqa: E402

from bench.worktree import worktree  # noqa: E402
from tests.services import Postgres  # noqa: E402

JOB = """
import sys, time
from credits_app import create_app, grants
app = create_app()
with app.app_context():
    t = time.perf_counter()
    run = grants.run_date(sys.argv[1])
    print(f"{time.perf_counter() - t:.3f} {run.users_credited} {run.chunks_total}")
"""
FLOOR = """
WITH upd AS (UPDATE credits SET credits = credits + 5, last_updated = now() RETURNING user_id, credits)
INSERT INTO ledger_entries (user_id, kind, amount, balance_after, reason, actor, grant_date, created_at)
SELECT user_id, 'daily_grant', 5, credits, 'floor', 'bench', %s, now() FROM upd"""


def env_for(url, tree=ROOT):
    return dict(os.environ, DATABASE_URL=url, TESTING="true", TZ="UTC", PYTHONPATH=tree,
                JWT_SECRET_KEY="bench-only-secret-key-of-sufficient-length-0123456789")


def migrate(url, tree=ROOT):
    subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=tree, env=env_for(url, tree),
                   check=True, capture_output=True)


def run_job(url, day, tree=ROOT):
    """The grant of `tree`'s code in a fresh process: (seconds inside the job, wall seconds,
    peak RSS MiB, credited, chunks)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", JOB, day], cwd=tree, env=env_for(url, tree),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()
    if status != 0:
        raise SystemExit(f"grant job failed:\n{err}")
    seconds, credited, chunks = out.split()
    return float(seconds), wall, rusage.ru_maxrss / 1024, int(credited), int(chunks)


def sql(conn, statement, *args):
    with conn.cursor() as cur:
        t = time.perf_counter()
        cur.execute(statement, args or None)
        conn.commit()
        return time.perf_counter() - t, cur.rowcount


def vacuum(conn):
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    conn.autocommit = False


def loaded_db(server, name, n, tree=ROOT):
    """A database migrated by `tree`'s migrations with n users at zero: (its URL, a connection)."""
    url = server.createdb(name)
    migrate(url, tree)
    conn = psycopg2.connect(server.url(name))
    sql(conn, "INSERT INTO users (email, name) SELECT 'u' || i || '@example.com', 'U' FROM generate_series(1, %s) i", n)
    sql(conn, "INSERT INTO credits (user_id, credits, last_updated) SELECT user_id, 0, now() FROM users")
    vacuum(conn)
    return url, conn


def bench(server, n):
    url, conn = loaded_db(server, f"bench_{n}", n)
    floor1, rows = sql(conn, FLOOR, "2026-01-01")
    assert rows == n
    vacuum(conn)
    job_s, wall_s, rss, credited, chunks = run_job(url, "2026-01-02")
    assert credited == n, credited
    vacuum(conn)
    floor2, _ = sql(conn, FLOOR, "2026-01-03")
    rerun_s, _, _, again, _ = run_job(url, "2026-01-02")  # idempotent re-run: nothing left to do
    assert again == n
    vacuum(conn)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM credits WHERE credits <> 15")
        assert cur.fetchone()[0] == 0, "every user must hold exactly 3 x 5 credits"
    subscribed = with_subscribers(url, conn, n)
    conn.close()
    floor = (floor1 + floor2) / 2
    print(f"{n:>9,} users  grant {job_s:6.2f} s in the job ({wall_s:6.2f} s with process start, {chunks} chunks)"
          f"  floor {floor:6.2f} s ({floor1:.2f}/{floor2:.2f})  ratio {job_s / floor:4.2f}x"
          f"  peak RSS {rss:6.1f} MiB  re-run of a done date {rerun_s:5.2f} s", flush=True)
    print(f"{'':>9}        without subscribers {subscribed['plain_s']:.2f} s; with {subscribed['subscribed_s']:.2f} s "
          f"({subscribed['subscribed_ratio']:.2f}x); with, lifting 1 in 10 ({subscribed['recovered_per_run']:,} "
          f"balance.recovered events and deliveries) {subscribed['lifted_s']:.2f} s ({subscribed['lifted_ratio']:.2f}x)",
          flush=True)
    return {"users": n, "grant_s": round(job_s, 2), "wall_s": round(wall_s, 2), "chunks": chunks,
            "floor_s": round(floor, 2), "floor_runs_s": [round(floor1, 2), round(floor2, 2)],
            "ratio": round(job_s / floor, 2), "peak_rss_mib": round(rss, 1), "rerun_s": round(rerun_s, 2),
            "subscribers": subscribed}


ENDPOINT = """
INSERT INTO webhook_endpoints (url, enabled, secret, created_by, created_at, updated_at)
VALUES ('https://hooks.example.com/credits', FALSE, 'whsec_YmVuY2g=', 'bench', now(), now()) RETURNING id"""


MODES = ("plain", "subscribed", "lifted")


def with_subscribers(url, conn, n):
    """Grant runs without subscribers (plain), with an enabled endpoint subscribed to every
    type (subscribed), and with it and one user in ten lifted over their threshold (lifted),
    alternating, two of each, on the next six dates; seconds in the job, per mode."""
    with conn.cursor() as cur:
        cur.execute(ENDPOINT)
        endpoint = cur.fetchone()[0]
        cur.execute("INSERT INTO webhook_subscriptions (endpoint_id, event_type) SELECT %s, t FROM unnest(%s) t",
                    (endpoint, ["credits.changed", "balance.low", "balance.recovered", "balance.depleted",
                                "grant.run.completed"]))
    conn.commit()
    times = {mode: [] for mode in MODES}
    for i, mode in enumerate(MODES + MODES[::-1]):
        if mode == "lifted":  # one user in ten low, lifted to their threshold by this grant
            sql(conn, "UPDATE credits SET alert_state = 'low', low_balance_threshold = credits + 5 "
                      "WHERE user_id % 10 = 0")
        sql(conn, "UPDATE webhook_endpoints SET enabled = %s", mode != "plain")
        vacuum(conn)
        seconds, _, _, credited, _ = run_job(url, f"2026-01-{4 + i:02d}")
        assert credited == n, credited
        times[mode].append(seconds)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM events WHERE event_type = 'balance.recovered'")
        recovered = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM events WHERE event_type = 'grant.run.completed'")
        runs = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM webhook_deliveries")
        deliveries = cur.fetchone()[0]
    # Only the lifted users' events, and one run event per run (the first run's re-run found it done).
    assert recovered == 2 * (n // 10) and runs == 1 + 2 * len(MODES), (recovered, runs)
    assert deliveries == recovered + 4, deliveries  # the subscribed and lifted runs' events
    mean = {mode: sum(t) / len(t) for mode, t in times.items()}
    return {"plain_s": round(mean["plain"], 2), "subscribed_s": round(mean["subscribed"], 2),
            "lifted_s": round(mean["lifted"], 2), "subscribed_ratio": round(mean["subscribed"] / mean["plain"], 3),
            "lifted_ratio": round(mean["lifted"] / mean["plain"], 3), "recovered_per_run": n // 10,
            "runs_s": {k: [round(x, 2) for x in v] for k, v in times.items()}}


def against(server, n, rev, rounds, out):
    """This tree's grant against REV's (a git worktree, a database migrated by its own
    migrations), interleaved: each round runs both, in alternating order, each followed by the
    floor on its own database, so drift on the machine falls on both alike. Prints and writes
    each tree's grant seconds and grant/floor ratio per round, and this tree's over REV's."""
    dbs = {}
    with worktree(rev) as other:
        trees = {rev: other, "this tree": ROOT}
        try:
            for i, (label, tree) in enumerate(trees.items()):
                dbs[label] = loaded_db(server, f"against_{i}", n, tree)
            runs = {label: [] for label in trees}
            for r in range(rounds):
                for label in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
                    url, conn = dbs[label]
                    seconds, _, _, credited, _ = run_job(url, f"2026-02-{1 + 2 * r:02d}", trees[label])
                    assert credited == n, credited
                    vacuum(conn)
                    floor, rows = sql(conn, FLOOR, f"2026-02-{2 + 2 * r:02d}")
                    assert rows == n, rows
                    vacuum(conn)
                    runs[label].append((seconds, floor))
                    print(f"round {r + 1} {label:>10}: grant {seconds:6.2f} s  floor {floor:6.2f} s  "
                          f"ratio {seconds / floor:4.2f}x", flush=True)
        finally:
            for _, conn in dbs.values():
                conn.close()
    mean = {label: {"grant_s": sum(g for g, _ in rs) / rounds, "ratio": sum(g / f for g, f in rs) / rounds}
            for label, rs in runs.items()}
    per_round = [runs["this tree"][r][0] / runs[rev][r][0] for r in range(rounds)]
    lines = [f"{n:,} users, {rounds} interleaved rounds; grant seconds and grant/floor per tree", "",
             "| tree | grant s (mean) | grant / floor (mean) |", "|---|---:|---:|"]
    lines += [f"| {label} | {m['grant_s']:.2f} | {m['ratio']:.2f}x |" for label, m in mean.items()]
    lines += ["", "this tree's grant / " + rev + "'s, per round: " + ", ".join(f"{x:.3f}" for x in per_round)
              + f" (mean {sum(per_round) / rounds:.3f})"]
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "grant_against.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out, "grant_against.json"), "w") as f:
        json.dump({"users": n, "against": rev, "rounds": {k: [[round(g, 3), round(fl, 3)] for g, fl in v]
                                                          for k, v in runs.items()},
                   "mean": mean, "this_over_against": per_round}, f, indent=2)


def write_report(results, chunk_size, out):
    os.makedirs(out, exist_ok=True)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    header = (f"Daily grant on a durable PostgreSQL, chunk size {chunk_size}; machine: {os.cpu_count()} x {cpu}; "
              f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    lines = [header, "", "| users | grant s | floor s (UPDATE + ledger INSERT ... SELECT) | ratio | peak RSS MiB "
             "| re-run of a done date s | without subscribers s | with s | with, 1 in 10 lifted s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        sub = r["subscribers"]
        lines.append(f"| {r['users']:,} | {r['grant_s']:.2f} | {r['floor_s']:.2f} | {r['ratio']:.2f}x | "
                     f"{r['peak_rss_mib']:.1f} | {r['rerun_s']:.2f} | {sub['plain_s']:.2f} | {sub['subscribed_s']:.2f} "
                     f"({sub['subscribed_ratio']:.2f}x) | {sub['lifted_s']:.2f} ({sub['lifted_ratio']:.2f}x) |")
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    with open(os.path.join(out, "grant.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out, "grant.json"), "w") as f:
        json.dump({"chunk_size": chunk_size, "results": results, "header": header}, f, indent=2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("sizes", nargs="*", type=int, default=[100_000, 1_000_000], metavar="N")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    parser.add_argument("--against", metavar="REV", help="instead: this tree's grant against REV's, interleaved, "
                                                         "at the first size")
    parser.add_argument("--rounds", type=int, default=4, help="with --against: rounds of both trees")
    args = parser.parse_args()
    sizes = args.sizes
    server = Postgres(durable=True).start()  # fsync on: figures worth reporting
    try:
        if args.against:
            against(server, sizes[0], args.against, args.rounds, args.out)
            return
        chunk_size = os.environ.get("DAILY_GRANT_CHUNK_SIZE", "20000 (default)")
        print(f"PostgreSQL durable, chunk size {chunk_size}")
        results = [bench(server, n) for n in sizes]
        write_report(results, chunk_size, args.out)
    finally:
        server.destroy()


if __name__ == "__main__":
    main()
