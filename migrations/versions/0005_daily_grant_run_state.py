"""daily-grant runs: the id high-water mark a run covers

max_user_id: the largest user id when the run was planned; the run covers the users with
user_id <= max_user_id. NULL for a run planned with no users, and for runs planned before
this revision (their chunk ranges say what they covered).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("daily_grant_runs", sa.Column("max_user_id", sa.BigInteger))


def downgrade():
    with op.batch_alter_table("daily_grant_runs") as batch:
        batch.drop_column("max_user_id")
