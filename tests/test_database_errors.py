"""Database errors are told apart by their SQLSTATE at the edge (web/errors.py): only a database
that cannot be reached, or is going away, is a 503 `database_unavailable`; a statement the
database refuses is a 409 `database_refused` naming the SQLSTATE, a statement or lock
timeout a 503 `database_timeout`. Real PostgreSQL, through the API."""
import psycopg2

from credits_app.extensions import db
from tests.conftest import client_as, make_app, new_user
from tests.test_schema_updates import dsn, query

REASON_100 = "r" * 100


def psql(app, server, sql):
    """Out of band, as an operator with database access could."""
    server.psql(dsn(app).rsplit("/", 1)[1], sql)


def _refusal(response, sqlstate, condition):
    assert response.status_code == 409, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "database_refused"
    assert error["details"] == {"sqlstate": sqlstate, "condition": condition}
    assert "nothing was changed" in error["message"]


def test_a_change_the_database_refuses_is_a_409_that_changes_nothing(pg_app, pg_server):
    admin = client_as(pg_app)
    uid = new_user(admin)
    assert admin.post(f"/api/credits/{uid}/add", json={"amount": 10}).status_code == 200
    # Out of band, the index the guard now refuses: 32 copies of a 100-character reason overflow a btree entry.
    psql(pg_app, pg_server, "CREATE INDEX ix_reason32 ON ledger_entries (" + ", ".join(["reason"] * 32) + ")")
    _refusal(admin.post(f"/api/credits/{uid}/add", json={"amount": 5, "reason": REASON_100}),
             "54000", "program_limit_exceeded")
    assert admin.get(f"/api/credits/{uid}").get_json()["credits"] == 10
    assert admin.post(f"/api/credits/{uid}/add", json={"amount": 5, "reason": "short"}).status_code == 200

    psql(pg_app, pg_server, "DROP INDEX ix_reason32; "
                            "ALTER TABLE ledger_entries ADD CONSTRAINT short_reason CHECK (length(reason) < 10) NOT VALID")
    keyed = {"Idempotency-Key": "refused-by-the-database"}
    _refusal(admin.post(f"/api/credits/{uid}/deduct", json={"amount": 3, "reason": REASON_100}, headers=keyed),
             "23514", "check_violation")
    assert admin.get(f"/api/credits/{uid}").get_json()["credits"] == 15
    assert query(pg_app, "SELECT count(*) FROM ledger_entries") == [(2,)]
    # The refusal was rolled back with everything else: the key took no effect and is free.
    psql(pg_app, pg_server, "ALTER TABLE ledger_entries DROP CONSTRAINT short_reason")
    r = admin.post(f"/api/credits/{uid}/deduct", json={"amount": 3, "reason": REASON_100}, headers=keyed)
    assert r.status_code == 200 and r.get_json()["credits"] == 12
    assert "Idempotent-Replayed" not in r.headers


def test_a_statement_timeout_is_a_503_database_timeout(pg_server):
    pg_server.psql("postgres", "CREATE DATABASE statement_timeout_api TEMPLATE template_credits")
    app = make_app(pg_server.url("statement_timeout_api"), DB_STATEMENT_TIMEOUT_MS="300")
    admin = client_as(app)
    uid = new_user(admin)
    admin.post(f"/api/credits/{uid}/add", json={"amount": 10})
    blocker = psycopg2.connect(dsn(app))
    try:
        with blocker.cursor() as cur:
            cur.execute("SELECT credits FROM credits WHERE user_id = %s FOR UPDATE", (uid,))
        r = admin.post(f"/api/credits/{uid}/add", json={"amount": 1})
        assert r.status_code == 503, r.get_json()
        assert r.get_json()["error"]["code"] == "database_timeout"
        assert r.get_json()["error"]["details"]["sqlstate"] == "57014"
        assert admin.get(f"/api/credits/{uid}").get_json()["credits"] == 10  # reads do not wait for row locks
    finally:
        blocker.rollback()
        blocker.close()
    assert admin.post(f"/api/credits/{uid}/add", json={"amount": 1}).get_json()["credits"] == 11
    with app.app_context():
        db.engine.dispose()


def test_a_stopped_database_is_a_503_database_unavailable(own_pg):
    app = make_app(own_pg.url("credits"), DB_CONNECT_TIMEOUT="2")
    admin = client_as(app)
    uid = new_user(admin)
    assert admin.post(f"/api/credits/{uid}/add", json={"amount": 1}).status_code == 200
    own_pg.stop("fast")  # backends are told to terminate (57P01), then nothing listens
    responses = [admin.get(f"/api/credits/{uid}"), admin.post(f"/api/credits/{uid}/add", json={"amount": 1}),
                 admin.post("/api/users", json={"email": "x@example.com", "name": "X"}), admin.get(f"/api/users/{uid}")]
    assert [r.status_code for r in responses] == [503] * 4, [r.get_json() for r in responses]
    assert {r.get_json()["error"]["code"] for r in responses} == {"database_unavailable"}
    own_pg.restart()
    assert admin.get(f"/api/credits/{uid}").get_json()["credits"] == 1
    with app.app_context():
        db.engine.dispose()
