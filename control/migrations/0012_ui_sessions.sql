-- Cohort's store, version 12: the built-in dashboard's sessions.

-- A signed-in admin's session: the SHA-256 of the id its cookie carries (the id itself is
-- never stored), and when it ends (microseconds). Shared by every process on the store.
CREATE TABLE ui_sessions (
    hash TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);
