"""External schema updates against real PostgreSQL: applied in one transaction under an
advisory lock with timeouts, recorded, idempotent, visible in the API; refused classes
change nothing; SQLite answers 501 for apply. Non-admin 403s live in tests/test_auth.py."""
import json
import os
import threading

import psycopg2
import pytest
from flask_migrate import upgrade
from sqlalchemy import text

from credits_app.schema_updates import guard as schema_guard
from credits_app.extensions import db
from credits_app.schema_updates import SCHEMA_LOCK_KEY
from tests.conftest import client_as, make_app, new_user
from tests.services import ROOT
from tests.test_schema_guard import REFUSED


@pytest.fixture
def app_env():
    # A short lock_timeout so the blocked-DDL test gives up quickly; nothing asserts timing.
    return {"SCHEMA_LOCK_TIMEOUT_MS": "300"}


@pytest.fixture
def admin(pg_app):
    return client_as(pg_app, "admin")


def apply(client, sql, **body):
    return client.post("/api/schema/apply", json={"sql": sql, **body})


def dsn(app):
    return app.config["SQLALCHEMY_DATABASE_URI"].replace("postgresql+psycopg2://", "postgresql://")


def query(app, sql, **params):
    with app.app_context():
        rows = db.session.execute(text(sql), params).all()
        db.session.remove()
        return rows


def catalog(app):
    """Everything an update could change: relations, columns, constraints, types, comments."""
    return query(app, """
        SELECT c.relkind::text, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid), obj_description(c.oid)
          FROM pg_class c LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
          LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
         WHERE c.relnamespace = 'public'::regnamespace
        UNION ALL SELECT 'constraint', conname, pg_get_constraintdef(oid), NULL, NULL, NULL, NULL
          FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        UNION ALL SELECT 'trigger', tgname, tgenabled::text, NULL, NULL, NULL, NULL FROM pg_trigger
        UNION ALL SELECT 'type', typname, NULL, NULL, NULL, NULL, NULL FROM pg_type
         WHERE typnamespace = 'public'::regnamespace
        ORDER BY 1, 2, 3""")


def changes(app):
    return query(app, "SELECT name, outcome FROM schema_changes ORDER BY id")


def column_names(schema_json, table):
    return [c["name"] for t in schema_json["tables"] if t["name"] == table for c in t["columns"]]


# ---- applied and visible -------------------------------------------------------------------

def test_allowed_ddl_applies_and_shows_in_schema_and_users_api(pg_app, admin):
    user_id = new_user(admin)
    assert admin.get(f"/api/users/{user_id}").get_json()["attributes"] == {}
    admin.post(f"/api/credits/{user_id}/add", json={"amount": 5})
    balance_before = admin.get(f"/api/credits/{user_id}").get_json()

    sql = """
        ALTER TABLE users ADD COLUMN tier text DEFAULT 'basic', ADD COLUMN score integer;
        CREATE TABLE user_notes (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users (user_id),
                                 body text NOT NULL DEFAULT '', created_at timestamptz NOT NULL DEFAULT now());
        CREATE INDEX ix_user_notes_user_id ON user_notes (user_id);
        CREATE VIEW user_tiers AS SELECT user_id, tier FROM users;
        COMMENT ON COLUMN users.tier IS 'pricing tier, 100% optional'"""
    r = apply(admin, sql, name="tiers-and-notes")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["status"] == "applied" and body["statements"] == 5
    assert "column users.tier text default 'basic'::text" in body["effects"]
    assert "table user_notes" in body["effects"] and "index ix_user_notes_user_id" in body["effects"]
    assert body["change"]["outcome"] == "applied" and body["change"]["actor"] == "test-admin"

    live = admin.get("/api/schema").get_json()
    assert live["dialect"] == "postgresql"
    assert column_names(live, "users")[-2:] == ["tier", "score"]
    notes = next(t for t in live["tables"] if t["name"] == "user_notes")
    assert notes["core"] is False and notes["primary_key"]["columns"] == ["id"]
    assert notes["foreign_keys"][0]["references"] == "users"
    assert [i["name"] for i in notes["indexes"]] == ["ix_user_notes_user_id"]
    tier = next(c for c in next(t for t in live["tables"] if t["name"] == "users")["columns"] if c["name"] == "tier")
    assert tier == {"name": "tier", "type": "TEXT", "nullable": True, "default": "'basic'::text"}
    assert {"name": "user_tiers", "kind": "view"}.items() <= next(
        t for t in live["tables"] if t["name"] == "user_tiers").items()

    # Seen by the users API at once (no restart), core columns stay out of `attributes`.
    assert admin.get(f"/api/users/{user_id}").get_json()["attributes"] == {"tier": "basic", "score": None}
    created = admin.post("/api/users", json={"email": "bo@example.com", "name": "Bo"}).get_json()
    assert created["attributes"] == {"tier": "basic", "score": None}
    listed = admin.get("/api/users").get_json()["items"]
    assert [u["attributes"]["tier"] for u in listed] == ["basic", "basic"]
    patched = admin.patch(f"/api/users/{user_id}", json={"name": "Ann B"}).get_json()
    assert patched["attributes"] == {"tier": "basic", "score": None}
    # The credits API is unaffected.
    assert admin.get(f"/api/credits/{user_id}").get_json() == balance_before
    assert admin.post(f"/api/credits/{user_id}/deduct", json={"amount": 2}).get_json()["credits"] == 3


