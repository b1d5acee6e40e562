"""The daily grant in-process, on SQLite and PostgreSQL: exactly once per (user, UTC date),
chunked, cap respected, runs table, catch-up, CLI and API. Real-process tests (rq worker,
rqscheduler) are in test_grant_processes.py."""
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from credits_app import grants, ledger
from credits_app.extensions import db
from tests.conftest import client_as

D = date(2026, 3, 1)


def add_users(count, with_credits=True, balance=0):
    """`count` users created in one statement (plus their credits rows); returns their ids."""
    with db.engine.begin() as conn:
        start = conn.execute(text("SELECT COALESCE(MAX(user_id), 0) FROM users")).scalar()
        conn.execute(text("""
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
            INSERT INTO users (email, name, created_at)
            SELECT 'u' || (:start + i) || '@example.com', 'U', CURRENT_TIMESTAMP FROM n"""),
                     {"count": count, "start": start})
        ids = [r[0] for r in conn.execute(text("SELECT user_id FROM users WHERE user_id > :s ORDER BY user_id"),
                                          {"s": start})]
        if with_credits:
            conn.execute(text("INSERT INTO credits (user_id, credits, last_updated) "
                              "SELECT user_id, 0, CURRENT_TIMESTAMP FROM users WHERE user_id > :s"), {"s": start})
    for uid in ids if balance else ():
        ledger.add(uid, balance, actor="test")
    return ids


def balances():
    with db.engine.connect() as conn:
        return dict(conn.execute(text("SELECT u.user_id, COALESCE(c.credits, 0) FROM users u "
                                      "LEFT JOIN credits c ON c.user_id = u.user_id")).all())


def grant_rows(day):
    with db.engine.connect() as conn:
        return dict(conn.execute(text("SELECT user_id, count(*) FROM ledger_entries WHERE grant_date = :d "
                                      "GROUP BY user_id"), {"d": day}).all())


@pytest.fixture
def app_env():
    return {"DAILY_GRANT_CHUNK_SIZE": "7", "DAILY_GRANT_CATCHUP_DAYS": "3"}


def test_grant_credits_each_user_once_per_date_in_chunks(ctx):
    ids = add_users(30)
    seed_era = add_users(5, with_credits=False)  # no credits row: they get one
    run = grants.run_date(D)
    assert run.status == "done" and run.users_credited == 35 and run.amount == 5
    assert run.chunks_total == run.chunks_done == 5  # 35 ids in chunks of 7
    assert balances() == {uid: 5 for uid in ids + seed_era}
    assert grants.run_date(D).users_credited == 35  # a re-run is a no-op
    for chunk in [(min(ids), max(seed_era) + 1), (1, 10**12)]:  # whole range, twice
        assert grants.run_chunk(D, 5, *chunk) == 0
    assert balances() == {uid: 5 for uid in ids + seed_era}
    assert set(grant_rows(D).values()) == {1}
    assert ledger.verify() == []
    grants.run_date(D + timedelta(days=1))  # the next date is a new grant
    assert set(balances().values()) == {10}


def test_grant_ledger_rows_carry_date_actor_and_new_balance(ctx):
    (uid,) = add_users(1, balance=7)
    grants.run_date(D)
    (entry,) = [e for e in ledger.entries(uid, limit=10) if e.kind == "daily_grant"]
    assert (entry.amount, entry.balance_after, entry.grant_date) == (5, 12, D)
    assert entry.actor == "system:daily-grant" and entry.reason == "daily grant 2026-03-01"


def test_unique_index_refuses_a_second_grant_even_bypassing_the_code(ctx):
    (uid,) = add_users(1)
    grants.run_date(D)
    with pytest.raises(Exception, match="(?i)unique"):
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO ledger_entries (user_id, kind, amount, balance_after, actor, grant_date) "
                              "VALUES (:u, 'daily_grant', 5, 10, 'x', :d)"), {"u": uid, "d": D})


@pytest.mark.parametrize("app_env", [{"MAX_AMOUNT": "100", "MAX_BALANCE": "100"}])
def test_users_at_the_cap_are_skipped_not_clamped(ctx):
    full, near, low = add_users(3)
    ledger.add(full, 100, actor="test")
    ledger.add(near, 96, actor="test")  # +5 would be 101 > cap
    ledger.add(low, 95, actor="test")  # +5 is exactly the cap
    run = grants.run_date(D)
    assert run.users_credited == 1 and run.status == "done"
    assert balances() == {full: 100, near: 96, low: 100}
    assert list(grant_rows(D)) == [low]
    assert ledger.verify() == []


