"""`flask credits hold|capture|release|show-hold|holds|expire-holds`: holds from a shell,
through the functions the API and the worker call (credits_app/ledger/holds.py). The
commands belong to the `credits` group, which registers COMMANDS."""
import click
from flask.cli import with_appcontext

from ..auth.claims import CLI_ACTOR
from ..exceptions import DomainError
from ..ledger import holds, rules
from . import fail

# What a refusal's details add to its message on stderr.
_DETAILS = ("balance", "held", "available", "requested", "amount", "status")


def _command(name, **settings):
    """A command for the `credits` group, run in the app context as AppGroup.command's are."""
    return lambda f: click.command(name, **settings)(with_appcontext(f))


def _key(ctx, param, value):
    if value is not None and not rules.IDEMPOTENCY_KEY.match(value):
        raise click.BadParameter("one key of 1-255 visible ASCII characters other than a comma")
    return value


_key_option = click.option("--idempotency-key", "key", callback=_key,
                          help="take effect once: the same key again answers as the first time")


def _hold_line(hold):
    status = hold["status"]
    if status == "open":
        what = f"{hold['amount']} until {hold['expires_at']}"
    elif status == "captured":
        what = f"{hold['captured']} of {hold['amount']} at {hold['closed_at']}, entry {hold['entry_id']}"
    else:  # released, or expired (recorded or not yet)
        what = f"{hold['amount']} at {hold['closed_at'] or hold['expires_at']}"
    reason = f"; reason: {hold['reason']}" if hold["reason"] else ""
    if hold["close_reason"]:
        reason += f"; release reason: {hold['close_reason']}"
    return f"hold {hold['hold_id']} of user {hold['user_id']}: {status} {what}{reason}"


def _show_answer(answer):
    body = answer.body
    click.echo(_hold_line(body["hold"]))
    entry = body.get("entry")
    click.echo(f"user {body['user_id']}: {body['credits']} credits, {body['held']} held, {body['available']} available"
               + (f" (entry {entry['id']}: {entry['kind']} {entry['amount']:+d})" if entry else ""))
    if answer.replayed:
        click.echo("replayed: the answer first given for this key; nothing changed")


def _run(operation, *args, **kwargs):
    try:
        _show_answer(operation(*args, actor=CLI_ACTOR, **kwargs))
    except DomainError as e:
        fail(e, details=_DETAILS)


# A negative AMOUNT is read as a number, so the ledger refuses it with its own message.
@_command("hold", context_settings={"ignore_unknown_options": True})
@click.argument("user_id", type=int)
@click.argument("amount", type=int)
@click.option("--ttl-seconds", type=int, help="how long the hold lasts (default HOLD_DEFAULT_TTL_SECONDS, at most "
                                              "HOLD_MAX_TTL_SECONDS)")
@click.option("--reason", help="recorded on the hold, and on its capture's entry unless the capture gives one")
@_key_option
def hold(user_id, amount, ttl_seconds, reason, key):
    """Hold AMOUNT of USER_ID's available credits for a later capture."""
    _run(holds.create, user_id, amount, ttl_seconds=ttl_seconds, reason=reason, idempotency_key=key)


@_command("capture")
@click.argument("hold_id", type=int)
@click.option("--amount", type=int, help="capture this much (default: all of it); the rest is released")
@click.option("--reason", help="recorded on the capture entry (default: the hold's)")
@_key_option
def capture(hold_id, amount, reason, key):
    """Capture an open hold: a ledger entry of kind capture takes it from the balance."""
    _run(holds.capture, hold_id, amount, reason=reason, idempotency_key=key)


@_command("release")
@click.argument("hold_id", type=int)
@click.option("--reason", help="recorded on the hold (close_reason)")
@_key_option
def release(hold_id, reason, key):
    """Release an open hold: what it kept is available again."""
    _run(holds.release, hold_id, reason=reason, idempotency_key=key)


@_command("show-hold")
@click.argument("hold_id", type=int)
def show_hold(hold_id):
    """One hold, with its status now (an open hold past its time is expired)."""
    try:
        found = holds.get(hold_id)
    except DomainError as e:
        fail(e)
    click.echo(_hold_line(found))
    key = f", idempotency key {found['idempotency_key']}" if found["idempotency_key"] else ""
    click.echo(f"  created {found['created_at']} by {found['actor']}{key}")


@_command("holds")
@click.argument("user_id", type=int)
@click.option("--status", type=click.Choice(holds.STATUSES), help="only holds whose status is now this")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 200))
@click.option("--before", type=click.IntRange(1), help="only holds older than this hold id (the next page)")
def list_holds(user_id, status, limit, before):
    """USER_ID's holds, newest first."""
    try:
        found = holds.holds_of(user_id, status=status, limit=limit, before=before)
    except DomainError as e:
        fail(e)
    if not found:
        click.echo(f"user {user_id} has no holds" + (f" {status}" if status else ""))
    for h in found:
        click.echo(_hold_line(h))


@_command("expire-holds")
def expire_holds():
    """Record every open hold past its time as expired, as the worker's sweep does (no read
    counts such a hold even before)."""
    click.echo(f"recorded {holds.sweep()} overdue hold(s) as expired")


COMMANDS = (hold, capture, release, show_hold, list_holds, expire_holds)
