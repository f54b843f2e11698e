//! The service's Prometheus metrics.
//!
//! Job metrics are kept per tenant in memory and rendered at scrape time: the `top` busiest
//! tenants (by jobs seen) have series of their own, every other tenant is summed into
//! `tenant="other"` of its region, so 5,000 tenants cost the scrape no more than `top` do.
//! Region and global views are sums over those series (`sum by (region)`), exact at every
//! scrape. When a tenant climbs into the top its count leaves `other`, which Prometheus reads
//! as a counter reset of that one series (`rate` handles it).
//!
//! Counters are this process's (each replica is scraped; sum across them). Gauges read from
//! the store and the pool are added at scrape time by [`scrape`] through [`Family`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::{Registry, TextEncoder};

/// Upper bounds of the job-duration and queue-wait histograms, in seconds.
pub const DURATION_BUCKETS: [f64; 14] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// Every `error_class` a job can end failed with: the executor's classes (`invalid`,
/// `schema_mismatch`, `source_unavailable`, `resources_exhausted`, `execution`, `internal`)
/// and the control plane's (`timeout`, `store`, `commit`). `cohort_job_failures_total` shows
/// each at 0 for every tenant it knows, so that a tenant's first failures are an increase
/// Prometheus sees (`increase()` cannot count the samples that create a series).
pub const FAILURE_CLASSES: [&str; 9] = {
    let mut out = [""; 9];
    let mut i = 0;
    while i < out.len() {
        out[i] = crate::policy::FailureClass::ALL[i].as_str();
        i += 1;
    }
    out
};

/// The label value of the tenants without series of their own.
pub const OTHER: &str = "other";

