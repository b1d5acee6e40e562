"""The `flask` commands (found through wsgi.py): every command group is registered here, and
each command calls the same functions the API and the worker call."""
import sys

import click


def fail(error, details=()):
    """Report a failed command on stderr and exit 1. `error` is a message, or a DomainError
    shown as `code: message` with the listed keys of its details below it."""
    if isinstance(error, str):
        click.echo(f"error: {error}", err=True)
    else:
        click.echo(f"error: {error.code}: {error.message}", err=True)
        for key in details:
            if error.details.get(key) is not None:
                click.echo(f"  {key}: {error.details[key]}", err=True)
    sys.exit(1)


def init_app(app):
    from . import auth, credits, queue, schema, users, webhooks

    for module in (users, credits, queue, auth, schema, webhooks):
        app.cli.add_command(module.group)
