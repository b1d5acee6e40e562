"""`flask auth ...`: issue, revoke and purge API tokens, through the same functions the
token API calls."""
import re

import click
from flask.cli import AppGroup

from . import fail
from ..auth.claims import CLI_ACTOR
from ..auth.roles import ROLES
from ..auth.tokens import MAX_EXPIRES_AT, issue, purge_revocations, revoke
from ..exceptions import InvalidRequest

group = AppGroup("auth", help="Issue and revoke API tokens.")
_TTL = re.compile(r"^(\d+)([smhd]?)$")


def parse_ttl(value):
    match = _TTL.match(value.strip())
    if not match:
        raise click.BadParameter("use a number with s, m, h or d, e.g. 1h or 30d")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


@group.command("issue-token")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--sub", required=True, help="the subject, recorded as the actor of every change")
@click.option("--user-id", type=int, help="for role user: the user it may read")
@click.option("--ttl", default="1h", show_default=True, help="lifetime, e.g. 15m, 1h, 30d")
def issue_token_command(role, sub, user_id, ttl):
    """Print a signed access token (the jti goes to stderr, for revocation)."""
    try:
        token, claims = issue(role, sub, user_id=user_id, ttl_seconds=parse_ttl(ttl))
    except InvalidRequest as e:
        option = {"role": "--role", "sub": "--sub", "user_id": "--user-id", "ttl_seconds": "--ttl"}
        fields = list(e.details.get("fields", ()))
        fail(f"{option[fields[0]] + ': ' if fields else ''}{e.message}")
    click.echo(token)
    click.echo(f"jti={claims['jti']} role={role} sub={sub} expires={claims['exp']}", err=True)


@group.command("revoke")
@click.argument("jti")
@click.option("--reason")
@click.option("--expires-at", type=click.IntRange(0, MAX_EXPIRES_AT),
              help="the token's exp (unix time, as issue-token prints it): the revocation is purged once the "
                   "token has expired")
def revoke_command(jti, reason, expires_at):
    """Revoke a token by its jti."""
    try:
        fresh = revoke(jti, actor=CLI_ACTOR, reason=reason, expires_at=expires_at)
    except InvalidRequest as e:
        fail(e.message)
    click.echo(f"revoked {jti}" if fresh else f"{jti} was already revoked")


@group.command("purge-revocations")
def purge_revocations_command():
    """Delete revocations of tokens that have expired (the worker does this daily)."""
    click.echo(f"purged {purge_revocations()} revocation(s) of expired tokens")
