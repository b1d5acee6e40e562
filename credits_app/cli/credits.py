"""`flask credits ...`: balances, the ledger and the daily grant, through the same functions
the API and the worker call; the hold commands are in holds.py."""
import click
from flask.cli import AppGroup

from .. import ledger
from ..auth.claims import CLI_ACTOR
from ..exceptions import DomainError
from . import fail, holds

group = AppGroup("credits", help="Read and change balances and holds; verify the ledger.")
for command in holds.COMMANDS:
    group.add_command(command)


def _show_change(change):
    e = change.entry
    click.echo(f"user {change.user_id}: {change.credits} credits (entry {e.id}: {e.kind} {e.amount:+d})")


class InstantParam(click.ParamType):
    """An RFC 3339 instant, read as the API reads one (api.schemas.Instant)."""

    name = "instant"

    def convert(self, value, param, ctx):
        from marshmallow import ValidationError

        from ..api.schemas import Instant
        try:
            return Instant().deserialize(value)
        except ValidationError as e:
            self.fail(f"{value!r}: {' '.join(e.messages)}", param, ctx)


@group.command("show")
@click.argument("user_id", type=int)
@click.option("--as-of", "at", type=InstantParam(), help="the balance at this RFC 3339 instant instead of now")
def show(user_id, at):
    """USER_ID's balance, now or at an instant."""
    try:
        if at is not None:
            credits, last_updated = ledger.as_of(user_id, at)
            click.echo(f"user {user_id}: {credits} credits as of {at.isoformat()} (last entry {last_updated})")
            return
        b = ledger.balance(user_id)
    except DomainError as e:
        fail(e)
    click.echo(f"user {b.user_id}: {b.credits} credits, {b.held} held, {b.available} available "
               f"(last updated {b.last_updated})")


def _change_command(name, fn, help):
    # A negative AMOUNT is read as a number, so the ledger refuses it with its own message
    # instead of click calling it an unknown option.
    @group.command(name, help=help, context_settings={"ignore_unknown_options": True})
    @click.argument("user_id", type=int)
    @click.argument("amount", type=int)
    @click.option("--reason", help="recorded on the ledger entry")
    def command(user_id, amount, reason):
        try:
            _show_change(fn(user_id, amount, actor=CLI_ACTOR, reason=reason))
        except DomainError as e:
            fail(e)
    return command


_change_command("add", ledger.add, "Add AMOUNT credits to USER_ID's balance.")
_change_command("deduct", ledger.deduct, "Deduct AMOUNT credits from USER_ID's balance; refused if it would go "
                                         "below zero.")


@group.command("reset")
@click.argument("user_id", type=int)
@click.option("--reason")
def reset(user_id, reason):
    """Set USER_ID's balance to zero."""
    try:
        _show_change(ledger.reset(user_id, actor=CLI_ACTOR, reason=reason))
    except DomainError as e:
        fail(e)


@group.command("reverse")
@click.argument("user_id", type=int)
@click.argument("entry_id", type=int)
@click.argument("amount", type=int, required=False)
@click.option("--reason", required=True, help="recorded on the reversal entry")
def reverse(user_id, entry_id, amount, reason):
    """Reverse ENTRY_ID of USER_ID: AMOUNT of it, or all that remains."""
    try:
        _show_change(ledger.reverse(user_id, entry_id, amount, actor=CLI_ACTOR, reason=reason))
    except DomainError as e:
        fail(e, details=("remaining", "requested", "balance"))


@group.command("alerts")
@click.argument("user_id", type=int)
@click.option("--threshold", type=click.IntRange(0), help="the user's own low-balance threshold (0: off)")
@click.option("--default", "use_default", is_flag=True, help="use LOW_BALANCE_THRESHOLD again")
def alerts(user_id, threshold, use_default):
    """Show USER_ID's low-balance alert settings, or set their threshold."""
    if threshold is not None and use_default:
        raise click.UsageError("give --threshold or --default, not both")
    try:
        if threshold is None and not use_default:
            current = ledger.alerts.settings(user_id)
        else:
            current = ledger.alerts.set_threshold(user_id, threshold)
    except DomainError as e:
        fail(e)
    own = current["low_balance_threshold"]
    click.echo(f"user {user_id}: threshold {current['threshold']} ({'own' if own is not None else 'the default'}), "
               f"state {current['alert_state'] or 'none'}, available {current['available']}")


