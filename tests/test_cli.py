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
