"""`flask users` and `flask credits` call the same functions as the API."""
import re
import time

from sqlalchemy import text

from credits_app import ledger
from credits_app.extensions import db
from credits_app.ledger import holds


def test_cli_flow_and_verify(app, runner):
    r = runner.invoke(args=["users", "create", "--email", "cli@example.com", "--name", "Cli"])
    assert r.exit_code == 0 and "created user 1" in r.output
    assert "10 credits" in runner.invoke(args=["credits", "add", "1", "10", "--reason", "bonus"]).output
    r = runner.invoke(args=["credits", "deduct", "1", "50"])
    assert r.exit_code == 1 and "insufficient_credits" in r.output
    assert "6 credits" in runner.invoke(args=["credits", "deduct", "1", "4"]).output
    assert "0 credits" in runner.invoke(args=["credits", "reset", "1"]).output
    assert runner.invoke(args=["credits", "show", "1"]).output.startswith("user 1: 0 credits, 0 held, 0 available")
    r = runner.invoke(args=["credits", "verify"])
    assert r.exit_code == 0 and "ledger verified" in r.output
    with app.app_context():
        actors = db.session.execute(text("SELECT DISTINCT actor FROM ledger_entries")).scalars().all()
    assert actors == ["cli"]


def test_verify_reports_drift(app, runner):
    runner.invoke(args=["users", "create", "--email", "a@example.com", "--name", "A"])
    runner.invoke(args=["users", "create", "--email", "b@example.com", "--name", "B"])
    runner.invoke(args=["credits", "add", "1", "10"])
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("UPDATE credits SET credits = 99 WHERE user_id = 2"))  # money out of thin air
    r = runner.invoke(args=["credits", "verify"])
    assert r.exit_code == 1
    assert "user 2: stored 99 != ledger sum 0" in r.output and "user 1" not in r.output


def test_cli_errors(runner):
    r = runner.invoke(args=["credits", "show", "42"])
    assert r.exit_code == 1 and "user_not_found" in r.output
    r = runner.invoke(args=["credits", "add", "1", "0"])
    assert r.exit_code == 1
    runner.invoke(args=["users", "create", "--email", "d@example.com", "--name", "D"])
    r = runner.invoke(args=["users", "create", "--email", "D@example.com", "--name", "D2"])
    assert r.exit_code == 1 and "email_taken" in r.output


def test_users_show_and_list(runner):
    runner.invoke(args=["users", "create", "--email", "ops@example.com", "--name", "Ops"])
    runner.invoke(args=["users", "create", "--email", "dev@example.com", "--name", "Dev"])
    runner.invoke(args=["credits", "add", "2", "7"])
    r = runner.invoke(args=["users", "show", "2"])
    assert r.exit_code == 0 and "dev@example.com" in r.output and "7 credits" in r.output
    r = runner.invoke(args=["users", "list"])
    assert r.output.splitlines() == ["1\tops@example.com\tOps", "2\tdev@example.com\tDev"]
    assert runner.invoke(args=["users", "list", "--email", "DEV@example.com"]).output.startswith("2\t")
    r = runner.invoke(args=["users", "show", "99"])
    assert r.exit_code == 1 and "user_not_found" in r.output


def test_queue_status_and_requeue(backend, request, tmp_path, redis_url):
    from redis import Redis
    from rq import Queue

    from tests.conftest import _fresh_url, make_app
    from worker import schedule

    app = make_app(_fresh_url(backend, request, tmp_path), REDIS_URL=redis_url)
    runner = app.test_cli_runner()
    r = runner.invoke(args=["queue", "status"])
    assert r.exit_code == 0, r.output
    assert "queue credits: 0 waiting, 0 running, 0 failed" in r.output and "NOT REGISTERED" in r.output
    schedule.register(Redis.from_url(redis_url), "0 0 * * *", 5, "credits")
    schedule.register_sweep(Redis.from_url(redis_url), "*/5 * * * *", "credits")
    Queue("credits", connection=Redis.from_url(redis_url)).enqueue("worker.jobs.catch_up")
    r = runner.invoke(args=["queue", "status"])
    assert "1 waiting" in r.output and "cron 0 0 * * *" in r.output and "T00:00:00 UTC" in r.output
    assert f"entry {schedule.SWEEP_JOB_ID}: cron */5 * * * *, next fire " in r.output
    assert runner.invoke(args=["queue", "requeue-failed"]).output.strip() == "requeued 0 failed job(s)"
    with app.app_context():
        db.engine.dispose()


