-- Cohort's store, version 13: data in object storage and table formats.

-- How a tenant's s3:// data root is reached, as JSON (endpoint, region, path_style,
-- allow_http, and the name of credentials the service's configuration holds; never a key).
-- NULL for a tenant whose data root is a local folder.
ALTER TABLE tenants ADD COLUMN storage TEXT;

-- The snapshots of the table sources (Iceberg) a job's first attempt read, as JSON: every
-- later attempt of the job (a retry, a re-run after a crash) reads the same ones. NULL until
-- an attempt has loaded its catalog, and for models without table sources.
ALTER TABLE jobs ADD COLUMN snapshots TEXT;
