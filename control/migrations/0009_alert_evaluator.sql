-- Cohort's store, version 9: one alert evaluator among the processes sharing a store.

-- The process that evaluates the alert rules, and until when its claim holds (microseconds).
-- It renews the claim from its evaluation loop, and another process takes over once the claim
-- runs out. `term` grows each time the claim changes hands: a transition is recorded only
-- while this row (locked in the same transaction) still names the process and its term.
CREATE TABLE alert_evaluator (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    term BIGINT NOT NULL,
    lease_until BIGINT NOT NULL
);
INSERT INTO alert_evaluator (id, owner, term, lease_until) VALUES ('evaluator', '', 0, 0);

-- The evaluator reads the jobs every process finished (succeeded or failed) since a cursor:
-- `jobs_finished` (status, finished_at) of version 4 serves that read.
