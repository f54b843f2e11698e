//! The built-in web dashboard: server-side HTML with SVG charts, no script and nothing
//! fetched from elsewhere, so it works on an install with no Prometheus or Grafana.
//!
//! Pages: the overview (`/`), regions, tenants (searchable, paged), a tenant's segments and
//! jobs, a job's timeline, alerts and silences. They refresh themselves. Every page is for
//! the admin: the admin token is accepted as a bearer token, or the `cohort_session` cookie
//! that `/ui/login` sets (a random session id; the store keeps only its hash, and the session
//! ends at `/ui/logout` or after `ui_session_seconds`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use axum::extract::{Form, Path as ApiPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use cohort_common::units::human_bytes;
use cohort_dashboards::html::{esc, layout, url};
use cohort_dashboards::svg::{Bar, Series, line_chart, timeline};

use cohort_alerting::triage::Report;

use super::{AppState, new_token, stored_token, token_hash};
use crate::{now_micros, rfc3339};

/// The overview's window.
const WINDOW_MICROS: i64 = 3_600_000_000;
/// Chart buckets over the window (one a minute).
const BUCKETS: usize = 60;
/// Tenants on one page of the tenant list.
const TENANTS_PER_PAGE: i64 = 50;
/// The cookie that carries a signed-in admin's session id (the store keeps only its hash).
const COOKIE: &str = "cohort_session";

/// The session id a request's cookie carries.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name == COOKIE).then_some(value)
    })
}

/// Whether the request is the admin's: the admin token as a bearer token, or the cookie of a
/// live session.
async fn is_admin(s: &AppState, headers: &HeaderMap) -> bool {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    if bearer.is_some_and(|token| bool::from(token_hash(token).ct_eq(&s.admin_hash))) {
        return true;
    }
    let Some(id) = session_cookie(headers) else { return false };
    match s.store.session_live(&stored_token(id)).await {
        Ok(live) => live,
        Err(e) => {
            tracing::warn!(error = %e, "a dashboard session could not be checked");
            false
        }
    }
}

fn login_page(error: Option<&str>) -> (StatusCode, Html<String>) {
    let mut body = String::from("<h1>Cohort</h1><p>The dashboard is for the service's admin. Sign in with the admin token.</p>");
    if let Some(e) = error {
        let _ = write!(body, "<p class=\"bad\">{}</p>", esc(e));
    }
    body.push_str(
        "<form method=\"post\" action=\"/ui/login\"><label>Admin token <input type=\"password\" name=\"token\" autocomplete=\"current-password\"></label> \
         <button type=\"submit\">Sign in</button></form>",
    );
    (if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK }, Html(layout("Sign in", "", &body, None)))
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub(super) struct Login {
    token: String,
}

/// The cookie's attributes: `HttpOnly`, `SameSite=Strict`, and `Secure` behind https.
fn cookie_attributes(s: &AppState, max_age: u64) -> String {
    format!("Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}", if s.sessions.secure { "; Secure" } else { "" })
}

/// Checks the token, starts a session and sets its cookie.
pub(super) async fn login(State(s): State<AppState>, Form(form): Form<Login>) -> Response {
    let token = form.token.trim();
    if !bool::from(token_hash(token).ct_eq(&s.admin_hash)) {
        return login_page(Some("That is not the admin token.")).into_response();
    }
    let id = new_token("cs_");
    let lifetime = s.sessions.lifetime;
    let expires = now_micros().saturating_add(i64::try_from(lifetime.as_micros()).unwrap_or(i64::MAX));
    if let Err(e) = s.store.create_session(&stored_token(&id), expires).await {
        tracing::warn!(error = %e, "a dashboard session could not be stored");
        return error_page(StatusCode::SERVICE_UNAVAILABLE, "the session could not be stored; try again");
    }
    let cookie = format!("{COOKIE}={id}; {}", cookie_attributes(&s, lifetime.as_secs()));
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// Signs out: ends the session and clears the cookie.
pub(super) async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers)
        && let Err(e) = s.store.end_session(&stored_token(id)).await
    {
        tracing::warn!(error = %e, "a dashboard session could not be ended");
    }
    ([(header::SET_COOKIE, format!("{COOKIE}=; {}", cookie_attributes(&s, 0)))], Redirect::to("/")).into_response()
}

fn page(title: &str, active: &str, body: &str) -> Response {
    Html(layout(title, active, body, Some(15))).into_response()
}