def test_queue_status_with_redis_down(backend, request, tmp_path):
    from tests.conftest import _fresh_url, make_app
    from tests.services import free_port

    app = make_app(_fresh_url(backend, request, tmp_path), REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    r = app.test_cli_runner().invoke(args=["queue", "status"])
    assert r.exit_code == 1 and "redis unavailable" in r.output
    with app.app_context():
        db.engine.dispose()


def test_a_negative_amount_is_the_ledgers_refusal_not_an_unknown_option(runner):
    runner.invoke(args=["users", "create", "--email", "neg@example.com", "--name", "Neg"])
    r = runner.invoke(args=["credits", "add", "1", "-5"])
    assert r.exit_code == 1
    assert "amount must be positive" in r.output and "No such option" not in r.output


def test_every_command_says_what_it_does(app):
    """`flask <group> --help` lists each command with a line of help."""
    missing = []
    for group in app.cli.commands.values():
        for name, command in getattr(group, "commands", {}).items():
            if not (command.help or "").strip():
                missing.append(f"{group.name} {name}")
    assert not missing, missing


# --- holds --------------------------------------------------------------------------------

def _user_with(runner, credits, email="holder@example.com"):
    r = runner.invoke(args=["users", "create", "--email", email, "--name", "Holder"])
    user_id = int(re.search(r"created user (\d+)", r.output).group(1))
    assert runner.invoke(args=["credits", "add", str(user_id), str(credits)]).exit_code == 0
    return user_id


def _hold(runner, *args):
    r = runner.invoke(args=["credits", "hold", *map(str, args)])
    assert r.exit_code == 0, r.output
    return int(re.match(r"hold (\d+) of user", r.output).group(1)), r.output.splitlines()


def _raw_holds(app, user_id):
    """Each hold's stored status (not the status a read computes) and the stored `held`."""
    with app.app_context(), db.engine.connect() as conn:
        statuses = dict(conn.execute(text("SELECT id, status FROM holds WHERE user_id = :u"), {"u": user_id}).all())
        held = conn.execute(text("SELECT held FROM credits WHERE user_id = :u"), {"u": user_id}).scalar()
    return statuses, held


def test_hold_capture_and_release(app, runner):
    uid = _user_with(runner, 100)
    first, lines = _hold(runner, uid, 30, "--reason", "render job")
    assert lines[0].startswith(f"hold {first} of user {uid}: open 30 until ")
    assert lines[0].endswith("; reason: render job")
    assert lines[1] == f"user {uid}: 100 credits, 30 held, 70 available"
    second, _ = _hold(runner, uid, 20, "--ttl-seconds", "600")
    r = runner.invoke(args=["credits", "capture", str(first), "--amount", "12"])
    assert r.exit_code == 0, r.output
    line, balance = r.output.splitlines()
    assert line.startswith(f"hold {first} of user {uid}: captured 12 of 30 at ")
    entry_id = int(re.search(r"entry (\d+): capture -12\)$", balance).group(1))
    assert balance == f"user {uid}: 88 credits, 20 held, 68 available (entry {entry_id}: capture -12)"
    r = runner.invoke(args=["credits", "release", str(second), "--reason", "job cancelled"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0].endswith("; release reason: job cancelled")
    assert r.output.splitlines()[1] == f"user {uid}: 88 credits, 0 held, 88 available"
    with app.app_context():
        b = ledger.balance(uid)
        assert (b.credits, b.held) == (88, 0)
        captured, released = holds.get(first), holds.get(second)
        assert (captured["status"], captured["captured"], captured["entry_id"]) == ("captured", 12, entry_id)
        assert (released["status"], released["actor"], captured["actor"]) == ("released", "cli", "cli")
        assert (released["close_reason"], captured["close_reason"]) == ("job cancelled", None)
        (entry,) = [e for e in ledger.entries(uid, limit=10) if e.kind == "capture"]
        assert (entry.amount, entry.hold_id, entry.reason, entry.actor) == (-12, first, "render job", "cli")
    r = runner.invoke(args=["credits", "verify"])
    assert r.exit_code == 0 and "ledger verified" in r.output


def test_hold_refusals_exit_1_and_say_why(runner):
    uid = _user_with(runner, 100)
    hold_id, _ = _hold(runner, uid, 30)
    r = runner.invoke(args=["credits", "hold", str(uid), "500"])
    assert r.exit_code == 1
    assert "error: insufficient_credits: available 70 (balance 100, 30 held) is less than the requested 500" in r.output
    assert all(f"  {k}: {v}" in r.output for k, v in (("balance", 100), ("held", 30), ("available", 70),
                                                        ("requested", 500)))
    r = runner.invoke(args=["credits", "deduct", str(uid), "71"])  # a debit spends only what holds do not keep
    assert r.exit_code == 1 and "available 70 (balance 100, 30 held)" in r.output
    r = runner.invoke(args=["credits", "capture", str(hold_id), "--amount", "31"])
    assert r.exit_code == 1 and "capture_exceeds_hold" in r.output and "  amount: 30" in r.output
    assert runner.invoke(args=["credits", "release", str(hold_id)]).exit_code == 0
    for action in ("capture", "release"):
        r = runner.invoke(args=["credits", action, str(hold_id)])
        assert r.exit_code == 1 and "hold_not_open" in r.output and "  status: released" in r.output
    r = runner.invoke(args=["credits", "capture", "999"])
    assert r.exit_code == 1 and "hold_not_found" in r.output
    r = runner.invoke(args=["credits", "hold", "999", "1"])
    assert r.exit_code == 1 and "user_not_found" in r.output
    r = runner.invoke(args=["credits", "hold", str(uid), "-5"])
    assert r.exit_code == 1 and "amount must be positive" in r.output
    r = runner.invoke(args=["credits", "hold", str(uid), "5", "--ttl-seconds", "0"])
    assert r.exit_code == 1 and "validation_error: ttl_seconds must be an integer from 1 to" in r.output
    r = runner.invoke(args=["credits", "hold", str(uid), "5", "--idempotency-key", "a,b"])
    assert r.exit_code == 2 and "--idempotency-key" in r.output


def test_keyed_hold_commands_take_effect_once(app, runner):
    uid = _user_with(runner, 100)
    first, lines = _hold(runner, uid, 40, "--idempotency-key", "order-1")
    again, replay = _hold(runner, uid, 40, "--idempotency-key", "order-1")
    assert again == first and replay[:2] == lines and replay[2].startswith("replayed:")
    r = runner.invoke(args=["credits", "hold", str(uid), "41", "--idempotency-key", "order-1"])
    assert r.exit_code == 1 and "idempotency_key_reused" in r.output
    for _ in range(2):
        r = runner.invoke(args=["credits", "capture", str(first), "--amount", "25", "--idempotency-key", "cap-1"])
        assert r.exit_code == 0 and f"user {uid}: 75 credits, 0 held, 75 available" in r.output
    assert "replayed:" in r.output
    hold_id, _ = _hold(runner, uid, 5)
    for _ in range(2):
        r = runner.invoke(args=["credits", "release", str(hold_id), "--reason", "done", "--idempotency-key", "rel-1"])
        assert r.exit_code == 0, r.output
    assert "replayed:" in r.output
    r = runner.invoke(args=["credits", "release", str(hold_id), "--reason", "other", "--idempotency-key", "rel-1"])
    assert r.exit_code == 1 and "idempotency_key_reused" in r.output
    with app.app_context():
        b = ledger.balance(uid)
        assert (b.credits, b.held) == (75, 0)
        assert len(holds.holds_of(uid, limit=10)) == 2


def test_holds_and_show_hold(runner):
    uid = _user_with(runner, 100)
    ids = [_hold(runner, uid, amount)[0] for amount in (1, 2, 3)]
    assert runner.invoke(args=["credits", "release", str(ids[1])]).exit_code == 0
    r = runner.invoke(args=["credits", "holds", str(uid)])
    assert r.exit_code == 0
    assert [int(re.match(r"hold (\d+)", line).group(1)) for line in r.output.splitlines()] == ids[::-1]
    assert f"hold {ids[1]} of user {uid}: released 2 at " in r.output
    r = runner.invoke(args=["credits", "holds", str(uid), "--status", "open", "--limit", "1"])
    assert r.output.startswith(f"hold {ids[2]} ") and len(r.output.splitlines()) == 1
    r = runner.invoke(args=["credits", "holds", str(uid), "--status", "open", "--before", str(ids[2])])
    assert r.output.startswith(f"hold {ids[0]} ") and len(r.output.splitlines()) == 1
    r = runner.invoke(args=["credits", "holds", str(uid), "--status", "captured"])
    assert r.exit_code == 0 and r.output.strip() == f"user {uid} has no holds captured"
    assert runner.invoke(args=["credits", "holds", str(uid), "--status", "lost"]).exit_code == 2
    r = runner.invoke(args=["credits", "holds", "999"])
    assert r.exit_code == 1 and "user_not_found" in r.output
    r = runner.invoke(args=["credits", "show-hold", str(ids[0])])
    assert r.exit_code == 0
    line, created = r.output.splitlines()
    assert line.startswith(f"hold {ids[0]} of user {uid}: open 1 until ")
    assert created.startswith("  created ") and created.endswith(" by cli")
    r = runner.invoke(args=["credits", "show-hold", "999"])
    assert r.exit_code == 1 and "hold_not_found" in r.output
    r = runner.invoke(args=["credits", "show", str(uid)])
    assert r.output.startswith(f"user {uid}: 100 credits, 4 held, 96 available")


def test_expire_holds_records_overdue_holds(app, runner):
    uid = _user_with(runner, 10)
    overdue, _ = _hold(runner, uid, 4, "--ttl-seconds", "1")
    kept, _ = _hold(runner, uid, 3, "--ttl-seconds", "600")
    time.sleep(1.1)
    assert _raw_holds(app, uid) == ({overdue: "open", kept: "open"}, 7)  # overdue, not yet recorded
    r = runner.invoke(args=["credits", "expire-holds"])
    assert r.exit_code == 0 and r.output.strip() == "recorded 1 overdue hold(s) as expired"
    assert _raw_holds(app, uid) == ({overdue: "expired", kept: "open"}, 3)
    assert runner.invoke(args=["credits", "expire-holds"]).output.strip() == "recorded 0 overdue hold(s) as expired"
    r = runner.invoke(args=["credits", "show-hold", str(overdue)])
    assert f"hold {overdue} of user {uid}: expired 4 at " in r.output
    assert runner.invoke(args=["credits", "verify"]).exit_code == 0


def test_verify_reports_holds_that_break_the_rules(app, runner):
    uid = _user_with(runner, 100)
    hold_id, _ = _hold(runner, uid, 30)
    other, _ = _hold(runner, uid, 10)
    with app.app_context(), db.engine.begin() as conn:  # what only plain SQL could do
        conn.execute(text("UPDATE credits SET held = held + 5 WHERE user_id = :u"), {"u": uid})
        conn.execute(text("UPDATE holds SET status = 'captured', captured = 10, closed_at = expires_at "
                          "WHERE id = :h"), {"h": other})
    r = runner.invoke(args=["credits", "verify"])
    assert r.exit_code == 1
    assert f"user {uid}: held 45 != open holds 30" in r.output
    assert f"hold {other}: its capture entry is missing, extra or of another amount" in r.output
    assert f"hold {hold_id}:" not in r.output
    assert "1 user(s) whose held differs from their open holds, 1 hold(s) disagree with their capture entry" in r.output
