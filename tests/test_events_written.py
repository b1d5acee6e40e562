"""Events are written with their cause: every credit change's credits.changed delivery, the
alerts its new balance fires, hold events, the grant's run event and recovered alerts, a
schema update's event. Same transaction: a refused change writes none, and a change whose
event cannot be written does not happen. On SQLite and PostgreSQL."""
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from credits_app import grants, ledger
from credits_app.events import catalog
from credits_app.extensions import db
from credits_app.ledger import holds
from credits_app.types import utcnow
from tests.conftest import client_as, new_user


@pytest.fixture
def app_env():
    return {"LOW_BALANCE_THRESHOLD": "10"}


def _endpoint(conn, *types, enabled=True):
    """A subscribed endpoint, written as the webhooks API would (the API has its own tests)."""
    now = utcnow()
    endpoint = conn.execute(text(
        "INSERT INTO webhook_endpoints (url, enabled, secret, created_by, created_at, updated_at) "
        "VALUES ('https://hooks.example.com/x', :enabled, 'whsec_dGVzdA==', 'test', :now, :now) RETURNING id"),
        {"enabled": enabled, "now": now}).scalar_one()
    for event_type in types:
        conn.execute(text("INSERT INTO webhook_subscriptions (endpoint_id, event_type) VALUES (:e, :t)"),
                     {"e": endpoint, "t": event_type})
    return endpoint


def _subscribe_all(app, enabled=True):
    with app.app_context(), db.engine.begin() as conn:
        return _endpoint(conn, *catalog.EVENT_TYPES, enabled=enabled)


def _events(app, user_id=None):
    """Non-ledger events, in id order: (type, data)."""
    with app.app_context(), db.engine.connect() as conn:
        rows = conn.execute(text("SELECT event_type, data, user_id FROM events ORDER BY id")).all()
    return [(r.event_type, json.loads(r.data)) for r in rows if user_id is None or r.user_id == user_id]


def _alerts(app, user_id):
    return [t for t, _ in _events(app, user_id) if t.startswith("balance.")]


def _deliveries(app, endpoint):
    """The endpoint's deliveries as event ids, in id order."""
    with app.app_context(), db.engine.connect() as conn:
        rows = conn.execute(text("SELECT entry_id, event_id FROM webhook_deliveries WHERE endpoint_id = :e "
                                 "ORDER BY id"), {"e": endpoint}).all()
    return [catalog.event_id(entry_id=r.entry_id) if r.entry_id else catalog.event_id(event_row_id=r.event_id)
            for r in rows]


def _post(client, path, status=200, **body):
    # A reset is a PATCH; every other change here a POST.
    r = (client.patch if path.endswith("/reset") else client.post)(path, json=body)
    assert r.status_code == status, r.get_json()
    return r.get_json()


def test_every_change_kind_is_delivered_as_its_entry_and_only_to_subscribed_enabled_endpoints(app):
    client = client_as(app)
    uid = new_user(client)
    subscribed = _subscribe_all(app)
    with app.app_context(), db.engine.begin() as conn:
        other_type = _endpoint(conn, "schema.applied")
    disabled = _subscribe_all(app, enabled=False)
    added = _post(client, f"/api/credits/{uid}/add", amount=50)["entry"]
    deducted = _post(client, f"/api/credits/{uid}/deduct", amount=20)["entry"]
    _post(client, f"/api/credits/{uid}/deduct", 409, amount=500)  # refused: no entry, no event
    reversed_ = _post(client, f"/api/credits/{uid}/entries/{deducted['id']}/reverse", reason="refund")["entry"]
    hold = _post(client, f"/api/credits/{uid}/holds", 201, amount=5)["hold"]
    captured = _post(client, f"/api/holds/{hold['hold_id']}/capture")["entry"]
    reset = _post(client, f"/api/credits/{uid}/reset")["entry"]
    entry_ids = [catalog.event_id(entry_id=e["id"]) for e in (added, deducted, reversed_, captured, reset)]
    delivered = _deliveries(app, subscribed)
    assert [d for d in delivered if d.startswith("evt_entry_")] == entry_ids
    assert _deliveries(app, other_type) == [] and _deliveries(app, disabled) == []
    # The payload is the entry, as the API answered it.
    with app.app_context(), db.engine.connect() as conn:
        payload = catalog.render(conn, entry_id=added["id"])
    assert payload == {"id": entry_ids[0], "type": "credits.changed", "timestamp": added["created_at"],
                       "data": {"user_id": uid, "balance_after": 50, "entry": added}}
    # Every non-ledger event of the user has its delivery too.
    with app.app_context(), db.engine.connect() as conn:
        event_rows = conn.execute(text("SELECT id FROM events ORDER BY id")).scalars().all()
    assert [d for d in delivered if not d.startswith("evt_entry_")] == [catalog.event_id(event_row_id=i)
                                                                         for i in event_rows]


