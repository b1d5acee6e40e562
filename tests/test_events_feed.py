"""GET /api/events: the ledger's credits.changed events and the `events` rows merged in
(time, source, id) order, paged, filtered by type, with the payloads webhooks deliver; on
both dialects."""
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from credits_app.events import catalog, outbox
from credits_app.extensions import db
from credits_app.types import utcnow
from tests.conftest import client_as, new_user


def _emit(app, event_type, data, at, user_id=None):
    with app.app_context(), db.engine.begin() as conn:
        return outbox.emit(conn, event_type, data, at=at, user_id=user_id)


def _feed(client, since, **query):
    r = client.get("/api/events", query_string={"since": since.isoformat(), **query})
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def _walk(client, since, limit, **query):
    """Every event by pages of `limit`: the ids, and the number of pages."""
    ids, pages, cursor = [], 0, None
    while True:
        page = _feed(client, since, limit=limit, **({"cursor": cursor} if cursor else {}), **query)
        ids += [event["id"] for event in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return ids, pages


def _history(app, client):
    """Ledger changes through the API and events around them, some at the very same time as
    an entry; returns (since, the expected ids in order)."""
    uid = new_user(client)
    since = utcnow() - timedelta(seconds=1)
    before = _emit(app, "hold.created", {"n": 0}, since, user_id=uid)
    entries = [client.post(f"/api/credits/{uid}/add", json={"amount": 5}).get_json()["entry"]]
    entries.append(client.post(f"/api/credits/{uid}/deduct", json={"amount": 2}).get_json()["entry"])
    entries.append(client.patch(f"/api/credits/{uid}/reset", json={}).get_json()["entry"])
    with app.app_context():
        times = [row.created_at for row in _entries(app)]
    tied = _emit(app, "balance.low", {"n": 1}, times[1], user_id=uid)  # same time as the deduct: after it
    between = _emit(app, "hold.released", {"n": 2}, times[1] + (times[2] - times[1]) / 2, user_id=uid)
    after = _emit(app, "schema.applied", {"name": "x"}, times[2] + timedelta(milliseconds=1))
    expected = [f"evt_{before}", f"evt_entry_{entries[0]['id']}", f"evt_entry_{entries[1]['id']}", f"evt_{tied}",
                f"evt_{between}", f"evt_entry_{entries[2]['id']}", f"evt_{after}"]
    return since, expected, entries


def _entries(app):
    from credits_app.ledger.records import ENTRY_COLUMNS, entry_from_row
    with db.engine.connect() as conn:
        return [entry_from_row(r) for r in conn.execute(text(f"SELECT {ENTRY_COLUMNS} FROM ledger_entries ORDER BY id"))]


def test_the_feed_merges_ledger_and_events_in_time_order(app, client):
    since, expected, entries = _history(app, client)
    page = _feed(client, since)
    assert [event["id"] for event in page["items"]] == expected and page["next_cursor"] is None
    # Exactly the payloads the catalog renders for a delivery.
    with app.app_context(), db.engine.connect() as conn:
        for event in page["items"]:
            source, row_id = catalog.parse_event_id(event["id"])
            rendered = catalog.render(conn, **({"entry_id": row_id} if source == "entry" else {"event_row_id": row_id}))
            assert event == rendered
    changed = [event for event in page["items"] if event["type"] == "credits.changed"]
    assert [event["data"]["entry"] for event in changed] == entries
    assert [event["data"]["balance_after"] for event in changed] == [5, 3, 0]
    assert page["items"][0]["data"] == {"n": 0} and page["items"][0]["type"] == "hold.created"
    times = [event["timestamp"] for event in page["items"]]
    assert times == sorted(times, key=datetime.fromisoformat)


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_pages_walk_the_same_sequence(app, client, limit):
    since, expected, _ = _history(app, client)
    ids, pages = _walk(client, since, limit)
    assert ids == expected
    assert pages == -(-len(expected) // limit)  # a last full page says there is no more
    assert _walk(client, since, limit, types="credits.changed,balance.low")[0] == [
        i for i in expected if i.startswith("evt_entry_") or i == expected[3]]


def test_since_is_inclusive_and_types_filter(app, client):
    since, expected, _ = _history(app, client)
    everything = _feed(client, since)["items"]
    third = everything[2]
    later = _feed(client, datetime.fromisoformat(third["timestamp"]))["items"]
    assert [e["id"] for e in later] == expected[2:]  # at or after `since`
    assert [e["id"] for e in _feed(client, since, types="credits.changed")["items"]] == [
        i for i in expected if i.startswith("evt_entry_")]
    assert [e["type"] for e in _feed(client, since, types="hold.created,hold.released")["items"]] == [
        "hold.created", "hold.released"]
    assert _feed(client, utcnow() + timedelta(minutes=1)) == {"items": [], "next_cursor": None}


def test_daily_grant_entries_are_not_credits_changed_events(app, client):
    from credits_app import grants
    uid = new_user(client)
    since = utcnow() - timedelta(seconds=1)
    client.post(f"/api/credits/{uid}/add", json={"amount": 1})
    with app.app_context():
        grants.run_date(grants.utc_today())
        kinds = {row.kind for row in _entries(app)}
    assert "daily_grant" in kinds
    changed = _feed(client, since, types="credits.changed")["items"]
    assert [event["data"]["entry"]["kind"] for event in changed] == ["add"]


def test_bad_requests_are_clear(app, client):
    for query in ({}, {"since": "yesterday"}, {"since": "2026-01-01T00:00:00"},
                  {"since": (utcnow() - timedelta(days=31)).isoformat()},
                  {"since": utcnow().isoformat(), "types": "credits.spent"},
                  {"since": utcnow().isoformat(), "limit": 0}, {"since": utcnow().isoformat(), "limit": 201}):
        r = client.get("/api/events", query_string=query)
        assert r.status_code == 422 and r.get_json()["error"]["code"] == "validation_error", (query, r.get_json())
    r = client.get("/api/events", query_string={"since": (utcnow() - timedelta(days=31)).isoformat()})
    assert "EVENTS_RETENTION_DAYS" in r.get_json()["error"]["message"]
    for cursor in ("nope", "ZTE6MTox", "ZTE6MTo1OjE", "djE6MTIz"):
        r = client.get("/api/events", query_string={"since": utcnow().isoformat(), "cursor": cursor})
        assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid_cursor", cursor


def test_events_are_read_by_admins_and_services_only(app):
    since = {"since": utcnow().isoformat()}
    for role, status in (("admin", 200), ("service", 200), ("user", 403)):
        client = client_as(app, role, user_id=1 if role == "user" else None)
        assert client.get("/api/events", query_string=since).status_code == status, role
    assert app.test_client().get("/api/events", query_string=since).status_code == 401


def test_the_openapi_document_describes_every_event_type(app, client):
    spec = client.get("/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    envelopes = [ref["$ref"].rsplit("/", 1)[1] for ref in schemas["Event"]["oneOf"]]
    assert len(envelopes) == len(catalog.EVENT_TYPES)
    assert sorted(schemas[name]["properties"]["type"]["enum"][0] for name in envelopes) == sorted(catalog.EVENT_TYPES)
    for name in envelopes:
        data = schemas[name]["properties"]["data"]["$ref"].rsplit("/", 1)[1]
        assert schemas[data]["properties"], data
    assert schemas["CreditsChangedEvent"]["properties"]["data"] == {"$ref": "#/components/schemas/CreditsChangedData"}
    assert set(schemas["CreditsChangedData"]["properties"]) == {"user_id", "balance_after", "entry"}
    assert spec["paths"]["/api/events"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EventPage"}


def test_a_hold_and_its_capture_are_in_the_feed_as_their_causes_wrote_them(app, client):
    uid = new_user(client)
    since = utcnow() - timedelta(seconds=1)
    client.post(f"/api/credits/{uid}/add", json={"amount": 10})
    made = client.post(f"/api/credits/{uid}/holds", json={"amount": 4}).get_json()
    captured = client.post(f"/api/holds/{made['hold']['hold_id']}/capture", json={"amount": 3}).get_json()
    items = _feed(client, since)["items"]
    assert [e["type"] for e in items] == ["credits.changed", "hold.created", "credits.changed"]
    assert items[1]["data"] == made  # the hold and the balance after it, as the API answered
    assert items[2]["data"]["entry"] == captured["entry"] and items[2]["data"]["balance_after"] == 7
