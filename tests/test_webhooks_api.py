"""Webhook endpoints, deliveries, retry and replay through the API and the CLI, on both
dialects: a secret shown once, rotation with an overlap, URLs that may not receive webhooks
refused, deliveries listed and sent again with the same event id."""
import base64
import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import bindparam, text
from standardwebhooks import Webhook

from credits_app.events import outbox
from credits_app.extensions import db
from credits_app.types import UTCDateTime, utcnow
from tests.conftest import client_as, make_app, new_user

# A public address written as a literal: it needs no DNS, and nothing is sent to it here.
PUBLIC = "https://93.184.215.14/credits-hooks"
PRIVATE = ["http://127.0.0.1:8080/hook", "http://localhost/hook", "http://10.1.2.3/hook", "http://192.168.0.7/hook",
           "http://172.16.5.5/hook", "http://169.254.169.254/latest/meta-data", "http://[::1]:9000/hook",
           "http://[fe80::1]/hook", "http://0.0.0.0/hook", "http://[::ffff:127.0.0.1]/hook", "http://100.64.0.1/hook",
           "http://224.0.0.1/hook", "http://240.0.0.1/hook"]


def _create(client, url=PUBLIC, types=("hold.created",), **extra):
    r = client.post("/api/webhooks/endpoints", json={"url": url, "event_types": list(types), **extra})
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def _sql(sql, params):
    """`sql` with its datetime parameters bound as the columns' UTC type."""
    return text(sql).bindparams(*(bindparam(k, type_=UTCDateTime) for k, v in params.items()
                                  if isinstance(v, datetime)))


def _rows(app, sql, **params):
    with app.app_context(), db.engine.connect() as conn:
        return conn.execute(_sql(sql, params), params).all()


def _execute(app, sql, **params):
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(_sql(sql, params), params)


def _emit(app, event_type, data, at, user_id=None):
    with app.app_context(), db.engine.begin() as conn:
        return outbox.emit(conn, event_type, data, at=at, user_id=user_id)


def _error(response, status, code):
    assert response.status_code == status, (response.status_code, response.get_json())
    body = response.get_json()
    assert body["error"]["code"] == code, body
    return body["error"]


# ---- endpoints -------------------------------------------------------------------------------

def test_create_shows_the_secret_once_and_never_again(app, client):
    created = _create(client, types=["hold.created", "credits.changed", "hold.created"], description="billing")
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[len("whsec_"):], validate=True)) == 32
    # The receiver-side library takes it as it is.
    signer, at = Webhook(secret), utcnow()
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(int(at.timestamp())),
               "webhook-signature": signer.sign("evt_1", at, '{"a": 1}')}
    assert signer.verify('{"a": 1}', headers) == {"a": 1}
    assert created["event_types"] == ["credits.changed", "hold.created"]  # distinct, in the catalog's order
    assert (created["url"], created["description"], created["enabled"]) == (PUBLIC, "billing", True)
    assert created["created_by"] == "test-admin" and created["previous_secret_until"] is None
    endpoint_id = created["endpoint_id"]
    shown = client.get(f"/api/webhooks/endpoints/{endpoint_id}").get_json()
    listed = client.get("/api/webhooks/endpoints").get_json()["items"]
    assert listed == [shown] and shown == {k: v for k, v in created.items() if k != "secret"}
    for answer in (shown, listed):
        assert secret not in json.dumps(answer) and "secret" not in shown
    assert _rows(app, "SELECT secret FROM webhook_endpoints")[0].secret == secret
    assert _create(client)["secret"] != secret  # each endpoint its own


