//! Failure triage in the service: the failed attempts of a window, read from the store with
//! what the worker measured of their data, into the pure report of
//! [`cohort_alerting::triage`]. On demand (`GET /v1/triage`, `cohort triage`) and on a cron
//! schedule: a scheduled report is stored (once, whichever replica makes it) and sent to the
//! webhook receivers through the alert outbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cohort_alerting::notify;
use cohort_alerting::triage::{DataFinding, Failure, FiredAlert, Report, report};
use serde::Serialize;
use sqlx::Row;

use crate::store::Store;
use crate::{Result, now_micros};

/// How reports are made.
#[derive(Debug, Clone)]
pub struct TriageSettings {
    /// When scheduled reports are made (UTC); `None`: never.
    pub schedule: Option<cron::Schedule>,
    /// The window a scheduled report covers.
    pub window: Duration,
    /// Windows before a report's that decide what is new.
    pub history: u32,
    /// A final failure fed an alert that started within this long after it (the widest
    /// failure-rule window), milliseconds.
    pub alert_window_ms: i64,
    /// How long after a job fails the alert evaluator has normally taken it in (its settle
    /// time plus the store feed's delay), milliseconds: final failures newer than this when a
    /// report is made are marked as possibly still to raise alerts.
    pub alert_lag_ms: i64,
    /// This service's URL, for links in notifications.
    pub external_url: String,
}

