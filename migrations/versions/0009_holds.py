"""holds: credits reserved before an action and captured or released after it

credits.held: the sum of the user's open holds, with CHECK (0 <= held <= credits), so what
is held can always be captured and `credits - held` (available) is never negative.

holds: one row per hold. Its status moves once, from `open` to `captured`, `released` or
`expired`; `captured` is how much a capture took (at most the amount). UNIQUE (actor,
idempotency_key) is the backstop that keeps a key from creating two holds (creating one
writes no ledger row). Partial indexes on the open holds find a user's past their time
(ix_holds_open_due) and everyone's, for the worker's sweep (ix_holds_open_expiry).

ledger_entries: kind 'capture' (a debit) names its hold in `hold_id`; a hold is captured at
most once (a partial UNIQUE index).

idempotency_keys: `refused_held` is what was held when a keyed debit was refused, and
`answer` keeps the answer of a hold operation (creating or releasing one writes no entry to
answer from) for its replay.

On PostgreSQL the new CHECKs are added NOT VALID and validated in their own transactions,
and the indexes on the ledger are built CONCURRENTLY. On SQLite a CHECK changes only by
rebuilding the table: credits and ledger_entries are rebuilt, and the ledger's append-only
triggers created again.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""
import warnings
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
HELD = "held >= 0 AND held <= credits"
KIND_BEFORE = "kind IN ('add', 'deduct', 'reset', 'daily_grant', 'reversal')"
SIGN_BEFORE = ("(kind IN ('add', 'daily_grant') AND amount > 0) OR (kind = 'deduct' AND amount < 0)"
               " OR (kind = 'reset' AND amount <= 0) OR (kind = 'reversal' AND amount <> 0)")
LEDGER_CHECKS = {
    "kind": "kind IN ('add', 'deduct', 'reset', 'daily_grant', 'reversal', 'capture')",
    "amount_sign": SIGN_BEFORE + " OR (kind = 'capture' AND amount < 0)",
    "hold_iff_capture": "(kind = 'capture') = (hold_id IS NOT NULL)",
}
FK = "fk_ledger_entries_hold_id_holds"


def upgrade():
    op.create_table(
        "holds",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("user_id", BIGID, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("captured", sa.BigInteger),
        sa.Column("reason", sa.String(500)),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("closed_at", TS),
        sa.Column("closed_by", sa.String(200)),
        sa.PrimaryKeyConstraint("id", name="pk_holds"),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], name="fk_holds_user_id_users", ondelete="RESTRICT"),
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        sa.CheckConstraint("status IN ('open', 'captured', 'released', 'expired')", name="status"),
        sa.CheckConstraint("(status = 'captured') = (captured IS NOT NULL)", name="captured_iff_status"),
        sa.CheckConstraint("captured > 0 AND captured <= amount", name="captured_within_amount"),
        sa.CheckConstraint("(status = 'open') = (closed_at IS NULL)", name="closed_iff_not_open"),
        sa.CheckConstraint("expires_at > created_at", name="expires_after_created"),
    )
    op.create_index("uq_holds_actor_idempotency_key", "holds", ["actor", "idempotency_key"], unique=True)
    op.create_index("ix_holds_user_id", "holds", ["user_id", "id"])
    op.create_index("ix_holds_open_due", "holds", ["user_id", "expires_at"],
                    postgresql_where=sa.text("status = 'open'"), sqlite_where=sa.text("status = 'open'"))
    op.create_index("ix_holds_open_expiry", "holds", ["expires_at"],
                    postgresql_where=sa.text("status = 'open'"), sqlite_where=sa.text("status = 'open'"))
    op.add_column("idempotency_keys", sa.Column("refused_held", sa.BigInteger))
    op.add_column("idempotency_keys", sa.Column("answer", sa.Text))
    if op.get_context().dialect.name == "postgresql":
        op.add_column("credits", sa.Column("held", sa.BigInteger, nullable=False, server_default="0"))
        op.execute(f"ALTER TABLE credits ADD CONSTRAINT ck_credits_held_within_credits CHECK ({HELD}) NOT VALID")
        op.add_column("ledger_entries", sa.Column("hold_id", sa.BigInteger))
        for name in ("kind", "amount_sign"):
            op.execute(f"ALTER TABLE ledger_entries DROP CONSTRAINT ck_ledger_entries_{name}")
        for name, check in LEDGER_CHECKS.items():
            op.execute(f"ALTER TABLE ledger_entries ADD CONSTRAINT ck_ledger_entries_{name} CHECK ({check}) NOT VALID")
        op.execute(f"ALTER TABLE ledger_entries ADD CONSTRAINT {FK} FOREIGN KEY (hold_id) REFERENCES holds (id) "
                   "ON DELETE RESTRICT NOT VALID")
        with op.get_context().autocommit_block():
            op.execute("ALTER TABLE credits VALIDATE CONSTRAINT ck_credits_held_within_credits")
            for name in LEDGER_CHECKS:
                op.execute(f"ALTER TABLE ledger_entries VALIDATE CONSTRAINT ck_ledger_entries_{name}")
            op.execute(f"ALTER TABLE ledger_entries VALIDATE CONSTRAINT {FK}")
            op.create_index("uq_ledger_hold_id", "ledger_entries", ["hold_id"], unique=True,
                            postgresql_concurrently=True, postgresql_where=sa.text("hold_id IS NOT NULL"),
                            if_not_exists=True)
    else:
        with _rebuilt("credits") as batch:
            batch.add_column(sa.Column("held", sa.BigInteger, nullable=False, server_default="0"))
            batch.create_check_constraint("held_within_credits", HELD)
        with _rebuilt("ledger_entries") as batch:
            batch.add_column(sa.Column("hold_id", BIGID))
            batch.create_foreign_key(FK, "holds", ["hold_id"], ["id"], ondelete="RESTRICT")
            for name in ("kind", "amount_sign"):
                batch.drop_constraint(op.f(f"ck_ledger_entries_{name}"), type_="check")
            for name, check in LEDGER_CHECKS.items():
                batch.create_check_constraint(name, check)
        _sqlite_append_only()
        op.create_index("uq_ledger_hold_id", "ledger_entries", ["hold_id"], unique=True,
                        sqlite_where=sa.text("hold_id IS NOT NULL"))


@contextmanager
def _rebuilt(table):
    """SQLite: `table` rebuilt with its changes. Reflecting it reflects `users` too (a
    foreign key), whose expression index SQLAlchemy cannot reflect and says so; that table
    is not rebuilt, so the index is not touched."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index",
                                sa.exc.SAWarning)
        with op.batch_alter_table(table, recreate="always") as batch:
            yield batch