def test_columns_added_out_of_band_show_up_without_restart(pg_app, pg_server, admin):
    user_id = new_user(admin)
    admin.get(f"/api/users/{user_id}")  # warm every pool connection and cache there might be
    database = dsn(pg_app).rsplit("/", 1)[1]
    pg_server.psql(database, "ALTER TABLE users ADD COLUMN region text DEFAULT 'eu', "
                             "ADD COLUMN meta jsonb DEFAULT '{\"a\": [1, 2]}', ADD COLUMN joined date DEFAULT '2026-01-02'")
    assert admin.get(f"/api/users/{user_id}").get_json()["attributes"] == {
        "region": "eu", "meta": {"a": [1, 2]}, "joined": "2026-01-02"}


def test_prepared_credit_statements_survive_columns_added_under_them(pg_app, pg_server, admin):
    """Each pooled connection prepares the hot-path statements once (ledger.fast_path.Prepared); a
    column added to any of their tables afterwards must not break them (they name their
    columns, so PostgreSQL re-plans them without a result-type change)."""
    user_id = new_user(admin)
    for i in range(3):  # keyed and not: both statements prepared
        keyed = i % 2 == 1
        for kind, amount in (("add", 5), ("deduct", 1)):
            headers = {"Idempotency-Key": f"warm-{kind}-{i}"} if keyed else {}
            r = admin.post(f"/api/credits/{user_id}/{kind}", json={"amount": amount}, headers=headers)
            assert r.status_code == 200, r.get_json()
        assert admin.get(f"/api/credits/{user_id}").status_code == 200
    database = dsn(pg_app).rsplit("/", 1)[1]
    pg_server.psql(database, "ALTER TABLE users ADD COLUMN tier text; ALTER TABLE credits ADD COLUMN note text; "
                             "ALTER TABLE ledger_entries ADD COLUMN origin text; "
                             "ALTER TABLE idempotency_keys ADD COLUMN seen_by text")
    assert admin.post(f"/api/credits/{user_id}/add", json={"amount": 1}).status_code == 200
    r = admin.post(f"/api/credits/{user_id}/deduct", json={"amount": 2}, headers={"Idempotency-Key": "after-ddl"})
    assert r.status_code == 200 and r.get_json()["credits"] == 12 + 1 - 2
    assert admin.post(f"/api/credits/{user_id}/deduct", json={"amount": 2},
                      headers={"Idempotency-Key": "after-ddl"}).headers["Idempotent-Replayed"] == "true"
    assert admin.get(f"/api/credits/{user_id}").get_json()["credits"] == 11