def test_update_changes_what_is_given_and_delete_removes_everything(app, client):
    endpoint_id = _create(client, types=["hold.created", "balance.low"], description="old")["endpoint_id"]
    r = client.patch(f"/api/webhooks/endpoints/{endpoint_id}", json={"event_types": ["schema.applied"]})
    assert r.status_code == 200 and r.get_json()["event_types"] == ["schema.applied"]
    assert r.get_json()["description"] == "old"
    r = client.patch(f"/api/webhooks/endpoints/{endpoint_id}",
                     json={"url": PUBLIC + "/v2", "description": None, "enabled": False})
    got = r.get_json()
    assert (got["url"], got["description"], got["enabled"]) == (PUBLIC + "/v2", None, False)
    assert _rows(app, "SELECT event_type FROM webhook_subscriptions") == [("schema.applied",)]
    assert client.patch(f"/api/webhooks/endpoints/{endpoint_id}", json={}).status_code == 200

    _emit(app, "schema.applied", {"name": "x"}, utcnow())  # no delivery: the endpoint is disabled
    client.patch(f"/api/webhooks/endpoints/{endpoint_id}", json={"enabled": True})
    _emit(app, "schema.applied", {"name": "y"}, utcnow())
    delivery = _rows(app, "SELECT id FROM webhook_deliveries")[0].id
    _execute(app, "INSERT INTO webhook_attempts (delivery_id, attempted_at, duration_ms, status_code) "
                  "VALUES (:d, :at, 5, 500)", d=delivery, at=utcnow())
    r = client.delete(f"/api/webhooks/endpoints/{endpoint_id}")
    assert r.status_code == 204 and r.data == b""
    for table in ("webhook_endpoints", "webhook_subscriptions", "webhook_deliveries", "webhook_attempts"):
        assert _rows(app, f"SELECT COUNT(*) FROM {table}")[0][0] == 0, table
    assert _rows(app, "SELECT COUNT(*) FROM events")[0][0] == 2  # events outlive their endpoints
    _error(client.get(f"/api/webhooks/endpoints/{endpoint_id}"), 404, "webhook_endpoint_not_found")
    _error(client.delete(f"/api/webhooks/endpoints/{endpoint_id}"), 404, "webhook_endpoint_not_found")
    _error(client.patch(f"/api/webhooks/endpoints/{endpoint_id}", json={"enabled": True}), 404,
           "webhook_endpoint_not_found")


def test_rotation_keeps_the_previous_secret_signing_for_the_overlap(app, client):
    created = _create(client)
    endpoint_id, first = created["endpoint_id"], created["secret"]

    def stored():
        return _rows(app, "SELECT secret, previous_secret, previous_secret_until FROM webhook_endpoints")[0]

    before = utcnow()
    rotated = client.post(f"/api/webhooks/endpoints/{endpoint_id}/rotate-secret").get_json()
    second = rotated["secret"]
    assert second.startswith("whsec_") and second != first
    row = stored()
    assert (row.secret, row.previous_secret) == (second, first)
    until = datetime.fromisoformat(rotated["previous_secret_until"])
    assert before + timedelta(seconds=86400) <= until <= utcnow() + timedelta(seconds=86400)  # the default overlap
    assert "secret" not in client.get(f"/api/webhooks/endpoints/{endpoint_id}").get_json()

    # A second rotation during the overlap: the current secret becomes the previous one.
    third = client.post(f"/api/webhooks/endpoints/{endpoint_id}/rotate-secret", json={"overlap_seconds": 60})
    third = third.get_json()
    assert (stored().secret, stored().previous_secret) == (third["secret"], second)
    assert datetime.fromisoformat(third["previous_secret_until"]) <= utcnow() + timedelta(seconds=60)

    # No overlap: the old secret stops at once.
    last = client.post(f"/api/webhooks/endpoints/{endpoint_id}/rotate-secret", json={"overlap_seconds": 0}).get_json()
    assert last["previous_secret_until"] is None
    assert tuple(stored()) == (last["secret"], None, None)
    _error(client.post("/api/webhooks/endpoints/999/rotate-secret"), 404, "webhook_endpoint_not_found")


@pytest.mark.parametrize("url", PRIVATE)
def test_private_and_loopback_urls_are_refused_by_default(client, url):
    error = _error(client.post("/api/webhooks/endpoints", json={"url": url, "event_types": ["hold.created"]}), 422,
                   "validation_error")
    assert "WEBHOOKS_ALLOW_PRIVATE_URLS" in error["message"] and "url" in error["details"]["fields"]
    endpoint_id = _create(client)["endpoint_id"]
    _error(client.patch(f"/api/webhooks/endpoints/{endpoint_id}", json={"url": url}), 422, "validation_error")


def test_private_urls_are_allowed_with_the_setting(app):
    allowing = make_app(app.config["SQLALCHEMY_DATABASE_URI"], WEBHOOKS_ALLOW_PRIVATE_URLS="true")
    try:
        client = client_as(allowing)
        for url in PRIVATE[:8]:
            assert _create(client, url=url)["url"] == url
        # Unresolvable is refused whatever the setting.
        _error(client.post("/api/webhooks/endpoints", json={"url": "http://no-such-host.invalid/",
                                                            "event_types": ["hold.created"]}), 422, "validation_error")
    finally:
        with allowing.app_context():
            db.engine.dispose()


