-- schema.sql: GENERATED from migrations/ by `make schema`. Do not edit by hand.
-- Apply to an empty PostgreSQL database with: psql "$DATABASE_URL" -f schema.sql
-- It records the Alembic revision, so `flask db upgrade` continues from here.

BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL, 
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 0001

CREATE TABLE users (
    user_id BIGSERIAL NOT NULL, 
    email VARCHAR(320) NOT NULL, 
    name VARCHAR(200) NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_users PRIMARY KEY (user_id)
);

CREATE UNIQUE INDEX uq_users_email_lower ON users (lower(email));

CREATE TABLE credits (
    user_id BIGINT NOT NULL, 
    credits BIGINT DEFAULT '0' NOT NULL, 
    last_updated TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_credits PRIMARY KEY (user_id), 
    CONSTRAINT fk_credits_user_id_users FOREIGN KEY(user_id) REFERENCES users (user_id) ON DELETE RESTRICT, 
    CONSTRAINT ck_credits_non_negative CHECK (credits >= 0)
);

CREATE TABLE ledger_entries (
    id BIGSERIAL NOT NULL, 
    user_id BIGINT NOT NULL, 
    kind VARCHAR(20) NOT NULL, 
    amount BIGINT NOT NULL, 
    balance_after BIGINT NOT NULL, 
    reason VARCHAR(500), 
    actor VARCHAR(200) NOT NULL, 
    idempotency_key VARCHAR(255), 
    grant_date DATE, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_ledger_entries PRIMARY KEY (id), 
    CONSTRAINT fk_ledger_entries_user_id_users FOREIGN KEY(user_id) REFERENCES users (user_id) ON DELETE RESTRICT, 
    CONSTRAINT ck_ledger_entries_kind CHECK (kind IN ('add', 'deduct', 'reset', 'daily_grant')), 
    CONSTRAINT ck_ledger_entries_amount_sign CHECK ((kind IN ('add', 'daily_grant') AND amount > 0) OR (kind = 'deduct' AND amount < 0) OR (kind = 'reset' AND amount <= 0)), 
    CONSTRAINT ck_ledger_entries_balance_after_non_negative CHECK (balance_after >= 0), 
    CONSTRAINT ck_ledger_entries_grant_date_iff_grant CHECK ((kind = 'daily_grant') = (grant_date IS NOT NULL))
);

CREATE UNIQUE INDEX uq_ledger_user_grant_date ON ledger_entries (user_id, grant_date);

CREATE UNIQUE INDEX uq_ledger_actor_idempotency_key ON ledger_entries (actor, idempotency_key);

CREATE INDEX ix_ledger_user_id_id ON ledger_entries (user_id, id);

CREATE TABLE idempotency_keys (
    scope VARCHAR(200) NOT NULL, 
    key VARCHAR(255) NOT NULL, 
    request_hash VARCHAR(64) NOT NULL, 
    status_code INTEGER NOT NULL, 
    refused_balance BIGINT, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_idempotency_keys PRIMARY KEY (scope, key)
);

CREATE INDEX ix_idempotency_keys_created_at ON idempotency_keys (created_at);

CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION USING MESSAGE = 'ledger_entries is append-only: ' || TG_OP || ' refused';
            END $$;

CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();

CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_append_only();

INSERT INTO alembic_version (version_num) VALUES ('0001') RETURNING alembic_version.version_num;

-- Running upgrade 0001 -> 0002

CREATE TABLE daily_grant_runs (
    grant_date DATE NOT NULL, 
    status VARCHAR(10) NOT NULL, 
    amount BIGINT NOT NULL, 
    chunk_size INTEGER NOT NULL, 
    chunks_total INTEGER NOT NULL, 
    chunks_done INTEGER DEFAULT '0' NOT NULL, 
    users_credited BIGINT DEFAULT '0' NOT NULL, 
    started_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    finished_at TIMESTAMP WITH TIME ZONE, 
    CONSTRAINT pk_daily_grant_runs PRIMARY KEY (grant_date), 
    CONSTRAINT ck_daily_grant_runs_status CHECK (status IN ('running', 'done')), 
    CONSTRAINT ck_daily_grant_runs_amount_positive CHECK (amount > 0), 
    CONSTRAINT ck_daily_grant_runs_chunks CHECK (chunks_done BETWEEN 0 AND chunks_total), 
    CONSTRAINT ck_daily_grant_runs_finished CHECK ((status = 'done') = (finished_at IS NOT NULL))
);

