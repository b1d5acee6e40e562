"""Users. Creating one creates its zero balance in the same transaction."""
from sqlalchemy import exc, func, select

from .config import BIGINT_MAX
from .exceptions import EmailTaken, UserNotFound
from .extensions import db
from .models import Credit, User


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
    return user


def get(user_id):
    """Raises UserNotFound."""
    user = db.session.get(User, user_id) if 1 <= user_id <= BIGINT_MAX else None
    if user is None:
        raise UserNotFound(user_id)
    return user


def find(*, email=None, after_id=None, limit=50):
    query = select(User).order_by(User.user_id).limit(limit)
    if email is not None:
        query = query.where(func.lower(User.email) == email.strip().lower())
    if after_id is not None:
        query = query.where(User.user_id > after_id)
    return db.session.scalars(query).all()


def update(user_id, *, email=None, name=None):
    """Raises UserNotFound, EmailTaken."""
    user = get(user_id)
    if email is not None:
        user.email = email.strip()
    if name is not None:
        user.name = name
    try:
        db.session.commit()
    except exc.IntegrityError:
        db.session.rollback()
        raise EmailTaken(email) from None
    return user
