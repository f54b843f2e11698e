//! The stores' rows: one struct per table row as the service reads it, and how each is read
//! from a result row.

use super::*;

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
    /// The folder, or the `s3://bucket/prefix/`, the tenant's model reads from; sources
    /// outside it are refused.
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
    /// How an `s3://` data root is reached (no secrets: credentials by name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<crate::storage::TenantStorage>,
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
    /// The table snapshots its first attempt read (JSON: object, format, id, metadata), which
    /// every later attempt reads again.
    pub snapshots: Option<String>,
}

/// The snapshot of a table source a run read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SnapshotView {
    /// The model's object.
    pub object: String,
    /// `iceberg`.
    pub format: String,
    /// The snapshot id.
    pub id: i64,
    /// The table metadata file it was found in.
    pub metadata: String,
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
            snapshots: None,
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

pub(super) const TENANT_COLUMNS: &str = "id, region, data_root, max_concurrent_jobs, memory_quota_bytes, jobs_per_minute, share, created_at, storage";
pub(super) const SEGMENT_COLUMNS: &str = "tenant_id, id, definition, schedule, timezone, overlap, latest_run_id, members, created_at, \
     updated_at, next_due_at, buffered_due_at, missed_runs, overlapped_runs";
pub(super) const JOB_COLUMNS: &str = "id, tenant_id, segment_id, status, idempotency_key, trigger_kind, as_of, grant_bytes, attempts, \
     error_class, error_message, members, added, removed, created_at, updated_at, started_at, finished_at, not_before, \
     expected_micros, deadline_micros, due_at, trace_link, backend, snapshots";
pub(super) const RUN_COLUMNS: &str = "run_id, segment_id, previous_run_id, members, added, removed, key_type, committed_at, COALESCE(files, run_id)";

pub(super) fn tenant_from_row(r: &AnyRow) -> Result<Tenant> {
    Ok(Tenant {
        id: r.try_get(0)?,
        region: r.try_get(1)?,
        data_root: r.try_get(2)?,
        max_concurrent_jobs: r.try_get(3)?,
        memory_quota_bytes: r.try_get(4)?,
        jobs_per_minute: r.try_get(5)?,
        share: r.try_get(6)?,
        created_at: crate::rfc3339(r.try_get(7)?),
        storage: match r.try_get::<Option<String>, _>(8)? {
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| crate::Error::Internal(format!("tenant storage settings {text:?}: {e}")))?),
            None => None,
        },
    })
}

pub(super) fn segment_from_row(r: &AnyRow) -> Result<SegmentRow> {
    segment_from_row_at(r, 0)
}

/// A segment from [`SEGMENT_COLUMNS`] starting at column `at`.
pub(super) fn segment_from_row_at(r: &AnyRow, at: usize) -> Result<SegmentRow> {
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

pub(super) fn job_from_row(r: &AnyRow) -> Result<JobRow> {
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
        snapshots: r.try_get(24)?,
    })
}

pub(super) fn run_from_row(r: &AnyRow) -> Result<RunRow> {
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