CREATE TABLE daily_grant_chunks (
    grant_date DATE NOT NULL, 
    lo BIGINT NOT NULL, 
    hi BIGINT NOT NULL, 
    users_credited BIGINT, 
    finished_at TIMESTAMP WITH TIME ZONE, 
    CONSTRAINT pk_daily_grant_chunks PRIMARY KEY (grant_date, lo), 
    CONSTRAINT fk_daily_grant_chunks_grant_date_daily_grant_runs FOREIGN KEY(grant_date) REFERENCES daily_grant_runs (grant_date) ON DELETE CASCADE, 
    CONSTRAINT ck_daily_grant_chunks_range CHECK (lo < hi)
);

UPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0001';

-- Running upgrade 0002 -> 0003

CREATE TABLE revoked_tokens (
    jti VARCHAR(128) NOT NULL, 
    revoked_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    revoked_by VARCHAR(200) NOT NULL, 
    reason VARCHAR(500), 
    CONSTRAINT pk_revoked_tokens PRIMARY KEY (jti)
);

UPDATE alembic_version SET version_num='0003' WHERE alembic_version.version_num = '0002';

-- Running upgrade 0003 -> 0004

CREATE TABLE schema_changes (
    id BIGSERIAL NOT NULL, 
    name VARCHAR(200) NOT NULL, 
    sql TEXT NOT NULL, 
    checksum VARCHAR(64) NOT NULL, 
    actor VARCHAR(200) NOT NULL, 
    applied_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    duration_ms INTEGER NOT NULL, 
    outcome VARCHAR(20) NOT NULL, 
    error TEXT, 
    CONSTRAINT pk_schema_changes PRIMARY KEY (id), 
    CONSTRAINT ck_schema_changes_outcome CHECK (outcome IN ('applied', 'failed')), 
    CONSTRAINT ck_schema_changes_error_iff_failed CHECK ((outcome = 'failed') = (error IS NOT NULL))
);

CREATE UNIQUE INDEX uq_schema_changes_applied_name ON schema_changes (name) WHERE outcome = 'applied';

UPDATE alembic_version SET version_num='0004' WHERE alembic_version.version_num = '0003';

-- Running upgrade 0004 -> 0005

ALTER TABLE revoked_tokens ADD COLUMN expires_at TIMESTAMP WITH TIME ZONE;

ALTER TABLE revoked_tokens ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY;

CREATE FUNCTION revoked_tokens_lock_seq() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_advisory_xact_lock(hashtextextended('revoked_tokens.seq', 0));
                RETURN NULL;
            END $$;

CREATE TRIGGER revoked_tokens_lock_seq BEFORE INSERT ON revoked_tokens FOR EACH STATEMENT EXECUTE FUNCTION revoked_tokens_lock_seq();

CREATE UNIQUE INDEX uq_revoked_tokens_seq ON revoked_tokens (seq);

UPDATE alembic_version SET version_num='0005' WHERE alembic_version.version_num = '0004';

-- Running upgrade 0005 -> 0006

ALTER TABLE daily_grant_runs ADD COLUMN max_user_id BIGINT;

ALTER TABLE daily_grant_runs ADD COLUMN last_error VARCHAR(500);

ALTER TABLE daily_grant_runs ADD COLUMN scheduled BOOLEAN DEFAULT false NOT NULL;

ALTER TABLE daily_grant_runs DROP CONSTRAINT ck_daily_grant_runs_status;

ALTER TABLE daily_grant_runs ADD CONSTRAINT ck_daily_grant_runs_status CHECK (status IN ('running', 'done', 'failed'));

UPDATE daily_grant_runs SET scheduled = true;

UPDATE alembic_version SET version_num='0006' WHERE alembic_version.version_num = '0005';

-- Running upgrade 0006 -> 0007

COMMIT;

CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_ledger_user_time ON ledger_entries (user_id, created_at, id);

CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_ledger_time ON ledger_entries (created_at, id);

DROP INDEX CONCURRENTLY IF EXISTS ix_ledger_user_id_id;

BEGIN;

