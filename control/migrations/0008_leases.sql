-- Cohort's store, version 8: leases, so that several processes can share one store.

-- The process that admitted a job and until when its claim holds (microseconds). It renews
-- the claim while the job runs; once it runs out, another process queues the job again.
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until BIGINT;
CREATE INDEX jobs_leases ON jobs (status, lease_until);
