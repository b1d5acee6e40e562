"""Table definitions mirroring the Alembic migrations (the source of truth): used as Core
tables by users.py and by `flask db migrate` to diff future migrations."""
from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey, Identity, Index, Integer, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from .extensions import db
from .types import BigId, UTCDateTime

LEDGER_KINDS = ("add", "deduct", "reset", "daily_grant", "reversal", "capture")


class User(db.Model):
    __tablename__ = "users"
    user_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at = mapped_column(UTCDateTime, nullable=False, server_default=func.now())

    __table_args__ = (Index("uq_users_email_lower", func.lower(email), unique=True),)


class Credit(db.Model):
    """The seed's balance table, widened to BIGINT. A user without a row has balance 0.
    `held` is the sum of the user's open holds: available = credits - held."""

    __tablename__ = "credits"
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.user_id", ondelete="RESTRICT"), primary_key=True)
    credits: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    last_updated = mapped_column(UTCDateTime, nullable=False, server_default=func.now())
    held: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")

    __table_args__ = (CheckConstraint("credits >= 0", name="non_negative"),
                      CheckConstraint("held >= 0 AND held <= credits", name="held_within_credits"))


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
    hold_id = mapped_column(BigId, ForeignKey("holds.id", ondelete="RESTRICT"))  # a capture's hold

    __table_args__ = (
        CheckConstraint("kind IN ('add', 'deduct', 'reset', 'daily_grant', 'reversal', 'capture')", name="kind"),
        CheckConstraint(
            "(kind IN ('add', 'daily_grant') AND amount > 0) OR (kind = 'deduct' AND amount < 0)"
            " OR (kind = 'reset' AND amount <= 0) OR (kind = 'reversal' AND amount <> 0)"
            " OR (kind = 'capture' AND amount < 0)",
            name="amount_sign",
        ),
        CheckConstraint("(kind = 'reversal') = (reverses IS NOT NULL)", name="reverses_iff_reversal"),
        CheckConstraint("(kind = 'capture') = (hold_id IS NOT NULL)", name="hold_iff_capture"),
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
        # A hold is captured at most once.
        Index("uq_ledger_hold_id", "hold_id", unique=True, postgresql_where=text("hold_id IS NOT NULL"),
              sqlite_where=text("hold_id IS NOT NULL")),
    )


class Hold(db.Model):
    """Credits reserved for a later capture or release (ledger/holds.py). The status moves
    once, from open to captured, released or expired; the balance row's `held` is the sum
    of the user's open holds."""

    __tablename__ = "holds"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.user_id", ondelete="RESTRICT"), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(10), nullable=False)
    captured = mapped_column(BigInteger)  # how much the capture took
    reason = mapped_column(String(500))
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    idempotency_key = mapped_column(String(255))
    created_at = mapped_column(UTCDateTime, nullable=False)
    expires_at = mapped_column(UTCDateTime, nullable=False)
    closed_at = mapped_column(UTCDateTime)
    closed_by = mapped_column(String(200))

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("status IN ('open', 'captured', 'released', 'expired')", name="status"),
        CheckConstraint("(status = 'captured') = (captured IS NOT NULL)", name="captured_iff_status"),
        CheckConstraint("captured > 0 AND captured <= amount", name="captured_within_amount"),
        CheckConstraint("(status = 'open') = (closed_at IS NULL)", name="closed_iff_not_open"),
        CheckConstraint("expires_at > created_at", name="expires_after_created"),
        # Creating a hold writes no ledger row: this keeps a key from creating two.
        Index("uq_holds_actor_idempotency_key", "actor", "idempotency_key", unique=True),
        Index("ix_holds_user_id", "user_id", "id"),
        Index("ix_holds_open_due", "user_id", "expires_at", postgresql_where=text("status = 'open'"),
              sqlite_where=text("status = 'open'")),
        Index("ix_holds_open_expiry", "expires_at", postgresql_where=text("status = 'open'"),
              sqlite_where=text("status = 'open'")),
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
    refused_held = mapped_column(BigInteger)  # and what was held then (NULL: nothing)
    refusal = mapped_column(Text)  # a refusal with other figures (a reversal's), as JSON: code, message, details
    answer = mapped_column(Text)  # a hold operation's answer, as JSON (creating or releasing one writes no entry)
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
