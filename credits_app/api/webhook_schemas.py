"""Schemas of webhook endpoints, deliveries and events (validation and the OpenAPI document).

Every event type's `data` has a component schema of its own (`<Type>Data`), and every type
an envelope (`<Type>Event`: id, type, timestamp, data); `Event` is one of them, told apart
by `type`. A `data` schema allows properties it does not list: a receiver must accept fields
added later."""
from marshmallow import INCLUDE, Schema, fields, validate
from webargs.fields import DelimitedList

from ..config import BIGINT_MAX
from ..models import EVENT_TYPES
from ..webhooks.deliveries import STATUSES
from ..webhooks.endpoints import MAX_OVERLAP_SECONDS
from ..webhooks.urls import MAX_LENGTH
from .schemas import NO_NUL, EntryOut, HoldOut, Instant, PageArgs, StrictInteger, text

EVENT_TYPE = fields.String(validate=validate.OneOf(EVENT_TYPES))
STRICT_BOOLEAN = {"truthy": {True}, "falsy": {False}}


def _event_types(required):
    return fields.List(EVENT_TYPE, required=required, validate=validate.Length(min=1, max=len(EVENT_TYPES) * 2),
                       metadata={"description": "the event types the endpoint takes (at least one)"})


# ---- endpoints -----------------------------------------------------------------------------

class EndpointIn(Schema):
    url = fields.String(required=True, validate=[validate.Length(min=1, max=MAX_LENGTH), NO_NUL], metadata={
        "description": "http or https, no credentials; its host must resolve to public addresses only (unless "
                       "WEBHOOKS_ALLOW_PRIVATE_URLS)", "example": "https://example.com/credits-webhooks"})
    event_types = _event_types(required=True)
    description = text(500)
    enabled = fields.Boolean(load_default=True, **STRICT_BOOLEAN)


class EndpointPatch(Schema):
    url = fields.String(validate=[validate.Length(min=1, max=MAX_LENGTH), NO_NUL])
    event_types = _event_types(required=False)
    description = text(500)
    enabled = fields.Boolean(**STRICT_BOOLEAN)


class RotateIn(Schema):
    overlap_seconds = StrictInteger(validate=validate.Range(min=0, max=MAX_OVERLAP_SECONDS), metadata={
        "description": "how long the current secret keeps signing beside the new one (default "
                       "WEBHOOKS_SECRET_OVERLAP_SECONDS; 0: it stops now)"})


class EndpointOut(Schema):
    endpoint_id = fields.Integer()
    url = fields.String()
    description = fields.String(allow_none=True)
    enabled = fields.Boolean()
    event_types = fields.List(fields.String(metadata={"enum": list(EVENT_TYPES)}))
    created_by = fields.String()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    previous_secret_until = fields.DateTime(allow_none=True, metadata={
        "description": "while a rotation's overlap lasts: until when the previous secret still signs"})


class EndpointSecretOut(EndpointOut):
    secret = fields.String(metadata={"description": "`whsec_` + base64 of 32 bytes: shown this once, never again",
                                     "example": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})


class EndpointList(Schema):
    items = fields.List(fields.Nested(EndpointOut))


class ReplayIn(Schema):
    since = Instant(required=True, metadata={"description": "replay the events at or after this instant (within "
                                                            "EVENTS_RETENTION_DAYS)"})
    types = fields.List(EVENT_TYPE, validate=validate.Length(min=1, max=len(EVENT_TYPES) * 2), metadata={
        "description": "only these of the endpoint's types (default: all it takes)"})


class ReplayOut(Schema):
    endpoint_id = fields.Integer()
    since = fields.DateTime()
    event_types = fields.List(fields.String(metadata={"enum": list(EVENT_TYPES)}))
    queued = fields.Integer(metadata={"description": "deliveries set pending, due now"})


# ---- deliveries ----------------------------------------------------------------------------

class DeliveryListArgs(PageArgs):
    endpoint = fields.Integer(load_default=None, validate=validate.Range(min=1, max=BIGINT_MAX),
                              metadata={"description": "one endpoint's deliveries"})
    status = fields.String(load_default=None, validate=validate.OneOf(STATUSES))


class AttemptOut(Schema):
    attempted_at = fields.DateTime()
    duration_ms = fields.Integer()
    status_code = fields.Integer(allow_none=True, metadata={"description": "the receiver's answer (none: no answer)"})
    error = fields.String(allow_none=True)


class DeliveryOut(Schema):
    delivery_id = fields.Integer()
    endpoint_id = fields.Integer()
    event_id = fields.String(metadata={"description": "the event's id, the same in every delivery of it"})
    event_type = fields.String(metadata={"enum": list(EVENT_TYPES)})
    status = fields.String(metadata={"enum": list(STATUSES)})
    attempts = fields.Integer(metadata={"description": "tries counted toward the dead letter (a retry restarts it)"})
    next_attempt_at = fields.DateTime()
    last_attempt_at = fields.DateTime(allow_none=True)
    last_status_code = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    delivered_at = fields.DateTime(allow_none=True)
    attempt_history = fields.List(fields.Nested(AttemptOut), metadata={
        "description": "the latest tries, newest first (kept across retries)"})