# ---- refused: nothing changes ----------------------------------------------------------------

def test_every_refused_class_is_refused_and_changes_nothing(pg_app, admin):
    new_user(admin)
    before = catalog(pg_app)
    for sql, _ in REFUSED:
        script = f"CREATE TABLE harmless (x int);\n{sql};"
        r = apply(admin, script, name="attempt")
        assert r.status_code == 422, (sql, r.get_json())
        error = r.get_json()["error"]
        assert error["code"] == "schema_change_refused"
        assert error["details"]["statement"] == sql and error["details"]["statement_index"] == 1
        assert error["message"].startswith("statement 2 was refused")
    assert catalog(pg_app) == before
    assert changes(pg_app) == []  # the guard's refusals never reach the database


def test_failing_statement_mid_script_leaves_no_trace(pg_app, admin):
    before = catalog(pg_app)
    script = ("CREATE TABLE first_one (x int);\n"
              "ALTER TABLE users ADD COLUMN tier text;\n"
              "CREATE TABLE broken (y no_such_type);\n"
              "CREATE TABLE never_reached (z int)")
    r = apply(admin, script, name="half")
    assert r.status_code == 422
    error = r.get_json()["error"]
    assert error["code"] == "schema_change_failed"
    details = error["details"]
    assert details["statement_index"] == 2 and details["sqlstate"] == "42704"
    assert details["database_message"] == 'type "no_such_type" does not exist'
    assert script[details["position"] - 1:].startswith("no_such_type") and details["line"] == 3
    assert catalog(pg_app) == before
    # The attempt is audited as failed; the name stays free for a corrected script.
    assert changes(pg_app) == [("half", "failed")]
    failed = admin.get("/api/schema/changes").get_json()["items"][0]
    assert failed["error"]["sqlstate"] == "42704" and failed["error"]["code"] == "schema_change_failed"
    fixed = apply(admin, script.replace("no_such_type", "int"), name="half")
    assert fixed.status_code == 200 and fixed.get_json()["status"] == "applied"


def test_a_column_that_would_refuse_new_users_is_rolled_back(pg_app, admin):
    before = catalog(pg_app)
    # NOT NULL DEFAULT NULL passes the guard, and the ALTER on an empty table: the canary insert catches it.
    r = apply(admin, "ALTER TABLE users ADD COLUMN must text, ADD COLUMN must_too text NOT NULL DEFAULT NULL",
              name="strict")
    assert r.status_code == 422
    error = r.get_json()["error"]
    assert error["code"] == "schema_change_failed" and "a user could no longer be created" in error["message"]
    assert error["details"]["sqlstate"] == "23502"
    # A type can carry a constraint the guard cannot see: columns on users take no domain.
    r = apply(admin, "CREATE DOMAIN required_text AS text NOT NULL;\n"
                     "ALTER TABLE users ADD COLUMN must text, ADD COLUMN must_too required_text", name="strict")
    assert r.status_code == 422
    error = r.get_json()["error"]
    assert error["code"] == "schema_change_refused" and error["details"]["statement_index"] == 1
    assert "users.must_too is of type required_text" in error["message"]
    assert catalog(pg_app) == before
    assert admin.post("/api/users", json={"email": "ok@example.com", "name": "Ok"}).status_code == 201


# ---- idempotency, conflicts, dry run ---------------------------------------------------------

def test_same_name_same_sql_is_a_no_op_and_different_sql_conflicts(pg_app, admin):
    sql = "CREATE TABLE tags (name text PRIMARY KEY)"
    first = apply(admin, sql, name="tags").get_json()
    again = apply(admin, sql, name="tags")
    assert again.status_code == 200
    assert again.get_json()["status"] == "already_applied"
    assert again.get_json()["change"]["id"] == first["change"]["id"]
    conflict = apply(admin, "CREATE TABLE tags2 (name text)", name="tags")
    assert conflict.status_code == 409
    assert conflict.get_json()["error"]["code"] == "schema_change_name_conflict"
    assert query(pg_app, "SELECT to_regclass('tags2')") == [(None,)]
    assert changes(pg_app) == [("tags", "applied")]


