"""revoked_tokens: a commit-ordered `seq` for incremental loads, and the token's expiry

Each process keeps the revoked ids in memory and loads only the rows with a `seq` above the
highest it has seen. That is exact only if no row can become visible after a row with a
higher `seq`: so `seq` is assigned by the database, on every insert whoever makes it, while
the inserting transaction holds a lock kept until it commits (PostgreSQL: an advisory lock
taken by a statement trigger, then an identity column; SQLite: its single write lock, then
a one-row counter that, unlike max(seq), never goes back when rows are purged). The next
revocation can take a `seq` only after the previous one has committed or rolled back.

`expires_at` is the revoked token's `exp` when the revoker gave it: such a row may be purged
once the token has expired (see tokens.purge_revocations).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("revoked_tokens", sa.Column("expires_at", sa.DateTime(timezone=True)))
    if op.get_context().dialect.name == "postgresql":
        # The statement trigger takes the lock before any row's identity value is drawn; an
        # explicit seq is refused (GENERATED ALWAYS).
        op.execute("ALTER TABLE revoked_tokens ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY")
        op.execute("""
            CREATE FUNCTION revoked_tokens_lock_seq() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_advisory_xact_lock(hashtextextended('revoked_tokens.seq', 0));
                RETURN NULL;
            END $$""")
        op.execute("CREATE TRIGGER revoked_tokens_lock_seq BEFORE INSERT ON revoked_tokens "
                   "FOR EACH STATEMENT EXECUTE FUNCTION revoked_tokens_lock_seq()")
    else:
        op.add_column("revoked_tokens", sa.Column("seq", sa.Integer))
        op.execute("UPDATE revoked_tokens SET seq = rowid")
        op.execute("CREATE TABLE revoked_tokens_seq (value INTEGER NOT NULL)")
        op.execute("INSERT INTO revoked_tokens_seq (value) SELECT COALESCE(MAX(seq), 0) FROM revoked_tokens")
        op.execute("""
            CREATE TRIGGER revoked_tokens_assign_seq AFTER INSERT ON revoked_tokens BEGIN
                UPDATE revoked_tokens_seq SET value = value + 1;
                UPDATE revoked_tokens SET seq = (SELECT value FROM revoked_tokens_seq) WHERE rowid = NEW.rowid;
            END""")
    op.create_index("uq_revoked_tokens_seq", "revoked_tokens", ["seq"], unique=True)


def downgrade():
    op.drop_index("uq_revoked_tokens_seq", table_name="revoked_tokens")
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER revoked_tokens_lock_seq ON revoked_tokens")
        op.execute("DROP FUNCTION revoked_tokens_lock_seq()")
    else:
        op.execute("DROP TRIGGER revoked_tokens_assign_seq")
        op.execute("DROP TABLE revoked_tokens_seq")
    op.drop_column("revoked_tokens", "seq")
    op.drop_column("revoked_tokens", "expires_at")
