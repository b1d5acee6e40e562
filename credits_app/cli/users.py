"""`flask users ...`: the same functions the API calls."""
import click
from flask.cli import AppGroup

from .. import ledger, users
from ..exceptions import DomainError
from . import fail

group = AppGroup("users", help="Manage users.")


@group.command("create")
@click.option("--email", required=True, help="unique, case-insensitive")
@click.option("--name", required=True)
def create_user(email, name):
    """Create a user with a zero balance."""
    try:
        user = users.create(email, name)
    except DomainError as e:
        fail(e)
    click.echo(f"created user {user.user_id} <{user.email}>")


@group.command("show")
@click.argument("user_id", type=int)
def show_user(user_id):
    """A user, with its balance."""
    try:
        user, b = users.get(user_id), ledger.balance(user_id)
    except DomainError as e:
        fail(e)
    click.echo(f"user {user.user_id} <{user.email}> {user.name!r}: {b.credits} credits, created {user.created_at}")
    for key, value in sorted(user.attributes.items()):
        click.echo(f"  {key} = {value!r}")


@group.command("list")
@click.option("--email", help="exact email, case-insensitive")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
def list_users(email, limit):
    """Users by ascending id."""
    for user in users.find(email=email, limit=limit):
        click.echo(f"{user.user_id}\t{user.email}\t{user.name}")