@pytest.mark.parametrize("body, field", [
    ({"url": PUBLIC, "event_types": ["credits.spent"]}, "event_types"),
    ({"url": PUBLIC, "event_types": []}, "event_types"),
    ({"url": PUBLIC, "event_types": "hold.created"}, "event_types"),
    ({"url": PUBLIC}, "event_types"),
    ({"event_types": ["hold.created"]}, "url"),
    ({"url": "ftp://93.184.215.14/x", "event_types": ["hold.created"]}, "url"),
    ({"url": "https://user:pw@93.184.215.14/x", "event_types": ["hold.created"]}, "url"),
    ({"url": "https:///path-only", "event_types": ["hold.created"]}, "url"),
    ({"url": "not a url", "event_types": ["hold.created"]}, "url"),
    ({"url": "https://93.184.215.14:99999/x", "event_types": ["hold.created"]}, "url"),
    ({"url": PUBLIC + "/" + "a" * 2048, "event_types": ["hold.created"]}, "url"),
    ({"url": "https://no-such-host.invalid/x", "event_types": ["hold.created"]}, "url"),
    ({"url": PUBLIC, "event_types": ["hold.created"], "enabled": "yes"}, "enabled"),
    ({"url": PUBLIC, "event_types": ["hold.created"], "description": "x" * 501}, "description"),
    ({"url": PUBLIC, "event_types": ["hold.created"], "secret": "whsec_mine"}, "secret"),
])
def test_bad_endpoint_input_is_a_clear_422(client, body, field):
    error = _error(client.post("/api/webhooks/endpoints", json=body), 422, "validation_error")
    assert field in error["details"]["fields"], error


def test_malformed_requests_and_ids_answer_json(client):
    _error(client.post("/api/webhooks/endpoints", data="{not json", content_type="application/json"), 400,
           "malformed_json")
    _error(client.post("/api/webhooks/endpoints", data="url=x", content_type="application/x-www-form-urlencoded"),
           415, "unsupported_media_type")
    for path in ("/api/webhooks/endpoints/99999999999999999999", "/api/webhooks/endpoints/9223372036854775807",
                 "/api/webhooks/deliveries/99999999999999999999", "/api/webhooks/deliveries/1"):
        r = client.get(path)
        assert r.status_code == 404 and r.is_json, path
    _error(client.post("/api/webhooks/deliveries/9223372036854775808/retry"), 404, "webhook_delivery_not_found")
    for path in ("/api/webhooks/endpoints/-1", "/api/webhooks/endpoints/abc", "/api/webhooks/deliveries/0x10"):
        assert client.get(path).status_code == 404 and client.get(path).is_json
    endpoint_id = _create(client)["endpoint_id"]
    for overlap in (-1, 30 * 86400 + 1, "60", 1.5, True):
        _error(client.post(f"/api/webhooks/endpoints/{endpoint_id}/rotate-secret", json={"overlap_seconds": overlap}),
               422, "validation_error")
    _error(client.get("/api/webhooks/deliveries?status=lost"), 422, "validation_error")
    _error(client.get("/api/webhooks/deliveries?endpoint=0"), 422, "validation_error")
    _error(client.get("/api/webhooks/deliveries?cursor=bm9wZQ"), 400, "invalid_cursor")


def test_only_admins_manage_or_read_webhooks(app):
    endpoint_id = _create(client_as(app))["endpoint_id"]
    body = {"url": PUBLIC, "event_types": ["hold.created"]}
    calls = [("post", "/api/webhooks/endpoints", body), ("get", "/api/webhooks/endpoints", None),
             ("get", f"/api/webhooks/endpoints/{endpoint_id}", None),
             ("patch", f"/api/webhooks/endpoints/{endpoint_id}", {"enabled": False}),
             ("post", f"/api/webhooks/endpoints/{endpoint_id}/rotate-secret", {}),
             ("post", f"/api/webhooks/endpoints/{endpoint_id}/replay", {"since": "2026-01-01T00:00:00Z"}),
             ("delete", f"/api/webhooks/endpoints/{endpoint_id}", None),
             ("get", "/api/webhooks/deliveries", None), ("get", "/api/webhooks/deliveries/1", None),
             ("post", "/api/webhooks/deliveries/1/retry", None)]
    for role in ("service", "user"):
        client = client_as(app, role, user_id=1 if role == "user" else None)
        for method, path, json_body in calls:
            _error(getattr(client, method)(path, json=json_body), 403, "forbidden")
    stored = _rows(app, "SELECT enabled, secret FROM webhook_endpoints")
    assert len(stored) == 1 and stored[0].enabled


