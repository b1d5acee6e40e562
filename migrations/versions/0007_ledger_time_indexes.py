"""ledger_entries: indexes for reads by time (as-of balances, history, exports)

ix_ledger_user_time (user_id, created_at, id) serves everything read per user: the balance as
of an instant (the last entry at or before it), the history's points, a user's entries newest
first and a user's export. It replaces ix_ledger_user_id_id (user_id, id): under the time rule
(ledger/rules.py) a user's entries in time order are in id order, so one index serves both, and
a change still maintains the same number of indexes. ix_ledger_time (created_at, id) streams an
export of every user's entries between two instants in order, without sorting them.

On PostgreSQL the indexes are built CONCURRENTLY, outside the migration's transaction, so a
large ledger keeps taking changes while they build. A build that failed leaves an INVALID
index behind: drop it and run the upgrade again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NEW = {"ix_ledger_user_time": ["user_id", "created_at", "id"], "ix_ledger_time": ["created_at", "id"]}


def upgrade():
    if op.get_context().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            for name, columns in NEW.items():
                op.create_index(name, "ledger_entries", columns, postgresql_concurrently=True, if_not_exists=True)
            op.drop_index("ix_ledger_user_id_id", "ledger_entries", postgresql_concurrently=True, if_exists=True)
    else:
        for name, columns in NEW.items():
            op.create_index(name, "ledger_entries", columns)
        op.drop_index("ix_ledger_user_id_id", "ledger_entries")


def downgrade():
    op.create_index("ix_ledger_user_id_id", "ledger_entries", ["user_id", "id"])
    for name in NEW:
        op.drop_index(name, "ledger_entries")
