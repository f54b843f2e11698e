//! The HTTP API under `/v1`, described by the OpenAPI document at `/v1/openapi.json` (generated
//! from these handlers by `utoipa`).
//!
//! Authorization: `Bearer <token>`. The admin token manages tenants and sees everything; a
//! tenant token sees only its own tenant, and any other tenant's resources answer 404 (the
//! same answer as a tenant that does not exist).

mod error;
mod ui;

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cohort_executor::{Catalog, Model, Segment};
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::OpenApi;

pub use error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, ErrorDetail, parse_json};

use crate::alerts::{AlertEventView, AlertView, ReceiverView, SilenceView};
use crate::estimates::{Accuracy, Estimates, EstimatorStatus, RegimeStatus};
use crate::jobs::JobStatus;
use crate::membership::{KeyPage, MembershipFiles};
use crate::pool::{Pool, Sizing, Waiting};
use crate::schedules::CronSchedule;
use crate::store::{AttemptRow, JobRow, RunRow, SegmentRow, Store, Tenant};
use crate::{now_micros, rfc3339, valid_id};

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// The executor pool.
    pub pool: Arc<Pool>,
    /// Membership files.
    pub files: MembershipFiles,
    /// Job sizing and deadlines.
    pub sizing: Sizing,
    /// SHA-256 of the admin token.
    pub admin_hash: [u8; 32],
    /// Wakes the schedule loop (a schedule was stored or changed).
    pub schedules: Arc<tokio::sync::Notify>,
    /// The estimator (status and accuracy).
    pub estimates: Arc<Estimates>,
    /// Alerting (receivers, delivery counts).
    pub alerting: Arc<crate::alerts::Alerting>,
    /// How triage reports are made.
    pub triage: Arc<crate::triage::TriageSettings>,
    /// The dashboard's sign-ins.
    pub sessions: SessionSettings,
}

/// How the built-in dashboard's sign-ins work.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    /// How long a sign-in lasts.
    pub lifetime: std::time::Duration,
    /// Whether the cookie is `Secure` (the service's external URL is https).
    pub secure: bool,
}

/// The router: the API, health, metrics, the OpenAPI document and the dashboard.
pub fn router(state: AppState, max_body: usize) -> Router {
    let v1 = Router::new()
        .route("/tenants", post(create_tenant).get(list_tenants))
        .route("/tenants/{tenant}", get(get_tenant))
        .route("/tenants/{tenant}/tokens", post(create_token).get(list_tokens))
        .route("/tenants/{tenant}/tokens/{token}", axum::routing::delete(revoke_token))
        .route("/tenants/{tenant}/model", get(get_model).put(put_model))
        .route("/tenants/{tenant}/segments", get(list_segments))
        .route("/tenants/{tenant}/segments/{segment}", get(get_segment).put(put_segment).delete(delete_segment))
        .route("/tenants/{tenant}/segments/{segment}/runs", post(enqueue_run).get(list_runs))
        .route("/tenants/{tenant}/segments/{segment}/members", get(get_members))
        .route("/tenants/{tenant}/segments/{segment}/history", get(get_history))
        .route("/tenants/{tenant}/segments/{segment}/history/{run}", get(get_history_record))
        .route("/tenants/{tenant}/runs/{run}", get(get_run))
        .route("/tenants/{tenant}/runs/{run}/cancel", post(cancel_run))
        .route("/alerts", get(list_alerts))
        .route("/alerts/{alert}", get(get_alert))
        .route("/silences", post(create_silence).get(list_silences))
        .route("/silences/{silence}", axum::routing::delete(expire_silence))
        .route("/receivers", post(create_receiver).get(list_receivers))
        .route("/receivers/{receiver}", axum::routing::delete(delete_receiver))
        .route("/triage", get(get_triage))
        .route("/triage/reports", get(list_triage_reports))
        .route("/triage/reports/{report}", get(get_triage_report))
        .route("/estimator", get(get_estimator))
        .route("/estimator/refit", post(refit_estimator))
        .route("/openapi.json", get(openapi_json));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(ui::overview))
        .route("/ui/login", get(ui::login_form).post(ui::login))
        .route("/ui/logout", get(ui::logout))
        .route("/ui/regions", get(ui::regions))
        .route("/ui/tenants", get(ui::tenants))
        .route("/ui/tenants/{tenant}", get(ui::tenant))
        .route("/ui/jobs/{job}", get(ui::job))
        .route("/ui/alerts", get(ui::alerts))
        .route("/ui/triage", get(ui::triage))
        .route("/ui/triage/reports/{report}", get(ui::triage_report))
        .layer(axum::middleware::from_fn_with_state(state.clone(), trace_request))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| ApiError::internal("a handler panicked").into_response()))
        .with_state(state)
}

/// The `traceparent` of the API request being served (when traces are on).
#[derive(Debug, Clone)]
pub struct RequestTrace(pub String);

/// Gives each API request a server span (when traces are on), continuing the caller's trace from
/// its `traceparent`; handlers that create jobs link them to it.
async fn trace_request(State(s): State<AppState>, mut request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let traces = &s.pool.telemetry().traces;
    if !traces.enabled() {
        return next.run(request).await;
    }
    let route = request.extensions().get::<axum::extract::MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    // The API only: scrapes, health checks and dashboard pages would drown the jobs' traces.
    if !route.starts_with("/v1/") {
        return next.run(request).await;
    }
    let parent = request.headers().get("traceparent").and_then(|v| v.to_str().ok()).and_then(crate::traces::parse_traceparent);
    let Some(span) = traces.request(request.method().as_str(), &route, parent) else {
        return next.run(request).await;
    };
    request.extensions_mut().insert(RequestTrace(crate::traces::traceparent(&span.context())));
    let response = next.run(request).await;
    span.end(response.status().as_u16());
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such resource; the API is described at /v1/openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this resource does not take that method; see /v1/openapi.json")
}

// ---- authorization

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The admin token.
    Admin,
    /// A tenant's token.
    Tenant(String),
}

/// The SHA-256 of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The form a token is stored in: its SHA-256, in hex.
pub fn stored_token(token: &str) -> String {
    hex(&token_hash(token))
}

/// A new random token with a readable prefix.
pub fn new_token(prefix: &str) -> String {
    let bytes: [u8; 24] = rand::random();
    format!("{prefix}{}", hex(&bytes))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m.to_string());
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| unauthorized("send Authorization: Bearer <token>"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be Bearer <token>"))?;
        let hash = token_hash(token);
        if bool::from(hash.ct_eq(&state.admin_hash)) {
            return Ok(Caller::Admin);
        }
        match state.store.tenant_for_token(&hex(&hash)).await? {
            Some(tenant) => Ok(Caller::Tenant(tenant)),
            None => Err(unauthorized("the token is not valid")),
        }
    }
}

