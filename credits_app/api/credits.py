"""/api/credits: balances and their changes. Thin: parse, call ledger, render."""
from .. import ledger
from ..auth import current_actor, require
from .common import Blueprint, decode_cursor, idempotency_key, page
from .schemas import AmountIn, BalanceOut, ChangeOut, EntryPage, ErrorOut, PageArgs, ResetIn

blp = Blueprint("credits", __name__, url_prefix="/api/credits", description="Credit balances and changes")

REPLAYED = {"Idempotent-Replayed": "true"}


def _render(change):
    return (change, 200, REPLAYED) if change.replayed else change


@blp.route("/<int:user_id>", methods=["GET"])
@require("credits:read")
@blp.response(200, BalanceOut)
@blp.alt_response(404, schema=ErrorOut)
def get_balance(user_id):
    """Current balance of a user (0 for a user who never had a change)."""
    return ledger.balance(user_id)


@blp.route("/<int:user_id>/add", methods=["POST"])
@require("credits:add")
@blp.arguments(AmountIn)
@blp.response(200, ChangeOut)
@blp.alt_response(409, schema=ErrorOut, description="balance_limit_exceeded")
@blp.alt_response(422, schema=ErrorOut)
def add(body, user_id):
    """Add credits. Send an Idempotency-Key header to make retries safe."""
    return _render(ledger.add(user_id, body["amount"], actor=current_actor(), reason=body.get("reason"),
                              idempotency_key=idempotency_key()))


@blp.route("/<int:user_id>/deduct", methods=["POST"])
@require("credits:deduct")
@blp.arguments(AmountIn)
@blp.response(200, ChangeOut)
@blp.alt_response(409, schema=ErrorOut, description="insufficient_credits")
@blp.alt_response(422, schema=ErrorOut)
def deduct(body, user_id):
    """Deduct credits; refused with 409 insufficient_credits rather than go negative."""
    return _render(ledger.deduct(user_id, body["amount"], actor=current_actor(), reason=body.get("reason"),
                                 idempotency_key=idempotency_key()))


@blp.route("/<int:user_id>/reset", methods=["PATCH"])
@require("credits:reset")
@blp.arguments(ResetIn, required=False)
@blp.response(200, ChangeOut)
def reset(body, user_id):
    """Set the balance to zero; the ledger records minus the old balance."""
    return _render(ledger.reset(user_id, actor=current_actor(), reason=body.get("reason"),
                                idempotency_key=idempotency_key()))


@blp.route("/<int:user_id>/transactions", methods=["GET"])
@require("credits:read")
@blp.arguments(PageArgs, location="query")
@blp.response(200, EntryPage)
def transactions(args, user_id):
    """Ledger history, newest first. Pass `next_cursor` back as `cursor` for the next page."""
    rows = ledger.entries(user_id, limit=args["limit"] + 1, before_id=decode_cursor(args["cursor"]))
    return page(rows, args["limit"], lambda e: e.id)
