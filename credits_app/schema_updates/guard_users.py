"""The guard's rules for `users`, the one core table that takes new columns: nothing added
may refuse a new user, now or later. Pure, like schema_guard (which applies these)."""
from pglast import ast
from pglast.enums import ConstrType, SQLValueFunctionOp

EXTENSIBLE_TABLE = "users"
USERS_CORE_COLUMNS = frozenset({"user_id", "email", "name", "created_at"})  # untouchable


class Deny(Exception):
    """The statement is refused; the message says why."""


def users_column(column):
    """ADD COLUMN on users."""
    if column.colname.lower() in USERS_CORE_COLUMNS:
        raise Deny(f"users.{column.colname} is the service's own column")
    if _type_key(column.typeName)[-1] in _SERIAL_TYPES:
        raise Deny(f"a {_type_key(column.typeName)[-1]} column on users draws on a sequence for every new user: "
                   "once the sequence is exhausted no user can be created; use a literal default")
    kinds = {c.contype for c in column.constraints or ()}
    if ConstrType.CONSTR_NOTNULL in kinds and ConstrType.CONSTR_DEFAULT not in kinds:
        raise Deny("a NOT NULL column on users needs a DEFAULT, or creating users would fail")
    for constraint in column.constraints or ():
        if constraint.contype == ConstrType.CONSTR_IDENTITY:
            raise Deny("an identity column on users draws on a sequence for every new user: once the sequence is "
                       "exhausted (MAXVALUE, a small integer type) no user can be created")
        if constraint.contype not in _HARMLESS_ON_USERS:
            raise Deny(f"a {constraint.contype.name.removeprefix('CONSTR_')} constraint on a users column could "
                       "refuse new users (or, generated, fail on their data); add the column without it")
        if constraint.contype == ConstrType.CONSTR_DEFAULT:
            users_default(constraint.raw_expr, column.typeName, column.colname)


_HARMLESS_ON_USERS = {ConstrType.CONSTR_NULL, ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_DEFAULT}
_SERIAL_TYPES = {"smallserial", "serial", "bigserial", "serial2", "serial4", "serial8"}

# Parameterless functions a users default may call, by the type each returns: on a column of
# that very type no conversion runs, so they cannot fail for one user and not another.
_USERS_DEFAULT_FUNCTIONS = {"now": "timestamptz", "transaction_timestamp": "timestamptz",
                            "statement_timestamp": "timestamptz", "clock_timestamp": "timestamptz",
                            "gen_random_uuid": "uuid"}
_USERS_DEFAULT_KEYWORDS = {SQLValueFunctionOp.SVFOP_CURRENT_TIMESTAMP: "timestamptz",
                           SQLValueFunctionOp.SVFOP_CURRENT_DATE: "date"}
MAX_DEFAULT_JSON_DEPTH = 32


def users_default(expr, type_name, column):
    """A default on a users column is evaluated for every new user, long after the update's
    canary insert passed. So it may be a literal (converted to the column's type once, when
    the update runs), a literal cast to the column's own type, or one of the functions above
    alone on a column of the type it returns. Arithmetic, other casts and other calls could
    fail later, depending on the time (`1 / (CASE WHEN now() < ... )`, '[now,2030-01-01)'::text
    into a range)."""
    column_type = _type_key(type_name) if type_name is not None else None
    literal = expr.arg if isinstance(expr, ast.TypeCast) else expr
    if isinstance(literal, ast.A_Const) and (literal is expr or _type_key(expr.typeName) == column_type):
        json_typed = column_type in (None, ("json",), ("jsonb",))
        if json_typed and isinstance(literal.val, ast.String) and _json_depth(literal.val.sval) > MAX_DEFAULT_JSON_DEPTH:
            raise Deny(f"the default of users.{column} nests deeper than {MAX_DEFAULT_JSON_DEPTH} levels")
        return
    if isinstance(expr, ast.FuncCall) and not expr.args and len(expr.funcname) == 1:
        returns = _USERS_DEFAULT_FUNCTIONS.get(expr.funcname[0].sval.lower())
    elif isinstance(expr, ast.SQLValueFunction):
        returns = _USERS_DEFAULT_KEYWORDS.get(expr.op)
    else:
        returns = None
    if returns is None or column_type != (returns,):
        raise Deny(f"the default of users.{column} must be a literal, or now(), CURRENT_TIMESTAMP, CURRENT_DATE or "
                   "gen_random_uuid() alone on a column of the type it returns: it is evaluated for every new "
                   "user, and anything else could fail for them later")


def _type_key(type_name):
    """A type as written, without pg_catalog and modifiers: ('timestamptz',), ('int4', '[]')."""
    names = tuple(n.sval.lower() for n in type_name.names if n.sval != "pg_catalog")
    return names + (("[]",) if type_name.arrayBounds else ())


def _json_depth(text):
    """How deeply brackets nest in `text`, outside JSON strings; no parsing, no recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


BTREE_MAX_ENTRY_BYTES = 2704  # PostgreSQL's limit for one btree entry on 8 KiB pages
MAX_BYTES_PER_CHARACTER = 4  # UTF-8; no server encoding needs more


def btree_entry_bytes(columns):
    """The largest btree entry an index's columns can make, from the catalog's (typlen,
    typmod, typname) of each; None if a column has no bound (text, jsonb, arrays...)."""
    total = 16  # the entry's header and null bitmap
    for typlen, typmod, typname in columns:
        if typlen > 0:
            width = typlen
        elif typname in ("varchar", "bpchar") and typmod > 4:
            width = 4 + (typmod - 4) * MAX_BYTES_PER_CHARACTER
        elif typname == "numeric" and typmod > 4:
            width = 8 + 2 * (((typmod - 4) >> 16) // 4 + 2)  # base-10000 digits of the precision
        else:
            return None
        total += width + 7  # alignment padding
    return total
