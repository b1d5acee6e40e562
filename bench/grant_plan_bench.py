"""Benchmark (not a test): planning a date's daily-grant run (grants.start: the run row and
its chunk rows) on a DURABLE throwaway PostgreSQL, for users whose ids are dense and for
users whose ids are spread far apart. Planning must cost what the number of users costs,
whatever the ids are.

    .venv/bin/python bench/grant_plan_bench.py [--cases dense:1000000 spread:1000:1000000000000]
        [--rev REV] [--mem-limit-mib 2048] [--out DIR]                    (make bench-grant-plan)

Case `dense:N`: ids 1..N. Case `spread:N:MAX`: N ids evenly spaced up to MAX. Planning runs
in its own process (as the worker's job would), under an address-space limit so a plan that
grows with the id range fails with MemoryError instead of taking the machine; its peak RSS
comes from wait4(), beside the peak RSS of the same process building the app and asking
one query (the baseline). `--rev REV` plans with the code of an older git revision (on
this revision's schema) to compare before/after. Writes grant_plan.md / grant_plan.json
under --out (default bench/out)."""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import psycopg2  # noqa: E402

from tests.services import Postgres  # noqa: E402

PLAN = """
import sys, time
from sqlalchemy import text
from credits_app import create_app, grants
from credits_app.extensions import db
app = create_app()
with app.app_context():
    if sys.argv[1] == "baseline":
        with db.engine.connect() as conn:
            conn.execute(text("SELECT count(*) FROM users")).scalar()
        print("0 0 0")
    else:
        t = time.perf_counter()
        run, chunks = grants.start(sys.argv[1])
        print(f"{time.perf_counter() - t:.4f} {run.chunks_total} {len(chunks)}")
"""


def env_for(url, code_root):
    return dict(os.environ, DATABASE_URL=url, TESTING="true", TZ="UTC", PYTHONPATH=code_root,
                JWT_SECRET_KEY="bench-only-secret-key-of-sufficient-length-0123456789")


def migrate(url):
    subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT,
                   env=env_for(url, ROOT), check=True, capture_output=True)


def plan_in_process(url, day, code_root, mem_limit_mib):
    """(seconds inside the process or None, peak RSS MiB, chunks, error line or None)."""
    limit = mem_limit_mib * 1024 * 1024

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.Popen([sys.executable, "-c", PLAN, day], cwd=code_root, env=env_for(url, code_root),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=cap)
    _, status, rusage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    rss = rusage.ru_maxrss / 1024
    if status != 0:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        return None, rss, None, lines[-1] if lines else f"exit status {status}"
    seconds, chunks, _pending = out.split()
    return float(seconds), rss, int(chunks), None


def load(conn, kind, n, top):
    with conn.cursor() as cur:
        if kind == "dense":
            cur.execute("INSERT INTO users (email, name) SELECT 'u' || i || '@example.com', 'U' "
                        "FROM generate_series(1, %s) i", (n,))
        else:  # n ids evenly spaced, the last one exactly `top`
            cur.execute("INSERT INTO users (user_id, email, name) SELECT (i::numeric * %s / %s)::bigint, "
                        "'u' || i || '@example.com', 'U' FROM generate_series(1, %s) i", (top, n, n))
        cur.execute("INSERT INTO credits (user_id, credits, last_updated) SELECT user_id, 0, now() FROM users")
    conn.commit()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    conn.autocommit = False


def bench(server, case, code_root, mem_limit_mib):
    kind, *nums = case.split(":")
    n, top = int(nums[0]), int(nums[1]) if len(nums) > 1 else int(nums[0])
    name = f"plan_{kind}_{n}"
    url = server.createdb(name)
    migrate(url)
    conn = psycopg2.connect(server.url(name))
    load(conn, kind, n, top)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*), min(user_id), max(user_id) FROM users")
        count, lo, hi = cur.fetchone()
    _, base_rss, _, _ = plan_in_process(url, "baseline", code_root, mem_limit_mib)
    seconds, rss, chunks, error = plan_in_process(url, "2026-01-01", code_root, mem_limit_mib)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM daily_grant_chunks")
        chunk_rows = cur.fetchone()[0]
    conn.close()
    result = {"case": case, "users": count, "min_id": lo, "max_id": hi, "plan_s": seconds, "chunks": chunks,
              "chunk_rows": chunk_rows, "peak_rss_mib": round(rss, 1), "baseline_rss_mib": round(base_rss, 1),
              "error": error}
    shown = f"{seconds:7.3f} s" if seconds is not None else "  failed"
    print(f"{case:<28} {count:>9,} users, ids {lo}..{hi}: plan {shown}, {chunks if chunks is not None else '-'} "
          f"chunks, peak RSS {rss:6.1f} MiB (baseline {base_rss:5.1f} MiB)" + (f"  error: {error}" if error else ""),
          flush=True)
    return result


def code_at(rev):
    """A checkout of `rev` in a temp dir (git archive): the code that plans."""
    where = tempfile.mkdtemp(prefix="credits-plan-rev-")
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", where], input=archive, check=True)
    return where


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", nargs="+", default=["dense:1000000", "spread:1000:1000000000000"])
    parser.add_argument("--rev", help="plan with the code of this git revision")
    parser.add_argument("--mem-limit-mib", type=int, default=2048)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    args = parser.parse_args()
    code_root = code_at(args.rev) if args.rev else ROOT
    rev = args.rev or subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True).stdout.strip() + " (working tree)"
    chunk_size = os.environ.get("DAILY_GRANT_CHUNK_SIZE", "20000 (default)")
    print(f"PostgreSQL durable, chunk size {chunk_size}, code {rev}, address space limit {args.mem_limit_mib} MiB")
    server = Postgres(durable=True).start()
    try:
        started = time.perf_counter()
        results = [bench(server, case, code_root, args.mem_limit_mib) for case in args.cases]
    finally:
        server.destroy()
        if args.rev:
            subprocess.run(["rm", "-rf", code_root])
    os.makedirs(args.out, exist_ok=True)
    lines = [f"Planning a daily-grant run, code {rev}, chunk size {chunk_size}, durable PostgreSQL, "
             f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", "",
             "| case | users | max id | plan s | chunks | peak RSS MiB (baseline) | error |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        plan = f"{r['plan_s']:.3f}" if r["plan_s"] is not None else "-"
        lines.append(f"| {r['case']} | {r['users']:,} | {r['max_id']:,} | {plan} | "
                     f"{r['chunks'] if r['chunks'] is not None else '-'} | {r['peak_rss_mib']:.1f} "
                     f"({r['baseline_rss_mib']:.1f}) | {r['error'] or ''} |")
    table = "\n".join(lines) + "\n"
    print("\n" + table + f"(bench took {time.perf_counter() - started:.0f} s)")
    with open(os.path.join(args.out, "grant_plan.md"), "w") as f:
        f.write(table)
    with open(os.path.join(args.out, "grant_plan.json"), "w") as f:
        json.dump({"rev": rev, "chunk_size": chunk_size, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
