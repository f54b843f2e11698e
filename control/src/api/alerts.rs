//! Alerts, silences and webhook receivers.

use super::*;

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
pub(super) async fn list_alerts(State(s): State<AppState>, caller: Caller, ApiQuery(q): ApiQuery<AlertQuery>) -> Result<Json<AlertPage>, ApiError> {
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
pub(super) async fn get_alert(State(s): State<AppState>, caller: Caller, ApiPath(id): ApiPath<String>) -> Result<Json<AlertView>, ApiError> {
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
pub(super) async fn create_silence(State(s): State<AppState>, caller: Caller, ApiJson(body): ApiJson<CreateSilence>) -> Result<Response, ApiError> {
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
pub(super) async fn list_silences(State(s): State<AppState>, caller: Caller) -> Result<Json<Vec<SilenceView>>, ApiError> {
    caller.admin()?;
    Ok(Json(s.store.silences().await?))
}

/// Ends a silence now (admin only).
#[utoipa::path(delete, path = "/v1/silences/{silence}", tag = "alerts", params(("silence" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn expire_silence(State(s): State<AppState>, caller: Caller, ApiPath(id): ApiPath<String>) -> Result<StatusCode, ApiError> {
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
pub(super) async fn create_receiver(State(s): State<AppState>, caller: Caller, ApiJson(body): ApiJson<CreateReceiver>) -> Result<Response, ApiError> {
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
pub(super) async fn list_receivers(State(s): State<AppState>, caller: Caller) -> Result<Json<Vec<ReceiverView>>, ApiError> {
    caller.admin()?;
    Ok(Json(s.store.receivers().await?))
}

/// Removes a receiver and its undelivered notifications (admin only).
#[utoipa::path(delete, path = "/v1/receivers/{receiver}", tag = "alerts", params(("receiver" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn delete_receiver(State(s): State<AppState>, caller: Caller, ApiPath(id): ApiPath<String>) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    if s.store.delete_receiver(&id).await? { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError::not_found(format!("no receiver {id:?}"))) }
}