UPDATE alembic_version SET version_num='0007' WHERE alembic_version.version_num = '0006';

-- Running upgrade 0007 -> 0008

ALTER TABLE idempotency_keys ADD COLUMN refusal TEXT;

ALTER TABLE ledger_entries ADD COLUMN reverses BIGINT;

ALTER TABLE ledger_entries DROP CONSTRAINT ck_ledger_entries_kind;

ALTER TABLE ledger_entries DROP CONSTRAINT ck_ledger_entries_amount_sign;

ALTER TABLE ledger_entries ADD CONSTRAINT ck_ledger_entries_kind CHECK (kind IN ('add', 'deduct', 'reset', 'daily_grant', 'reversal')) NOT VALID;

ALTER TABLE ledger_entries ADD CONSTRAINT ck_ledger_entries_amount_sign CHECK ((kind IN ('add', 'daily_grant') AND amount > 0) OR (kind = 'deduct' AND amount < 0) OR (kind = 'reset' AND amount <= 0) OR (kind = 'reversal' AND amount <> 0)) NOT VALID;

ALTER TABLE ledger_entries ADD CONSTRAINT ck_ledger_entries_reverses_iff_reversal CHECK ((kind = 'reversal') = (reverses IS NOT NULL)) NOT VALID;

ALTER TABLE ledger_entries ADD CONSTRAINT fk_ledger_entries_reverses_ledger_entries FOREIGN KEY (reverses) REFERENCES ledger_entries (id) ON DELETE RESTRICT NOT VALID;

COMMIT;

ALTER TABLE ledger_entries VALIDATE CONSTRAINT ck_ledger_entries_kind;

ALTER TABLE ledger_entries VALIDATE CONSTRAINT ck_ledger_entries_amount_sign;

ALTER TABLE ledger_entries VALIDATE CONSTRAINT ck_ledger_entries_reverses_iff_reversal;

ALTER TABLE ledger_entries VALIDATE CONSTRAINT fk_ledger_entries_reverses_ledger_entries;

CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_ledger_reverses ON ledger_entries (reverses) WHERE reverses IS NOT NULL;

BEGIN;

UPDATE alembic_version SET version_num='0008' WHERE alembic_version.version_num = '0007';

-- Running upgrade 0008 -> 0009

CREATE TABLE holds (
    id BIGSERIAL NOT NULL, 
    user_id BIGINT NOT NULL, 
    amount BIGINT NOT NULL, 
    status VARCHAR(10) NOT NULL, 
    captured BIGINT, 
    reason VARCHAR(500), 
    actor VARCHAR(200) NOT NULL, 
    idempotency_key VARCHAR(255), 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    expires_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    closed_at TIMESTAMP WITH TIME ZONE, 
    closed_by VARCHAR(200), 
    CONSTRAINT pk_holds PRIMARY KEY (id), 
    CONSTRAINT fk_holds_user_id_users FOREIGN KEY(user_id) REFERENCES users (user_id) ON DELETE RESTRICT, 
    CONSTRAINT ck_holds_amount_positive CHECK (amount > 0), 
    CONSTRAINT ck_holds_status CHECK (status IN ('open', 'captured', 'released', 'expired')), 
    CONSTRAINT ck_holds_captured_iff_status CHECK ((status = 'captured') = (captured IS NOT NULL)), 
    CONSTRAINT ck_holds_captured_within_amount CHECK (captured > 0 AND captured <= amount), 
    CONSTRAINT ck_holds_closed_iff_not_open CHECK ((status = 'open') = (closed_at IS NULL)), 
    CONSTRAINT ck_holds_expires_after_created CHECK (expires_at > created_at)
);

CREATE UNIQUE INDEX uq_holds_actor_idempotency_key ON holds (actor, idempotency_key);

CREATE INDEX ix_holds_user_id ON holds (user_id, id);

CREATE INDEX ix_holds_open_due ON holds (user_id, expires_at) WHERE status = 'open';

CREATE INDEX ix_holds_open_expiry ON holds (expires_at) WHERE status = 'open';

ALTER TABLE idempotency_keys ADD COLUMN refused_held BIGINT;

ALTER TABLE idempotency_keys ADD COLUMN answer TEXT;

ALTER TABLE credits ADD COLUMN held BIGINT DEFAULT '0' NOT NULL;

