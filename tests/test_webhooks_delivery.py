"""Webhook delivery against a real HTTP receiver on the loopback, on SQLite and PostgreSQL:
signatures verified with the receiver-side library (also across a secret rotation), a
receiver that is down, hangs, answers 500 or answers late, backoff and the dead letter,
a dead endpoint beside a healthy one, two dispatchers at once, leases, pruning.

Endpoints and events are written with SQL and the outbox's own writer (outbox.emit), the
way the change paths write them. Settings are small (1 s backoff, 3 attempts, 2 s
timeouts) so that every wait is short; every wait polls for an outcome."""
import base64
import os
import threading
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import bindparam, text
from standardwebhooks import Webhook, WebhookVerificationError

from credits_app import ledger
from credits_app.events import outbox, render
from credits_app.extensions import db
from credits_app.types import UTCDateTime, utcnow
from credits_app.webhooks import delivery, dispatcher, endpoints, prune
from tests.redis_fixtures import wait_for
from tests.test_daily_grant import add_users
from tests.webhook_receiver import Receiver

SETTINGS = {"WEBHOOKS_ALLOW_PRIVATE_URLS": "true", "WEBHOOKS_TIMEOUT_SECONDS": "2", "WEBHOOKS_LEASE_SECONDS": "6",
            "WEBHOOKS_BACKOFF_BASE_SECONDS": "1", "WEBHOOKS_BACKOFF_MAX_SECONDS": "2", "WEBHOOKS_MAX_ATTEMPTS": "3"}


@pytest.fixture
def app_env():
    return dict(SETTINGS)


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def new_secret():
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


_ENDPOINT = text(
    "INSERT INTO webhook_endpoints (url, enabled, secret, previous_secret, previous_secret_until, created_by, "
    "created_at, updated_at) VALUES (:url, :enabled, :secret, :previous, :until, 'test', :now, :now) RETURNING id"
).bindparams(bindparam("until", type_=UTCDateTime), bindparam("now", type_=UTCDateTime))


def add_endpoint(url, types=("hold.created",), enabled=True, previous_secret=None, previous_until=None):
    """An endpoint subscribed to `types`; returns (id, secret)."""
    secret = new_secret()
    with db.engine.begin() as conn:
        endpoint_id = conn.execute(_ENDPOINT, {"url": url, "enabled": enabled, "secret": secret,
                                               "previous": previous_secret, "until": previous_until,
                                               "now": utcnow()}).scalar_one()
        conn.execute(text("INSERT INTO webhook_subscriptions (endpoint_id, event_type) VALUES (:e, :t)"),
                     [{"e": endpoint_id, "t": t} for t in types])
    return endpoint_id, secret


def emit(count=1, at=None):
    """`count` hold.created events, each in its own transaction with its deliveries."""
    (uid,) = add_users(1)
    ids = []
    for n in range(count):
        with db.engine.begin() as conn:
            ids.append(outbox.emit(conn, "hold.created", {"user_id": uid, "hold_id": n + 1, "amount": 3},
                                   at=at or utcnow(), user_id=uid))
    return ids


_DELIVERIES = text("SELECT * FROM webhook_deliveries WHERE endpoint_id = :e OR :e IS NULL ORDER BY id").columns(
    next_attempt_at=UTCDateTime, last_attempt_at=UTCDateTime, created_at=UTCDateTime, delivered_at=UTCDateTime)
_ATTEMPTS = text("SELECT attempted_at, duration_ms, status_code, error FROM webhook_attempts WHERE delivery_id = :d "
                 "ORDER BY id").columns(attempted_at=UTCDateTime)


def deliveries(endpoint_id=None):
    with db.engine.connect() as conn:
        return conn.execute(_DELIVERIES, {"e": endpoint_id}).all()


def attempts(delivery_id):
    with db.engine.connect() as conn:
        return conn.execute(_ATTEMPTS, {"d": delivery_id}).all()


