-- Cohort's store, version 5: a job remembers the API request that created it, as a W3C
-- traceparent, so its trace can link to the request's span (NULL: no request span).
ALTER TABLE jobs ADD COLUMN trace_link TEXT;

-- An attempt keeps its phases (for a job's timeline): JSON [{"place", "rows", "started_ms", "elapsed_ms"}].
ALTER TABLE attempts ADD COLUMN phases TEXT;