def test_seed_clients_without_a_name_get_a_stable_derived_one(pg_app, admin):
    sql = "CREATE TABLE seed_style (x int)"
    first = apply(admin, sql).get_json()
    assert first["status"] == "applied" and first["name"] == f"sql-{first['checksum'][:16]}"
    again = apply(admin, sql).get_json()
    assert again["status"] == "already_applied" and again["name"] == first["name"]


def test_dry_run_reports_and_rolls_back(pg_app, admin):
    before = catalog(pg_app)
    sql = "ALTER TABLE users ADD COLUMN tier varchar(20) DEFAULT 'basic'; CREATE INDEX ix_users_tier ON users (tier)"
    r = apply(admin, sql, name="tier", dry_run=True)
    assert r.status_code == 200
    body = r.get_json()
    assert body["status"] == "dry_run" and body["change"] is None
    assert body["effects"] == ["column users.tier character varying(20) default 'basic'::character varying",
                               "index ix_users_tier"]
    assert catalog(pg_app) == before and changes(pg_app) == []
    failing = apply(admin, "CREATE TABLE x (y no_such_type)", dry_run=True)
    assert failing.status_code == 422 and changes(pg_app) == []  # dry runs are never recorded
    assert apply(admin, sql, name="tier").get_json()["status"] == "applied"


def test_seed_token_field_is_refused_with_a_hint(pg_app, admin):
    anon = pg_app.test_client()
    for client in (anon, admin):
        r = client.post("/api/schema/apply", json={"sql": "CREATE TABLE t (x int)", "token": "seed-token"})
        assert r.status_code == 400
        assert r.get_json()["error"]["code"] == "token_in_body"
        assert "Authorization: Bearer" in r.get_json()["error"]["message"]
    assert query(pg_app, "SELECT to_regclass('t')") == [(None,)]


def test_hostile_bodies_before_authentication_get_json_errors(pg_app, admin):
    anon = pg_app.test_client()
    deep = b"[" * 30000 + b"]" * 30000  # parsed by the seed-token check, before authentication
    r = anon.post("/api/schema/apply", data=deep, content_type="application/json")
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "missing_token"
    r = admin.post("/api/schema/apply", data=deep, content_type="application/json")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "malformed_json"
    r = anon.post("/api/schema/apply", json={"sql": "CREATE TABLE t (x int)", "token": "t"},
                  headers={"X-Request-ID": "probe-4"})
    assert r.status_code == 400 and r.headers["X-Request-ID"] == "probe-4"  # like every other error


def test_deeply_nested_sql_is_refused_not_a_500(pg_app, admin):
    r = apply(admin, "CREATE VIEW v AS SELECT " + "+".join(["1"] * 30000), dry_run=True)
    assert r.status_code == 422 and "tokens" in r.get_json()["error"]["message"]
    r = apply(admin, "CREATE VIEW v AS SELECT " + "+".join(["1"] * 3000), dry_run=True)
    assert r.status_code == 200 and r.get_json()["status"] == "dry_run"
    r = apply(admin, "ALTER TABLE daily_grant_chunks ADD CONSTRAINT no_chunks CHECK (false) NOT VALID")
    assert r.status_code == 422 and changes(pg_app) == []  # the grant's own table, like every core table


def test_request_body_is_validated(pg_app, admin):
    assert apply(admin, "CREATE TABLE t (x int)", name="has space").status_code == 422
    assert apply(admin, "CREATE TABLE t (x int)", dry_run="yes").status_code == 422
    assert admin.post("/api/schema/apply", json={"name": "n"}).status_code == 422
    r = apply(admin, "CREATE TABLE t (x int,, y int)")
    assert r.status_code == 422 and "syntax error" in r.get_json()["error"]["message"]