def test_runs_table_records_each_date_and_plan_is_fixed(ctx):
    add_users(10)
    run, chunks = grants.start(D)
    assert run.status == "running" and run.chunks_done == 0 and len(chunks) == 2 and run.finished_at is None
    grants.run_chunk(D, run.amount, chunks[0].lo, chunks[0].hi)
    grants.run_chunk(D, run.amount, chunks[0].lo, chunks[0].hi)  # a duplicate job
    mid = grants.get_run(D)
    assert (mid.status, mid.chunks_done, mid.users_credited) == ("running", 1, 7)
    again, remaining = grants.start(D, amount=99)  # already planned: amount and chunks kept
    assert again.amount == 5 and remaining == chunks[1:]
    done = grants.run_date(D)
    assert (done.status, done.chunks_done, done.users_credited) == ("done", 2, 10)
    assert done.finished_at >= done.started_at
    assert [r.grant_date for r in grants.recent_runs()] == [D]


def add_users_with_ids(ids):
    """Users with these exact ids, inserted by plain SQL (no credits rows), as a seed or an
    import could."""
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO users (user_id, email, name, created_at) "
                          "VALUES (:id, 'id' || :id || '@example.com', 'S', CURRENT_TIMESTAMP)"),
                     [{"id": uid} for uid in ids])
    return list(ids)


def chunk_rows(day):
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT lo, hi FROM daily_grant_chunks WHERE grant_date = :d "
                                                    "ORDER BY lo"), {"d": day})]


def test_chunks_follow_the_users_not_the_spread_of_their_ids(ctx):
    ids = add_users_with_ids([1, 2, 10_000_000])
    run = grants.run_date(D)
    assert (run.status, run.users_credited, run.chunks_total, run.max_user_id) == ("done", 3, 1, 10_000_000)
    assert balances() == {uid: 5 for uid in ids}
    # Ids up to 10^12 (and one at the largest id a chunk bound can cover): one chunk per
    # DAILY_GRANT_CHUNK_SIZE users, each starting at an id that exists.
    spread = add_users_with_ids([10**9 * k + k for k in range(1, 20)] + [10**12, 2**63 - 2])
    day = D + timedelta(days=1)
    run = grants.run_date(day)
    assert (run.status, run.users_credited, run.chunks_total, run.max_user_id) == ("done", 24, 4, 2**63 - 2)
    chunks = chunk_rows(day)
    ordered = sorted(ids + spread)
    assert [lo for lo, _ in chunks] == ordered[::7]
    assert [hi for _, hi in chunks] == ordered[7::7] + [2**63 - 1]
    assert balances() == {uid: 10 if uid in ids else 5 for uid in ordered}
    assert ledger.verify() == []


def test_the_largest_bigint_id_cannot_stop_the_grant(ctx):
    ids = add_users(3)
    top = add_users_with_ids([2**63 - 1])
    run = grants.run_date(D)
    assert (run.status, run.users_credited, run.max_user_id) == ("done", 3, ids[-1])
    assert balances() == {**{uid: 5 for uid in ids}, top[0]: 0}


def test_a_run_covers_exactly_the_users_up_to_its_max_user_id(ctx):
    ids = add_users(9)  # chunks of 7: the last chunk holds 2 users
    run, chunks = grants.start(D)
    later = add_users(3)  # created after planning, before the chunks run
    done = grants.run_date(D)
    assert balances() == {**{uid: 5 for uid in ids}, **{uid: 0 for uid in later}}
    assert (done.status, done.users_credited) == ("done", 9)
    assert run.max_user_id == max(ids) and chunks[-1].hi == max(ids) + 1
    assert grants.run_date(D).users_credited == 9  # finishing the date again adds nobody
    nxt = grants.run_date(D + timedelta(days=1))
    assert nxt.users_credited == 12 and nxt.max_user_id == max(later)


def failed_runs_metric(app):
    text_ = app.test_client().get("/metrics").get_data(as_text=True)
    (line,) = [ln for ln in text_.splitlines() if ln.startswith("credits_daily_grant_failed_runs ")]
    return float(line.split()[1])


