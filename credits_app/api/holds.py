"""Holds: reserve credits, then capture (all or part) or release them. Thin: parse, call
ledger.holds, send. The rules are in credits_app/ledger/holds.py, which also renders a hold
(an answer is kept whole with its Idempotency-Key): views send it as a Response, and the
decorators' schemas document it."""
from flask import jsonify

from ..auth.access import current_claims, require
from ..exceptions import HoldNotFound
from ..ledger import holds
from .common import (IDEMPOTENCY_KEY, REPLAYED, REPLAYED_HEADER, Blueprint, decode_cursor, encode_cursor, keyed, page,
                     stacked)
from .schemas import CaptureIn, ErrorOut, HoldAnswerOut, HoldIn, HoldListArgs, HoldOut, HoldPage, ReleaseIn

blp = Blueprint("holds", __name__, url_prefix="/api", description="Holds: reserve credits, then capture or release")


def _keyed(status, refusals, not_found):
    """A hold operation's answers: HoldAnswerOut (also on a replay), its Idempotency-Key and
    its errors."""
    return stacked(
        blp.doc(parameters=[IDEMPOTENCY_KEY]),
        blp.response(status, HoldAnswerOut, headers=REPLAYED_HEADER),
        blp.alt_response(400, schema=ErrorOut, description="invalid_header (Idempotency-Key), malformed_json"),
        blp.alt_response(404, schema=ErrorOut, description=not_found),
        blp.alt_response(409, schema=ErrorOut, description=refusals, headers=REPLAYED_HEADER),
        blp.alt_response(422, schema=ErrorOut, description="validation_error, idempotency_key_reused, "
                                                             "idempotency_key_expired"),
    )


def _answer(operation, status=200):
    """Run a hold operation for the caller; a replay (of an answer or of a refusal) carries
    the Idempotent-Replayed header."""
    answer = keyed(operation)
    return jsonify(answer.body), status, (REPLAYED if answer.replayed else {})


@blp.route("/credits/<int:user_id>/holds", methods=["POST"])
@require("holds:create")
@blp.arguments(HoldIn())
@_keyed(201, "insufficient_credits (reports balance, held, available, requested)", "user_not_found")
def create(body, user_id):
    """Hold credits: `amount` of the available balance is kept for a later capture until the
    hold is captured, released or expires (`ttl_seconds`)."""
    return _answer(lambda **kw: holds.create(user_id, body["amount"], ttl_seconds=body.get("ttl_seconds"),
                                             reason=body.get("reason"), **kw), 201)


@blp.route("/credits/<int:user_id>/holds", methods=["GET"])
@require("holds:read")
@blp.arguments(HoldListArgs(), location="query")
@blp.response(200, HoldPage)
@blp.alt_response(400, schema=ErrorOut, description="invalid_cursor")
@blp.alt_response(404, schema=ErrorOut, description="user_not_found")
def list_holds(args, user_id):
    """A user's holds, newest first, optionally only those with `status` now. Pass
    `next_cursor` back as `cursor` (with the same status) for the next page."""
    rows = holds.holds_of(user_id, status=args["status"], limit=args["limit"] + 1,
                          before=decode_cursor(args["cursor"]))
    return jsonify(page(rows, args["limit"], lambda hold: hold["hold_id"], encode=encode_cursor))


@blp.route("/holds/<int:hold_id>", methods=["GET"])
@require("holds:read")
@blp.response(200, HoldOut)
@blp.alt_response(404, schema=ErrorOut, description="hold_not_found (also another user's hold, to a user token)")
def get_hold(hold_id):
    """One hold, with its status now (an open hold past expires_at is expired)."""
    hold = holds.get(hold_id)
    claims = current_claims()
    # The path names no user for authenticate() to check: a user token sees only its own
    # holds, and another user's is answered as if it did not exist.
    if claims["role"] == "user" and hold["user_id"] != claims["user_id"]:
        raise HoldNotFound(hold_id)
    return jsonify(hold)


@blp.route("/holds/<int:hold_id>/capture", methods=["POST"])
@require("holds:capture")
@blp.arguments(CaptureIn(), required=False)
@_keyed(200, "hold_not_open, hold_expired, capture_exceeds_hold", "hold_not_found")
def capture(body, hold_id):
    """Capture an open hold, all of it or `amount`: a ledger entry of kind `capture` naming
    the hold takes it from the balance, and the rest is released."""
    return _answer(lambda **kw: holds.capture(hold_id, body.get("amount"), reason=body.get("reason"), **kw))


@blp.route("/holds/<int:hold_id>/release", methods=["POST"])
@require("holds:release")
@blp.arguments(ReleaseIn(), required=False)
@_keyed(200, "hold_not_open, hold_expired", "hold_not_found")
def release(body, hold_id):
    """Release an open hold: what it kept is available again. A `reason` is kept on the
    hold as `close_reason`."""
    return _answer(lambda **kw: holds.release(hold_id, reason=body.get("reason"), **kw))
