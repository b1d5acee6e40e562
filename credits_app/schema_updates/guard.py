"""The gate in front of external schema updates. SQL is parsed with PostgreSQL's own parser
(pglast) and every statement must be additive DDL on the allow-list below; anything else is
refused, naming the statement and the reason. Default-deny: a statement kind that is not on
the allow-list is refused even if nobody thought to name it. Pure: no database, no Flask
(what only the database can tell, such as an index's real key size, schema_probes checks).

What is allowed (all objects live in schema `public`, none temporary):
- CREATE TABLE (not AS SELECT, not inheriting from / partition of a core table),
  CREATE INDEX (not CONCURRENTLY, at most MAX_INDEX_COLUMNS columns; of the core tables only
  those in INDEXABLE_CORE_TABLES, with plain, non-unique btree column indexes: every index
  is written on each of the service's inserts into its table, and an expression, predicate,
  uniqueness or oversized key could make them fail), CREATE VIEW, CREATE SEQUENCE, CREATE
  TYPE (enum / composite), CREATE DOMAIN, ALTER TYPE ... ADD VALUE, COMMENT ON.
- ALTER TABLE ... ADD COLUMN / ADD CONSTRAINT / ALTER COLUMN ... SET DEFAULT on non-core
  tables. Of the core tables only `users` takes new columns (they surface as `attributes` in
  the users API), with nothing that could refuse a new user, now or later: NULL-able or with
  a DEFAULT; no CHECK/UNIQUE/FOREIGN KEY, no generated expression, no ADD CONSTRAINT, no
  identity or serial (a sequence runs out); a default is a literal or one of a few
  parameterless functions on a column of the very type it returns (users_default).
  SET DEFAULT on those added columns is allowed (a literal), never on users' own columns.
- Expressions (defaults, checks, index expressions, view bodies) may call only the built-in
  functions in SAFE_FUNCTIONS: a default is evaluated for every existing row when a column is
  added, so a function call there is code running at apply time. nextval() must name, by a
  literal, a sequence that is not the service's own.

Refused by design: DML, DROP, RENAME, GRANT/REVOKE, roles and databases, SET/RESET, LOCK,
VACUUM, transaction control, DO, CREATE FUNCTION/PROCEDURE/TRIGGER/RULE (a trusted-language
function can still run DML when a default calls it), CREATE EXTENSION/SCHEMA, ALTER SYSTEM,
CREATE TABLE AS / materialized views (they run a query)."""
import re
from dataclasses import dataclass, field

from pglast import ast, parse_sql
from pglast.enums import AlterTableType, ObjectType
from pglast.parser import ParseError, scan

from .guard_users import EXTENSIBLE_TABLE, USERS_CORE_COLUMNS, Deny as _Deny, users_column, users_default

# The service's own tables: migrations own them. Compared case-insensitively, so a quoted
# "CREDITS" or a look-alike "Users" table is treated as the real thing.
CORE_TABLES = frozenset({
    "users", "credits", "ledger_entries", "idempotency_keys", "holds", "daily_grant_runs", "daily_grant_chunks",
    "schema_changes", "revoked_tokens", "alembic_version", "events", "webhook_endpoints", "webhook_subscriptions",
    "webhook_deliveries", "webhook_attempts",
})  # a test checks this against every table schema.sql (the migrations) creates
# Core tables that take external indexes. An allow-list, so a core table added later takes
# none until someone decides it may: the write-heavy ones update every index on every change.
INDEXABLE_CORE_TABLES = frozenset({"users"})
MAX_INDEX_COLUMNS = 8  # key and INCLUDE columns of one external index