#[derive(Debug, Clone, Default)]
struct Hist {
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Hist {
    fn observe(&mut self, seconds: f64) {
        let v = if seconds.is_finite() { seconds.max(0.0) } else { 0.0 };
        for (b, upper) in self.buckets.iter_mut().zip(DURATION_BUCKETS) {
            if v <= upper {
                *b += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }

    fn add(&mut self, other: &Hist) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
    }
}

/// One tenant's counts.
#[derive(Debug, Clone, Default)]
struct Series {
    /// Events seen (the ranking).
    activity: u64,
    /// Final outcomes by (outcome, error class).
    finished: BTreeMap<(String, String), u64>,
    /// Retries by error class.
    retries: BTreeMap<String, u64>,
    /// Admission hold-backs by reason.
    rejections: BTreeMap<String, u64>,
    duration: Hist,
    wait: Hist,
    granted_bytes: f64,
    peak_bytes: f64,
    attempts_measured: u64,
    under_grants: u64,
}

impl Series {
    fn add(&mut self, o: &Series) {
        self.activity += o.activity;
        for (k, v) in &o.finished {
            *self.finished.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.retries {
            *self.retries.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.rejections {
            *self.rejections.entry(k.clone()).or_default() += v;
        }
        self.duration.add(&o.duration);
        self.wait.add(&o.wait);
        self.granted_bytes += o.granted_bytes;
        self.peak_bytes += o.peak_bytes;
        self.attempts_measured += o.attempts_measured;
        self.under_grants += o.under_grants;
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// tenant → its counts.
    tenants: HashMap<String, Series>,
    /// tenant → region (learned as the pool meets tenants).
    regions: HashMap<String, String>,
}

/// The job metrics: recorded by the pool, rendered by `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    top: usize,
    inner: Mutex<Inner>,
    descs: Vec<Desc>,
}

/// Names, help and types of the job families (also the descriptors the registry checks).
const FAMILIES: [(&str, &str, MetricType); 10] = [
    ("cohort_jobs_finished_total", "Jobs that reached a final state, by tenant, region, outcome and error class.", MetricType::COUNTER),
    ("cohort_job_retries_total", "Failed attempts retried, by tenant, region and error class.", MetricType::COUNTER),
    ("cohort_admission_rejections_total", "Queued jobs held back by admission, once per job and reason, by tenant, region and reason.", MetricType::COUNTER),
    ("cohort_job_duration_seconds", "Wall time of job attempts (planning, execution and commit), by tenant and region.", MetricType::HISTOGRAM),
    ("cohort_job_queue_wait_seconds", "Time jobs waited in the queue before admission, by tenant and region.", MetricType::HISTOGRAM),
    (
        "cohort_job_memory_granted_bytes_total",
        "Memory granted to finished attempts that measured their peak, summed, by tenant and region.",
        MetricType::COUNTER,
    ),
    ("cohort_job_memory_peak_bytes_total", "Peak memory used by those attempts, summed, by tenant and region.", MetricType::COUNTER),
    ("cohort_job_attempts_measured_total", "Attempts whose peak memory was measured, by tenant and region.", MetricType::COUNTER),
    ("cohort_job_under_grants_total", "Attempts that ran out of their memory grant, by tenant and region.", MetricType::COUNTER),
    (
        "cohort_job_failures_total",
        "Jobs that ended failed (after their retries), by tenant, region and error class: the failures the alert rule counts.",
        MetricType::COUNTER,
    ),
];

impl Metrics {
    /// Metrics with per-tenant series for the `top` busiest tenants.
    pub fn new(top: usize) -> Metrics {
        let descs = FAMILIES
            .iter()
            .filter_map(|(name, help, _)| Desc::new((*name).to_string(), (*help).to_string(), vec!["tenant".into(), "region".into()], HashMap::new()).ok())
            .collect();
        Metrics { top, inner: Mutex::new(Inner::default()), descs }
    }

    fn with<R>(&self, tenant: &str, f: impl FnOnce(&mut Series) -> R) -> R {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A known tenant's event allocates nothing for its key.
        if let Some(series) = inner.tenants.get_mut(tenant) {
            series.activity += 1;
            return f(series);
        }
        let series = inner.tenants.entry(tenant.to_string()).or_default();
        series.activity += 1;
        f(series)
    }

    /// The tenant's region, for its series' `region` label. The tenant is known from now on:
    /// its failure counters show, at 0, before its first job.
    pub fn set_region(&self, tenant: &str, region: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if inner.regions.get(tenant).is_none_or(|r| r != region) {
            inner.regions.insert(tenant.to_string(), region.to_string());
        }
        if !inner.tenants.contains_key(tenant) {
            inner.tenants.insert(tenant.to_string(), Series::default());
        }
    }

    /// A job reached a final state (`succeeded`, `failed`, `cancelled`).
    pub fn finished(&self, tenant: &str, outcome: &str, error_class: Option<&str>) {
        self.with(tenant, |s| *s.finished.entry((outcome.to_string(), error_class.unwrap_or("none").to_string())).or_default() += 1);
    }

    /// A failed attempt will be retried.
    pub fn retried(&self, tenant: &str, error_class: &str) {
        self.with(tenant, |s| *s.retries.entry(error_class.to_string()).or_default() += 1);
    }

    /// Admission held a queued job back for `reason` (counted once per job and reason).
    pub fn held(&self, tenant: &str, reason: &str) {
        self.with(tenant, |s| *s.rejections.entry(reason.to_string()).or_default() += 1);
    }

    /// A job was admitted after waiting `waited` in the queue.
    pub fn admitted(&self, tenant: &str, waited: Duration) {
        self.with(tenant, |s| s.wait.observe(waited.as_secs_f64()));
    }

    /// An attempt ended after `elapsed`; `peak` when it measured its memory, `under_grant`
    /// when it ran out of its grant.
    pub fn attempt(&self, tenant: &str, elapsed: Duration, grant: u64, peak: Option<u64>, under_grant: bool) {
        self.with(tenant, |s| {
            s.duration.observe(elapsed.as_secs_f64());
            if let Some(peak) = peak {
                s.granted_bytes += grant as f64;
                s.peak_bytes += peak as f64;
                s.attempts_measured += 1;
            }
            if under_grant {
                s.under_grants += 1;
            }
        });
    }

    /// The job families as they stand: the top tenants on their own, the rest as `other` per
    /// region.
    pub fn families(&self) -> Vec<MetricFamily> {
        let (rows, others) = {
            let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let region = |t: &str| inner.regions.get(t).cloned().unwrap_or_else(|| "unknown".into());
            let mut ranked: Vec<(&String, &Series)> = inner.tenants.iter().collect();
            ranked.sort_by(|a, b| b.1.activity.cmp(&a.1.activity).then_with(|| a.0.cmp(b.0)));
            let mut rows: Vec<(String, String, Series)> = Vec::new();
            let mut others: BTreeMap<String, Series> = BTreeMap::new();
            for (i, (tenant, series)) in ranked.into_iter().enumerate() {
                if i < self.top {
                    rows.push((tenant.clone(), region(tenant), series.clone()));
                } else {
                    others.entry(region(tenant)).or_default().add(series);
                }
            }
            (rows, others)
        };
        let mut all: Vec<(String, String, Series)> = rows;
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.extend(others.into_iter().map(|(region, s)| (OTHER.to_string(), region, s)));

        let mut families: Vec<Family> = FAMILIES.iter().map(|(n, h, kind)| Family::new(n, h, *kind)).collect();
        for (tenant, region, s) in &all {
            let base = [("tenant", tenant.as_str()), ("region", region.as_str())];
            // Every outcome a job can end with, at 0 until it happens (the failure rules
            // `increase()` these).
            let known = [("succeeded", "none"), ("cancelled", "none")].into_iter().chain(FAILURE_CLASSES.map(|c| ("failed", c)));
            for (outcome, class) in known.clone() {
                let n = s.finished.get(&(outcome.to_string(), class.to_string())).copied().unwrap_or(0);
                families[0].sample(&[base[0], base[1], ("outcome", outcome), ("error_class", class)], n as f64);
            }
            for ((outcome, class), n) in &s.finished {
                if known.clone().any(|(o, c)| o == outcome && c == class) {
                    continue;
                }
                families[0].sample(&[base[0], base[1], ("outcome", outcome), ("error_class", class)], *n as f64);
                if outcome == "failed" && !FAILURE_CLASSES.contains(&class.as_str()) {
                    families[9].sample(&[base[0], base[1], ("error_class", class)], *n as f64);
                }
            }
            for class in FAILURE_CLASSES {
                let n = s.finished.get(&("failed".to_string(), class.to_string())).copied().unwrap_or(0);
                families[9].sample(&[base[0], base[1], ("error_class", class)], n as f64);
            }
            // Every series a dashboard or rule reads exists, at 0, for every known tenant,
            // so its first event is an increase Prometheus sees and panels show 0, not "No data".
            for class in FAILURE_CLASSES {
                families[1].sample(&[base[0], base[1], ("error_class", class)], s.retries.get(class).copied().unwrap_or(0) as f64);
            }
            for (class, n) in s.retries.iter().filter(|(c, _)| !FAILURE_CLASSES.contains(&c.as_str())) {
                families[1].sample(&[base[0], base[1], ("error_class", class)], *n as f64);
            }
            for reason in crate::scheduler::Wait::ALL.map(crate::scheduler::Wait::as_str) {
                families[2].sample(&[base[0], base[1], ("reason", reason)], s.rejections.get(reason).copied().unwrap_or(0) as f64);
            }
            for (reason, n) in s.rejections.iter().filter(|(r, _)| !crate::scheduler::Wait::ALL.iter().any(|w| w.as_str() == r.as_str())) {
                families[2].sample(&[base[0], base[1], ("reason", reason)], *n as f64);
            }
            families[3].histogram(&base, &s.duration);
            families[4].histogram(&base, &s.wait);
            families[5].sample(&base, s.granted_bytes);
            families[6].sample(&base, s.peak_bytes);
            families[7].sample(&base, s.attempts_measured as f64);
            families[8].sample(&base, s.under_grants as f64);
        }
        families.into_iter().map(Family::into_proto).collect()
    }

    /// The tenant's region, as learned (`unknown` before).
    pub fn region(&self, tenant: &str) -> String {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).regions.get(tenant).cloned().unwrap_or_else(|| "unknown".into())
    }
}

impl Collector for Metrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.families()
    }
}

/// One metric family being built (a thin layer over the `prometheus` crate's model).
#[derive(Debug)]
pub struct Family {
    name: String,
    help: String,
    kind: MetricType,
    metrics: Vec<proto::Metric>,
}

impl Family {
    /// An empty family.
    pub fn new(name: &str, help: &str, kind: MetricType) -> Family {
        Family { name: name.to_string(), help: help.to_string(), kind, metrics: Vec::new() }
    }

