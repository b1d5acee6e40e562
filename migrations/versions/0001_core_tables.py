"""core tables: users, credits, append-only ledger, idempotency keys

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade():
    op.create_table(
        "users",
        sa.Column("user_id", BIGID, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("user_id", name="pk_users"),
    )
    op.create_index("uq_users_email_lower", "users", [sa.text("lower(email)")], unique=True)

    op.create_table(
        "credits",
        sa.Column("user_id", BIGID, nullable=False),
        sa.Column("credits", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_updated", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("user_id", name="pk_credits"),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], name="fk_credits_user_id_users", ondelete="RESTRICT"),
        sa.CheckConstraint("credits >= 0", name="non_negative"),
    )

    op.create_table(
        "ledger_entries",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("user_id", BIGID, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("balance_after", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.String(500)),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("grant_date", sa.Date),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_entries"),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], name="fk_ledger_entries_user_id_users",
                                ondelete="RESTRICT"),
        sa.CheckConstraint("kind IN ('add', 'deduct', 'reset', 'daily_grant')", name="kind"),
        sa.CheckConstraint("(kind IN ('add', 'daily_grant') AND amount > 0) OR (kind = 'deduct' AND amount < 0)"
                           " OR (kind = 'reset' AND amount <= 0)", name="amount_sign"),
        sa.CheckConstraint("balance_after >= 0", name="balance_after_non_negative"),
        sa.CheckConstraint("(kind = 'daily_grant') = (grant_date IS NOT NULL)",
                           name="grant_date_iff_grant"),
    )
    # Invariant 3: one daily grant per (user, UTC date); NULL grant dates never collide.
    op.create_index("uq_ledger_user_grant_date", "ledger_entries", ["user_id", "grant_date"], unique=True)
    # Invariant 4: one entry per (actor, Idempotency-Key), even after the key's record expires.
    op.create_index("uq_ledger_actor_idempotency_key", "ledger_entries", ["actor", "idempotency_key"], unique=True)
    op.create_index("ix_ledger_user_id_id", "ledger_entries", ["user_id", "id"])

    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(200), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("refused_balance", sa.BigInteger),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("scope", "key", name="pk_idempotency_keys"),
        # names of CHECKs above are completed by the metadata naming convention (ck_<table>_<name>)
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])

    _ledger_append_only()


def _ledger_append_only():
    """The ledger is never updated or deleted: the database refuses it, not just the code."""
    if op.get_context().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION USING MESSAGE = 'ledger_entries is append-only: ' || TG_OP || ' refused';
            END $$""")
        op.execute("CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries "
                   "FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()")
        op.execute("CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries "
                   "FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_append_only()")
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER ledger_entries_no_{verb.lower()} BEFORE {verb} ON ledger_entries "
                       "BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only'); END")


def downgrade():
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER ledger_entries_no_truncate ON ledger_entries")
        op.execute("DROP TRIGGER ledger_entries_append_only ON ledger_entries")
        op.execute("DROP FUNCTION ledger_entries_append_only()")
    op.drop_table("idempotency_keys")
    op.drop_table("ledger_entries")
    op.drop_table("credits")
    op.drop_table("users")
