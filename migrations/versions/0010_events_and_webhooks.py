"""events and webhooks: an outbox written with its cause, signed deliveries, low-balance alerts

credits.low_balance_threshold: the user's own threshold (NULL: the LOW_BALANCE_THRESHOLD
setting). credits.alert_state: where the available balance stood against it when last
changed (ok, low, depleted; NULL: alerts off or not yet known), so an alert fires once when
the state moves, not on every change near the threshold.

events: one row per event that is not a ledger entry (hold.*, balance.*, grant.run.completed,
schema.applied), written in the transaction of its cause. A credits.changed event IS its
ledger entry: the ledger already is an append-only, transactional log with stable ids.

webhook_endpoints and webhook_subscriptions (which event types an endpoint takes);
webhook_deliveries: one row per (endpoint, event), written with the event when the endpoint
is subscribed, holding the delivery state (status, attempts, next attempt), so a Redis flush
loses nothing; webhook_attempts: each try, with its response code and time.

On PostgreSQL the new CHECKs on credits are added NOT VALID and validated in their own
transaction (validation reads the table without blocking writes); SQLite takes them with
the columns.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""
import warnings

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
EVENT_TYPES = ("credits.changed", "hold.created", "hold.released", "hold.expired", "balance.low",
               "balance.recovered", "balance.depleted", "grant.run.completed", "schema.applied")
TYPES_IN = "event_type IN (" + ", ".join(f"'{t}'" for t in EVENT_TYPES) + ")"
CREDITS_CHECKS = {
    "alert_state": "alert_state IN ('ok', 'low', 'depleted')",
    "threshold_non_negative": "low_balance_threshold >= 0",
}


def upgrade():
    dialect = op.get_context().dialect.name
    columns = {"low_balance_threshold": ("BIGINT", "threshold_non_negative"), "alert_state": ("VARCHAR(10)", "alert_state")}
    for column, (sql_type, check) in columns.items():
        # SQLite takes a CHECK with the column (and tests the rows there are); PostgreSQL adds it below.
        inline = f" CONSTRAINT ck_credits_{check} CHECK ({CREDITS_CHECKS[check]})" if dialect == "sqlite" else ""
        op.execute(f"ALTER TABLE credits ADD COLUMN {column} {sql_type}{inline}")
    if dialect == "postgresql":
        for name, check in CREDITS_CHECKS.items():
            op.execute(f"ALTER TABLE credits ADD CONSTRAINT ck_credits_{name} CHECK ({check}) NOT VALID")
        with op.get_context().autocommit_block():
            for name in CREDITS_CHECKS:
                op.execute(f"ALTER TABLE credits VALIDATE CONSTRAINT ck_credits_{name}")

    op.create_table(
        "events",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("event_type", sa.String(40), nullable=False),
        sa.Column("user_id", BIGID),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], name="fk_events_user_id_users", ondelete="RESTRICT"),
        sa.CheckConstraint(TYPES_IN + " AND event_type <> 'credits.changed'", name="event_type"),
    )
    op.create_index("ix_events_time", "events", ["created_at", "id"])

    op.create_table(
        "webhook_endpoints",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("description", sa.String(500)),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("previous_secret", sa.String(100)),
        sa.Column("previous_secret_until", TS),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_endpoints"),
        sa.CheckConstraint("(previous_secret IS NULL) = (previous_secret_until IS NULL)",
                           name="previous_secret_until"),
    )
    op.create_table(
        "webhook_subscriptions",
        sa.Column("endpoint_id", BIGID, nullable=False),
        sa.Column("event_type", sa.String(40), nullable=False),
        sa.PrimaryKeyConstraint("endpoint_id", "event_type", name="pk_webhook_subscriptions"),
        sa.ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoints.id"],
                                name="fk_webhook_subscriptions_endpoint_id_webhook_endpoints", ondelete="CASCADE"),
        sa.CheckConstraint(TYPES_IN, name="event_type"),
    )
    op.create_index("ix_webhook_subscriptions_type", "webhook_subscriptions", ["event_type", "endpoint_id"])

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("endpoint_id", BIGID, nullable=False),
        sa.Column("entry_id", BIGID),
        sa.Column("event_id", BIGID),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("last_attempt_at", TS),
        sa.Column("last_status_code", sa.Integer),
        sa.Column("last_error", sa.String(500)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("delivered_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
        sa.ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoints.id"],
                                name="fk_webhook_deliveries_endpoint_id_webhook_endpoints", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["entry_id"], ["ledger_entries.id"],
                                name="fk_webhook_deliveries_entry_id_ledger_entries", ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"],
                                name="fk_webhook_deliveries_event_id_events", ondelete="CASCADE"),
        sa.CheckConstraint("(entry_id IS NULL) <> (event_id IS NULL)", name="one_source"),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'dead')", name="status"),
        sa.CheckConstraint("(status = 'delivered') = (delivered_at IS NOT NULL)", name="delivered_iff_at"),
        sa.CheckConstraint("attempts >= 0", name="attempts_non_negative"),
    )
    # One delivery per (endpoint, event): a replay sends the same delivery again. Event first,
    # so the same index serves the cascade from `events`. Every index here is written (and
    # locked) by each change while an endpoint subscribes: only those a query needs.
    op.create_index("uq_webhook_deliveries_entry", "webhook_deliveries", ["entry_id", "endpoint_id"], unique=True)
    op.create_index("uq_webhook_deliveries_event", "webhook_deliveries", ["event_id", "endpoint_id"], unique=True)
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["next_attempt_at"],
                    postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))
    # An endpoint's deliveries, newest first (and the cascade when it is deleted); pruning by age.
    op.create_index("ix_webhook_deliveries_endpoint", "webhook_deliveries", ["endpoint_id", "id"])
    op.create_index("ix_webhook_deliveries_created_at", "webhook_deliveries", ["created_at"])

    op.create_table(
        "webhook_attempts",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("delivery_id", BIGID, nullable=False),
        sa.Column("attempted_at", TS, nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.String(500)),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_attempts"),
        sa.ForeignKeyConstraint(["delivery_id"], ["webhook_deliveries.id"],
                                name="fk_webhook_attempts_delivery_id_webhook_deliveries", ondelete="CASCADE"),
    )
    op.create_index("ix_webhook_attempts_delivery", "webhook_attempts", ["delivery_id", "id"])


def downgrade():
    for table in ("webhook_attempts", "webhook_deliveries", "webhook_subscriptions", "webhook_endpoints", "events"):
        op.drop_table(table)
    if op.get_context().dialect.name == "postgresql":
        for name in CREDITS_CHECKS:
            op.execute(f"ALTER TABLE credits DROP CONSTRAINT ck_credits_{name}")
        op.drop_column("credits", "alert_state")
        op.drop_column("credits", "low_balance_threshold")
        return
    # SQLite drops a column with a CHECK only by rebuilding the table. Reflecting it reflects
    # `users` too (a foreign key), whose expression index SQLAlchemy cannot reflect and says
    # so; that table is not rebuilt, so the index is not touched.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index",
                                sa.exc.SAWarning)
        with op.batch_alter_table("credits", recreate="always") as batch:
            for name in CREDITS_CHECKS:
                batch.drop_constraint(op.f(f"ck_credits_{name}"), type_="check")
            batch.drop_column("alert_state")
            batch.drop_column("low_balance_threshold")