def test_changes_are_paginated(pg_app, admin):
    for i in range(3):
        apply(admin, f"CREATE TABLE t{i} (x int)", name=f"n{i}")
    page1 = admin.get("/api/schema/changes?limit=2").get_json()
    page2 = admin.get(f"/api/schema/changes?limit=2&cursor={page1['next_cursor']}").get_json()
    assert [c["name"] for c in page1["items"] + page2["items"]] == ["n0", "n1", "n2"]
    assert page2["next_cursor"] is None


# ---- concurrency and locks -------------------------------------------------------------------

def _waiting(conn, sql_fragment=None, advisory=False):
    with conn.cursor() as cur:
        if advisory:
            cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        else:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                        (f"%{sql_fragment}%",))
        return cur.fetchone()[0]


def _wait_until(predicate):
    """Poll a condition the database reports; the bound only stops a broken test hanging."""
    event = threading.Event()
    for _ in range(600):
        if predicate():
            return
        event.wait(0.05)
    raise AssertionError("condition never became true")


def test_concurrent_applies_serialize(pg_app):
    clients = [client_as(pg_app, "admin") for _ in range(3)]
    jobs = [("CREATE TABLE racers (x int)", "racers"), ("CREATE TABLE racers (x int)", "racers"),
            ("ALTER TABLE users ADD COLUMN lane int", "lane")]
    results = [None] * 3
    holder = psycopg2.connect(dsn(pg_app))
    holder.autocommit = True
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))

        def run(i):
            results[i] = apply(clients[i], jobs[i][0], name=jobs[i][1])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        _wait_until(lambda: _waiting(holder, advisory=True) == 3)  # all three queue on the one lock
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))
        for t in threads:
            t.join()
    finally:
        holder.close()
    assert all(r.status_code == 200 for r in results), [r.get_json() for r in results]
    statuses = sorted(r.get_json()["status"] for r in results[:2])
    assert statuses == ["already_applied", "applied"]  # not a "relation already exists" error
    assert results[2].get_json()["status"] == "applied"
    assert sorted(changes(pg_app)) == [("lane", "applied"), ("racers", "applied")]


def test_blocked_ddl_gives_up_after_lock_timeout_while_credits_keep_flowing(pg_app):
    admin, service = client_as(pg_app, "admin"), client_as(pg_app, "service")
    user_id = new_user(admin)
    service.post(f"/api/credits/{user_id}/add", json={"amount": 10})
    blocker = psycopg2.connect(dsn(pg_app))  # a long-running transaction reading users
    try:
        with blocker.cursor() as cur:
            cur.execute("SELECT count(*) FROM users")
        result, credit = {}, {}
        ddl = threading.Thread(target=lambda: result.update(r=apply(
            admin, "ALTER TABLE users ADD COLUMN blocked_col int", name="blocked")))
        ddl.start()
        watcher = psycopg2.connect(dsn(pg_app))
        watcher.autocommit = True
        try:
            _wait_until(lambda: _waiting(watcher, "blocked_col") == 1)  # the ALTER waits for its lock
        finally:
            watcher.close()
        # A credit request now queues behind the waiting ALTER (its FK check needs users)...
        adder = threading.Thread(target=lambda: credit.update(r=service.post(
            f"/api/credits/{user_id}/add", json={"amount": 1})))
        adder.start()
        ddl.join()
        adder.join()
        # ...and goes through once the ALTER gives up; the blocker is still open.
        assert result["r"].status_code == 409, result["r"].get_json()
        error = result["r"].get_json()["error"]
        assert error["code"] == "schema_lock_timeout" and error["details"]["sqlstate"] == "55P03"
        assert credit["r"].status_code == 200 and credit["r"].get_json()["credits"] == 11
        r = service.post(f"/api/credits/{user_id}/deduct", json={"amount": 3})
        assert r.status_code == 200 and r.get_json()["credits"] == 8
    finally:
        blocker.rollback()
        blocker.close()
    assert query(pg_app, "SELECT count(*) FROM information_schema.columns "
                         "WHERE table_name = 'users' AND column_name = 'blocked_col'") == [(0,)]
    assert changes(pg_app) == [("blocked", "failed")]
    assert apply(admin, "ALTER TABLE users ADD COLUMN blocked_col int", name="blocked").status_code == 200


