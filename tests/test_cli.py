"""`flask users` and `flask credits` call the same functions as the API."""
from sqlalchemy import text

from credits_app.extensions import db


def test_cli_flow_and_verify(app, runner):
    r = runner.invoke(args=["users", "create", "--email", "cli@example.com", "--name", "Cli"])
    assert r.exit_code == 0 and "created user 1" in r.output
    assert "10 credits" in runner.invoke(args=["credits", "add", "1", "10", "--reason", "bonus"]).output
    r = runner.invoke(args=["credits", "deduct", "1", "50"])
    assert r.exit_code == 1 and "insufficient_credits" in r.output
    assert "6 credits" in runner.invoke(args=["credits", "deduct", "1", "4"]).output
    assert "0 credits" in runner.invoke(args=["credits", "reset", "1"]).output
    assert "0 credits" in runner.invoke(args=["credits", "show", "1"]).output
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
    Queue("credits", connection=Redis.from_url(redis_url)).enqueue("worker.jobs.catch_up")
    r = runner.invoke(args=["queue", "status"])
    assert "1 waiting" in r.output and "cron 0 0 * * *" in r.output and "T00:00:00 UTC" in r.output
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
