"""Credits API on both backends: balances, changes, refusals, ledger history."""
import json
import re
from datetime import timezone

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from credits_app.api.schemas import BalanceAsOfOut, ChangeOut, balance_json, change_json
from credits_app.extensions import db
from credits_app.ledger import Balance, Change, Entry
from tests.conftest import client_as, new_user


def test_new_user_has_zero_balance(client):
    uid = new_user(client)
    body = client.get(f"/api/credits/{uid}").get_json()
    assert body["user_id"] == uid and body["credits"] == 0 and body["last_updated"]


def test_add_deduct_reset_flow_writes_ledger(client):
    uid = new_user(client)
    r = client.post(f"/api/credits/{uid}/add", json={"amount": 10, "reason": "publishing"})
    assert r.status_code == 200
    body = r.get_json()
    assert body["credits"] == 10
    assert body["entry"]["kind"] == "add" and body["entry"]["amount"] == 10
    assert body["entry"]["balance_after"] == 10 and body["entry"]["reason"] == "publishing"
    assert body["entry"]["actor"] == "test-admin"  # the token subject
    assert body["last_updated"] == body["entry"]["created_at"]

    r = client.post(f"/api/credits/{uid}/deduct", json={"amount": 4})
    assert r.status_code == 200 and r.get_json()["credits"] == 6
    assert r.get_json()["entry"]["amount"] == -4

    r = client.patch(f"/api/credits/{uid}/reset", json={"reason": "fraud review"})
    assert r.status_code == 200
    assert r.get_json()["credits"] == 0 and r.get_json()["entry"]["amount"] == -6

    assert client.get(f"/api/credits/{uid}").get_json()["credits"] == 0
    kinds = [e["kind"] for e in client.get(f"/api/credits/{uid}/transactions").get_json()["items"]]
    assert kinds == ["reset", "deduct", "add"]


def test_reset_without_body(client):
    uid = new_user(client)
    client.post(f"/api/credits/{uid}/add", json={"amount": 3})
    r = client.patch(f"/api/credits/{uid}/reset")
    assert r.status_code == 200 and r.get_json()["credits"] == 0


def test_deduct_more_than_balance_is_409_and_changes_nothing(client):
    uid = new_user(client)
    client.post(f"/api/credits/{uid}/add", json={"amount": 5})
    r = client.post(f"/api/credits/{uid}/deduct", json={"amount": 6})
    assert r.status_code == 409
    err = r.get_json()["error"]
    assert err["code"] == "insufficient_credits"
    assert err["details"] == {"balance": 5, "held": 0, "available": 5, "requested": 6}
    assert err["message"] == "balance 5 is less than the requested 6"
    assert client.get(f"/api/credits/{uid}").get_json()["credits"] == 5
    assert len(client.get(f"/api/credits/{uid}/transactions").get_json()["items"]) == 1


def test_deduct_exact_balance_reaches_zero(client):
    uid = new_user(client)
    client.post(f"/api/credits/{uid}/add", json={"amount": 5})
    r = client.post(f"/api/credits/{uid}/deduct", json={"amount": 5})
    assert r.status_code == 200 and r.get_json()["credits"] == 0


def test_balance_cannot_exceed_maximum(app, client):
    app.config["MAX_BALANCE"] = 100
    uid = new_user(client)
    assert client.post(f"/api/credits/{uid}/add", json={"amount": 100}).status_code == 200
    r = client.post(f"/api/credits/{uid}/add", json={"amount": 1})
    assert r.status_code == 409
    assert r.get_json()["error"]["code"] == "balance_limit_exceeded"
    assert r.get_json()["error"]["details"]["max_balance"] == 100
    assert client.get(f"/api/credits/{uid}").get_json()["credits"] == 100


def test_unknown_user_is_404_everywhere(client):
    for method, path, body in [("get", "/api/credits/999", None), ("post", "/api/credits/999/add", {"amount": 1}),
                               ("post", "/api/credits/999/deduct", {"amount": 1}),
                               ("patch", "/api/credits/999/reset", {}),
                               ("get", "/api/credits/999/transactions", None),
                               ("get", f"/api/credits/{2**64}", None),
                               ("post", f"/api/credits/{10**30}/add", {"amount": 1})]:
        r = getattr(client, method)(path, json=body) if body is not None else getattr(client, method)(path)
        assert r.status_code == 404, (path, r.get_json())
        assert r.get_json()["error"]["code"] == "user_not_found"


def test_seed_user_without_credits_row(app, client):
    """The seed's schema.sql flow: a user inserted by SQL with no credits row."""
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO users (user_id, email, name) VALUES (500, 'seed@example.com', 'Seed')"))
    assert client.get("/api/credits/500").get_json() == {"user_id": 500, "credits": 0, "last_updated": None,
                                                         "held": 0, "available": 0}
    r = client.post("/api/credits/500/deduct", json={"amount": 1})
    assert r.status_code == 409
    assert r.get_json()["error"]["details"] == {"balance": 0, "held": 0, "available": 0, "requested": 1}
    r = client.post("/api/credits/500/add", json={"amount": 7})
    assert r.status_code == 200 and r.get_json()["credits"] == 7
    with app.app_context():
        assert db.session.execute(text("SELECT credits FROM credits WHERE user_id = 500")).scalar() == 7


