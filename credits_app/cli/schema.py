"""`flask schema ...`: apply a file, list the history, replay another database's history.
The commands call schema_updates, which holds every rule."""
import json

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import create_engine

from ..auth.claims import CLI_ACTOR
from ..config import database_url
from ..exceptions import DomainError
from ..schema_updates import apply, history, recorded
from . import fail

group = AppGroup("schema", help="External schema updates (PostgreSQL): apply, history, replay.")


def _fail(e):
    fail(e, details=("statement", "database_message", "position", "reason"))


def _echo_result(result):
    click.echo(f"{result['status']}: {result['name']} ({result['statements']} statements, "
               f"{result['duration_ms']} ms)")
    for effect in result["effects"]:
        click.echo(f"  + {effect}")


@group.command("apply")
@click.argument("file", type=click.File("r"))
@click.option("--name", help="Stable name; default: derived from the SQL's checksum.")
@click.option("--dry-run", is_flag=True, help="Run it and roll back, reporting what would change.")
def apply_command(file, name, dry_run):
    """Apply the SQL in FILE (additive DDL only) as one audited transaction (PostgreSQL)."""
    try:
        _echo_result(apply(file.read(), actor=CLI_ACTOR, name=name, dry_run=dry_run))
    except DomainError as e:
        _fail(e)


@group.command("history")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the input `flask schema replay` takes).")
def history_command(as_json):
    """Every recorded schema update, applied and failed, oldest first."""
    changes = []
    after = None
    while True:
        batch = history(after_id=after, limit=500)
        changes += batch
        if len(batch) < 500:
            break
        after = batch[-1]["id"]
    if as_json:
        click.echo(json.dumps(changes, default=str, indent=2))
        return
    for c in changes:
        click.echo(f"{c['id']:>5} {c['applied_at']:%Y-%m-%dT%H:%M:%SZ} {c['outcome']:<8} {c['name']} "
                   f"by {c['actor']} ({c['duration_ms']} ms)")


@group.command("replay")
@click.argument("source")
@click.option("--dry-run", is_flag=True)
def replay_command(source, dry_run):
    """Re-apply the changes applied on SOURCE, in order, to this app's database. SOURCE is a
    PostgreSQL URL or a JSON file from `flask schema history --json`. Changes already applied
    here are skipped (same name, same SQL), so a replay can be resumed."""
    changes = [c for c in _load_source(source) if c["outcome"] == "applied"]
    for c in sorted(changes, key=lambda c: c["id"]):
        try:
            _echo_result(apply(c["sql"], actor=CLI_ACTOR, name=c["name"], dry_run=dry_run))
        except DomainError as e:
            _fail(e)
    click.echo(f"replayed {len(changes)} changes")


def _load_source(source):
    if "://" not in source:
        try:
            with open(source) as f:
                changes = json.load(f)
            if not (isinstance(changes, list) and all(isinstance(c, dict) and {"id", "name", "sql", "outcome"} <= set(c)
                                                      for c in changes)):
                raise ValueError("not a list of changes")
        except (OSError, ValueError) as e:
            raise click.ClickException(
                f"{source}: not a history file ({e}). SOURCE is a PostgreSQL URL or the output of "
                "`flask schema history --json`; to apply a .sql file use `flask schema apply FILE`") from None
        return changes
    engine = create_engine(database_url(source, current_app.instance_path))
    try:
        with engine.connect() as conn:
            return recorded(conn)
    finally:
        engine.dispose()
