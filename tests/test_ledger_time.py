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
        assert body["credits"] == entry["balance_after"] and body["last_updated"] == entry["created_at"]
        assert datetime.fromisoformat(body["as_of"]) == datetime.fromisoformat(entry["created_at"])
    before = (times[0] - timedelta(microseconds=1)).isoformat()
    assert client.get(f"/api/credits/{uid}", query_string={"as_of": before}).get_json()["credits"] == 0
