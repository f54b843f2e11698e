//! The estimator's status and refits.

use super::*;

/// The estimator: its model, calibration and recent accuracy (admin only).
#[utoipa::path(get, path = "/v1/estimator", tag = "estimator",
    responses((status = 200, body = EstimatorStatus), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn get_estimator(State(s): State<AppState>, caller: Caller) -> Result<Json<EstimatorStatus>, ApiError> {
    caller.admin()?;
    Ok(Json(s.estimates.status(&s.store).await?))
}

/// Refits the estimator now on the recent runs in the store (admin only), and answers with
/// its state. With too few finished runs the model in use stays.
#[utoipa::path(post, path = "/v1/estimator/refit", tag = "estimator",
    responses((status = 200, body = EstimatorStatus), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn refit_estimator(State(s): State<AppState>, caller: Caller) -> Result<Json<EstimatorStatus>, ApiError> {
    caller.admin()?;
    s.estimates.refit(&s.store).await?;
    Ok(Json(s.estimates.status(&s.store).await?))
}
