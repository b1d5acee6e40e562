"""Balances by time: the time rule, as-of reads, entry windows, history for charts, and the
ledger export, on SQLite and PostgreSQL."""
import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from credits_app.extensions import db
from tests.conftest import client_as, new_user


def _entries(client, uid):
    items, cursor = [], None
    while True:
        r = client.get(f"/api/credits/{uid}/transactions", query_string={"limit": 200, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.get_json()
        items += r.get_json()["items"]
        cursor = r.get_json()["next_cursor"]
        if not cursor:
            return items[::-1]  # oldest first


def test_every_entry_time_gives_its_balance_as_of_it(app):
    client = client_as(app)
    uid = new_user(client)
    for amount in (5, 7, 11):
        client.post(f"/api/credits/{uid}/add", json={"amount": amount})
    client.post(f"/api/credits/{uid}/deduct", json={"amount": 4})
    entries = _entries(client, uid)
    assert [e["balance_after"] for e in entries] == [5, 12, 23, 19]
    times = [datetime.fromisoformat(e["created_at"]) for e in entries]
    assert times == sorted(times) and len(set(times)) == len(times)
    for entry in entries:
        r = client.get(f"/api/credits/{uid}", query_string={"as_of": entry["created_at"]})
        assert r.status_code == 200, r.get_json()
        body = r.get_json()
        assert set(body) == {"user_id", "credits", "last_updated", "as_of"}  # what holds kept then is not known
        assert body["credits"] == entry["balance_after"] and body["last_updated"] == entry["created_at"]
        assert datetime.fromisoformat(body["as_of"]) == datetime.fromisoformat(entry["created_at"])
    before = (times[0] - timedelta(microseconds=1)).isoformat()
    assert client.get(f"/api/credits/{uid}", query_string={"as_of": before}).get_json()["credits"] == 0


def _iso(t):
    return t.isoformat()


def _times(entries):
    return [datetime.fromisoformat(e["created_at"]) for e in entries]


def _user_with_entries(client, amounts=(5, 7, 11, -4, 3)):
    uid = new_user(client)
    for amount in amounts:
        kind = "add" if amount > 0 else "deduct"
        assert client.post(f"/api/credits/{uid}/{kind}", json={"amount": abs(amount)}).status_code == 200
    return uid, _entries(client, uid)


def test_a_clock_behind_the_last_change_still_moves_time_forward(app):
    """The time rule holds when the clock is behind the user's last change (a clock stepped
    back, another host's clock): the entry is a microsecond after it."""
    client = client_as(app)
    uid = new_user(client)
    client.post(f"/api/credits/{uid}/add", json={"amount": 1})
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("UPDATE credits SET last_updated = :t WHERE user_id = :u"),
                     {"t": future if conn.dialect.name == "postgresql" else future.replace(tzinfo=None), "u": uid})
    for kind in ("add", "deduct"):
        client.post(f"/api/credits/{uid}/{kind}", json={"amount": 1})
    *_, second, third = _times(_entries(client, uid))
    assert second == future + timedelta(microseconds=1) and third == future + timedelta(microseconds=2)


def test_the_daily_grant_follows_the_time_rule(app):
    from credits_app import grants

    client = client_as(app)
    uid, _ = _user_with_entries(client, (3,))
    with app.app_context():
        grants.run_date(grants.utc_today())
    first, grant = _entries(client, uid)
    assert grant["kind"] == "daily_grant" and grant["balance_after"] == 8
    assert datetime.fromisoformat(grant["created_at"]) > datetime.fromisoformat(first["created_at"])
    as_of = client.get(f"/api/credits/{uid}", query_string={"as_of": grant["created_at"]}).get_json()
    assert as_of["credits"] == 8


def test_transactions_within_a_window_page_in_time_order(app):
    client = client_as(app)
    uid, entries = _user_with_entries(client, (1, 2, 3, 4, 5, 6, 7))
    times = [e["created_at"] for e in entries]
    # (since, until]: after entry 1, up to and including entry 5, newest first, two a page.
    seen, cursor = [], None
    while True:
        query = {"since": times[1], "until": times[5], "limit": 2, **({"cursor": cursor} if cursor else {})}
        body = client.get(f"/api/credits/{uid}/transactions", query_string=query).get_json()
        seen += [e["amount"] for e in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == [6, 5, 4, 3]


def test_an_entry_id_cursor_still_continues_a_page(app):
    """Cursors cut by entry id (v1) stay valid: the page continues after that entry."""
    import base64

    client = client_as(app)
    uid, entries = _user_with_entries(client, (1, 2, 3))
    v1 = base64.urlsafe_b64encode(f"v1:{entries[2]['id']}".encode()).decode().rstrip("=")
    body = client.get(f"/api/credits/{uid}/transactions", query_string={"cursor": v1}).get_json()
    assert [e["amount"] for e in body["items"]] == [2, 1]
    gone = base64.urlsafe_b64encode(b"v1:999999").decode().rstrip("=")
    r = client.get(f"/api/credits/{uid}/transactions", query_string={"cursor": gone})
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid_cursor"
    for bad in ("djI6eDox", "djI6MTox" + "x", base64.urlsafe_b64encode(b"v2:99999999999999999999:1").decode()):
        r = client.get(f"/api/credits/{uid}/transactions", query_string={"cursor": bad})
        assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid_cursor", bad


@pytest.mark.parametrize("value, says", [
    ("2026-11-30T12:00:00", "offset"),
    ("2026-11-30T12:00:00 00:00", "%2B"),  # a + sent unencoded arrives as a space
    ("yesterday", "RFC 3339"),
    ("0001-01-01T00:00:00Z", "between"),
    ("9999-12-31T23:59:59-23:59", "between"),
    ("2026-13-01T00:00:00Z", "RFC 3339"),
    # ISO 8601 forms that are not RFC 3339's date-time
    ("20261130T120000Z", "RFC 3339"), ("2026-11-30T12Z", "RFC 3339"), ("2026-11-30T12:00:00+0000", "RFC 3339"),
    ("2026-11-30 12:00:00Z", "RFC 3339"), ("2026-W48-1T12:00:00Z", "RFC 3339"),
])
def test_a_bad_instant_is_a_422_naming_the_field(app, value, says):
    client = client_as(app)
    uid = new_user(client)
    for path, name in ((f"/api/credits/{uid}", "as_of"), (f"/api/credits/{uid}/history", "since"),
                       (f"/api/credits/{uid}/transactions", "until"), ("/api/ledger/export", "since")):
        r = client.get(path, query_string={name: value})
        assert r.status_code == 422 and r.is_json, (path, r.status_code, r.data[:200])
        error = r.get_json()["error"]
        assert error["code"] == "validation_error" and name in error["details"]["fields"], (path, error)
        assert says in " ".join(error["details"]["fields"][name]), (path, error)


def test_rfc_3339_forms_are_read_in_either_case_and_to_the_microsecond(app):
    client = client_as(app)
    uid = new_user(client)
    for value, echoed in (("2026-11-30t12:00:00z", "2026-11-30T12:00:00+00:00"),
                          ("2026-11-30T12:00:00.1234567Z", "2026-11-30T12:00:00.123456+00:00"),
                          ("2026-11-30T12:00:00.5-01:30", "2026-11-30T13:30:00.500000+00:00")):
        r = client.get(f"/api/credits/{uid}", query_string={"as_of": value})
        assert r.status_code == 200 and r.get_json()["as_of"] == echoed, (value, r.get_json())


def test_as_of_for_an_unknown_user_is_a_404_and_an_offset_is_honoured(app):
    client = client_as(app)
    r = client.get("/api/credits/424242", query_string={"as_of": "2026-11-30T12:00:00Z"})
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "user_not_found"
    uid, entries = _user_with_entries(client, (9,))
    at = datetime.fromisoformat(entries[0]["created_at"]).astimezone(timezone(timedelta(hours=-5)))
    body = client.get(f"/api/credits/{uid}", query_string={"as_of": at.isoformat()}).get_json()
    assert body["credits"] == 9 and datetime.fromisoformat(body["as_of"]) == at
    assert body["as_of"].endswith("+00:00")  # echoed in UTC


def test_history_gives_the_balance_at_the_end_of_each_span(app):
    client = client_as(app)
    uid, entries = _user_with_entries(client)
    times = _times(entries)
    since, until = times[0] - timedelta(milliseconds=1), times[-1] + timedelta(milliseconds=1)
    r = client.get(f"/api/credits/{uid}/history", query_string={"since": _iso(since), "until": _iso(until),
                                                                 "points": 7})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["user_id"] == uid and len(body["points"]) == 7
    ats = [datetime.fromisoformat(p["at"]) for p in body["points"]]
    assert ats == sorted(ats) and ats[-1] == until and datetime.fromisoformat(body["since"]) == since
    for point in body["points"]:
        as_of = client.get(f"/api/credits/{uid}", query_string={"as_of": point["at"]}).get_json()
        assert point["credits"] == as_of["credits"], point
    # Defaults: from the user's creation to now; the last point is the current balance.
    body = client.get(f"/api/credits/{uid}/history").get_json()
    assert len(body["points"]) == 100 and body["points"][-1]["credits"] == 22
    assert client.get(f"/api/credits/{uid}").get_json()["credits"] == 22


def test_history_refuses_what_it_cannot_draw(app):
    client = client_as(app)
    uid = new_user(client)
    for query, field in (({"points": 0}, "points"), ({"points": 1001}, "points"), ({"points": "x"}, "points"),
                         ({"since": "2026-11-30T12:00:00Z", "until": "2026-11-30T11:00:00Z"}, "since")):
        r = client.get(f"/api/credits/{uid}/history", query_string=query)
        assert r.status_code == 422 and field in r.get_json()["error"]["details"]["fields"], (query, r.get_json())
    r = client.get("/api/credits/424242/history")
    assert r.status_code == 404
    # A range shorter than the points asked for gives one point a microsecond.
    body = client.get(f"/api/credits/{uid}/history", query_string={
        "since": "2026-11-30T12:00:00Z", "until": "2026-11-30T12:00:00.000003Z", "points": 50}).get_json()
    assert [p["credits"] for p in body["points"]] == [0, 0, 0]
    # Ending before the user existed: a day of zeros.
    body = client.get(f"/api/credits/{uid}/history", query_string={"until": "2020-01-01T00:00:00Z",
                                                                   "points": 4}).get_json()
    assert body["since"].startswith("2019-12-31T00:00:00") and [p["credits"] for p in body["points"]] == [0] * 4


def _export(client, **query):
    r = client.get("/api/ledger/export", query_string=query)
    assert r.status_code == 200, r.data[:300]
    return r


def test_export_csv_and_ndjson_reconcile_with_as_of(app):
    client = client_as(app)
    a, a_entries = _user_with_entries(client)
    b = new_user(client, "bob@example.com")
    client.post(f"/api/credits/{b}/add", json={"amount": 40, "reason": "=HYPERLINK(\"http://x\")"})
    client.post(f"/api/credits/{b}/deduct", json={"amount": 15, "reason": "caf\u00e9, \"quoted\"\nline"})
    r = _export(client)
    assert r.mimetype == "text/csv" and "attachment" in r.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    columns = ["id", "user_id", "kind", "amount", "balance_after", "reason", "actor", "idempotency_key", "grant_date",
               "created_at", "reverses", "hold_id"]
    assert list(rows[0]) == columns
    assert len(rows) == 7 and [r_["created_at"] for r_ in rows] == sorted(r_["created_at"] for r_ in rows)
    by_user = {}
    for row in rows:
        by_user[int(row["user_id"])] = by_user.get(int(row["user_id"]), 0) + int(row["amount"])
        assert row["created_at"].endswith("+00:00")
    assert by_user == {a: 22, b: 25}
    reasons = [row["reason"] for row in rows if int(row["user_id"]) == b]
    assert reasons == ["'=HYPERLINK(\"http://x\")", "caf\u00e9, \"quoted\"\nline"]  # no formula runs; text kept
    r = _export(client, format="ndjson", user_id=b)
    assert r.mimetype == "application/x-ndjson"
    lines = [json.loads(line) for line in r.get_data(as_text=True).splitlines()]
    assert all(list(x) == columns for x in lines)
    assert [x["amount"] for x in lines] == [40, -15] and lines[0]["reason"] == "=HYPERLINK(\"http://x\")"
    # A window (since, until]: the sum up to `until` is the balance as of `until`.
    until = a_entries[2]["created_at"]
    window = [json.loads(line) for line in _export(client, format="ndjson", user_id=a, until=until)
              .get_data(as_text=True).splitlines()]
    as_of = client.get(f"/api/credits/{a}", query_string={"as_of": until}).get_json()["credits"]
    assert sum(x["amount"] for x in window) == as_of == 23
    later = _export(client, format="ndjson", user_id=a, since=until).get_data(as_text=True).splitlines()
    assert len(window) + len(later) == len(a_entries)


def test_export_refusals(app):
    client = client_as(app)
    r = client.get("/api/ledger/export", query_string={"user_id": 424242})
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "user_not_found"
    for query in ({"format": "xml"}, {"user_id": 0}, {"user_id": "x"},
                  {"since": "2026-11-30T12:00:00Z", "until": "2026-11-30T12:00:00Z"}):
        r = client.get("/api/ledger/export", query_string=query)
        assert r.status_code == 422 and r.is_json, (query, r.data[:200])
    assert client_as(app, "service").get("/api/ledger/export").status_code == 403


def test_cli_export_writes_what_the_api_does(app, runner, tmp_path):
    client = client_as(app)
    uid, _ = _user_with_entries(client)
    for fmt in ("csv", "ndjson"):
        api = _export(client, format=fmt, user_id=uid).get_data(as_text=True)
        out = tmp_path / f"ledger.{fmt}"
        r = runner.invoke(args=["credits", "export", "--format", fmt, "--user-id", str(uid), "--output", str(out)])
        assert r.exit_code == 0, r.output
        assert out.read_text(encoding="utf-8") == api
    r = runner.invoke(args=["credits", "export"])
    assert r.exit_code == 0 and r.output.startswith("id,user_id,kind,amount,") and r.output.count("\n") == 6
    r = runner.invoke(args=["credits", "export", "--since", "not-a-time"])
    assert r.exit_code == 2 and "RFC 3339" in r.output
    r = runner.invoke(args=["credits", "export", "--user-id", "424242"])
    assert r.exit_code == 1 and "user_not_found" in r.output


def test_as_of_is_exact_after_a_storm_of_racing_changes(pg_app):
    """Many threads change three users at once through a real server. Afterwards every
    entry's own time, given as as_of, answers that entry's balance_after; each user's entries
    in id order have strictly increasing times; and the export up to a past instant sums, per
    user, to the balance as of that instant."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import LiveServer, token_for
    from tests.test_concurrency import call

    client = client_as(pg_app)
    users = [new_user(client, f"u{i}@example.com") for i in range(3)]
    for uid in users:
        client.post(f"/api/credits/{uid}/add", json={"amount": 50})
    rng = random.Random(7)
    jobs = [("POST", f"/api/credits/{rng.choice(users)}/{rng.choice(['add', 'deduct', 'deduct'])}",
             {"amount": rng.randint(1, 9)}) for _ in range(300)]
    with LiveServer(pg_app, token_for(pg_app, "service")) as srv:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda job: call(srv.url, *job, token=srv.token), jobs))
    assert {status for status, _ in results} <= {200, 409}
    assert sum(status == 200 for status, _ in results) > 100
    for uid in users:
        entries = sorted(_entries(client, uid), key=lambda e: e["id"])
        times = _times(entries)
        assert all(a < b for a, b in zip(times, times[1:])), uid
        for entry in entries:
            body = client.get(f"/api/credits/{uid}", query_string={"as_of": entry["created_at"]}).get_json()
            assert body["credits"] == entry["balance_after"], (uid, entry)
        middle = entries[len(entries) // 2]["created_at"]
        exported = _export(client, format="ndjson", user_id=uid, until=middle).get_data(as_text=True).splitlines()
        as_of = client.get(f"/api/credits/{uid}", query_string={"as_of": middle}).get_json()["credits"]
        assert sum(json.loads(line)["amount"] for line in exported) == as_of
    everyone = [json.loads(line) for line in _export(client, format="ndjson").get_data(as_text=True).splitlines()]
    for uid in users:
        assert sum(x["amount"] for x in everyone if x["user_id"] == uid) == \
            client.get(f"/api/credits/{uid}").get_json()["credits"]


def test_cli_show_as_of(app, runner):
    client = client_as(app)
    uid, entries = _user_with_entries(client, (4, 6))
    r = runner.invoke(args=["credits", "show", str(uid), "--as-of", entries[0]["created_at"]])
    assert r.exit_code == 0 and f"user {uid}: 4 credits as of" in r.output, r.output
    r = runner.invoke(args=["credits", "show", str(uid), "--as-of", "1969-12-31T23:59:59Z"])
    assert r.exit_code == 2 and "between" in r.output


def test_a_user_token_reads_only_its_own_past(app):
    admin = client_as(app)
    me, other = new_user(admin, "me@example.com"), new_user(admin, "other@example.com")
    user = client_as(app, "user", user_id=me)
    at = {"as_of": "2030-01-01T00:00:00Z"}
    assert user.get(f"/api/credits/{me}", query_string=at).status_code == 200
    assert user.get(f"/api/credits/{me}/history").status_code == 200
    for path, query in ((f"/api/credits/{other}", at), (f"/api/credits/{other}/history", {}),
                        ("/api/ledger/export", {"user_id": me})):
        r = user.get(path, query_string=query)
        assert r.status_code == 403 and r.get_json()["error"]["code"] == "forbidden", path
