-- Cohort's store, version 7: jobs answered by another job's execution; finished jobs' estimates.

-- A queued job of the same segment and as-of as a job that starts rides on its execution:
-- its attempt names the job whose execution answered it (NULL: its own execution), and its
-- history record has no files of its own (it added and removed nothing; its members are
-- those of the run it rode on).
ALTER TABLE attempts ADD COLUMN rode_on TEXT;

-- When the job an estimate belongs to reached its final state (NULL until then): the
-- estimator reads the newest finished jobs of a segment by this index, past none of the
-- queued ones.
ALTER TABLE job_estimates ADD COLUMN settled_at BIGINT;
UPDATE job_estimates SET settled_at = (SELECT j.finished_at FROM jobs j WHERE j.id = job_estimates.job_id AND j.status IN ('succeeded', 'failed', 'cancelled'));
CREATE INDEX job_estimates_settled ON job_estimates (tenant_id, segment_id, settled_at);
CREATE INDEX job_estimates_settled_all ON job_estimates (settled_at);