fn error_page(status: StatusCode, message: &str) -> Response {
    (status, Html(layout("Error", "", &format!("<h1>{}</h1><p>{}</p>", status.as_u16(), esc(message)), None))).into_response()
}

/// A time as text (UTC, to the second).
fn when(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros).map_or_else(|| micros.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

fn seconds(micros: i64) -> String {
    format!("{:.2} s", micros as f64 / 1e6)
}

fn bytes(b: i64) -> String {
    human_bytes(u64::try_from(b).unwrap_or(0))
}

// ---- the jobs of the window

use crate::store::WindowJob;

/// The page for a store that could not be read.
fn unavailable(e: impl std::fmt::Display) -> Response {
    error_page(StatusCode::SERVICE_UNAVAILABLE, &format!("the store could not be read: {e}"))
}

/// Jobs that finished in the window, and those not finished yet.
async fn window_jobs(s: &AppState, since: i64) -> crate::Result<Vec<WindowJob>> {
    s.store.window_jobs(since).await
}

/// Attempts that ended in the window: (ended, grant, peak, elapsed).
async fn window_attempts(s: &AppState, since: i64) -> crate::Result<Vec<(i64, i64, Option<i64>, Option<i64>)>> {
    s.store.window_attempts(since, since - WINDOW_MICROS).await
}

/// Counts of finished jobs.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    succeeded: u64,
    failed: u64,
    cancelled: u64,
    waiting: u64,
    running: u64,
}

impl Tally {
    fn add(&mut self, j: &WindowJob) {
        match j.status.as_str() {
            "succeeded" => self.succeeded += 1,
            "failed" => self.failed += 1,
            "cancelled" => self.cancelled += 1,
            "running" | "admitted" => self.running += 1,
            _ => self.waiting += 1,
        }
    }

    fn rate(&self) -> Option<f64> {
        let done = self.succeeded + self.failed;
        (done > 0).then(|| self.succeeded as f64 / done as f64)
    }

    fn rate_text(&self) -> String {
        self.rate().map_or_else(|| "–".into(), |r| format!("{:.2}%", r * 100.0))
    }
}

// ---- charts

/// A chart over the overview's window.
fn chart_of(title: &str, series: &[Series<'_>], format: fn(f64) -> String, floor_max: f64) -> String {
    line_chart(title, "−60 min", series, format, floor_max)
}

fn bucket_of(at: i64, since: i64) -> Option<usize> {
    let i = (at - since) * BUCKETS as i64 / WINDOW_MICROS;
    usize::try_from(i).ok().filter(|i| *i < BUCKETS)
}

fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 - 1.0) * q).round() as usize;
    values.get(i).copied()
}

fn percent(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
}

fn secs(v: f64) -> String {
    if v >= 10.0 { format!("{v:.0} s") } else { format!("{v:.2} s") }
}

fn count(v: f64) -> String {
    format!("{v:.0}")
}

fn mem(v: f64) -> String {
    human_bytes(v.max(0.0) as u64)
}

