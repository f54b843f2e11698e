-- Cohort's store, version 4: alerts, silences, webhook receivers and the delivery outbox.
-- Times are microseconds since the epoch, as everywhere in the store.

-- Every alert that fired: one row per firing (a key that fires again gets a new row).
CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    rule TEXT NOT NULL,
    scope TEXT NOT NULL,
    alert_key TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    state TEXT NOT NULL,
    inhibited_by TEXT,
    silenced_by TEXT,
    started_at BIGINT NOT NULL,
    resolved_at BIGINT,
    failures BIGINT NOT NULL,
    notified_at BIGINT,
    updated_at BIGINT NOT NULL
);
-- At most one firing row per label set.
CREATE UNIQUE INDEX alerts_firing ON alerts (fingerprint) WHERE state = 'firing';
CREATE INDEX alerts_state ON alerts (state, started_at);
CREATE INDEX alerts_inhibited_by ON alerts (inhibited_by);

-- An alert's history: fired, inhibited, silenced, notified, resolved.
CREATE TABLE alert_events (
    alert_id TEXT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, at);

-- Silences: label matchers (JSON) and an expiry.
CREATE TABLE silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    comment TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Webhook receivers: where notifications go, which alerts (matchers, JSON), signed with a secret.
CREATE TABLE receivers (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    matchers TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    disabled_reason TEXT,
    created_at BIGINT NOT NULL
);

-- The outbox: one row per notification to one receiver. `id` is the webhook-id, kept across
-- retries; the body is rendered at the first attempt and resent as it is.
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    receiver_id TEXT NOT NULL REFERENCES receivers (id) ON DELETE CASCADE,
    alert_id TEXT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    body TEXT,
    attempts BIGINT NOT NULL,
    not_before BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX deliveries_due ON deliveries (state, not_before);
CREATE INDEX deliveries_alert ON deliveries (alert_id, receiver_id, state);

-- Failures inside the alert windows, read when the alert evaluator starts.
CREATE INDEX jobs_finished ON jobs (status, finished_at);