def statuses(endpoint_id=None):
    return [d.status for d in deliveries(endpoint_id)]


def make_due(delivery_id):
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE webhook_deliveries SET next_attempt_at = :now WHERE id = :d").bindparams(
            bindparam("now", type_=UTCDateTime)), {"now": utcnow(), "d": delivery_id})


def payload_of(event_row_id):
    with db.engine.connect() as conn:
        return render(conn, event_row_id=event_row_id)


@contextmanager
def dispatching(app, runs=1):
    """`runs` dispatcher runs on threads of their own, until the block ends."""
    stop, results = threading.Event(), []

    def target():
        with app.app_context():
            try:
                results.append(dispatcher.run(600, stop=stop))
            except Exception as e:  # handed to the test below
                results.append(e)
    threads = [threading.Thread(target=target) for _ in range(runs)]
    for thread in threads:
        thread.start()
    try:
        yield results
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    errors = [r for r in results if isinstance(r, Exception)]
    if errors:
        raise errors[0]


def test_a_delivery_is_signed_as_standard_webhooks_says_and_verifies(app, ctx, receiver):
    endpoint_id, secret = add_endpoint(receiver.url)
    (event,) = emit()
    (row,) = deliveries()
    outcome = delivery.deliver_now(row.id)
    assert (outcome.status, outcome.status_code, outcome.recorded) == ("delivered", 200, True)

    (request,) = receiver.received()
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("credits-webhooks/")
    assert request.msg_id == f"evt_{event}"
    # The receiver side of the specification, with its own library: the body is the event.
    assert Webhook(secret).verify(request.body, request.headers) == payload_of(event)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(request.body, request.headers)
    tampered = request.body.replace(b'"amount":3', b'"amount":4')
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, request.headers)

    (row,) = deliveries()
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == ("delivered", 1, 200, None)
    assert row.delivered_at is not None
    assert [(a.status_code, a.error) for a in attempts(row.id)] == [(200, None)]
    assert delivery.deliver_now(row.id) is None  # delivered: nothing left to send


def test_during_a_rotation_both_secrets_verify_and_after_it_only_the_new_one(app, ctx, receiver):
    old = new_secret()
    endpoint_id, secret = add_endpoint(receiver.url, previous_secret=old, previous_until=utcnow() + timedelta(hours=1))
    emit(2)
    first, second = deliveries()
    delivery.deliver_now(first.id)
    (request,) = receiver.received()
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert Webhook(secret).verify(request.body, request.headers)
    assert Webhook(old).verify(request.body, request.headers)

    with db.engine.begin() as conn:  # the overlap is over
        conn.execute(text("UPDATE webhook_endpoints SET previous_secret_until = :past").bindparams(
            bindparam("past", type_=UTCDateTime)), {"past": utcnow() - timedelta(seconds=1)})
    delivery.deliver_now(second.id)
    request = receiver.received()[1]
    assert len(request.headers["webhook-signature"].split(" ")) == 1
    assert Webhook(secret).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(request.body, request.headers)


def test_a_receiver_that_is_down_then_up_gets_the_event_with_its_one_id(app, ctx, receiver):
    add_endpoint(receiver.url)
    (event,) = emit()
    (row,) = deliveries()
    receiver.down()
    outcome = delivery.deliver_now(row.id)
    assert (outcome.status, outcome.status_code) == ("pending", None)
    assert "NewConnectionError" in outcome.error
    (row,) = deliveries()
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, None)
    assert row.next_attempt_at > row.last_attempt_at  # backoff: not due again at once

    receiver.up()
    assert delivery.deliver_now(row.id).status == "delivered"
    assert receiver.ids() == [f"evt_{event}"]
    assert [(a.status_code, a.error is None) for a in attempts(row.id)] == [(None, False), (200, True)]


