"""The schema-update guard on its own: what parses as allowed additive DDL and what is
refused, with the offending statement named. Pure parser tests, no database."""
import os
import re
import subprocess
import sys

import pytest

from credits_app.schema_guard import CORE_TABLES, Refused, check

ALLOWED = [
    "CREATE TABLE notes (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users (user_id), "
    "body text DEFAULT '', created_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS public.tags (name text PRIMARY KEY)",
    "CREATE UNLOGGED TABLE scratch (x int)",
    "CREATE INDEX ix_users_name ON users (name)",
    "CREATE UNIQUE INDEX uq_notes_body ON notes (body)",
    "CREATE VIEW user_balances AS SELECT u.user_id, u.email, c.credits FROM users u JOIN credits c USING (user_id)",
    "CREATE OR REPLACE VIEW daily AS SELECT date_trunc('day', created_at) AS day, sum(amount) FROM ledger_entries "
    "GROUP BY 1",
    "CREATE SEQUENCE invoice_numbers START 1000",
    "CREATE TYPE mood AS ENUM ('happy', 'sad')",
    "CREATE TYPE point2 AS (x int, y int)",
    "CREATE DOMAIN positive AS integer CHECK (VALUE > 0)",
    "ALTER TYPE mood ADD VALUE 'meh'",
    "ALTER TABLE users ADD COLUMN tier text DEFAULT 'basic'",
    "ALTER TABLE users ADD COLUMN nickname text",
    "ALTER TABLE users ADD COLUMN plan text NOT NULL DEFAULT 'free'",
    "ALTER TABLE users ADD COLUMN external_id uuid DEFAULT gen_random_uuid()",
    "CREATE INDEX ix_users_external_id ON users (external_id)",
    "CREATE INDEX ix_notes_body ON notes (lower(body)) WHERE body <> ''",
    "ALTER TABLE users ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY",
    "ALTER TABLE users ALTER COLUMN tier SET DEFAULT 'pro'",
    "ALTER TABLE notes ADD COLUMN pinned boolean NOT NULL",  # not a core table: the database decides
    "ALTER TABLE notes ADD CONSTRAINT ck_notes_body CHECK (length(body) < 1000), ALTER COLUMN body SET DEFAULT 'x'",
    "COMMENT ON TABLE users IS 'the people'",
    "COMMENT ON COLUMN users.tier IS 'pricing tier'",
    "CREATE TABLE a (x int); CREATE TABLE b (y int); COMMENT ON TABLE a IS '100%'",
]

