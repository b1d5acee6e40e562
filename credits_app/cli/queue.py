"""`flask queue ...`: the RQ queues the workers serve, seen and mended from a shell, through
credits_app.queues (as /api/queues)."""
import click
from flask.cli import AppGroup

from .. import grants, queues
from ..exceptions import DomainError
from . import fail

group = AppGroup("queue", help="The RQ queues: depth, workers, failed jobs, the scheduler's entries.")


def _when(entry):
    return f"cron {entry['cron']}, next fire {entry['next_run_at']:%Y-%m-%dT%H:%M:%S} UTC"


def _unavailable(e):
    """Redis down: say so plainly rather than print a traceback."""
    cause = e.__cause__
    fail(f"redis unavailable: {type(cause).__name__}: {cause}" if cause else f"redis unavailable: {e.message}")


@group.command("status")
def queue_status():
    """Jobs waiting, running and failed; live workers; the scheduler's entries."""
    try:
        seen = queues.overview()
    except grants.RedisUnavailable as e:
        _unavailable(e)
    except DomainError as e:
        fail(e)
    for q in seen["queues"]:
        click.echo(f"queue {q['name']}: {q['waiting']} waiting, {q['running']} running, {q['failed']} failed, "
                   f"{q['scheduled']} scheduled retries ({q['purpose']})")
    workers = seen["workers"]
    click.echo(f"workers: {len(workers)}" + "".join(f"\n  {w['name']} {w['state']} {','.join(w['queues'])}"
                                                    for w in workers))
    entries = {entry["id"]: entry for entry in seen["schedule"]}
    entry = entries.pop(grants.CRON_ENTRY_ID, None)
    click.echo(f"daily grant entry {grants.CRON_ENTRY_ID}: " + (
        _when(entry) if entry else "NOT REGISTERED (start the scheduler process)"))
    for entry in entries.values():  # the holds sweep's, the webhooks', and any other
        when = _when(entry) if entry["cron"] else f"once, at {entry['next_run_at']:%Y-%m-%dT%H:%M:%S} UTC"
        click.echo(f"entry {entry['id']}: {when}")


@group.command("requeue-failed")
@click.option("--queue", "name", help="only this queue (default: every configured queue)")
def requeue_failed(name):
    """Put failed jobs back on their queue. Safe: grants never credit a user twice, and a
    webhook delivery is claimed under a lease."""
    try:
        count = sum(queues.requeue_all(n) for n in ([name] if name else queues.names()))
    except grants.RedisUnavailable as e:
        _unavailable(e)
    except DomainError as e:
        fail(e)
    click.echo(f"requeued {count} failed job(s)")
