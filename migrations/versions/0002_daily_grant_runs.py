"""daily-grant runs table (filled by the daily-grant work)

One row per UTC date in daily_grant_runs; the date's planned user-id ranges in
daily_grant_chunks. A chunk row is marked finished in the same transaction that credits
its users, so the counters are exact even when a chunk is retried or run twice.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade():
    op.create_table(
        "daily_grant_runs",
        sa.Column("grant_date", sa.Date, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("chunk_size", sa.Integer, nullable=False),
        sa.Column("chunks_total", sa.Integer, nullable=False),
        sa.Column("chunks_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("users_credited", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.PrimaryKeyConstraint("grant_date", name="pk_daily_grant_runs"),
        sa.CheckConstraint("status IN ('running', 'done')", name="status"),
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        sa.CheckConstraint("chunks_done BETWEEN 0 AND chunks_total", name="chunks"),
        sa.CheckConstraint("(status = 'done') = (finished_at IS NOT NULL)", name="finished"),
    )
    op.create_table(
        "daily_grant_chunks",
        sa.Column("grant_date", sa.Date, nullable=False),
        sa.Column("lo", sa.BigInteger, nullable=False),  # user_id >= lo
        sa.Column("hi", sa.BigInteger, nullable=False),  # user_id < hi
        sa.Column("users_credited", sa.BigInteger),
        sa.Column("finished_at", TS),
        sa.PrimaryKeyConstraint("grant_date", "lo", name="pk_daily_grant_chunks"),
        sa.ForeignKeyConstraint(["grant_date"], ["daily_grant_runs.grant_date"],
                                name="fk_daily_grant_chunks_grant_date_daily_grant_runs", ondelete="CASCADE"),
        sa.CheckConstraint("lo < hi", name="range"),
    )


def downgrade():
    op.drop_table("daily_grant_chunks")
    op.drop_table("daily_grant_runs")
