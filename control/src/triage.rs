//! Failure triage in the service: the failed attempts of a window, read from the store with
//! what the worker measured of their data, into the pure report of
//! [`cohort_alerting::triage`]. On demand (`GET /v1/triage`, `cohort triage`) and on a cron
//! schedule: a scheduled report is stored (once, whichever replica makes it) and sent to the
//! webhook receivers through the alert outbox.
//!
//! A scheduled report's id is `tr_<window end in microseconds>`: inserted once (`ON CONFLICT DO
//! NOTHING`), so replicas make it once, with outbox rows for the matching receivers in the same
//! transaction. At start, a service that made reports before makes the one it missed within the
//! last window. The pool probes a failed attempt's data (`cohort_executor::probe_data`) when it
//! ran out of memory or time or failed in execution, and stores the findings with the attempt
//! (`attempts.data_quality`): the report's data findings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cohort_alerting::notify;
use cohort_alerting::triage::{Report, report};

pub use crate::store::StoredReport;
use crate::store::{NewReport, Store};
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

/// The report over `[from, to)` (microseconds), of one tenant or all.
pub async fn make(store: &Store, settings: &TriageSettings, from: i64, to: i64, tenant: Option<&str>) -> Result<Report> {
    let len = (to - from).max(1);
    let earliest = from.saturating_sub(len.saturating_mul(i64::from(settings.history)));
    // The window (in two halves) and its history are read at once, on connections of their
    // own; of the history only what decides new and trend (time, class, message, findings).
    let mid = from + (to - from) / 2;
    let (mut failures, later, history, alerts) = tokio::try_join!(
        store.triage_failures(from, mid, tenant),
        store.triage_failures(mid, to, tenant),
        store.triage_history(earliest, from, tenant),
        store.fired_alerts_between(from, to, settings.alert_window_ms, tenant)
    )?;
    failures.extend(later);
    failures.extend(history);
    let evaluated_until = (now_micros() / 1000 - settings.alert_lag_ms).min(to / 1000);
    Ok(report(&failures, from / 1000, to / 1000, settings.history, &alerts, settings.alert_window_ms, Some(evaluated_until)))
}

/// The labels a triage notification carries, for receivers' matchers.
pub fn notification_labels() -> BTreeMap<String, String> {
    [("alertname", "TriageReport"), ("scope", "global"), ("severity", "info")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Makes, stores and queues the report of the window ending at `to` (microseconds), unless it
/// exists already. True if this call made it.
pub async fn make_scheduled(store: &Store, settings: &TriageSettings, to: i64) -> Result<bool> {
    let id = format!("tr_{to}");
    if store.triage_report(&id).await?.is_some() {
        return Ok(false);
    }
    let from = to - i64::try_from(settings.window.as_micros()).unwrap_or(i64::MAX / 2);
    let r = make(store, settings, from, to, None).await?;
    let json = serde_json::to_value(&r).map_err(|e| crate::Error::Internal(format!("report: {e}")))?;
    let markdown = cohort_alerting::triage::markdown(&r);
    let new = r.signatures.iter().filter(|s| s.new).count();
    let now = now_micros();
    let report = NewReport {
        id: &id,
        from,
        to,
        failures: i64::try_from(r.failures).unwrap_or(i64::MAX),
        signatures: i64::try_from(r.signatures.len()).unwrap_or(i64::MAX),
        new_signatures: i64::try_from(new).unwrap_or(i64::MAX),
        json: json.to_string(),
        at: now,
    };
    // One notification per receiver whose matchers take the report's labels.
    let labels = notification_labels();
    let notification = |receiver: &str, matchers: &[notify::Matcher]| {
        if !notify::all_match(matchers, &labels) {
            return None;
        }
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".to_string(), format!("{} failed attempts, {} signatures ({new} new)", r.failures, r.signatures.len()));
        annotations.insert("description".to_string(), markdown.clone());
        annotations.insert("report".to_string(), format!("{}/v1/triage/reports/{id}", settings.external_url.trim_end_matches('/')));
        let alert = notify::Alert { labels: labels.clone(), annotations, starts_at: to / 1000, ends_at: None, link: format!("/v1/triage/reports/{id}") };
        let mut body = notify::payload(receiver, &settings.external_url, &[alert]);
        body["triage"] = json.clone();
        Some(body.to_string())
    };
    if !store.save_triage_report(&report, notification).await? {
        return Ok(false);
    }
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
    let made_before = match store.triage_reports(1).await {
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
