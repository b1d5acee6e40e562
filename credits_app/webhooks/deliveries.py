"""Deliveries as operators see them, and sending events again: retry one delivery, replay an
endpoint's events since a time.

A delivery is one event for one endpoint (UNIQUE per endpoint and event): sending an event
again sets its delivery pending and due now, with a fresh count of attempts toward the dead
letter; its event id stays the same, so a receiver that de-duplicates by id sees one event.
The attempt rows stay as its history.
"""
from datetime import datetime, timezone

from sqlalchemy import bindparam, exc, select, text

from ..config import BIGINT_MAX
from ..events.catalog import CHANGE_KINDS, event_id
from ..events.feed import check_since, check_types
from ..exceptions import Conflict, InvalidRequest, NotFound
from ..extensions import db
from ..models import WebhookDelivery
from ..types import UTCDateTime, utcnow
from . import endpoints

STATUSES = ("pending", "delivered", "dead")
HISTORY = 25  # the latest attempts shown with a delivery
REPLAY_BATCH = 5000  # events queued per transaction by a replay

_DELIVERIES = WebhookDelivery.__table__
_LIST = text("SELECT d.id, d.endpoint_id, d.entry_id, d.event_id, e.event_type, d.status, d.attempts, "
             "d.next_attempt_at, d.last_attempt_at, d.last_status_code, d.last_error, d.created_at, d.delivered_at "
             "FROM webhook_deliveries d LEFT JOIN events e ON e.id = d.event_id WHERE d.id IN :ids "
             "ORDER BY d.id DESC").bindparams(bindparam("ids", expanding=True)).columns(
    next_attempt_at=UTCDateTime, last_attempt_at=UTCDateTime, created_at=UTCDateTime, delivered_at=UTCDateTime)
_ATTEMPTS = text("SELECT delivery_id, attempted_at, duration_ms, status_code, error FROM ("
                 "SELECT a.*, ROW_NUMBER() OVER (PARTITION BY delivery_id ORDER BY id DESC) AS n "
                 "FROM webhook_attempts a WHERE delivery_id IN :ids) AS t "
                 f"WHERE n <= {HISTORY} ORDER BY delivery_id, id DESC").bindparams(
    bindparam("ids", expanding=True)).columns(attempted_at=UTCDateTime)
_RETRY = text("UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = :now "
              "WHERE id = :id AND status <> 'delivered'").bindparams(bindparam("now", type_=UTCDateTime))

# Replay: each batch of a source's events, in (time, id) order, upserted into the deliveries.
_UPSERT = ("INSERT INTO webhook_deliveries (endpoint_id, {column}, status, attempts, next_attempt_at, created_at) "
           "SELECT :endpoint, s.id, 'pending', 0, :now, :now FROM {table} s WHERE {where} "
           "AND (s.created_at, s.id) > (:from_at, :from_id) AND (s.created_at, s.id) <= (:to_at, :to_id) "
           "ON CONFLICT (endpoint_id, {column}) DO UPDATE SET status = 'pending', attempts = 0, "
           "next_attempt_at = excluded.next_attempt_at, delivered_at = NULL")
# (created_at, id) > (since, 0) is created_at >= since: ids start at 1.
_BOUNDARY = ("SELECT created_at, id FROM {table} s WHERE {where} AND (s.created_at, s.id) > (:from_at, :from_id) "
             "ORDER BY created_at, id LIMIT 1 OFFSET :offset")
_SOURCES = {"ledger": ("entry_id", "ledger_entries", "s.kind IN (" + ", ".join(f"'{k}'" for k in CHANGE_KINDS) + ")"),
            "events": ("event_id", "events", "s.event_type IN :types")}
_LATEST = datetime(9999, 12, 31, tzinfo=timezone.utc)


class DeliveryNotFound(NotFound):
    code = "webhook_delivery_not_found"

    def __init__(self, delivery_id):
        super().__init__(f"webhook delivery {delivery_id} does not exist", delivery_id=delivery_id)


class AlreadyDelivered(Conflict):
    code = "delivery_already_delivered"

    def __init__(self, delivery_id):
        super().__init__(f"webhook delivery {delivery_id} was delivered; replay its endpoint's events to send it "
                         "again", delivery_id=delivery_id)


