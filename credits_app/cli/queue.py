"""`flask queue ...`: the RQ queue the worker serves, seen and mended from a shell."""
import click
from flask.cli import AppGroup

from ..exceptions import DomainError
from . import fail

group = AppGroup("queue", help="The RQ queue: depth, workers, failed jobs, the scheduler's entries.")


def _when(job, at):
    return f"cron {job.meta.get('cron_string')}, next fire {at.isoformat()} UTC"


@group.command("status")
def queue_status():
    """Jobs waiting, running and failed; live workers; the scheduler's entries."""
    from rq import Worker
    from rq_scheduler import Scheduler

    from .. import grants

    try:
        q = grants.queue()
        click.echo(f"queue {q.name}: {q.count} waiting, {q.started_job_registry.count} running, "
                   f"{q.failed_job_registry.count} failed, {q.scheduled_job_registry.count} scheduled retries")
        workers = Worker.all(queue=q)
        click.echo(f"workers: {len(workers)}" + "".join(f"\n  {w.name} {w.get_state()}" for w in workers))
        entries = {job.id: (job, at) for job, at in Scheduler(connection=q.connection).get_jobs(with_times=True)}
        entry = entries.pop(grants.CRON_ENTRY_ID, None)
        click.echo(f"daily grant entry {grants.CRON_ENTRY_ID}: " + (
            _when(*entry) if entry else "NOT REGISTERED (start the scheduler process)"))
        for job, at in entries.values():  # the holds sweep's, and any other
            click.echo(f"entry {job.id}: {_when(job, at)}")
    except DomainError as e:
        fail(e)
    except Exception as e:  # Redis down: say so plainly rather than print a traceback
        fail(f"redis unavailable: {type(e).__name__}: {e}")


@group.command("requeue-failed")
def requeue_failed():
    """Put every failed job back on the queue. Safe: grants never credit a user twice."""
    from .. import grants

    try:
        q = grants.queue()
    except DomainError as e:
        fail(e)
    registry = q.failed_job_registry
    ids = registry.get_job_ids()
    for job_id in ids:
        registry.requeue(job_id)
    click.echo(f"requeued {len(ids)} failed job(s)")