# ---- deliveries --------------------------------------------------------------------------------

def test_deliveries_list_filter_page_and_retry_a_dead_one(app, client):
    first = _create(client, types=["hold.created"])["endpoint_id"]
    second = _create(client, types=["hold.created", "hold.released"])["endpoint_id"]
    now = utcnow()
    created = _emit(app, "hold.created", {"hold_id": 1}, now - timedelta(minutes=2))
    released = _emit(app, "hold.released", {"hold_id": 1}, now - timedelta(minutes=1))
    everything = client.get("/api/webhooks/deliveries").get_json()
    assert everything["next_cursor"] is None
    items = everything["items"]
    assert [(d["endpoint_id"], d["event_id"], d["event_type"]) for d in items] == [
        (second, f"evt_{released}", "hold.released"), (second, f"evt_{created}", "hold.created"),
        (first, f"evt_{created}", "hold.created")]  # newest first
    assert all(d["status"] == "pending" and d["attempts"] == 0 and d["attempt_history"] == [] for d in items)

    ids = [d["delivery_id"] for d in items]
    page, seen = client.get("/api/webhooks/deliveries?limit=2").get_json(), []
    while True:
        seen += [d["delivery_id"] for d in page["items"]]
        if page["next_cursor"] is None:
            break
        page = client.get(f"/api/webhooks/deliveries?limit=2&cursor={page['next_cursor']}").get_json()
    assert seen == ids
    assert [d["endpoint_id"] for d in client.get(f"/api/webhooks/deliveries?endpoint={first}")
            .get_json()["items"]] == [first]

    # Dead after its last try, with two attempts on record.
    dead = ids[2]
    at = now - timedelta(seconds=30)
    _execute(app, "UPDATE webhook_deliveries SET status = 'dead', attempts = 16, last_status_code = 503, "
                  "last_error = 'HTTP 503', last_attempt_at = :at WHERE id = :id", id=dead, at=at)
    for code in (500, 503):
        _execute(app, "INSERT INTO webhook_attempts (delivery_id, attempted_at, duration_ms, status_code, error) "
                      "VALUES (:id, :at, 12, :code, :error)", id=dead, at=at, code=code, error=f"HTTP {code}")
    listed = client.get("/api/webhooks/deliveries?status=dead").get_json()["items"]
    assert [d["delivery_id"] for d in listed] == [dead]
    assert [a["status_code"] for a in listed[0]["attempt_history"]] == [503, 500]  # newest first
    assert listed[0]["attempt_history"][0]["duration_ms"] == 12
    assert client.get(f"/api/webhooks/deliveries/{dead}").get_json() == listed[0]

    before = utcnow()
    retried = client.post(f"/api/webhooks/deliveries/{dead}/retry")
    assert retried.status_code == 200, retried.get_json()
    retried = retried.get_json()
    assert (retried["status"], retried["attempts"], retried["event_id"]) == ("pending", 0, f"evt_{created}")
    assert before - timedelta(seconds=1) <= datetime.fromisoformat(retried["next_attempt_at"]) <= utcnow()
    assert len(retried["attempt_history"]) == 2 and retried["last_status_code"] == 503  # history stays
    assert client.get("/api/webhooks/deliveries?status=dead").get_json()["items"] == []

    _execute(app, "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = :at WHERE id = :id",
             id=dead, at=at)
    _error(client.post(f"/api/webhooks/deliveries/{dead}/retry"), 409, "delivery_already_delivered")
    _error(client.post("/api/webhooks/deliveries/999999/retry"), 404, "webhook_delivery_not_found")


# ---- replay ------------------------------------------------------------------------------------

