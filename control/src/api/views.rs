//! The API's request and response bodies and query parameters, as the OpenAPI document
//! describes them.

use super::*;

/// A new tenant.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 1–64 of `A-Z a-z 0-9 _ -`.
    pub id: String,
    /// The region its jobs run in.
    pub region: String,
    /// The folder its model reads from (an absolute path that exists), or an
    /// `s3://bucket/prefix/` in object storage. Sources outside it are refused.
    pub data_root: String,
    /// Jobs that may run at once (default 4).
    pub max_concurrent_jobs: Option<i64>,
    /// Memory its running jobs may hold at once, in bytes (default: no quota beyond the pool).
    pub memory_quota_bytes: Option<i64>,
    /// Jobs it may start per minute (default 600).
    pub jobs_per_minute: Option<i64>,
    /// Its weight in the fair share (default 1).
    pub share: Option<f64>,
    /// For an `s3://` data root: how the store is reached (credentials by the name the
    /// service's configuration gives them).
    pub storage: Option<crate::storage::TenantStorage>,
}

/// A created tenant and its first token (shown once).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantCreated {
    /// The tenant.
    pub tenant: Tenant,
    /// Its API token. Only its hash is stored: keep it.
    pub token: String,
}

/// A new token (shown once).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenCreated {
    /// The token. Only its hash is stored: keep it.
    pub token: String,
    /// Its id, which lists and revokes it.
    pub id: String,
}

/// A tenant's token as listed (never the token itself).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    /// Its id (`tok_` and the first hex digits of its hash): `DELETE …/tokens/{id}` revokes it.
    pub id: String,
    /// When it was made.
    pub created_at: String,
}

/// A tenant's tokens.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    /// Oldest first.
    pub items: Vec<TokenView>,
}

/// A page of tenants.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantPage {
    /// The tenants, by id.
    pub items: Vec<Tenant>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

/// A stored model.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelView {
    /// Increases by one at each replacement.
    pub version: i64,
    /// Objects.
    pub objects: i64,
    /// Relationships.
    pub relationships: i64,
    /// Bytes of all sources when it was stored.
    pub source_bytes: i64,
    /// When it was stored.
    pub updated_at: String,
    /// The model as sent (only on GET).
    #[schema(value_type = Object)]
    #[serde(skip_serializing_if = "Value::is_null")]
    pub definition: Value,
}

/// A segment to create or replace.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSegment {
    /// The segment (`root`, `filter`, optional `name` equal to the segment id).
    #[schema(value_type = Object)]
    pub definition: Value,
    /// A cron expression with seconds (`0 0 * * * *`), or absent.
    pub schedule: Option<String>,
    /// The time zone the schedule is read in (default `UTC`).
    pub timezone: Option<String>,
    /// `skip` (default), `buffer_one` or `allow`.
    pub overlap: Option<String>,
}

/// A segment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SegmentView {
    /// The segment's id.
    pub id: String,
    /// The definition.
    #[schema(value_type = Object)]
    pub definition: Value,
    /// The schedule, if any.
    pub schedule: Option<String>,
    /// Its time zone.
    pub timezone: String,
    /// The overlap policy.
    pub overlap: String,
    /// The run whose members are the latest (absent before the first).
    pub latest_run_id: Option<String>,
    /// Members of the latest run.
    pub members: i64,
    /// Created.
    pub created_at: String,
    /// Last changed.
    pub updated_at: String,
    /// The next due time of the schedule (RFC 3339), if scheduled.
    pub next_due_at: Option<String>,
    /// A due run held back (`buffer_one`) until the running one ends.
    pub buffered_due_at: Option<String>,
    /// Due runs skipped because the service was down past the catch-up window.
    pub missed_runs: i64,
    /// Due runs skipped because the previous run was still going.
    pub overlapped_runs: i64,
}

/// A page of segments.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SegmentPage {
    /// The segments, by id.
    pub items: Vec<SegmentView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

/// A run to enqueue.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRun {
    /// The instant to evaluate for (RFC 3339); default now.
    pub as_of: Option<String>,
    /// Each attempt's deadline in seconds, instead of the one derived from the estimate
    /// (capped at the configured ceiling). Past it the attempt fails as `timeout`.
    pub timeout_seconds: Option<f64>,
}

