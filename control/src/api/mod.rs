//! The HTTP API under `/v1`, described by the OpenAPI document at `/v1/openapi.json` (generated
//! from these handlers by `utoipa`).
//!
//! Authorization: `Bearer <token>`. The admin token manages tenants and sees everything; a
//! tenant token sees only its own tenant, and any other tenant's resources answer 404 (the
//! same answer as a tenant that does not exist).

mod alerts;
mod auth;
mod error;
mod estimator;
mod health;
mod openapi;
mod runs;
mod segments;
mod tenants;
mod triage;
mod ui;
mod views;

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cohort_executor::Segment;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::OpenApi;

pub use error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, ErrorDetail, parse_json};

use alerts::*;
pub use auth::*;
use estimator::*;
use health::*;
pub use openapi::*;
pub use runs::*;
use segments::*;
pub use tenants::*;
pub use triage::*;
pub use views::*;

use crate::alerts::{AlertEventView, AlertView, ReceiverView, SilenceView};
use crate::estimates::{Accuracy, Estimates, EstimatorStatus, RegimeStatus};
use crate::jobs::JobStatus;
use crate::membership::{KeyPage, MembershipFiles};
use crate::pool::{Pool, Sizing, Waiting};
use crate::schedules::CronSchedule;
use crate::service::{StoredModel, Submission};
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
