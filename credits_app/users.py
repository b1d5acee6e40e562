"""Users. Creating one creates its zero balance in the same transaction.

Each function is one short transaction on its own connection (like the ledger): nothing is
held open across a request, which SQLite — where a transaction takes the write lock at
BEGIN — needs so that a later connection in the same request never waits on this one.

Every user returned carries `attributes`: the columns an external schema update added to
`users` (see schema_updates), read live so they show up without a restart."""
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, exc, func, insert, select, text, update as sql_update

from .config import BIGINT_MAX
from .exceptions import ConstraintViolation, EmailTaken, UserNotFound
from .extensions import db
from .models import Credit, User

USERS = User.__table__
# The model's columns are the service's own; any other column of `users` is an attribute.
CORE_COLUMNS = frozenset(USERS.columns.keys())
# One row per attribute, its value as JSON text: decoded here, one value at a time (_attribute).
_ATTRIBUTES_PG = text("SELECT u.user_id, a.key, a.value::text FROM users u "
                      "CROSS JOIN LATERAL jsonb_each(to_jsonb(u) - CAST(:core AS text[])) a WHERE u.user_id = ANY(:ids)")
_ROWS_SQLITE = text("SELECT * FROM users WHERE user_id IN :ids").bindparams(bindparam("ids", expanding=True))


@dataclass
class UserRecord:
    user_id: int
    email: str
    name: str
    created_at: datetime
    attributes: dict = field(default_factory=dict)


EMAIL_INDEX = "uq_users_email_lower"
PRIMARY_KEY = "pk_users"
_CREATE_ATTEMPTS = 5
# SQLite names an expression index, but a column constraint by its columns.
_SQLITE_VIOLATION = re.compile(r"^[A-Z ]+ constraint failed: (?:index '(?P<index>[^']+)'|(?P<columns>.+))$")
# Users inserted by SQL with explicit ids leave the id sequence behind them. A fix-up sets it
# to the highest id or its own last value, whichever is larger, under a lock so that two
# fix-ups never undo each other; a value handed out meanwhile can at worst collide once more,
# and that insert is simply tried again.
_LOCK_USER_ID_SEQUENCE = text("SELECT pg_advisory_xact_lock(hashtextextended('users.user_id sequence', 0))")
_ADVANCE_USER_ID_SEQUENCE = text("""
    SELECT setval(s.seq, GREATEST((SELECT COALESCE(max(user_id), 0) FROM users),
                                  COALESCE(pg_sequence_last_value(s.seq), 0), 1))
    FROM (SELECT CAST(pg_get_serial_sequence('users', 'user_id') AS regclass) AS seq) s""")


def create(email, name):
    """Raises EmailTaken (case-insensitive), ConstraintViolation for any other rule the row
    breaks. An id already taken by a user inserted with an explicit id is not the caller's
    conflict: the id sequence is moved past the highest id and the insert tried again."""
    for attempt in range(1, _CREATE_ATTEMPTS + 1):
        try:
            with db.engine.begin() as conn:
                row = conn.execute(insert(USERS).values(email=email.strip(), name=name).returning(*USERS.c)).one()
                conn.execute(insert(Credit.__table__).values(user_id=row.user_id, credits=0))
                return _records(conn, [row])[0]
        except exc.IntegrityError as e:
            violated = _violated(e)
            if violated != PRIMARY_KEY or attempt == _CREATE_ATTEMPTS:
                raise _conflict(violated, email) from None
        _advance_user_id_sequence()


def _advance_user_id_sequence():
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # SQLite's rowid ids always follow the highest one
            conn.execute(_LOCK_USER_ID_SEQUENCE)
            conn.execute(_ADVANCE_USER_ID_SEQUENCE)


def _violated(error):
    """The name of the constraint or unique index an IntegrityError reports (SQLite: the
    index name, or `table.column` for a column constraint; the primary key as PRIMARY_KEY)."""
    orig = error.orig
    diag = getattr(orig, "diag", None)
    if diag is not None:  # psycopg2
        return diag.constraint_name
    if getattr(orig, "sqlite_errorname", None) == "SQLITE_CONSTRAINT_PRIMARYKEY":
        return PRIMARY_KEY
    match = _SQLITE_VIOLATION.match(str(orig))
    return (match.group("index") or match.group("columns")) if match else None


