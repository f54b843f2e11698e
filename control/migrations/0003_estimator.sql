-- Cohort's store, version 3: the estimator.

-- What the estimator said of each job before it was queued: the features it read (JSON, as
-- cohort-estimator serializes them), the model version, which part answered, the predicted
-- peak and runtime and the bound the job was first granted.
CREATE TABLE job_estimates (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL,
    segment_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    features TEXT NOT NULL,
    model_version BIGINT NOT NULL,
    basis TEXT NOT NULL,
    memory_bytes BIGINT NOT NULL,
    bound_bytes BIGINT NOT NULL,
    runtime_micros BIGINT NOT NULL
);
-- A segment's recent runs (its history, read before each run).
CREATE INDEX job_estimates_segment ON job_estimates (tenant_id, segment_id, created_at);
-- The recent runs of every segment (refits, traces, accuracy).
CREATE INDEX job_estimates_created ON job_estimates (created_at);

-- Fitted estimator models (JSON, as cohort-estimator serializes them); the highest version
-- is the one in use.
CREATE TABLE estimator_models (
    version BIGINT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    trained_on BIGINT NOT NULL,
    model TEXT NOT NULL
);
