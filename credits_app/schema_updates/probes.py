"""What only the database can tell about an external schema update, asked inside its
transaction before it commits: how large the entries of a new index can get and how many
indexes its table now has, the types of the columns added to users, and whether a user can
still be created (the canary). A broken rule raises schema_guard.Refused naming the
statement; the canary returns the database's error."""
import random

from pglast import ast
from pglast.enums import AlterTableType
from sqlalchemy import exc, text

from .guard import is_core
from .guard_users import BTREE_MAX_ENTRY_BYTES, EXTENSIBLE_TABLE, btree_entry_bytes

_PUBLIC_INDEXES = """SELECT i.indexrelid::int8 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
                      WHERE c.relnamespace = 'public'::regnamespace"""
_NEW_INDEXES = text("""
SELECT i.indexrelid::int8 AS oid, c.relname AS name,
       (SELECT count(*) FROM pg_index o WHERE o.indrelid = i.indrelid) AS indexes
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE i.indrelid = to_regclass(format('public.%I', CAST(:table AS text))) AND i.indexrelid::int8 <> ALL(:known)""")
_INDEX_COLUMNS = text("""
SELECT a.attlen, a.atttypmod, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
 WHERE a.attrelid::int8 = :index AND a.attnum > 0""")
# A built-in or enum type (or an array of one): a domain's or a composite's constraints are
# checked on every insert, and nothing proves they pass for the next user.
_USERS_COLUMN_TYPES = text("""
SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type,
       t.typtype IN ('b', 'e') AND (t.typcategory <> 'A' OR e.typtype IN ('b', 'e')) AS plain
  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_type e ON e.oid = t.typelem
 WHERE a.attrelid = 'public.users'::regclass AND a.attname = ANY(:names) AND NOT a.attisdropped""")


def index_oids(conn):
    """The indexes on tables in public now: what check_new_indexes compares against."""
    return set(conn.exec_driver_sql(_PUBLIC_INDEXES).scalars())


def check_new_indexes(conn, statement, known, max_indexes):
    """After a CREATE INDEX: its table may hold at most `max_indexes` indexes (every insert
    writes each one), and an index on a core table must have entries that always fit a
    btree page, so no value the service may store can be refused by it. Adds the new
    indexes to `known`."""
    table = statement.node.relation.relname
    for row in conn.execute(_NEW_INDEXES, {"table": table, "known": sorted(known)}).mappings().all():
        known.add(row["oid"])
        if row["indexes"] > max_indexes:
            raise statement.refused(f"{table} would have {row['indexes']} indexes, more than "
                                    f"SCHEMA_MAX_TABLE_INDEXES ({max_indexes}): every insert writes each of them")
        if not is_core(table):
            continue
        size = btree_entry_bytes(conn.execute(_INDEX_COLUMNS, {"index": row["oid"]}).all())
        if size is None:
            raise statement.refused(f"index {row['name']} has a column of unbounded size (text, jsonb, arrays...): a "
                                    f"value there could exceed the btree limit ({BTREE_MAX_ENTRY_BYTES} bytes) and "
                                    f"refuse the service's write; on {table} index columns of bounded size "
                                    "(varchar(n), numbers, dates, uuid)")
        if size > BTREE_MAX_ENTRY_BYTES:
            raise statement.refused(f"an entry of index {row['name']} can reach {size} bytes, over the btree limit "
                                    f"({BTREE_MAX_ENTRY_BYTES} bytes): a write of long values to {table} would be "
                                    "refused; index fewer or narrower columns")


def check_users_columns(conn, statements):
    """Columns added to users must have a built-in or enum type, or an array of one."""
    added = {}
    for statement in statements:
        node = statement.node
        if isinstance(node, ast.AlterTableStmt) and node.relation.relname.lower() == EXTENSIBLE_TABLE:
            for cmd in node.cmds:
                if cmd.subtype == AlterTableType.AT_AddColumn:
                    added.setdefault(cmd.def_.colname, statement)
    if not added:
        return
    for row in conn.execute(_USERS_COLUMN_TYPES, {"names": sorted(added)}).mappings().all():
        if not row["plain"]:
            raise added[row["attname"]].refused(
                f"users.{row['attname']} is of type {row['type']}: a column on users must have a built-in or "
                "enum type (or an array of one); a domain's or composite type's constraints are checked for every "
                "new user and could refuse one later")


CANARY_USER_ID = -2**63  # no real user has it: ids come from the sequence, from 1


def users_canary(conn):
    """Create a user (and its balance) inside a savepoint, read it back as the users API
    does, and roll back: proof that the service can still create users after the update.
    The user_id is given, so the users sequence is not consumed (no id gap per update);
    email and name are as long as their columns allow, in random characters of four UTF-8
    bytes each that do not compress, so an index a real user could overflow overflows here.
    Returns the database's error (a DBAPIError) or None."""
    email = _incompressible(320 - len("@canary.invalid")) + "@canary.invalid"
    conn.exec_driver_sql("SAVEPOINT users_canary")
    try:
        conn.exec_driver_sql(
            f"INSERT INTO users (user_id, email, name) VALUES ({CANARY_USER_ID}, '{email}', '{_incompressible(200)}');"
            f"INSERT INTO credits (user_id, credits) VALUES ({CANARY_USER_ID}, 0);"
            f"SELECT to_jsonb(u)::text FROM users u WHERE u.user_id = {CANARY_USER_ID}")
        error = None
    except exc.DBAPIError as e:
        if getattr(e.orig, "pgcode", None) is None:
            raise
        error = e
    conn.exec_driver_sql("ROLLBACK TO SAVEPOINT users_canary")
    return error


def _incompressible(length):
    """Characters outside the Basic Multilingual Plane: no quote, no backslash to escape."""
    return "".join(chr(random.randrange(0x10000, 0x110000)) for _ in range(length))
