"""Webhook endpoints: where events go, which types each takes, and the secret that signs them.

An endpoint's secret is shown once, when it is made (creation, rotation), and never read out
again: whoever reads the endpoint later learns its URL and types, not how to forge its
events. A rotation keeps the old secret signing beside the new one until the overlap ends
(each delivery carries one signature per secret), so a receiver can switch without losing a
delivery; a second rotation during an overlap drops the oldest secret.

Each function is one short transaction, as everywhere else. The API and the CLI call these.
"""
import base64
import secrets
from datetime import timedelta

from flask import current_app
from sqlalchemy import bindparam, delete as sql_delete, insert, select, text, update as sql_update

from ..config import BIGINT_MAX
from ..exceptions import InvalidRequest, NotFound
from ..extensions import db
from ..models import EVENT_TYPES, WebhookEndpoint, WebhookSubscription
from ..types import UTCDateTime, utcnow
from . import urls

ENDPOINTS = WebhookEndpoint.__table__
SUBSCRIPTIONS = WebhookSubscription.__table__
MAX_OVERLAP_SECONDS = 30 * 86400
_PUBLIC = ("id", "url", "description", "enabled", "previous_secret_until", "created_by", "created_at", "updated_at")


class EndpointNotFound(NotFound):
    code = "webhook_endpoint_not_found"

    def __init__(self, endpoint_id):
        super().__init__(f"webhook endpoint {endpoint_id} does not exist", endpoint_id=endpoint_id)


