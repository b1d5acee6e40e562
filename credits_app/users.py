"""Users. Creating one creates its zero balance in the same transaction.

Every user returned carries `attributes`: the columns an external schema update added to
`users` (see schema_updates), read live so they show up without a restart."""
from sqlalchemy import bindparam, exc, func, select, text

from .config import BIGINT_MAX
from .exceptions import EmailTaken, UserNotFound
from .extensions import db
from .models import Credit, User

# The model's columns are the service's own; any other column of `users` is an attribute.
CORE_COLUMNS = frozenset(User.__table__.columns.keys())
_ROWS_PG = text("SELECT u.user_id, to_jsonb(u) FROM users u WHERE u.user_id = ANY(:ids)")
_ROWS_SQLITE = text("SELECT * FROM users WHERE user_id IN :ids").bindparams(bindparam("ids", expanding=True))


def _with_attributes(users):
    """Attach `attributes` to each user. One primary-key query and no reflection: PostgreSQL's
    to_jsonb(row) returns whatever columns the table has now, already JSON-typed, so a column
    added a moment ago by another process is seen at once and nothing needs invalidating."""
    if not users:
        return users
    ids = [u.user_id for u in users]
    if db.engine.dialect.name == "postgresql":
        rows = {uid: doc for uid, doc in db.session.execute(_ROWS_PG, {"ids": ids})}
    else:
        rows = {r["user_id"]: dict(r) for r in db.session.execute(_ROWS_SQLITE, {"ids": ids}).mappings()}
    for user in users:
        user.attributes = {k: v for k, v in rows.get(user.user_id, {}).items() if k not in CORE_COLUMNS}
    return users


def create(email, name):
    """Raises EmailTaken (case-insensitive)."""
    user = User(email=email.strip(), name=name)
    db.session.add(user)
    try:
        db.session.flush()
        db.session.add(Credit(user_id=user.user_id, credits=0))
        db.session.commit()
    except exc.IntegrityError:
        db.session.rollback()
        raise EmailTaken(email) from None
    return _with_attributes([user])[0]


def _load(user_id):
    user = db.session.get(User, user_id) if 1 <= user_id <= BIGINT_MAX else None
    if user is None:
        raise UserNotFound(user_id)
    return user


def get(user_id):
    """Raises UserNotFound."""
    return _with_attributes([_load(user_id)])[0]


def find(*, email=None, after_id=None, limit=50):
    query = select(User).order_by(User.user_id).limit(limit)
    if email is not None:
        query = query.where(func.lower(User.email) == email.strip().lower())
    if after_id is not None:
        query = query.where(User.user_id > after_id)
    return _with_attributes(db.session.scalars(query).all())


def update(user_id, *, email=None, name=None):
    """Raises UserNotFound, EmailTaken."""
    user = _load(user_id)
    if email is not None:
        user.email = email.strip()
    if name is not None:
        user.name = name
    try:
        db.session.commit()
    except exc.IntegrityError:
        db.session.rollback()
        raise EmailTaken(email) from None
    return _with_attributes([user])[0]
