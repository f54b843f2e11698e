//! The durable store: one set of queries over SQLite or PostgreSQL through sqlx's `Any` driver.
//!
//! Every query here is portable SQL with `$n` parameters (both databases read them). Times are
//! microseconds since the Unix epoch. Each job transition is one transaction that checks the
//! status it leaves (compare-and-set) and records the transition in `job_events`.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::jobs::JobStatus;
use crate::{Error, Result, now_micros};

pub(crate) mod alerts;
pub mod catalogs;
mod dashboard;
mod estimator;
mod jobs;
mod rows;
mod runs;
mod schedules;
mod tenants;
mod triage;

pub use dashboard::*;
use jobs::*;
pub use rows::*;
pub use triage::*;

/// The migrations, in order; each runs once, in a transaction.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/0001_init.sql")),
    (2, include_str!("../../migrations/0002_schedules_retries.sql")),
    (3, include_str!("../../migrations/0003_estimator.sql")),
    (4, include_str!("../../migrations/0004_alerts.sql")),
    (5, include_str!("../../migrations/0005_traces.sql")),
    (6, include_str!("../../migrations/0006_triage.sql")),
    (7, include_str!("../../migrations/0007_riders.sql")),
    (8, include_str!("../../migrations/0008_leases.sql")),
    (9, include_str!("../../migrations/0009_alert_evaluator.sql")),
    (10, include_str!("../../migrations/0010_backend.sql")),
    (11, include_str!("../../migrations/0011_run_files.sql")),
    (12, include_str!("../../migrations/0012_ui_sessions.sql")),
    (13, include_str!("../../migrations/0013_lakehouse.sql")),
];

/// Which database the store is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// The store: a connection pool and what it is connected to.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Token hashes already found, with their tenant and when they were read. A revocation
    /// here forgets its hash at once; one made by another process is seen once the entry is
    /// older than `token_ttl` (a hash not found is looked up again).
    tokens: Arc<std::sync::Mutex<HashMap<String, (String, std::time::Instant)>>>,
    /// How long a token found stays remembered (the lease period: revocations reach every
    /// replica within it).
    token_ttl: Duration,
    /// Submitted jobs waiting for their group commit: concurrent submissions share one
    /// transaction.
    inserts: Arc<std::sync::Mutex<InsertQueue>>,
    /// Tenants' models as read recently, for [`Store::recent_model`].
    models: Arc<std::sync::Mutex<HashMap<String, (std::time::Instant, Arc<ModelRow>)>>>,
}

/// How long a token found is remembered unless [`Store::with_token_ttl`] says otherwise.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(30);

/// How long a model read for sizing is reused (another replica's change shows after this).
const MODEL_MAX_AGE: Duration = Duration::from_secs(2);

/// Jobs waiting for the next group commit, and whether a task is committing them.
#[derive(Debug, Default)]
struct InsertQueue {
    pending: Vec<PendingInsert>,
    flushing: bool,
}

/// A job to insert and where its answer goes.
type PendingInsert = (JobRow, tokio::sync::oneshot::Sender<Result<()>>);

/// Jobs inserted by one transaction, at most.
const INSERTS_PER_COMMIT: usize = 256;

/// Token hashes remembered, at most (then the memory starts over).
const TOKENS_KEPT: usize = 100_000;

/// A token's id: this prefix and the first hex digits of its hash (it names the token in
/// listings and revocations; the token itself is never shown again).
const TOKEN_ID_PREFIX: &str = "tok_";
const TOKEN_ID_HEX: usize = 16;