REFUSED = [
    # (sql, words the reason must contain)
    ("INSERT INTO users (email, name) VALUES ('a@b.c', 'x')", "DML"),
    ("UPDATE credits SET credits = 1000000", "DML"),
    ("DELETE FROM ledger_entries", "DML"),
    ("TRUNCATE ledger_entries", "DML"),
    ("COPY users TO '/tmp/users.csv'", "DML"),
    ("MERGE INTO credits c USING users u ON c.user_id = u.user_id WHEN MATCHED THEN DELETE", "DML"),
    ("DROP TABLE notes", "DROP"),
    ("DROP INDEX uq_users_email_lower", "DROP"),
    ("DROP VIEW IF EXISTS v", "DROP"),
    ("GRANT ALL ON credits TO PUBLIC", "GRANT"),
    ("REVOKE SELECT ON users FROM PUBLIC", "GRANT"),
    ("CREATE ROLE intruder SUPERUSER LOGIN", "role"),
    ("ALTER ROLE postgres PASSWORD 'x'", "role"),
    ("CREATE DATABASE other", "database"),
    ("ALTER TABLE notes OWNER TO intruder", "not additive"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE plpython3u AS 'return 1'", "untrusted language 'plpython3u'"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE c AS 'libc', 'abs'", "untrusted language 'c'"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN UPDATE credits SET credits = 9; RETURN 1; END $$",
     "functions and procedures"),
    ("CREATE PROCEDURE p() LANGUAGE sql AS 'SELECT 1'", "functions and procedures"),
    ("DO $$ BEGIN DELETE FROM credits; END $$", "DO blocks"),
    ("CREATE TRIGGER t BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION f()", "triggers"),
    ("CREATE RULE r AS ON INSERT TO credits DO INSTEAD NOTHING", "rules"),
    ("CREATE TABLE copy AS SELECT * FROM users", "CREATE TABLE AS"),
    ("SELECT * INTO copy FROM users", "queries"),
    ("CREATE MATERIALIZED VIEW mv AS SELECT 1", "materialized"),
    ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", "queries"),
    ("SELECT set_config('search_path', 'evil', false)", "queries"),
    ("SET search_path = evil, public", "SET/RESET"),
    ("SET LOCAL lock_timeout = 0", "SET/RESET"),
    ("RESET ALL", "SET/RESET"),
    ("ALTER SYSTEM SET fsync = off", "ALTER SYSTEM"),
    ("LOCK TABLE credits IN ACCESS EXCLUSIVE MODE", "LOCK"),
    ("VACUUM FULL ledger_entries", "VACUUM"),
    ("CREATE EXTENSION dblink", "extensions"),
    ("CREATE SCHEMA postgres", "CREATE SCHEMA"),
    ("COMMIT", "transaction control"),
    ("BEGIN", "transaction control"),
    ("ALTER TABLE users RENAME COLUMN email TO mail", "renaming"),
    ("ALTER TABLE users DROP COLUMN name", "not additive"),
    ("ALTER TABLE users ALTER COLUMN email TYPE text", "not additive"),
    ("ALTER TABLE users ALTER COLUMN name DROP NOT NULL", "not additive"),
    ("ALTER TABLE users ALTER COLUMN email SET DEFAULT 'x'", "own column"),
    ("ALTER TABLE users DISABLE TRIGGER ALL", "not additive"),
    ("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only", "own tables"),
    ("ALTER TABLE credits DROP CONSTRAINT ck_credits_non_negative", "own tables"),
    ("ALTER TABLE credits ADD COLUMN bonus bigint", "own tables"),
    ("ALTER TABLE ledger_entries ADD CONSTRAINT c CHECK (amount < 10)", "own tables"),
    ("ALTER TABLE public.credits ADD COLUMN x int", "own tables"),
    ('ALTER TABLE "CREDITS" ADD COLUMN x int', "own tables"),
    ('ALTER TABLE public."Ledger_Entries" ADD COLUMN x int', "own tables"),
    ("ALTER TABLE alembic_version ADD COLUMN x int", "own tables"),
    ("ALTER TABLE users ADD COLUMN tier text NOT NULL", "needs a DEFAULT"),
    ("ALTER TABLE users ADD COLUMN email2 text, ADD COLUMN user_id2 int PRIMARY KEY", "PRIMARY"),
    ("ALTER TABLE users ADD COLUMN x int CHECK (length(email) > 5)", "CHECK constraint"),
    ("ALTER TABLE users ADD COLUMN code text DEFAULT 'x' UNIQUE", "UNIQUE constraint"),
    ("ALTER TABLE users ADD COLUMN org_id int REFERENCES users (user_id)", "FOREIGN constraint"),
    ("ALTER TABLE users ADD COLUMN r int GENERATED ALWAYS AS (1 / (length(name) - 3)) STORED", "GENERATED"),
    ("ALTER TABLE users ADD CONSTRAINT c CHECK (false)", "refuse new users"),
    ("ALTER TABLE users ADD CONSTRAINT c CHECK (length(name) > 100)", "refuse new users"),
    ("ALTER TABLE users ADD CONSTRAINT u UNIQUE (email)", "refuse new users"),
    ("ALTER TABLE users ADD CONSTRAINT fk FOREIGN KEY (org_id) REFERENCES orgs (id)", "refuse new users"),
    ("CREATE INDEX ix ON credits ((1 / (credits - 5)))", "plain columns"),
    ("CREATE INDEX ix ON users (name) WHERE 1 / (length(name) - 3) > 0", "plain columns"),
    ("ALTER TABLE users ALTER COLUMN tier DROP DEFAULT", "DROP DEFAULT"),
    ("ALTER TABLE users ADD COLUMN x int DEFAULT set_config('search_path', 'evil', false)::int", "set_config"),
    ("ALTER TABLE users ADD COLUMN x int DEFAULT pg_catalog.pg_terminate_backend(1)::int", "pg_terminate_backend"),
    ("ALTER TABLE users ADD COLUMN x text DEFAULT dblink_exec('x', 'DELETE FROM credits')", "dblink_exec"),
    ("CREATE UNIQUE INDEX uq_credits ON credits (credits)", "UNIQUE"),
    ("CREATE INDEX CONCURRENTLY ix ON users (name)", "CONCURRENTLY"),
    ("CREATE TABLE users (x int)", "own tables"),
    ("CREATE TABLE revoked_tokens (jti text)", "own tables"),  # a later migration must still apply
    ('CREATE TABLE "Users" (x int)', "own tables"),
    ("CREATE TABLE evil.users (x int)", "schema public"),
    ("CREATE TABLE pg_temp.users (x int)", "schema public"),
    ("CREATE TEMP TABLE users (x int)", "temporary"),
    ("CREATE TEMP VIEW v AS SELECT 1", "temporary"),
    ("CREATE TABLE x (LIKE users) INHERITS (users)", "inheriting"),
    ("CREATE TABLE p PARTITION OF credits DEFAULT", "inheriting"),
    ("CREATE VIEW v AS SELECT * FROM pg_authid", "system catalogs"),
    ("CREATE VIEW v AS SELECT * FROM information_schema.tables", "schema public"),
    ("CREATE VIEW v AS SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
    ("CREATE VIEW v AS WITH d AS (DELETE FROM credits RETURNING *) SELECT * FROM d", "data-modifying"),
    ("COMMENT ON DATABASE postgres IS 'x'", "COMMENT ON DATABASE"),
    ("ALTER TYPE mood RENAME VALUE 'sad' TO 'glad'", "renaming"),
    ("ALTER INDEX uq_users_email_lower RENAME TO x", "renaming"),
    ("ALTER SEQUENCE users_user_id_seq RESTART WITH 1", "allow-list"),
    ("CREATE TABLESPACE t LOCATION '/tmp'", "allow-list"),
    ("CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw", "allow-list"),
    ("CHECKPOINT", "allow-list"),
    ("NOTIFY credits_changed", "allow-list"),
    ("LISTEN x", "allow-list"),
    ("DISCARD ALL", "allow-list"),
    ("PREPARE p AS DELETE FROM credits", "queries"),
    ("CALL p()", "queries"),
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_allowed(sql):
    assert check(sql)


@pytest.mark.parametrize("sql, reason", REFUSED)
def test_refused(sql, reason):
    with pytest.raises(Refused) as e:
        check(sql)
    assert reason.lower() in e.value.reason.lower(), e.value.reason
    assert e.value.statement == sql and e.value.index == 0


@pytest.mark.parametrize("sql, _", REFUSED)
def test_refused_statement_hidden_in_a_script_is_named(sql, _):
    script = f"CREATE TABLE harmless (x int);\n  {sql};\nCOMMENT ON TABLE harmless IS 'x'"
    with pytest.raises(Refused) as e:
        check(script)
    assert e.value.index == 1 and e.value.statement == sql
    assert script[e.value.position - 1:].startswith(sql)  # 1-based offset of the statement in the script


def test_syntax_error_reports_parser_position():
    sql = "CREATE TABLE a (x int);\nCREATE TABLE b (y int,, z int)"
    with pytest.raises(Refused) as e:
        check(sql)
    assert "syntax error" in e.value.reason and sql[e.value.position - 1] == ","


def test_empty_script_refused():
    for sql in ("", "  ;  ;", "-- only a comment"):
        with pytest.raises(Refused, match="no statements"):
            check(sql)


def test_statement_positions_are_characters():
    sql = "COMMENT ON TABLE users IS 'héllo wörld';\n\nCREATE TABLE ü (x int)"
    statements = check(sql)
    assert [s.sql for s in statements] == ["COMMENT ON TABLE users IS 'héllo wörld'", "CREATE TABLE ü (x int)"]
    assert sql[statements[1].start:].startswith("CREATE TABLE ü")


def test_every_core_table_is_protected():
    for table in CORE_TABLES:
        for sql in (f"ALTER TABLE {table} DROP COLUMN x", f"CREATE TABLE {table.upper()} (x int)",
                    f'ALTER TABLE public."{table}" ADD CONSTRAINT c CHECK (false)'):
            with pytest.raises(Refused):
                check(sql)


def test_core_tables_cover_every_table_the_migrations_create():
    schema_sql = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "schema.sql")).read()
    created = {name.lower() for name in re.findall(r"^CREATE TABLE (\w+)", schema_sql, re.MULTILINE)}
    assert created and created <= CORE_TABLES, created - CORE_TABLES