def test_database_down_is_503(tmp_path):
    from tests.services import free_port
    app = make_app(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere", DB_CONNECT_TIMEOUT="1")
    r = client_as(app, "admin").post("/api/schema/apply", json={"sql": "CREATE TABLE t (x int)"})
    assert r.status_code == 503


# ---- migrations keep working -----------------------------------------------------------------

def test_service_migrations_still_apply_after_external_changes(pg_server):
    pg_server.psql("postgres", "CREATE DATABASE migrate_after_external")
    # Revocations are checked by a plain lookup here: the in-memory set reads columns that
    # later migrations add, and this app runs on a schema left at 0003 for a while.
    app = make_app(pg_server.url("migrate_after_external"), REVOCATION_CACHE_SECONDS="0")
    with app.app_context():
        upgrade(revision="0003")
        db.engine.dispose()
    admin = client_as(app, "admin")
    # Before 0004 there is nowhere to record a change: the service says so and applies nothing.
    r = apply(admin, "CREATE TABLE early (x int)")
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "schema_changes_missing"
    # External changes made meanwhile (allowed by the guard), then the service's later migration.
    external = "ALTER TABLE users ADD COLUMN tier text DEFAULT 'basic'; CREATE TABLE partners (id int PRIMARY KEY)"
    schema_guard.check(external)
    pg_server.psql("migrate_after_external", external)
    with app.app_context():
        upgrade()
        head = max(f[:4] for f in os.listdir(os.path.join(ROOT, "migrations", "versions")) if f[:4].isdigit())
        assert db.session.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
        db.session.remove()
    user_id = new_user(admin)
    assert admin.get(f"/api/users/{user_id}").get_json()["attributes"] == {"tier": "basic"}
    assert apply(admin, "CREATE INDEX ix_partners ON partners (id)", name="after").get_json()["status"] == "applied"
    with app.app_context():
        db.engine.dispose()


# ---- CLI -------------------------------------------------------------------------------------

def test_cli_apply_history_and_replay_on_a_fresh_database(pg_app, pg_server, tmp_path):
    runner = pg_app.test_cli_runner()
    f = tmp_path / "tier.sql"
    f.write_text("ALTER TABLE users ADD COLUMN tier text DEFAULT 'basic';\n")
    r = runner.invoke(args=["schema", "apply", str(f), "--name", "tier", "--dry-run"])
    assert r.exit_code == 0 and r.output.startswith("dry_run: tier") and changes(pg_app) == []
    r = runner.invoke(args=["schema", "apply", str(f), "--name", "tier"])
    assert r.exit_code == 0 and "applied: tier" in r.output and "+ column users.tier" in r.output
    g = tmp_path / "notes.sql"
    g.write_text("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    assert runner.invoke(args=["schema", "apply", str(g), "--name", "notes"]).exit_code == 0
    bad = tmp_path / "bad.sql"
    bad.write_text("DROP TABLE notes")
    r = runner.invoke(args=["schema", "apply", str(bad), "--name", "bad"])
    assert r.exit_code == 1 and "schema_change_refused" in r.output
    r = runner.invoke(args=["schema", "history"])
    assert r.exit_code == 0 and "applied  tier by cli" in r.output and "notes" in r.output
    exported = tmp_path / "history.json"
    exported.write_text(runner.invoke(args=["schema", "history", "--json"]).output)
    assert [c["name"] for c in json.loads(exported.read_text())] == ["tier", "notes"]
    for wrong in (str(f), str(tmp_path / "missing.json")):  # a .sql file, a typo: said plainly, no traceback
        r = runner.invoke(args=["schema", "replay", wrong])
        assert r.exit_code == 1 and "not a history file" in r.output and "schema apply FILE" in r.output
        assert r.exception is None or isinstance(r.exception, SystemExit)

    for source in (dsn(pg_app), str(exported)):
        name = f"replayed_{abs(hash(source)) % 10**8}"
        pg_server.psql("postgres", f"CREATE DATABASE {name} TEMPLATE template_credits")
        fresh = make_app(pg_server.url(name))
        fresh_runner = fresh.test_cli_runner()
        r = fresh_runner.invoke(args=["schema", "replay", source])
        assert r.exit_code == 0, r.output
        assert "applied: tier" in r.output and "applied: notes" in r.output
        assert changes(fresh) == [("tier", "applied"), ("notes", "applied")]
        assert catalog(fresh) == catalog(pg_app)
        r = fresh_runner.invoke(args=["schema", "replay", source])  # resumable: all no-ops now
        assert r.exit_code == 0 and r.output.count("already_applied") == 2
        with fresh.app_context():
            db.engine.dispose()


# ---- SQLite ----------------------------------------------------------------------------------

@pytest.fixture
def sqlite_admin(request, tmp_path):
    import shutil
    path = tmp_path / "credits.db"
    shutil.copy(request.getfixturevalue("sqlite_template"), path)
    app = make_app(f"sqlite:///{path}")
    yield client_as(app, "admin")
    with app.app_context():
        db.engine.dispose()


def test_sqlite_reads_the_schema_but_does_not_apply(sqlite_admin):
    for sql in ("CREATE TABLE t (x int)", "DROP TABLE users"):
        r = apply(sqlite_admin, sql)
        assert r.status_code == 501
        assert r.get_json()["error"]["code"] == "not_supported_on_sqlite"
        assert "PostgreSQL only" in r.get_json()["error"]["message"]
    live = sqlite_admin.get("/api/schema").get_json()
    assert live["dialect"] == "sqlite"
    assert column_names(live, "users") == ["user_id", "email", "name", "created_at"]
    assert sqlite_admin.get("/api/schema/changes").get_json() == {"items": [], "next_cursor": None}
    user_id = new_user(sqlite_admin)
    assert sqlite_admin.get(f"/api/users/{user_id}").get_json()["attributes"] == {}


def test_statement_timeout_bounds_a_statement_and_applies_nothing(pg_server):
    pg_server.psql("postgres", "CREATE DATABASE statement_timeout_db TEMPLATE template_credits")
    app = make_app(pg_server.url("statement_timeout_db"), SCHEMA_LOCK_TIMEOUT_MS="60000",
                   SCHEMA_STATEMENT_TIMEOUT_MS="300", SCHEMA_UPDATE_TIMEOUT_MS="60000")
    blocker = psycopg2.connect(dsn(app))
    try:
        with blocker.cursor() as cur:
            cur.execute("SELECT count(*) FROM users")  # holds a lock the ALTER needs, past statement_timeout
        r = apply(client_as(app, "admin"), "CREATE TABLE side (x int); ALTER TABLE users ADD COLUMN slow int")
    finally:
        blocker.rollback()
        blocker.close()
    assert r.status_code == 422
    error = r.get_json()["error"]
    assert error["details"]["sqlstate"] == "57014" and "statement_timeout" in error["message"]
    assert query(app, "SELECT to_regclass('side')") == [(None,)]
    with app.app_context():
        db.engine.dispose()


def test_only_admins_may_apply_or_read(pg_app):
    for role in ("service", "user"):
        client = client_as(pg_app, role, user_id=1 if role == "user" else None)
        assert apply(client, "CREATE TABLE t (x int)").status_code == 403
        assert client.get("/api/schema").status_code == 403
        assert client.get("/api/schema/changes").status_code == 403
    assert pg_app.test_client().get("/api/schema").status_code == 401
    assert query(pg_app, "SELECT to_regclass('t')") == [(None,)]


def test_openapi_documents_the_endpoints(pg_app):
    paths = pg_app.test_client().get("/openapi.json").get_json()["paths"]
    assert {"/api/schema/apply", "/api/schema", "/api/schema/changes"} <= set(paths)