def test_seed_user_reset_creates_row(app, client):
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO users (user_id, email, name) VALUES (501, 'seed2@example.com', 'S')"))
    r = client.patch("/api/credits/501/reset", json={})
    assert r.status_code == 200 and r.get_json()["credits"] == 0 and r.get_json()["entry"]["amount"] == 0


def test_transactions_paginate_newest_first(client):
    uid = new_user(client)
    for amount in range(1, 8):
        client.post(f"/api/credits/{uid}/add", json={"amount": amount})
    seen, cursor = [], None
    while True:
        url = f"/api/credits/{uid}/transactions?limit=3" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url).get_json()
        seen += [e["amount"] for e in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [7, 6, 5, 4, 3, 2, 1]


def test_transactions_bad_cursor_and_limit(client):
    uid = new_user(client)
    r = client.get(f"/api/credits/{uid}/transactions?cursor=not-a-cursor")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid_cursor"
    for bad in ("0", "201", "-1", "abc"):
        r = client.get(f"/api/credits/{uid}/transactions?limit={bad}")
        assert r.status_code == 422, bad
        error = r.get_json()["error"]
        assert list(error["details"]["fields"]) == ["limit"] and error["message"].startswith("the query string is invalid: limit (")


def test_empty_history_of_existing_user(client):
    uid = new_user(client)
    assert client.get(f"/api/credits/{uid}/transactions").get_json() == {"items": [], "next_cursor": None}


_aware = st.datetimes(timezones=st.just(timezone.utc))
_maybe_text = st.none() | st.text(max_size=20)


_balance = st.tuples(st.integers(1, 2**63 - 1), st.integers(0, 10**15), st.none() | _aware).flatmap(
    lambda t: st.builds(Balance, st.just(t[0]), st.just(t[1]), st.just(t[2]), held=st.integers(0, t[1])))


@settings(max_examples=300, deadline=None)
@given(st.builds(Entry, id=st.integers(1, 2**63 - 1), user_id=st.integers(1, 2**63 - 1),
                 kind=st.sampled_from(["add", "deduct", "reset", "daily_grant", "reversal", "capture"]),
                 amount=st.integers(-10**15, 10**15), balance_after=st.integers(0, 10**15), reason=_maybe_text,
                 actor=st.text(max_size=20), idempotency_key=_maybe_text, grant_date=st.none() | st.dates(),
                 created_at=_aware, reverses=st.none() | st.integers(1, 2**63 - 1),
                 hold_id=st.none() | st.integers(1, 2**63 - 1)),
       _balance)
def test_hot_path_answers_are_what_their_documented_schemas_dump(entry, balance):
    # The balance and change endpoints render with balance_json/change_json (faster than
    # marshmallow); BalanceAsOfOut (the balance read's schema, held and available included)
    # and ChangeOut document them, so both must give the same JSON.
    assert balance_json(balance) == BalanceAsOfOut().dump(balance)
    assert balance_json(balance)["available"] == balance.credits - balance.held
    change = Change(entry)
    assert change_json(change) == ChangeOut().dump(change)
    assert json.dumps(change_json(change), sort_keys=True) == json.dumps(ChangeOut().dump(change), sort_keys=True)


# ---- the ledger filtered by kind ---------------------------------------------------------------

def _mixed_ledger(app, client):
    """A user with an entry of every kind, interleaved; returns (user_id, every entry newest first)."""
    from datetime import date

    from credits_app import grants

    uid = new_user(client, "kinds@example.com")
    steps = [("add", {"amount": 50}), ("deduct", {"amount": 3}), ("add", {"amount": 4}), ("deduct", {"amount": 1})]
    entries = [client.post(f"/api/credits/{uid}/{kind}", json=body).get_json()["entry"] for kind, body in steps]
    reversal = client.post(f"/api/credits/{uid}/entries/{entries[1]['id']}/reverse", json={"reason": "refund"})
    assert reversal.status_code == 200, reversal.get_json()
    hold = client.post(f"/api/credits/{uid}/holds", json={"amount": 6}).get_json()["hold"]["hold_id"]
    assert client.post(f"/api/holds/{hold}/capture", json={"amount": 2}).status_code == 200
    with app.app_context():
        grants.run_date(date(2026, 1, 1))
    for kind, body in (("add", {"amount": 7}), ("deduct", {"amount": 2}), ("add", {"amount": 1})):
        assert client.post(f"/api/credits/{uid}/{kind}", json=body).status_code == 200
    assert client.patch(f"/api/credits/{uid}/reset", json={"reason": "closing"}).status_code == 200
    assert client.post(f"/api/credits/{uid}/add", json={"amount": 9}).status_code == 200
    every = client.get(f"/api/credits/{uid}/transactions?limit=200").get_json()["items"]
    assert {e["kind"] for e in every} == {"add", "deduct", "reset", "daily_grant", "reversal", "capture"}
    return uid, every


def _pages(client, uid, kinds, limit, **window):
    seen, pages, cursor = [], 0, None
    while True:
        query = {"kind": list(kinds), "limit": limit, **window, **({"cursor": cursor} if cursor else {})}
        r = client.get(f"/api/credits/{uid}/transactions", query_string=query)
        assert r.status_code == 200, r.get_json()
        body = r.get_json()
        assert len(body["items"]) <= limit
        seen += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return seen, pages


def test_transactions_filtered_by_kind_page_across_the_other_kinds(app, client):
    uid, every = _mixed_ledger(app, client)
    for kinds in (["add"], ["deduct"], ["add", "deduct"], ["reset"], ["daily_grant", "capture", "reversal"],
                  ["deduct", "deduct"], sorted({e["kind"] for e in every})):
        expected = [e for e in every if e["kind"] in kinds]
        for limit in (1, 2, 3, 50):
            seen, pages = _pages(client, uid, kinds, limit)
            assert seen == expected, (kinds, limit)
            assert pages == max(1, -(-len(expected) // limit)), (kinds, limit)  # no empty page at the end


def test_transactions_filtered_by_kind_within_a_window(app, client):
    uid, every = _mixed_ledger(app, client)
    oldest_first = every[::-1]
    since, until = oldest_first[1]["created_at"], oldest_first[-3]["created_at"]  # (2nd, 3rd newest]
    window = oldest_first[2:-2][::-1]
    for kinds in (["add"], ["deduct", "reset"], ["capture"]):
        expected = [e for e in window if e["kind"] in kinds]
        for limit in (1, 2, 50):
            assert _pages(client, uid, kinds, limit, since=since, until=until)[0] == expected, (kinds, limit)
    # A cursor of the unfiltered ledger continues a filtered page where that entry stood.
    first = client.get(f"/api/credits/{uid}/transactions?limit=4").get_json()
    rest = client.get(f"/api/credits/{uid}/transactions",
                      query_string={"kind": "add", "cursor": first["next_cursor"]}).get_json()["items"]
    assert rest == [e for e in every[4:] if e["kind"] == "add"]


def test_transactions_refuse_a_kind_that_is_not_the_ledgers(client):
    uid = new_user(client)
    for bad in ("refund", "", "ADD", "add,deduct"):
        r = client.get(f"/api/credits/{uid}/transactions", query_string={"kind": ["add", bad]})
        assert r.status_code == 422, bad
        error = r.get_json()["error"]
        assert error["code"] == "validation_error" and list(error["details"]["fields"]) == ["kind"], error
    assert client.get("/api/credits/999/transactions?kind=add").get_json()["error"]["code"] == "user_not_found"
    assert client.get(f"/api/credits/{uid}/transactions?kind=reset").get_json() == {"items": [], "next_cursor": None}


def test_the_kind_filter_knows_every_kind_the_ledger_allows():
    from credits_app.ledger.reads import KINDS
    from credits_app.models import LedgerEntry

    (check,) = [c for c in LedgerEntry.__table__.constraints if c.name and c.name.endswith("kind")]
    assert set(KINDS) == set(re.findall(r"'(\w+)'", str(check.sqltext)))


def test_a_kind_page_follows_the_users_index_range(pg_app):
    """However rare the kind, the page's ids come from ix_ledger_user_time's range, in order,
    each kept or dropped by its kind: never a scan of the whole ledger, nor of ix_ledger_time."""
    from credits_app.ledger import reads

    client = client_as(pg_app)
    heavy, other = new_user(client, "heavy@example.com"), new_user(client, "other@example.com")
    with pg_app.app_context():
        with db.engine.begin() as conn:
            for uid in (heavy, other):
                conn.execute(text(
                    "INSERT INTO ledger_entries (user_id, kind, amount, balance_after, actor, created_at) "
                    "SELECT :uid, CASE WHEN g % 100 = 0 THEN 'deduct' ELSE 'add' END, "
                    "CASE WHEN g % 100 = 0 THEN -1 ELSE 1 END, g, 'bulk', "
                    "timestamptz '2026-01-01' + g * interval '1 second' + :uid * interval '1 microsecond' "
                    "FROM generate_series(1, 30000) g"), {"uid": uid})
            conn.execute(text("ANALYZE ledger_entries"))
        explain = text("EXPLAIN " + reads._KIND_ENTRIES.element.text).bindparams(
            *reads._KIND_ENTRIES.element._bindparams.values())
        for kinds in (["reset"], ["deduct"], ["add", "deduct"]):
            params = {"uid": heavy, "since": reads.EARLIEST, "at": reads.LATEST, "id": 2**63 - 1, "limit": 51,
                      "kinds": kinds}
            with db.engine.connect() as conn:
                plan = "\n".join(conn.execute(explain, params).scalars())
            assert "Index Only Scan Backward using ix_ledger_user_time" in plan, plan
            assert "Seq Scan" not in plan and "ix_ledger_time " not in plan and "Hash Join" not in plan, plan
        assert [e.kind for e in reads.entries(heavy, limit=3, kinds=["deduct"])] == ["deduct"] * 3
        assert reads.entries(heavy, limit=3, kinds=["reset"]) == []