def test_a_failed_run_is_visible_and_resumed(app, client, runner):
    with app.app_context():
        ids = add_users(10)
        run, chunks = grants.start(D, scheduled=True)
        grants.run_chunk(D, run.amount, chunks[0].lo, chunks[0].hi)
        assert failed_runs_metric(app) == 0
        assert grants.mark_failed(D, chunks[0].lo, "x") is False  # a finished chunk fails nothing
        assert grants.mark_failed(D, chunks[1].lo, "QueryCanceled: canceling statement due to statement timeout")
    (item,) = client.get("/api/grants/daily").get_json()["items"]
    assert (item["status"], item["chunks_done"], item["users_credited"]) == ("failed", 1, 7)
    assert item["last_error"] == "QueryCanceled: canceling statement due to statement timeout"
    status = runner.invoke(args=["credits", "grant-status"])
    assert f"{D}  failed" in status.output and "last error: QueryCanceled" in status.output
    assert failed_runs_metric(app) == 1
    with app.app_context():
        assert grants.due_dates(today=D + timedelta(days=1))[0] == D  # the next catch-up takes it
        again, pending = grants.start(D)
        assert again.status == "running" and pending == chunks[1:]
        done = grants.run_date(D)
        assert (done.status, done.users_credited, done.last_error) == ("done", 10, item["last_error"])
        assert grants.mark_failed(D, chunks[1].lo, "late duplicate") is False  # a done run stays done
        assert grants.get_run(D).status == "done" and failed_runs_metric(app) == 0
        assert balances() == {uid: 5 for uid in ids} and ledger.verify() == []


def test_migration_0006_keeps_every_run_and_chunk(app):
    from flask_migrate import downgrade, upgrade

    with app.app_context():
        downgrade(revision="0005")
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO daily_grant_runs (grant_date, status, amount, chunk_size, chunks_total, "
                              "chunks_done, users_credited, started_at) VALUES (:d, 'running', 5, 10, 2, 1, 3, "
                              "CURRENT_TIMESTAMP)"), {"d": D})
            conn.execute(text("INSERT INTO daily_grant_chunks (grant_date, lo, hi, users_credited, finished_at) "
                              "VALUES (:d, 1, 11, 3, CURRENT_TIMESTAMP), (:d, 11, 21, NULL, NULL)"), {"d": D})
        upgrade()
        run = grants.get_run(D)
        assert (run.status, run.chunks_total, run.chunks_done, run.users_credited, run.max_user_id) == (
            "running", 2, 1, 3, None)
        assert chunk_rows(D) == [(1, 11), (11, 21)] and grants.pending_chunks(D) == [grants.Chunk(11, 21)]
        assert grants.mark_failed(D, 11, "e") and grants.get_run(D).status == "failed"
        with pytest.raises(Exception, match="(?i)check"):
            with db.engine.begin() as conn:
                conn.execute(text("UPDATE daily_grant_runs SET status = 'lost'"))
        with db.engine.begin() as conn:  # the chunks still belong to their run
            conn.execute(text("DELETE FROM daily_grant_runs"))
        assert chunk_rows(D) == []


def test_no_users_is_a_finished_empty_run(ctx):
    run = grants.run_date(D)
    assert (run.status, run.chunks_total, run.users_credited) == ("done", 0, 0)


def test_catch_up_grants_each_missed_date_once_within_the_window(ctx):
    ids = add_users(3)
    assert grants.due_dates(today=D) == [D]  # fresh install: today only; nothing in the past is "missed"
    grants.plan(D - timedelta(days=10), scheduled=True)  # the schedule granted long ago, then was down
    grants.run_date(D - timedelta(days=10))
    grants.run_date(D - timedelta(days=2))  # an operator granted this one by hand
    grants.start(D - timedelta(days=1), scheduled=True)  # started, crashed before any chunk ran
    # window of 3 days: D-3 (missed), D-1 (unfinished), D (today); D-2 is done; D-10 is outside.
    assert grants.due_dates(today=D) == [D - timedelta(days=3), D - timedelta(days=1), D]
    for day in grants.due_dates(today=D):
        grants.run_date(day)
    assert grants.due_dates(today=D) == []
    assert balances() == {uid: 5 * 5 for uid in ids}  # D-10, D-3, D-2, D-1, D: once each
    assert ledger.verify() == []


def test_a_date_granted_by_hand_does_not_start_the_catch_up(ctx):
    add_users(3)
    grants.run_date(D - timedelta(days=3))  # a fresh install's first grant, backdated, by hand
    assert grants.due_dates(today=D) == [D]
    assert not grants.get_run(D - timedelta(days=3)).scheduled
    grants.plan(D - timedelta(days=1), scheduled=True)  # the scheduler first ran yesterday
    assert grants.due_dates(today=D) == [D - timedelta(days=1), D]
    run = grants.start(D - timedelta(days=3), scheduled=True)[0]  # the schedule asking later marks it
    assert run.scheduled and grants.due_dates(today=D) == [D - timedelta(days=2), D - timedelta(days=1), D]


@pytest.mark.parametrize("app_env", [{"DAILY_GRANT_CATCHUP_DAYS": "0"}])
def test_today_is_due_even_without_catch_up_days(ctx):
    add_users(2)
    grants.run_date(D - timedelta(days=2))
    assert grants.due_dates(today=D) == [D]
    grants.run_date(D)
    assert grants.due_dates(today=D) == []


