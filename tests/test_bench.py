"""The benchmarks still run (`make bench`): a tiny run of each, end to end on its own stack,
must complete and pass its own cross-checks. Speed is never asserted here: the figures of
a run this small mean nothing, and docs/benchmarks.md's come from full runs."""
import glob
import json
import os
import subprocess
import sys
import tempfile

import pytest

from tests.services import ROOT

pytestmark = pytest.mark.slow


def _metrics_dirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "credits-metrics-*")))


def _run(args, tmp_path, env=None):
    before = _metrics_dirs()
    result = subprocess.run([sys.executable, *args, "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=900, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert _metrics_dirs() <= before, "the benchmark left a gunicorn metrics directory behind"
    return result.stdout


def test_http_bench_runs_every_phase_and_its_cross_checks_pass(tmp_path):
    """wrk, pgbench, the bare floor and the service under gunicorn, every phase, one short
    round: each target answered, only 200s (and 409s; 201s for holds) and every cross-check
    true; the hold phase completed pairs on every target and released what wrk left open."""
    _run(["bench/http_bench.py", "--users", "300", "--duration", "1", "--rounds", "1", "--concurrency", "4"],
         tmp_path)
    with open(tmp_path / "http.json") as f:
        report = json.load(f)
    assert set(report["results"]) == {"read", "add", "deduct", "hot", "mixed", "hold"}
    for phase, runs in report["results"].items():
        assert set(runs) >= {"pgbench", "bare", "app"}, phase
        assert all(run["requests"] > 0 for run in runs.values()), (phase, runs)
        assert set(runs["app"]["statuses"]) <= ({"200", "201"} if phase == "hold" else {"200", "409"}), (
            phase, runs["app"]["statuses"])
    hold = report["results"]["hold"]
    assert all(run["rps"] > 0 for run in hold.values()), hold  # completed pairs, not requests
    assert hold["pgbench"]["statuses"] == {"failed": 0}, hold["pgbench"]
    assert hold["app"]["kinds"]["capture"] > 0 and hold["app"]["released_after"] is not None, hold["app"]
    for phase, checks in report["checks"].items():
        assert checks and all(checks.values()), (phase, checks)
    assert "the holds left open released (200), then nothing held" in report["checks"]["hold"]
    table = (tmp_path / "http.md").read_text()
    assert table.count("| app |") == 6 and "| hold (pairs/s) | app |" in table, table


def test_http_bench_against_a_revision_serves_both_trees_in_every_round(tmp_path):
    """--against HEAD: REV's tree in a worktree, on its own database, run beside this one in
    every round; the report compares them and the worktree is gone afterwards."""
    out = _run(["bench/http_bench.py", "--users", "300", "--duration", "1", "--rounds", "2", "--concurrency", "4",
                "--no-floors", "--phases", "read,add", "--against", "HEAD"], tmp_path)
    with open(tmp_path / "http.json") as f:
        report = json.load(f)
    assert report["against"] == "HEAD"
    for phase in ("read", "add"):
        runs = report["results"][phase]
        assert set(runs) == {"app", "against"}, runs
        assert len(runs["against"]["rps_runs"]) == 2 and all(rps > 0 for rps in runs["against"]["rps_runs"]), runs
        assert set(runs["against"]["statuses"]) == {"200"}, runs["against"]
        summary = report["vs_against"][phase]
        assert summary["min"] <= summary["ratio"] <= summary["max"] and summary["ratio"] > 0, summary
        assert summary["app_cpu_us"] > 0 and summary["against_cpu_us"] > 0, summary
    assert "This tree against HEAD" in out
    subprocess.run(["git", "worktree", "prune"], cwd=ROOT)
    listed = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "credits-rev-" not in listed, listed


def test_grant_bench_credits_every_user_once_per_date(tmp_path):
    """The grant bench asserts its own invariants (every user credited, a re-run credits no
    one twice, each balance exactly 3 x 5); several chunks here, as in production."""
    out = _run(["bench/grant_bench.py", "3000"], tmp_path, env={"DAILY_GRANT_CHUNK_SIZE": "1000"})
    with open(tmp_path / "grant.json") as f:
        [result] = json.load(f)["results"]
    assert result["users"] == 3000 and result["chunks"] == 3, (result, out)
    # The runs with subscribers: the bench itself checks one balance.recovered per lifted user.
    assert result["subscribers"]["recovered_per_run"] == 300, result


def test_events_bench_runs_with_a_dead_endpoint_and_its_checks_pass(tmp_path):
    """Every mode answered, one credits.changed delivery per change while an endpoint was
    subscribed; the healthy endpoint received its deliveries, the dead one none, and the
    dispatcher tried it."""
    _run(["bench/events_bench.py", "--users", "300", "--duration", "1", "--rounds", "1", "--concurrency", "4",
          "--phases", "add,mixed"], tmp_path)
    with open(tmp_path / "events.json") as f:
        report = json.load(f)
    assert report["modes"] == ["quiet", "healthy", "dead"] and all(report["checks"].values()), report
    assert all(runs and runs[0] > 0 for runs in report["rps"].values()), report
    assert report["deliveries"] > 0 and report["dead_delivered"] == 0 and report["dead_attempts"] > 0, report
    assert report["healthy_received"] > 0, report


def test_grant_plan_bench_plans_from_the_ids_that_exist(tmp_path):
    """The planning bench's cases complete: dense ids in several chunks, ids spread up to
    10^12 in one."""
    out = _run(["bench/grant_plan_bench.py", "--cases", "dense:3000", "spread:10:1000000000000"], tmp_path,
               env={"DAILY_GRANT_CHUNK_SIZE": "1000"})
    with open(tmp_path / "grant_plan.json") as f:
        results = json.load(f)["results"]
    assert [(r["users"], r["max_id"], r["chunks"], r["error"]) for r in results] == [
        (3000, 3000, 3, None), (10, 10**12, 1, None)], out


def test_seam_costs_times_every_seam_against_the_stock_way():
    result = subprocess.run([sys.executable, "bench/seam_costs.py", "--number", "50"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.rstrip().endswith(("kept", "removed"))]
    assert len(lines) >= 10 and any(line.endswith("kept") for line in lines), result.stdout


def test_ledger_time_bench_reads_by_time_and_exports_in_constant_memory(tmp_path):
    """A small ledger: every timed read answers, its plans are printed, and the exports (API
    under gunicorn, CLI) hold every entry, in time order, summing to each user's balance."""
    out = _run(["bench/ledger_time_bench.py", "--entries", "20000", "--others", "50000", "--users", "100",
                "--runs", "2", "--export-sizes", "2000,20000"], tmp_path)
    with open(tmp_path / "ledger_time.json") as f:
        report = json.load(f)
    assert report["checks"] and all(report["checks"].values()), report["checks"]
    assert {"export one user: sum of amounts = the final balance",
            "export whole ledger: every user's sum of amounts = its balance"} <= set(report["checks"]), out
    assert all(call["error"] is None for call in report["calls_ms"].values()), report["calls_ms"]
    assert any(name.startswith("history points=1000") for name in report["calls_ms"]), out
    assert [e["rows"] for e in report["exports"]] == [2000, 20000, 2000, 20000, 70000], report["exports"]
    assert all(e["worker_rss_peak_mib"] > 0 and e["cli_peak_rss_mib"] > 0 for e in report["exports"])
    plans = report["plans"]
    assert "Index Only Scan Backward using ix_ledger_user_time" in plans["as-of (GET /api/credits/<id>?as_of=)"]
    [user_export] = [plan for name, plan in plans.items() if name.startswith("export, one user")]
    [all_export] = [plan for name, plan in plans.items() if name.startswith("export, all users")]
    assert "DECLARE" in user_export and "ix_ledger_user_time" in user_export, user_export
    assert "DECLARE" in all_export and "ix_ledger_time" in all_export and "Sort" not in all_export, all_export
    assert "Checks:" in out and "FAIL" not in out.split("Checks:", 1)[1].split("###", 1)[0], out


def test_statement_cost_runs_each_trees_statements_on_its_own_schema():
    """Against HEAD: both sides run the same statements, every phase prints a row."""
    result = subprocess.run([sys.executable, "bench/statement_cost.py", "--against", "HEAD", "--users", "500",
                             "--rounds", "1", "--duration", "1", "--concurrency", "2"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["read"], ["add"], ["deduct"],
                                                                                         ["hot"], ["mixed"])]
    assert [row[0] for row in rows] == ["read", "add", "deduct", "hot", "mixed"], result.stdout
    assert all(float(row[1]) > 0 and float(row[2]) > 0 for row in rows), result.stdout
    subprocess.run(["git", "worktree", "prune"], cwd=ROOT)
    listed = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "credits-rev-" not in listed, listed
