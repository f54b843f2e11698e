//! Replaying a trace: each run estimated only from the runs before it, against baselines.
//!
//! [`replay`] refits as the service would (first after [`Config::first_fit_after`] measured
//! runs, then every [`Config::refit_every`]) and scores, against each run's measured peak, our
//! grant and the baselines': a static grant; the Autopilot-style decayed maximum of the
//! segment's recent peaks (each halved for every four runs of age) plus 15% ([`autopilot`]);
//! the same with the smallest margin, chosen in hindsight, that under-grants no more runs than
//! ours; and the static grant at the coverage's quantile of the peaks, in hindsight.
//! [`PolicyStats`] holds what `cohort estimator eval` prints: the under-grant rate, the relative
//! slack, the runtime MdAPE, and GiB-hours granted against used.

use std::fmt;

use cohort_common::units::human_bytes;
use serde::Serialize;

use crate::features::{Histories, PastRun, Record};
use crate::model::{self, Config, Estimator};

/// The Autopilot-style baseline's margin over its decayed maximum.
pub const AUTOPILOT_MARGIN: f64 = 0.15;

/// How one grant policy did over a trace.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PolicyStats {
    /// The policy.
    pub name: String,
    /// Runs scored (measured peak and runtime).
    pub runs: usize,
    /// Runs whose peak exceeded the grant.
    pub under_granted: usize,
    /// Mean of (grant − peak) / grant over the runs.
    pub relative_slack: f64,
    /// Median of |predicted − actual| / actual runtime, if the policy predicts runtimes.
    pub runtime_mdape: Option<f64>,
    /// Σ grant × runtime, in GiB-hours.
    pub gb_hours_granted: f64,
    /// Σ peak × runtime, in GiB-hours.
    pub gb_hours_used: f64,
}

impl PolicyStats {
    /// Runs whose peak exceeded their grant, as a share.
    pub fn under_grant_rate(&self) -> f64 {
        if self.runs == 0 { 0.0 } else { self.under_granted as f64 / self.runs as f64 }
    }
}

/// The result of a replay.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Evaluation {
    /// Records in the trace.
    pub records: usize,
    /// Records with a measured peak and runtime (the scored ones).
    pub scored: usize,
    /// Distinct segments.
    pub segments: usize,
    /// Fits made during the replay.
    pub fits: usize,
    /// The coverage the estimator was configured for.
    pub coverage: f64,
    /// Our estimator first, then the baselines.
    pub policies: Vec<PolicyStats>,
    /// Scored runs by which part of our estimator answered.
    pub by_basis: Vec<(String, usize, usize)>,
}

#[derive(Default)]
struct Tally {
    stats: PolicyStats,
    slack_sum: f64,
    runtime_errors: Vec<f64>,
}

impl Tally {
    fn new(name: &str) -> Self {
        Tally { stats: PolicyStats { name: name.into(), ..PolicyStats::default() }, ..Tally::default() }
    }

    fn add(&mut self, grant: f64, peak: f64, runtime: f64, predicted_runtime: Option<f64>) {
        let grant = grant.max(1.0);
        self.stats.runs += 1;
        if peak > grant {
            self.stats.under_granted += 1;
        }
        self.slack_sum += (grant - peak) / grant;
        const GIB_HOUR: f64 = 1024.0 * 1024.0 * 1024.0 * 3600.0;
        self.stats.gb_hours_granted += grant * runtime / GIB_HOUR;
        self.stats.gb_hours_used += peak * runtime / GIB_HOUR;
        if let Some(p) = predicted_runtime {
            self.runtime_errors.push((p - runtime).abs() / runtime.max(1e-6));
        }
    }

