-- Cohort's store, version 11: which files a committed run's membership is in.

-- The name of the run's files under its segment's folder (`<files>.members.parquet`,
-- `<files>.changes.parquet`): those its committed attempt wrote (`<run>.attempt-<n>`), or,
-- for a job that rode on another's execution, that job's. NULL: the run's id (runs committed
-- before this version).
ALTER TABLE runs ADD COLUMN files TEXT;