/// A job: one run of a segment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    /// The job's id; also the run id its membership commits under.
    pub id: String,
    /// The segment.
    pub segment_id: String,
    /// Where it is in its life.
    pub status: JobStatus,
    /// The submitter's idempotency key.
    pub idempotency_key: Option<String>,
    /// `api`, `schedule` or `demo`.
    pub trigger: String,
    /// The instant the segment is evaluated for.
    pub as_of: String,
    /// Memory granted, in bytes (for a job on Ballista: what this service holds of it, the
    /// rows read back).
    pub grant_bytes: i64,
    /// Where it runs: `embedded` (this service's executor pool) or `ballista` (the Ballista
    /// cluster), chosen when it was queued from its estimate.
    pub backend: String,
    /// Attempts started.
    pub attempts: i64,
    /// The failure class, if failed.
    pub error_class: Option<String>,
    /// The failure, if failed.
    pub error_message: Option<String>,
    /// Members found, once succeeded.
    pub members: Option<i64>,
    /// Keys added since the previous run.
    pub added: Option<i64>,
    /// Keys removed since the previous run.
    pub removed: Option<i64>,
    /// Submitted.
    pub created_at: String,
    /// Last transition.
    pub updated_at: String,
    /// Last attempt started.
    pub started_at: Option<String>,
    /// Reached a final state.
    pub finished_at: Option<String>,
    /// Each attempt's deadline, in seconds.
    pub deadline_seconds: f64,
    /// For a scheduled run: the due time it was enqueued for.
    pub due_at: Option<String>,
    /// While retrying: when it is queued again.
    pub retry_at: Option<String>,
    /// While queued or retrying: why it is not running yet.
    pub waiting: Option<WaitingView>,
    /// Its transitions, oldest first (only on GET of one job).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<Transition>,
    /// Its attempts, in order (only on GET of one job).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempt_history: Vec<AttemptView>,
    /// What the estimator said before it was queued (only on GET of one job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<EstimateView>,
    /// The snapshots of its table sources (Iceberg) its attempts read: recorded by the
    /// first, read again by every retry.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<crate::store::SnapshotView>,
}

impl From<JobRow> for JobView {
    /// The job as the API shows it, without what only GET of one job adds (transitions,
    /// attempts, the estimate) and without why it waits (the pool knows that).
    fn from(job: JobRow) -> Self {
        JobView {
            id: job.id,
            segment_id: job.segment_id,
            status: job.status,
            idempotency_key: job.idempotency_key,
            trigger: job.trigger,
            as_of: rfc3339(job.as_of),
            grant_bytes: job.grant_bytes,
            backend: job.backend,
            attempts: job.attempts,
            error_class: job.error_class,
            error_message: job.error_message,
            members: job.members,
            added: job.added,
            removed: job.removed,
            created_at: rfc3339(job.created_at),
            updated_at: rfc3339(job.updated_at),
            started_at: job.started_at.map(rfc3339),
            finished_at: job.finished_at.map(rfc3339),
            deadline_seconds: job.deadline_micros as f64 / 1e6,
            due_at: job.due_at.map(rfc3339),
            retry_at: job.not_before.filter(|_| job.status == JobStatus::Retrying).map(rfc3339),
            waiting: None,
            transitions: Vec::new(),
            attempt_history: Vec::new(),
            estimate: None,
            snapshots: job.snapshots.as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default(),
        }
    }
}

/// What the estimator said of a job before it was queued.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EstimateView {
    /// Predicted peak memory.
    pub memory_bytes: i64,
    /// The upper bound at the configured coverage; the first grant when the estimator grants.
    pub bound_bytes: i64,
    /// Predicted runtime.
    pub runtime_seconds: f64,
    /// The model version (0: rules only).
    pub model_version: i64,
    /// `warm` (the segment's history, fitted model), `warm_rule` (its last peak, no model yet),
    /// `cold` (sizes and plan shape, fitted model) or `cold_rule` (the size rule).
    pub basis: String,
    /// What it read: the plan's shape and the sizes of the sources.
    #[schema(value_type = Object)]
    pub features: serde_json::Value,
}

/// One committed transition.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Transition {
    /// When.
    pub at: String,
    /// From (empty at submission).
    pub from: String,
    /// To.
    pub to: String,
    /// Why.
    pub detail: String,
}

/// Why a job is not running yet.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WaitingView {
    /// `slot`, `memory`, `tenant_cap`, `quota`, `rate_limit`, `fair_share`, `reservation`,
    /// `behind_own_jobs`, `retry_backoff`, `riding` (a running job of the same segment and
    /// as-of answers it too) or `not_seen` (not yet read by this process's dispatcher).
    pub reason: String,
    /// The same in words, with the numbers behind it.
    pub message: String,
}

impl From<Waiting> for WaitingView {
    fn from(w: Waiting) -> Self {
        WaitingView { reason: w.reason, message: w.message }
    }
}

/// One attempt of a job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    /// 1 for the first.
    pub attempt: i64,
    /// Started.
    pub started_at: String,
    /// Ended.
    pub finished_at: Option<String>,
    /// `succeeded`, `failed`, `cancelled`, `interrupted` (the service stopped) or `superseded`
    /// (it finished after its process's lease ran out and another attempt took the job over:
    /// nothing of it was committed).
    pub outcome: Option<String>,
    /// The failure class: `resources_exhausted`, `source_unavailable`, `execution`, `timeout`,
    /// `invalid`, `schema_mismatch`, `internal`.
    pub error_class: Option<String>,
    /// The failure, in words.
    pub error_message: Option<String>,
    /// The memory it ran under.
    pub grant_bytes: i64,
    /// Its peak pool memory (on Ballista: the largest stage's operator memory the cluster
    /// reported, or what this service held, whichever is larger).
    pub peak_memory_bytes: Option<i64>,
    /// Its execution time in seconds.
    pub elapsed_seconds: Option<f64>,
    /// Rows its scans read (on Ballista: summed over the cluster's tasks).
    pub rows_scanned: Option<i64>,
    /// Bytes its scans read (Parquet: bytes fetched; CSV: file sizes).
    pub bytes_scanned: Option<i64>,
    /// The job whose execution answered this attempt, when it was not its own: a queued job
    /// of the same segment and as-of rides on a job that starts (its grant is then 0, its
    /// measurements are that job's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rode_on: Option<String>,
}

