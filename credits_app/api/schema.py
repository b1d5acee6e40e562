"""/api/schema: external schema updates (admin). Thin: parse, call schema_updates, render."""
from flask import request

from .. import schema_updates
from ..auth.access import authenticate, current_actor, require
from ..exceptions import DomainError, MalformedJSON
from ..web.json_body import parse_json_body
from .common import Blueprint, decode_cursor, page
from .schemas import ErrorOut, LiveSchemaOut, PageArgs, SchemaApplyIn, SchemaApplyOut, SchemaChangePage

blp = Blueprint("schema", __name__, url_prefix="/api/schema",
                description="External schema updates: additive DDL, audited and idempotent (PostgreSQL)")


class TokenInBody(DomainError):
    status, code = 400, "token_in_body"

    def __init__(self):
        super().__init__("the body's `token` field is no longer read: send the token as a header, "
                         "Authorization: Bearer <jwt>")


def _seed_token_in_body():
    """Seed-era clients put their token in the body. Answer them before authentication does,
    or they would only ever see a 401 for a missing header and not learn why."""
    req = request._get_current_object()  # behind the proxy, once (docs/stock.md, 5)
    if req.method == "POST" and req.path == "/api/schema/apply" and req.is_json:
        try:
            body = parse_json_body(req.get_data(cache=True))  # the strict parser: never a 500, whatever the body
        except MalformedJSON:
            return  # not this hook's to answer: authentication, then the body's parser, will
        if isinstance(body, dict) and "token" in body:
            raise TokenInBody()


def _run_before_authentication(state):
    # After the hooks that give every response its request id, log line and metrics.
    hooks = state.app.before_request_funcs.setdefault(None, [])
    hooks.insert(hooks.index(authenticate) if authenticate in hooks else len(hooks), _seed_token_in_body)


blp.record_once(_run_before_authentication)


@blp.route("/apply", methods=["POST"])
@require("schema:apply")
@blp.arguments(SchemaApplyIn())
@blp.response(200, SchemaApplyOut)
@blp.alt_response(400, schema=ErrorOut, description="token_in_body")
@blp.alt_response(409, schema=ErrorOut, description="schema_change_name_conflict, schema_lock_timeout, "
                                                     "schema_change_in_progress")
@blp.alt_response(422, schema=ErrorOut, description="schema_change_refused, schema_change_failed")
@blp.alt_response(501, schema=ErrorOut, description="not_supported_on_sqlite")
def apply(body):
    """Apply additive DDL in one transaction, once per name. Same name and SQL again answers
    `already_applied`; `dry_run` runs it and rolls back."""
    return schema_updates.apply(body["sql"], actor=current_actor(), name=body["name"], dry_run=body["dry_run"])


@blp.route("", methods=["GET"])
@require("schema:read")
@blp.response(200, LiveSchemaOut)
def live_schema():
    """The live schema: tables and views, columns, keys, constraints, indexes."""
    return schema_updates.describe()


@blp.route("/changes", methods=["GET"])
@require("schema:read")
@blp.arguments(PageArgs(), location="query")
@blp.response(200, SchemaChangePage)
def changes(args):
    """Recorded updates (applied and failed), oldest first."""
    rows = schema_updates.history(after_id=decode_cursor(args["cursor"]), limit=args["limit"] + 1)
    return page(rows, args["limit"], lambda c: c["id"])
