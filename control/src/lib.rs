//! `cohort-control`: the control plane of Cohort.
//!
//! It holds tenants, their data models and segments in a durable [`Store`] (SQLite or
//! PostgreSQL), runs segment jobs on the embedded executor [`pool`], commits each run's
//! membership atomically ([`membership`]), and serves all of it over HTTP ([`api`]).
//!
//! A job's life is `queued → admitted → running → succeeded | failed | cancelled`; every
//! transition is committed (with its time) before it takes effect, so a crash loses no job:
//! on start, [`server::serve`] queues again what was admitted or running.
//!
//! Invariants, stated as absences: no job state lives only in memory (the pool's bookkeeping
//! is rebuilt from the store); no run's membership is committed twice (the `runs` table is
//! keyed by run id); no tenant reads another tenant's anything (every query is keyed by the
//! caller's tenant); no request body reaches a panic (bad input is a 4xx JSON error).
#![deny(missing_docs)]

pub mod alerts;
pub mod api;
pub mod config;
pub mod egress;
pub mod estimates;
pub mod jobs;
pub mod membership;
pub mod metrics;
pub mod policy;
pub mod pool;
pub mod scheduler;
pub mod schedules;
pub mod server;
pub mod service;
pub mod simulation;
pub mod storage;
pub mod store;
pub mod traces;
pub mod triage;

pub use config::Config;
pub use store::Store;

/// What the service reports about itself: job metrics and traces.
#[derive(Debug)]
pub struct Telemetry {
    /// Job metrics (recorded by the pool, rendered by `/metrics`).
    pub metrics: std::sync::Arc<metrics::Metrics>,
    /// The registry `/metrics` gathers.
    pub registry: prometheus::Registry,
    /// Traces (off unless an OTLP endpoint is configured).
    pub traces: traces::Traces,
}

impl Telemetry {
    /// Metrics with per-tenant series for the `top_tenants` busiest tenants, and `traces`.
    pub fn new(top_tenants: usize, traces: traces::Traces) -> std::sync::Arc<Telemetry> {
        let metrics = std::sync::Arc::new(metrics::Metrics::new(top_tenants));
        let registry = metrics::registry(std::sync::Arc::clone(&metrics));
        std::sync::Arc::new(Telemetry { metrics, registry, traces })
    }
}

/// Errors of the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work.
    #[error("configuration: {0}")]
    Config(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    /// A file of the service (memberships) could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Something asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Something to be created exists already.
    #[error("{0}")]
    Conflict(String),
    /// A model or segment that does not hold against the tenant's data (the executor's
    /// error: invalid, a schema mismatch, a source missing).
    #[error("{0}")]
    Model(#[from] cohort_executor::Error),
    /// A bug.
    #[error("internal: {0}")]
    Internal(String),
}

/// The control plane's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Now, in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Microseconds since the epoch as RFC 3339 (UTC, microsecond precision).
pub fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)).unwrap_or_else(|| micros.to_string())
}

/// A new time-ordered id: a prefix, the time in microseconds (hex, fixed width) and random bits.
pub fn new_id(prefix: &str) -> String {
    let random: u32 = rand::random();
    format!("{prefix}{:014x}{random:08x}", now_micros().max(0))
}

/// Whether `id` may name a tenant or a segment: 1 to 64 of `A-Z a-z 0-9 _ -`, not starting
/// with `-`. Ids become folder names, so nothing else is allowed.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && !id.starts_with('-') && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
