"""/api/webhooks: endpoints (a secret shown once, rotation with an overlap), deliveries
(attempts, retry) and replay. Thin: parse, call credits_app/webhooks, send. Admin only."""
from flask import jsonify

from ..auth.access import current_actor, require
from ..webhooks import deliveries, endpoints
from .common import Blueprint, decode_cursor, encode_cursor, page
from .schemas import ErrorOut
from .webhook_schemas import (DeliveryListArgs, DeliveryOut, DeliveryPage, EndpointIn, EndpointList, EndpointOut,
                              EndpointPatch, EndpointSecretOut, ReplayIn, ReplayOut, RotateIn)

blp = Blueprint("webhooks", __name__, url_prefix="/api/webhooks",
                description="Webhook endpoints and deliveries: events signed as Standard Webhooks says")

_NO_ENDPOINT = "webhook_endpoint_not_found"
_NO_DELIVERY = "webhook_delivery_not_found"


@blp.route("/endpoints", methods=["POST"])
@require("webhooks:manage")
@blp.arguments(EndpointIn())
@blp.response(201, EndpointSecretOut)
@blp.alt_response(422, schema=ErrorOut, description="validation_error (a URL that may not receive webhooks: not "
                                                     "http(s), credentials, a private or unresolvable host)")
def create_endpoint(body):
    """Create an endpoint for `event_types`. The answer carries its signing secret: the only
    time it is shown."""
    return jsonify(endpoints.create(body["url"], body["event_types"], actor=current_actor(),
                                    description=body.get("description"), enabled=body["enabled"])), 201


@blp.route("/endpoints", methods=["GET"])
@require("webhooks:read")
@blp.response(200, EndpointList)
def list_endpoints():
    """Every endpoint, oldest first, without secrets."""
    return jsonify({"items": endpoints.list_endpoints()})


@blp.route("/endpoints/<int:endpoint_id>", methods=["GET"])
@require("webhooks:read")
@blp.response(200, EndpointOut)
@blp.alt_response(404, schema=ErrorOut, description=_NO_ENDPOINT)
def get_endpoint(endpoint_id):
    """One endpoint, without its secret."""
    return jsonify(endpoints.get(endpoint_id))


@blp.route("/endpoints/<int:endpoint_id>", methods=["PATCH"])
@require("webhooks:manage")
@blp.arguments(EndpointPatch(), required=False)
@blp.response(200, EndpointOut)
@blp.alt_response(404, schema=ErrorOut, description=_NO_ENDPOINT)
@blp.alt_response(422, schema=ErrorOut, description="validation_error")
def update_endpoint(body, endpoint_id):
    """Change the URL, the event types (they replace the old ones), the description (null
    empties it) or `enabled`. A disabled endpoint gets no deliveries of new events."""
    return jsonify(endpoints.update(endpoint_id, **body))


@blp.route("/endpoints/<int:endpoint_id>", methods=["DELETE"])
@require("webhooks:manage")
@blp.response(204)
@blp.alt_response(404, schema=ErrorOut, description=_NO_ENDPOINT)
def delete_endpoint(endpoint_id):
    """Delete an endpoint with its deliveries and their attempts."""
    endpoints.delete(endpoint_id)
    return "", 204


@blp.route("/endpoints/<int:endpoint_id>/rotate-secret", methods=["POST"])
@require("webhooks:manage")
@blp.arguments(RotateIn(), required=False)
@blp.response(200, EndpointSecretOut)
@blp.alt_response(404, schema=ErrorOut, description=_NO_ENDPOINT)
@blp.alt_response(422, schema=ErrorOut, description="validation_error")
def rotate_secret(body, endpoint_id):
    """A new signing secret, shown this once. Deliveries carry a signature by the previous
    secret too until `previous_secret_until` (`overlap_seconds`), so receivers can switch."""
    return jsonify(endpoints.rotate_secret(endpoint_id, overlap_seconds=body.get("overlap_seconds")))


@blp.route("/endpoints/<int:endpoint_id>/replay", methods=["POST"])
@require("webhooks:manage")
@blp.arguments(ReplayIn())
@blp.response(200, ReplayOut)
@blp.alt_response(404, schema=ErrorOut, description=_NO_ENDPOINT)
@blp.alt_response(422, schema=ErrorOut, description="validation_error (since outside EVENTS_RETENTION_DAYS, a type "
                                                     "the endpoint does not take)")
def replay(body, endpoint_id):
    """Send the endpoint's events at or after `since` again: each one's delivery is set
    pending and due now (made if it was not), with the event's same id. A disabled
    endpoint's deliveries wait until it is enabled."""
    return jsonify(deliveries.replay(endpoint_id, body["since"], types=body.get("types")))


@blp.route("/deliveries", methods=["GET"])
@require("webhooks:read")
@blp.arguments(DeliveryListArgs(), location="query")
@blp.response(200, DeliveryPage)
@blp.alt_response(400, schema=ErrorOut, description="invalid_cursor")
def list_deliveries(args):
    """Deliveries newest first, with their latest attempts; optionally of one `endpoint`,
    with one `status`. Pass `next_cursor` back as `cursor` (same filters) for the next page."""
    rows = deliveries.deliveries(endpoint_id=args["endpoint"], status=args["status"], limit=args["limit"] + 1,
                                 before=decode_cursor(args["cursor"]))
    return jsonify(page(rows, args["limit"], lambda d: d["delivery_id"], encode=encode_cursor))


@blp.route("/deliveries/<int:delivery_id>", methods=["GET"])
@require("webhooks:read")
@blp.response(200, DeliveryOut)
@blp.alt_response(404, schema=ErrorOut, description=_NO_DELIVERY)
def get_delivery(delivery_id):
    """One delivery with its latest attempts."""
    return jsonify(deliveries.get(delivery_id))


@blp.route("/deliveries/<int:delivery_id>/retry", methods=["POST"])
@require("webhooks:manage")
@blp.response(200, DeliveryOut)
@blp.alt_response(404, schema=ErrorOut, description=_NO_DELIVERY)
@blp.alt_response(409, schema=ErrorOut, description="delivery_already_delivered (replay sends delivered events "
                                                     "again)")
def retry_delivery(delivery_id):
    """Send a dead (or pending) delivery again now, its attempts toward the dead letter
    counted from zero; the attempts so far stay in its history."""
    return jsonify(deliveries.retry(delivery_id))