    /// A gauge family.
    pub fn gauge(name: &str, help: &str) -> Family {
        Family::new(name, help, MetricType::GAUGE)
    }

    /// A counter family.
    pub fn counter(name: &str, help: &str) -> Family {
        Family::new(name, help, MetricType::COUNTER)
    }

    fn labels(labels: &[(&str, &str)]) -> Vec<LabelPair> {
        labels
            .iter()
            .map(|(k, v)| {
                let mut pair = LabelPair::default();
                pair.set_name((*k).to_string());
                pair.set_value((*v).to_string());
                pair
            })
            .collect()
    }

    /// Adds one sample (a counter's or a gauge's value).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Family {
        let mut m = proto::Metric::default();
        m.set_label(Family::labels(labels));
        match self.kind {
            MetricType::COUNTER => {
                let mut c = proto::Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            _ => {
                let mut g = proto::Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        self.metrics.push(m);
        self
    }

    fn histogram(&mut self, labels: &[(&str, &str)], h: &Hist) {
        let mut m = proto::Metric::default();
        m.set_label(Family::labels(labels));
        let mut p = proto::Histogram::default();
        p.set_sample_count(h.count);
        p.set_sample_sum(h.sum);
        p.set_bucket(
            h.buckets
                .iter()
                .zip(DURATION_BUCKETS)
                .map(|(n, upper)| {
                    let mut b = proto::Bucket::default();
                    b.set_cumulative_count(*n);
                    b.set_upper_bound(upper);
                    b
                })
                .collect(),
        );
        m.set_histogram(p);
        self.metrics.push(m);
    }

    fn into_proto(self) -> MetricFamily {
        let mut f = MetricFamily::default();
        f.set_name(self.name);
        f.set_help(self.help);
        f.set_field_type(self.kind);
        f.set_metric(self.metrics);
        f
    }
}

/// The text of a `/metrics` scrape: this process's counters and histograms (the registry),
/// then gauges read at scrape time from the store (jobs by status, queue depth by region,
/// skipped runs, firing alerts), the pool (slots, memory), the estimator (its accuracy) and
/// webhook delivery counts. The store's reads run side by side.
pub async fn scrape(
    store: &crate::Store,
    pool: &crate::pool::Pool,
    estimates: &crate::estimates::Estimates,
    alerting: &crate::alerts::Alerting,
) -> crate::Result<String> {
    use crate::jobs::JobStatus;
    // The store's reads, side by side (each on its own pooled connection).
    let (counts, (missed, overlapped), estimator, firing, depth) =
        tokio::try_join!(store.job_counts(), store.skipped_runs(), estimates.status(store), store.firing_alerts(), store.queue_depth_by_region(),)?;
    let (used_slots, used_bytes) = pool.usage();
    let (slots, budget) = pool.capacity();
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
    single(Family::gauge, "cohort_pool_queued_jobs", "Jobs this process's dispatcher holds queued.", pool.queued() as f64);
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
    let counts_of = &alerting.counts;
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
    Ok(render(&pool.telemetry().registry, families))
}

/// Renders families in the Prometheus text format. A family with no series yet is still
/// announced (`# HELP`, `# TYPE`), so dashboards and rules can be checked against a fresh
/// service.
pub fn render(registry: &Registry, extra: Vec<Family>) -> String {
    let mut families = registry.gather();
    let mut empty = Vec::new();
    for f in extra {
        if f.metrics.is_empty() {
            empty.push(f);
        } else {
            families.push(f.into_proto());
        }
    }
    // The registry leaves out families with no series; announce them too.
    for (name, help, kind) in FAMILIES {
        if !families.iter().any(|f| f.name() == name) {
            empty.push(Family::new(name, help, kind));
        }
    }
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = String::with_capacity(64 * 1024);
    let _ = TextEncoder::new().encode_utf8(&families, &mut out);
    empty.sort_by(|a, b| a.name.cmp(&b.name));
    for f in empty {
        let kind = match f.kind {
            MetricType::COUNTER => "counter",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
            MetricType::UNTYPED => "untyped",
            MetricType::GAUGE => "gauge",
        };
        out.push_str(&format!("# HELP {} {}\n# TYPE {} {kind}\n", f.name, f.help, f.name));
    }
    out
}

/// A registry holding the job metrics.
pub fn registry(metrics: std::sync::Arc<Metrics>) -> Registry {
    let registry = Registry::new();
    if let Err(e) = registry.register(Box::new(SharedMetrics(metrics))) {
        tracing::warn!(error = %e, "the job metrics could not be registered");
    }
    registry
}

/// The registry owns its collectors; the pool keeps recording through the same `Arc`.
#[derive(Debug)]
struct SharedMetrics(std::sync::Arc<Metrics>);

impl Collector for SharedMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn tenants_beyond_the_top_are_summed_per_region() {
        let m = std::sync::Arc::new(Metrics::new(2));
        for (t, region, jobs) in [("a", "us", 5), ("b", "us", 4), ("c", "us", 1), ("d", "eu", 2), ("e", "eu", 1)] {
            m.set_region(t, region);
            for _ in 0..jobs {
                m.finished(t, "succeeded", None);
            }
        }
        let text = render(&registry(m.clone()), Vec::new());
        assert!(text.contains("cohort_jobs_finished_total{tenant=\"a\",region=\"us\",outcome=\"succeeded\",error_class=\"none\"} 5"), "{text}");
        assert!(text.contains("cohort_jobs_finished_total{tenant=\"b\",region=\"us\",outcome=\"succeeded\",error_class=\"none\"} 4"), "{text}");
        assert!(text.contains("cohort_jobs_finished_total{tenant=\"other\",region=\"us\",outcome=\"succeeded\",error_class=\"none\"} 1"), "{text}");
        assert!(text.contains("cohort_jobs_finished_total{tenant=\"other\",region=\"eu\",outcome=\"succeeded\",error_class=\"none\"} 3"), "{text}");
        assert!(!text.contains("tenant=\"c\""), "{text}");
        // No failures yet, but every known tenant's failure counters are there, at 0.
        for class in FAILURE_CLASSES {
            assert!(text.contains(&format!("cohort_job_failures_total{{tenant=\"a\",region=\"us\",error_class=\"{class}\"}} 0")), "{text}");
            assert!(text.contains(&format!("cohort_job_failures_total{{tenant=\"other\",region=\"eu\",error_class=\"{class}\"}} 0")), "{text}");
        }
        m.set_region("new", "us");
        let text = render(&registry(m.clone()), Vec::new());
        assert!(text.contains("cohort_job_failures_total{tenant=\"other\",region=\"us\",error_class=\"timeout\"} 0"), "a tenant with no job yet: {text}");
        let timeout = crate::policy::FailureClass::Timeout.as_str();
        m.finished("a", "failed", Some(timeout));
        m.finished("a", "failed", Some(timeout));
        let text = render(&registry(m.clone()), Vec::new());
        assert!(text.contains("cohort_job_failures_total{tenant=\"a\",region=\"us\",error_class=\"timeout\"} 2"), "{text}");
        assert!(text.contains("cohort_job_failures_total{tenant=\"a\",region=\"us\",error_class=\"invalid\"} 0"), "{text}");
        // Families with no series yet are announced.
        assert!(text.contains("# TYPE cohort_job_queue_wait_seconds histogram"), "{text}");
    }

    #[test]
    fn every_executor_error_class_has_its_zero_series() {
        use cohort_executor::ErrorClass;
        let all = [
            ErrorClass::Invalid,
            ErrorClass::SchemaMismatch,
            ErrorClass::SourceUnavailable,
            ErrorClass::ResourcesExhausted,
            ErrorClass::Execution,
            ErrorClass::Internal,
        ];
        for class in all {
            // A new class stops this match compiling: add it above and to FAILURE_CLASSES.
            match class {
                ErrorClass::Invalid
                | ErrorClass::SchemaMismatch
                | ErrorClass::SourceUnavailable
                | ErrorClass::ResourcesExhausted
                | ErrorClass::Execution
                | ErrorClass::Internal => {}
            }
            let name = serde_json::to_value(class).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
            assert!(FAILURE_CLASSES.contains(&name.as_str()), "{name} has no zero series");
        }
    }

    #[test]
    fn five_thousand_tenants_make_a_bounded_scrape() {
        let m = std::sync::Arc::new(Metrics::new(50));
        use crate::policy::FailureClass as C;
        let classes = [C::Invalid, C::SchemaMismatch, C::SourceUnavailable, C::ResourcesExhausted, C::Timeout].map(C::as_str);
        for i in 0..5000 {
            let tenant = format!("tenant-{i:04}");
            m.set_region(&tenant, ["us-east", "eu-west", "ap-south"][i % 3]);
            for k in 0..(1 + i % 7) {
                m.admitted(&tenant, Duration::from_millis(10 * k as u64));
                m.attempt(&tenant, Duration::from_millis(300 * k as u64 + 5), 1 << 26, Some(1 << 24), k == 3);
                m.finished(&tenant, if k % 5 == 4 { "failed" } else { "succeeded" }, (k % 5 == 4).then(|| classes[i % 5]));
            }
            m.retried(&tenant, classes[i % 5]);
            m.held(&tenant, "rate_limit");
        }
        let text = render(&registry(m), Vec::new());
        let tenants: BTreeSet<&str> = text.lines().filter_map(|l| l.split("tenant=\"").nth(1)?.split('"').next()).collect();
        assert_eq!(tenants.len(), 51, "50 tenants and `other`");
        assert!(text.len() < 1 << 20, "{} bytes", text.len());
        // Nothing is lost: the series sum to every job.
        let finished: f64 =
            text.lines().filter(|l| l.starts_with("cohort_jobs_finished_total{")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum();
        assert_eq!(finished, (0..5000).map(|i| 1 + i % 7).sum::<usize>() as f64);
    }

    #[test]
    fn histograms_are_cumulative() {
        let m = std::sync::Arc::new(Metrics::new(10));
        m.set_region("a", "us");
        m.attempt("a", Duration::from_millis(200), 100, Some(40), false);
        m.attempt("a", Duration::from_secs(20), 100, None, true);
        let text = render(&registry(m), Vec::new());
        assert!(text.contains("cohort_job_duration_seconds_bucket{tenant=\"a\",region=\"us\",le=\"0.25\"} 1"), "{text}");
        assert!(text.contains("cohort_job_duration_seconds_bucket{tenant=\"a\",region=\"us\",le=\"30\"} 2"), "{text}");
        assert!(text.contains("cohort_job_duration_seconds_bucket{tenant=\"a\",region=\"us\",le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("cohort_job_memory_peak_bytes_total{tenant=\"a\",region=\"us\"} 40"), "{text}");
        assert!(text.contains("cohort_job_under_grants_total{tenant=\"a\",region=\"us\"} 1"), "{text}");
    }
}
