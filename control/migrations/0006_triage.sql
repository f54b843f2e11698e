-- Cohort's store, version 6: failure triage.

-- What the worker measured of a failed attempt's data (JSON findings: duplicate or NULL
-- keys, extreme key skew), for triage. NULL: not measured.
ALTER TABLE attempts ADD COLUMN data_quality TEXT;
CREATE INDEX attempts_failed ON attempts (outcome, finished_at);

-- Triage reports made on schedule (and kept): one per window; the id names the window, so
-- replicas make each report once.
CREATE TABLE triage_reports (
    id TEXT PRIMARY KEY,
    from_at BIGINT NOT NULL,
    to_at BIGINT NOT NULL,
    failures BIGINT NOT NULL,
    signatures BIGINT NOT NULL,
    new_signatures BIGINT NOT NULL,
    report TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX triage_reports_to ON triage_reports (to_at);

-- The outbox now carries triage reports as well as alerts: a delivery names one or the other.
CREATE TABLE deliveries_v6 (
    id TEXT PRIMARY KEY,
    receiver_id TEXT NOT NULL REFERENCES receivers (id) ON DELETE CASCADE,
    alert_id TEXT REFERENCES alerts (id) ON DELETE CASCADE,
    report_id TEXT REFERENCES triage_reports (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    body TEXT,
    attempts BIGINT NOT NULL,
    not_before BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
INSERT INTO deliveries_v6 (id, receiver_id, alert_id, report_id, kind, state, body, attempts, not_before, last_error, created_at, delivered_at)
    SELECT id, receiver_id, alert_id, NULL, kind, state, body, attempts, not_before, last_error, created_at, delivered_at FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_v6 RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries (state, not_before);
CREATE INDEX deliveries_alert ON deliveries (alert_id, receiver_id, state);
CREATE INDEX deliveries_report ON deliveries (report_id);