impl Caller {
    fn admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this call needs the admin token")),
        }
    }

    /// The tenant, if the caller may see it; otherwise 404, as for a tenant that does not exist.
    async fn tenant(&self, store: &Store, id: &str) -> Result<Tenant, ApiError> {
        self.may_see(id)?;
        store.tenant(id).await?.ok_or_else(|| ApiError::not_found(format!("no tenant {id:?}")))
    }

    /// 404 (as for a tenant that does not exist) unless the caller may see tenant `id`.
    fn may_see(&self, id: &str) -> Result<(), ApiError> {
        match self {
            Caller::Tenant(own) if own != id => Err(ApiError::not_found(format!("no tenant {id:?}"))),
            _ => Ok(()),
        }
    }
}

// ---- types

/// A new tenant.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 1–64 of `A-Z a-z 0-9 _ -`.
    pub id: String,
    /// The region its jobs run in.
    pub region: String,
    /// The folder its model reads from (must exist). Sources outside it are refused.
    pub data_root: String,
    /// Jobs that may run at once (default 4).
    pub max_concurrent_jobs: Option<i64>,
    /// Memory its running jobs may hold at once, in bytes (default: no quota beyond the pool).
    pub memory_quota_bytes: Option<i64>,
    /// Jobs it may start per minute (default 600).
    pub jobs_per_minute: Option<i64>,
    /// Its weight in the fair share (default 1).
    pub share: Option<f64>,
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

fn limit(requested: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match requested {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request("invalid_query", format!("limit {n} is out of range 1..={max}"))),
    }
}

fn check_id(kind: &str, id: &str) -> Result<(), ApiError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request("invalid_id", format!("{kind} id {id:?} must be 1 to 64 of A-Z a-z 0-9 _ - (not starting with -)")))
    }
}

// ---- tenants

/// Creates a tenant and its first token.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant,
    responses((status = 201, body = TenantCreated), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_tenant(State(s): State<AppState>, caller: Caller, ApiJson(body): ApiJson<CreateTenant>) -> Result<Response, ApiError> {
    caller.admin()?;
    check_id("tenant", &body.id)?;
    if body.region.trim().is_empty() || body.region.len() > 64 {
        return Err(ApiError::bad_request("invalid_body", "region must be 1 to 64 characters"));
    }
    let root = FsPath::new(&body.data_root);
    if !root.is_absolute() || !root.is_dir() {
        return Err(ApiError::bad_request("invalid_data_root", format!("data_root {:?} must be an absolute path to an existing folder", body.data_root)));
    }
    let positive = |name: &str, v: Option<i64>, default: i64| match v {
        None => Ok(default),
        Some(n) if n > 0 => Ok(n),
        Some(n) => Err(ApiError::bad_request("invalid_body", format!("{name} must be positive, not {n}"))),
    };
    let share = body.share.unwrap_or(1.0);
    if !(share.is_finite() && share > 0.0) {
        return Err(ApiError::bad_request("invalid_body", "share must be a positive number"));
    }
    let tenant = Tenant {
        id: body.id,
        region: body.region,
        data_root: body.data_root,
        max_concurrent_jobs: positive("max_concurrent_jobs", body.max_concurrent_jobs, 4)?,
        memory_quota_bytes: positive("memory_quota_bytes", body.memory_quota_bytes, i64::MAX)?,
        jobs_per_minute: positive("jobs_per_minute", body.jobs_per_minute, 600)?,
        share,
        created_at: rfc3339(now_micros()),
    };
    let token = new_token("ct_");
    s.store.create_tenant(&tenant, &stored_token(&token)).await?;
    // Its failure counters show at 0 from now on, before its first job.
    s.pool.telemetry().metrics.set_region(&tenant.id, &tenant.region);
    tracing::info!(tenant = %tenant.id, region = %tenant.region, "tenant created");
    Ok((StatusCode::CREATED, Json(TenantCreated { tenant, token })).into_response())
}

/// Lists tenants (a tenant token sees only its own).
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(AfterPage),
    responses((status = 200, body = TenantPage)), security(("bearer" = [])))]
async fn list_tenants(State(s): State<AppState>, caller: Caller, ApiQuery(page): ApiQuery<AfterPage>) -> Result<Json<TenantPage>, ApiError> {
    let limit = limit(page.limit, 100, 1000)?;
    let items = match &caller {
        Caller::Admin => s.store.tenants(page.after.as_deref().unwrap_or(""), limit).await?,
        Caller::Tenant(own) => {
            let after = page.after.as_deref().unwrap_or("");
            s.store.tenant(own).await?.into_iter().filter(|t| t.id.as_str() > after).collect()
        }
    };
    let next = (items.len() as i64 == limit).then(|| items.last().map(|t| t.id.clone())).flatten();
    Ok(Json(TenantPage { items, next }))
}

