"""`flask users ...` and `flask credits ...`: the same functions the API calls."""
import sys

import click
from flask.cli import AppGroup

from . import ledger, users
from .claims import CLI_ACTOR
from .exceptions import DomainError

users_cli = AppGroup("users", help="Manage users.")
credits_cli = AppGroup("credits", help="Read and change balances; verify the ledger.")


def _fail(e):
    click.echo(f"error: {e.code}: {e.message}", err=True)
    sys.exit(1)


def _show_change(change):
    e = change.entry
    click.echo(f"user {change.user_id}: {change.credits} credits (entry {e.id}: {e.kind} {e.amount:+d})")


@users_cli.command("create")
@click.option("--email", required=True, help="unique, case-insensitive")
@click.option("--name", required=True)
def create_user(email, name):
    """Create a user with a zero balance."""
    try:
        user = users.create(email, name)
    except DomainError as e:
        _fail(e)
    click.echo(f"created user {user.user_id} <{user.email}>")


@credits_cli.command("show")
@click.argument("user_id", type=int)
def show(user_id):
    """USER_ID's balance."""
    try:
        b = ledger.balance(user_id)
    except DomainError as e:
        _fail(e)
    click.echo(f"user {b.user_id}: {b.credits} credits (last updated {b.last_updated})")


def _change_command(name, fn, help):
    # A negative AMOUNT is read as a number, so the ledger refuses it with its own message
    # instead of click calling it an unknown option.
    @credits_cli.command(name, help=help, context_settings={"ignore_unknown_options": True})
    @click.argument("user_id", type=int)
    @click.argument("amount", type=int)
    @click.option("--reason", help="recorded on the ledger entry")
    def command(user_id, amount, reason):
        try:
            _show_change(fn(user_id, amount, actor=CLI_ACTOR, reason=reason))
        except DomainError as e:
            _fail(e)
    return command


_change_command("add", ledger.add, "Add AMOUNT credits to USER_ID's balance.")
_change_command("deduct", ledger.deduct, "Deduct AMOUNT credits from USER_ID's balance; refused if it would go "
                                         "below zero.")


@credits_cli.command("reset")
@click.argument("user_id", type=int)
@click.option("--reason")
def reset(user_id, reason):
    """Set USER_ID's balance to zero."""
    try:
        _show_change(ledger.reset(user_id, actor=CLI_ACTOR, reason=reason))
    except DomainError as e:
        _fail(e)


@credits_cli.command("purge-keys")
def purge_keys():
    """Delete Idempotency-Key records older than IDEMPOTENCY_TTL_HOURS (the worker does this
    daily; a purged key that took effect is still never applied twice)."""
    click.echo(f"purged {ledger.purge_idempotency_keys()} idempotency key record(s)")


@credits_cli.command("verify")
def verify():
    """Recompute every balance from the ledger; exit 1 listing users that drift."""
    drift = ledger.verify()
    for user_id, stored, ledger_sum in drift:
        click.echo(f"user {user_id}: stored {stored} != ledger sum {ledger_sum}")
    if drift:
        click.echo(f"{len(drift)} user(s) drift from the ledger", err=True)
        sys.exit(1)
    click.echo("ledger verified: every balance equals the sum of its entries")


def init_app(app):
    app.cli.add_command(users_cli)
    app.cli.add_command(credits_cli)
    app.cli.add_command(queue_cli)


# --- the daily grant ----------------------------------------------------------------------

def _show_run(run):
    finished = run.finished_at.isoformat() if run.finished_at else "-"
    covers = "-" if run.max_user_id is None else run.max_user_id
    click.echo(f"{run.grant_date}  {run.status:<7}  +{run.amount}  users {run.users_credited}  "
               f"chunks {run.chunks_done}/{run.chunks_total}  ids <= {covers}  started {run.started_at.isoformat()}  "
               f"finished {finished}" + ("" if run.scheduled else "  (by hand)"))
    if run.last_error:
        click.echo(f"    last error: {run.last_error}")


@credits_cli.command("grant-daily")
@click.option("--date", "day", help="UTC date YYYY-MM-DD (default: today in UTC); today or within "
                                    "DAILY_GRANT_CATCHUP_DAYS before it.")
def grant_daily(day):
    """Run or complete a date's daily grant here, without the worker. Idempotent."""
    from . import grants

    try:
        grant_date = grants.check_requested_date(day) if day else grants.utc_today()
        before = grants.get_run(grant_date)
        if before is not None and before.status == "done":
            click.echo(f"{grant_date} was already granted; nothing to do (each user takes a date's grant once)")
            _show_run(before)
            return
        run = grants.run_date(grant_date)
    except DomainError as e:
        _fail(e)
    _show_run(run)


@credits_cli.command("grant-status")
@click.option("--limit", default=14, show_default=True, type=click.IntRange(1, 366))
def grant_status(limit):
    """Recent daily-grant runs, newest first."""
    from . import grants

    runs = grants.recent_runs(limit)
    if not runs:
        click.echo("no daily-grant runs yet")
    for run in runs:
        _show_run(run)


# --- what an operator needs at 3 a.m. -------------------------------------------------------

@users_cli.command("show")
@click.argument("user_id", type=int)
def show_user(user_id):
    """A user, with its balance."""
    try:
        user, b = users.get(user_id), ledger.balance(user_id)
    except DomainError as e:
        _fail(e)
    click.echo(f"user {user.user_id} <{user.email}> {user.name!r}: {b.credits} credits, created {user.created_at}")
    for key, value in sorted(user.attributes.items()):
        click.echo(f"  {key} = {value!r}")


@users_cli.command("list")
@click.option("--email", help="exact email, case-insensitive")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
def list_users(email, limit):
    """Users by ascending id."""
    for user in users.find(email=email, limit=limit):
        click.echo(f"{user.user_id}\t{user.email}\t{user.name}")


queue_cli = AppGroup("queue", help="The RQ queue: depth, workers, failed jobs, the daily-grant schedule.")


@queue_cli.command("status")
def queue_status():
    """Jobs waiting, running and failed; live workers; the scheduled daily grant."""
    from rq import Worker
    from rq_scheduler import Scheduler

    from . import grants

    try:
        q = grants.queue()
        click.echo(f"queue {q.name}: {q.count} waiting, {q.started_job_registry.count} running, "
                   f"{q.failed_job_registry.count} failed, {q.scheduled_job_registry.count} scheduled retries")
        workers = Worker.all(queue=q)
        click.echo(f"workers: {len(workers)}" + "".join(f"\n  {w.name} {w.get_state()}" for w in workers))
        entry = next(((job, at) for job, at in Scheduler(connection=q.connection).get_jobs(with_times=True)
                      if job.id == grants.CRON_ENTRY_ID), None)
        click.echo(f"daily grant entry {grants.CRON_ENTRY_ID}: " + (
            f"cron {entry[0].meta.get('cron_string')}, next fire {entry[1].isoformat()} UTC" if entry
            else "NOT REGISTERED (start the scheduler process)"))
    except DomainError as e:
        _fail(e)
    except Exception as e:  # Redis down: say so plainly rather than print a traceback
        click.echo(f"error: redis unavailable: {type(e).__name__}: {e}", err=True)
        sys.exit(1)


@queue_cli.command("requeue-failed")
def requeue_failed():
    """Put every failed job back on the queue. Safe: grants never credit a user twice."""
    from . import grants

    try:
        q = grants.queue()
    except DomainError as e:
        _fail(e)
    registry = q.failed_job_registry
    ids = registry.get_job_ids()
    for job_id in ids:
        registry.requeue(job_id)
    click.echo(f"requeued {len(ids)} failed job(s)")