def test_alerts_fire_when_the_stored_state_moves(app):
    client = client_as(app)
    uid = new_user(client)
    _post(client, f"/api/credits/{uid}/add", amount=3)  # first change: state recorded (depleted->low silent)
    assert _alerts(app, uid) == []
    _post(client, f"/api/credits/{uid}/add", amount=20)  # 23: recovered
    _post(client, f"/api/credits/{uid}/deduct", amount=14)  # 9: low
    _post(client, f"/api/credits/{uid}/deduct", amount=1)  # 8: still low, nothing
    _post(client, f"/api/credits/{uid}/deduct", amount=8)  # 0: depleted
    _post(client, f"/api/credits/{uid}/add", amount=4)  # 4: low again, silent (no new crossing)
    _post(client, f"/api/credits/{uid}/add", amount=6)  # 10: recovered (at the threshold counts as ok)
    _post(client, f"/api/credits/{uid}/deduct", amount=10)  # 0 from ok: low and depleted
    assert _alerts(app, uid) == ["balance.recovered", "balance.low", "balance.depleted", "balance.recovered",
                                 "balance.low", "balance.depleted"]
    low = [data for t, data in _events(app, uid) if t == "balance.low"][0]
    assert low | {"entry_id": None} == {"user_id": uid, "credits": 9, "held": 0, "available": 9, "threshold": 10,
                                        "entry_id": None, "hold_id": None}
    assert low["entry_id"] is not None


def test_holds_move_the_available_balance_and_announce_themselves(app):
    client = client_as(app)
    uid = new_user(client)
    _post(client, f"/api/credits/{uid}/add", amount=30)
    _post(client, f"/api/credits/{uid}/add", amount=1)  # state known: ok
    first = _post(client, f"/api/credits/{uid}/holds", 201, amount=25)  # available 6: low
    second = _post(client, f"/api/credits/{uid}/holds", 201, amount=6, ttl_seconds=1)  # available 0: depleted
    _post(client, f"/api/holds/{first['hold']['hold_id']}/release", reason="job cancelled")  # available 25: recovered
    with app.app_context():
        past = utcnow() - timedelta(seconds=1)
        db.session.execute(text("UPDATE holds SET created_at = :earlier, expires_at = :past WHERE id = :h"),
                           {"h": second["hold"]["hold_id"], "past": past, "earlier": past - timedelta(days=1)})
        db.session.commit()
        assert holds.sweep() == 1
    events = _events(app, uid)
    assert [t for t, _ in events] == ["hold.created", "balance.low", "hold.created", "balance.depleted",
                                      "hold.released", "balance.recovered", "hold.expired"]
    created, released, expired = events[0][1], events[4][1], events[-1][1]
    assert created | {"hold": None} == {"user_id": uid, "credits": 31, "held": 25, "available": 6, "hold": None}
    assert created["hold"]["hold_id"] == first["hold"]["hold_id"] and created["hold"]["status"] == "open"
    assert created["hold"]["close_reason"] is None
    assert (released["hold"]["status"], released["hold"]["close_reason"]) == ("released", "job cancelled")
    assert expired["hold"]["status"] == "expired" and (expired["held"], expired["available"]) == (0, 31)
    assert expired["hold"]["close_reason"] is None