def test_replay_queues_the_events_since_a_time_with_their_same_ids(app, client):
    uid = new_user(client)
    endpoint_id = _create(client, types=["credits.changed", "hold.created"])["endpoint_id"]
    other = _create(client, types=["hold.created"])["endpoint_id"]
    now = utcnow()
    old = _emit(app, "hold.created", {"n": 0}, now - timedelta(days=3), user_id=uid)
    recent = [_emit(app, "hold.created", {"n": n}, now - timedelta(minutes=10 - n), user_id=uid) for n in (1, 2)]
    _emit(app, "hold.released", {"n": 3}, now - timedelta(minutes=5))  # a type the endpoint does not take
    entries = [client.post(f"/api/credits/{uid}/add", json={"amount": n}).get_json()["entry"]["id"] for n in (1, 2)]
    # Everything delivered already: a replay sends it again.
    _execute(app, "UPDATE webhook_deliveries SET status = 'delivered', attempts = 1, delivered_at = :at",
             at=now)
    before = {(r.endpoint_id, r.entry_id, r.event_id): r.id for r in
              _rows(app, "SELECT id, endpoint_id, entry_id, event_id FROM webhook_deliveries")}

    since = (now - timedelta(hours=1)).isoformat()
    r = client.post(f"/api/webhooks/endpoints/{endpoint_id}/replay", json={"since": since})
    assert r.status_code == 200, r.get_json()
    assert r.get_json() == {"endpoint_id": endpoint_id, "since": since, "queued": 4,
                            "event_types": ["credits.changed", "hold.created"]}
    pending = _rows(app, "SELECT id, endpoint_id, entry_id, event_id, attempts, delivered_at FROM webhook_deliveries "
                         "WHERE status = 'pending' ORDER BY id")
    assert {(p.entry_id, p.event_id) for p in pending} == {(e, None) for e in entries} | {(None, e) for e in recent}
    assert all(p.endpoint_id == endpoint_id and p.attempts == 0 and p.delivered_at is None for p in pending)
    for p in pending:  # an existing delivery was set pending, not copied
        assert before.get((p.endpoint_id, p.entry_id, p.event_id), p.id) == p.id
    listed = {d["event_id"] for d in client.get(f"/api/webhooks/deliveries?endpoint={endpoint_id}&status=pending")
              .get_json()["items"]}
    assert listed == {f"evt_entry_{e}" for e in entries} | {f"evt_{e}" for e in recent}
    feed = client.get("/api/events", query_string={"since": since}).get_json()["items"]
    assert listed <= {event["id"] for event in feed}  # the same ids the events have
    # Again: the same deliveries, no new rows.
    count = _rows(app, "SELECT COUNT(*) FROM webhook_deliveries")[0][0]
    assert client.post(f"/api/webhooks/endpoints/{endpoint_id}/replay", json={"since": since}).get_json()["queued"] == 4
    assert _rows(app, "SELECT COUNT(*) FROM webhook_deliveries")[0][0] == count

    # Narrowed to one type; the other endpoint untouched; the old event too.
    r = client.post(f"/api/webhooks/endpoints/{endpoint_id}/replay", json={"since": since, "types": ["hold.created"]})
    assert r.get_json()["queued"] == 2 and r.get_json()["event_types"] == ["hold.created"]
    assert _rows(app, "SELECT status FROM webhook_deliveries WHERE endpoint_id = :e", e=other) == [("delivered",)] * 3
    assert _rows(app, "SELECT status FROM webhook_deliveries WHERE endpoint_id = :e AND event_id = :o",
                 e=endpoint_id, o=old) == [("delivered",)]
    week = (now - timedelta(days=7)).isoformat()
    assert client.post(f"/api/webhooks/endpoints/{endpoint_id}/replay", json={"since": week}).get_json()["queued"] == 5


def test_replay_refuses_outside_retention_and_other_types(app, client):
    endpoint_id = _create(client, types=["hold.created"])["endpoint_id"]
    too_old = (utcnow() - timedelta(days=31)).isoformat()
    error = _error(client.post(f"/api/webhooks/endpoints/{endpoint_id}/replay", json={"since": too_old}), 422,
                   "validation_error")
    assert "EVENTS_RETENTION_DAYS" in error["message"] and "since" in error["details"]["fields"]
    recent = (utcnow() - timedelta(days=1)).isoformat()
    for types in (["hold.released"], ["nope"], []):
        _error(client.post(f"/api/webhooks/endpoints/{endpoint_id}/replay", json={"since": recent, "types": types}),
               422, "validation_error")
    for body in ({}, {"since": "yesterday"}, {"since": "2026-01-01T00:00:00"}):
        _error(client.post(f"/api/webhooks/endpoints/{endpoint_id}/replay", json=body), 422, "validation_error")
    _error(client.post("/api/webhooks/endpoints/999/replay", json={"since": recent}), 404, "webhook_endpoint_not_found")