/// One tenant.
#[utoipa::path(get, path = "/v1/tenants/{tenant}", tag = "tenants", params(("tenant" = String, Path)),
    responses((status = 200, body = Tenant), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_tenant(State(s): State<AppState>, caller: Caller, ApiPath(tenant): ApiPath<String>) -> Result<Json<Tenant>, ApiError> {
    Ok(Json(caller.tenant(&s.store, &tenant).await?))
}

/// Adds a token to a tenant (the old ones stay valid).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/tokens", tag = "tenants", params(("tenant" = String, Path)),
    responses((status = 201, body = TokenCreated), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn create_token(State(s): State<AppState>, caller: Caller, ApiPath(tenant): ApiPath<String>) -> Result<Response, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let token = new_token("ct_");
    let hash = stored_token(&token);
    s.store.add_token(&tenant.id, &hash).await?;
    Ok((StatusCode::CREATED, Json(TokenCreated { token, id: crate::store::token_id(&hash) })).into_response())
}

/// A tenant's tokens, by id (the tokens themselves are never shown again).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/tokens", tag = "tenants", params(("tenant" = String, Path)),
    responses((status = 200, body = TokenList), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn list_tokens(State(s): State<AppState>, caller: Caller, ApiPath(tenant): ApiPath<String>) -> Result<Json<TokenList>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let items = s.store.tokens(&tenant.id).await?.into_iter().map(|t| TokenView { id: t.id, created_at: rfc3339(t.created_at) }).collect();
    Ok(Json(TokenList { items }))
}

/// Revokes one of a tenant's tokens: refused from now on by this process, and by every other
/// process on the store within one lease period.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/tokens/{token}", tag = "tenants",
    params(("tenant" = String, Path), ("token" = String, Path, description = "The token's id, as listed")),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn revoke_token(State(s): State<AppState>, caller: Caller, ApiPath((tenant, id)): ApiPath<(String, String)>) -> Result<StatusCode, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    if s.store.revoke_token(&tenant.id, &id).await? {
        tracing::info!(tenant = %tenant.id, token = %id, "token revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("tenant {:?} has no token {id:?}", tenant.id)))
    }
}

// ---- models

/// Loads and checks a model against the tenant's data: confined to its data root, every source
/// found and its schema agreeing with the model.
pub async fn check_model(tenant: &Tenant, definition: &Value) -> Result<Catalog, ApiError> {
    let root = FsPath::new(&tenant.data_root);
    let model = Model::from_value(definition, root)?.confined_to(root)?;
    Ok(Catalog::load(model, &SessionContext::new()).await?)
}

/// Checks a model against the tenant's data and stores it as the tenant's model.
pub async fn store_model(store: &Store, tenant: &Tenant, definition: &Value) -> Result<ModelView, ApiError> {
    let catalog = check_model(tenant, definition).await?;
    let objects = catalog.objects.len() as i64;
    let relationships = catalog.model.relationships.len() as i64;
    let source_bytes = catalog.objects.iter().map(|o| o.bytes).sum::<u64>().min(i64::MAX as u64) as i64;
    let version = store.put_model(&tenant.id, &definition.to_string(), objects, relationships, source_bytes).await?;
    Ok(ModelView { version, objects, relationships, source_bytes, updated_at: rfc3339(now_micros()), definition: Value::Null })
}

/// Replaces the tenant's data model, after checking it against the sources.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/model", tag = "models", params(("tenant" = String, Path)),
    request_body(content = Object, description = "The data model (segments.md)"),
    responses((status = 200, body = ModelView), (status = 422, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_model(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(tenant): ApiPath<String>,
    ApiJson(definition): ApiJson<Value>,
) -> Result<Json<ModelView>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    Ok(Json(store_model(&s.store, &tenant, &definition).await?))
}

/// The tenant's data model.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/model", tag = "models", params(("tenant" = String, Path)),
    responses((status = 200, body = ModelView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_model(State(s): State<AppState>, caller: Caller, ApiPath(tenant): ApiPath<String>) -> Result<Json<ModelView>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let row = s.store.model(&tenant.id).await?.ok_or_else(|| ApiError::not_found("the tenant has no model yet"))?;
    Ok(Json(ModelView {
        version: row.version,
        objects: row.objects,
        relationships: row.relationships,
        source_bytes: row.source_bytes,
        updated_at: rfc3339(row.updated_at),
        definition: serde_json::from_str(&row.definition).map_err(ApiError::internal)?,
    }))
}

// ---- segments

fn segment_view(row: SegmentRow) -> Result<SegmentView, ApiError> {
    Ok(SegmentView {
        id: row.id,
        definition: serde_json::from_str(&row.definition).map_err(ApiError::internal)?,
        schedule: row.schedule,
        timezone: row.timezone,
        overlap: row.overlap,
        latest_run_id: Some(row.latest_run_id).filter(|r| !r.is_empty()),
        members: row.members,
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
        next_due_at: row.next_due_at.map(rfc3339),
        buffered_due_at: row.buffered_due_at.map(rfc3339),
        missed_runs: row.missed_runs,
        overlapped_runs: row.overlapped_runs,
    })
}

/// Creates or replaces a segment, after checking it against the tenant's model.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/segments/{segment}", tag = "segments",
    params(("tenant" = String, Path), ("segment" = String, Path)), request_body = PutSegment,
    responses((status = 200, body = SegmentView), (status = 201, body = SegmentView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_segment(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((tenant, segment)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PutSegment>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    check_id("segment", &segment)?;
    if let Some(name) = body.definition.get("name") {
        if name.as_str() != Some(segment.as_str()) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_segment",
                format!("invalid segment: name: {name} differs from the segment id {segment:?} in the path (leave it out or make them equal)"),
            )
            .with_details(json!({"place": "name"})));
        }
    }
    let overlap = body.overlap.unwrap_or_else(|| "skip".into());
    if !matches!(overlap.as_str(), "skip" | "buffer_one" | "allow") {
        return Err(ApiError::bad_request("invalid_body", format!("overlap {overlap:?}: expected skip, buffer_one or allow")));
    }
    let timezone = body.timezone.unwrap_or_else(|| "UTC".into());
    let next_due_at = match &body.schedule {
        None => {
            if timezone.parse::<chrono_tz::Tz>().is_err() {
                return Err(ApiError::bad_request("invalid_schedule", format!("timezone {timezone:?}: not an IANA time zone name")));
            }
            None
        }
        Some(schedule) => {
            let parsed = CronSchedule::parse(schedule, &timezone).map_err(|e| ApiError::bad_request("invalid_schedule", e))?;
            let next = parsed.next_after(now_micros());
            if next.is_none() {
                return Err(ApiError::bad_request("invalid_schedule", format!("schedule {schedule:?} is never due again")));
            }
            next
        }
    };
    let model = s.store.model(&tenant.id).await?.ok_or_else(|| ApiError::conflict("the tenant has no model: PUT its model first"))?;
    let model_value: Value = serde_json::from_str(&model.definition).map_err(ApiError::internal)?;
    let catalog = check_model(&tenant, &model_value).await?;
    Segment::from_value(&body.definition, &catalog)?;
    let row = SegmentRow {
        tenant_id: tenant.id.clone(),
        id: segment.clone(),
        definition: body.definition.to_string(),
        schedule: body.schedule,
        timezone,
        overlap,
        next_due_at,
        ..SegmentRow::default()
    };
    let created = s.store.put_segment(&row).await?;
    s.schedules.notify_one();
    let stored = s.store.segment(&tenant.id, &segment).await?.ok_or_else(|| ApiError::internal("segment vanished"))?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(segment_view(stored)?)).into_response())
}

/// One segment.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/segments/{segment}", tag = "segments",
    params(("tenant" = String, Path), ("segment" = String, Path)),
    responses((status = 200, body = SegmentView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_segment(State(s): State<AppState>, caller: Caller, ApiPath((tenant, segment)): ApiPath<(String, String)>) -> Result<Json<SegmentView>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let row = s.store.segment(&tenant.id, &segment).await?.ok_or_else(|| ApiError::not_found(format!("no segment {segment:?}")))?;
    Ok(Json(segment_view(row)?))
}

/// Deletes a segment (its jobs and history stay readable by run id).
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/segments/{segment}", tag = "segments",
    params(("tenant" = String, Path), ("segment" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn delete_segment(State(s): State<AppState>, caller: Caller, ApiPath((tenant, segment)): ApiPath<(String, String)>) -> Result<StatusCode, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    if s.store.delete_segment(&tenant.id, &segment).await? { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError::not_found(format!("no segment {segment:?}"))) }
}

/// The tenant's segments.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/segments", tag = "segments", params(("tenant" = String, Path), AfterPage),
    responses((status = 200, body = SegmentPage), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn list_segments(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(tenant): ApiPath<String>,
    ApiQuery(page): ApiQuery<AfterPage>,
) -> Result<Json<SegmentPage>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let limit = limit(page.limit, 100, 1000)?;
    let rows = s.store.segments(&tenant.id, page.after.as_deref().unwrap_or(""), limit).await?;
    let next = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.id.clone())).flatten();
    let items = rows.into_iter().map(segment_view).collect::<Result<_, _>>()?;
    Ok(Json(SegmentPage { items, next }))
}

// ---- runs (jobs)

fn job_view(job: JobRow) -> JobView {
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
    }
}

fn job_view_waiting(pool: &Pool, job: JobRow) -> JobView {
    let waiting = pool.why_waiting(&job).map(WaitingView::from);
    let mut view = job_view(job);
    view.waiting = waiting;
    view
}

