-- Cohort's store, version 1. Portable SQL: the same text runs on SQLite and PostgreSQL.
-- Times are microseconds since the Unix epoch (UTC) in BIGINT columns; flags are 0/1.

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    data_root TEXT NOT NULL,
    max_concurrent_jobs BIGINT NOT NULL,
    memory_quota_bytes BIGINT NOT NULL,
    jobs_per_minute BIGINT NOT NULL,
    share DOUBLE PRECISION NOT NULL,
    created_at BIGINT NOT NULL
);

-- API tokens of tenants, stored as the SHA-256 of the token (hex).
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL
);
CREATE INDEX tokens_tenant ON tokens (tenant_id);

CREATE TABLE models (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    definition TEXT NOT NULL,
    objects BIGINT NOT NULL,
    relationships BIGINT NOT NULL,
    source_bytes BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- latest_run_id is '' until a run commits; members counts the latest run's members.
CREATE TABLE segments (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    definition TEXT NOT NULL,
    schedule TEXT,
    timezone TEXT NOT NULL,
    overlap TEXT NOT NULL,
    latest_run_id TEXT NOT NULL,
    members BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- A job is one requested run of a segment; its id is the run id its membership commits under.
-- Ids are time-ordered, so ordering by id is ordering by submission.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    segment_id TEXT NOT NULL,
    status TEXT NOT NULL,
    idempotency_key TEXT,
    trigger_kind TEXT NOT NULL,
    as_of BIGINT NOT NULL,
    grant_bytes BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    error_class TEXT,
    error_message TEXT,
    members BIGINT,
    added BIGINT,
    removed BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant_id, idempotency_key);
CREATE INDEX jobs_status ON jobs (status, id);
CREATE INDEX jobs_segment ON jobs (tenant_id, segment_id, id);

-- Every transition of every job, with its time.
CREATE TABLE job_events (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    from_status TEXT NOT NULL,
    to_status TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX job_events_job ON job_events (job_id, at);

-- One row per attempt: what it was granted, what it used, how it ended.
CREATE TABLE attempts (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    outcome TEXT,
    error_class TEXT,
    error_message TEXT,
    grant_bytes BIGINT NOT NULL,
    peak_memory_bytes BIGINT,
    elapsed_micros BIGINT,
    rows_scanned BIGINT,
    bytes_scanned BIGINT,
    spill_count BIGINT,
    plan_mode TEXT,
    objects BIGINT,
    joins BIGINT,
    related_predicates BIGINT,
    max_hops BIGINT,
    PRIMARY KEY (job_id, attempt)
);

-- The membership history: one record per committed run (the primary key makes a second
-- commit of the same run impossible).
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    segment_id TEXT NOT NULL,
    previous_run_id TEXT NOT NULL,
    members BIGINT NOT NULL,
    added BIGINT NOT NULL,
    removed BIGINT NOT NULL,
    key_type TEXT NOT NULL,
    committed_at BIGINT NOT NULL
);
CREATE INDEX runs_segment ON runs (tenant_id, segment_id, committed_at);
