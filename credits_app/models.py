"""Table definitions mirroring the Alembic migrations (the source of truth): used as Core
tables by users.py and by `flask db migrate` to diff future migrations."""
from sqlalchemy import BigInteger, Boolean, CheckConstraint, Date, ForeignKey, Identity, Index, Integer, String, Text, func, text, true
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
    low_balance_threshold = mapped_column(BigInteger)  # NULL: the LOW_BALANCE_THRESHOLD setting
    alert_state = mapped_column(String(10))  # ok, low, depleted (ledger/alerts.py); NULL: off or not yet known

    __table_args__ = (CheckConstraint("credits >= 0", name="non_negative"),
                      CheckConstraint("held >= 0 AND held <= credits", name="held_within_credits"),
                      CheckConstraint("alert_state IN ('ok', 'low', 'depleted')", name="alert_state"),
                      CheckConstraint("low_balance_threshold >= 0", name="threshold_non_negative"))


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
    close_reason = mapped_column(String(500))  # a release's reason (a capture's is on its entry)

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


EVENT_TYPES = ("credits.changed", "hold.created", "hold.released", "hold.expired", "balance.low",
               "balance.recovered", "balance.depleted", "grant.run.completed", "schema.applied")
_TYPES_IN = "event_type IN (" + ", ".join(f"'{t}'" for t in EVENT_TYPES) + ")"


class Event(db.Model):
    """An event that is not a ledger entry, written in the transaction of its cause
    (events/). A credits.changed event is its ledger entry."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_type: Mapped[str] = mapped_column(String(40), nullable=False)
    user_id = mapped_column(BigId, ForeignKey("users.user_id", ondelete="RESTRICT"))
    data: Mapped[str] = mapped_column(Text, nullable=False)  # JSON
    created_at = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (CheckConstraint(_TYPES_IN + " AND event_type <> 'credits.changed'", name="event_type"),
                      Index("ix_events_time", "created_at", "id"))


class WebhookEndpoint(db.Model):
    """A receiver of signed events (webhooks/). `previous_secret` still signs, beside
    `secret`, until `previous_secret_until`: a rotation's overlap."""

    __tablename__ = "webhook_endpoints"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2048), nullable=False)
    description = mapped_column(String(500))
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=true())
    secret: Mapped[str] = mapped_column(String(100), nullable=False)
    previous_secret = mapped_column(String(100))
    previous_secret_until = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at = mapped_column(UTCDateTime, nullable=False)
    updated_at = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (CheckConstraint("(previous_secret IS NULL) = (previous_secret_until IS NULL)",
                                      name="previous_secret_until"),)


class WebhookSubscription(db.Model):
    __tablename__ = "webhook_subscriptions"
    endpoint_id: Mapped[int] = mapped_column(BigId, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
                                             primary_key=True)
    event_type: Mapped[str] = mapped_column(String(40), primary_key=True)

    __table_args__ = (CheckConstraint(_TYPES_IN, name="event_type"),
                      Index("ix_webhook_subscriptions_type", "event_type", "endpoint_id"))


class WebhookDelivery(db.Model):
    """One event for one endpoint, and where its delivery stands. Written with the event
    when the endpoint is subscribed; `next_attempt_at` is also the lease of a claimed one."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[int] = mapped_column(BigId, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
                                             nullable=False)
    entry_id = mapped_column(BigId, ForeignKey("ledger_entries.id", ondelete="RESTRICT"))  # credits.changed
    event_id = mapped_column(BigId, ForeignKey("events.id", ondelete="CASCADE"))  # any other type
    status: Mapped[str] = mapped_column(String(10), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at = mapped_column(UTCDateTime, nullable=False)
    last_attempt_at = mapped_column(UTCDateTime)
    last_status_code = mapped_column(Integer)
    last_error = mapped_column(String(500))
    created_at = mapped_column(UTCDateTime, nullable=False)
    delivered_at = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("(entry_id IS NULL) <> (event_id IS NULL)", name="one_source"),
        CheckConstraint("status IN ('pending', 'delivered', 'dead')", name="status"),
        CheckConstraint("(status = 'delivered') = (delivered_at IS NOT NULL)", name="delivered_iff_at"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        Index("uq_webhook_deliveries_entry", "entry_id", "endpoint_id", unique=True),
        Index("uq_webhook_deliveries_event", "event_id", "endpoint_id", unique=True),
        Index("ix_webhook_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'pending'"),
              sqlite_where=text("status = 'pending'")),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_created_at", "created_at"),
    )


class WebhookAttempt(db.Model):
    """One try of a delivery: when, how long, and what the receiver answered."""

    __tablename__ = "webhook_attempts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(BigId, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
                                             nullable=False)
    attempted_at = mapped_column(UTCDateTime, nullable=False)
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    status_code = mapped_column(Integer)
    error = mapped_column(String(500))

    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)