def test_a_receiver_that_never_answers_times_out_and_a_late_200_counts_as_a_failure(app, ctx, receiver):
    add_endpoint(receiver.url)
    (event,) = emit()
    (row,) = deliveries()
    receiver.mode = "hang"
    outcome = delivery.deliver_now(row.id)
    assert outcome.status == "pending" and "ReadTimeoutError" in outcome.error
    receiver.release()

    receiver.mode, receiver.delay = "delay", 3  # 200, but after the 2 s timeout
    outcome = delivery.deliver_now(row.id)
    assert outcome.status == "pending" and "ReadTimeoutError" in outcome.error
    wait_for(lambda: receiver.received(200), "the late answer")

    receiver.delay = 0.3  # 200 after a delay within the timeout
    assert delivery.deliver_now(row.id).status == "delivered"
    # Every attempt carried the event's one id: a receiver that kept the late one drops the rest.
    assert receiver.ids() == [f"evt_{event}"] * 3
    assert [a.status_code for a in attempts(row.id)] == [None, None, 200]


def test_a_500_is_retried_with_backoff_until_the_dead_letter(app, ctx, receiver):
    add_endpoint(receiver.url)
    (event,) = emit()
    receiver.mode = "error"
    with dispatching(app):
        wait_for(lambda: statuses() == ["dead"], "the dead letter")
    (row,) = deliveries()
    assert (row.attempts, row.last_status_code, row.last_error) == (3, 500, "HTTP 500")
    assert [(a.status_code, a.error) for a in attempts(row.id)] == [(500, "HTTP 500")] * 3
    assert receiver.ids(500) == [f"evt_{event}"] * 3
    # No retry came before its backoff (1 s, then 2 s, less a fifth at most) was over.
    first, second, third = attempts(row.id)
    assert second.attempted_at - first.attempted_at >= timedelta(seconds=0.8)
    assert third.attempted_at - second.attempted_at >= timedelta(seconds=1.6)


def test_backoff_doubles_up_to_its_maximum_with_jitter_of_a_fifth():
    settings = delivery.Settings(timeout=10, max_attempts=16, backoff_base=30, backoff_max=6 * 3600, lease=120,
                                 concurrency=8, allow_private=False)
    assert [delivery.backoff(n, settings, rand=lambda: 0.5) for n in (1, 2, 3, 10, 11, 16)] == [
        30, 60, 120, 15360, 21600, 21600]
    assert delivery.backoff(1, settings, rand=lambda: 0.0) == 24
    assert delivery.backoff(1, settings, rand=lambda: 1.0) == pytest.approx(36)
    # The defaults span more than a day even when every jitter is at its lowest.
    assert sum(delivery.backoff(n, settings, rand=lambda: 0.0) for n in range(1, 16)) > 86400


def test_a_dead_endpoint_does_not_delay_a_healthy_one(app, ctx, receiver):
    dead = Receiver(mode="hang").start()
    try:
        dead_id, _ = add_endpoint(dead.url)
        healthy_id, _ = add_endpoint(receiver.url)
        events = emit(5)
        with dispatching(app):
            wait_for(lambda: statuses(healthy_id) == ["delivered"] * 5, "the healthy endpoint's deliveries")
            wait_for(lambda: attempts(deliveries(dead_id)[0].id), "the dead endpoint's first attempt to end")
        assert sorted(receiver.ids()) == sorted(f"evt_{e}" for e in events)
        # The healthy endpoint had everything before the dead one's first send timed out.
        first = attempts(deliveries(dead_id)[0].id)[0]
        assert max(d.delivered_at for d in deliveries(healthy_id)) < (
            first.attempted_at + timedelta(milliseconds=first.duration_ms))
        # The dead endpoint's batch stopped at its first failure: only its first event was sent.
        assert set(dead.ids()) == {f"evt_{events[0]}"}
        assert [d.attempts for d in deliveries(dead_id)][1:] == [0] * 4
    finally:
        dead.stop()