def test_replay_walks_many_events_in_batches(app, client, monkeypatch):
    from credits_app.webhooks import deliveries
    monkeypatch.setattr(deliveries, "REPLAY_BATCH", 3)
    endpoint_id = _create(client, types=["hold.created"])["endpoint_id"]
    now = utcnow()
    at = now - timedelta(minutes=5)
    ids = [_emit(app, "hold.created", {"n": n}, at + timedelta(microseconds=n // 3)) for n in range(10)]  # ties
    _execute(app, "UPDATE webhook_deliveries SET status = 'dead'")
    done = client.post(f"/api/webhooks/endpoints/{endpoint_id}/replay", json={"since": at.isoformat()}).get_json()
    assert done["queued"] == 10
    assert sorted(r.event_id for r in _rows(app, "SELECT event_id FROM webhook_deliveries WHERE status = 'pending'")) \
        == ids


# ---- CLI ---------------------------------------------------------------------------------------

def test_cli_manages_endpoints_and_deliveries(app):
    runner = app.test_cli_runner()
    made = runner.invoke(args=["webhooks", "create", PUBLIC, "--type", "hold.created", "--type", "balance.low",
                               "--description", "ops"])
    assert made.exit_code == 0, made.output
    secret = next(line.split(": ")[1] for line in made.output.splitlines() if line.startswith("secret"))
    assert secret.startswith("whsec_")
    endpoint_id = _rows(app, "SELECT id FROM webhook_endpoints")[0].id
    for args in (["list"], ["show", str(endpoint_id)]):
        out = runner.invoke(args=["webhooks", *args])
        assert out.exit_code == 0 and PUBLIC in out.output and secret not in out.output, out.output
    out = runner.invoke(args=["webhooks", "update", str(endpoint_id), "--type", "hold.released", "--disable"])
    assert out.exit_code == 0 and "disabled" in out.output and "hold.released" in out.output, out.output
    rotated = runner.invoke(args=["webhooks", "rotate-secret", str(endpoint_id), "--overlap-seconds", "60"])
    assert rotated.exit_code == 0 and "whsec_" in rotated.output and secret not in rotated.output
    assert _rows(app, "SELECT previous_secret FROM webhook_endpoints")[0][0] == secret

    runner.invoke(args=["webhooks", "update", str(endpoint_id), "--enable"])
    event = _emit(app, "hold.released", {"n": 1}, utcnow())
    _execute(app, "UPDATE webhook_deliveries SET status = 'dead'")
    out = runner.invoke(args=["webhooks", "deliveries", "--status", "dead"])
    assert f"evt_{event}" in out.output and "dead" in out.output, out.output
    delivery = _rows(app, "SELECT id FROM webhook_deliveries")[0].id
    out = runner.invoke(args=["webhooks", "retry", str(delivery)])
    assert out.exit_code == 0 and "pending" in out.output, out.output
    since = (utcnow() - timedelta(hours=1)).isoformat()
    out = runner.invoke(args=["webhooks", "replay", str(endpoint_id), "--since", since])
    assert out.exit_code == 0 and "queued 1 " in out.output, out.output
    out = runner.invoke(args=["webhooks", "replay", str(endpoint_id), "--since", "2020-01-01T00:00:00Z"])
    assert out.exit_code == 1 and "EVENTS_RETENTION_DAYS" in out.output
    out = runner.invoke(args=["webhooks", "create", "http://127.0.0.1/x", "--type", "hold.created"])
    assert out.exit_code == 1 and "WEBHOOKS_ALLOW_PRIVATE_URLS" in out.output
    assert runner.invoke(args=["webhooks", "delete", str(endpoint_id)]).exit_code == 0
    out = runner.invoke(args=["webhooks", "show", str(endpoint_id)])
    assert out.exit_code == 1 and "webhook_endpoint_not_found" in out.output


def test_send_time_check_resolves_again(app):
    from credits_app.webhooks.urls import UnsafeDestination, check_resolved
    for url in PRIVATE:
        with pytest.raises(UnsafeDestination, match="WEBHOOKS_ALLOW_PRIVATE_URLS"):
            check_resolved(url, allow_private=False)
        check_resolved(url, allow_private=True)
    check_resolved(PUBLIC, allow_private=False)
    with pytest.raises(UnsafeDestination, match="does not resolve"):
        check_resolved("https://no-such-host.invalid/", allow_private=False)
