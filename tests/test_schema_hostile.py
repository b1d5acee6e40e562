"""Hostile schema updates that the guard once accepted and that then broke the service, each
now refused (422 `schema_change_refused`, naming the statement) or made harmless; checked
end to end against real PostgreSQL, through the API."""

import pytest

from tests.conftest import client_as, new_user
from tests.test_schema_updates import apply, dsn

@pytest.fixture
def admin(pg_app):
    return client_as(pg_app, "admin")


def refused(response, sql=None, index=None):
    """The error of a guard refusal; `sql`/`index` name the statement it must point at."""
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "schema_change_refused", error
    if sql is not None:
        assert error["details"]["statement"] == sql
    if index is not None:
        assert error["details"]["statement_index"] == index
    return error


def psql(pg_app, pg_server, sql):
    """Out of band: what an operator with database access could do without the API."""
    pg_server.psql(dsn(pg_app).rsplit("/", 1)[1], sql)


# ---- reading whatever a column holds -------------------------------------------------------------

def test_deep_json_defaults_are_refused(pg_app, admin):
    deep = "[" * 1500 + "]" * 1500
    sql = f"ALTER TABLE users ADD COLUMN doc jsonb DEFAULT '{deep}'"
    error = refused(apply(admin, sql), sql, 0)
    assert "nests deeper than 32 levels" in error["message"]


def test_users_api_reads_any_stored_value(pg_app, pg_server, admin):
    """Columns can be filled by other means than an update (psql, a migration): whatever they
    hold, every users endpoint answers, a value it cannot answer as JSON shown as a placeholder."""
    uid = new_user(admin)
    deep = "[" * 1500 + "]" * 1500
    fine = "[" * 40 + "]" * 40
    psql(pg_app, pg_server, f"ALTER TABLE users ADD COLUMN doc jsonb DEFAULT '{deep}', "
                            f"ADD COLUMN fine jsonb DEFAULT '{fine}', ADD COLUMN huge numeric DEFAULT 1e5000, "
                            "ADD COLUMN wide float8 DEFAULT 'Infinity', ADD COLUMN nan numeric DEFAULT 'NaN'")
    responses = [admin.get(f"/api/users/{uid}"), admin.get("/api/users"),
                 admin.post("/api/users", json={"email": "e@example.com", "name": "E"}),
                 admin.patch(f"/api/users/{uid}", json={"name": "Ann B"})]
    assert [r.status_code for r in responses] == [200, 200, 201, 200], [r.get_json() for r in responses]
    attributes = responses[0].get_json()["attributes"]
    assert attributes["doc"] == {"unreadable": "nested deeper than 64 levels", "json": deep}
    assert attributes["huge"] == {"unreadable": "a number beyond what JSON readers take", "json": "1" + "0" * 5000}
    fine_value = attributes["fine"]
    for _ in range(39):
        fine_value = fine_value[0]
    assert fine_value == []
    assert attributes["wide"] == "Infinity" and attributes["nan"] == "NaN"  # to_jsonb's own spelling
    assert responses[1].get_json()["items"][0]["attributes"] == attributes
    assert admin.get(f"/api/credits/{uid}").status_code == 200
