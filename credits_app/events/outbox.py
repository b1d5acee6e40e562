"""Writing events and their deliveries inside the transaction of their cause.

Python paths (SQLite's changes, holds, reversals, the grant's bookkeeping, schema updates)
call emit() and entry_deliveries() on the connection of their transaction. PostgreSQL's
one-statement change embeds the same INSERTs as CTEs (PG_*), so it stays one round trip.
A delivery is written only for enabled endpoints subscribed to the type: with none, writing
events costs the lookup of an empty subscription list.
"""
import json

from sqlalchemy import bindparam, text

from ..types import UTCDateTime
from .catalog import CHANGE_KINDS

# The endpoints that take `type`, as a join (the subscription table is small and indexed by type).
_SUBSCRIBED = ("JOIN webhook_subscriptions s ON s.event_type = {type} "
               "JOIN webhook_endpoints e ON e.id = s.endpoint_id AND e.enabled")

_EVENT = text("INSERT INTO events (event_type, user_id, data, created_at) VALUES (:type, :uid, :data, :at) "
              "RETURNING id").bindparams(bindparam("at", type_=UTCDateTime))
_EVENT_DELIVERIES = text(
    "INSERT INTO webhook_deliveries (endpoint_id, event_id, status, attempts, next_attempt_at, created_at) "
    "SELECT s.endpoint_id, :eid, 'pending', 0, :at, :at FROM (SELECT 1) AS one "
    + _SUBSCRIBED.format(type=":type")).bindparams(bindparam("at", type_=UTCDateTime))
_ENTRY_DELIVERIES = text(
    "INSERT INTO webhook_deliveries (endpoint_id, entry_id, status, attempts, next_attempt_at, created_at) "
    "SELECT s.endpoint_id, :entry_id, 'pending', 0, :at, :at FROM (SELECT 1) AS one "
    + _SUBSCRIBED.format(type="'credits.changed'")).bindparams(bindparam("at", type_=UTCDateTime))


def emit(conn, event_type, data, *, at, user_id=None):
    """Write an event of `event_type` (not credits.changed) with its deliveries; its row id."""
    event = conn.execute(_EVENT, {"type": event_type, "uid": user_id, "data": json.dumps(data), "at": at}).scalar_one()
    conn.execute(_EVENT_DELIVERIES, {"eid": event, "type": event_type, "at": at})
    return event


def entry_deliveries(conn, entry):
    """The deliveries of a ledger entry's credits.changed event (records.Entry)."""
    if entry.kind in CHANGE_KINDS:
        conn.execute(_ENTRY_DELIVERIES, {"entry_id": entry.id, "at": entry.created_at})


# PostgreSQL: CTE bodies for the change statement. {entry} names the CTE that returned the
# ledger entry (id, created_at); {events} the one that returned the events (id, event_type,
# created_at).
PG_ENTRY_DELIVERIES = (
    "INSERT INTO webhook_deliveries (endpoint_id, entry_id, status, attempts, next_attempt_at, created_at) "
    "SELECT s.endpoint_id, {entry}.id, 'pending', 0, {entry}.created_at, {entry}.created_at FROM {entry} "
    + _SUBSCRIBED.format(type="'credits.changed'"))
PG_EVENT_DELIVERIES = (
    "INSERT INTO webhook_deliveries (endpoint_id, event_id, status, attempts, next_attempt_at, created_at) "
    "SELECT s.endpoint_id, {events}.id, 'pending', 0, {events}.created_at, {events}.created_at FROM {events} "
    + _SUBSCRIBED.format(type="{events}.event_type"))
