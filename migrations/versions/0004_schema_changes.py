"""external schema changes log (filled by the schema-updates work)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    # One row per attempt that reached the database: `applied`, or `failed` with the
    # database's error. A name is taken once it has been applied; failed attempts may retry it.
    op.create_table(
        "schema_changes",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("sql", sa.Text, nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("error", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_schema_changes"),
        sa.CheckConstraint("outcome IN ('applied', 'failed')", name="outcome"),
        sa.CheckConstraint("(outcome = 'failed') = (error IS NOT NULL)", name="error_iff_failed"),
    )
    op.create_index("uq_schema_changes_applied_name", "schema_changes", ["name"], unique=True,
                    postgresql_where=sa.text("outcome = 'applied'"), sqlite_where=sa.text("outcome = 'applied'"))


def downgrade():
    op.drop_index("uq_schema_changes_applied_name", table_name="schema_changes")
    op.drop_table("schema_changes")
