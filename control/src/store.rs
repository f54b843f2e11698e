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

/// The migrations, in order; each runs once, in a transaction.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_schedules_retries.sql")),
    (3, include_str!("../migrations/0003_estimator.sql")),
    (4, include_str!("../migrations/0004_alerts.sql")),
    (5, include_str!("../migrations/0005_traces.sql")),
    (6, include_str!("../migrations/0006_triage.sql")),
    (7, include_str!("../migrations/0007_riders.sql")),
    (8, include_str!("../migrations/0008_leases.sql")),
    (9, include_str!("../migrations/0009_alert_evaluator.sql")),
    (10, include_str!("../migrations/0010_backend.sql")),
    (11, include_str!("../migrations/0011_run_files.sql")),
    (12, include_str!("../migrations/0012_ui_sessions.sql")),
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

/// A tenant's token as listed.
#[derive(Debug, Clone)]
pub struct TokenRow {
    /// Its id (`tok_` and the first hex digits of its hash).
    pub id: String,
    /// When it was made (microseconds).
    pub created_at: i64,
}

/// A tenant as stored.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Tenant {
    /// The tenant's id.
    pub id: String,
    /// The region the tenant's jobs run in.
    pub region: String,
    /// The folder the tenant's model reads from; sources outside it are refused.
    pub data_root: String,
    /// Jobs of this tenant that may run at once.
    pub max_concurrent_jobs: i64,
    /// Memory the tenant's running jobs may hold at once, in bytes.
    pub memory_quota_bytes: i64,
    /// Jobs the tenant may start per minute.
    pub jobs_per_minute: i64,
    /// The tenant's weight in the fair share of the pool.
    pub share: f64,
    /// When the tenant was created (RFC 3339).
    pub created_at: String,
}

/// A tenant's model as stored.
#[derive(Debug, Clone)]
pub struct ModelRow {
    /// Increases by one at each replacement.
    pub version: i64,
    /// The model's JSON text.
    pub definition: String,
    /// Objects in the model.
    pub objects: i64,
    /// Relationships in the model.
    pub relationships: i64,
    /// Bytes of all sources when the model was stored.
    pub source_bytes: i64,
    /// When it was stored (microseconds).
    pub updated_at: i64,
}

/// A segment as stored.
#[derive(Debug, Clone, Default)]
pub struct SegmentRow {
    /// The tenant it belongs to.
    pub tenant_id: String,
    /// The segment's id (its name).
    pub id: String,
    /// The segment's JSON text.
    pub definition: String,
    /// A cron expression (with seconds), if scheduled.
    pub schedule: Option<String>,
    /// The time zone the schedule is read in.
    pub timezone: String,
    /// What a due run does while the previous one still runs.
    pub overlap: String,
    /// The run whose members are the latest ('' before the first).
    pub latest_run_id: String,
    /// How many members the latest run found.
    pub members: i64,
    /// Created (microseconds).
    pub created_at: i64,
    /// Last changed (microseconds).
    pub updated_at: i64,
    /// The next due time of its schedule not yet handled (microseconds).
    pub next_due_at: Option<i64>,
    /// A due run held back by overlap policy `buffer_one` until the running one ends.
    pub buffered_due_at: Option<i64>,
    /// Due runs skipped because the service was down past the catch-up window.
    pub missed_runs: i64,
    /// Due runs skipped (or superseded in the buffer) because a run was still going.
    pub overlapped_runs: i64,
}

/// A job as stored.
#[derive(Debug, Clone)]
pub struct JobRow {
    /// The job's id, also its run id.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// The segment it runs.
    pub segment_id: String,
    /// Where it is in its life.
    pub status: JobStatus,
    /// The submitter's idempotency key.
    pub idempotency_key: Option<String>,
    /// `api`, `schedule` or `demo`.
    pub trigger: String,
    /// The instant the segment is evaluated for (microseconds).
    pub as_of: i64,
    /// Memory granted to the job, in bytes.
    pub grant_bytes: i64,
    /// Attempts started.
    pub attempts: i64,
    /// Why it failed, as a class.
    pub error_class: Option<String>,
    /// Why it failed, in words.
    pub error_message: Option<String>,
    /// Members found, once succeeded.
    pub members: Option<i64>,
    /// Keys added since the previous run, once succeeded.
    pub added: Option<i64>,
    /// Keys removed since the previous run, once succeeded.
    pub removed: Option<i64>,
    /// Submitted (microseconds).
    pub created_at: i64,
    /// Last transition (microseconds).
    pub updated_at: i64,
    /// Last attempt started (microseconds).
    pub started_at: Option<i64>,
    /// Reached a final state (microseconds).
    pub finished_at: Option<i64>,
    /// While retrying: not queued again before this time (microseconds).
    pub not_before: Option<i64>,
    /// The runtime expected (microseconds).
    pub expected_micros: i64,
    /// How long each attempt may run before it fails as `timeout` (microseconds).
    pub deadline_micros: i64,
    /// For a scheduled run: the due time it was enqueued for (microseconds).
    pub due_at: Option<i64>,
    /// What the estimator said of the job: written with it when it is inserted, never read
    /// back with the job (see [`Store::estimator_records`]).
    pub estimate: Option<JobEstimate>,
    /// The API request that created it, as a W3C `traceparent` (its trace links to it).
    pub trace_link: Option<String>,
    /// Where it runs: [`EMBEDDED`] or [`BALLISTA`], chosen when it is queued.
    pub backend: String,
}

/// A job run by this service's own executor pool.
pub const EMBEDDED: &str = "embedded";
/// A job run on the configured Ballista cluster.
pub const BALLISTA: &str = "ballista";

/// What the estimator said of a job before it was queued.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEstimate {
    /// The features it read, as JSON.
    pub features: String,
    /// The model version (0: rules only).
    pub model_version: i64,
    /// Which part of the estimator answered.
    pub basis: String,
    /// Predicted peak memory.
    pub memory_bytes: i64,
    /// The bound the job was first granted.
    pub bound_bytes: i64,
    /// Predicted runtime (microseconds).
    pub runtime_micros: i64,
}

impl JobRow {
    /// A job as submitted: queued, no attempt yet.
    pub fn queued(tenant_id: &str, segment_id: &str, idempotency_key: Option<String>, trigger: &str, as_of: i64, grant_bytes: i64) -> JobRow {
        let now = now_micros();
        JobRow {
            id: crate::new_id("run_"),
            tenant_id: tenant_id.to_string(),
            segment_id: segment_id.to_string(),
            status: JobStatus::Queued,
            idempotency_key,
            trigger: trigger.to_string(),
            as_of,
            grant_bytes,
            attempts: 0,
            error_class: None,
            error_message: None,
            members: None,
            added: None,
            removed: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            not_before: None,
            expected_micros: 0,
            deadline_micros: 0,
            due_at: None,
            estimate: None,
            trace_link: None,
            backend: EMBEDDED.to_string(),
        }
    }
}

/// One committed run in a segment's membership history.
#[derive(Debug, Clone)]
pub struct RunRow {
    /// The run (job) id.
    pub run_id: String,
    /// The segment.
    pub segment_id: String,
    /// The run whose members this one replaced ('' for the first).
    pub previous_run_id: String,
    /// Members after this run.
    pub members: i64,
    /// Keys this run added.
    pub added: i64,
    /// Keys this run removed.
    pub removed: i64,
    /// The type of the keys (`string` or `int`).
    pub key_type: String,
    /// When it was committed (microseconds).
    pub committed_at: i64,
    /// The name of its membership files (see [`crate::membership::MembershipFiles`]).
    pub files: String,
}

/// What a finished attempt measured.
#[derive(Debug, Clone, Default)]
pub struct AttemptOutcome {
    /// `succeeded`, `failed` or `cancelled`.
    pub outcome: String,
    /// The failure class, if failed.
    pub error_class: Option<String>,
    /// The failure, in words.
    pub error_message: Option<String>,
    /// Peak pool memory.
    pub peak_memory_bytes: Option<i64>,
    /// Wall time of the execution.
    pub elapsed_micros: Option<i64>,
    /// Rows read from sources.
    pub rows_scanned: Option<i64>,
    /// Bytes read from sources.
    pub bytes_scanned: Option<i64>,
    /// Spills to disk.
    pub spill_count: Option<i64>,
    /// `single` or `phased`.
    pub plan_mode: Option<String>,
    /// The plan's shape: objects, joins, related predicates, max hops.
    pub shape: Option<[i64; 4]>,
    /// The phases of a phased plan, as JSON.
    pub phases: Option<String>,
    /// What the data probe found in a failed attempt's data, as JSON findings.
    pub data_quality: Option<String>,
}

