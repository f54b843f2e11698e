//! The service's own endpoints: health, readiness and `/metrics` (assembled by `crate::metrics::scrape`).

use super::*;

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(super) async fn readyz(State(s): State<AppState>) -> Response {
    match s.store.ping().await {
        Ok(()) => Json(json!({"status": "ready", "store": s.store.backend()})).into_response(),
        Err(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", format!("the store does not answer: {e}")).into_response(),
    }
}

pub(super) async fn metrics(State(s): State<AppState>) -> Result<Response, ApiError> {
    let text = crate::metrics::scrape(&s.store, &s.pool, &s.estimates, &s.alerting).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}