SAFE_FUNCTIONS = frozenset({
    # text
    "lower", "upper", "length", "char_length", "character_length", "octet_length", "btrim", "ltrim",
    "rtrim", "substr", "substring", "concat", "concat_ws", "replace", "left", "right", "split_part",
    "strpos", "position", "md5", "initcap", "lpad", "rpad", "format", "to_char", "regexp_replace",
    "starts_with", "translate", "reverse", "repeat",
    # numbers
    "abs", "round", "floor", "ceil", "ceiling", "trunc", "mod", "power", "sign", "sqrt", "to_number",
    # time
    "now", "date_trunc", "date_part", "extract", "age", "make_interval", "make_date", "timezone",
    "to_date", "to_timestamp", "statement_timestamp", "transaction_timestamp", "clock_timestamp",
    "justify_interval",
    # identifiers and sequences (nextval: serial-style defaults, checked by _check_nextval)
    "gen_random_uuid", "nextval",
    # json
    "to_json", "to_jsonb", "json_build_object", "jsonb_build_object", "json_build_array",
    "jsonb_build_array", "jsonb_typeof", "json_typeof", "jsonb_array_length", "jsonb_extract_path_text",
    # aggregates and window functions (views)
    "count", "sum", "min", "max", "avg", "bool_and", "bool_or", "every", "string_agg", "array_agg",
    "json_agg", "jsonb_agg", "row_number", "rank", "dense_rank", "lag", "lead", "first_value",
    "last_value",
    # arrays
    "array_length", "cardinality", "unnest", "array_position",
})

# The parser builds `1+1+...+1` as a tree one level deep per operator, in C: deep enough, it
# overflows the thread's stack and kills the process, and a body within the default
# MAX_CONTENT_LENGTH can nest that deep. A level takes two tokens, so this cap keeps any
# statement well short of the crash, while no real DDL statement (not even a table of 1,600
# columns) comes near it.
MAX_STATEMENT_TOKENS = 10_000

_DML = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
UNTRUSTED_LANGUAGES = {"c", "internal", "plpythonu", "plpython2u", "plpython3u", "plperlu", "pltclu"}

_NAMED_REFUSALS = [
    (_DML + (ast.TruncateStmt, ast.CopyStmt), "DML is not allowed: external updates change structure, not data"),
    ((ast.DropStmt, ast.DropOwnedStmt, ast.DropRoleStmt, ast.DropdbStmt, ast.DropTableSpaceStmt,
      ast.DropSubscriptionStmt, ast.DropUserMappingStmt), "DROP is not allowed: only additive changes are"),
    ((ast.GrantStmt, ast.GrantRoleStmt, ast.AlterDefaultPrivilegesStmt), "GRANT/REVOKE is not allowed"),
    ((ast.CreateRoleStmt, ast.AlterRoleStmt, ast.AlterRoleSetStmt, ast.CreatedbStmt, ast.AlterDatabaseStmt,
      ast.AlterDatabaseSetStmt, ast.ReassignOwnedStmt, ast.AlterOwnerStmt),
     "role, ownership and database statements are not allowed"),
    ((ast.DoStmt,), "DO blocks run arbitrary code and are not allowed"),
    ((ast.CreateTrigStmt, ast.RuleStmt, ast.CreateEventTrigStmt),
     "triggers and rules run code on the service's writes and are not allowed"),
    ((ast.CreateTableAsStmt,), "CREATE TABLE AS / SELECT INTO / materialized views run a query and are not allowed"),
    ((ast.SelectStmt, ast.CallStmt, ast.ExecuteStmt, ast.PrepareStmt),
     "queries and calls are not allowed: they can run functions with side effects"),
    ((ast.VariableSetStmt, ast.AlterSystemStmt),
     "SET/RESET and ALTER SYSTEM are not allowed: settings such as search_path are fixed by the service"),
    ((ast.TransactionStmt,), "transaction control is not allowed: the service runs the whole script in one transaction"),
    ((ast.LockStmt,), "LOCK is not allowed"),
    ((ast.VacuumStmt,), "VACUUM/ANALYZE is not allowed (and cannot run inside a transaction)"),
    ((ast.CreateExtensionStmt, ast.AlterExtensionStmt, ast.AlterExtensionContentsStmt),
     "extensions are not allowed: they install arbitrary code"),
    ((ast.CreateSchemaStmt,), "CREATE SCHEMA is not allowed: a schema early in search_path could shadow core tables"),
    ((ast.RenameStmt, ast.AlterObjectSchemaStmt), "renaming or moving objects is not additive"),
]