def test_utc_today_is_the_utc_calendar_date():
    almost = datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=timezone.utc)
    assert grants.utc_today(almost) == date(2026, 3, 1)
    assert grants.utc_today(almost + timedelta(microseconds=1)) == date(2026, 3, 2)
    kiritimati = timezone(timedelta(hours=14))  # 2026-03-02 13:59:59 local is still March 1st UTC
    assert grants.utc_today(almost.astimezone(kiritimati)) == date(2026, 3, 1)
    with pytest.raises(ValueError):
        grants.utc_today(datetime(2026, 3, 1))


def test_cli_grant_daily_is_idempotent_and_grant_status_lists_runs(app, runner):
    with app.app_context():
        ids = add_users(4)
    yesterday = str(grants.utc_today() - timedelta(days=1))
    first = runner.invoke(args=["credits", "grant-daily", "--date", yesterday])
    assert first.exit_code == 0, first.output
    assert f"{yesterday}  done" in first.output and "users 4" in first.output
    assert "already granted" not in first.output
    again = runner.invoke(args=["credits", "grant-daily", "--date", yesterday])
    assert again.exit_code == 0 and "users 4" in again.output
    assert f"{yesterday} was already granted; nothing to do" in again.output
    today = runner.invoke(args=["credits", "grant-daily"])
    assert today.exit_code == 0 and str(grants.utc_today()) in today.output
    status = runner.invoke(args=["credits", "grant-status"])
    assert status.exit_code == 0
    assert status.output.index(str(grants.utc_today())) < status.output.index(yesterday)
    bad = runner.invoke(args=["credits", "grant-daily", "--date", "2026-02-30"])
    assert bad.exit_code == 1 and "YYYY-MM-DD" in bad.output
    for day in (grants.utc_today() + timedelta(days=1), grants.utc_today() - timedelta(days=366), date(1, 1, 1)):
        refused = runner.invoke(args=["credits", "grant-daily", "--date", str(day)])
        assert refused.exit_code == 1 and "validation_error" in refused.output, refused.output
    with app.app_context():
        assert balances() == {uid: 10 for uid in ids} and ledger.verify() == []


def test_api_lists_runs_and_refuses_non_admins(app, client):
    with app.app_context():
        add_users(2)
        grants.run_date(D)
    body = client.get("/api/grants/daily").get_json()
    assert [(r["grant_date"], r["status"], r["users_credited"]) for r in body["items"]] == [("2026-03-01", "done", 2)]
    service = client_as(app, "service")
    assert service.get("/api/grants/daily").status_code == 403
    assert service.post("/api/grants/daily/run", json={}).status_code == 403
    assert app.test_client().get("/api/grants/daily").status_code == 401


def test_api_grants_only_today_and_the_catch_up_window(app, client):
    today, window = grants.utc_today(), app.config["DAILY_GRANT_CATCHUP_DAYS"]
    for day, why in ((today + timedelta(days=1), "future"), (today - timedelta(days=window + 1), "days ago"),
                     (date(9999, 12, 31), "future"), (date(1, 1, 1), "days ago")):
        r = client.post("/api/grants/daily/run", json={"date": str(day)})
        assert r.status_code == 422 and why in r.get_json()["error"]["message"], r.get_json()
        assert list(r.get_json()["error"]["details"]["fields"]) == ["date"]
    with app.app_context():
        add_users(2)
        grants.run_date(D)  # an old run (the window is relative to today)...
        grants.run_date(today - timedelta(days=window))
    for day in (D, today - timedelta(days=window)):  # ... already done: nothing to queue, so no Redis needed
        r = client.post("/api/grants/daily/run", json={"date": str(day)})
        assert r.status_code == 200 and r.get_json() == {"status": "already_done", "job_id": None, "date": str(day)}
    with app.app_context():
        assert grants.get_run(today + timedelta(days=1)) is None and ledger.verify() == []


def test_api_run_without_redis_is_503(app, client):
    response = client.post("/api/grants/daily/run", json={"date": str(grants.utc_today() - timedelta(days=1))})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "queue_unavailable"
    assert client.post("/api/grants/daily/run", json={"date": "March 1st"}).status_code == 422


def test_every_job_the_grant_enqueues_by_name_exists():
    """The grant names the worker's jobs by import path (it cannot import worker/): each name
    resolves to a function, as RQ will resolve it in the worker."""
    from rq.utils import import_attribute

    names = [grants.GRANT_DATE_JOB, grants.GRANT_CHUNK_JOB, grants.CHUNK_FAILED_CALLBACK, grants.CATCH_UP_JOB,
             grants.DAILY_TICK_JOB]
    assert all(callable(import_attribute(name)) for name in names)
