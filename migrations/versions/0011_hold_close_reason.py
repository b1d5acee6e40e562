"""holds.close_reason: why a hold was released, as the caller gave it

A release writes no ledger entry, so its reason is kept on the hold. NULL for a hold still
open, captured (a capture's reason is on its ledger entry), expired, closed by a reset (the
reset's reason is on its entry), or released without one.

A nullable column with no default: both PostgreSQL and SQLite add it without rewriting the
table, and SQLite (3.35+) drops it the same way, as it has no constraint or index.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("holds", sa.Column("close_reason", sa.String(500)))


def downgrade():
    op.drop_column("holds", "close_reason")