class Refused(Exception):
    """The script is not allowed; `statement` is the offending statement's text, `index` its
    0-based position in the script, `position` a 1-based character offset in the script."""

    def __init__(self, reason, statement=None, index=None, position=None):
        super().__init__(reason)
        self.reason, self.statement, self.index, self.position = reason, statement, index, position


@dataclass(frozen=True)
class Statement:
    index: int
    sql: str
    start: int  # 0-based character offset of the statement in the script
    kind: str
    touches_core: bool = False  # names a core table: it may lock one the service's traffic needs
    node: object = field(default=None, compare=False, repr=False)  # the parsed statement

    def refused(self, reason):
        return Refused(reason, statement=self.sql, index=self.index, position=self.start + 1)


def check(sql, max_statements=None):
    """Parse `sql` and return its statements if every one is allowed and there are at most
    `max_statements` of them. Raises Refused (with the parser's message and position for a
    syntax error)."""
    _refuse_huge_statements(sql)
    try:
        raw = parse_sql(sql)
    except ParseError as e:
        message, index = (e.args + (None, None))[:2]
        raise Refused(f"syntax error: {message}", position=index + 1 if isinstance(index, int) else None) from None
    except RecursionError:  # pglast builds its Python tree recursively
        raise Refused("the script nests too deeply to be checked") from None
    statements = []
    for i, r in enumerate(raw):
        start = r.stmt_location or 0
        text = sql[start:start + r.stmt_len] if r.stmt_len else sql[start:]
        start += len(text) - len(text.lstrip())  # the parser counts the whitespace after the last ';'
        statement = Statement(i, text.strip(), start, type(r.stmt).__name__, node=r.stmt)
        if max_statements is not None and i == max_statements:
            raise statement.refused(f"an update may have at most {max_statements} statements (SCHEMA_MAX_STATEMENTS): "
                                    "it runs in one transaction, holding its locks until the last one; split it")
        try:
            touches_core = _check_statement(r.stmt)
        except _Deny as e:
            raise statement.refused(str(e)) from None
        statements.append(Statement(i, statement.sql, start, statement.kind, touches_core, r.stmt))
    if not statements:
        raise Refused("the script contains no statements")
    return statements


def _refuse_huge_statements(sql):
    """Count tokens per statement with the parser's scanner (flat, no tree) before parsing."""
    try:
        tokens = scan(sql)
    except ParseError:
        return  # parse_sql reports the syntax error with its position
    count = 0
    for token in tokens:
        count = 0 if token.name == "ASCII_59" else count + 1  # ';' ends a statement
        if count > MAX_STATEMENT_TOKENS:
            raise Refused(f"a statement of more than {MAX_STATEMENT_TOKENS:,} tokens is refused: "
                          "nesting that deep could crash the parser")


def is_core(name):
    return name is not None and name.lower() in CORE_TABLES


def _check_statement(node):
    for kinds, reason in _NAMED_REFUSALS:
        if isinstance(node, kinds):
            raise _Deny(reason)
    if isinstance(node, (ast.CreateFunctionStmt,)):
        language = _function_language(node)
        if language in UNTRUSTED_LANGUAGES:
            raise _Deny(f"functions in the untrusted language {language!r} are not allowed")
        raise _Deny("functions and procedures are not allowed: a default or check calling one could run "
                    "DML at apply time; ship code in a migration")
    rule = _ALLOWED.get(type(node))
    if rule is None:
        raise _Deny(f"{type(node).__name__} is not on the allow-list of additive DDL")
    touches_core = _check_tree(node)  # first: a forbidden function is the clearest reason
    rule(node)
    return touches_core or _comments_on_core(node)


def _function_language(node):
    for option in node.options or ():
        if option.defname == "language":
            return getattr(option.arg, "sval", "").lower()
    return "sql"