/// The overview's four charts.
fn charts(jobs: &[WindowJob], attempts: &[(i64, i64, Option<i64>, Option<i64>)], since: i64, now: i64) -> String {
    let mut ok = vec![0u64; BUCKETS];
    let mut failed = vec![0u64; BUCKETS];
    let mut runtimes: Vec<Vec<f64>> = vec![Vec::new(); BUCKETS];
    let mut depth = vec![0f64; BUCKETS];
    for j in jobs {
        if let Some(b) = j.finished_at.and_then(|f| bucket_of(f, since)) {
            match j.status.as_str() {
                "succeeded" => ok[b] += 1,
                "failed" => failed[b] += 1,
                _ => {}
            }
        }
        // Waiting from creation until its (last) attempt started, or until now.
        let waited_until = j.started_at.unwrap_or(if j.status == "queued" || j.status == "retrying" { now } else { j.finished_at.unwrap_or(now) });
        for (i, d) in depth.iter_mut().enumerate() {
            let t = since + WINDOW_MICROS * (i as i64 + 1) / BUCKETS as i64;
            if j.created_at <= t && t < waited_until {
                *d += 1.0;
            }
        }
    }
    let mut granted = vec![0f64; BUCKETS];
    let mut used = vec![0f64; BUCKETS];
    let mut measured = vec![0u32; BUCKETS];
    for (end, grant, peak, elapsed) in attempts {
        let Some(b) = bucket_of(*end, since) else { continue };
        if let Some(e) = elapsed {
            runtimes[b].push(*e as f64 / 1e6);
        }
        if let Some(p) = peak {
            granted[b] += *grant as f64;
            used[b] += *p as f64;
            measured[b] += 1;
        }
    }
    let rate: Vec<Option<f64>> = ok.iter().zip(&failed).map(|(o, f)| (o + f > 0).then(|| *o as f64 / (o + f) as f64)).collect();
    let p50: Vec<Option<f64>> = runtimes.iter_mut().map(|v| quantile(v, 0.5)).collect();
    let p95: Vec<Option<f64>> = runtimes.iter_mut().map(|v| quantile(v, 0.95)).collect();
    let avg = |sum: &Vec<f64>| sum.iter().zip(&measured).map(|(s, n)| (*n > 0).then(|| s / f64::from(*n))).collect::<Vec<_>>();
    let mut out = String::from("<div class=\"charts\">");
    out.push_str(&chart_of("Success rate (per minute)", &[Series { name: "succeeded / finished", color: "#1b7f3b", values: rate }], percent, 1.0));
    out.push_str(&chart_of(
        "Attempt runtime",
        &[Series { name: "p50", color: "#2f6fdf", values: p50 }, Series { name: "p95", color: "#d9822b", values: p95 }],
        secs,
        0.0,
    ));
    out.push_str(&chart_of("Queue depth", &[Series { name: "waiting jobs", color: "#7b4fc9", values: depth.into_iter().map(Some).collect() }], count, 1.0));
    out.push_str(&chart_of(
        "Memory per attempt",
        &[Series { name: "granted", color: "#68717c", values: avg(&granted) }, Series { name: "peak used", color: "#c03a5b", values: avg(&used) }],
        mem,
        0.0,
    ));
    out.push_str("</div>");
    out
}

fn job_link(j: &WindowJob) -> String {
    format!("<a class=\"job\" href=\"/ui/jobs/{}\">{}</a>", url(&j.id), esc(&j.id))
}

fn status_cell(status: &str, class: Option<&str>) -> String {
    let css = match status {
        "succeeded" => "good",
        "failed" => "bad",
        _ => "muted",
    };
    match class {
        Some(c) => format!("<span class=\"{css}\">{}</span> <code>{}</code>", esc(status), esc(c)),
        None => format!("<span class=\"{css}\">{}</span>", esc(status)),
    }
}

fn jobs_table(jobs: &[&WindowJob]) -> String {
    let mut out = String::from("<table id=\"jobs\"><tr><th>job</th><th>tenant</th><th>segment</th><th>status</th><th>created</th><th>finished</th></tr>");
    for j in jobs {
        let _ = write!(
            out,
            "<tr><td>{}</td><td><a href=\"/ui/tenants/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            job_link(j),
            url(&j.tenant),
            esc(&j.tenant),
            esc(&j.segment),
            status_cell(&j.status, j.error_class.as_deref()),
            when(j.created_at),
            j.finished_at.map(when).unwrap_or_default()
        );
    }
    out.push_str("</table>");
    out
}

fn alerts_table(alerts: &[crate::alerts::AlertView]) -> String {
    if alerts.is_empty() {
        return "<p class=\"muted\" id=\"no-alerts\">No alert is firing.</p>".into();
    }
    let mut out = String::from("<table id=\"alerts\"><tr><th>alert</th><th>scope</th><th>key</th><th>failures</th><th>since</th><th>summary</th></tr>");
    for a in alerts {
        let _ = write!(
            out,
            "<tr class=\"firing\"><td class=\"bad\">{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(a.labels.get("alertname").map_or(a.rule.as_str(), String::as_str)),
            if a.inhibited_by.is_some() { " <span class=\"muted\">(inhibited)</span>" } else { "" },
            esc(&a.scope),
            esc(&a.key),
            a.failures,
            esc(&a.started_at),
            esc(a.annotations.get("summary").map_or("", String::as_str))
        );
    }
    out.push_str("</table>");
    out
}

// ---- pages

