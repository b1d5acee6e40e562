"""/api/credits: balances and their changes. Thin: parse, call ledger, render.

The balance and change views answer a Response rendered by balance_json/change_json, which
flask-smorest sends as it is (its documented way: the decorator's schema then only documents
the answer)."""
from flask import jsonify, request

from .. import ledger
from ..auth.access import require
from ..ledger import Balance
from .common import (IDEMPOTENCY_KEY, REPLAYED, REPLAYED_HEADER, Blueprint, decode_entry_cursor, encode_entry_cursor,
                     keyed, page, stacked)
from .schemas import (AlertsIn, AlertsOut, AmountIn, AsOfArgs, BalanceAsOfOut, ChangeOut, EntryPage, EntryPageArgs,
                      ErrorOut, HistoryArgs, HistoryOut, ResetIn, ReverseIn, balance_as_of_json, balance_json,
                      change_json)

blp = Blueprint("credits", __name__, url_prefix="/api/credits", description="Credit balances and changes")


def _change_endpoint(refusal=None, not_found="user_not_found", invalid=""):
    """A balance change's answers: ChangeOut (also on a replay), and the OpenAPI of its
    Idempotency-Key, its errors and its 409 `refusal`, if it has one."""
    return stacked(
        blp.doc(parameters=[IDEMPOTENCY_KEY]),
        blp.response(200, ChangeOut, headers=REPLAYED_HEADER),
        blp.alt_response(400, schema=ErrorOut, description="invalid_header (Idempotency-Key), malformed_json"),
        blp.alt_response(404, schema=ErrorOut, description=not_found),
        *([blp.alt_response(409, schema=ErrorOut, description=refusal, headers=REPLAYED_HEADER)] if refusal else []),
        blp.alt_response(422, schema=ErrorOut, description="validation_error, idempotency_key_reused, "
                                                             "idempotency_key_expired" + invalid),
    )


def _change(apply, user_id, *args, reason=None):
    """Run a ledger change for the caller; a replay (of a change or of a refusal) carries
    the Idempotent-Replayed header."""
    change = keyed(lambda **caller: apply(user_id, *args, reason=reason, **caller))
    answer = jsonify(change_json(change))
    return (answer, 200, REPLAYED) if change.replayed else answer


AS_OF = AsOfArgs()
AS_OF_PARAMETER = {"in": "query", "name": "as_of", "required": False,
                   "schema": {"type": "string", "format": "date-time"},
                   "description": "RFC 3339 instant: the balance then (after the last entry at or before it, 0 before "
                                  "the first), echoed as `as_of`"}


@blp.route("/<int:user_id>", methods=["GET"])
@require("credits:read")
@blp.doc(parameters=[AS_OF_PARAMETER])
@blp.response(200, BalanceAsOfOut, description="The balance; `as_of` is present when the request gave it")
@blp.alt_response(404, schema=ErrorOut, description="user_not_found")
@blp.alt_response(422, schema=ErrorOut, description="validation_error (as_of)")
def get_balance(user_id):
    """Current balance of a user (0 for a user who never had a change), or its balance at a
    past instant with `as_of`."""
    # The query is parsed only when there is one: the plain read is the hottest request.
    if request.query_string:
        at = blp.ARGUMENTS_PARSER.parse(AS_OF, location="query").get("as_of")
        if at is not None:
            credits, last_updated = ledger.as_of(user_id, at)
            return jsonify(balance_as_of_json(Balance(user_id, credits, last_updated), at))
    return jsonify(balance_json(ledger.balance(user_id)))


@blp.route("/<int:user_id>/add", methods=["POST"])
@require("credits:add")
@blp.arguments(AmountIn())
@_change_endpoint("balance_limit_exceeded")
def add(body, user_id):
    """Add credits. Send an Idempotency-Key header to make retries safe."""
    return _change(ledger.add, user_id, body["amount"], reason=body.get("reason"))


@blp.route("/<int:user_id>/deduct", methods=["POST"])
@require("credits:deduct")
@blp.arguments(AmountIn())
@_change_endpoint("insufficient_credits")
def deduct(body, user_id):
    """Deduct credits; refused with 409 insufficient_credits rather than go negative."""
    return _change(ledger.deduct, user_id, body["amount"], reason=body.get("reason"))