ALTER TABLE credits ADD CONSTRAINT ck_credits_held_within_credits CHECK (held >= 0 AND held <= credits) NOT VALID;

ALTER TABLE ledger_entries ADD COLUMN hold_id BIGINT;

ALTER TABLE ledger_entries DROP CONSTRAINT ck_ledger_entries_kind;

ALTER TABLE ledger_entries DROP CONSTRAINT ck_ledger_entries_amount_sign;

ALTER TABLE ledger_entries ADD CONSTRAINT ck_ledger_entries_kind CHECK (kind IN ('add', 'deduct', 'reset', 'daily_grant', 'reversal', 'capture')) NOT VALID;

ALTER TABLE ledger_entries ADD CONSTRAINT ck_ledger_entries_amount_sign CHECK ((kind IN ('add', 'daily_grant') AND amount > 0) OR (kind = 'deduct' AND amount < 0) OR (kind = 'reset' AND amount <= 0) OR (kind = 'reversal' AND amount <> 0) OR (kind = 'capture' AND amount < 0)) NOT VALID;

ALTER TABLE ledger_entries ADD CONSTRAINT ck_ledger_entries_hold_iff_capture CHECK ((kind = 'capture') = (hold_id IS NOT NULL)) NOT VALID;

ALTER TABLE ledger_entries ADD CONSTRAINT fk_ledger_entries_hold_id_holds FOREIGN KEY (hold_id) REFERENCES holds (id) ON DELETE RESTRICT NOT VALID;

COMMIT;

ALTER TABLE credits VALIDATE CONSTRAINT ck_credits_held_within_credits;

ALTER TABLE ledger_entries VALIDATE CONSTRAINT ck_ledger_entries_kind;

ALTER TABLE ledger_entries VALIDATE CONSTRAINT ck_ledger_entries_amount_sign;

ALTER TABLE ledger_entries VALIDATE CONSTRAINT ck_ledger_entries_hold_iff_capture;

ALTER TABLE ledger_entries VALIDATE CONSTRAINT fk_ledger_entries_hold_id_holds;

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS uq_ledger_hold_id ON ledger_entries (hold_id) WHERE hold_id IS NOT NULL;

BEGIN;

UPDATE alembic_version SET version_num='0009' WHERE alembic_version.version_num = '0008';

-- Running upgrade 0009 -> 0010

ALTER TABLE credits ADD COLUMN low_balance_threshold BIGINT;

ALTER TABLE credits ADD COLUMN alert_state VARCHAR(10);

ALTER TABLE credits ADD CONSTRAINT ck_credits_alert_state CHECK (alert_state IN ('ok', 'low', 'depleted')) NOT VALID;

ALTER TABLE credits ADD CONSTRAINT ck_credits_threshold_non_negative CHECK (low_balance_threshold >= 0) NOT VALID;

COMMIT;

ALTER TABLE credits VALIDATE CONSTRAINT ck_credits_alert_state;

ALTER TABLE credits VALIDATE CONSTRAINT ck_credits_threshold_non_negative;

BEGIN;

CREATE TABLE events (
    id BIGSERIAL NOT NULL, 
    event_type VARCHAR(40) NOT NULL, 
    user_id BIGINT, 
    data TEXT NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    CONSTRAINT pk_events PRIMARY KEY (id), 
    CONSTRAINT fk_events_user_id_users FOREIGN KEY(user_id) REFERENCES users (user_id) ON DELETE RESTRICT, 
    CONSTRAINT ck_events_event_type CHECK (event_type IN ('credits.changed', 'hold.created', 'hold.released', 'hold.expired', 'balance.low', 'balance.recovered', 'balance.depleted', 'grant.run.completed', 'schema.applied') AND event_type <> 'credits.changed')
);

CREATE INDEX ix_events_time ON events (created_at, id);

CREATE TABLE webhook_endpoints (
    id BIGSERIAL NOT NULL, 
    url VARCHAR(2048) NOT NULL, 
    description VARCHAR(500), 
    enabled BOOLEAN DEFAULT true NOT NULL, 
    secret VARCHAR(100) NOT NULL, 
    previous_secret VARCHAR(100), 
    previous_secret_until TIMESTAMP WITH TIME ZONE, 
    created_by VARCHAR(200) NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    CONSTRAINT pk_webhook_endpoints PRIMARY KEY (id), 
    CONSTRAINT ck_webhook_endpoints_previous_secret_until CHECK ((previous_secret IS NULL) = (previous_secret_until IS NULL))
);