def test_a_reset_closes_holds_with_their_events(app):
    client = client_as(app)
    uid = new_user(client)
    _post(client, f"/api/credits/{uid}/add", amount=30)
    hold = _post(client, f"/api/credits/{uid}/holds", 201, amount=5)["hold"]
    _post(client, f"/api/credits/{uid}/reset", reason="account closed")
    released = [data for t, data in _events(app, uid) if t == "hold.released"]
    assert len(released) == 1 and released[0]["hold"]["hold_id"] == hold["hold_id"]
    assert released[0]["hold"]["close_reason"] is None  # the reset's reason is on its entry
    assert (released[0]["credits"], released[0]["available"]) == (0, 0)
    assert _alerts(app, uid)[-1] == "balance.depleted"


def test_a_refused_change_writes_no_event_and_a_change_whose_event_fails_does_not_happen(app):
    client = client_as(app)
    uid = new_user(client)
    endpoint = _subscribe_all(app)
    _post(client, f"/api/credits/{uid}/add", amount=20)
    before = (_deliveries(app, endpoint), _events(app))
    _post(client, f"/api/credits/{uid}/deduct", 409, amount=21)
    assert (_deliveries(app, endpoint), _events(app)) == before
    # Make the delivery insert fail: the change must fail as a whole, balance and ledger untouched.
    with app.app_context(), db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                              "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"))
            conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON webhook_deliveries "
                              "FOR EACH ROW EXECUTE FUNCTION refuse()"))
        else:
            conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON webhook_deliveries "
                              "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"))
    with app.app_context():
        with pytest.raises(Exception, match="refused by the test"):
            ledger.add(uid, 5, actor="test")
        assert ledger.balance(uid).credits == 20
        assert [e.amount for e in ledger.entries(uid, limit=10)] == [20]


def test_the_daily_grant_announces_its_run_once_and_only_the_users_it_lifts(app):
    client = client_as(app)
    lifted, stays_low, fine, untouched = (new_user(client, email=f"u{i}@example.com") for i in range(4))
    for uid, amount in ((lifted, 6), (stays_low, 1), (fine, 50)):
        _post(client, f"/api/credits/{uid}/add", amount=amount)  # known states: low, low, ok
        _post(client, f"/api/credits/{uid}/add", amount=1)
    endpoint = _subscribe_all(app)
    with app.app_context():
        grants.run_date("2026-11-29")  # +5: 7 -> 12 lifted; 2 -> 7 still low; 51 -> 56 fine
        grants.run_date("2026-11-29")  # again: nothing
    events = _events(app)
    assert [(t, d["user_id"]) for t, d in events if t.startswith("balance.")] == [("balance.recovered", lifted)]
    recovered = events[0][1]
    assert (recovered["credits"], recovered["available"], recovered["threshold"]) == (12, 12, 10)
    assert recovered["entry_id"] is not None
    runs = [d for t, d in events if t == "grant.run.completed"]
    assert len(runs) == 1 and runs[0]["grant_date"] == "2026-11-29" and runs[0]["users_credited"] == 4
    assert runs[0]["amount"] == 5 and runs[0]["finished_at"] is not None
    # The grant's entries are not credits.changed events: one delivery per event row, none per user.
    assert len(_deliveries(app, endpoint)) == 2 and untouched


def test_a_schema_update_is_announced_with_its_record(pg_app):
    client = client_as(pg_app)
    r = client.post("/api/schema/apply", json={"sql": "CREATE TABLE badges (id bigint PRIMARY KEY)",
                                               "name": "badges"})
    assert r.status_code == 200, r.get_json()
    change = r.get_json()["change"]
    assert _events(pg_app) == [("schema.applied", {"change_id": change["id"], "name": "badges",
                                                   "checksum": change["checksum"], "actor": change["actor"],
                                                   "duration_ms": change["duration_ms"], "statements": 1})]


