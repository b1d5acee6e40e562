"""The event types, their ids, and their payloads as delivered and polled.

A payload is `{"id", "type", "timestamp", "data"}` (the Standard Webhooks shape, with the
id repeated in the body for clients that poll). It is built from rows that never change (a
ledger entry, an `events` row), so every delivery of an event carries the same bytes but
its signature's timestamp.
"""
import json
import re

from sqlalchemy import text

from ..ledger.records import ENTRY_COLUMNS, entry_from_row, entry_json, iso
from ..models import EVENT_TYPES
from ..types import UTCDateTime

# The ledger kinds that are credits.changed events. The daily grant's entries are not: one
# grant.run.completed per run says the same without a million per-user events.
CHANGE_KINDS = ("add", "deduct", "reset", "reversal", "capture")
_ID = re.compile(r"^evt_(entry_)?([1-9][0-9]{0,18})$")


def event_id(*, entry_id=None, event_row_id=None):
    """The stable id of an event: of a ledger entry (credits.changed) or of an `events` row."""
    return f"evt_entry_{entry_id}" if entry_id is not None else f"evt_{event_row_id}"


def parse_event_id(value):
    """("entry", id) or ("event", id) for an event id, or None if it is not one."""
    match = _ID.match(value or "")
    if match is None or int(match.group(2)) >= 2**63:
        return None
    return ("entry" if match.group(1) else "event", int(match.group(2)))


_ENTRY = text(f"SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE id = :id").columns(created_at=UTCDateTime)
_EVENT = text("SELECT id, event_type, data, created_at FROM events WHERE id = :id").columns(created_at=UTCDateTime)


def entry_event(entry):
    """The credits.changed event of a ledger entry (records.Entry)."""
    return {"id": event_id(entry_id=entry.id), "type": "credits.changed", "timestamp": iso(entry.created_at),
            "data": {"user_id": entry.user_id, "balance_after": entry.balance_after, "entry": entry_json(entry)}}


def row_event(row):
    """The event of an `events` row (id, event_type, data, created_at)."""
    return {"id": event_id(event_row_id=row.id), "type": row.event_type, "timestamp": iso(row.created_at),
            "data": json.loads(row.data)}


def render(conn, *, entry_id=None, event_row_id=None):
    """The payload of one event, read on `conn`; None if its row is gone (pruned)."""
    if entry_id is not None:
        row = conn.execute(_ENTRY, {"id": entry_id}).first()
        return None if row is None else entry_event(entry_from_row(row))
    row = conn.execute(_EVENT, {"id": event_row_id}).first()
    return None if row is None else row_event(row)


__all__ = ["EVENT_TYPES", "CHANGE_KINDS", "event_id", "parse_event_id", "entry_event", "row_event", "render"]
