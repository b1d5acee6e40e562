"""daily-grant runs: the id high-water mark a run covers, failed runs, scheduled runs

max_user_id: the largest user id when the run was planned; the run covers the users with
user_id <= max_user_id. NULL for a run planned with no users, and for runs planned before
this revision (their chunk ranges say what they covered).

status 'failed': a chunk of the run failed its last retry; the run is not finished and the
next catch-up resumes it. last_error: the latest such failure, kept once the run is done.

scheduled: the schedule (the scheduler's registration, the midnight tick, catch-up) asked
for this date; catch-up counts from the earliest such date, so a date granted by hand
before the scheduler first ran does not pull older dates in. Runs recorded before this
revision count as scheduled: catch-up then reaches back as far as it did before.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

CHUNK_COLUMNS = "grant_date, lo, hi, users_credited, finished_at"


def _rebuild_runs(change):
    """Apply `change(batch)` to daily_grant_runs. SQLite cannot alter a CHECK, so batch mode
    copies the table, and dropping the old copy would cascade to every chunk row (foreign
    keys are on): the chunks are set aside and put back in the same transaction."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute(f"CREATE TEMP TABLE chunks_kept AS SELECT {CHUNK_COLUMNS} FROM daily_grant_chunks")
    with op.batch_alter_table("daily_grant_runs", recreate="auto") as batch:
        change(batch)
    if sqlite:
        op.execute("DELETE FROM daily_grant_chunks")
        op.execute(f"INSERT INTO daily_grant_chunks ({CHUNK_COLUMNS}) SELECT {CHUNK_COLUMNS} FROM chunks_kept")
        op.execute("DROP TABLE chunks_kept")


def upgrade():
    def change(batch):
        batch.add_column(sa.Column("max_user_id", sa.BigInteger))
        batch.add_column(sa.Column("last_error", sa.String(500)))
        batch.add_column(sa.Column("scheduled", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.drop_constraint(op.f("ck_daily_grant_runs_status"), type_="check")
        batch.create_check_constraint("status", "status IN ('running', 'done', 'failed')")
    _rebuild_runs(change)
    op.execute(sa.text("UPDATE daily_grant_runs SET scheduled = :yes").bindparams(yes=True))


def downgrade():
    def change(batch):
        batch.drop_constraint(op.f("ck_daily_grant_runs_status"), type_="check")
        batch.create_check_constraint("status", "status IN ('running', 'done')")
        batch.drop_column("scheduled")
        batch.drop_column("last_error")
        batch.drop_column("max_user_id")
    op.execute("UPDATE daily_grant_runs SET status = 'running' WHERE status = 'failed'")
    _rebuild_runs(change)