def _walk(node):
    """Every node under `node`, with an explicit stack: `1+1+...+1` nests one node per term,
    and a script of a few thousand terms would exhaust Python's recursion limit."""
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Node):
            yield node
            stack.extend(getattr(node, slot, None) for slot in type(node).__slots__)
        elif isinstance(node, (list, tuple)):
            stack.extend(node)


def _check_tree(node):
    """Rules for every expression and reference anywhere in an allowed statement. Returns
    whether it names a core table."""
    touches_core = False
    for child in _walk(node):
        if isinstance(child, _DML):
            raise _Deny("data-modifying statements are not allowed, not even nested")
        if isinstance(child, ast.FuncCall):
            names = [n.sval.lower() for n in child.funcname]
            if len(names) > 1 and names[0] != "pg_catalog" or names[-1] not in SAFE_FUNCTIONS:
                raise _Deny(f"function {'.'.join(names)}() is not on the allow-list of side-effect-free functions")
            if names[-1] == "nextval":
                _check_nextval(child)
        if isinstance(child, ast.RangeVar):
            touches_core |= is_core(_check_relation(child))
    return touches_core


def _comments_on_core(node):
    if isinstance(node, ast.CommentStmt) and node.objtype in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_COLUMN):
        names = [n.sval for n in node.object]
        return is_core(names[-1] if node.objtype == ObjectType.OBJECT_TABLE else names[-2])
    return False


# A sequence named by a literal, as regclass input reads it: optionally `public.`, then a
# plain or double-quoted name.
_SEQUENCE_NAME = re.compile(r'^(?:(?:public|"public")\.)?(?:"([^"]+)"|([A-Za-z_][A-Za-z0-9_$]*))$')


def _check_nextval(call):
    """The service's sequences (`<core table>_<column>_seq`) hand out its ids: another caller
    would leave gaps and, with a sequence's limits, could exhaust them."""
    arg = call.args[0] if call.args and len(call.args) == 1 else None
    if isinstance(arg, ast.TypeCast):
        arg = arg.arg
    match = _SEQUENCE_NAME.match(arg.val.sval) if isinstance(arg, ast.A_Const) and isinstance(
        arg.val, ast.String) else None
    if match is None:
        raise _Deny("nextval() must name a sequence in schema public with a literal, such as nextval('invoice_seq')")
    name = (match.group(1) or match.group(2)).lower()
    if name.endswith("_seq") and any(name.startswith(f"{table}_") for table in CORE_TABLES):
        raise _Deny(f"nextval('{name}'): the service's own sequences hand out its ids and may not be used")


def _check_relation(rv):
    if rv.catalogname or (rv.schemaname and rv.schemaname != "public"):
        raise _Deny(f"objects must be in schema public, not {rv.schemaname or rv.catalogname!r}")
    if rv.relpersistence == "t":
        raise _Deny("temporary objects are not allowed: they shadow real tables for the whole session")
    if rv.relname.lower().startswith("pg_"):
        raise _Deny(f"{rv.relname}: system catalogs may not be referenced")
    return rv.relname


def _qualified(names, parts):
    """`names`: String nodes of a possibly schema-qualified name with `parts` unqualified parts."""
    names = [n.sval for n in names]
    if len(names) > parts and names[0] != "public":
        raise _Deny(f"objects must be in schema public, not {names[0]!r}")
    return names[-parts:]


def _create_table(node):
    name = _check_relation(node.relation)
    if is_core(name):
        raise _Deny(f"{name} is (or looks like) one of the service's own tables")
    for parent in node.inhRelations or ():
        if is_core(_check_relation(parent)):
            raise _Deny(f"inheriting from or partitioning {parent.relname} would change what its queries see")


