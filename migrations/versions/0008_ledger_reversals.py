"""ledger_entries: reversals, compensating entries that name the entry they reverse

idempotency_keys.refusal: a keyed refusal other than a balance refusal, for its replay.

kind 'reversal' with a non-zero amount and `reverses`, the id of the entry it reverses (a
foreign key; set for reversals only). The original entry is never changed. How much of an
entry may still be reversed is decided by the reversal's transaction under the user's row
lock (ledger/reversals.py); ix_ledger_reverses finds an entry's earlier reversals.

On PostgreSQL the new constraints are added NOT VALID and validated in their own
transactions, and the index is built CONCURRENTLY, so a large ledger keeps taking changes.
On SQLite a CHECK changes only by rebuilding the table, which drops its triggers: the
append-only triggers are created again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""
import warnings
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
KIND_BEFORE = "kind IN ('add', 'deduct', 'reset', 'daily_grant')"
SIGN_BEFORE = ("(kind IN ('add', 'daily_grant') AND amount > 0) OR (kind = 'deduct' AND amount < 0)"
               " OR (kind = 'reset' AND amount <= 0)")
CHECKS = {
    "kind": "kind IN ('add', 'deduct', 'reset', 'daily_grant', 'reversal')",
    "amount_sign": SIGN_BEFORE + " OR (kind = 'reversal' AND amount <> 0)",
    "reverses_iff_reversal": "(kind = 'reversal') = (reverses IS NOT NULL)",
}
FK = "fk_ledger_entries_reverses_ledger_entries"


def upgrade():
    # A refusal that is not a balance refusal (a reversal's) is kept whole for its replay:
    # {"code", "message", "details"} as JSON.
    op.add_column("idempotency_keys", sa.Column("refusal", sa.Text))
    if op.get_context().dialect.name == "postgresql":
        op.add_column("ledger_entries", sa.Column("reverses", sa.BigInteger))
        for name in ("kind", "amount_sign"):
            op.execute(f"ALTER TABLE ledger_entries DROP CONSTRAINT ck_ledger_entries_{name}")
        for name, check in CHECKS.items():
            op.execute(f"ALTER TABLE ledger_entries ADD CONSTRAINT ck_ledger_entries_{name} CHECK ({check}) NOT VALID")
        op.execute(f"ALTER TABLE ledger_entries ADD CONSTRAINT {FK} FOREIGN KEY (reverses) "
                   "REFERENCES ledger_entries (id) ON DELETE RESTRICT NOT VALID")
        with op.get_context().autocommit_block():
            for name in CHECKS:
                op.execute(f"ALTER TABLE ledger_entries VALIDATE CONSTRAINT ck_ledger_entries_{name}")
            op.execute(f"ALTER TABLE ledger_entries VALIDATE CONSTRAINT {FK}")
            op.create_index("ix_ledger_reverses", "ledger_entries", ["reverses"], postgresql_concurrently=True,
                            postgresql_where=sa.text("reverses IS NOT NULL"), if_not_exists=True)
    else:
        with _rebuilt() as batch:
            batch.add_column(sa.Column("reverses", BIGID))
            batch.create_foreign_key(FK, "ledger_entries", ["reverses"], ["id"], ondelete="RESTRICT")
            for name in ("kind", "amount_sign"):
                batch.drop_constraint(op.f(f"ck_ledger_entries_{name}"), type_="check")
            for name, check in CHECKS.items():
                batch.create_check_constraint(name, check)
        _sqlite_append_only()
        op.create_index("ix_ledger_reverses", "ledger_entries", ["reverses"],
                        sqlite_where=sa.text("reverses IS NOT NULL"))


@contextmanager
def _rebuilt():
    """SQLite: the table rebuilt with its changes. Reflecting it reflects `users` too (the
    foreign key), whose expression index SQLAlchemy cannot reflect and says so; that table
    is not rebuilt, so the index is not touched."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index",
                                sa.exc.SAWarning)
        with op.batch_alter_table("ledger_entries", recreate="always") as batch:
            yield batch


def _sqlite_append_only():
    """The append-only triggers of 0001, which the rebuild dropped with the old table."""
    for verb in ("UPDATE", "DELETE"):
        op.execute(f"CREATE TRIGGER IF NOT EXISTS ledger_entries_no_{verb.lower()} BEFORE {verb} ON ledger_entries "
                   "BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only'); END")


def downgrade():
    """Only while no reversal exists: the old CHECKs refuse the kind, so a ledger that has
    one fails here rather than lose it."""
    op.drop_index("ix_ledger_reverses", "ledger_entries")
    op.drop_column("idempotency_keys", "refusal")
    if op.get_context().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE ledger_entries DROP CONSTRAINT {FK}")
        for name in CHECKS:
            op.execute(f"ALTER TABLE ledger_entries DROP CONSTRAINT ck_ledger_entries_{name}")
        op.execute(f"ALTER TABLE ledger_entries ADD CONSTRAINT ck_ledger_entries_kind CHECK ({KIND_BEFORE})")
        op.execute(f"ALTER TABLE ledger_entries ADD CONSTRAINT ck_ledger_entries_amount_sign CHECK ({SIGN_BEFORE})")
        op.drop_column("ledger_entries", "reverses")
    else:
        with _rebuilt() as batch:
            batch.drop_constraint(op.f(FK), type_="foreignkey")
            for name in CHECKS:
                batch.drop_constraint(op.f(f"ck_ledger_entries_{name}"), type_="check")
            batch.create_check_constraint("kind", KIND_BEFORE)
            batch.create_check_constraint("amount_sign", SIGN_BEFORE)
            batch.drop_column("reverses")
        _sqlite_append_only()
