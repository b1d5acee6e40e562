"""The events since a time, for clients that poll instead of taking webhooks.

Both sources, merged: credits.changed events are read from the ledger (the entries of
CHANGE_KINDS), every other type from `events`. They come in (time, source, id) order, the
ledger's first at equal times, with payloads exactly as webhooks deliver them
(catalog.entry_event, catalog.row_event).

Polling: an event's time is taken before its transaction commits, so a transaction that
commits later can carry an earlier time than events already read. A poller therefore asks
again from a little before the newest time it has seen (a few seconds cover any commit) and
drops the ids it already has; ids never change. A cursor continues one reading; it is not a
bookmark across polls.

`since` must lie within EVENTS_RETENTION_DAYS: `events` rows older than that are pruned,
and one rule for both sources keeps a poll from silently missing a type.
"""
from datetime import timedelta

from flask import current_app
from sqlalchemy import bindparam, text

from ..config import BIGINT_MAX
from ..exceptions import InvalidRequest
from ..extensions import db
from ..ledger.records import ENTRY_COLUMNS, entry_from_row
from ..models import EVENT_TYPES
from ..types import UTCDateTime, utcnow
from .catalog import CHANGE_KINDS, entry_event, row_event

ENTRY, EVENT = 0, 1  # the source's rank among events of the same time
_KINDS = ", ".join(f"'{kind}'" for kind in CHANGE_KINDS)
_ENTRIES = text(f"SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE kind IN ({_KINDS}) "
                "AND (created_at, id) > (:at, :id) ORDER BY created_at, id LIMIT :limit").bindparams(
    bindparam("at", type_=UTCDateTime)).columns(created_at=UTCDateTime)
_EVENTS = text("SELECT id, event_type, data, created_at FROM events WHERE event_type IN :types "
               "AND (created_at, id) > (:at, :id) ORDER BY created_at, id LIMIT :limit").bindparams(
    bindparam("at", type_=UTCDateTime), bindparam("types", expanding=True)).columns(created_at=UTCDateTime)


def check_since(since, field="since"):
    """Raise InvalidRequest unless `since` is within EVENTS_RETENTION_DAYS of now."""
    days = current_app.config["EVENTS_RETENTION_DAYS"]
    earliest = utcnow() - timedelta(days=days)
    if since < earliest:
        raise InvalidRequest(f"{field} must be within the last {days} days (EVENTS_RETENTION_DAYS): events older "
                             f"than that are pruned", field=field, earliest=earliest.isoformat(),
                             retention_days=days)


def check_types(types, field="types"):
    """The distinct types asked for, in the catalog's order (every type for None). Raises
    InvalidRequest for a name that is not an event type."""
    if types is None:
        return list(EVENT_TYPES)
    unknown = sorted({t for t in types if t not in EVENT_TYPES}, key=str)
    if unknown or not types:
        raise InvalidRequest(f"not an event type: {', '.join(map(str, unknown))}" if unknown
                             else "give at least one event type", field=field, allowed=list(EVENT_TYPES))
    return [t for t in EVENT_TYPES if t in set(types)]


def events(since, *, types=None, limit, after=None):
    """At most `limit` events at or after `since` (and after the position `after`, a page's
    last (time, source, id)), oldest first, of `types` (default all). Returns (payloads,
    position of the last, or None when no more events exist now). Raises InvalidRequest for
    a `since` outside the retention or an unknown type."""
    check_since(since)
    types = check_types(types)
    at, source, last_id = after if after is not None and after > (since, ENTRY, 0) else (since, ENTRY, 0)
    found = []
    with db.engine.connect() as conn:
        if "credits.changed" in types:
            # The ledger's events at `at` come first: after an entry, the later entries; after
            # an `events` row, none of that time.
            start = last_id if source == ENTRY else BIGINT_MAX
            found += [((e.created_at, ENTRY, e.id), entry_event(e)) for e in map(entry_from_row, conn.execute(
                _ENTRIES, {"at": at, "id": start, "limit": limit + 1}))]
        others = [t for t in types if t != "credits.changed"]
        if others:
            start = last_id if source == EVENT else 0
            found += [((row.created_at, EVENT, row.id), row_event(row)) for row in conn.execute(
                _EVENTS, {"types": others, "at": at, "id": start, "limit": limit + 1})]
    found.sort(key=lambda item: item[0])
    more = len(found) > limit
    found = found[:limit]
    return [payload for _, payload in found], (found[-1][0] if more else None)