/// `/`: the overview.
pub(super) async fn overview(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if !is_admin(&s, &headers).await {
        return login_page(None).into_response();
    }
    let now = now_micros();
    let since = now - WINDOW_MICROS;
    let (jobs, attempts, firing) = match tokio::try_join!(window_jobs(&s, since), window_attempts(&s, since), s.store.alerts(Some("firing"), None, 100)) {
        Ok(v) => v,
        Err(e) => return unavailable(e),
    };
    let mut total = Tally::default();
    let mut regions: BTreeMap<&str, Tally> = BTreeMap::new();
    for j in &jobs {
        total.add(j);
        regions.entry(j.region.as_str()).or_default().add(j);
    }
    let (slots, budget) = s.pool.capacity();
    let (used_slots, granted) = s.pool.usage();
    let mut body = String::from("<h1>Overview</h1><p class=\"muted\">The last hour. This page refreshes every 15 s.</p><div class=\"tiles\">");
    for (label, value, id) in [
        ("succeeded", total.succeeded.to_string(), "t-succeeded"),
        ("failed", total.failed.to_string(), "t-failed"),
        ("success rate", total.rate_text(), "t-rate"),
        ("waiting", total.waiting.to_string(), "t-waiting"),
        ("running", format!("{used_slots} of {slots} slots"), "t-running"),
        (
            "memory granted",
            format!("{} of {}", bytes(i64::try_from(granted).unwrap_or(i64::MAX)), bytes(i64::try_from(budget).unwrap_or(i64::MAX))),
            "t-memory",
        ),
        ("alerts firing", firing.len().to_string(), "t-alerts"),
    ] {
        let _ = write!(body, "<div class=\"tile\" id=\"{id}\"><b>{}</b>{label}</div>", esc(&value));
    }
    body.push_str("</div>");
    body.push_str(&charts(&jobs, &attempts, since, now));
    body.push_str("<h2>Firing alerts</h2>");
    body.push_str(&alerts_table(&firing));
    body.push_str("<h2>Success rate by region</h2><table><tr><th>region</th><th>succeeded</th><th>failed</th><th>success rate</th><th>waiting</th></tr>");
    for (region, t) in &regions {
        let _ = write!(body, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", esc(region), t.succeeded, t.failed, t.rate_text(), t.waiting);
    }
    body.push_str("</table><h2>Recent failures</h2>");
    let mut failures: Vec<&WindowJob> = jobs.iter().filter(|j| j.status == "failed").collect();
    failures.sort_by_key(|j| std::cmp::Reverse(j.finished_at));
    failures.truncate(10);
    if failures.is_empty() {
        body.push_str("<p class=\"muted\">No job failed in the last hour.</p>");
    } else {
        body.push_str(&jobs_table(&failures).replacen("<table id=\"jobs\">", "<table id=\"failures\">", 1));
    }
    body.push_str("<h2>Recent jobs</h2>");
    let mut recent: Vec<&WindowJob> = jobs.iter().collect();
    recent.sort_by(|a, b| b.id.cmp(&a.id));
    recent.truncate(25);
    body.push_str(&jobs_table(&recent));
    body.push_str("<h2>Triage: the last 24 hours</h2>");
    let now = now_micros();
    // Against the day before only (not the whole history), so a refresh reads two days.
    let day_before = crate::triage::TriageSettings { history: 1, ..(*s.triage).clone() };
    match crate::triage::make(&s.store, &day_before, now - 86_400_000_000, now, None).await {
        Ok(report) if report.signatures.is_empty() => body.push_str("<p class=\"muted\">No failed attempt in the last 24 hours.</p>"),
        Ok(mut report) => {
            let more = report.signatures.len().saturating_sub(5);
            report.signatures.truncate(5);
            body.push_str(&signatures_table(&report));
            let _ = write!(
                body,
                "<p><a href=\"/ui/triage\">The whole report</a>{}</p>",
                if more > 0 { format!(" ({more} more signatures)") } else { String::new() }
            );
        }
        Err(e) => {
            let _ = write!(body, "<p class=\"bad\">The triage report could not be made: {}</p>", esc(&e.to_string()));
        }
    }
    page("Overview", "Overview", &body)
}

/// `/ui/regions`.
pub(super) async fn regions(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if !is_admin(&s, &headers).await {
        return login_page(None).into_response();
    }
    let since = now_micros() - WINDOW_MICROS;
    let tenants = s.store.tenants_by_region().await;
    let (tenants, jobs) = match (tenants, window_jobs(&s, since).await) {
        (Ok(t), Ok(j)) => (t, j),
        (Err(e), _) => return unavailable(e),
        (_, Err(e)) => return unavailable(e),
    };
    let mut tally: HashMap<&str, Tally> = HashMap::new();
    for j in &jobs {
        tally.entry(j.region.as_str()).or_default().add(j);
    }
    let mut body = String::from(
        "<h1>Regions</h1><p class=\"muted\">Jobs of the last hour.</p><table><tr><th>region</th><th>tenants</th><th>succeeded</th><th>failed</th><th>success rate</th><th>waiting</th><th>running</th></tr>",
    );
    for (region, n) in &tenants {
        let t = tally.get(region.as_str()).copied().unwrap_or_default();
        let _ = write!(
            body,
            "<tr><td><a href=\"/ui/tenants?region={}\">{}</a></td><td>{n}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            url(region),
            esc(region),
            t.succeeded,
            t.failed,
            t.rate_text(),
            t.waiting,
            t.running
        );
    }
    body.push_str("</table>");
    page("Regions", "Regions", &body)
}

/// The tenant list's query.
#[derive(Debug, Deserialize)]
pub(super) struct TenantQuery {
    q: Option<String>,
    region: Option<String>,
    after: Option<String>,
}

/// `/ui/tenants`: searchable (id prefix or part), filterable by region, paged.
pub(super) async fn tenants(State(s): State<AppState>, headers: HeaderMap, Query(query): Query<TenantQuery>) -> Response {
    if !is_admin(&s, &headers).await {
        return login_page(None).into_response();
    }
    let q = query.q.unwrap_or_default();
    let region = query.region.unwrap_or_default();
    let after = query.after.unwrap_or_default();
    let rows = s.store.tenant_list(&q, &region, &after, TENANTS_PER_PAGE).await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let jobs = match window_jobs(&s, now_micros() - WINDOW_MICROS).await {
        Ok(j) => j,
        Err(e) => return unavailable(e),
    };
    let mut tally: HashMap<&str, Tally> = HashMap::new();
    for j in &jobs {
        tally.entry(j.tenant.as_str()).or_default().add(j);
    }
    let mut body = format!(
        "<h1>Tenants</h1><form method=\"get\" action=\"/ui/tenants\"><input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"tenant id contains…\">\
         <input type=\"hidden\" name=\"region\" value=\"{}\"> <button type=\"submit\">Search</button></form>{}\
         <table id=\"tenants\"><tr><th>tenant</th><th>region</th><th>segments</th><th>succeeded (1 h)</th><th>failed (1 h)</th><th>waiting</th></tr>",
        esc(&q),
        esc(&region),
        if region.is_empty() { String::new() } else { format!("<p>Region <b>{}</b> · <a href=\"/ui/tenants\">all regions</a></p>", esc(&region)) }
    );
    let mut last = None;
    for (id, reg, segments) in &rows {
        let t = tally.get(id.as_str()).copied().unwrap_or_default();
        let _ = write!(
            body,
            "<tr><td><a href=\"/ui/tenants/{}\">{}</a></td><td>{}</td><td>{segments}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            url(id),
            esc(id),
            esc(reg),
            t.succeeded,
            t.failed,
            t.waiting
        );
        last = Some(id.clone());
    }
    body.push_str("</table>");
    if rows.is_empty() {
        body.push_str("<p class=\"muted\">No tenant matches.</p>");
    }
    if let Some(last) = last.filter(|_| rows.len() as i64 == TENANTS_PER_PAGE) {
        let _ = write!(body, "<p><a id=\"next\" href=\"/ui/tenants?q={}&amp;region={}&amp;after={}\">next page →</a></p>", url(&q), url(&region), url(&last));
    }
    page("Tenants", "Tenants", &body)
}

/// `/ui/tenants/{tenant}`: its segments and recent jobs.
pub(super) async fn tenant(State(s): State<AppState>, headers: HeaderMap, ApiPath(id): ApiPath<String>) -> Response {
    if !is_admin(&s, &headers).await {
        return login_page(None).into_response();
    }
    let tenant = match s.store.tenant(&id).await {
        Ok(Some(t)) => t,
        Ok(None) => return error_page(StatusCode::NOT_FOUND, &format!("no tenant {id:?}")),
        Err(e) => return unavailable(e),
    };
    let segments = match s.store.segments(&tenant.id, "", 500).await {
        Ok(g) => g,
        Err(e) => return unavailable(e),
    };
    let jobs = s.store.tenant_jobs(&tenant.id, 50).await;
    let jobs = match jobs {
        Ok(j) => j,
        Err(e) => return unavailable(e),
    };
    let mut body = format!(
        "<h1>Tenant {}</h1><p>Region <a href=\"/ui/tenants?region={}\">{}</a> · at most {} jobs at once · {} jobs a minute</p>\
         <h2>Segments</h2><table><tr><th>segment</th><th>schedule</th><th>members</th><th>latest run</th><th>missed runs</th></tr>",
        esc(&tenant.id),
        url(&tenant.region),
        esc(&tenant.region),
        tenant.max_concurrent_jobs,
        tenant.jobs_per_minute
    );
    for g in &segments {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&g.id),
            g.schedule.as_deref().map(|c| format!("<code>{}</code> {}", esc(c), esc(&g.timezone))).unwrap_or_else(|| "–".into()),
            g.members,
            if g.latest_run_id.is_empty() { "–".into() } else { format!("<a href=\"/ui/jobs/{}\">{}</a>", url(&g.latest_run_id), esc(&g.latest_run_id)) },
            g.missed_runs
        );
    }
    body.push_str("</table><h2>Recent jobs</h2>");
    body.push_str(&jobs_table(&jobs.iter().collect::<Vec<_>>()));
    page(&format!("Tenant {}", tenant.id), "Tenants", &body)
}

