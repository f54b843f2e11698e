-- Cohort's store, version 7: jobs answered by another job's execution.

-- A queued job of the same segment and as-of as a job that starts rides on its execution:
-- its attempt names the job whose execution answered it (NULL: its own execution), and its
-- history record has no files of its own (it added and removed nothing; its members are
-- those of the run it rode on).
ALTER TABLE attempts ADD COLUMN rode_on TEXT;