class DeliveryPage(Schema):
    items = fields.List(fields.Nested(DeliveryOut))
    next_cursor = fields.String(allow_none=True)


# ---- events --------------------------------------------------------------------------------

class EventArgs(PageArgs):
    since = Instant(required=True, metadata={"description": "the events at or after this instant (within "
                                                            "EVENTS_RETENTION_DAYS)"})
    types = DelimitedList(EVENT_TYPE, metadata={
        "description": "comma-separated event types (default: all)"})


class _Data(Schema):
    class Meta:
        unknown = INCLUDE  # documents that more properties may come


class CreditsChangedData(_Data):
    user_id = fields.Integer()
    balance_after = fields.Integer()
    entry = fields.Nested(EntryOut)


class _HoldData(_Data):
    user_id = fields.Integer()
    credits = fields.Integer()
    held = fields.Integer()
    available = fields.Integer()
    hold = fields.Nested(HoldOut)


class HoldCreatedData(_HoldData):
    pass


class HoldReleasedData(_HoldData):
    pass


class HoldExpiredData(_HoldData):
    pass


class _BalanceData(_Data):
    user_id = fields.Integer()
    credits = fields.Integer()
    held = fields.Integer()
    available = fields.Integer()
    threshold = fields.Integer(metadata={"description": "the user's low-balance threshold"})
    entry_id = fields.Integer(allow_none=True, metadata={"description": "the ledger entry that moved the balance"})
    hold_id = fields.Integer(allow_none=True, metadata={"description": "the hold that moved the available balance"})


class BalanceLowData(_BalanceData):
    pass


class BalanceRecoveredData(_BalanceData):
    pass


class BalanceDepletedData(_BalanceData):
    pass


class GrantRunCompletedData(_Data):
    grant_date = fields.Date()
    amount = fields.Integer()
    users_credited = fields.Integer()
    chunks_total = fields.Integer()
    started_at = fields.DateTime()
    finished_at = fields.DateTime()
    scheduled = fields.Boolean()


class SchemaAppliedData(_Data):
    change_id = fields.Integer()
    name = fields.String()
    checksum = fields.String()
    actor = fields.String()
    duration_ms = fields.Integer()
    statements = fields.Integer()


DATA = {"credits.changed": CreditsChangedData, "hold.created": HoldCreatedData, "hold.released": HoldReleasedData,
        "hold.expired": HoldExpiredData, "balance.low": BalanceLowData, "balance.recovered": BalanceRecoveredData,
        "balance.depleted": BalanceDepletedData, "grant.run.completed": GrantRunCompletedData,
        "schema.applied": SchemaAppliedData}
WHAT = {"credits.changed": "a balance change (add, deduct, reset, reversal, capture) with its ledger entry",
        "hold.created": "a hold was made", "hold.released": "a hold was released",
        "hold.expired": "a hold's expiry was recorded",
        "balance.low": "a change took the available balance below the user's threshold",
        "balance.recovered": "the available balance went back to or above the threshold",
        "balance.depleted": "the available balance reached zero",
        "grant.run.completed": "a daily-grant run finished (one event per run, not per user)",
        "schema.applied": "an external schema update was applied"}


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def envelope_name(event_type):
    return "".join(part.capitalize() for part in event_type.split(".")) + "Event"


def document_events(spec):
    """Add the events' schemas to the OpenAPI document: each type's data, its envelope,
    `Event` (one of the envelopes) and `EventPage` (GET /api/events)."""
    for event_type, data in DATA.items():
        spec.components.schema(data.__name__, schema=data)
        spec.components.schema(envelope_name(event_type), {
            "type": "object", "description": WHAT[event_type], "required": ["id", "type", "timestamp", "data"],
            "additionalProperties": False, "properties": {
                "id": {"type": "string", "pattern": "^evt_(entry_)?[1-9][0-9]*$", "description":
                       "stable for the event's whole life: evt_entry_<ledger entry id> for credits.changed, "
                       "evt_<n> for the others; the webhook-id header of its deliveries"},
                "type": {"type": "string", "enum": [event_type]},
                "timestamp": {"type": "string", "format": "date-time", "description": "when it happened"},
                "data": _ref(data.__name__)}})
    spec.components.schema("Event", {
        "description": "an event, as delivered by webhooks (the body) and as GET /api/events lists it",
        "oneOf": [_ref(envelope_name(t)) for t in DATA],
        "discriminator": {"propertyName": "type",
                          "mapping": {t: f"#/components/schemas/{envelope_name(t)}" for t in DATA}}})
    spec.components.schema("EventPage", {
        "type": "object", "additionalProperties": False, "properties": {
            "items": {"type": "array", "items": _ref("Event"), "description": "oldest first"},
            "next_cursor": {"type": "string", "nullable": True, "description": "null: no more events now"}}})
