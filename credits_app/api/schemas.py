"""Request and response schemas (marshmallow): they validate input and document the API."""
import re
from datetime import datetime, timezone

from marshmallow import Schema, fields, validate

from ..config import BIGINT_MAX
from ..ledger.reads import KINDS
from ..ledger.records import entry_json, iso

NO_NUL = validate.Regexp(r"^[^\x00]*$", error="must not contain NUL characters")
# local@domain.tld in ASCII (RFC 5322 dot-atom local part; LDH domain labels): deliberately simple, and
# published as the schema's pattern so clients (and the fuzzer) know exactly what passes.
# Case-insensitive uniqueness is the database's job.
EMAIL = validate.Regexp(r"^(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$", error="not a valid email address")


class StrictInteger(fields.Integer):
    """A JSON integer: refuses booleans, floats (even 5.0) and numeric strings."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        return value


def text(maximum, required=False, minimum=0):
    return fields.String(required=required, allow_none=not required,
                         validate=[validate.Length(min=minimum, max=maximum), NO_NUL])


class AmountIn(Schema):
    # The maximum (MAX_AMOUNT) is configuration: api.document_limits() writes it into the spec.
    amount = StrictInteger(required=True, validate=validate.Range(min=1),
                           metadata={"description": "positive integer, at most MAX_AMOUNT", "example": 10})
    reason = text(500)


class ResetIn(Schema):
    reason = text(500)


class AlertsIn(Schema):
    low_balance_threshold = StrictInteger(
        required=True, allow_none=True, validate=validate.Range(min=0, max=BIGINT_MAX),
        metadata={"description": "the user's own threshold; 0 turns their alerts off; null: LOW_BALANCE_THRESHOLD "
                                 "again", "example": 10})


class AlertsOut(Schema):
    user_id = fields.Integer(required=True)
    low_balance_threshold = fields.Integer(allow_none=True, metadata={"description": "the user's own, if set"})
    threshold = fields.Integer(required=True, metadata={"description": "the threshold in force (0: alerts off)"})
    alert_state = fields.String(allow_none=True, validate=validate.OneOf(("ok", "low", "depleted")),
                                metadata={"description": "where the available balance stood at its last change "
                                                         "(null: alerts off or not yet known)"})
    available = fields.Integer(required=True)


class ReverseIn(Schema):
    amount = StrictInteger(validate=validate.Range(min=1),
                           metadata={"description": "how much to reverse (default: all that remains), at most "
                                                    "MAX_AMOUNT"})
    reason = text(500, required=True, minimum=1)


class EntryOut(Schema):
    id = fields.Integer()
    user_id = fields.Integer()
    kind = fields.String(metadata={"enum": list(KINDS)})
    amount = fields.Integer(metadata={"description": "signed: positive adds, negative removes"})
    balance_after = fields.Integer()
    reason = fields.String(allow_none=True)
    actor = fields.String()
    idempotency_key = fields.String(allow_none=True)
    grant_date = fields.Date(allow_none=True)
    created_at = fields.DateTime()
    reverses = fields.Integer(allow_none=True, metadata={"description": "a reversal's original entry"})
    hold_id = fields.Integer(allow_none=True, metadata={"description": "a capture's hold"})


class BalanceOut(Schema):
    user_id = fields.Integer()
    credits = fields.Integer()
    last_updated = fields.DateTime(allow_none=True)


class ChangeOut(BalanceOut):
    entry = fields.Nested(EntryOut)


# The balance and change answers, written out: dump() walks the fields one by one on every
# answer. BalanceAsOfOut and ChangeOut document them, and a property test
# (test_credits_api) holds these equal to what the schemas' dump() gives.
def balance_json(balance):
    return {"user_id": balance.user_id, "credits": balance.credits, "last_updated": iso(balance.last_updated),
            "held": balance.held, "available": balance.available}


def balance_as_of_json(balance, at):
    """The balance at a past instant: what holds kept then is not known, so no held or available."""
    return {"user_id": balance.user_id, "credits": balance.credits, "last_updated": iso(balance.last_updated),
            "as_of": at.isoformat()}


def change_json(change):
    e = change.entry
    return {"user_id": e.user_id, "credits": e.balance_after, "last_updated": iso(e.created_at),
            "entry": entry_json(e)}


class PageArgs(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(load_default=None, validate=validate.Length(max=100))


class Instant(fields.AwareDateTime):
    """An RFC 3339 instant with its offset (Z or +hh:mm), returned in UTC. Between 1970 and
    the end of 9999: a time outside cannot be on the ledger, and the range keeps every
    instant a valid UTC datetime in Python and both databases."""

    EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
    LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
    default_error_messages = {
        "invalid": "not an RFC 3339 instant such as 2026-11-30T12:00:00Z (in a URL, write + as %2B)",
        "invalid_awareness": "give the offset: Z for UTC, or +hh:mm / -hh:mm",
        "range": "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z",
    }

    def __init__(self, **kwargs):
        super().__init__(format="iso", **kwargs)

    # RFC 3339's date-time, and only it (the ISO 8601 parser underneath also takes basic,
    # week-date and hour-only forms); T and Z in either case.
    _RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?)([Zz]|[+-]\d{2}:\d{2})?", re.ASCII)

    def _deserialize(self, value, attr, data, **kwargs):
        form = self._RFC3339.fullmatch(value) if isinstance(value, str) else None
        if form is None:
            raise self.make_error("invalid")
        if form.group(2) is None:
            raise self.make_error("invalid_awareness")
        instant = super()._deserialize(value.upper(), attr, data, **kwargs)
        try:
            instant = instant.astimezone(timezone.utc)
        except OverflowError:
            raise self.make_error("range") from None
        if not self.EARLIEST <= instant <= self.LATEST:
            raise self.make_error("range")
        return instant


class WindowArgs(Schema):
    since = Instant(metadata={"description": "only entries after this instant (exclusive)"})
    until = Instant(metadata={"description": "only entries at or before this instant (inclusive)"})


class AsOfArgs(Schema):
    as_of = Instant(metadata={"description": "the balance at this instant: after the last entry at or before it "
                                             "(0 before the first)"})


class BalanceAsOfOut(BalanceOut):
    held = fields.Integer(metadata={"description": "kept by open holds (not with as_of)"})
    available = fields.Integer(metadata={"description": "credits - held: what a debit may spend (not with as_of)"})
    as_of = fields.DateTime(metadata={"description": "the instant asked for, in UTC"})


class EntryPageArgs(PageArgs, WindowArgs):
    kind = fields.List(fields.String(validate=validate.OneOf(KINDS)), metadata={
        "description": "only entries of these kinds (repeat it: kind=add&kind=deduct); default all"})


class HistoryArgs(Schema):
    since = Instant(metadata={"description": "start of the chart (default: when the user was "
                                                                "created)"})
    until = Instant(metadata={"description": "end of the chart (default: now; the last point is "
                                                                "then the current balance)"})
    points = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000),
                            metadata={"description": "at most this many points (fewer only when since..until is "
                                                     "shorter than that many microseconds)"})


class PointOut(Schema):
    at = fields.DateTime(metadata={"description": "the end of the point's span"})
    credits = fields.Integer(metadata={"description": "the balance as of `at`"})


class HistoryOut(Schema):
    user_id = fields.Integer()
    since = fields.DateTime()
    until = fields.DateTime()
    points = fields.List(fields.Nested(PointOut), metadata={"description": "oldest first; each the balance at the "
                                                                           "end of one equal span of since..until"})


class ExportArgs(WindowArgs):
    user_id = fields.Integer(validate=validate.Range(min=1, max=BIGINT_MAX),
                             metadata={"description": "one user's entries only"})
    format = fields.String(load_default="csv", validate=validate.OneOf(["csv", "ndjson"]))


class EntryPage(Schema):
    items = fields.List(fields.Nested(EntryOut))
    next_cursor = fields.String(allow_none=True)


class HoldIn(Schema):
    # The maxima (MAX_AMOUNT, HOLD_MAX_TTL_SECONDS) are configuration: api.document_limits() writes them.
    amount = StrictInteger(required=True, validate=validate.Range(min=1),
                           metadata={"description": "positive integer, at most MAX_AMOUNT", "example": 30})
    ttl_seconds = StrictInteger(validate=validate.Range(min=1), metadata={
        "description": "how long the hold lasts (default HOLD_DEFAULT_TTL_SECONDS, at most HOLD_MAX_TTL_SECONDS)"})
    reason = text(500)


class CaptureIn(Schema):
    amount = StrictInteger(validate=validate.Range(min=1), metadata={
        "description": "how much to capture (default: all the hold keeps); the rest is released"})
    reason = text(500)


class ReleaseIn(Schema):
    reason = text(500)  # kept on the hold as close_reason


class HoldOut(Schema):
    hold_id = fields.Integer()
    user_id = fields.Integer()
    amount = fields.Integer(metadata={"description": "what the hold keeps while open"})
    status = fields.String(metadata={"enum": ["open", "captured", "released", "expired"],
                                     "description": "an open hold past expires_at is expired, recorded or not"})
    captured = fields.Integer(allow_none=True, metadata={"description": "what the capture took"})
    reason = fields.String(allow_none=True)
    actor = fields.String()
    idempotency_key = fields.String(allow_none=True)
    created_at = fields.DateTime()
    expires_at = fields.DateTime()
    closed_at = fields.DateTime(allow_none=True)
    close_reason = fields.String(allow_none=True, metadata={
        "description": "the reason given with a release (null otherwise: a capture's is on its entry)"})
    entry_id = fields.Integer(allow_none=True, metadata={"description": "the capture's ledger entry"})


class HoldAnswerOut(Schema):
    hold = fields.Nested(HoldOut)
    user_id = fields.Integer()
    credits = fields.Integer(metadata={"description": "the balance after the operation"})
    held = fields.Integer(metadata={"description": "kept by the user's open holds"})
    available = fields.Integer(metadata={"description": "credits - held: what a debit may spend"})
    entry = fields.Nested(EntryOut, metadata={"description": "a capture's ledger entry (captures only)"})


class HoldListArgs(PageArgs):
    status = fields.String(load_default=None, validate=validate.OneOf(["open", "captured", "released", "expired"]))


class HoldPage(Schema):
    items = fields.List(fields.Nested(HoldOut))
    next_cursor = fields.String(allow_none=True)


class UserIn(Schema):
    email = fields.String(required=True, validate=[validate.Length(max=320), EMAIL], metadata={"format": "email"})
    name = text(200, required=True, minimum=1)


class UserPatch(Schema):
    email = fields.String(validate=[validate.Length(max=320), EMAIL], metadata={"format": "email"})
    name = fields.String(validate=[validate.Length(min=1, max=200), NO_NUL])


class UserOut(Schema):
    user_id = fields.Integer()
    email = fields.String()
    name = fields.String()
    created_at = fields.DateTime()
    attributes = fields.Dict(keys=fields.String(), metadata={
        "description": "columns added to users by external schema updates, by name (JSON-typed)"})


class UserListArgs(PageArgs):
    email = fields.String(load_default=None, validate=validate.Length(max=320))


class UserPage(Schema):
    items = fields.List(fields.Nested(UserOut))
    next_cursor = fields.String(allow_none=True)


class ErrorBody(Schema):
    code = fields.String()
    message = fields.String()
    details = fields.Dict()


class ErrorOut(Schema):
    error = fields.Nested(ErrorBody)


# ---- external schema updates (/api/schema) ------------------------------------------------

class SchemaApplyIn(Schema):
    sql = fields.String(required=True, validate=[validate.Length(min=1), NO_NUL],
                        metadata={"description": "additive DDL; several statements allowed",
                                  "example": "ALTER TABLE users ADD COLUMN tier text DEFAULT 'basic'"})
    name = fields.String(load_default=None, validate=validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"),
                         metadata={"description": "stable name; default derived from the SQL checksum"})
    dry_run = fields.Boolean(load_default=False, truthy={True}, falsy={False})


class SchemaChangeOut(Schema):
    id = fields.Integer()
    name = fields.String()
    sql = fields.String()
    checksum = fields.String()
    actor = fields.String()
    applied_at = fields.DateTime()
    duration_ms = fields.Integer()
    outcome = fields.String(metadata={"enum": ["applied", "failed"]})
    error = fields.Dict(allow_none=True)


class SchemaApplyOut(Schema):
    status = fields.String(metadata={"enum": ["applied", "already_applied", "dry_run"]})
    name = fields.String()
    checksum = fields.String()
    statements = fields.Integer()
    effects = fields.List(fields.String(), metadata={"description": "objects and columns the update adds"})
    duration_ms = fields.Integer()
    change = fields.Nested(SchemaChangeOut, allow_none=True)


class SchemaChangePage(Schema):
    items = fields.List(fields.Nested(SchemaChangeOut))
    next_cursor = fields.String(allow_none=True)


class LiveColumnOut(Schema):
    name = fields.String()
    type = fields.String()
    nullable = fields.Boolean()
    default = fields.String(allow_none=True)


class LiveTableOut(Schema):
    name = fields.String()
    kind = fields.String(metadata={"enum": ["table", "view"]})
    core = fields.Boolean(metadata={"description": "one of the service's own tables"})
    columns = fields.List(fields.Nested(LiveColumnOut))
    primary_key = fields.Dict()
    foreign_keys = fields.List(fields.Dict())
    unique_constraints = fields.List(fields.Dict())
    check_constraints = fields.List(fields.Dict())
    indexes = fields.List(fields.Dict())


class LiveSchemaOut(Schema):
    dialect = fields.String()
    tables = fields.List(fields.Nested(LiveTableOut))
