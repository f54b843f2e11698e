-- Cohort's store, version 10: where a job runs.

-- `embedded` (this service's executor pool) or `ballista` (the Ballista cluster configured
-- with `ballista`): chosen when the job is queued, from its estimate.
ALTER TABLE jobs ADD COLUMN backend TEXT NOT NULL DEFAULT 'embedded';