def test_two_dispatchers_at_once_never_send_one_delivery_twice(app, ctx, receiver, monkeypatch):
    monkeypatch.setattr(dispatcher, "BATCH", 5)  # small claims, so both dispatchers claim from every endpoint
    others = [Receiver().start() for _ in range(2)]
    try:
        receivers = [receiver, *others]
        for r in receivers:
            add_endpoint(r.url)
        events = emit(60)
        with dispatching(app, runs=2) as results:
            wait_for(lambda: statuses() == ["delivered"] * 180, "every delivery")
        for r in receivers:
            assert sorted(r.ids()) == sorted(f"evt_{e}" for e in events)  # each once, no more
        assert {d.attempts for d in deliveries()} == {1}
        # No delivery was claimed twice (with healthy receivers none is put back).
        assert sum(result.get("claimed", 0) for result in results) == 180
        assert sum(result.get("delivered", 0) for result in results) == 180
    finally:
        for r in others:
            r.stop()


def test_an_attempt_that_outlives_its_lease_does_not_overwrite_the_newer_claim(app, ctx, receiver):
    add_endpoint(receiver.url)
    emit()
    (row,) = deliveries()
    settings = delivery.Settings.from_config(app.config)
    claim = dispatcher.claim_one(row.id, settings)
    # Another claim took the delivery, as one does once a lease has run out (claim_one takes
    # a pending delivery whether or not it is due, so here it can do so at once).
    newer = dispatcher.claim_one(row.id, settings)
    assert newer.lease != claim.lease
    outcome = delivery.attempt(claim, settings)
    assert (outcome.status, outcome.recorded) == ("delivered", False)
    (row,) = deliveries()
    assert (row.status, row.attempts, row.next_attempt_at) == ("pending", 0, newer.lease)
    assert [a.status_code for a in attempts(row.id)] == [200]  # the attempt is still in the history
    assert delivery.attempt(newer, settings).recorded
    assert statuses() == ["delivered"]


def test_a_disabled_endpoint_gets_nothing_and_its_deliveries_wait(app, ctx, receiver):
    add_endpoint(receiver.url)
    emit(2)  # written while it was enabled
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE webhook_endpoints SET enabled = :f"), {"f": False})
    counts = dispatcher.run(1)
    assert counts.get("parked") == 2 and "claimed" not in counts
    assert receiver.received() == []
    assert all(d.status == "pending" and d.next_attempt_at > utcnow() for d in deliveries())
    assert delivery.deliver_now(deliveries()[0].id) is None
    # Enabled again, everything it is owed is due at once, not when its parking ends.
    endpoints.update(deliveries()[0].endpoint_id, enabled=True)
    assert all(d.next_attempt_at <= utcnow() for d in deliveries())
    assert dispatcher.run(1).get("delivered") == 2 and len(receiver.received()) == 2