def _create_index(node):
    name = _check_relation(node.relation)
    if node.concurrent:
        raise _Deny("CREATE INDEX CONCURRENTLY cannot run inside the update's transaction")
    if is_core(name) and name.lower() not in INDEXABLE_CORE_TABLES:
        raise _Deny(f"indexes on the service's table {name} are not allowed: each of its writes updates every "
                    "index, and an index could slow them down or make them fail; only "
                    f"{', '.join(sorted(INDEXABLE_CORE_TABLES))} takes external indexes")
    columns = len(node.indexParams) + len(node.indexIncludingParams or ())
    if columns > MAX_INDEX_COLUMNS:
        raise _Deny(f"an index may have at most {MAX_INDEX_COLUMNS} columns, this one has {columns}")
    if not is_core(name):
        return
    if node.unique or node.primary:
        raise _Deny(f"a UNIQUE index would add a constraint to the service's table {name}")
    if node.whereClause is not None or any(p.expr is not None for p in node.indexParams):
        raise _Deny(f"indexes on the service's table {name} must be on plain columns: an expression or "
                    "predicate is evaluated on every write and could make it fail")
    if (node.accessMethod or "btree").lower() != "btree":
        raise _Deny(f"indexes on the service's table {name} must be btree: the key size the service's "
                    "writes can reach is known for btree alone")


def _create_view(node):
    name = _check_relation(node.view)
    if is_core(name):
        raise _Deny(f"{name} is (or looks like) one of the service's own tables")


def _create_sequence(node):
    _check_relation(node.sequence)


def _create_type(node):
    if isinstance(node, ast.CompositeTypeStmt):
        _check_relation(node.typevar)
    else:
        _qualified(node.typeName, 1)


def _create_domain(node):
    _qualified(node.domainname, 1)


def _alter_enum(node):
    _qualified(node.typeName, 1)
    if node.oldVal:
        raise _Deny("renaming an enum value is not additive")


_COMMENT_TARGETS = {
    ObjectType.OBJECT_TABLE: 1, ObjectType.OBJECT_VIEW: 1, ObjectType.OBJECT_INDEX: 1,
    ObjectType.OBJECT_SEQUENCE: 1, ObjectType.OBJECT_COLUMN: 2, ObjectType.OBJECT_TABCONSTRAINT: None,
    ObjectType.OBJECT_TYPE: None, ObjectType.OBJECT_DOMAIN: None,
}


def _comment(node):
    if node.objtype not in _COMMENT_TARGETS:
        raise _Deny(f"COMMENT ON {node.objtype.name.removeprefix('OBJECT_')} is not allowed")
    parts = _COMMENT_TARGETS[node.objtype]
    if parts and isinstance(node.object, (list, tuple)):
        _qualified(node.object, parts)


def _alter_table(node):
    if node.objtype != ObjectType.OBJECT_TABLE:
        raise _Deny(f"ALTER {node.objtype.name.removeprefix('OBJECT_')} is not allowed")
    table = _check_relation(node.relation)
    core = is_core(table)
    if core and table.lower() != EXTENSIBLE_TABLE:
        raise _Deny(f"{table} is one of the service's own tables; only {EXTENSIBLE_TABLE} takes new columns")
    for cmd in node.cmds:
        if cmd.subtype == AlterTableType.AT_AddColumn:
            if core:
                users_column(cmd.def_)
        elif cmd.subtype == AlterTableType.AT_AddConstraint:
            if core:
                raise _Deny(f"constraints may not be added to the service's table {table}: one could refuse "
                            "new users")
        elif cmd.subtype == AlterTableType.AT_ColumnDefault:
            if cmd.def_ is None:
                raise _Deny("DROP DEFAULT is not additive")
            if core and cmd.name.lower() in USERS_CORE_COLUMNS:
                raise _Deny(f"users.{cmd.name} is the service's own column")
            if core:
                users_default(cmd.def_, None, cmd.name)
        else:
            raise _Deny(f"ALTER TABLE {cmd.subtype.name.removeprefix('AT_')} is not additive")


_ALLOWED = {
    ast.CreateStmt: _create_table,
    ast.IndexStmt: _create_index,
    ast.ViewStmt: _create_view,
    ast.CreateSeqStmt: _create_sequence,
    ast.CreateEnumStmt: _create_type,
    ast.CompositeTypeStmt: _create_type,
    ast.CreateDomainStmt: _create_domain,
    ast.AlterEnumStmt: _alter_enum,
    ast.AlterTableStmt: _alter_table,
    ast.CommentStmt: _comment,
}