def _sqlite_append_only():
    """The ledger's append-only triggers of 0001, which the rebuild dropped with the old table."""
    for verb in ("UPDATE", "DELETE"):
        op.execute(f"CREATE TRIGGER IF NOT EXISTS ledger_entries_no_{verb.lower()} BEFORE {verb} ON ledger_entries "
                   "BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only'); END")


def downgrade():
    """Only while no capture exists (the old CHECKs refuse the kind). Open holds are dropped
    with their table: release them first."""
    op.drop_index("uq_ledger_hold_id", "ledger_entries")
    op.drop_column("idempotency_keys", "answer")
    op.drop_column("idempotency_keys", "refused_held")
    if op.get_context().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE ledger_entries DROP CONSTRAINT {FK}")
        for name in LEDGER_CHECKS:
            op.execute(f"ALTER TABLE ledger_entries DROP CONSTRAINT ck_ledger_entries_{name}")
        op.execute(f"ALTER TABLE ledger_entries ADD CONSTRAINT ck_ledger_entries_kind CHECK ({KIND_BEFORE})")
        op.execute(f"ALTER TABLE ledger_entries ADD CONSTRAINT ck_ledger_entries_amount_sign CHECK ({SIGN_BEFORE})")
        op.drop_column("ledger_entries", "hold_id")
        op.execute("ALTER TABLE credits DROP CONSTRAINT ck_credits_held_within_credits")
        op.drop_column("credits", "held")
    else:
        with _rebuilt("ledger_entries") as batch:
            batch.drop_constraint(op.f(FK), type_="foreignkey")
            for name in LEDGER_CHECKS:
                batch.drop_constraint(op.f(f"ck_ledger_entries_{name}"), type_="check")
            batch.create_check_constraint("kind", KIND_BEFORE)
            batch.create_check_constraint("amount_sign", SIGN_BEFORE)
            batch.drop_column("hold_id")
        _sqlite_append_only()
        with _rebuilt("credits") as batch:
            batch.drop_constraint(op.f("ck_credits_held_within_credits"), type_="check")
            batch.drop_column("held")
    op.drop_table("holds")