def test_alerts_under_racing_changes_alternate_and_every_change_has_its_delivery(pg_app):
    """Changes racing around the threshold: the stored state moves under the row lock, so for
    one user the alerts (in id order, which is lock order) never repeat a crossing, and they
    agree with the balances the entries record."""
    client = client_as(pg_app)
    uid = new_user(client)
    _post(client, f"/api/credits/{uid}/add", amount=10)
    _post(client, f"/api/credits/{uid}/add", amount=1)  # 11: ok, known
    endpoint = _subscribe_all(pg_app)

    def worker(i):
        c = client_as(pg_app)
        for j in range(15):
            path = "add" if (i + j) % 2 else "deduct"
            c.post(f"/api/credits/{uid}/{path}", json={"amount": 1 + (i + j) % 3})

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(worker, range(6)))
    alerts = _alerts(pg_app, uid)
    state = "ok"
    for event in alerts:
        if event == "balance.low":
            assert state == "ok"
            state = "low"
        elif event == "balance.depleted":
            assert state in ("ok", "low")
            state = "depleted"
        else:
            assert state in ("low", "depleted")
            state = "ok"
    with pg_app.app_context(), db.engine.connect() as conn:
        stored, credits = conn.execute(text("SELECT alert_state, credits FROM credits WHERE user_id = :u"),
                                       {"u": uid}).one()
        entries = conn.execute(text("SELECT count(*) FROM ledger_entries WHERE user_id = :u AND created_at > "
                                    "(SELECT min(created_at) FROM webhook_endpoints)"), {"u": uid}).scalar()
    assert stored == ("ok" if credits >= 10 else "depleted" if credits == 0 else "low") == state
    assert len([d for d in _deliveries(pg_app, endpoint) if d.startswith("evt_entry_")]) == entries
    with pg_app.app_context():
        assert ledger.verify() == []


def test_an_event_time_is_never_before_its_cause(app):
    client = client_as(app)
    uid = new_user(client)
    _post(client, f"/api/credits/{uid}/add", amount=2)
    entry = _post(client, f"/api/credits/{uid}/add", amount=20)["entry"]
    with app.app_context(), db.engine.connect() as conn:
        at = conn.execute(text("SELECT created_at FROM events WHERE event_type = 'balance.recovered'")).scalar_one()
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
    assert at == datetime.fromisoformat(entry["created_at"])


def test_a_users_threshold_is_set_silently_and_alerts_fire_from_there(app):
    client = client_as(app)
    uid = new_user(client)
    assert client.get(f"/api/credits/{uid}/alerts").get_json() == {
        "user_id": uid, "low_balance_threshold": None, "threshold": 10, "alert_state": None, "available": 0}
    _post(client, f"/api/credits/{uid}/add", amount=30)
    r = client.put(f"/api/credits/{uid}/alerts", json={"low_balance_threshold": 50})
    assert r.status_code == 200, r.get_json()
    assert r.get_json() == {"user_id": uid, "low_balance_threshold": 50, "threshold": 50, "alert_state": "low",
                            "available": 30}
    assert _alerts(app, uid) == []  # a threshold is not a balance change
    _post(client, f"/api/credits/{uid}/add", amount=25)  # 55: recovered
    r = client.put(f"/api/credits/{uid}/alerts", json={"low_balance_threshold": 0})  # off
    assert r.get_json()["alert_state"] is None and r.get_json()["threshold"] == 0
    _post(client, f"/api/credits/{uid}/deduct", amount=55)  # nothing: alerts are off for this user
    r = client.put(f"/api/credits/{uid}/alerts", json={"low_balance_threshold": None})  # the setting's again
    assert r.get_json() == {"user_id": uid, "low_balance_threshold": None, "threshold": 10,
                            "alert_state": "depleted", "available": 0}
    assert _alerts(app, uid) == ["balance.recovered"]
    for bad in ({"low_balance_threshold": -1}, {"low_balance_threshold": "5"}, {"low_balance_threshold": 2**63},
                {"low_balance_threshold": True}, {}):
        r = client.put(f"/api/credits/{uid}/alerts", json=bad)
        assert r.status_code == 422 and r.get_json()["error"]["code"] == "validation_error", bad
    assert client.put("/api/credits/999999/alerts", json={"low_balance_threshold": 1}).status_code == 404
    assert client.get("/api/credits/999999/alerts").status_code == 404
    user = client_as(app, "user", user_id=uid)
    assert user.get(f"/api/credits/{uid}/alerts").status_code == 200
    assert user.put(f"/api/credits/{uid}/alerts", json={"low_balance_threshold": 1}).status_code == 403
    assert client_as(app, "service").put(f"/api/credits/{uid}/alerts",
                                         json={"low_balance_threshold": 1}).status_code == 200


