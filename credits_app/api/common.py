"""Plumbing shared by the resource blueprints: strict body parsing, the Idempotency-Key
header, opaque cursors."""
import base64
from datetime import datetime, timedelta, timezone

from flask import request
from flask_smorest import Blueprint as SmorestBlueprint
from webargs import core
from webargs.flaskparser import FlaskParser

from .. import ledger
from ..auth.access import current_actor
from ..exceptions import Conflict, DomainError, InvalidRequest, UnsupportedMediaType
from ..ledger.rules import IDEMPOTENCY_KEY as _KEY
from ..web.json_body import parse_json_body


class StrictParser(FlaskParser):
    """A body must be JSON (415 otherwise) and strictly valid JSON (400 otherwise). No string
    in the body or the query may hold a NUL (422): PostgreSQL text cannot store one, so
    refusing it here covers every field, present and future, before it reaches the driver."""

    def load_json(self, req, schema):
        raw = req.get_data(cache=True)  # within MAX_CONTENT_LENGTH (web/framework.CreditsRequest)
        if not raw:
            return core.missing
        if not req.is_json:
            raise UnsupportedMediaType(req.content_type or "")
        value = parse_json_body(raw)
        if b"\\u0000" in raw:  # a raw NUL byte is already invalid JSON; only the escape gets here
            _refuse_nul(value, "json")
        return value

    def load_querystring(self, req, schema):
        for name, value in req.args.items(multi=True):
            _refuse_nul(value, name)
        return super().load_querystring(req, schema)


def _refuse_nul(value, where):
    stack = [(where, value)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise InvalidRequest("text must not contain NUL characters",
                                     fields={where: ["must not contain NUL characters"]})
        elif isinstance(value, dict):
            stack.extend((k, k) for k in value)
            stack.extend(value.items())
        elif isinstance(value, list):
            stack.extend((where, v) for v in value)


class Blueprint(SmorestBlueprint):
    """flask-smorest's blueprint, parsing with StrictParser. Views pass `arguments` a schema
    instance, not its class: webargs builds a new instance of a class for every request, and
    a marshmallow schema keeps no state between loads, so one instance serves them all."""

    ARGUMENTS_PARSER = StrictParser()


REPLAYED = {"Idempotent-Replayed": "true"}

# OpenAPI only (idempotency_key() reads and checks the header).
IDEMPOTENCY_KEY = {"in": "header", "name": "Idempotency-Key", "required": False,
                   "description": "Makes a retry safe: the first request with a key takes effect, a replay returns "
                                  "its answer. One key, 1-255 visible ASCII characters, no comma (400 otherwise); "
                                  "scoped to the token subject.",
                   "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[!-+\--~]+$"}}
REPLAYED_HEADER = {"Idempotent-Replayed": {"description": "`true` when this answer replays an earlier request "
                                                          "with the same Idempotency-Key: nothing changed now",
                                           "schema": {"type": "string", "enum": ["true"]}}}


class BadHeader(DomainError):
    status, code = 400, "invalid_header"


class InvalidCursor(DomainError):
    status, code = 400, "invalid_cursor"

    def __init__(self):
        super().__init__("the cursor is not one this service issued")


def stacked(*decorators):
    """One decorator that applies `decorators` as if they were stacked in this order above
    the view: a family of endpoints documents its answers in one place."""
    def decorate(view):
        for decorator in reversed(decorators):
            view = decorator(view)
        return view
    return decorate


def keyed(operation):
    """Run `operation(actor=..., idempotency_key=...)` for the caller, with the request's
    Idempotency-Key. A replayed refusal carries the Idempotent-Replayed header; the view
    adds it to a replayed answer."""
    try:
        return operation(actor=current_actor(), idempotency_key=idempotency_key())
    except Conflict as refusal:
        if refusal.replayed:
            refusal.headers = {**refusal.headers, **REPLAYED}
        raise


def idempotency_key():
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _KEY.match(key):
        raise BadHeader("Idempotency-Key must be one key of 1-255 visible ASCII characters other than a comma "
                        "(repeated headers arrive joined by commas)", header="Idempotency-Key")
    return key


def encode_cursor(last_id):
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor):
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, value = raw.split(":", 1)
        number = int(value)
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursor() from None
    if prefix != "v1" or not 0 < number < 2**63:
        raise InvalidCursor()
    return number


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def encode_entry_cursor(entry):
    """A ledger page's position: the last entry's time (microseconds since the epoch) and id."""
    at = (entry.created_at - _EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"v2:{at}:{entry.id}".encode()).decode().rstrip("=")


def decode_entry_cursor(cursor):
    """(created_at, id) after which a ledger page continues, or None. Also takes an entry id
    cursor (v1), as pages were cut before they were cut by time."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursor() from None
    if raw.startswith("v1:"):
        position = ledger.position(decode_cursor(cursor))
        if position is None:
            raise InvalidCursor()
        return position
    try:
        prefix, at, entry_id = raw.split(":")
        at, entry_id = _EPOCH + timedelta(microseconds=int(at)), int(entry_id)
    except (ValueError, OverflowError):
        raise InvalidCursor() from None
    if prefix != "v2" or not 0 < entry_id < 2**63:
        raise InvalidCursor()
    return at, entry_id


def page(items, limit, id_of, encode=encode_cursor):
    """Split one over-fetched row off to know whether another page exists."""
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": encode(id_of(items[-1])) if more else None}
