//! The service's own endpoints: health, readiness and `/metrics`.

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