@blp.route("/<int:user_id>/reset", methods=["PATCH"])
@require("credits:reset")
@blp.arguments(ResetIn(), required=False)
@_change_endpoint()
def reset(body, user_id):
    """Set the balance to zero; the ledger records minus the old balance."""
    return _change(ledger.reset, user_id, reason=body.get("reason"))


@blp.route("/<int:user_id>/entries/<int:entry_id>/reverse", methods=["POST"])
@require("credits:reverse")
@blp.arguments(ReverseIn())
@_change_endpoint("reversal_exceeds_remaining (the entry has less left to reverse), insufficient_credits "
                  "(reversing a credit), balance_limit_exceeded (reversing a debit)",
                  not_found="user_not_found, entry_not_found", invalid=", not_reversible")
def reverse(body, user_id, entry_id):
    """Reverse one entry, all of it or `amount` of it, with a compensating entry of kind
    `reversal` naming it; partial reversals until it is fully reversed, never beyond. A
    reversal is not reversed (422 not_reversible)."""
    return _change(lambda uid, **kw: ledger.reverse(uid, entry_id, body.get("amount"), **kw), user_id,
                   reason=body["reason"])


@blp.route("/<int:user_id>/transactions", methods=["GET"])
@require("credits:read")
@blp.arguments(EntryPageArgs(), location="query")
@blp.response(200, EntryPage)
@blp.alt_response(400, schema=ErrorOut, description="invalid_cursor")
@blp.alt_response(404, schema=ErrorOut, description="user_not_found")
@blp.alt_response(422, schema=ErrorOut, description="validation_error (a kind that is not the ledger's, a limit, "
                                                     "an instant)")
def transactions(args, user_id):
    """Ledger entries, newest first, optionally within (since, until] and of some kinds
    only. Pass `next_cursor` back as `cursor` (with the same since, until and kinds) for the
    next page."""
    rows = ledger.entries(user_id, limit=args["limit"] + 1, before=decode_entry_cursor(args["cursor"]),
                          since=args.get("since"), until=args.get("until"), kinds=args.get("kind"))
    return page(rows, args["limit"], lambda e: e, encode=encode_entry_cursor)


@blp.route("/<int:user_id>/history", methods=["GET"])
@require("credits:read")
@blp.arguments(HistoryArgs(), location="query")
@blp.response(200, HistoryOut)
@blp.alt_response(404, schema=ErrorOut, description="user_not_found")
@blp.alt_response(422, schema=ErrorOut, description="validation_error")
def history(args, user_id):
    """The balance over time for a chart: at most `points` points, each the balance at the
    end of one equal span of since..until, worked out in the database."""
    since, until, points = ledger.history(user_id, since=args.get("since"), until=args.get("until"),
                                          points=args["points"])
    return {"user_id": user_id, "since": since, "until": until,
            "points": [{"at": at, "credits": credits} for at, credits in points]}


@blp.route("/<int:user_id>/alerts", methods=["GET"])
@require("credits:read")
@blp.response(200, AlertsOut)
@blp.alt_response(404, schema=ErrorOut, description="user_not_found")
def get_alerts(user_id):
    """The user's low-balance alert settings and where their available balance stands."""
    return ledger.alerts.settings(user_id)


@blp.route("/<int:user_id>/alerts", methods=["PUT"])
@require("credits:alerts")
@blp.arguments(AlertsIn())
@blp.response(200, AlertsOut)
@blp.alt_response(400, schema=ErrorOut, description="malformed_json")
@blp.alt_response(404, schema=ErrorOut, description="user_not_found")
@blp.alt_response(422, schema=ErrorOut, description="validation_error")
def put_alerts(body, user_id):
    """Set the user's own low-balance threshold (null: the LOW_BALANCE_THRESHOLD setting's).
    balance.low fires when a change takes the available balance below it, balance.depleted
    at zero, balance.recovered back at or above it; setting a threshold fires nothing."""
    return ledger.alerts.set_threshold(user_id, body["low_balance_threshold"])