/// A phase as stored with its attempt.
#[derive(Debug, Deserialize)]
struct StoredPhase {
    place: String,
    rows: u64,
    started_ms: f64,
    elapsed_ms: f64,
}

/// `/ui/jobs/{job}`: the job's timeline.
pub(super) async fn job(State(s): State<AppState>, headers: HeaderMap, ApiPath(id): ApiPath<String>) -> Response {
    if !is_admin(&s, &headers).await {
        return login_page(None).into_response();
    }
    let job = match s.store.job_by_id(&id).await {
        Ok(Some(j)) => j,
        Ok(None) => return error_page(StatusCode::NOT_FOUND, &format!("no job {id:?}")),
        Err(e) => return unavailable(e),
    };
    let (events, attempts) = match tokio::try_join!(s.store.job_events(&job.id), s.store.attempts(&job.id)) {
        Ok(v) => v,
        Err(e) => return unavailable(e),
    };
    let mut body = format!(
        "<h1>Job <code>{}</code></h1><p>Tenant <a href=\"/ui/tenants/{}\">{}</a> · segment {} · {} · triggered by {} · trace <code>{}</code></p>",
        esc(&job.id),
        url(&job.tenant_id),
        esc(&job.tenant_id),
        esc(&job.segment_id),
        status_cell(job.status.as_str(), job.error_class.as_deref()),
        esc(&job.trigger),
        crate::traces::job_trace_id(&job.id)
    );
    if let Some(m) = &job.error_message {
        let _ = write!(body, "<p class=\"bad\" id=\"error\">{}</p>", esc(m));
    }
    if let Some(n) = job.members {
        let _ = write!(body, "<p>{n} members ({} added, {} removed)</p>", job.added.unwrap_or(0), job.removed.unwrap_or(0));
    }
    body.push_str(&timeline_svg(&job, &attempts));
    body.push_str("<h2>Attempts</h2><table id=\"attempts\"><tr><th>#</th><th>started</th><th>ran</th><th>grant</th><th>peak</th><th>plan</th><th>outcome</th><th>error</th></tr>");
    for a in &attempts {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            a.attempt,
            when(a.started_at),
            a.elapsed_micros.map(seconds).unwrap_or_default(),
            bytes(a.grant_bytes),
            a.peak_memory_bytes.map(bytes).unwrap_or_default(),
            esc(a.plan_mode.as_deref().unwrap_or("")),
            status_cell(a.outcome.as_deref().unwrap_or("running"), a.error_class.as_deref()),
            esc(a.error_message.as_deref().unwrap_or(""))
        );
        let phases: Vec<StoredPhase> = a.phases.as_deref().and_then(|p| serde_json::from_str(p).ok()).unwrap_or_default();
        for (i, p) in phases.iter().enumerate() {
            let _ = write!(
                body,
                "<tr class=\"phase\"><td></td><td colspan=\"7\">phase {} <code>{}</code>: {} rows, from {:.1} ms for {:.1} ms</td></tr>",
                i + 1,
                esc(&p.place),
                p.rows,
                p.started_ms,
                p.elapsed_ms
            );
        }
    }
    body.push_str("</table><h2>Transitions</h2><table id=\"transitions\"><tr><th>at</th><th>from</th><th>to</th><th>detail</th></tr>");
    for (at, from, to, detail) in &events {
        let _ = write!(body, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", esc(&rfc3339(*at)), esc(from), esc(to), esc(detail));
    }
    body.push_str("</table>");
    page(&format!("Job {}", job.id), "", &body)
}