/// The failed attempts that finished in `[from, to)` (microseconds), of one tenant or all.
pub async fn failures(store: &Store, from: i64, to: i64, tenant: Option<&str>) -> Result<Vec<Failure>> {
    let sql = format!(
        "SELECT a.finished_at, j.tenant_id, t.region, j.segment_id, a.job_id, a.attempt, a.error_class, a.error_message, \
         j.status, a.grant_bytes, a.data_quality \
         FROM attempts a JOIN jobs j ON j.id = a.job_id JOIN tenants t ON t.id = j.tenant_id \
         WHERE a.outcome = 'failed' AND a.finished_at >= $1 AND a.finished_at < $2{} ORDER BY a.finished_at",
        if tenant.is_some() { " AND j.tenant_id = $3" } else { "" }
    );
    let mut query = sqlx::query(&sql).bind(from).bind(to);
    if let Some(t) = tenant {
        query = query.bind(t);
    }
    let rows = query.fetch_all(store.pool()).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let data: Option<String> = r.try_get(10)?;
        let status: String = r.try_get(8)?;
        let grant: i64 = r.try_get(9)?;
        out.push(Failure {
            at: r.try_get::<i64, _>(0)? / 1000,
            tenant: r.try_get(1)?,
            region: r.try_get(2)?,
            segment: r.try_get(3)?,
            job: r.try_get(4)?,
            attempt: u32::try_from(r.try_get::<i64, _>(5)?).unwrap_or(u32::MAX),
            class: r.try_get::<Option<String>, _>(6)?.unwrap_or_else(|| "internal".into()),
            message: r.try_get::<Option<String>, _>(7)?.unwrap_or_default(),
            recovered: status == "succeeded",
            job_failed: status == "failed",
            grant: u64::try_from(grant).ok(),
            // A finding that does not parse is dropped, not the failure.
            data: data.and_then(|d| serde_json::from_str::<Vec<DataFinding>>(&d).ok()).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// The failed attempts of `[from, to)` (microseconds) with only what a report needs of the
/// windows before its own: when, class, message and data findings.
async fn history(store: &Store, from: i64, to: i64, tenant: Option<&str>) -> Result<Vec<Failure>> {
    let sql = match tenant {
        Some(_) => {
            "SELECT a.finished_at, a.error_class, a.error_message, a.data_quality FROM attempts a JOIN jobs j ON j.id = a.job_id \
                    WHERE a.outcome = 'failed' AND a.finished_at >= $1 AND a.finished_at < $2 AND j.tenant_id = $3"
        }
        None => {
            "SELECT a.finished_at, a.error_class, a.error_message, a.data_quality FROM attempts a \
                 WHERE a.outcome = 'failed' AND a.finished_at >= $1 AND a.finished_at < $2"
        }
    };
    let mut query = sqlx::query(sql).bind(from).bind(to);
    if let Some(t) = tenant {
        query = query.bind(t);
    }
    let rows = query.fetch_all(store.pool()).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let data: Option<String> = r.try_get(3)?;
        out.push(Failure {
            at: r.try_get::<i64, _>(0)? / 1000,
            tenant: String::new(),
            region: String::new(),
            segment: String::new(),
            job: String::new(),
            attempt: 0,
            class: r.try_get::<Option<String>, _>(1)?.unwrap_or_else(|| "internal".into()),
            message: r.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
            recovered: false,
            job_failed: false,
            grant: None,
            data: data.and_then(|d| serde_json::from_str::<Vec<DataFinding>>(&d).ok()).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// The alerts that fired during `[from, to)` (microseconds), or started up to `window_ms`
/// after it (fed by its last failures); of one tenant's own alerts only, when `tenant` is given.
async fn fired_alerts(store: &Store, from: i64, to: i64, window_ms: i64, tenant: Option<&str>) -> Result<Vec<FiredAlert>> {
    let rows =
        sqlx::query("SELECT id, scope, alert_key, started_at, resolved_at FROM alerts WHERE started_at < $1 AND (resolved_at IS NULL OR resolved_at >= $2)")
            .bind(to.saturating_add(window_ms.saturating_mul(1000)))
            .bind(from)
            .fetch_all(store.pool())
            .await?;
    let mut out = Vec::new();
    for r in rows {
        let alert = FiredAlert {
            id: r.try_get(0)?,
            scope: r.try_get(1)?,
            key: r.try_get(2)?,
            started: r.try_get::<i64, _>(3)? / 1000,
            resolved: r.try_get::<Option<i64>, _>(4)?.map(|t| t / 1000),
        };
        if tenant.is_none_or(|t| alert.scope == "tenant" && alert.key == t) {
            out.push(alert);
        }
    }
    Ok(out)
}

/// The report over `[from, to)` (microseconds), of one tenant or all.
pub async fn make(store: &Store, settings: &TriageSettings, from: i64, to: i64, tenant: Option<&str>) -> Result<Report> {
    let len = (to - from).max(1);
    let earliest = from.saturating_sub(len.saturating_mul(i64::from(settings.history)));
    // The window (in two halves) and its history are read at once, on connections of their
    // own; of the history only what decides new and trend (time, class, message, findings).
    let mid = from + (to - from) / 2;
    let (mut failures, later, history, alerts) = tokio::try_join!(
        failures(store, from, mid, tenant),
        failures(store, mid, to, tenant),
        history(store, earliest, from, tenant),
        fired_alerts(store, from, to, settings.alert_window_ms, tenant)
    )?;
    failures.extend(later);
    failures.extend(history);
    let evaluated_until = (now_micros() / 1000 - settings.alert_lag_ms).min(to / 1000);
    Ok(report(&failures, from / 1000, to / 1000, settings.history, &alerts, settings.alert_window_ms, Some(evaluated_until)))
}

/// A stored report, as the API lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoredReport {
    /// Its id (`tr_` and the end of its window in microseconds).
    pub id: String,
    /// Window start (RFC 3339).
    pub from: String,
    /// Window end (RFC 3339).
    pub to: String,
    /// Failed attempts in the window.
    pub failures: i64,
    /// Signatures.
    pub signatures: i64,
    /// Signatures not seen in the windows before.
    pub new_signatures: i64,
    /// When it was made (RFC 3339).
    pub created_at: String,
}

/// Stored reports, newest first.
pub async fn stored(store: &Store, limit: i64) -> Result<Vec<StoredReport>> {
    let rows = sqlx::query("SELECT id, from_at, to_at, failures, signatures, new_signatures, created_at FROM triage_reports ORDER BY to_at DESC LIMIT $1")
        .bind(limit)
        .fetch_all(store.pool())
        .await?;
    rows.iter()
        .map(|r| {
            Ok(StoredReport {
                id: r.try_get(0)?,
                from: crate::rfc3339(r.try_get(1)?),
                to: crate::rfc3339(r.try_get(2)?),
                failures: r.try_get(3)?,
                signatures: r.try_get(4)?,
                new_signatures: r.try_get(5)?,
                created_at: crate::rfc3339(r.try_get(6)?),
            })
        })
        .collect()
}

/// One stored report's JSON.
pub async fn stored_report(store: &Store, id: &str) -> Result<Option<serde_json::Value>> {
    let row = sqlx::query("SELECT report FROM triage_reports WHERE id = $1").bind(id).fetch_optional(store.pool()).await?;
    Ok(match row {
        Some(r) => Some(serde_json::from_str(&r.try_get::<String, _>(0)?).map_err(|e| crate::Error::Internal(format!("stored report {id}: {e}")))?),
        None => None,
    })
}

/// The labels a triage notification carries, for receivers' matchers.
pub fn notification_labels() -> BTreeMap<String, String> {
    [("alertname", "TriageReport"), ("scope", "global"), ("severity", "info")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Makes, stores and queues the report of the window ending at `to` (microseconds), unless it
/// exists already. True if this call made it.
pub async fn make_scheduled(store: &Store, settings: &TriageSettings, to: i64) -> Result<bool> {
    let id = format!("tr_{to}");
    if stored_report(store, &id).await?.is_some() {
        return Ok(false);
    }
    let from = to - i64::try_from(settings.window.as_micros()).unwrap_or(i64::MAX / 2);
    let r = make(store, settings, from, to, None).await?;
    let json = serde_json::to_value(&r).map_err(|e| crate::Error::Internal(format!("report: {e}")))?;
    let markdown = cohort_alerting::triage::markdown(&r);
    let new = r.signatures.iter().filter(|s| s.new).count();
    let now = now_micros();
    let mut tx = store.begin_write().await?;
    let inserted = sqlx::query(
        "INSERT INTO triage_reports (id, from_at, to_at, failures, signatures, new_signatures, report, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&id)
    .bind(from)
    .bind(to)
    .bind(i64::try_from(r.failures).unwrap_or(i64::MAX))
    .bind(i64::try_from(r.signatures.len()).unwrap_or(i64::MAX))
    .bind(i64::try_from(new).unwrap_or(i64::MAX))
    .bind(json.to_string())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(false);
    }
    // One notification per receiver whose matchers take the report's labels.
    let labels = notification_labels();
    let receivers = sqlx::query("SELECT id, matchers FROM receivers WHERE enabled = 1").fetch_all(&mut *tx).await?;
    for row in receivers {
        let (receiver, matchers): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let matchers: Vec<notify::Matcher> = serde_json::from_str(&matchers).unwrap_or_default();
        if !notify::all_match(&matchers, &labels) {
            continue;
        }
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".to_string(), format!("{} failed attempts, {} signatures ({new} new)", r.failures, r.signatures.len()));
        annotations.insert("description".to_string(), markdown.clone());
        annotations.insert("report".to_string(), format!("{}/v1/triage/reports/{id}", settings.external_url.trim_end_matches('/')));
        let alert = notify::Alert { labels: labels.clone(), annotations, starts_at: to / 1000, ends_at: None, link: format!("/v1/triage/reports/{id}") };
        let mut body = notify::payload(&receiver, &settings.external_url, &[alert]);
        body["triage"] = json.clone();
        sqlx::query(
            "INSERT INTO deliveries (id, receiver_id, report_id, kind, state, body, attempts, not_before, created_at) \
             VALUES ($1, $2, $3, 'triage', 'pending', $4, 0, $5, $5)",
        )
        .bind(crate::new_id("msg_"))
        .bind(&receiver)
        .bind(&id)
        .bind(body.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    tracing::info!(report = %id, failures = r.failures, signatures = r.signatures.len(), new, "triage report made");
    Ok(true)
}

/// Makes the scheduled reports until the process stops; at start, the latest one missed
/// while the service was down (within one window) is made first. The outbox is woken after
/// each report so it sends it at once.
pub async fn run_schedule(store: Store, settings: Arc<TriageSettings>, alerting: Arc<crate::alerts::Alerting>) {
    let Some(schedule) = settings.schedule.clone() else { return };
    let window = chrono::Duration::from_std(settings.window).unwrap_or(chrono::Duration::days(1));
    let mut now = chrono::Utc::now();
    // The latest due time in the last window that passed while the service was down: only
    // for a service that made reports before (a new one starts with the next due time).
    let made_before = match stored(&store, 1).await {
        Ok(reports) => !reports.is_empty(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the stored triage reports; no catch-up report");
            false
        }
    };
    let mut due = if made_before { schedule.after(&(now - window)).take_while(|t| *t <= now).last() } else { None };
    loop {
        if let Some(at) = due {
            let mut tries = 0;
            loop {
                match make_scheduled(&store, &settings, at.timestamp_micros()).await {
                    Ok(true) => {
                        alerting.wake();
                        break;
                    }
                    Ok(false) => break,
                    Err(e) => {
                        tries += 1;
                        tracing::warn!(error = %e, tries, "cannot make the triage report; trying again");
                        if tries >= 5 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_secs(tries * 5)).await;
                    }
                }
            }
        }
        now = chrono::Utc::now();
        let Some(next) = schedule.after(&now).next() else { return };
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        due = Some(next);
    }
}
