"""/api/events: the events since a time, for clients that poll instead of taking webhooks.
Thin: parse, call events.feed, send. The cursor is this module's: a page's last position."""
import base64
from datetime import datetime, timedelta, timezone

from flask import jsonify

from ..auth.access import require
from ..events import feed
from .common import Blueprint, InvalidCursor
from .schemas import ErrorOut
from .webhook_schemas import EventArgs

blp = Blueprint("events", __name__, url_prefix="/api", description="Events, for clients that poll")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@blp.route("/events", methods=["GET"])
@require("events:read")
@blp.arguments(EventArgs(), location="query")
@blp.response(200, "EventPage")
@blp.alt_response(400, schema=ErrorOut, description="invalid_cursor")
@blp.alt_response(422, schema=ErrorOut, description="validation_error (since outside EVENTS_RETENTION_DAYS)")
def list_events(args):
    """Events at or after `since`, oldest first, each exactly as a webhook delivers it; only
    `types` if given. Pass `next_cursor` back as `cursor` (same since and types) for the
    next page. An event's time is taken before its transaction commits, so one committed
    later can carry an earlier time: poll again from a few seconds before the newest time
    seen and drop the ids already seen (an event's id never changes)."""
    items, last = feed.events(args["since"], types=args.get("types"), limit=args["limit"],
                              after=_decode(args["cursor"]))
    return jsonify({"items": items, "next_cursor": None if last is None else _encode(last)})


def _encode(position):
    at, source, row_id = position
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"e1:{micros}:{source}:{row_id}".encode()).decode().rstrip("=")


def _decode(cursor):
    """(created_at, source, id) after which a page continues, or None."""
    if cursor is None:
        return None
    try:
        prefix, micros, source, row_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split(":")
        at, source, row_id = _EPOCH + timedelta(microseconds=int(micros)), int(source), int(row_id)
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise InvalidCursor() from None
    if prefix != "e1" or source not in (feed.ENTRY, feed.EVENT) or not 0 < row_id < 2**63:
        raise InvalidCursor()
    return at, source, row_id
