//! Triage reports: made on demand and as stored by the daily schedule.

use super::*;

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
    pub(super) fn parse(text: Option<&str>) -> Result<ReportFormat, ApiError> {
        match text.unwrap_or("json") {
            "json" => Ok(ReportFormat::Json),
            "markdown" | "md" => Ok(ReportFormat::Markdown),
            "html" => Ok(ReportFormat::Html),
            other => Err(ApiError::bad_request("invalid_query", format!("format {other:?}: expected json, markdown or html"))),
        }
    }

    pub(super) fn respond(self, report: &cohort_alerting::triage::Report, title: &str) -> Response {
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
pub(super) fn window_start(since: &str, until: i64) -> Result<i64, ApiError> {
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
pub(super) async fn get_triage(State(s): State<AppState>, caller: Caller, ApiQuery(q): ApiQuery<TriageQuery>) -> Result<Response, ApiError> {
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
pub(super) async fn list_triage_reports(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ReportListQuery>,
) -> Result<Json<TriageReportPage>, ApiError> {
    caller.admin()?;
    let limit = limit(q.limit, 30, 1000)?;
    Ok(Json(TriageReportPage { items: s.store.triage_reports(limit).await? }))
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
pub(super) async fn get_triage_report(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    let format = ReportFormat::parse(q.format.as_deref())?;
    let json = s.store.triage_report(&id).await?.ok_or_else(|| ApiError::not_found(format!("no triage report {id:?}")))?;
    let report: cohort_alerting::triage::Report =
        serde_json::from_value(json).map_err(|e| ApiError::from(crate::Error::Internal(format!("stored report {id}: {e}"))))?;
    Ok(format.respond(&report, &format!("Triage report {id}")))
}