/// The job's life as bars on a time axis: waiting, then each attempt.
fn timeline_svg(job: &crate::store::JobRow, attempts: &[crate::store::AttemptRow]) -> String {
    let start = job.created_at;
    let end = job.finished_at.unwrap_or_else(now_micros).max(start + 1);
    let mut bars = vec![Bar { label: "queued".into(), start, end: attempts.first().map_or(end, |a| a.started_at), color: "#c9ced6".into() }];
    for a in attempts {
        let color = match a.outcome.as_deref() {
            Some("succeeded") => "#1b7f3b",
            Some("failed") => "#b3261e",
            Some(_) => "#68717c",
            None => "#2f6fdf",
        };
        bars.push(Bar { label: format!("attempt {}", a.attempt), start: a.started_at, end: a.finished_at.unwrap_or_else(now_micros), color: color.into() });
    }
    timeline("timeline", &bars, start, end, &when(start), &format!("+{}", seconds(end - start)))
}

/// `/ui/alerts`: firing alerts, recent resolved ones, silences.
pub(super) async fn alerts(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if !is_admin(&s, &headers).await {
        return login_page(None).into_response();
    }
    let (firing, resolved, silences) =
        match tokio::try_join!(s.store.alerts(Some("firing"), None, 200), s.store.alerts(Some("resolved"), None, 25), s.store.silences()) {
            Ok(v) => v,
            Err(e) => return unavailable(e),
        };
    let mut body = String::from("<h1>Alerts</h1><h2>Firing</h2>");
    body.push_str(&alerts_table(&firing));
    body.push_str("<h2>Recently resolved</h2>");
    if resolved.is_empty() {
        body.push_str("<p class=\"muted\">None.</p>");
    } else {
        body.push_str("<table><tr><th>alert</th><th>scope</th><th>key</th><th>started</th><th>resolved</th></tr>");
        for a in &resolved {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(a.labels.get("alertname").map_or(a.rule.as_str(), String::as_str)),
                esc(&a.scope),
                esc(&a.key),
                esc(&a.started_at),
                esc(a.resolved_at.as_deref().unwrap_or(""))
            );
        }
        body.push_str("</table>");
    }
    body.push_str("<h2>Silences</h2>");
    if silences.is_empty() {
        body.push_str("<p class=\"muted\">No silence.</p>");
    } else {
        body.push_str("<table id=\"silences\"><tr><th>matchers</th><th>from</th><th>until</th><th>active</th><th>comment</th></tr>");
        for sl in &silences {
            let _ = write!(
                body,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&sl.matchers.join(", ")),
                esc(&sl.starts_at),
                esc(&sl.ends_at),
                if sl.active { "yes" } else { "no" },
                esc(&sl.comment)
            );
        }
        body.push_str("</table>");
    }
    page("Alerts", "Alerts", &body)
}