/// The id of the token whose stored hash is `hash`.
pub fn token_id(hash: &str) -> String {
    format!("{TOKEN_ID_PREFIX}{}", hash.get(..TOKEN_ID_HEX).unwrap_or(hash))
}

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`), creating a SQLite file and its
    /// folder if needed, and applies the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(Error::Config(format!("database URL {url:?}: expected sqlite://PATH or postgres://USER@HOST:PORT/DATABASE")));
        };
        let url = match backend {
            Backend::Sqlite => {
                let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or(path);
                if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| Error::Config(format!("cannot create {}: {e}", parent.display())))?;
                }
                format!("sqlite://{path}?mode=rwc")
            }
            Backend::Postgres => url.to_string(),
        };
        let options = AnyConnectOptions::from_str(&url).map_err(|e| Error::Config(format!("database URL: {e}")))?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL: readers never block the writer; NORMAL: a commit survives a
                        // crash of this process (not of the machine's power).
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                        // 32 MiB of page cache per connection (the default 2 MiB reads the
                        // job tables' pages back from the OS at every statement).
                        sqlx::query("PRAGMA cache_size = -32768").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| Error::Config(format!("cannot open the store at {}: {e}", redact(&url))))?;
        let store = Store { pool, backend, tokens: Arc::default(), token_ttl: DEFAULT_TOKEN_TTL, inserts: Arc::default(), models: Arc::default() };
        store.migrate().await?;
        Ok(store)
    }

    /// The connection pool, for the store's own submodules.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A write transaction, for a caller that records several of the store's steps in one
    /// (the alert evaluator's transition and its outbox rows); the steps are the store's
    /// functions taking the transaction.
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        self.begin().await
    }

    /// A write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`): a
    /// deferred transaction that reads and then writes fails at once, without waiting, when
    /// another connection wrote in between.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// The database the store is on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::query("CREATE TABLE IF NOT EXISTS cohort_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)").execute(&self.pool).await?;
        for (version, sql) in MIGRATIONS {
            let mut tx = self.begin().await?;
            let done: Option<AnyRow> = sqlx::query("SELECT version FROM cohort_migrations WHERE version = $1").bind(*version).fetch_optional(&mut *tx).await?;
            if done.is_some() {
                continue;
            }
            for statement in statements(sql) {
                sqlx::query(&statement).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO cohort_migrations (version, applied_at) VALUES ($1, $2)").bind(*version).bind(now_micros()).execute(&mut *tx).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Answers whether the store can be reached.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }
}

/// Rows written by one statement, at most: SQLite finds a numbered parameter's name by a scan
/// of the statement's parameters, so binding costs the square of their number.
const ROWS_PER_STATEMENT: usize = 32;

/// `$first, $first+1, …`: `n` parameters.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// `($1, …, $width<tail>), (…)`: `rows` rows of `width` parameters each, then `tail` (text
/// with no parameters) at the end of every row.
fn rows_of(width: usize, rows: usize, tail: &str) -> String {
    (0..rows).map(|r| format!("({}{tail})", placeholders(r * width + 1, width))).collect::<Vec<_>>().join(", ")
}

/// Why attempt `fence` may no longer move job `job_id` out of `running`, if it may not: the
/// job is not running (`NotRunning`), or runs under another lease or attempt (`Superseded`).
async fn fenced_out(tx: &mut sqlx::Transaction<'_, sqlx::Any>, job_id: &str, fence: Fence<'_>) -> Result<Option<CommitResult>> {
    let row = sqlx::query("SELECT status, lease_owner, attempts FROM jobs WHERE id = $1").bind(job_id).fetch_optional(&mut **tx).await?;
    let Some(row) = row else { return Ok(Some(CommitResult::NotRunning)) };
    let (status, owner, attempts): (String, Option<String>, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    Ok(if status != JobStatus::Running.as_str() {
        Some(CommitResult::NotRunning)
    } else if owner.as_deref() != Some(fence.owner) || attempts != fence.attempt {
        Some(CommitResult::Superseded)
    } else {
        None
    })
}

/// Marks a job's estimate as one of a finished job (from now on a record the estimator
/// reads).
async fn settle_estimate(tx: &mut sqlx::Transaction<'_, sqlx::Any>, job_id: &str, at: i64) -> Result<()> {
    sqlx::query("UPDATE job_estimates SET settled_at = $1 WHERE job_id = $2").bind(at).bind(job_id).execute(&mut **tx).await?;
    Ok(())
}

async fn insert_event(tx: &mut sqlx::Transaction<'_, sqlx::Any>, job_id: &str, at: i64, from: &str, to: &str, detail: &str) -> Result<()> {
    sqlx::query("INSERT INTO job_events (job_id, at, from_status, to_status, detail) VALUES ($1, $2, $3, $4, $5)")
        .bind(job_id)
        .bind(at)
        .bind(from)
        .bind(to)
        .bind(detail)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The upper bound of a newest-first page: ids below `before`, or all of them ('' given).
fn newest_first(before: &str) -> &str {
    if before.is_empty() { "\u{10FFFF}" } else { before }
}

/// The statements of a migration: split at semicolons that end a line, comments dropped.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let line = line.split("--").next().unwrap_or("").trim_end();
        if line.trim().is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.ends_with(';') {
            out.push(current.trim().trim_end_matches(';').to_string());
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

/// A database URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_split_into_statements() {
        let statements = statements(MIGRATIONS[0].1);
        assert!(statements.len() > 8, "{statements:?}");
        assert!(statements.iter().all(|s| !s.contains(';') && !s.contains("--")));
    }

    #[test]
    fn passwords_do_not_reach_messages() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