def _conflict(violated, email):
    return EmailTaken(email) if violated == EMAIL_INDEX else ConstraintViolation(violated)


def get(user_id):
    """Raises UserNotFound."""
    with db.engine.connect() as conn:
        return _records(conn, [_load(conn, user_id)])[0]


def exists(user_id):
    if not 1 <= user_id <= BIGINT_MAX:  # no such id can be stored: no need to ask
        return False
    with db.engine.connect() as conn:
        return conn.execute(select(USERS.c.user_id).where(USERS.c.user_id == user_id)).first() is not None


def find(*, email=None, after_id=None, limit=50):
    query = select(USERS).order_by(USERS.c.user_id).limit(limit)
    if email is not None:
        query = query.where(func.lower(USERS.c.email) == email.strip().lower())
    if after_id is not None:
        query = query.where(USERS.c.user_id > after_id)
    with db.engine.connect() as conn:
        return _records(conn, conn.execute(query).all())


def update(user_id, *, email=None, name=None):
    """Raises UserNotFound, EmailTaken, ConstraintViolation. Nothing to change is a no-op."""
    values = {k: v for k, v in (("email", email.strip() if email is not None else None), ("name", name))
              if v is not None}
    try:
        with db.engine.begin() as conn:
            _load(conn, user_id)
            if values:
                conn.execute(sql_update(USERS).where(USERS.c.user_id == user_id).values(**values))
            return _records(conn, [_load(conn, user_id)])[0]
    except exc.IntegrityError as e:
        raise _conflict(_violated(e), email) from None


def _load(conn, user_id):
    row = conn.execute(select(USERS).where(USERS.c.user_id == user_id)).first() if 1 <= user_id <= BIGINT_MAX else None
    if row is None:
        raise UserNotFound(user_id)
    return row


def _records(conn, rows):
    """Rows of the core columns, with `attributes` attached. One primary-key query and no
    reflection: PostgreSQL's to_jsonb(row) returns whatever columns the table has now, so a
    column added a moment ago by another process is seen at once and nothing needs
    invalidating. Each value arrives as JSON text and is decoded on its own (_attribute)."""
    if not rows:
        return []
    ids = [r.user_id for r in rows]
    extra = {uid: {} for uid in ids}
    if conn.dialect.name == "postgresql":
        for uid, key, value in conn.execute(_ATTRIBUTES_PG, {"ids": ids, "core": sorted(CORE_COLUMNS)}):
            extra[uid][key] = _attribute(value)
    else:
        for r in conn.execute(_ROWS_SQLITE, {"ids": ids}).mappings():
            extra[r["user_id"]] = {k: v for k, v in r.items() if k not in CORE_COLUMNS}
    return [UserRecord(r.user_id, r.email, r.name, r.created_at, extra[r.user_id]) for r in rows]


MAX_ATTRIBUTE_DEPTH = 64


def _finite(text):
    value = float(text)
    if math.isinf(value):
        raise ValueError("a number beyond the range of a double")
    return value


# Integers past Python's digit limit raise ValueError too.
_ATTRIBUTE_JSON = json.JSONDecoder(parse_float=_finite)


def _attribute(text):
    """A stored value, decoded from its JSON text. Reading a user must never fail because of
    what a column holds (it can be written by other means than a schema update), so a value
    that cannot be answered as JSON safely — nested deeper than MAX_ATTRIBUTE_DEPTH, or a
    number no JSON reader takes — is answered as a placeholder carrying its text."""
    try:
        value = _ATTRIBUTE_JSON.decode(text)
        if _depth(value) <= MAX_ATTRIBUTE_DEPTH:
            return value
        reason = f"nested deeper than {MAX_ATTRIBUTE_DEPTH} levels"
    except RecursionError:
        reason = f"nested deeper than {MAX_ATTRIBUTE_DEPTH} levels"
    except ValueError:
        reason = "a number beyond what JSON readers take"
    return {"unreadable": reason, "json": text}


def _depth(value):
    """How deeply lists and objects nest in `value`, counted without recursion, stopping
    once past the limit."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= MAX_ATTRIBUTE_DEPTH:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))
    return deepest