    fn finish(mut self) -> PolicyStats {
        if self.stats.runs > 0 {
            self.stats.relative_slack = self.slack_sum / self.stats.runs as f64;
        }
        if !self.runtime_errors.is_empty() {
            self.runtime_errors.sort_by(f64::total_cmp);
            self.stats.runtime_mdape = Some(median(&self.runtime_errors));
        }
        self.stats
    }
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// The Autopilot-style grant after `history`: the decayed maximum of the recent peaks (each
/// halved per four runs of age) plus 15%; its runtime guess is the last runtime.
pub fn autopilot(history: &[PastRun]) -> Option<(f64, Option<f64>)> {
    let decayed = model::decayed_max(history)?;
    let runtime = history.iter().rev().find_map(|r| r.runtime_seconds);
    Some((decayed * (1.0 + AUTOPILOT_MARGIN), runtime))
}

/// Replays `records` in time order: before each run, refits when due (on the runs before it
/// only), estimates it, and scores our grant and the baselines' against its measured peak.
/// `static_grant` is the static baseline's grant (also the Autopilot baseline's for a
/// segment's first run).
pub fn replay(records: &[Record], config: &Config, static_grant: u64) -> Evaluation {
    let mut order: Vec<&Record> = records.iter().collect();
    order.sort_by_key(|r| r.at);
    let mut estimator = Estimator::new(config.clone());
    let mut histories = Histories::default();
    let mut ours = Tally::new("cohort estimator");
    let mut autopilot_tally = Tally::new(&format!("autopilot (decayed max +{:.0}%)", AUTOPILOT_MARGIN * 100.0));
    let mut static_tally = Tally::new(&format!("static {}", human_bytes(static_grant)));
    let mut peaks = Vec::new();
    let mut scored_runs: Vec<(f64, f64)> = Vec::new();
    // The Autopilot baseline's runs: its decayed maximum (None for a first run), peak, runtime.
    let mut autopilot_runs: Vec<(Option<f64>, f64, f64)> = Vec::new();
    let mut by_basis: Vec<(String, usize, usize)> = Vec::new();
    let mut segments = std::collections::HashSet::new();
    let mut seen: Vec<Record> = Vec::new();
    let mut measured_since_fit = 0usize;
    let mut fits = 0;
    for r in order {
        segments.insert((r.tenant.as_str(), r.segment.as_str()));
        let due = if estimator.model.is_none() { measured_since_fit >= config.first_fit_after } else { measured_since_fit >= config.refit_every };
        if due {
            fits += 1;
            estimator.model = Some(model::fit(&seen, config, fits as u64));
            measured_since_fit = 0;
        }
        let history = histories.get(&r.tenant, &r.segment);
        let estimate = estimator.estimate(&r.features, &history);
        if let (Some(peak), Some(runtime)) = (r.peak_bytes, r.runtime_seconds.filter(|s| s.is_finite() && *s >= 0.0)) {
            let peak = peak as f64;
            ours.add(estimate.memory_bound_bytes as f64, peak, runtime, Some(estimate.runtime_seconds));
            let (grant, rt) = autopilot(&history).unwrap_or((static_grant as f64, None));
            autopilot_tally.add(grant, peak, runtime, rt);
            autopilot_runs.push((model::decayed_max(&history), peak, runtime));
            static_tally.add(static_grant as f64, peak, runtime, None);
            peaks.push(peak);
            scored_runs.push((peak, runtime));
            let basis = format!("{:?}", estimate.basis);
            match by_basis.iter_mut().find(|(b, _, _)| *b == basis) {
                Some(entry) => {
                    entry.1 += 1;
                    entry.2 += usize::from(peak > estimate.memory_bound_bytes as f64);
                }
                None => by_basis.push((basis, 1, usize::from(peak > estimate.memory_bound_bytes as f64))),
            }
        }
        if r.measured() {
            measured_since_fit += 1;
        }
        histories.push(r);
        seen.push(r.clone());
    }
    // The static grant that, in hindsight, would have met the coverage.
    peaks.sort_by(f64::total_cmp);
    let ours = ours.finish();
    let matched = autopilot_at(&autopilot_runs, ours.under_granted, static_grant as f64);
    let mut policies = vec![ours, autopilot_tally.finish()];
    policies.extend(matched);
    policies.push(static_tally.finish());
    if !peaks.is_empty() {
        let k = ((peaks.len() as f64 * config.coverage).ceil() as usize).clamp(1, peaks.len());
        let hindsight = peaks[k - 1];
        let mut t = Tally::new(&format!("static {} (p{} in hindsight)", human_bytes(hindsight as u64), config.coverage * 100.0));
        for (peak, runtime) in &scored_runs {
            t.add(hindsight, *peak, *runtime, None);
        }
        policies.push(t.finish());
    }
    Evaluation { records: records.len(), scored: scored_runs.len(), segments: segments.len(), fits, coverage: config.coverage, policies, by_basis }
}

/// The Autopilot baseline with the smallest margin, chosen in hindsight, that under-grants no
/// more runs than `misses` (first runs keep the static grant): the baseline at an equal or
/// lower under-grant rate, to compare slack with. `None` without runs with history.
fn autopilot_at(runs: &[(Option<f64>, f64, f64)], misses: usize, static_grant: f64) -> Option<PolicyStats> {
    let first_misses = runs.iter().filter(|(d, peak, _)| d.is_none() && *peak > static_grant).count();
    let mut ratios: Vec<f64> = runs.iter().filter_map(|(d, peak, _)| d.map(|d| peak / d.max(1.0))).collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(|a, b| b.total_cmp(a));
    // The largest ratio that may stay above the margin is the (allowed + 1)-th largest.
    let allowed = misses.saturating_sub(first_misses).min(ratios.len() - 1);
    let factor = ratios[allowed].max(1.0);
    let mut t = Tally::new(&format!("autopilot (decayed max +{:.0}%, margin in hindsight for ≤ our under-grants)", (factor - 1.0) * 100.0));
    for (d, peak, runtime) in runs {
        t.add(d.map_or(static_grant, |d| d * factor), *peak, *runtime, None);
    }
    Some(t.finish())
}

/// Four significant digits, in plain notation while that stays readable.
fn significant(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if (1e-3..1e6).contains(&v.abs()) {
        let decimals = (3 - (v.abs().log10().floor() as i32).clamp(-6, 6)).clamp(0, 6) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.3e}")
    }
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} runs ({} scored) over {} segments; {} fits; target coverage {}%",
            self.records,
            self.scored,
            self.segments,
            self.fits,
            self.coverage * 100.0
        )?;
        writeln!(f)?;
        writeln!(f, "| policy | under-grant rate | relative slack | runtime MdAPE | GiB-h granted | GiB-h used |")?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|")?;
        for p in &self.policies {
            writeln!(
                f,
                "| {} | {:.2}% ({}/{}) | {:.1}% | {} | {} | {} |",
                p.name,
                p.under_grant_rate() * 100.0,
                p.under_granted,
                p.runs,
                p.relative_slack * 100.0,
                p.runtime_mdape.map_or("-".to_string(), |e| format!("{:.1}%", e * 100.0)),
                significant(p.gb_hours_granted),
                significant(p.gb_hours_used),
            )?;
        }
        writeln!(f)?;
        let parts: Vec<String> = self.by_basis.iter().map(|(b, n, u)| format!("{b}: {n} runs, {u} under-granted")).collect();
        writeln!(f, "cohort estimator by basis: {}", parts.join("; "))
    }
}