def new_secret():
    """A Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def check_event_types(event_types, field="event_types"):
    """The distinct types, in the catalog's order. Raises InvalidRequest for an empty list
    or a type that is not an event type."""
    if not event_types:
        raise InvalidRequest("give at least one event type", field=field, allowed=list(EVENT_TYPES))
    unknown = sorted({t for t in event_types if t not in EVENT_TYPES}, key=str)
    if unknown:
        raise InvalidRequest(f"not an event type: {', '.join(map(str, unknown))}", field=field,
                             allowed=list(EVENT_TYPES))
    return [t for t in EVENT_TYPES if t in set(event_types)]


def create(url, event_types, *, actor, description=None, enabled=True):
    """A new endpoint taking `event_types`, with its secret (the only time it is shown).
    Raises InvalidRequest for a URL that may not receive webhooks (urls.validate) or a bad
    type list."""
    url = urls.validate(url, allow_private=current_app.config["WEBHOOKS_ALLOW_PRIVATE_URLS"])
    types = check_event_types(event_types)
    now, secret = utcnow(), new_secret()
    with db.engine.begin() as conn:
        endpoint_id = conn.execute(insert(ENDPOINTS).values(
            url=url, description=description, enabled=enabled, secret=secret, created_by=actor, created_at=now,
            updated_at=now).returning(ENDPOINTS.c.id)).scalar_one()
        conn.execute(insert(SUBSCRIPTIONS), [{"endpoint_id": endpoint_id, "event_type": t} for t in types])
        return {**_read(conn, endpoint_id), "secret": secret}


def list_endpoints():
    """Every endpoint, oldest first (there are few), without secrets."""
    with db.engine.connect() as conn:
        rows = conn.execute(select(*(ENDPOINTS.c[c] for c in _PUBLIC)).order_by(ENDPOINTS.c.id)).all()
        types = _types(conn, [row.id for row in rows])
    return [_json(row, types.get(row.id, [])) for row in rows]


def get(endpoint_id):
    """One endpoint, without its secret. Raises EndpointNotFound."""
    _check_id(endpoint_id)
    with db.engine.connect() as conn:
        return _read(conn, endpoint_id)


_DUE_NOW = text("UPDATE webhook_deliveries SET next_attempt_at = :now WHERE endpoint_id = :endpoint "
                "AND status = 'pending' AND next_attempt_at > :now").bindparams(bindparam("now", type_=UTCDateTime))


def update(endpoint_id, **changes):
    """Change the fields given among url, event_types, description (None empties it) and
    enabled; `event_types` replaces the subscriptions. Events already written keep their
    deliveries. Raises EndpointNotFound, InvalidRequest."""
    _check_id(endpoint_id)
    unknown = set(changes) - {"url", "event_types", "description", "enabled"}
    if unknown:
        raise TypeError(f"update() got unexpected fields {sorted(unknown)}")
    values = {"updated_at": utcnow()}
    if "url" in changes:
        values["url"] = urls.validate(changes["url"], allow_private=current_app.config["WEBHOOKS_ALLOW_PRIVATE_URLS"])
    if "description" in changes:
        values["description"] = changes["description"]
    if "enabled" in changes:
        values["enabled"] = bool(changes["enabled"])
    types = check_event_types(changes["event_types"]) if "event_types" in changes else None
    with db.engine.begin() as conn:
        was_enabled = conn.execute(select(ENDPOINTS.c.enabled).where(ENDPOINTS.c.id == endpoint_id)).scalar()
        changed = conn.execute(sql_update(ENDPOINTS).where(ENDPOINTS.c.id == endpoint_id).values(**values)).rowcount
        if not changed:
            raise EndpointNotFound(endpoint_id)
        if types is not None:
            conn.execute(sql_delete(SUBSCRIPTIONS).where(SUBSCRIPTIONS.c.endpoint_id == endpoint_id))
            conn.execute(insert(SUBSCRIPTIONS), [{"endpoint_id": endpoint_id, "event_type": t} for t in types])
        if values.get("enabled") and not was_enabled:
            # While disabled, the dispatcher parked its due deliveries (dispatcher.park): enabled
            # again, everything it is owed is due now.
            conn.execute(_DUE_NOW, {"endpoint": endpoint_id, "now": values["updated_at"]})
        return _read(conn, endpoint_id)


def delete(endpoint_id):
    """Delete an endpoint; its subscriptions, deliveries and their attempts go with it (the
    foreign keys cascade). Raises EndpointNotFound."""
    _check_id(endpoint_id)
    with db.engine.begin() as conn:
        if not conn.execute(sql_delete(ENDPOINTS).where(ENDPOINTS.c.id == endpoint_id)).rowcount:
            raise EndpointNotFound(endpoint_id)


def rotate_secret(endpoint_id, *, overlap_seconds=None):
    """A new secret (shown this once); the current one keeps signing beside it for
    `overlap_seconds` (default WEBHOOKS_SECRET_OVERLAP_SECONDS; 0: it stops at once). A
    secret older than the current one stops now. Raises EndpointNotFound, InvalidRequest."""
    _check_id(endpoint_id)
    if overlap_seconds is None:
        overlap_seconds = current_app.config["WEBHOOKS_SECRET_OVERLAP_SECONDS"]
    if (not isinstance(overlap_seconds, int) or isinstance(overlap_seconds, bool)
            or not 0 <= overlap_seconds <= MAX_OVERLAP_SECONDS):
        raise InvalidRequest(f"overlap_seconds must be an integer from 0 to {MAX_OVERLAP_SECONDS}",
                             field="overlap_seconds")
    now, secret = utcnow(), new_secret()
    # The old secret is read by the UPDATE itself (SET sees the row's old values), so two
    # rotations at once cannot both keep the same one.
    keep = overlap_seconds > 0
    with db.engine.begin() as conn:
        changed = conn.execute(sql_update(ENDPOINTS).where(ENDPOINTS.c.id == endpoint_id).values(
            secret=secret, previous_secret=ENDPOINTS.c.secret if keep else None,
            previous_secret_until=now + timedelta(seconds=overlap_seconds) if keep else None,
            updated_at=now)).rowcount
        if not changed:
            raise EndpointNotFound(endpoint_id)
        return {**_read(conn, endpoint_id), "secret": secret}


def _check_id(endpoint_id):
    if not isinstance(endpoint_id, int) or isinstance(endpoint_id, bool) or not 1 <= endpoint_id <= BIGINT_MAX:
        raise EndpointNotFound(endpoint_id)


def _read(conn, endpoint_id):
    row = conn.execute(select(*(ENDPOINTS.c[c] for c in _PUBLIC)).where(ENDPOINTS.c.id == endpoint_id)).first()
    if row is None:
        raise EndpointNotFound(endpoint_id)
    return _json(row, _types(conn, [endpoint_id]).get(endpoint_id, []))


def _types(conn, endpoint_ids):
    if not endpoint_ids:
        return {}
    found = {}
    for endpoint_id, event_type in conn.execute(select(SUBSCRIPTIONS.c.endpoint_id, SUBSCRIPTIONS.c.event_type)
                                                .where(SUBSCRIPTIONS.c.endpoint_id.in_(endpoint_ids))):
        found.setdefault(endpoint_id, set()).add(event_type)
    return {e: [t for t in EVENT_TYPES if t in types] for e, types in found.items()}


def _json(row, event_types):
    """An endpoint as the API answers it (EndpointOut documents it)."""
    # The previous secret is named only while it still signs.
    until = row.previous_secret_until
    if until is not None and until <= utcnow():
        until = None
    return {"endpoint_id": row.id, "url": row.url, "description": row.description, "enabled": row.enabled,
            "event_types": event_types, "created_by": row.created_by, "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat(), "previous_secret_until": None if until is None
            else until.isoformat()}