/// Enqueues a job for a segment; `timeout` replaces the deadline from the estimate.
pub async fn submit(
    state: &AppState,
    tenant: &Tenant,
    segment: &str,
    as_of: i64,
    key: Option<String>,
    trigger: &str,
    timeout: Option<Duration>,
    trace_link: Option<String>,
) -> Result<(JobRow, bool), ApiError> {
    let Some(segment) = state.store.segment(&tenant.id, segment).await? else {
        return Err(ApiError::not_found(format!("no segment {segment:?}")));
    };
    submit_to(state, tenant, &segment, as_of, key, trigger, timeout, trace_link).await
}

/// [`submit`] for a segment already read.
#[allow(clippy::too_many_arguments)]
async fn submit_to(
    state: &AppState,
    tenant: &Tenant,
    segment: &SegmentRow,
    as_of: i64,
    key: Option<String>,
    trigger: &str,
    timeout: Option<Duration>,
    trace_link: Option<String>,
) -> Result<(JobRow, bool), ApiError> {
    let mut job = state.sizing.new_job(&state.store, tenant, segment, as_of, key, trigger, timeout).await?;
    job.trace_link = trace_link;
    let (job, created) = state.store.insert_job(&job).await?;
    if created {
        state.pool.enqueued(job.clone(), Some(tenant));
    }
    Ok((job, created))
}

/// Enqueues a run of the segment. With an `Idempotency-Key` this tenant used before, answers
/// the first job (200) instead of queuing another.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/segments/{segment}/runs", tag = "runs",
    params(("tenant" = String, Path), ("segment" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body(content = Option<EnqueueRun>),
    responses((status = 202, body = JobView), (status = 200, body = JobView, description = "the job first queued with this idempotency key"),
        (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn enqueue_run(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((tenant, segment)): ApiPath<(String, String)>,
    headers: HeaderMap,
    request_trace: Option<axum::Extension<RequestTrace>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // The tenant and the segment in one read: this is the hot path of submissions.
    caller.may_see(&tenant)?;
    let (tenant, segment_row) = s.store.tenant_and_segment(&tenant, &segment).await?.ok_or_else(|| ApiError::not_found(format!("no tenant {tenant:?}")))?;
    let request: EnqueueRun = if body.iter().all(u8::is_ascii_whitespace) { EnqueueRun::default() } else { parse_json(&body)? };
    let as_of = match &request.as_of {
        None => now_micros(),
        Some(text) => cohort_executor::parse_timestamp(text)
            .ok_or_else(|| ApiError::bad_request("invalid_body", format!("as_of {text:?} is not an RFC 3339 timestamp")))?,
    };
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 visible ASCII characters"))?;
            if k.starts_with("schedule:") {
                return Err(ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key may not start with \"schedule:\" (the schedules' own keys)"));
            }
            Some(k.to_string())
        }
    };
    let timeout = match request.timeout_seconds {
        None => None,
        Some(t) if t.is_finite() && t > 0.0 && t < 1e9 => Some(Duration::from_secs_f64(t)),
        Some(t) => return Err(ApiError::bad_request("invalid_body", format!("timeout_seconds must be a positive number of seconds, not {t}"))),
    };
    let segment_row = segment_row.ok_or_else(|| ApiError::not_found(format!("no segment {segment:?}")))?;
    let (job, created) = submit_to(&s, &tenant, &segment_row, as_of, key, "api", timeout, request_trace.map(|t| t.0.0)).await?;
    let status = if created { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(job_view_waiting(&s.pool, job))).into_response())
}

/// The segment's jobs, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/segments/{segment}/runs", tag = "runs",
    params(("tenant" = String, Path), ("segment" = String, Path), BeforePage),
    responses((status = 200, body = JobPage), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn list_runs(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((tenant, segment)): ApiPath<(String, String)>,
    ApiQuery(page): ApiQuery<BeforePage>,
) -> Result<Json<JobPage>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let limit = limit(page.limit, 100, 1000)?;
    let rows = s.store.jobs_of_segment(&tenant.id, &segment, page.before.as_deref().unwrap_or(""), limit).await?;
    let next = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.id.clone())).flatten();
    Ok(Json(JobPage { items: rows.into_iter().map(|j| job_view_waiting(&s.pool, j)).collect(), next }))
}

/// One job, with its transitions. `wait_seconds` waits for a final state.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/runs/{run}", tag = "runs",
    params(("tenant" = String, Path), ("run" = String, Path), WaitQuery),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_run(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((tenant, run)): ApiPath<(String, String)>,
    ApiQuery(wait): ApiQuery<WaitQuery>,
) -> Result<Json<JobView>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let missing = || ApiError::not_found(format!("no run {run:?}"));
    let while_status = match wait.while_status.as_deref() {
        None => None,
        Some(name) => Some(
            JobStatus::parse(name)
                .ok_or_else(|| ApiError::bad_request("invalid_query", format!("while_status {name:?}: expected a job status such as queued or running")))?,
        ),
    };
    let waiting = |status: JobStatus| match while_status {
        Some(w) => status == w,
        None => !status.is_final(),
    };
    let wait = Duration::from_secs(wait.wait_seconds.unwrap_or(0).min(60));
    let mut events = s.pool.subscribe();
    let mut job = s.store.job(&tenant.id, &run).await?.ok_or_else(missing)?;
    let deadline = tokio::time::Instant::now() + wait;
    while waiting(job.status) && !wait.is_zero() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => break,
            Ok(Ok(event)) if event.job_id != job.id || waiting(event.status) => continue,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break,
            // A message for this job, or missed messages (lagged): read the store again.
            Ok(_) => {}
        }
        job = s.store.job(&tenant.id, &run).await?.ok_or_else(missing)?;
    }
    let transitions = s.store.job_events(&job.id).await?.into_iter().map(|(at, from, to, detail)| Transition { at: rfc3339(at), from, to, detail }).collect();
    let attempts = s.store.attempts(&job.id).await?.into_iter().map(AttemptView::from).collect();
    let mut view = job_view_waiting(&s.pool, job);
    view.transitions = transitions;
    view.attempt_history = attempts;
    view.estimate = s.store.job_estimate(&view.id).await?.map(|e| EstimateView {
        memory_bytes: e.memory_bytes,
        bound_bytes: e.bound_bytes,
        runtime_seconds: e.runtime_micros as f64 / 1e6,
        model_version: e.model_version,
        basis: e.basis,
        features: serde_json::from_str(&e.features).unwrap_or_default(),
    });
    Ok(Json(view))
}

