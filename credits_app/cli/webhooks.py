"""`flask webhooks ...`: endpoints, deliveries, retry and replay from a shell, through the
functions the API calls (credits_app/webhooks)."""
from datetime import datetime, timezone

import click
from flask.cli import AppGroup

from ..auth.claims import CLI_ACTOR
from ..exceptions import DomainError
from ..models import EVENT_TYPES
from ..webhooks import deliveries, endpoints
from . import fail

group = AppGroup("webhooks", help="Webhook endpoints and deliveries.")
_DETAILS = ("fields", "earliest", "event_types", "allowed")
_type_option = click.option("--type", "event_types", multiple=True, type=click.Choice(EVENT_TYPES),
                            help="an event type (repeat for more)")


def _instant(ctx, param, value):
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("an RFC 3339 instant such as 2026-11-30T12:00:00Z") from None
    if at.tzinfo is None:
        raise click.BadParameter("give the offset: Z for UTC, or +hh:mm")
    return at.astimezone(timezone.utc)


def _endpoint_lines(e):
    state = "enabled" if e["enabled"] else "disabled"
    yield f"endpoint {e['endpoint_id']} ({state}): {e['url']}"
    yield f"  types: {', '.join(e['event_types'])}"
    if e["description"]:
        yield f"  description: {e['description']}"
    if e["previous_secret_until"]:
        yield f"  previous secret signs until {e['previous_secret_until']}"
    yield f"  created {e['created_at']} by {e['created_by']}, updated {e['updated_at']}"


def _show_endpoint(e):
    for line in _endpoint_lines(e):
        click.echo(line)
    if "secret" in e:
        click.echo(f"secret (shown this once): {e['secret']}")


def _show_delivery(d):
    code = f", last answer {d['last_status_code']}" if d["last_status_code"] is not None else ""
    error = f", last error: {d['last_error']}" if d["last_error"] else ""
    click.echo(f"delivery {d['delivery_id']} to endpoint {d['endpoint_id']}: {d['event_type']} {d['event_id']} "
               f"{d['status']}, {d['attempts']} attempt(s){code}{error}; next {d['next_attempt_at']}")


def _call(function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except DomainError as e:
        fail(e, details=_DETAILS)


@group.command("create")
@click.argument("url")
@_type_option
@click.option("--description")
@click.option("--disabled", is_flag=True, help="create it disabled (no deliveries until enabled)")
def create(url, event_types, description, disabled):
    """Create an endpoint at URL for the --type events; prints its secret, this once."""
    if not event_types:
        raise click.UsageError("give at least one --type")
    _show_endpoint(_call(endpoints.create, url, list(event_types), actor=CLI_ACTOR, description=description,
                         enabled=not disabled))


@group.command("list")
def list_endpoints():
    """Every endpoint, oldest first (no secrets)."""
    found = endpoints.list_endpoints()
    if not found:
        click.echo("no webhook endpoints")
    for e in found:
        _show_endpoint(e)


@group.command("show")
@click.argument("endpoint_id", type=int)
def show(endpoint_id):
    """One endpoint (no secret)."""
    _show_endpoint(_call(endpoints.get, endpoint_id))


@group.command("update")
@click.argument("endpoint_id", type=int)
@click.option("--url")
@_type_option
@click.option("--description", help="'' empties it")
@click.option("--enable/--disable", "enabled", default=None)
def update(endpoint_id, url, event_types, description, enabled):
    """Change an endpoint: --type replaces its event types."""
    changes = {"url": url, "event_types": list(event_types) or None, "enabled": enabled}
    changes = {k: v for k, v in changes.items() if v is not None}
    if description is not None:
        changes["description"] = description or None
    _show_endpoint(_call(endpoints.update, endpoint_id, **changes))


@group.command("delete")
@click.argument("endpoint_id", type=int)
def delete(endpoint_id):
    """Delete an endpoint with its deliveries."""
    _call(endpoints.delete, endpoint_id)
    click.echo(f"deleted endpoint {endpoint_id}")


@group.command("rotate-secret")
@click.argument("endpoint_id", type=int)
@click.option("--overlap-seconds", type=int, help="how long the current secret keeps signing too (default "
                                                   "WEBHOOKS_SECRET_OVERLAP_SECONDS)")
def rotate_secret(endpoint_id, overlap_seconds):
    """A new secret for an endpoint; prints it, this once."""
    _show_endpoint(_call(endpoints.rotate_secret, endpoint_id, overlap_seconds=overlap_seconds))


@group.command("deliveries")
@click.option("--endpoint", "endpoint_id", type=click.IntRange(1))
@click.option("--status", type=click.Choice(deliveries.STATUSES))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 200))
@click.option("--before", type=click.IntRange(1), help="only deliveries older than this id (the next page)")
def list_deliveries(endpoint_id, status, limit, before):
    """Deliveries, newest first."""
    found = _call(deliveries.deliveries, endpoint_id=endpoint_id, status=status, limit=limit, before=before)
    if not found:
        click.echo("no deliveries")
    for d in found:
        _show_delivery(d)


@group.command("retry")
@click.argument("delivery_id", type=int)
def retry(delivery_id):
    """Send a dead (or pending) delivery again now, its attempts counted from zero."""
    _show_delivery(_call(deliveries.retry, delivery_id))


@group.command("replay")
@click.argument("endpoint_id", type=int)
@click.option("--since", required=True, callback=_instant, help="RFC 3339 instant, within EVENTS_RETENTION_DAYS")
@_type_option
def replay(endpoint_id, since, event_types):
    """Send an endpoint's events at or after --since again (only the --type ones, if given)."""
    done = _call(deliveries.replay, endpoint_id, since, types=list(event_types) or None)
    click.echo(f"queued {done['queued']} deliveries to endpoint {endpoint_id} ({', '.join(done['event_types'])}) "
               f"since {done['since']}")