/// `/ui/login` (GET): the form.
pub(super) async fn login_form() -> Response {
    login_page(None).into_response()
}

/// Which window `/ui/triage` shows, and how.
#[derive(Debug, Deserialize)]
pub(super) struct TriageView {
    since: Option<String>,
    format: Option<String>,
}

/// `/ui/triage`: the report over the last day (or `?since=`), and the stored reports;
/// `?format=json|markdown` gives the report as the API does, for the signed-in admin.
pub(super) async fn triage(State(s): State<AppState>, headers: HeaderMap, Query(q): Query<TriageView>) -> Response {
    if !is_admin(&s, &headers).await {
        return login_page(None).into_response();
    }
    let format = match super::ReportFormat::parse(q.format.as_deref().or(Some("html"))) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let since = q.since.unwrap_or_else(|| "24h".into());
    let now = now_micros();
    let Ok(from) = super::window_start(&since, now) else {
        return error_page(StatusCode::BAD_REQUEST, &format!("since {since:?}: a duration (24h, 7d) or an RFC 3339 time"));
    };
    let (report, stored) = match tokio::try_join!(crate::triage::make(&s.store, &s.triage, from.min(now - 1), now, None), s.store.triage_reports(30)) {
        Ok(v) => v,
        Err(e) => return unavailable(e),
    };
    if format != super::ReportFormat::Html {
        return format.respond(&report, "Failure triage");
    }
    let mut body = report_body(&report, &format!("Failure triage since {since}"));
    let _ = write!(
        body,
        "<p>As <a href=\"/ui/triage?since={0}&format=json\">JSON</a> or <a href=\"/ui/triage?since={0}&format=markdown\">Markdown</a> \
         (<code>GET /v1/triage?since={0}</code> with a token). \
         Other windows: <a href=\"/ui/triage?since=1h\">1 hour</a>, <a href=\"/ui/triage?since=24h\">1 day</a>, <a href=\"/ui/triage?since=7d\">7 days</a>.</p>",
        url(&since)
    );
    body.push_str("<h2>Scheduled reports</h2>");
    if stored.is_empty() {
        body.push_str("<p class=\"muted\">None made yet (see <code>triage_schedule</code>).</p>");
    } else {
        body.push_str("<table id=\"reports\"><tr><th>report</th><th>from</th><th>to</th><th>failures</th><th>signatures</th><th>new</th></tr>");
        for r in &stored {
            let _ = write!(
                body,
                "<tr><td><a href=\"/ui/triage/reports/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                url(&r.id),
                esc(&r.id),
                esc(&r.from),
                esc(&r.to),
                r.failures,
                r.signatures,
                r.new_signatures
            );
        }
        body.push_str("</table>");
    }
    Html(layout("Triage", "Triage", &body, None)).into_response()
}

