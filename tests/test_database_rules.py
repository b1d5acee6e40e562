"""The database itself enforces the money rules, whatever code talks to it."""
import pytest
from sqlalchemy import exc, text

from credits_app.extensions import db
from tests.conftest import new_user


def _sql(app, sql, **params):
    with app.app_context(), db.engine.begin() as conn:
        return conn.execute(text(sql), params)


def test_balance_check_refuses_negative(app, client):
    uid = new_user(client)
    with pytest.raises(exc.IntegrityError):
        _sql(app, "UPDATE credits SET credits = -1 WHERE user_id = :u", u=uid)


def test_ledger_is_append_only(app, client):
    uid = new_user(client)
    client.post(f"/api/credits/{uid}/add", json={"amount": 5})
    for sql in ("UPDATE ledger_entries SET amount = 500", "DELETE FROM ledger_entries"):
        with pytest.raises(exc.DatabaseError, match="append-only"):
            _sql(app, sql)
    assert _sql(app, "SELECT count(*) FROM ledger_entries").scalar() == 1


def test_one_daily_grant_per_user_and_date(app, client):
    uid = new_user(client)
    insert = ("INSERT INTO ledger_entries (user_id, kind, amount, balance_after, actor, grant_date) "
              "VALUES (:u, 'daily_grant', 5, 5, 'system', '2026-01-01')")
    _sql(app, insert, u=uid)
    with pytest.raises(exc.IntegrityError):
        _sql(app, insert, u=uid)


def test_ledger_sign_and_kind_checks(app, client):
    uid = new_user(client)
    for kind, amount, grant in [("add", -1, None), ("deduct", 1, None), ("bonus", 1, None),
                                ("daily_grant", 5, None), ("add", 5, "2026-01-01")]:
        with pytest.raises(exc.IntegrityError):
            _sql(app, "INSERT INTO ledger_entries (user_id, kind, amount, balance_after, actor, grant_date) "
                      "VALUES (:u, :k, :a, 0, 'x', :g)", u=uid, k=kind, a=amount, g=grant)