CREATE TABLE webhook_subscriptions (
    endpoint_id BIGINT NOT NULL, 
    event_type VARCHAR(40) NOT NULL, 
    CONSTRAINT pk_webhook_subscriptions PRIMARY KEY (endpoint_id, event_type), 
    CONSTRAINT fk_webhook_subscriptions_endpoint_id_webhook_endpoints FOREIGN KEY(endpoint_id) REFERENCES webhook_endpoints (id) ON DELETE CASCADE, 
    CONSTRAINT ck_webhook_subscriptions_event_type CHECK (event_type IN ('credits.changed', 'hold.created', 'hold.released', 'hold.expired', 'balance.low', 'balance.recovered', 'balance.depleted', 'grant.run.completed', 'schema.applied'))
);

CREATE INDEX ix_webhook_subscriptions_type ON webhook_subscriptions (event_type, endpoint_id);

CREATE TABLE webhook_deliveries (
    id BIGSERIAL NOT NULL, 
    endpoint_id BIGINT NOT NULL, 
    entry_id BIGINT, 
    event_id BIGINT, 
    status VARCHAR(10) NOT NULL, 
    attempts INTEGER DEFAULT '0' NOT NULL, 
    next_attempt_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    last_attempt_at TIMESTAMP WITH TIME ZONE, 
    last_status_code INTEGER, 
    last_error VARCHAR(500), 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    delivered_at TIMESTAMP WITH TIME ZONE, 
    CONSTRAINT pk_webhook_deliveries PRIMARY KEY (id), 
    CONSTRAINT fk_webhook_deliveries_endpoint_id_webhook_endpoints FOREIGN KEY(endpoint_id) REFERENCES webhook_endpoints (id) ON DELETE CASCADE, 
    CONSTRAINT fk_webhook_deliveries_entry_id_ledger_entries FOREIGN KEY(entry_id) REFERENCES ledger_entries (id) ON DELETE RESTRICT, 
    CONSTRAINT fk_webhook_deliveries_event_id_events FOREIGN KEY(event_id) REFERENCES events (id) ON DELETE CASCADE, 
    CONSTRAINT ck_webhook_deliveries_one_source CHECK ((entry_id IS NULL) <> (event_id IS NULL)), 
    CONSTRAINT ck_webhook_deliveries_status CHECK (status IN ('pending', 'delivered', 'dead')), 
    CONSTRAINT ck_webhook_deliveries_delivered_iff_at CHECK ((status = 'delivered') = (delivered_at IS NOT NULL)), 
    CONSTRAINT ck_webhook_deliveries_attempts_non_negative CHECK (attempts >= 0)
);

CREATE UNIQUE INDEX uq_webhook_deliveries_entry ON webhook_deliveries (entry_id, endpoint_id);

CREATE UNIQUE INDEX uq_webhook_deliveries_event ON webhook_deliveries (event_id, endpoint_id);

CREATE INDEX ix_webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

CREATE INDEX ix_webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);

CREATE INDEX ix_webhook_deliveries_created_at ON webhook_deliveries (created_at);

CREATE TABLE webhook_attempts (
    id BIGSERIAL NOT NULL, 
    delivery_id BIGINT NOT NULL, 
    attempted_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    duration_ms INTEGER NOT NULL, 
    status_code INTEGER, 
    error VARCHAR(500), 
    CONSTRAINT pk_webhook_attempts PRIMARY KEY (id), 
    CONSTRAINT fk_webhook_attempts_delivery_id_webhook_deliveries FOREIGN KEY(delivery_id) REFERENCES webhook_deliveries (id) ON DELETE CASCADE
);

CREATE INDEX ix_webhook_attempts_delivery ON webhook_attempts (delivery_id, id);

UPDATE alembic_version SET version_num='0010' WHERE alembic_version.version_num = '0009';

-- Running upgrade 0010 -> 0011

ALTER TABLE holds ADD COLUMN close_reason VARCHAR(500);

UPDATE alembic_version SET version_num='0011' WHERE alembic_version.version_num = '0010';

COMMIT;