/// `/ui/triage/reports/{id}`: a stored report.
pub(super) async fn triage_report(State(s): State<AppState>, headers: HeaderMap, ApiPath(id): ApiPath<String>) -> Response {
    if !is_admin(&s, &headers).await {
        return login_page(None).into_response();
    }
    let json = match s.store.triage_report(&id).await {
        Ok(Some(json)) => json,
        Ok(None) => return error_page(StatusCode::NOT_FOUND, &format!("no triage report {id:?}")),
        Err(e) => return unavailable(e),
    };
    match serde_json::from_value::<Report>(json) {
        Ok(report) => Html(triage_page(&report, &format!("Triage report {id}"))).into_response(),
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &format!("stored report {id} cannot be read: {e}")),
    }
}

/// A triage report as a page of its own (`format=html`).
pub(crate) fn triage_page(report: &Report, title: &str) -> String {
    layout(title, "Triage", &report_body(report, title), None)
}

fn report_body(report: &Report, title: &str) -> String {
    let new = report.signatures.iter().filter(|s| s.new).count();
    let mut body = format!(
        "<h1>{}</h1><p>{} failed attempts from {} to {}: {} signatures, <b>{new} new</b>.</p>",
        esc(title),
        report.failures,
        esc(&rfc3339(report.from * 1000)),
        esc(&rfc3339(report.to * 1000)),
        report.signatures.len()
    );
    if report.signatures.is_empty() {
        body.push_str("<p class=\"muted\">Nothing failed.</p>");
        return body;
    }
    body.push_str(&signatures_table(report));
    body
}

/// Signatures as a table, with what to do about each.
fn signatures_table(report: &Report) -> String {
    let list = |items: &[String], link: bool| -> String {
        let shown: Vec<String> = items.iter().take(5).map(|i| if link { format!("<a href=\"/ui/jobs/{}\">{}</a>", url(i), esc(i)) } else { esc(i) }).collect();
        let more = items.len().saturating_sub(5);
        format!("{}{}", shown.join(", "), if more > 0 { format!(" and {more} more") } else { String::new() })
    };
    let mut out = String::from(
        "<table id=\"signatures\"><tr><th></th><th>category</th><th>signature</th><th>failures (before)</th><th>recovered / final</th>\
         <th>tenants</th><th>regions</th><th>first / last</th><th>alerts fed</th><th>jobs</th></tr>",
    );
    for sig in &report.signatures {
        let _ = write!(
            out,
            "<tr class=\"signature\" data-category=\"{cat}\"><td>{new}</td><td>{cat}</td><td><code>{sig}</code>{data}<br><span class=\"muted\">{fix}</span></td>\
             <td>{count} ({previous})</td><td>{recovered} / {unrecovered}</td><td>{tenants}</td><td>{regions}</td><td>{first}<br>{last}</td><td>{alerts}</td><td>{jobs}</td></tr>",
            new = if sig.new { "<b class=\"bad\">NEW</b>" } else { "" },
            cat = sig.category.name(),
            sig = esc(&sig.signature),
            data = if sig.data_quality.is_empty() { String::new() } else { format!("<br>data: {}", esc(&sig.data_quality.join("; "))) },
            fix = esc(&sig.remediation),
            count = sig.count,
            previous = sig.previous_count,
            recovered = sig.recovered,
            unrecovered = sig.unrecovered,
            tenants = list(&sig.tenants, false),
            regions = list(&sig.regions, false),
            first = esc(&rfc3339(sig.first_seen * 1000)),
            last = esc(&rfc3339(sig.last_seen * 1000)),
            alerts = if sig.alerts.is_empty() { "none".to_string() } else { list(&sig.alerts, false) },
            jobs = list(&sig.sample_jobs, true),
        );
    }
    out.push_str("</table>");
    out
}