@group.command("purge-keys")
def purge_keys():
    """Delete Idempotency-Key records older than IDEMPOTENCY_TTL_HOURS (the worker does this
    daily; a purged key that took effect is still never applied twice)."""
    click.echo(f"purged {ledger.purge_idempotency_keys()} idempotency key record(s)")


@group.command("verify")
def verify():
    """Recompute every balance from the ledger, check every reversal and every hold; exit 1
    listing what breaks the rules."""
    drift, over = ledger.verify(), ledger.over_reversed()
    held, captures = ledger.holds.verify_holds()
    for user_id, stored, ledger_sum in drift:
        click.echo(f"user {user_id}: stored {stored} != ledger sum {ledger_sum}")
    for entry_id, user_id, amount, reversed_ in over:
        click.echo(f"entry {entry_id} of user {user_id}: amount {amount}, reversed {reversed_}")
    for user_id, stored, open_total in held:
        click.echo(f"user {user_id}: held {stored} != open holds {open_total}")
    for hold_id in captures:
        click.echo(f"hold {hold_id}: its capture entry is missing, extra or of another amount")
    problems = [f"{len(drift)} user(s) drift from the ledger", f"{len(over)} entr(ies) reversed past their amount",
                f"{len(held)} user(s) whose held differs from their open holds",
                f"{len(captures)} hold(s) disagree with their capture entry"]
    if drift or over or held or captures:
        fail(", ".join(problems))
    click.echo("ledger verified: every balance equals the sum of its entries, no entry is reversed past its amount, "
               "every held sum equals the user's open holds, every captured hold has its one entry")


@group.command("export")
@click.option("--since", type=InstantParam(), help="only entries after this instant, e.g. 2026-11-01T00:00:00Z")
@click.option("--until", type=InstantParam(), help="only entries at or before this instant")
@click.option("--user-id", type=click.IntRange(1), help="one user's entries only")
@click.option("--format", "fmt", type=click.Choice(["csv", "ndjson"]), default="csv", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="a file (default: stdout)")
def export(since, until, user_id, fmt, output):
    """The ledger's entries in (since, until], in time order, as GET /api/ledger/export
    writes them; streamed, so any size fits in constant memory."""
    try:
        chunks = ledger.export(fmt, since=since, until=until, user_id=user_id)
    except DomainError as e:
        fail(e)
    with click.open_file(output or "-", "w", encoding="utf-8", lazy=False) as out:
        for chunk in chunks:
            out.write(chunk)


# --- the daily grant ----------------------------------------------------------------------

def _show_run(run):
    finished = run.finished_at.isoformat() if run.finished_at else "-"
    covers = "-" if run.max_user_id is None else run.max_user_id
    click.echo(f"{run.grant_date}  {run.status:<7}  +{run.amount}  users {run.users_credited}  "
               f"chunks {run.chunks_done}/{run.chunks_total}  ids <= {covers}  started {run.started_at.isoformat()}  "
               f"finished {finished}" + ("" if run.scheduled else "  (by hand)"))
    if run.last_error:
        click.echo(f"    last error: {run.last_error}")


@group.command("grant-daily")
@click.option("--date", "day", help="UTC date YYYY-MM-DD (default: today in UTC); today or within "
                                    "DAILY_GRANT_CATCHUP_DAYS before it.")
def grant_daily(day):
    """Run or complete a date's daily grant here, without the worker. Idempotent."""
    from .. import grants

    try:
        grant_date = grants.check_requested_date(day) if day else grants.utc_today()
        before = grants.get_run(grant_date)
        if before is not None and before.status == "done":
            click.echo(f"{grant_date} was already granted; nothing to do (each user takes a date's grant once)")
            _show_run(before)
            return
        run = grants.run_date(grant_date)
    except DomainError as e:
        fail(e)
    _show_run(run)


@group.command("grant-status")
@click.option("--limit", default=14, show_default=True, type=click.IntRange(1, 366))
def grant_status(limit):
    """Recent daily-grant runs, newest first."""
    from .. import grants

    runs = grants.recent_runs(limit)
    if not runs:
        click.echo("no daily-grant runs yet")
    for run in runs:
        _show_run(run)