/// One attempt of a job, as stored.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    /// 1 for the first.
    pub attempt: i64,
    /// Started (microseconds).
    pub started_at: i64,
    /// Ended (microseconds).
    pub finished_at: Option<i64>,
    /// `succeeded`, `failed`, `cancelled` or `interrupted`.
    pub outcome: Option<String>,
    /// The failure class.
    pub error_class: Option<String>,
    /// The failure, in words.
    pub error_message: Option<String>,
    /// The memory it ran under.
    pub grant_bytes: i64,
    /// Its peak pool memory.
    pub peak_memory_bytes: Option<i64>,
    /// Its execution time.
    pub elapsed_micros: Option<i64>,
    /// `single` or `phased`.
    pub plan_mode: Option<String>,
    /// The phases of a phased plan, as JSON.
    pub phases: Option<String>,
    /// The job whose execution answered this attempt (it rode on it), if not its own.
    pub rode_on: Option<String>,
    /// Rows its scans read (on Ballista: summed over the cluster's tasks).
    pub rows_scanned: Option<i64>,
    /// Bytes its scans read.
    pub bytes_scanned: Option<i64>,
}

/// A segment's schedule state after a step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleStep {
    /// The next due time not yet handled.
    pub next_due_at: Option<i64>,
    /// The due run held for `buffer_one`.
    pub buffered_due_at: Option<i64>,
    /// Due runs skipped as missed (added to the count).
    pub missed: i64,
    /// Due runs skipped for overlap (added to the count).
    pub overlapped: i64,
}

/// What a successful run commits, atomically.
#[derive(Debug, Clone)]
pub struct Commit<'a> {
    /// The job (run) id.
    pub job_id: &'a str,
    /// Its tenant.
    pub tenant_id: &'a str,
    /// Its segment.
    pub segment_id: &'a str,
    /// The latest run the diff was computed against.
    pub previous_run_id: &'a str,
    /// Members found.
    pub members: i64,
    /// Keys added since the previous run.
    pub added: i64,
    /// Keys removed since the previous run.
    pub removed: i64,
    /// `string` or `int`.
    pub key_type: &'a str,
    /// The attempt that found the members: the job's attempt count when it started.
    pub attempt: i64,
    /// The process that holds the job's lease for that attempt.
    pub owner: &'a str,
    /// The name of the files the attempt wrote (they become the run's by the commit).
    pub files: &'a str,
}

/// The attempt of a job a process runs: what its transitions out of `running` are
/// conditioned on, besides the status (a lease that ran out, the job queued again and started
/// by another process or by this one, leaves an attempt that can no longer move the job).
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    /// The process holding the lease.
    pub owner: &'a str,
    /// The job's attempt count when this attempt started.
    pub attempt: i64,
}