def test_pruning_removes_what_is_older_than_the_retention_and_gives_up_what_is_still_owed(app, ctx, receiver):
    endpoint_id, _ = add_endpoint(receiver.url)
    old = utcnow() - timedelta(days=31)
    delivered, dead, owed = emit(3, at=old)
    recent = emit(2)
    (uid,) = add_users(1)
    entry = ledger.add(uid, 5, actor="test").entry
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE webhook_deliveries SET status = 'delivered', delivered_at = created_at, attempts = 1 "
                          "WHERE event_id IN (:a, :b)"), {"a": delivered, "b": recent[0]})
        conn.execute(text("UPDATE webhook_deliveries SET status = 'dead', attempts = 3 WHERE event_id = :d"),
                     {"d": dead})
        conn.execute(text("INSERT INTO webhook_attempts (delivery_id, attempted_at, duration_ms, status_code) "
                          "SELECT id, created_at, 5, 200 FROM webhook_deliveries"))
        conn.execute(text("INSERT INTO webhook_deliveries (endpoint_id, entry_id, status, attempts, next_attempt_at, "
                          "created_at, delivered_at) VALUES (:e, :entry, 'delivered', 1, :old, :old, :old)").bindparams(
            bindparam("old", type_=UTCDateTime)), {"e": endpoint_id, "entry": entry.id, "old": old})

    counts = prune.prune(30, batch=1)  # one row a statement: the batching loops
    # Delivered, dead, the entry's; the one still owed after the retention is given up; the old events.
    assert counts == {"deliveries": 3, "undelivered": 1, "events": 3}
    with db.engine.connect() as conn:
        events = conn.execute(text("SELECT id FROM events ORDER BY id")).scalars().all()
        orphans = conn.execute(text("SELECT COUNT(*) FROM webhook_attempts a WHERE NOT EXISTS "
                                    "(SELECT 1 FROM webhook_deliveries d WHERE d.id = a.delivery_id)")).scalar()
    assert owed not in events and events == recent
    assert [(d.event_id, d.status) for d in deliveries()] == [(recent[0], "delivered"), (recent[1], "pending")]
    assert orphans == 0
    assert ledger.entries(uid, limit=5)[0].id == entry.id  # the ledger is never pruned
    assert prune.prune(30) == {"deliveries": 0, "undelivered": 0, "events": 0}


def test_ledger_changes_are_delivered_as_credits_changed_with_the_entry_id(app, ctx, receiver):
    endpoint_id, secret = add_endpoint(receiver.url, types=("credits.changed",))
    (uid,) = add_users(1)
    entries = [ledger.add(uid, 7, actor="test").entry, ledger.deduct(uid, 2, actor="test").entry]
    with dispatching(app):
        wait_for(lambda: statuses() == ["delivered"] * 2, "both changes")
    assert sorted(receiver.ids()) == sorted(f"evt_entry_{e.id}" for e in entries)
    for request in receiver.received():
        event = Webhook(secret).verify(request.body, request.headers)
        assert event["type"] == "credits.changed" and event["data"]["user_id"] == uid
    balances = {Webhook(secret).verify(r.body, r.headers)["data"]["balance_after"] for r in receiver.received()}
    assert balances == {7, 5}


REBINDING_HOST = "rebinding.example"


def test_a_name_pointed_at_the_loopback_after_its_check_is_not_followed(receiver, monkeypatch):
    """DNS rebinding: the receiver's name resolves to a public address when it is checked and
    to the loopback (where a listener waits) right after. The delivery connects to the
    address it checked, so nothing reaches the loopback and the name is resolved once."""
    import socket

    real, asked = socket.getaddrinfo, []

    def rebinding(host, port, *args, **kwargs):
        if host != REBINDING_HOST:
            return real(host, port, *args, **kwargs)
        asked.append(host)
        return real("93.184.215.14" if len(asked) == 1 else "127.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    settings = delivery.Settings(timeout=1, max_attempts=3, backoff_base=1, backoff_max=2, lease=6, concurrency=1,
                                 allow_private=False)
    status, error = delivery.post(f"http://{REBINDING_HOST}:{receiver.port}/hooks", "{}", {}, settings)
    assert status is None and "93.184.215.14" in error, error
    assert receiver.received() == [] and asked == [REBINDING_HOST]


def test_a_delivery_to_a_checked_address_still_names_the_host(receiver):
    """Connecting to the checked address keeps the request as the URL says: its path and
    query, and the Host header naming the URL's host and port."""
    timeout = delivery.urllib3.Timeout(connect=2, read=2)
    url = f"http://receiver.example:{receiver.port}/hooks/in?team=7"
    response = delivery._post_to("127.0.0.1", url, '{"a": 1}', {"content-type": "application/json"}, timeout)
    response.close()
    assert response.status == 200
    (request,) = receiver.received()
    assert request.headers["host"] == f"receiver.example:{receiver.port}" and request.body == b'{"a": 1}'