def deliveries(*, endpoint_id=None, status=None, limit, before=None):
    """Deliveries newest first (by id, below `before`), of one endpoint and with one status
    if given, each with its latest attempts."""
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}", field="status")
    query = select(_DELIVERIES.c.id).where(_DELIVERIES.c.id < (before or BIGINT_MAX))
    if endpoint_id is not None:
        query = query.where(_DELIVERIES.c.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(_DELIVERIES.c.status == status)
    with db.engine.connect() as conn:
        ids = conn.execute(query.order_by(_DELIVERIES.c.id.desc()).limit(limit)).scalars().all()
        return _read(conn, ids)


def get(delivery_id):
    """One delivery with its latest attempts. Raises DeliveryNotFound."""
    _check_id(delivery_id)
    with db.engine.connect() as conn:
        found = _read(conn, [delivery_id])
    if not found:
        raise DeliveryNotFound(delivery_id)
    return found[0]


def retry(delivery_id):
    """Set a dead or pending delivery pending, due now, with no attempts counted toward the
    dead letter. Raises DeliveryNotFound, AlreadyDelivered."""
    _check_id(delivery_id)
    with db.engine.begin() as conn:
        if not conn.execute(_RETRY, {"id": delivery_id, "now": utcnow()}).rowcount:
            exists = conn.execute(select(_DELIVERIES.c.status).where(_DELIVERIES.c.id == delivery_id)).scalar()
            raise DeliveryNotFound(delivery_id) if exists is None else AlreadyDelivered(delivery_id)
        return _read(conn, [delivery_id])[0]


def replay(endpoint_id, since, *, types=None):
    """Queue again every event at or after `since` of the endpoint's types (only `types`, if
    given; each must be one the endpoint takes): a new delivery, or the existing one set
    pending and due now. Returns {endpoint_id, since, event_types, queued}: how many were
    queued, of which types. Raises EndpointNotFound,
    InvalidRequest (since outside EVENTS_RETENTION_DAYS, a type the endpoint does not take)."""
    endpoint = endpoints.get(endpoint_id)
    check_since(since)
    subscribed = endpoint["event_types"]
    if types is not None:
        types = check_types(types)
        missing = [t for t in types if t not in subscribed]
        if missing:
            raise InvalidRequest(f"endpoint {endpoint_id} does not take {', '.join(missing)}", field="types",
                                 event_types=subscribed)
    else:
        types = subscribed
    others = [t for t in types if t != "credits.changed"]
    params = {"endpoint": endpoint_id, "now": utcnow(), "types": others}
    try:
        queued = ((_replay_source("ledger", since, params) if "credits.changed" in types else 0)
                  + (_replay_source("events", since, params) if others else 0))
    except exc.IntegrityError:  # the endpoint was deleted meanwhile
        raise endpoints.EndpointNotFound(endpoint_id) from None
    return {"endpoint_id": endpoint_id, "since": since.isoformat(), "event_types": types, "queued": queued}


def _replay_source(source, since, params):
    """Upsert the source's deliveries in batches of REPLAY_BATCH events, a transaction each:
    no replay holds a long transaction, and one cut short is simply run again."""
    column, table, where = _SOURCES[source]
    upsert, boundary = _statements(column, table, where)
    queued, position = 0, (since, 0)
    while True:
        with db.engine.begin() as conn:
            batch = {**params, "from_at": position[0], "from_id": position[1]}
            last = conn.execute(boundary, {**batch, "offset": REPLAY_BATCH - 1}).first()
            to = (last.created_at, last.id) if last is not None else (_LATEST, BIGINT_MAX)
            queued += conn.execute(upsert, {**batch, "to_at": to[0], "to_id": to[1]}).rowcount
        if last is None:
            return queued
        position = to


def _statements(column, table, where):
    times = (bindparam("now", type_=UTCDateTime), bindparam("from_at", type_=UTCDateTime),
             bindparam("to_at", type_=UTCDateTime))
    expanding = (bindparam("types", expanding=True),) if ":types" in where else ()
    upsert = text(_UPSERT.format(column=column, table=table, where=where)).bindparams(*times, *expanding)
    boundary = text(_BOUNDARY.format(table=table, where=where)).bindparams(times[1], *expanding).columns(
        created_at=UTCDateTime)
    return upsert, boundary


def _check_id(delivery_id):
    if not isinstance(delivery_id, int) or isinstance(delivery_id, bool) or not 1 <= delivery_id <= BIGINT_MAX:
        raise DeliveryNotFound(delivery_id)


def _read(conn, ids):
    if not ids:
        return []
    history = {}
    for a in conn.execute(_ATTEMPTS, {"ids": list(ids)}):
        history.setdefault(a.delivery_id, []).append({
            "attempted_at": a.attempted_at.isoformat(), "duration_ms": a.duration_ms, "status_code": a.status_code,
            "error": a.error})
    return [_json(row, history.get(row.id, [])) for row in conn.execute(_LIST, {"ids": list(ids)})]


def _json(row, attempts):
    """A delivery as the API answers it (DeliveryOut documents it)."""
    def iso(value):
        return None if value is None else value.isoformat()
    return {"delivery_id": row.id, "endpoint_id": row.endpoint_id,
            "event_id": event_id(entry_id=row.entry_id, event_row_id=row.event_id),
            "event_type": row.event_type or "credits.changed", "status": row.status, "attempts": row.attempts,
            "next_attempt_at": iso(row.next_attempt_at), "last_attempt_at": iso(row.last_attempt_at),
            "last_status_code": row.last_status_code, "last_error": row.last_error,
            "created_at": iso(row.created_at), "delivered_at": iso(row.delivered_at), "attempt_history": attempts}