/// How a membership commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitResult {
    /// Committed: the segment's latest members are this run's.
    Committed,
    /// Another run became the latest since the diff was computed: compute it again against
    /// this run id.
    LatestMoved(String),
    /// The job is no longer running (cancelled, or recovered by a restart): nothing committed.
    NotRunning,
    /// The job runs, but not this attempt of this process (its lease ran out and the job was
    /// queued and started again): nothing committed.
    Superseded,
    /// This run was committed before (a re-run after a crash): nothing committed again.
    AlreadyCommitted,
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

    /// A write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`): a
    /// deferred transaction that reads and then writes fails at once, without waiting, when
    /// another connection wrote in between.
    /// The connection pool (for the alert tables' queries in `alerts.rs`).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A write transaction (`BEGIN IMMEDIATE` on SQLite).
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        self.begin().await
    }

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

    // ---- tenants and tokens

    /// Creates a tenant with its first token; `Conflict` if the id is taken.
    pub async fn create_tenant(&self, tenant: &Tenant, token_hash: &str) -> Result<()> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let exists = sqlx::query("SELECT id FROM tenants WHERE id = $1").bind(&tenant.id).fetch_optional(&mut *tx).await?;
        if exists.is_some() {
            return Err(Error::Conflict(format!("tenant {:?} already exists", tenant.id)));
        }
        sqlx::query(
            "INSERT INTO tenants (id, region, data_root, max_concurrent_jobs, memory_quota_bytes, jobs_per_minute, share, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&tenant.id)
        .bind(&tenant.region)
        .bind(&tenant.data_root)
        .bind(tenant.max_concurrent_jobs)
        .bind(tenant.memory_quota_bytes)
        .bind(tenant.jobs_per_minute)
        .bind(tenant.share)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO tokens (hash, tenant_id, created_at) VALUES ($1, $2, $3)")
            .bind(token_hash)
            .bind(&tenant.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The store, remembering tokens found for `ttl` at most (a token revoked by another
    /// process is refused here after that).
    pub fn with_token_ttl(mut self, ttl: Duration) -> Store {
        self.token_ttl = ttl;
        self
    }

    /// A tenant's tokens (by id, never the token), oldest first.
    pub async fn tokens(&self, tenant_id: &str) -> Result<Vec<TokenRow>> {
        let rows =
            sqlx::query("SELECT hash, created_at FROM tokens WHERE tenant_id = $1 ORDER BY created_at, hash").bind(tenant_id).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(TokenRow { id: token_id(&r.try_get::<String, _>(0)?), created_at: r.try_get(1)? })).collect()
    }

    /// Revokes a tenant's token by its id; `false` if the tenant has no such token. This
    /// process refuses it from now on.
    pub async fn revoke_token(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let Some(prefix) = id.strip_prefix(TOKEN_ID_PREFIX).filter(|p| p.len() == TOKEN_ID_HEX && p.bytes().all(|b| b.is_ascii_hexdigit())) else {
            return Ok(false);
        };
        let prefix = prefix.to_ascii_lowercase();
        let rows = sqlx::query("SELECT hash FROM tokens WHERE tenant_id = $1").bind(tenant_id).fetch_all(&self.pool).await?;
        let mut revoked = false;
        for r in rows {
            let hash: String = r.try_get(0)?;
            if !hash.starts_with(&prefix) {
                continue;
            }
            let deleted = sqlx::query("DELETE FROM tokens WHERE hash = $1 AND tenant_id = $2").bind(&hash).bind(tenant_id).execute(&self.pool).await?;
            self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&hash);
            revoked |= deleted.rows_affected() > 0;
        }
        Ok(revoked)
    }

    /// Adds a token to a tenant.
    pub async fn add_token(&self, tenant_id: &str, token_hash: &str) -> Result<()> {
        sqlx::query("INSERT INTO tokens (hash, tenant_id, created_at) VALUES ($1, $2, $3)")
            .bind(token_hash)
            .bind(tenant_id)
            .bind(now_micros())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The tenant a token hash belongs to.
    pub async fn tenant_for_token(&self, token_hash: &str) -> Result<Option<String>> {
        if let Some((tenant, read)) = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(token_hash) {
            if read.elapsed() < self.token_ttl {
                return Ok(Some(tenant.clone()));
            }
        }
        let row = sqlx::query("SELECT tenant_id FROM tokens WHERE hash = $1").bind(token_hash).fetch_optional(&self.pool).await?;
        let tenant = row.map(|r| r.try_get::<String, _>(0)).transpose()?;
        if let Some(t) = &tenant {
            let mut tokens = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if tokens.len() >= TOKENS_KEPT {
                tokens.clear();
            }
            tokens.insert(token_hash.to_string(), (t.clone(), std::time::Instant::now()));
        } else {
            self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(token_hash);
        }
        Ok(tenant)
    }

    // ---- dashboard sessions

    /// Records a dashboard session by the hash of its id, until `expires_at`; sessions
    /// already over are deleted.
    pub async fn create_session(&self, hash: &str, expires_at: i64) -> Result<()> {
        let now = now_micros();
        sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
        sqlx::query("INSERT INTO ui_sessions (hash, created_at, expires_at) VALUES ($1, $2, $3)")
            .bind(hash)
            .bind(now)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether a session (by the hash of its id) exists and has not ended.
    pub async fn session_live(&self, hash: &str) -> Result<bool> {
        let row = sqlx::query("SELECT expires_at FROM ui_sessions WHERE hash = $1").bind(hash).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>(0)? > now_micros(),
            None => false,
        })
    }

    /// Ends a session.
    pub async fn end_session(&self, hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM ui_sessions WHERE hash = $1").bind(hash).execute(&self.pool).await?;
        Ok(())
    }

    /// One tenant.
    pub async fn tenant(&self, id: &str) -> Result<Option<Tenant>> {
        let row = sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.map(|r| tenant_from_row(&r)).transpose()
    }

    /// Tenants ordered by id, after `after`.
    pub async fn tenants(&self, after: &str, limit: i64) -> Result<Vec<Tenant>> {
        let rows = sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id > $1 ORDER BY id LIMIT $2"))
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    // ---- models

    /// Replaces a tenant's model; returns its new version.
    pub async fn put_model(&self, tenant_id: &str, definition: &str, objects: i64, relationships: i64, source_bytes: i64) -> Result<i64> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let current = sqlx::query("SELECT version FROM models WHERE tenant_id = $1").bind(tenant_id).fetch_optional(&mut *tx).await?;
        let version = match current {
            Some(row) => {
                let version = row.try_get::<i64, _>(0)? + 1;
                sqlx::query(
                    "UPDATE models SET version = $1, definition = $2, objects = $3, relationships = $4, source_bytes = $5, updated_at = $6 \
                     WHERE tenant_id = $7",
                )
                .bind(version)
                .bind(definition)
                .bind(objects)
                .bind(relationships)
                .bind(source_bytes)
                .bind(now)
                .bind(tenant_id)
                .execute(&mut *tx)
                .await?;
                version
            }
            None => {
                sqlx::query(
                    "INSERT INTO models (tenant_id, version, definition, objects, relationships, source_bytes, updated_at) \
                     VALUES ($1, 1, $2, $3, $4, $5, $6)",
                )
                .bind(tenant_id)
                .bind(definition)
                .bind(objects)
                .bind(relationships)
                .bind(source_bytes)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                1
            }
        };
        tx.commit().await?;
        self.models.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(tenant_id);
        Ok(version)
    }

    /// A tenant and one of its segments, in one query: `None` without the tenant, the
    /// segment `None` without it.
    pub async fn tenant_and_segment(&self, tenant_id: &str, segment_id: &str) -> Result<Option<(Tenant, Option<SegmentRow>)>> {
        let columns = |table: &str, list: &str| list.split(',').map(|c| format!("{table}.{}", c.trim())).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT {}, {} FROM tenants t LEFT JOIN segments s ON s.tenant_id = t.id AND s.id = $2 WHERE t.id = $1",
            columns("t", TENANT_COLUMNS),
            columns("s", SEGMENT_COLUMNS)
        );
        let Some(row) = sqlx::query(&sql).bind(tenant_id).bind(segment_id).fetch_optional(&self.pool).await? else { return Ok(None) };
        let tenant = tenant_from_row(&row)?;
        let at = TENANT_COLUMNS.split(',').count();
        let found: Option<String> = row.try_get(at + 1)?;
        let segment = found.map(|_| segment_from_row_at(&row, at)).transpose()?;
        Ok(Some((tenant, segment)))
    }

    /// The tenant's model as read at most [`MODEL_MAX_AGE`] ago (this process's own changes
    /// at once): for sizing submissions, not for running them.
    pub async fn recent_model(&self, tenant_id: &str) -> Result<Option<Arc<ModelRow>>> {
        let cached = self
            .models
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(tenant_id)
            .filter(|(at, _)| at.elapsed() < MODEL_MAX_AGE)
            .map(|(_, row)| Arc::clone(row));
        if cached.is_some() {
            return Ok(cached);
        }
        let Some(row) = self.model(tenant_id).await? else { return Ok(None) };
        let row = Arc::new(row);
        let mut models = self.models.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if models.len() >= TOKENS_KEPT {
            models.retain(|_, (at, _)| at.elapsed() < MODEL_MAX_AGE);
        }
        models.insert(tenant_id.to_string(), (std::time::Instant::now(), Arc::clone(&row)));
        Ok(Some(row))
    }

    /// A tenant's model.
    pub async fn model(&self, tenant_id: &str) -> Result<Option<ModelRow>> {
        let row = sqlx::query("SELECT version, definition, objects, relationships, source_bytes, updated_at FROM models WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(ModelRow {
                version: r.try_get(0)?,
                definition: r.try_get(1)?,
                objects: r.try_get(2)?,
                relationships: r.try_get(3)?,
                source_bytes: r.try_get(4)?,
                updated_at: r.try_get(5)?,
            })
        })
        .transpose()
    }

    // ---- segments

    /// Creates or replaces a segment's definition and schedule; true when created. The
    /// schedule's next due time is `row.next_due_at` when the schedule is new or changed; an
    /// unchanged schedule keeps its place (a due run is neither skipped nor repeated).
    pub async fn put_segment(&self, row: &SegmentRow) -> Result<bool> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let existing = sqlx::query("SELECT schedule, timezone, next_due_at FROM segments WHERE tenant_id = $1 AND id = $2")
            .bind(&row.tenant_id)
            .bind(&row.id)
            .fetch_optional(&mut *tx)
            .await?;
        let exists = existing.is_some();
        if let Some(existing) = existing {
            let (schedule, timezone, next_due): (Option<String>, String, Option<i64>) = (existing.try_get(0)?, existing.try_get(1)?, existing.try_get(2)?);
            // A schedule with no next due time (stored before schedules ran, or past its
            // last due time) takes the one computed now.
            let same_schedule = schedule == row.schedule && timezone == row.timezone && next_due.is_some();
            sqlx::query(
                "UPDATE segments SET definition = $1, schedule = $2, timezone = $3, overlap = $4, updated_at = $5 \
                 WHERE tenant_id = $6 AND id = $7",
            )
            .bind(&row.definition)
            .bind(&row.schedule)
            .bind(&row.timezone)
            .bind(&row.overlap)
            .bind(now)
            .bind(&row.tenant_id)
            .bind(&row.id)
            .execute(&mut *tx)
            .await?;
            if !same_schedule {
                sqlx::query("UPDATE segments SET next_due_at = $1, buffered_due_at = NULL WHERE tenant_id = $2 AND id = $3")
                    .bind(row.next_due_at)
                    .bind(&row.tenant_id)
                    .bind(&row.id)
                    .execute(&mut *tx)
                    .await?;
            }
        } else {
            sqlx::query(
                "INSERT INTO segments (tenant_id, id, definition, schedule, timezone, overlap, latest_run_id, members, created_at, \
                 updated_at, next_due_at) VALUES ($1, $2, $3, $4, $5, $6, '', 0, $7, $7, $8)",
            )
            .bind(&row.tenant_id)
            .bind(&row.id)
            .bind(&row.definition)
            .bind(&row.schedule)
            .bind(&row.timezone)
            .bind(&row.overlap)
            .bind(now)
            .bind(row.next_due_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(!exists)
    }

    /// One segment.
    pub async fn segment(&self, tenant_id: &str, id: &str) -> Result<Option<SegmentRow>> {
        let row = sqlx::query(&format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| segment_from_row(&r)).transpose()
    }

    /// A tenant's segments ordered by id, after `after`.
    pub async fn segments(&self, tenant_id: &str, after: &str, limit: i64) -> Result<Vec<SegmentRow>> {
        let rows = sqlx::query(&format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"))
            .bind(tenant_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(segment_from_row).collect()
    }

    /// Deletes a segment; false if there was none.
    pub async fn delete_segment(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM segments WHERE tenant_id = $1 AND id = $2").bind(tenant_id).bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- jobs

    /// Queues a job. With an idempotency key already used by this tenant, returns the first
    /// job instead (and `false`).
    pub async fn insert_job(&self, job: &JobRow) -> Result<(JobRow, bool)> {
        if job.idempotency_key.is_none() {
            // Without a key nothing can conflict: the job joins the next group commit.
            let (sender, answer) = tokio::sync::oneshot::channel();
            let flush = {
                let mut queue = self.inserts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                queue.pending.push((job.clone(), sender));
                !std::mem::replace(&mut queue.flushing, true)
            };
            if flush {
                let store = self.clone();
                tokio::spawn(async move { store.flush_inserts().await });
            }
            answer.await.map_err(|_| Error::Internal("the job's insert was dropped".into()))??;
            let mut job = job.clone();
            job.status = JobStatus::Queued;
            return Ok((job, true));
        }
        if let Some(key) = &job.idempotency_key {
            if let Some(existing) = self.job_by_key(&job.tenant_id, key).await? {
                return Ok((existing, false));
            }
        }
        let mut tx = self.begin().await?;
        let inserted = insert_queued_job(&mut tx, job).await;
        match inserted {
            Ok(_) => {}
            // Two submissions with the same key raced: the other one won.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() && job.idempotency_key.is_some() => {
                drop(tx);
                let key = job.idempotency_key.as_deref().unwrap_or_default();
                let existing = self.job_by_key(&job.tenant_id, key).await?;
                return existing.map(|j| (j, false)).ok_or_else(|| Error::Internal("idempotency key conflict without a job".into()));
            }
            Err(e) => return Err(e.into()),
        }
        insert_event(&mut tx, &job.id, job.created_at, "", JobStatus::Queued.as_str(), "submitted").await?;
        tx.commit().await?;
        let mut job = job.clone();
        job.status = JobStatus::Queued;
        Ok((job, true))
    }

    /// Inserts the jobs waiting for a group commit, a batch per transaction, until none is
    /// left. A batch that fails is inserted one job at a time, so that each job gets its own
    /// answer.
    async fn flush_inserts(&self) {
        loop {
            let batch: Vec<PendingInsert> = {
                let mut queue = self.inserts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if queue.pending.is_empty() {
                    queue.flushing = false;
                    return;
                }
                let n = queue.pending.len().min(INSERTS_PER_COMMIT);
                queue.pending.drain(..n).collect()
            };
            match self.insert_batch(batch.iter().map(|(job, _)| job)).await {
                Ok(()) => {
                    for (_, sender) in batch {
                        let _ = sender.send(Ok(()));
                    }
                }
                Err(_) if batch.len() > 1 => {
                    for (job, sender) in batch {
                        let _ = sender.send(self.insert_batch(std::iter::once(&job)).await);
                    }
                }
                Err(e) => {
                    if let Some((_, sender)) = batch.into_iter().next() {
                        let _ = sender.send(Err(e));
                    }
                }
            }
        }
    }

    /// Queued jobs (without idempotency keys), their estimates and first events, in one
    /// transaction. On PostgreSQL three statements per [`ROWS_PER_STATEMENT`] jobs (each
    /// statement is a round trip to the server); on SQLite a few cached statements per job
    /// (a statement in the same process costs less than preparing one of many rows).
    async fn insert_batch(&self, jobs: impl Iterator<Item = &JobRow>) -> Result<()> {
        let jobs: Vec<&JobRow> = jobs.collect();
        let mut tx = self.begin().await?;
        if self.backend == Backend::Sqlite {
            for job in jobs {
                insert_queued_job(&mut tx, job).await?;
                insert_event(&mut tx, &job.id, job.created_at, "", JobStatus::Queued.as_str(), "submitted").await?;
            }
            tx.commit().await?;
            return Ok(());
        }
        for chunk in jobs.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO jobs (id, tenant_id, segment_id, status, idempotency_key, trigger_kind, as_of, grant_bytes, created_at, \
                 updated_at, expected_micros, deadline_micros, due_at, trace_link, backend, attempts) VALUES {}",
                rows_of(15, chunk.len(), ", 0")
            );
            let mut query = sqlx::query(&sql);
            for job in chunk {
                query = query
                    .bind(job.id.as_str())
                    .bind(job.tenant_id.as_str())
                    .bind(job.segment_id.as_str())
                    .bind(JobStatus::Queued.as_str())
                    .bind(job.idempotency_key.as_deref())
                    .bind(job.trigger.as_str())
                    .bind(job.as_of)
                    .bind(job.grant_bytes)
                    .bind(job.created_at)
                    .bind(job.created_at)
                    .bind(job.expected_micros)
                    .bind(job.deadline_micros)
                    .bind(job.due_at)
                    .bind(job.trace_link.as_deref())
                    .bind(job.backend.as_str());
            }
            query.execute(&mut *tx).await?;
            let estimated: Vec<(&JobRow, &JobEstimate)> = chunk.iter().filter_map(|j| j.estimate.as_ref().map(|e| (*j, e))).collect();
            if !estimated.is_empty() {
                let sql = format!(
                    "INSERT INTO job_estimates (job_id, tenant_id, segment_id, created_at, features, model_version, basis, memory_bytes, \
                     bound_bytes, runtime_micros) VALUES {}",
                    rows_of(10, estimated.len(), "")
                );
                let mut query = sqlx::query(&sql);
                for (job, e) in &estimated {
                    query = query
                        .bind(job.id.as_str())
                        .bind(job.tenant_id.as_str())
                        .bind(job.segment_id.as_str())
                        .bind(job.created_at)
                        .bind(e.features.as_str())
                        .bind(e.model_version)
                        .bind(e.basis.as_str())
                        .bind(e.memory_bytes)
                        .bind(e.bound_bytes)
                        .bind(e.runtime_micros);
                }
                query.execute(&mut *tx).await?;
            }
            let sql = format!("INSERT INTO job_events (job_id, at, detail, from_status, to_status) VALUES {}", rows_of(3, chunk.len(), ", '', 'queued'"));
            let mut query = sqlx::query(&sql);
            for job in chunk {
                query = query.bind(job.id.as_str()).bind(job.created_at).bind("submitted");
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn job_by_key(&self, tenant_id: &str, key: &str) -> Result<Option<JobRow>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2"))
            .bind(tenant_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    /// One job of a tenant.
    pub async fn job(&self, tenant_id: &str, id: &str) -> Result<Option<JobRow>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    /// A segment's jobs, newest first, before `before` (a job id; '' for the newest).
    pub async fn jobs_of_segment(&self, tenant_id: &str, segment_id: &str, before: &str, limit: i64) -> Result<Vec<JobRow>> {
        let before = newest_first(before);
        let rows = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND segment_id = $2 AND id < $3 ORDER BY id DESC LIMIT $4"))
            .bind(tenant_id)
            .bind(segment_id)
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Queued jobs, oldest first.
    pub async fn queued_jobs(&self, limit: i64) -> Result<Vec<JobRow>> {
        let rows = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE status = $1 ORDER BY id LIMIT $2"))
            .bind(JobStatus::Queued.as_str())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Counts of jobs by status.
    pub async fn job_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?))).collect()
    }

    /// Jobs waiting (queued or waiting to retry), by their tenant's region: every region that
    /// has a tenant, 0 where none wait.
    pub async fn queue_depth_by_region(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT t.region, COUNT(j.id) FROM tenants t \
             LEFT JOIN jobs j ON j.tenant_id = t.id AND j.status IN ('queued', 'retrying') \
             GROUP BY t.region ORDER BY t.region",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?))).collect()
    }

    /// Moves a job from `from` to `to` if it is still in `from`; false if it was not.
    /// Starting to run counts an attempt; a final state records its time, error and counts.
    pub async fn transition(&self, job_id: &str, from: JobStatus, to: JobStatus, detail: &str, failure: Option<(&str, &str)>) -> Result<bool> {
        self.transition_fenced(job_id, from, to, detail, failure, None).await
    }

    /// Moves a running job to `to` for the attempt `fence` runs, if the job is still running
    /// that attempt under that process's lease; false if not (the job moved on, or its lease
    /// ran out and another attempt runs it).
    pub async fn end_attempt(&self, job_id: &str, fence: Fence<'_>, to: JobStatus, detail: &str, failure: Option<(&str, &str)>) -> Result<bool> {
        self.transition_fenced(job_id, JobStatus::Running, to, detail, failure, Some(fence)).await
    }

    async fn transition_fenced(
        &self,
        job_id: &str,
        from: JobStatus,
        to: JobStatus,
        detail: &str,
        failure: Option<(&str, &str)>,
        fence: Option<Fence<'_>>,
    ) -> Result<bool> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let (set, next) = if to == JobStatus::Running {
            (", started_at = $2, attempts = attempts + 1", 3)
        } else if to.is_final() {
            (", finished_at = $2, error_class = $3, error_message = $4", 5)
        } else {
            ("", 3)
        };
        let fenced = if fence.is_some() { format!(" AND lease_owner = ${} AND attempts = ${}", next + 2, next + 3) } else { String::new() };
        let sql = format!("UPDATE jobs SET status = $1, updated_at = $2{set} WHERE id = ${next} AND status = ${}{fenced}", next + 1);
        let mut query = sqlx::query(&sql).bind(to.as_str()).bind(now);
        if to.is_final() {
            query = query.bind(failure.map(|f| f.0.to_string())).bind(failure.map(|f| f.1.to_string()));
        }
        query = query.bind(job_id).bind(from.as_str());
        if let Some(fence) = fence {
            query = query.bind(fence.owner).bind(fence.attempt);
        }
        let done = query.execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_event(&mut tx, job_id, now, from.as_str(), to.as_str(), detail).await?;
        if to.is_final() {
            settle_estimate(&mut tx, job_id, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Admits a queued job for process `owner`, its claim holding until `until`; false if
    /// it was no longer queued.
    pub async fn admit(&self, job_id: &str, owner: &str, until: i64, detail: &str) -> Result<bool> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE jobs SET status = $1, updated_at = $2, lease_owner = $3, lease_until = $4 WHERE id = $5 AND status = $6")
            .bind(JobStatus::Admitted.as_str())
            .bind(now)
            .bind(owner)
            .bind(until)
            .bind(job_id)
            .bind(JobStatus::Queued.as_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_event(&mut tx, job_id, now, JobStatus::Queued.as_str(), JobStatus::Admitted.as_str(), detail).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Extends `owner`'s claims on these jobs (those it still holds) to `until`.
    pub async fn renew_leases(&self, owner: &str, ids: &[String], until: i64) -> Result<()> {
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE jobs SET lease_until = $1 WHERE lease_owner = $2 AND status IN ('admitted', 'running') AND id IN ({})",
                placeholders(3, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(until).bind(owner);
            for id in chunk {
                query = query.bind(id.as_str());
            }
            query.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Jobs admitted or running whose claim ran out at `now` (or that `owner`, a process's
    /// previous life, held; or that no claim covers), other than `except`'s: queued again,
    /// each with a recorded transition. Returns their ids.
    pub async fn requeue_expired(&self, now: i64, owner: Option<&str>, except: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id, status, lease_owner FROM jobs WHERE status IN ('admitted', 'running')              AND (lease_until IS NULL OR lease_until < $1 OR lease_owner = $2) AND (lease_owner IS NULL OR lease_owner <> $3)",
        )
        .bind(now)
        .bind(owner.unwrap_or(""))
        .bind(except)
        .fetch_all(&self.pool)
        .await?;
        let mut requeued = Vec::new();
        for row in rows {
            let (id, status, held_by): (String, String, Option<String>) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let from = if status == JobStatus::Running.as_str() { JobStatus::Running } else { JobStatus::Admitted };
            let detail = match held_by {
                Some(p) if Some(p.as_str()) == owner => format!("recovered at start: this process ({p}) stopped while it ran"),
                Some(p) => format!("recovered: the lease of process {p} ran out"),
                None => "recovered: no process held it".to_string(),
            };
            if self.transition(&id, from, JobStatus::Queued, &detail, None).await? {
                requeued.push(id);
            }
        }
        Ok(requeued)
    }

    /// Jobs left admitted or running by a process that stopped: queued again, each with a
    /// recorded transition. Returns how many.
    pub async fn requeue_unfinished(&self, detail: &str) -> Result<u64> {
        let mut total = 0;
        for from in [JobStatus::Admitted, JobStatus::Running] {
            let rows = sqlx::query("SELECT id FROM jobs WHERE status = $1").bind(from.as_str()).fetch_all(&self.pool).await?;
            for row in rows {
                let id: String = row.try_get(0)?;
                if self.transition(&id, from, JobStatus::Queued, detail, None).await? {
                    total += 1;
                }
            }
        }
        Ok(total)
    }

    /// A failed attempt that will be retried: `running → retrying`, with the failure, the
    /// time it may be queued again and the grant of the next attempt.
    /// Only the attempt `fence` runs moves the job.
    pub async fn retry(&self, job_id: &str, fence: Fence<'_>, failure: (&str, &str), not_before: i64, grant_bytes: i64, detail: &str) -> Result<bool> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE jobs SET status = $1, updated_at = $2, error_class = $3, error_message = $4, not_before = $5, grant_bytes = $6 \
             WHERE id = $7 AND status = $8 AND lease_owner = $9 AND attempts = $10",
        )
        .bind(JobStatus::Retrying.as_str())
        .bind(now)
        .bind(failure.0)
        .bind(failure.1)
        .bind(not_before)
        .bind(grant_bytes)
        .bind(job_id)
        .bind(JobStatus::Running.as_str())
        .bind(fence.owner)
        .bind(fence.attempt)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_event(&mut tx, job_id, now, JobStatus::Running.as_str(), JobStatus::Retrying.as_str(), detail).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Retrying jobs whose wait is over at `now`, oldest first.
    pub async fn due_retries(&self, now: i64, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM jobs WHERE status = $1 AND not_before <= $2 ORDER BY not_before, id LIMIT $3")
            .bind(JobStatus::Retrying.as_str())
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// The earliest time a retrying job may be queued again.
    pub async fn next_retry_at(&self) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MIN(not_before) FROM jobs WHERE status = $1").bind(JobStatus::Retrying.as_str()).fetch_one(&self.pool).await?;
        Ok(row.try_get::<Option<i64>, _>(0)?)
    }

    /// Queued jobs with ids after `after`, oldest first.
    pub async fn queued_after(&self, after: &str, limit: i64) -> Result<Vec<JobRow>> {
        let rows = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE status = $1 AND id > $2 ORDER BY id LIMIT $3"))
            .bind(JobStatus::Queued.as_str())
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// A job by id alone (for the pool, which serves every tenant).
    pub async fn job_by_id(&self, id: &str) -> Result<Option<JobRow>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    /// How many of a job's attempts failed with one of `classes`.
    pub async fn failed_attempts(&self, job_id: &str, classes: &[&str]) -> Result<i64> {
        let rows = sqlx::query("SELECT error_class FROM attempts WHERE job_id = $1 AND outcome = 'failed'").bind(job_id).fetch_all(&self.pool).await?;
        let mut n = 0;
        for r in rows {
            let class: Option<String> = r.try_get(0)?;
            if class.is_some_and(|c| classes.contains(&c.as_str())) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The attempts of a job, in order.
    pub async fn attempts(&self, job_id: &str) -> Result<Vec<AttemptRow>> {
        let rows = sqlx::query(
            "SELECT attempt, started_at, finished_at, outcome, error_class, error_message, grant_bytes, peak_memory_bytes, \
             elapsed_micros, plan_mode, phases, rode_on, rows_scanned, bytes_scanned FROM attempts WHERE job_id = $1 ORDER BY attempt",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRow {
                    attempt: r.try_get(0)?,
                    started_at: r.try_get(1)?,
                    finished_at: r.try_get(2)?,
                    outcome: r.try_get(3)?,
                    error_class: r.try_get(4)?,
                    error_message: r.try_get(5)?,
                    grant_bytes: r.try_get(6)?,
                    peak_memory_bytes: r.try_get(7)?,
                    elapsed_micros: r.try_get(8)?,
                    plan_mode: r.try_get(9)?,
                    phases: r.try_get(10)?,
                    rode_on: r.try_get(11)?,
                    rows_scanned: r.try_get(12)?,
                    bytes_scanned: r.try_get(13)?,
                })
            })
            .collect()
    }

    // ---- schedules

    /// Scheduled segments due at `now` (next due time reached), earliest first.
    pub async fn due_segments(&self, now: i64, limit: i64) -> Result<Vec<SegmentRow>> {
        let rows = sqlx::query(&format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE next_due_at <= $1 ORDER BY next_due_at, tenant_id, id LIMIT $2"))
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(segment_from_row).collect()
    }

    /// Segments holding a buffered due run.
    pub async fn buffered_segments(&self, limit: i64) -> Result<Vec<SegmentRow>> {
        let rows = sqlx::query(&format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE buffered_due_at IS NOT NULL ORDER BY buffered_due_at LIMIT $1"))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(segment_from_row).collect()
    }

    /// Scheduled segments without a next due time: stored before schedules ran, or past
    /// their last due time.
    pub async fn schedules_without_due(&self, limit: i64) -> Result<Vec<SegmentRow>> {
        let rows = sqlx::query(&format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE schedule IS NOT NULL AND next_due_at IS NULL LIMIT $1"))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(segment_from_row).collect()
    }

    /// Sets a schedule's next due time if it has none.
    pub async fn set_first_due(&self, tenant_id: &str, segment_id: &str, next_due_at: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE segments SET next_due_at = $1 WHERE tenant_id = $2 AND id = $3 AND next_due_at IS NULL")
            .bind(next_due_at)
            .bind(tenant_id)
            .bind(segment_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The earliest next due time of any schedule.
    pub async fn next_due_at(&self) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MIN(next_due_at) FROM segments").fetch_one(&self.pool).await?;
        Ok(row.try_get::<Option<i64>, _>(0)?)
    }

    /// Whether a run of the segment is queued, admitted, running or retrying.
    pub async fn has_active_job(&self, tenant_id: &str, segment_id: &str) -> Result<bool> {
        let row = sqlx::query("SELECT id FROM jobs WHERE tenant_id = $1 AND segment_id = $2 AND status IN ($3, $4, $5, $6) LIMIT 1")
            .bind(tenant_id)
            .bind(segment_id)
            .bind(JobStatus::Queued.as_str())
            .bind(JobStatus::Admitted.as_str())
            .bind(JobStatus::Running.as_str())
            .bind(JobStatus::Retrying.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Applies one schedule step in one transaction, if the segment's schedule state is still
    /// `seen` (its next due time and buffered run as read): the new state, the skipped counts,
    /// and the job to enqueue. False (and nothing written) if another process or tick moved it
    /// first: this is what makes a due run enqueued once.
    pub async fn schedule_step(&self, seen: &SegmentRow, step: &ScheduleStep, job: Option<&JobRow>) -> Result<bool> {
        let mut tx = self.begin().await?;
        let moved = sqlx::query(
            "UPDATE segments SET next_due_at = $1, buffered_due_at = $2, missed_runs = missed_runs + $3, \
             overlapped_runs = overlapped_runs + $4 WHERE tenant_id = $5 AND id = $6 \
             AND COALESCE(next_due_at, -1) = $7 AND COALESCE(buffered_due_at, -1) = $8",
        )
        .bind(step.next_due_at)
        .bind(step.buffered_due_at)
        .bind(step.missed)
        .bind(step.overlapped)
        .bind(&seen.tenant_id)
        .bind(&seen.id)
        .bind(seen.next_due_at.unwrap_or(-1))
        .bind(seen.buffered_due_at.unwrap_or(-1))
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(job) = job {
            insert_queued_job(&mut tx, job).await?;
            insert_event(&mut tx, &job.id, job.created_at, "", JobStatus::Queued.as_str(), "enqueued by the schedule").await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Due runs skipped so far, over all segments: (missed while down, overlapped). (SUM of a
    /// BIGINT is NUMERIC on PostgreSQL, which the `Any` driver cannot read: cast back.)
    pub async fn skipped_runs(&self) -> Result<(i64, i64)> {
        let row = sqlx::query("SELECT CAST(COALESCE(SUM(missed_runs), 0) AS BIGINT), CAST(COALESCE(SUM(overlapped_runs), 0) AS BIGINT) FROM segments")
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// The transitions of a job, oldest first: (time, from, to, detail).
    pub async fn job_events(&self, job_id: &str) -> Result<Vec<(i64, String, String, String)>> {
        let rows = sqlx::query("SELECT at, from_status, to_status, detail FROM job_events WHERE job_id = $1 ORDER BY at, to_status")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))).collect()
    }

    // ---- attempts

    /// Moves a job admitted for process `owner` to running and records the start of its next
    /// attempt under `grant_bytes`, in one transaction. Returns the attempt's number (the
    /// job's attempt count now, what its commit is conditioned on); `None` if the job was no
    /// longer admitted for `owner`.
    pub async fn start_running(&self, job_id: &str, owner: &str, grant_bytes: i64) -> Result<Option<i64>> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let started = sqlx::query(
            "UPDATE jobs SET status = $1, updated_at = $2, started_at = $2, attempts = attempts + 1 \
             WHERE id = $3 AND status = $4 AND lease_owner = $5 RETURNING attempts",
        )
        .bind(JobStatus::Running.as_str())
        .bind(now)
        .bind(job_id)
        .bind(JobStatus::Admitted.as_str())
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(started) = started else {
            return Ok(None);
        };
        let attempt: i64 = started.try_get(0)?;
        insert_event(&mut tx, job_id, now, JobStatus::Admitted.as_str(), JobStatus::Running.as_str(), "started").await?;
        // A crash may have left this attempt's row behind: replace it.
        sqlx::query("DELETE FROM attempts WHERE job_id = $1 AND attempt = $2").bind(job_id).bind(attempt).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO attempts (job_id, attempt, started_at, grant_bytes) VALUES ($1, $2, $3, $4)")
            .bind(job_id)
            .bind(attempt)
            .bind(now)
            .bind(grant_bytes)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(attempt))
    }

    /// Records how attempt `attempt` of a job ended.
    pub async fn finish_attempt(&self, job_id: &str, attempt: i64, o: &AttemptOutcome) -> Result<()> {
        let shape = o.shape.unwrap_or_default();
        let has_shape = o.shape.is_some();
        sqlx::query(
            "UPDATE attempts SET finished_at = $1, outcome = $2, error_class = $3, error_message = $4, peak_memory_bytes = $5, \
             elapsed_micros = $6, rows_scanned = $7, bytes_scanned = $8, spill_count = $9, plan_mode = $10, objects = $11, \
             joins = $12, related_predicates = $13, max_hops = $14, phases = $15, data_quality = $16 WHERE job_id = $17 AND attempt = $18",
        )
        .bind(now_micros())
        .bind(&o.outcome)
        .bind(&o.error_class)
        .bind(&o.error_message)
        .bind(o.peak_memory_bytes)
        .bind(o.elapsed_micros)
        .bind(o.rows_scanned)
        .bind(o.bytes_scanned)
        .bind(o.spill_count)
        .bind(&o.plan_mode)
        .bind(has_shape.then_some(shape[0]))
        .bind(has_shape.then_some(shape[1]))
        .bind(has_shape.then_some(shape[2]))
        .bind(has_shape.then_some(shape[3]))
        .bind(&o.phases)
        .bind(&o.data_quality)
        .bind(job_id)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- membership runs

    /// Commits a successful run in one transaction: its history record (naming the files its
    /// attempt wrote), the segment's latest run and count, and the job's final state. Only
    /// the attempt `c.attempt` of the process `c.owner` holding the job's lease commits.
    pub async fn commit_run(&self, c: &Commit<'_>) -> Result<CommitResult> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let seen = sqlx::query("SELECT run_id FROM runs WHERE run_id = $1").bind(c.job_id).fetch_optional(&mut *tx).await?;
        if seen.is_some() {
            return Ok(CommitResult::AlreadyCommitted);
        }
        let fence = Fence { owner: c.owner, attempt: c.attempt };
        if let Some(refused) = fenced_out(&mut tx, c.job_id, fence).await? {
            return Ok(refused);
        }
        let latest = sqlx::query("SELECT latest_run_id FROM segments WHERE tenant_id = $1 AND id = $2")
            .bind(c.tenant_id)
            .bind(c.segment_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(latest) = latest else {
            return Err(Error::NotFound(format!("segment {:?} was deleted while it ran", c.segment_id)));
        };
        let latest: String = latest.try_get(0)?;
        if latest != c.previous_run_id {
            return Ok(CommitResult::LatestMoved(latest));
        }
        // The fence again, in the statement that ends the job: a process that queued the job
        // again meanwhile (PostgreSQL, read committed) makes this touch no row.
        let job = sqlx::query(
            "UPDATE jobs SET status = $1, updated_at = $2, finished_at = $2, members = $3, added = $4, removed = $5, \
             error_class = NULL, error_message = NULL WHERE id = $6 AND status = $7 AND lease_owner = $8 AND attempts = $9",
        )
        .bind(JobStatus::Succeeded.as_str())
        .bind(now)
        .bind(c.members)
        .bind(c.added)
        .bind(c.removed)
        .bind(c.job_id)
        .bind(JobStatus::Running.as_str())
        .bind(c.owner)
        .bind(c.attempt)
        .execute(&mut *tx)
        .await?;
        if job.rows_affected() == 0 {
            return Ok(fenced_out(&mut tx, c.job_id, fence).await?.unwrap_or(CommitResult::NotRunning));
        }
        insert_event(&mut tx, c.job_id, now, JobStatus::Running.as_str(), JobStatus::Succeeded.as_str(), "membership committed").await?;
        settle_estimate(&mut tx, c.job_id, now).await?;
        sqlx::query(
            "INSERT INTO runs (run_id, tenant_id, segment_id, previous_run_id, members, added, removed, key_type, committed_at, files) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(c.job_id)
        .bind(c.tenant_id)
        .bind(c.segment_id)
        .bind(c.previous_run_id)
        .bind(c.members)
        .bind(c.added)
        .bind(c.removed)
        .bind(c.key_type)
        .bind(now)
        .bind(c.files)
        .execute(&mut *tx)
        .await?;
        // Conditional on the latest run read above: a concurrent commit of the same segment
        // (PostgreSQL, read committed) makes this touch no row, and this commit starts over.
        let moved = sqlx::query("UPDATE segments SET latest_run_id = $1, members = $2 WHERE tenant_id = $3 AND id = $4 AND latest_run_id = $5")
            .bind(c.job_id)
            .bind(c.members)
            .bind(c.tenant_id)
            .bind(c.segment_id)
            .bind(c.previous_run_id)
            .execute(&mut *tx)
            .await?;
        if moved.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(CommitResult::LatestMoved(String::new()));
        }
        tx.commit().await?;
        Ok(CommitResult::Committed)
    }

    /// Commits the jobs that rode on run `leader` (committed, with `members` members, still
    /// its segment's latest): each one still queued moves through admitted and running to
    /// succeeded, with an attempt that names the leader, and a history record that added and
    /// removed nothing and names the leader's files, chained after the leader in the order of
    /// their ids; the last becomes the segment's latest run. One transaction. Returns the ids
    /// committed: none if the latest run moved meanwhile (they are still queued then), else
    /// those still queued; and the time they finished at.
    pub async fn commit_riders(&self, leader: &Commit<'_>, started_at: i64, riders: &[&str]) -> Result<(Vec<String>, i64)> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let mut moved = Vec::with_capacity(riders.len());
        // A few statements per 32 riders, not a few per rider.
        for chunk in riders.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE jobs SET status = $1, updated_at = $2, started_at = $3, finished_at = $2, attempts = attempts + 1, \
                 members = $4, added = 0, removed = 0, error_class = NULL, error_message = NULL \
                 WHERE status = $5 AND attempts = 0 AND tenant_id = $6 AND id IN ({}) RETURNING id",
                placeholders(7, chunk.len())
            );
            let mut update = sqlx::query(&sql)
                .bind(JobStatus::Succeeded.as_str())
                .bind(now)
                .bind(started_at)
                .bind(leader.members)
                .bind(JobStatus::Queued.as_str())
                .bind(leader.tenant_id);
            for id in chunk {
                update = update.bind(*id);
            }
            for row in update.fetch_all(&mut *tx).await? {
                moved.push(row.try_get::<String, _>(0)?);
            }
        }
        let Some(last) = moved.iter().max().cloned() else {
            return Ok((Vec::new(), now));
        };
        moved.sort_unstable();
        let admitted = format!("rides on job {}: same segment and as-of", leader.job_id);
        let succeeded = format!("membership committed (that of run {})", leader.job_id);
        let mut previous = leader.job_id.to_string();
        for chunk in moved.chunks(ROWS_PER_STATEMENT) {
            // They ran nothing: the estimator has nothing to learn from them.
            let sql = format!("DELETE FROM job_estimates WHERE job_id IN ({})", placeholders(1, chunk.len()));
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.as_str());
            }
            query.execute(&mut *tx).await?;

            let sql = format!("INSERT INTO job_events (job_id, at, from_status, to_status, detail) VALUES {}", rows_of(5, chunk.len() * 3, ""));
            let mut query = sqlx::query(&sql);
            for id in chunk {
                let steps = [
                    (started_at, JobStatus::Queued, JobStatus::Admitted, admitted.as_str()),
                    (started_at, JobStatus::Admitted, JobStatus::Running, "started"),
                    (now, JobStatus::Running, JobStatus::Succeeded, succeeded.as_str()),
                ];
                for (at, from, to, detail) in steps {
                    query = query.bind(id.as_str()).bind(at).bind(from.as_str()).bind(to.as_str()).bind(detail);
                }
            }
            query.execute(&mut *tx).await?;

            let sql = format!(
                "INSERT INTO attempts (job_id, started_at, finished_at, outcome, rode_on, attempt, grant_bytes) VALUES {}",
                rows_of(5, chunk.len(), ", 1, 0")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.as_str()).bind(started_at).bind(now).bind(JobStatus::Succeeded.as_str()).bind(leader.job_id);
            }
            query.execute(&mut *tx).await?;

            let sql = format!(
                "INSERT INTO runs (run_id, previous_run_id, tenant_id, segment_id, members, key_type, committed_at, files, added, removed) VALUES {}",
                rows_of(8, chunk.len(), ", 0, 0")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query
                    .bind(id.as_str())
                    .bind(std::mem::replace(&mut previous, id.clone()))
                    .bind(leader.tenant_id)
                    .bind(leader.segment_id)
                    .bind(leader.members)
                    .bind(leader.key_type)
                    .bind(now)
                    .bind(leader.files);
            }
            query.execute(&mut *tx).await?;
        }
        let latest = sqlx::query("UPDATE segments SET latest_run_id = $1 WHERE tenant_id = $2 AND id = $3 AND latest_run_id = $4")
            .bind(&last)
            .bind(leader.tenant_id)
            .bind(leader.segment_id)
            .bind(leader.job_id)
            .execute(&mut *tx)
            .await?;
        if latest.rows_affected() == 0 {
            // Another run of the segment committed after the leader: what the riders would
            // add or remove after it is unknown. They stay queued and run again.
            tx.rollback().await?;
            return Ok((Vec::new(), now));
        }
        tx.commit().await?;
        Ok((moved, now))
    }

    /// A segment's history, newest first, before `before` (a run id; '' for the newest).
    pub async fn runs(&self, tenant_id: &str, segment_id: &str, before: &str, limit: i64) -> Result<Vec<RunRow>> {
        let before = newest_first(before);
        let rows =
            sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE tenant_id = $1 AND segment_id = $2 AND run_id < $3 ORDER BY run_id DESC LIMIT $4"))
                .bind(tenant_id)
                .bind(segment_id)
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// The files of the newest run of a segment committed before `run` whose files are not
    /// `files` (those of the run `run` replaced, shared by riders): the generation of members
    /// a commit no longer keeps.
    pub async fn files_before(&self, tenant_id: &str, segment_id: &str, run: &str, files: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT COALESCE(files, run_id) FROM runs WHERE tenant_id = $1 AND segment_id = $2 AND run_id <> $3 \
             AND COALESCE(files, run_id) <> $4 ORDER BY committed_at DESC LIMIT 1",
        )
        .bind(tenant_id)
        .bind(segment_id)
        .bind(run)
        .bind(files)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
    }

    /// One history record.
    pub async fn run(&self, tenant_id: &str, run_id: &str) -> Result<Option<RunRow>> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE tenant_id = $1 AND run_id = $2"))
            .bind(tenant_id)
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| run_from_row(&r)).transpose()
    }
}

/// Finished runs as the estimator learns from them: the features recorded before the run,
/// the peak and runtime of the attempt that succeeded, and the largest grant an attempt ran
/// out of. `$1` is the limit (the jobs that finished last); `{segment}` narrows to one
/// segment. Those jobs are picked first, by an index of finished jobs' estimates (queued
/// ones are not in its way), and only their attempts grouped.
const ESTIMATOR_RECORDS: &str = "SELECT e.job_id, e.tenant_id, e.segment_id, e.created_at, e.features, e.bound_bytes, e.runtime_micros, \
     MAX(CASE WHEN a.outcome = 'succeeded' THEN a.peak_memory_bytes END), \
     MAX(CASE WHEN a.outcome = 'succeeded' THEN a.elapsed_micros END), \
     MAX(CASE WHEN a.error_class = 'resources_exhausted' THEN a.grant_bytes END) \
     FROM (SELECT e.job_id, e.tenant_id, e.segment_id, e.created_at, e.features, e.bound_bytes, e.runtime_micros \
           FROM job_estimates e JOIN jobs j ON j.id = e.job_id \
           WHERE e.settled_at IS NOT NULL AND j.status IN ('succeeded', 'failed') {segment} ORDER BY e.settled_at DESC LIMIT $1) e \
     JOIN attempts a ON a.job_id = e.job_id AND a.rode_on IS NULL \
     GROUP BY e.job_id, e.tenant_id, e.segment_id, e.created_at, e.features, e.bound_bytes, e.runtime_micros \
     ORDER BY e.created_at DESC, e.job_id DESC";

impl Store {
    /// The newest `limit` finished runs (of one segment when `segment` is given) with what the
    /// estimator knew before each, oldest first. Runs that neither finished nor ran out of
    /// memory (failed for another reason) say nothing of their peak and are left out.
    pub async fn estimator_records(&self, segment: Option<(&str, &str)>, limit: i64) -> Result<Vec<cohort_estimator::Record>> {
        let rows = match segment {
            Some((tenant, segment)) => {
                sqlx::query(&ESTIMATOR_RECORDS.replace("{segment}", "AND e.tenant_id = $2 AND e.segment_id = $3"))
                    .bind(limit)
                    .bind(tenant)
                    .bind(segment)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => sqlx::query(&ESTIMATOR_RECORDS.replace("{segment}", "")).bind(limit).fetch_all(&self.pool).await?,
        };
        let mut records = Vec::with_capacity(rows.len());
        for r in rows.iter().rev() {
            let features: String = r.try_get(4)?;
            let estimated_runtime: i64 = r.try_get(6)?;
            let peak: Option<i64> = r.try_get(7)?;
            let elapsed: Option<i64> = r.try_get(8)?;
            let exhausted: Option<i64> = r.try_get(9)?;
            if peak.is_none() && exhausted.is_none() {
                continue;
            }
            let bound: i64 = r.try_get(5)?;
            let to_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
            records.push(cohort_estimator::Record {
                at: r.try_get(3)?,
                tenant: r.try_get(1)?,
                segment: r.try_get(2)?,
                job: r.try_get(0)?,
                features: serde_json::from_str(&features).map_err(|e| Error::Internal(format!("features of a job in the store do not parse: {e}")))?,
                peak_bytes: peak.map(to_u64),
                runtime_seconds: peak.and(elapsed).map(|m| m.max(0) as f64 / 1e6),
                exhausted_bytes: exhausted.map(to_u64),
                granted_bytes: Some(to_u64(bound)),
                estimated_runtime_seconds: Some(estimated_runtime.max(0) as f64 / 1e6),
            });
        }
        Ok(records)
    }

    /// What the estimator said of a job, if it was asked.
    pub async fn job_estimate(&self, job_id: &str) -> Result<Option<JobEstimate>> {
        let row = sqlx::query("SELECT features, model_version, basis, memory_bytes, bound_bytes, runtime_micros FROM job_estimates WHERE job_id = $1")
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(JobEstimate {
                features: r.try_get(0)?,
                model_version: r.try_get(1)?,
                basis: r.try_get(2)?,
                memory_bytes: r.try_get(3)?,
                bound_bytes: r.try_get(4)?,
                runtime_micros: r.try_get(5)?,
            })
        })
        .transpose()
    }

    /// Stores a fitted estimator model as `version`; false when that version exists already
    /// (another replica fitted first).
    pub async fn save_estimator_model(&self, version: i64, trained_on: i64, model: &str) -> Result<bool> {
        let done =
            sqlx::query("INSERT INTO estimator_models (version, created_at, trained_on, model) VALUES ($1, $2, $3, $4) ON CONFLICT (version) DO NOTHING")
                .bind(version)
                .bind(now_micros())
                .bind(trained_on)
                .bind(model)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The newest estimator model: version, when it was stored (microseconds) and its JSON.
    pub async fn latest_estimator_model(&self) -> Result<Option<(i64, i64, String)>> {
        let row = sqlx::query("SELECT version, created_at, model FROM estimator_models ORDER BY version DESC LIMIT 1").fetch_optional(&self.pool).await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).transpose()
    }
}

const TENANT_COLUMNS: &str = "id, region, data_root, max_concurrent_jobs, memory_quota_bytes, jobs_per_minute, share, created_at";
const SEGMENT_COLUMNS: &str = "tenant_id, id, definition, schedule, timezone, overlap, latest_run_id, members, created_at, \
     updated_at, next_due_at, buffered_due_at, missed_runs, overlapped_runs";
const JOB_COLUMNS: &str = "id, tenant_id, segment_id, status, idempotency_key, trigger_kind, as_of, grant_bytes, attempts, \
     error_class, error_message, members, added, removed, created_at, updated_at, started_at, finished_at, not_before, \
     expected_micros, deadline_micros, due_at, trace_link, backend";
const RUN_COLUMNS: &str = "run_id, segment_id, previous_run_id, members, added, removed, key_type, committed_at, COALESCE(files, run_id)";

fn tenant_from_row(r: &AnyRow) -> Result<Tenant> {
    Ok(Tenant {
        id: r.try_get(0)?,
        region: r.try_get(1)?,
        data_root: r.try_get(2)?,
        max_concurrent_jobs: r.try_get(3)?,
        memory_quota_bytes: r.try_get(4)?,
        jobs_per_minute: r.try_get(5)?,
        share: r.try_get(6)?,
        created_at: crate::rfc3339(r.try_get(7)?),
    })
}

fn segment_from_row(r: &AnyRow) -> Result<SegmentRow> {
    segment_from_row_at(r, 0)
}

/// A segment from [`SEGMENT_COLUMNS`] starting at column `at`.
fn segment_from_row_at(r: &AnyRow, at: usize) -> Result<SegmentRow> {
    Ok(SegmentRow {
        tenant_id: r.try_get(at)?,
        id: r.try_get(at + 1)?,
        definition: r.try_get(at + 2)?,
        schedule: r.try_get(at + 3)?,
        timezone: r.try_get(at + 4)?,
        overlap: r.try_get(at + 5)?,
        latest_run_id: r.try_get(at + 6)?,
        members: r.try_get(at + 7)?,
        created_at: r.try_get(at + 8)?,
        updated_at: r.try_get(at + 9)?,
        next_due_at: r.try_get(at + 10)?,
        buffered_due_at: r.try_get(at + 11)?,
        missed_runs: r.try_get(at + 12)?,
        overlapped_runs: r.try_get(at + 13)?,
    })
}

fn job_from_row(r: &AnyRow) -> Result<JobRow> {
    let status: String = r.try_get(3)?;
    Ok(JobRow {
        id: r.try_get(0)?,
        tenant_id: r.try_get(1)?,
        segment_id: r.try_get(2)?,
        status: JobStatus::parse(&status).ok_or_else(|| Error::Internal(format!("unknown job status {status:?} in the store")))?,
        idempotency_key: r.try_get(4)?,
        trigger: r.try_get(5)?,
        as_of: r.try_get(6)?,
        grant_bytes: r.try_get(7)?,
        attempts: r.try_get(8)?,
        error_class: r.try_get(9)?,
        error_message: r.try_get(10)?,
        members: r.try_get(11)?,
        added: r.try_get(12)?,
        removed: r.try_get(13)?,
        created_at: r.try_get(14)?,
        updated_at: r.try_get(15)?,
        started_at: r.try_get(16)?,
        finished_at: r.try_get(17)?,
        not_before: r.try_get(18)?,
        expected_micros: r.try_get(19)?,
        deadline_micros: r.try_get(20)?,
        due_at: r.try_get(21)?,
        estimate: None,
        trace_link: r.try_get(22)?,
        backend: r.try_get(23)?,
    })
}

fn run_from_row(r: &AnyRow) -> Result<RunRow> {
    Ok(RunRow {
        run_id: r.try_get(0)?,
        segment_id: r.try_get(1)?,
        previous_run_id: r.try_get(2)?,
        members: r.try_get(3)?,
        added: r.try_get(4)?,
        removed: r.try_get(5)?,
        key_type: r.try_get(6)?,
        committed_at: r.try_get(7)?,
        files: r.try_get(8)?,
    })
}

/// Inserts a job as queued, without its first event.
async fn insert_queued_job(tx: &mut sqlx::Transaction<'_, sqlx::Any>, job: &JobRow) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, segment_id, status, idempotency_key, trigger_kind, as_of, grant_bytes, attempts, \
         created_at, updated_at, expected_micros, deadline_micros, due_at, trace_link, backend) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&job.id)
    .bind(&job.tenant_id)
    .bind(&job.segment_id)
    .bind(JobStatus::Queued.as_str())
    .bind(&job.idempotency_key)
    .bind(&job.trigger)
    .bind(job.as_of)
    .bind(job.grant_bytes)
    .bind(job.created_at)
    .bind(job.expected_micros)
    .bind(job.deadline_micros)
    .bind(job.due_at)
    .bind(&job.trace_link)
    .bind(&job.backend)
    .execute(&mut **tx)
    .await?;
    if let Some(e) = &job.estimate {
        sqlx::query(
            "INSERT INTO job_estimates (job_id, tenant_id, segment_id, created_at, features, model_version, basis, memory_bytes, \
             bound_bytes, runtime_micros) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&job.id)
        .bind(&job.tenant_id)
        .bind(&job.segment_id)
        .bind(job.created_at)
        .bind(&e.features)
        .bind(e.model_version)
        .bind(&e.basis)
        .bind(e.memory_bytes)
        .bind(e.bound_bytes)
        .bind(e.runtime_micros)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
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
