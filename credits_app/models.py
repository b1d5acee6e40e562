"""Table definitions mirroring the Alembic migrations (the source of truth): used as Core
tables by users.py and by `flask db migrate` to diff future migrations."""
from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey, Identity, Index, Integer, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from .extensions import db
from .types import BigId, UTCDateTime

LEDGER_KINDS = ("add", "deduct", "reset", "daily_grant", "reversal")


class User(db.Model):
    __tablename__ = "users"
    user_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at = mapped_column(UTCDateTime, nullable=False, server_default=func.now())

    __table_args__ = (Index("uq_users_email_lower", func.lower(email), unique=True),)


class Credit(db.Model):
    """The seed's balance table, widened to BIGINT. A user without a row has balance 0."""

    __tablename__ = "credits"
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.user_id", ondelete="RESTRICT"), primary_key=True)
    credits: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    last_updated = mapped_column(UTCDateTime, nullable=False, server_default=func.now())

    __table_args__ = (CheckConstraint("credits >= 0", name="non_negative"),)


class LedgerEntry(db.Model):
    """Append-only: one row per balance change. Database triggers refuse UPDATE/DELETE."""

    __tablename__ = "ledger_entries"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.user_id", ondelete="RESTRICT"), nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    balance_after: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reason = mapped_column(String(500))
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    idempotency_key = mapped_column(String(255))
    grant_date = mapped_column(Date)
    created_at = mapped_column(UTCDateTime, nullable=False, server_default=func.now())
    reverses = mapped_column(BigId, ForeignKey("ledger_entries.id", ondelete="RESTRICT"))  # a reversal's original

    __table_args__ = (
        CheckConstraint("kind IN ('add', 'deduct', 'reset', 'daily_grant', 'reversal')", name="kind"),
        CheckConstraint(
            "(kind IN ('add', 'daily_grant') AND amount > 0) OR (kind = 'deduct' AND amount < 0)"
            " OR (kind = 'reset' AND amount <= 0) OR (kind = 'reversal' AND amount <> 0)",
            name="amount_sign",
        ),
        CheckConstraint("(kind = 'reversal') = (reverses IS NOT NULL)", name="reverses_iff_reversal"),
        CheckConstraint("balance_after >= 0", name="balance_after_non_negative"),
        CheckConstraint("(kind = 'daily_grant') = (grant_date IS NOT NULL)", name="grant_date_iff_grant"),
        # One daily grant per (user, UTC date). NULL grant dates never collide.
        Index("uq_ledger_user_grant_date", "user_id", "grant_date", unique=True),
        # Belt and braces: an idempotency key yields at most one entry, ever.
        Index("uq_ledger_actor_idempotency_key", "actor", "idempotency_key", unique=True),
        # Reads by time: per user (as-of, history, entries, export), and all users (export).
        Index("ix_ledger_user_time", "user_id", "created_at", "id"),
        Index("ix_ledger_time", "created_at", "id"),
        Index("ix_ledger_reverses", "reverses", postgresql_where=text("reverses IS NOT NULL"),
              sqlite_where=text("reverses IS NOT NULL")),
    )


class IdempotencyKey(db.Model):
    """A claimed Idempotency-Key, scoped to the caller (the actor). A successful request is
    answered again from its ledger entry; a refused one (409) from the balance kept here."""

    __tablename__ = "idempotency_keys"
    scope: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    status_code: Mapped[int] = mapped_column(Integer, nullable=False)
    refused_balance = mapped_column(BigInteger)  # the balance a refused (409) request saw
    refusal = mapped_column(Text)  # a refusal with other figures (a reversal's), as JSON: code, message, details
    created_at = mapped_column(UTCDateTime, nullable=False, server_default=func.now())

    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)


class RevokedToken(db.Model):
    """A revoked JWT, by its `jti`. Kept in the database so a Redis flush cannot un-revoke.
    `seq` is assigned by the database in commit order (see migration 0005); `expires_at`
    is the token's `exp` when the revoker gave it."""

    __tablename__ = "revoked_tokens"
    jti: Mapped[str] = mapped_column(String(128), primary_key=True)
    revoked_at = mapped_column(UTCDateTime, nullable=False, server_default=func.now())
    revoked_by: Mapped[str] = mapped_column(String(200), nullable=False)
    reason = mapped_column(String(500))
    expires_at = mapped_column(UTCDateTime)
    seq = mapped_column(BigId, Identity(always=True), nullable=False)

    __table_args__ = (Index("uq_revoked_tokens_seq", "seq", unique=True),)