def test_the_cli_shows_and_sets_a_threshold(app):
    client = client_as(app)
    uid = new_user(client)
    _post(client, f"/api/credits/{uid}/add", amount=7)
    runner = app.test_cli_runner()
    shown = runner.invoke(args=["credits", "alerts", str(uid)])
    assert shown.exit_code == 0 and "threshold 10 (the default)" in shown.output, shown.output
    changed = runner.invoke(args=["credits", "alerts", str(uid), "--threshold", "5"])
    assert changed.exit_code == 0 and "threshold 5 (own), state ok, available 7" in changed.output, changed.output
    back = runner.invoke(args=["credits", "alerts", str(uid), "--default"])
    assert "threshold 10 (the default), state low" in back.output, back.output
    assert runner.invoke(args=["credits", "alerts", "999999"]).exit_code != 0
    assert runner.invoke(args=["credits", "alerts", str(uid), "--threshold", "-1"]).exit_code == 2


def test_deliveries_follow_subscriptions_made_and_removed_between_changes(pg_app):
    """The change statement without deliveries runs only while nobody subscribes (its guard
    sees every subscription committed before it): a subscription made or removed between
    two changes is followed at once, whichever variant the process tried first."""
    client = client_as(pg_app)
    uid = new_user(client)
    _post(client, f"/api/credits/{uid}/add", amount=5)  # nobody subscribes
    endpoint = _subscribe_all(pg_app)
    first = _post(client, f"/api/credits/{uid}/add", amount=5)["entry"]  # tried without, stopped, run with
    second = _post(client, f"/api/credits/{uid}/add", amount=5)["entry"]
    with pg_app.app_context(), db.engine.begin() as conn:
        conn.execute(text("DELETE FROM webhook_subscriptions"))
    _post(client, f"/api/credits/{uid}/add", amount=5)  # tried with: no subscriber, nothing written
    _post(client, f"/api/credits/{uid}/add", amount=5)
    assert [d for d in _deliveries(pg_app, endpoint) if d.startswith("evt_entry_")] == [
        catalog.event_id(entry_id=e["id"]) for e in (first, second)]
    with pg_app.app_context():
        assert [e.balance_after for e in ledger.entries(uid, limit=10)] == [25, 20, 15, 10, 5]


@pytest.mark.parametrize("app_env", [{}])  # LOW_BALANCE_THRESHOLD 0: alerts only for users with their own
def test_with_alerts_off_by_default_a_users_own_threshold_still_fires(app):
    client = client_as(app)
    plain, watched = new_user(client, email="p@example.com"), new_user(client, email="w@example.com")
    r = client.put(f"/api/credits/{watched}/alerts", json={"low_balance_threshold": 10})
    assert r.status_code == 200 and r.get_json()["alert_state"] == "depleted"
    for uid in (plain, watched):
        _post(client, f"/api/credits/{uid}/add", amount=20)  # watched: recovered
        _post(client, f"/api/credits/{uid}/deduct", amount=15)  # watched: low
    assert _alerts(app, plain) == [] and _alerts(app, watched) == ["balance.recovered", "balance.low"]
    with app.app_context(), db.engine.connect() as conn:
        states = dict(conn.execute(text("SELECT user_id, alert_state FROM credits")).all())
    assert states == {plain: None, watched: "low"}