/// Cancels a job that has not finished.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/runs/{run}/cancel", tag = "runs",
    params(("tenant" = String, Path), ("run" = String, Path)),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn cancel_run(State(s): State<AppState>, caller: Caller, ApiPath((tenant, run)): ApiPath<(String, String)>) -> Result<Json<JobView>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let missing = || ApiError::not_found(format!("no run {run:?}"));
    let mut events = s.pool.subscribe();
    let job = s.store.job(&tenant.id, &run).await?.ok_or_else(missing)?;
    if job.status.is_final() {
        return Err(ApiError::conflict(format!("run {run:?} is already {}", job.status.as_str())));
    }
    for from in [JobStatus::Queued, JobStatus::Retrying] {
        if s.store.transition(&job.id, from, JobStatus::Cancelled, "cancelled by request", None).await? {
            s.pool.forget(&job.id, &job.tenant_id);
            s.pool.announce(&job.id, JobStatus::Cancelled);
            s.pool.ended(&job, "cancelled", None);
        }
    }
    if s.pool.cancel(&job.id) {
        // Running here: wait (briefly) for the worker to record the cancellation.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
            if event.job_id == job.id && event.status.is_final() {
                break;
            }
        }
    }
    let job = s.store.job(&tenant.id, &run).await?.ok_or_else(missing)?;
    Ok(Json(job_view_waiting(&s.pool, job)))
}

// ---- members and history

fn key_value(key: String, key_type: &str) -> Value {
    if key_type == "int" {
        if let Ok(n) = key.parse::<i64>() {
            return Value::from(n);
        }
    }
    Value::String(key)
}

fn history_record(row: RunRow) -> HistoryRecord {
    HistoryRecord {
        run_id: row.run_id,
        previous_run_id: Some(row.previous_run_id).filter(|r| !r.is_empty()),
        members: row.members,
        added: row.added,
        removed: row.removed,
        key_type: row.key_type,
        committed_at: rfc3339(row.committed_at),
    }
}

/// Reads one page of the file named `files` of a run (members or changes) off the async
/// threads; `None` if the file is gone.
async fn read_page(s: &AppState, tenant: &str, segment: &str, files: &str, members: bool, offset: i64, limit: i64) -> Result<Option<KeyPage>, ApiError> {
    let (store, t, seg, f) = (s.files.clone(), tenant.to_string(), segment.to_string(), files.to_string());
    let (offset, limit) = (u64::try_from(offset).unwrap_or(0), u64::try_from(limit).unwrap_or(0));
    let page = tokio::task::spawn_blocking(move || {
        if members { store.read_members_page(&t, &seg, &f, offset, limit) } else { store.read_changes_page(&t, &seg, &f, offset, limit) }
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(page)
}

/// The segment's members, paged: of its latest run, or of the run `run_id` names.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/segments/{segment}/members", tag = "members",
    params(("tenant" = String, Path), ("segment" = String, Path), MembersQuery),
    responses((status = 200, body = MembersPage),
        (status = 404, body = ErrorBody, description = "No such segment, or no run `run_id` in its history"),
        (status = 410, body = RunGoneBody, description = "The members of the pinned run `run_id` are gone (newer runs replaced them); \
            `error.details.latest_run_id` names the run to read now")),
    security(("bearer" = [])))]
async fn get_members(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((tenant, segment)): ApiPath<(String, String)>,
    ApiQuery(page): ApiQuery<MembersQuery>,
) -> Result<Json<MembersPage>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let limit = limit(page.limit, 1000, 10_000)?;
    let offset = page.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::bad_request("invalid_query", "offset must not be negative"));
    }
    let missing_run = |run: &str| ApiError::not_found(format!("no run {run:?} in the history of {segment:?}"));
    // Unpinned, a commit may replace the latest run (and delete its members file) between
    // reading which run is the latest and opening its file: read the new latest then.
    for _ in 0..8 {
        let row = s.store.segment(&tenant.id, &segment).await?.ok_or_else(|| ApiError::not_found(format!("no segment {segment:?}")))?;
        let run_id = match &page.run_id {
            Some(pinned) => pinned.clone(),
            None if row.latest_run_id.is_empty() => {
                return Ok(Json(MembersPage { run_id: None, key_type: None, total: 0, offset, items: Vec::new() }));
            }
            None => row.latest_run_id.clone(),
        };
        let run = match s.store.run(&tenant.id, &run_id).await?.filter(|r| r.segment_id == segment) {
            Some(run) => run,
            None if page.run_id.is_some() => return Err(missing_run(&run_id)),
            // The segment was deleted and made again meanwhile: read it again.
            None => continue,
        };
        match read_page(&s, &tenant.id, &segment, &run.files, true, offset, limit).await? {
            Some(found) => {
                let total = i64::try_from(found.total).unwrap_or(i64::MAX);
                let items = found.keys.into_iter().map(|(k, _)| key_value(k, &run.key_type)).collect();
                return Ok(Json(MembersPage { run_id: Some(run.run_id), key_type: Some(run.key_type), total, offset, items }));
            }
            None if page.run_id.is_some() => {
                let latest = s.store.segment(&tenant.id, &segment).await?.map(|r| r.latest_run_id).filter(|r| !r.is_empty());
                if latest.as_deref() == Some(run_id.as_str()) {
                    return Err(ApiError::internal(format!("the members file of the latest run {run_id} of {segment:?} is missing")));
                }
                return Err(ApiError::new(StatusCode::GONE, "run_gone", format!("the members of run {run_id:?} are gone: newer runs replaced them"))
                    .with_details(json!({ "latest_run_id": latest })));
            }
            None => continue,
        }
    }
    Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "the segment's latest run kept changing while it was read; try again"))
}

/// The segment's membership history, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/segments/{segment}/history", tag = "members",
    params(("tenant" = String, Path), ("segment" = String, Path), BeforePage),
    responses((status = 200, body = HistoryPage), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_history(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((tenant, segment)): ApiPath<(String, String)>,
    ApiQuery(page): ApiQuery<BeforePage>,
) -> Result<Json<HistoryPage>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let limit = limit(page.limit, 100, 1000)?;
    let rows = s.store.runs(&tenant.id, &segment, page.before.as_deref().unwrap_or(""), limit).await?;
    if rows.is_empty() && s.store.segment(&tenant.id, &segment).await?.is_none() {
        return Err(ApiError::not_found(format!("no segment {segment:?}")));
    }
    let next = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.run_id.clone())).flatten();
    Ok(Json(HistoryPage { items: rows.into_iter().map(history_record).collect(), next }))
}

/// One run's record and the keys it added and removed, paged.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/segments/{segment}/history/{run}", tag = "members",
    params(("tenant" = String, Path), ("segment" = String, Path), ("run" = String, Path), OffsetPage),
    responses((status = 200, body = HistoryDetail), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_history_record(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((tenant, segment, run)): ApiPath<(String, String, String)>,
    ApiQuery(page): ApiQuery<OffsetPage>,
) -> Result<Json<HistoryDetail>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let limit = limit(page.limit, 1000, 10_000)?;
    let offset = page.offset.unwrap_or(0).max(0);
    let row = s
        .store
        .run(&tenant.id, &run)
        .await?
        .filter(|r| r.segment_id == segment)
        .ok_or_else(|| ApiError::not_found(format!("no run {run:?} in the history of {segment:?}")))?;
    // A run that changed nothing may have no file (a job that rode on another's execution).
    let (total, changes) = if row.added == 0 && row.removed == 0 {
        (0, Vec::new())
    } else {
        let page = read_page(&s, &tenant.id, &segment, &row.files, false, offset, limit)
            .await?
            .ok_or_else(|| ApiError::internal(format!("the changes file of run {run} is missing")))?;
        (i64::try_from(page.total).unwrap_or(i64::MAX), page.keys)
    };
    let changes = changes.into_iter().map(|(key, change)| KeyChange { key: key_value(key, &row.key_type), change }).collect();
    Ok(Json(HistoryDetail { run: history_record(row), total, offset, changes }))
}