def test_deep_expressions_are_checked_without_recursion():
    # 4,000 nested operators: past Python's recursion limit, well inside the token cap.
    assert len(check("CREATE VIEW v AS SELECT " + "+".join(["1"] * 4000))) == 1
    with pytest.raises(Refused, match="function pg_sleep"):
        check("CREATE VIEW v AS SELECT " + "+".join(["1"] * 4000) + " + pg_sleep(1)")


def test_a_statement_deep_enough_to_crash_the_parser_is_refused_before_parsing():
    # 25,000 nested '+' (50 KB, inside the API's 64 KiB body limit) overflowed the C parser's
    # stack and killed the process; run in a child so a regression fails this test, not the run.
    script = ("from credits_app.schema_guard import Refused, check\n"
              "try:\n    check('CREATE VIEW v AS SELECT ' + '+'.join(['1'] * 25000))\n"
              "except Refused as e:\n    print(e.reason)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, (out.returncode, out.stderr[-500:])
    assert "more than 10,000 tokens" in out.stdout
    wide = "CREATE TABLE t (" + ", ".join(f"c{i} int" for i in range(1600)) + ")"  # PostgreSQL's column maximum
    assert len(check(wide)) == 1
    assert len(check(";".join(f"CREATE TABLE t{i} (a int)" for i in range(3000)))) == 3000  # the cap is per statement
