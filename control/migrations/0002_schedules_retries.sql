-- Cohort's store, version 2: retries, deadlines and schedules.

-- A retrying job waits until not_before (microseconds) before it is queued again.
ALTER TABLE jobs ADD COLUMN not_before BIGINT;
-- What the job is expected to need: its runtime (for fair share and reservations) and the
-- deadline of each attempt (microseconds of run time; past it the attempt fails as timeout).
ALTER TABLE jobs ADD COLUMN expected_micros BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN deadline_micros BIGINT NOT NULL DEFAULT 0;
-- The schedule's due time a scheduled job was enqueued for (microseconds).
ALTER TABLE jobs ADD COLUMN due_at BIGINT;
CREATE INDEX jobs_retrying ON jobs (status, not_before);
-- Whether a segment has a run going (asked at each due time).
CREATE INDEX jobs_segment_status ON jobs (tenant_id, segment_id, status);

-- Schedules: the next due time not yet handled (NULL when unscheduled), a due run held back
-- by overlap policy buffer_one, and the due runs skipped (missed while down, or overlapped).
ALTER TABLE segments ADD COLUMN next_due_at BIGINT;
ALTER TABLE segments ADD COLUMN buffered_due_at BIGINT;
ALTER TABLE segments ADD COLUMN missed_runs BIGINT NOT NULL DEFAULT 0;
ALTER TABLE segments ADD COLUMN overlapped_runs BIGINT NOT NULL DEFAULT 0;
CREATE INDEX segments_due ON segments (next_due_at);
-- Segments holding a buffered run (read at every tick).
CREATE INDEX segments_buffered ON segments (buffered_due_at);