// ---- service endpoints

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.store.ping().await {
        Ok(()) => Json(json!({"status": "ready", "store": s.store.backend()})).into_response(),
        Err(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", format!("the store does not answer: {e}")).into_response(),
    }
}

// ---- triage

/// Which failures a triage report covers, and how it is written.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TriageQuery {
    /// The window's start: a duration before `until` (`24h`, `30m`, `7d`) or an RFC 3339
    /// time; default `24h`.
    pub since: Option<String>,
    /// The window's end, RFC 3339; default now.
    pub until: Option<String>,
    /// `json` (default), `markdown` or `html`.
    pub format: Option<String>,
    /// Only this tenant's failures (admin; a tenant token always sees only its own).
    pub tenant: Option<String>,
}

/// A report's format.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ReportFormat {
    Json,
    Markdown,
    Html,
}

impl ReportFormat {
    fn parse(text: Option<&str>) -> Result<ReportFormat, ApiError> {
        match text.unwrap_or("json") {
            "json" => Ok(ReportFormat::Json),
            "markdown" | "md" => Ok(ReportFormat::Markdown),
            "html" => Ok(ReportFormat::Html),
            other => Err(ApiError::bad_request("invalid_query", format!("format {other:?}: expected json, markdown or html"))),
        }
    }

    fn respond(self, report: &cohort_alerting::triage::Report, title: &str) -> Response {
        match self {
            ReportFormat::Json => Json(report).into_response(),
            ReportFormat::Markdown => ([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], cohort_alerting::triage::markdown(report)).into_response(),
            ReportFormat::Html => axum::response::Html(ui::triage_page(report, title)).into_response(),
        }
    }
}

/// A triage report as an HTML page of its own.
pub fn triage_html(report: &cohort_alerting::triage::Report, title: &str) -> String {
    ui::triage_page(report, title)
}

/// `24h` before `until`, or an RFC 3339 time, in microseconds.
fn window_start(since: &str, until: i64) -> Result<i64, ApiError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(since) {
        return Ok(t.timestamp_micros());
    }
    let ms =
        cohort_alerting::config::parse_duration_ms(since).map_err(|e| ApiError::bad_request("invalid_query", format!("since: {e}; or an RFC 3339 time")))?;
    Ok(until.saturating_sub(ms.saturating_mul(1000)))
}

/// A failure triage report made now over a window (default the last 24 hours): failed
/// attempts grouped by signature (error class and normalized message), classified with a
/// remediation, new signatures first. A tenant token sees only its own tenant's failures.
#[utoipa::path(get, path = "/v1/triage", tag = "triage", params(TriageQuery),
    responses((status = 200, description = "The report: JSON, Markdown or HTML by `format`"), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_triage(State(s): State<AppState>, caller: Caller, ApiQuery(q): ApiQuery<TriageQuery>) -> Result<Response, ApiError> {
    let format = ReportFormat::parse(q.format.as_deref())?;
    let until = match q.until.as_deref() {
        None => now_micros(),
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map_err(|e| ApiError::bad_request("invalid_query", format!("until {text:?}: {e} (an RFC 3339 time)")))?
            .timestamp_micros(),
    };
    let since = window_start(q.since.as_deref().unwrap_or("24h"), until)?;
    if since >= until {
        return Err(ApiError::bad_request("invalid_query", "since must be before until"));
    }
    let tenant = match (&caller, q.tenant) {
        (Caller::Admin, tenant) => tenant,
        (Caller::Tenant(own), None) => Some(own.clone()),
        (Caller::Tenant(own), Some(t)) if &t == own => Some(t),
        // Another tenant's failures are not there, as for a tenant that does not exist.
        (Caller::Tenant(_), Some(t)) => return Err(ApiError::not_found(format!("no tenant {t:?}"))),
    };
    let report = crate::triage::make(&s.store, &s.triage, since, until, tenant.as_deref()).await?;
    Ok(format.respond(&report, "Failure triage"))
}

/// Stored triage reports.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TriageReportPage {
    /// Newest first.
    pub items: Vec<crate::triage::StoredReport>,
}

/// How many stored reports.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportListQuery {
    /// At most this many (default 30, at most 1000).
    pub limit: Option<i64>,
}

/// The triage reports made on schedule, newest first (admin only).
#[utoipa::path(get, path = "/v1/triage/reports", tag = "triage", params(ReportListQuery),
    responses((status = 200, body = TriageReportPage), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn list_triage_reports(State(s): State<AppState>, caller: Caller, ApiQuery(q): ApiQuery<ReportListQuery>) -> Result<Json<TriageReportPage>, ApiError> {
    caller.admin()?;
    let limit = limit(q.limit, 30, 1000)?;
    Ok(Json(TriageReportPage { items: crate::triage::stored(&s.store, limit).await? }))
}

/// A stored report's format.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// `json` (default), `markdown` or `html`.
    pub format: Option<String>,
}