impl From<AttemptRow> for AttemptView {
    fn from(a: AttemptRow) -> Self {
        AttemptView {
            attempt: a.attempt,
            started_at: rfc3339(a.started_at),
            finished_at: a.finished_at.map(rfc3339),
            outcome: a.outcome,
            error_class: a.error_class,
            error_message: a.error_message,
            grant_bytes: a.grant_bytes,
            peak_memory_bytes: a.peak_memory_bytes,
            elapsed_seconds: a.elapsed_micros.map(|m| m as f64 / 1e6),
            rows_scanned: a.rows_scanned,
            bytes_scanned: a.bytes_scanned,
            rode_on: a.rode_on,
        }
    }
}

/// A page of jobs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    /// Newest first.
    pub items: Vec<JobView>,
    /// Pass as `before` for the next page; absent on the last.
    pub next: Option<String>,
}

/// A page of a segment's latest members.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MembersPage {
    /// The run they come from (absent before the first run).
    pub run_id: Option<String>,
    /// `string` or `int`.
    pub key_type: Option<String>,
    /// Members in all.
    pub total: i64,
    /// The first member's position.
    pub offset: i64,
    /// Keys, sorted by the bytes of their text form (numbers for `int` keys).
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Value>,
}

/// The answer when the members of a pinned run are gone: 410 with code `run_gone`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunGoneBody {
    /// The error.
    pub error: RunGoneError,
}

/// The pinned run is no longer readable.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunGoneError {
    /// `run_gone`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// Where to start again.
    pub details: RunGoneDetails,
}

/// Where to start again after a 410.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunGoneDetails {
    /// The segment's latest run, whose members can be read now (absent if it has none).
    pub latest_run_id: Option<String>,
}

/// One committed run in a segment's history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryRecord {
    /// The run (job) id.
    pub run_id: String,
    /// The run it replaced (absent for the first).
    pub previous_run_id: Option<String>,
    /// Members after it.
    pub members: i64,
    /// Keys it added.
    pub added: i64,
    /// Keys it removed.
    pub removed: i64,
    /// `string` or `int`.
    pub key_type: String,
    /// When it was committed.
    pub committed_at: String,
}

/// A page of history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryPage {
    /// Newest first.
    pub items: Vec<HistoryRecord>,
    /// Pass as `before` for the next page; absent on the last.
    pub next: Option<String>,
}

/// One key's change.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyChange {
    /// The key (a number for `int` keys).
    #[schema(value_type = Object)]
    pub key: Value,
    /// `added` or `removed`.
    pub change: String,
}

/// A history record with a page of its changes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryDetail {
    /// The record.
    pub run: HistoryRecord,
    /// Changes in all.
    pub total: i64,
    /// The first change's position.
    pub offset: i64,
    /// Added keys first, then removed ones.
    pub changes: Vec<KeyChange>,
}

/// Paging by key.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AfterPage {
    /// Start after this id.
    pub after: Option<String>,
    /// At most this many (1–1000, default 100).
    pub limit: Option<i64>,
}

/// Paging newest first.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BeforePage {
    /// Start before this id.
    pub before: Option<String>,
    /// At most this many (1–1000, default 100).
    pub limit: Option<i64>,
}

/// Paging by position.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OffsetPage {
    /// Skip this many (default 0).
    pub offset: Option<i64>,
    /// At most this many (1–10000, default 1000).
    pub limit: Option<i64>,
}

/// A page of a segment's members, of its latest run or of one pinned run.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MembersQuery {
    /// Skip this many (default 0).
    pub offset: Option<i64>,
    /// At most this many (1–10000, default 1000).
    pub limit: Option<i64>,
    /// The run to read (default: the segment's latest). A client paging through the members
    /// passes the `run_id` its first page named, so every page is of that one run. The
    /// members of the latest run and of the one before it are kept; once the pinned run's
    /// are gone (two newer runs committed) the answer is 410 `run_gone`, naming the latest
    /// run in `error.details.latest_run_id`.
    pub run_id: Option<String>,
}

/// Waiting for a job.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Wait up to this many seconds (at most 60) for the job to reach a final state...
    pub wait_seconds: Option<u64>,
    /// ...or, when given, only while its status is this one (a change of status ends the
    /// wait: watch a job's life without polling).
    pub while_status: Option<String>,
}

pub(super) fn limit(requested: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match requested {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request("invalid_query", format!("limit {n} is out of range 1..={max}"))),
    }
}

pub(super) fn check_id(kind: &str, id: &str) -> Result<(), ApiError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request("invalid_id", format!("{kind} id {id:?} must be 1 to 64 of A-Z a-z 0-9 _ - (not starting with -)")))
    }
}