/// One stored triage report (admin only).
#[utoipa::path(get, path = "/v1/triage/reports/{report}", tag = "triage", params(("report" = String, Path), ReportQuery),
    responses((status = 200, description = "The report: JSON, Markdown or HTML by `format`"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_triage_report(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    let format = ReportFormat::parse(q.format.as_deref())?;
    let json = crate::triage::stored_report(&s.store, &id).await?.ok_or_else(|| ApiError::not_found(format!("no triage report {id:?}")))?;
    let report: cohort_alerting::triage::Report =
        serde_json::from_value(json).map_err(|e| ApiError::from(crate::Error::Internal(format!("stored report {id}: {e}"))))?;
    Ok(format.respond(&report, &format!("Triage report {id}")))
}

// ---- estimator

/// The estimator: its model, calibration and recent accuracy (admin only).
#[utoipa::path(get, path = "/v1/estimator", tag = "estimator",
    responses((status = 200, body = EstimatorStatus), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn get_estimator(State(s): State<AppState>, caller: Caller) -> Result<Json<EstimatorStatus>, ApiError> {
    caller.admin()?;
    Ok(Json(s.estimates.status(&s.store).await?))
}

/// Refits the estimator now on the recent runs in the store (admin only), and answers with
/// its state. With too few finished runs the model in use stays.
#[utoipa::path(post, path = "/v1/estimator/refit", tag = "estimator",
    responses((status = 200, body = EstimatorStatus), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn refit_estimator(State(s): State<AppState>, caller: Caller) -> Result<Json<EstimatorStatus>, ApiError> {
    caller.admin()?;
    s.estimates.refit(&s.store).await?;
    Ok(Json(s.estimates.status(&s.store).await?))
}

/// A Prometheus label value, escaped.
// ---- alerts, silences, receivers

/// A page of alerts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertPage {
    /// Newest first.
    pub items: Vec<AlertView>,
}

/// Which alerts.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// `firing` (default), `resolved` or `all`.
    pub state: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// Alerts: firing by default, or the history (`state=resolved` or `all`). A tenant token sees
/// only the alerts about its own tenant.
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts", params(AlertQuery),
    responses((status = 200, body = AlertPage), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
async fn list_alerts(State(s): State<AppState>, caller: Caller, ApiQuery(q): ApiQuery<AlertQuery>) -> Result<Json<AlertPage>, ApiError> {
    let limit = limit(q.limit, 100, 1000)?;
    let state = match q.state.as_deref().unwrap_or("firing") {
        "firing" => Some("firing"),
        "resolved" => Some("resolved"),
        "all" => None,
        other => return Err(ApiError::bad_request("invalid_query", format!("state {other:?}: expected firing, resolved or all"))),
    };
    let tenant = match &caller {
        Caller::Admin => None,
        Caller::Tenant(own) => Some(own.as_str()),
    };
    Ok(Json(AlertPage { items: s.store.alerts(state, tenant, limit).await? }))
}

/// One alert with its history (fired, inhibited, notified, resolved).
#[utoipa::path(get, path = "/v1/alerts/{alert}", tag = "alerts", params(("alert" = String, Path)),
    responses((status = 200, body = AlertView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_alert(State(s): State<AppState>, caller: Caller, ApiPath(id): ApiPath<String>) -> Result<Json<AlertView>, ApiError> {
    let alert = s.store.alert(&id).await?.filter(|a| match &caller {
        Caller::Admin => true,
        Caller::Tenant(own) => a.labels.get("tenant") == Some(own),
    });
    alert.map(Json).ok_or_else(|| ApiError::not_found(format!("no alert {id:?}")))
}

/// A new silence.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSilence {
    /// Label matchers, all of which must hold: `tenant=acme`, `scope!=global`.
    pub matchers: Vec<String>,
    /// How long it lasts, in seconds from now.
    pub duration_seconds: f64,
    /// Why (shown with it).
    #[serde(default)]
    pub comment: String,
}

/// Silences notifications of the alerts its matchers select, until it expires (admin only).
#[utoipa::path(post, path = "/v1/silences", tag = "alerts", request_body = CreateSilence,
    responses((status = 201, body = SilenceView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn create_silence(State(s): State<AppState>, caller: Caller, ApiJson(body): ApiJson<CreateSilence>) -> Result<Response, ApiError> {
    caller.admin()?;
    if body.matchers.is_empty() {
        return Err(ApiError::bad_request("invalid_silence", "a silence needs at least one matcher (label=value or label!=value)"));
    }
    let matchers = body
        .matchers
        .iter()
        .map(|m| cohort_alerting::notify::Matcher::parse(m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request("invalid_silence", e))?;
    if !(body.duration_seconds.is_finite() && body.duration_seconds > 0.0 && body.duration_seconds <= 366.0 * 86400.0) {
        return Err(ApiError::bad_request("invalid_silence", "duration_seconds must be more than 0 and at most a year"));
    }
    let now = now_micros();
    let silence = s.store.create_silence(&matchers, now, now + (body.duration_seconds * 1e6) as i64, &body.comment).await?;
    Ok((StatusCode::CREATED, Json(silence)).into_response())
}

/// Silences, newest first, expired ones included (admin only).
#[utoipa::path(get, path = "/v1/silences", tag = "alerts",
    responses((status = 200, body = [SilenceView]), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn list_silences(State(s): State<AppState>, caller: Caller) -> Result<Json<Vec<SilenceView>>, ApiError> {
    caller.admin()?;
    Ok(Json(s.store.silences().await?))
}

/// Ends a silence now (admin only).
#[utoipa::path(delete, path = "/v1/silences/{silence}", tag = "alerts", params(("silence" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn expire_silence(State(s): State<AppState>, caller: Caller, ApiPath(id): ApiPath<String>) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    if !s.store.expire_silence(&id).await? {
        return Err(ApiError::not_found(format!("no silence {id:?}")));
    }
    // What it held back and still fires is notified now.
    s.alerting.wake();
    Ok(StatusCode::NO_CONTENT)
}

/// A new webhook receiver.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReceiver {
    /// Its name (letters, digits, `_`, `-`).
    pub id: String,
    /// Where notifications are POSTed (`http://` or `https://`).
    pub url: String,
    /// The signing secret (`whsec_<base64>`, as Standard Webhooks); one is made when absent.
    pub secret: Option<String>,
    /// Which alerts it receives (all of them when empty): `severity=page`, `region=eu-west`.
    #[serde(default)]
    pub matchers: Vec<String>,
}

/// Registers a webhook receiver (admin only). The answer shows the signing secret, once.
#[utoipa::path(post, path = "/v1/receivers", tag = "alerts", request_body = CreateReceiver,
    responses((status = 201, body = ReceiverView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn create_receiver(State(s): State<AppState>, caller: Caller, ApiJson(body): ApiJson<CreateReceiver>) -> Result<Response, ApiError> {
    caller.admin()?;
    if !valid_id(&body.id) {
        return Err(ApiError::bad_request("invalid_receiver", "id: 1 to 64 of A-Z a-z 0-9 _ -"));
    }
    let url = reqwest::Url::parse(&body.url).map_err(|e| ApiError::bad_request("invalid_receiver", format!("url: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::bad_request("invalid_receiver", "url: http:// or https:// only"));
    }
    s.alerting.settings().egress.check_url(&url).map_err(|why| ApiError::bad_request("invalid_receiver", format!("url: {why}")))?;
    let matchers = body
        .matchers
        .iter()
        .map(|m| cohort_alerting::notify::Matcher::parse(m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request("invalid_receiver", e))?;
    let secret = match body.secret {
        Some(secret) if secret.len() >= 16 => secret,
        Some(_) => return Err(ApiError::bad_request("invalid_receiver", "secret: at least 16 characters")),
        None => {
            use base64::Engine;
            let bytes: [u8; 24] = rand::random();
            format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    };
    if !s.store.create_receiver(&body.id, url.as_str(), &secret, &matchers).await? {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", format!("receiver {:?} exists", body.id)));
    }
    let mut view = s.store.receivers().await?.into_iter().find(|r| r.id == body.id).ok_or_else(|| ApiError::internal("the receiver just stored is missing"))?;
    view.secret = Some(secret);
    s.alerting.wake();
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Receivers with their delivery counts (admin only).
#[utoipa::path(get, path = "/v1/receivers", tag = "alerts",
    responses((status = 200, body = [ReceiverView]), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn list_receivers(State(s): State<AppState>, caller: Caller) -> Result<Json<Vec<ReceiverView>>, ApiError> {
    caller.admin()?;
    Ok(Json(s.store.receivers().await?))
}

/// Removes a receiver and its undelivered notifications (admin only).
#[utoipa::path(delete, path = "/v1/receivers/{receiver}", tag = "alerts", params(("receiver" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn delete_receiver(State(s): State<AppState>, caller: Caller, ApiPath(id): ApiPath<String>) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    if s.store.delete_receiver(&id).await? { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError::not_found(format!("no receiver {id:?}"))) }
}

async fn metrics(State(s): State<AppState>) -> Result<Response, ApiError> {
    use crate::metrics::{Family, render};
    // The store's reads, side by side (each on its own pooled connection).
    let (counts, (missed, overlapped), estimator, firing, depth) = tokio::try_join!(
        s.store.job_counts(),
        s.store.skipped_runs(),
        s.estimates.status(&s.store),
        s.store.firing_alerts(),
        s.store.queue_depth_by_region(),
    )?;
    let (used_slots, used_bytes) = s.pool.usage();
    let (slots, budget) = s.pool.capacity();
    let recent = &estimator.recent;
    let mut families = Vec::new();
    let mut single = |kind: fn(&str, &str) -> Family, name: &str, help: &str, value: f64| {
        let mut f = kind(name, help);
        f.sample(&[], value);
        families.push(f);
    };
    single(
        Family::counter,
        "cohort_schedule_runs_missed_total",
        "Due runs skipped: missed while the service was down past the catch-up window.",
        missed as f64,
    );
    single(Family::counter, "cohort_schedule_runs_overlapped_total", "Due runs skipped because the segment's previous run was still going.", overlapped as f64);
    single(Family::gauge, "cohort_pool_queued_jobs", "Jobs this process's dispatcher holds queued.", s.pool.queued() as f64);
    single(Family::gauge, "cohort_pool_slots", "Executor worker slots.", slots as f64);
    single(Family::gauge, "cohort_pool_slots_used", "Slots running a job.", used_slots as f64);
    single(Family::gauge, "cohort_pool_memory_budget_bytes", "Memory the pool may grant.", budget as f64);
    single(Family::gauge, "cohort_pool_memory_granted_bytes", "Memory granted to running jobs.", used_bytes as f64);
    single(Family::gauge, "cohort_estimator_model_version", "The estimator model in use (0: rules only).", estimator.model_version as f64);
    single(Family::gauge, "cohort_estimator_recent_runs", "Recent finished runs the accuracy gauges look at.", recent.runs as f64);
    single(Family::gauge, "cohort_estimator_under_grant_ratio", "Share of recent runs whose first grant ran out of memory.", recent.under_grant_rate);
    single(Family::gauge, "cohort_estimator_coverage_target_ratio", "The share of runs meant to stay within their grant.", estimator.coverage);
    single(Family::gauge, "cohort_estimator_relative_slack_ratio", "Mean (grant - peak) / grant of recent runs whose first grant held.", recent.relative_slack);
    single(Family::gauge, "cohort_estimator_runtime_error_ratio", "Median absolute percentage error of recent runtime estimates.", recent.runtime_mdape);

    let mut alerts = Family::gauge("cohort_alerts_firing", "Alerts firing, by rule and scope.");
    for rule in ["failures", "burn_rate", "runtime"] {
        for scope in ["global", "region", "tenant"] {
            let n = firing.iter().find(|(r, sc, _)| r == rule && sc == scope).map_or(0, |f| f.2);
            alerts.sample(&[("rule", rule), ("scope", scope)], n as f64);
        }
    }
    families.push(alerts);
    let counts_of = &s.alerting.counts;
    let mut deliveries = Family::counter("cohort_webhook_deliveries_total", "Webhook delivery attempts by result.");
    for (result, n) in [
        ("delivered", &counts_of.delivered),
        ("failed", &counts_of.failed),
        ("gave_up", &counts_of.gave_up),
        ("silenced", &counts_of.silenced),
        ("receiver_disabled", &counts_of.disabled),
    ] {
        deliveries.sample(&[("result", result)], n.load(std::sync::atomic::Ordering::Relaxed) as f64);
    }
    families.push(deliveries);
    let mut jobs = Family::gauge("cohort_jobs", "Jobs in the store by status.");
    for status in JobStatus::ALL {
        let n = counts.iter().find(|(s, _)| s == status.as_str()).map(|(_, n)| *n).unwrap_or(0);
        jobs.sample(&[("status", status.as_str())], n as f64);
    }
    families.push(jobs);
    let mut queue = Family::gauge("cohort_queue_depth", "Jobs waiting (queued or waiting to retry) in the store, by region.");
    for (region, n) in &depth {
        queue.sample(&[("region", region)], *n as f64);
    }
    families.push(queue);
    let text = render(&s.pool.telemetry().registry, families);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// The error answers any operation can give, documented on every one: 400 for parameters or a
/// body that do not parse, 401 without a valid token, 403 for a token of the wrong scope, 404 for
/// what does not exist, and 413 for a body over `max_body` where there is a body.
struct CommonErrors;

impl utoipa::Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Ref, RefOr, Response};
        let error = |what: &str| {
            let mut r = Response::new(what);
            r.content.insert("application/json".into(), Content::new(Some(Ref::from_schema_name("ErrorBody"))));
            RefOr::T(r)
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                let mut common = vec![
                    ("400", "Parameters or a body that do not parse"),
                    ("401", "No valid bearer token"),
                    ("403", "The token may not do this"),
                    ("404", "Not found"),
                ];
                if operation.request_body.is_some() {
                    common.push(("413", "The body is larger than max_body"));
                    common.push(("415", "The body is not JSON"));
                }
                for (status, what) in common {
                    operation.responses.responses.entry(status.into()).or_insert_with(|| error(what));
                }
            }
        }
    }
}

/// The OpenAPI document of the API.
#[derive(OpenApi, Debug)]
#[openapi(
    info(title = "Cohort", description = "The Cohort control plane: tenants, data models, segments, runs and memberships."),
    paths(
        create_tenant, list_tenants, get_tenant, create_token, list_tokens, revoke_token, put_model, get_model, put_segment, get_segment,
        delete_segment, list_segments, enqueue_run, list_runs, get_run, cancel_run, get_members, get_history,
        get_history_record, get_estimator, refit_estimator, list_alerts, get_alert, create_silence, list_silences,
        expire_silence, create_receiver, list_receivers, delete_receiver, get_triage, list_triage_reports, get_triage_report
    ),
    components(schemas(ErrorBody, ErrorDetail, Tenant, TenantCreated, TokenCreated, TokenView, TokenList, TenantPage, ModelView, PutSegment,
        SegmentView, SegmentPage, EnqueueRun, JobView, Transition, WaitingView, AttemptView, JobPage, MembersPage, RunGoneBody, RunGoneError, RunGoneDetails,
        HistoryRecord, HistoryPage,
        KeyChange, HistoryDetail, JobStatus, CreateTenant, EstimatorStatus, RegimeStatus, Accuracy, EstimateView,
        AlertView, AlertEventView, AlertPage, SilenceView, CreateSilence, ReceiverView, CreateReceiver, TriageReportPage,
        crate::triage::StoredReport)),
    modifiers(&BearerAuth, &CommonErrors)
)]
pub struct ApiDoc;
