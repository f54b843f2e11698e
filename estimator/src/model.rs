//! The estimator: regressions per regime, calibrated margins, and the rules they fall back on.
//!
//! [`fit`] replays the records by time, each seeing only the earlier runs as its segment's
//! history, and fits two regimes, both on log scales. **Warm** (the segment has run before):
//! the memory regression starts from its peak scaled to this run (the last peak if it reads
//! exactly what the last run read on one partition, else the largest recent peak per row read
//! times the rows it reads, and at least the last peak after a run that ran out of its grant);
//! the runtime regression from its last runtime and the growth of rows and bytes since. **Cold**
//! (a segment never seen, of a tenant maybe never seen; fitted on every run): the regression
//! reads only the plan's shape and the sizes.
//!
//! The grant is an upper bound, not the prediction: normalized split conformal. A second
//! regression per target learns the spread of the log-residuals (wider for a big jump in data,
//! for an unsettled history). Each regime's newest runs ([`Config::calibration_share`]) are held
//! out, and the bound is the prediction plus a margin × the spread, the margin being the
//! conformal quantile, at the configured coverage, of residual ÷ spread over the held-out runs,
//! per group of warm runs (the same sizes on one partition, other sizes on one partition,
//! several partitions: Mondrian conformal). Where there are too few held-out runs for the
//! quantile, the largest score stands in, plus [`Config::uncalibrated_margin`] (0.05, about 5%)
//! on the log bound: a group with too few of its own takes the pooled margin or its own largest
//! score, whichever is more, plus that margin; a group with none takes the pooled margin.
//!
//! A run that reads exactly what its segment's last run read, on one partition, is a repeat
//! (unless that run ran out of its grant): its bound is the last peak raised by
//! [`Regime::repeat_margin`], the conformal quantile of ln(peak ÷ last peak) over the window's
//! repeats (or their largest plus `uncalibrated_margin` when there are too few); a run that
//! reads more never gets less than a repeat would.
//!
//! [`Estimator::estimate`] falls back to rules until the regime a run falls in is fitted: with
//! history, the scaled peak (grown with the partitions) and a bound
//! [`Config::rule_history_margin`] times that; without, [`Config::rule_base_bytes`] plus
//! [`Config::rule_bytes_per_source_byte`] per byte read, and a bound of twice that. Runtimes
//! fall back likewise to the last runtime grown with the rows (the same margin), or without
//! one to about 100 MB/s of source (at least 50 ms) with a bound four times that. A last run
//! that ran out of memory makes the floor twice the grant it ran out of. Bytes are rounded up
//! (a bound of exactly a past peak must not come out a byte short), and the bound is kept
//! within `[min_bytes, max_bytes]`.

use serde::{Deserialize, Serialize};

use crate::features::{Features, Histories, PastRun, Record};
use crate::regression::{self, Linear};

/// How the estimator fits and bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The share of runs whose peak should stay within their grant.
    pub coverage: f64,
    /// The smallest memory bound.
    pub min_bytes: u64,
    /// The largest memory bound (the pool's budget).
    pub max_bytes: u64,
    /// Refit after this many new finished runs.
    pub refit_every: usize,
    /// The first fit comes after this many finished runs.
    pub first_fit_after: usize,
    /// Fit on at most this many recent runs.
    pub window: usize,
    /// The most recent share of runs held out to calibrate the bound.
    pub calibration_share: f64,
    /// A regime is fitted only with at least this many runs to fit on.
    pub min_fit: usize,
    /// The ridge penalty (on standardized features).
    pub penalty: f64,
    /// Cold rule: bytes of memory per byte of source read…
    pub rule_bytes_per_source_byte: f64,
    /// …plus this.
    pub rule_base_bytes: u64,
    /// Warm rule (no model yet): the segment's largest recent peak per row read, times the
    /// rows this run reads, times this.
    pub rule_history_margin: f64,
    /// Added (as a log-ratio) to the bound of a group whose margin is its largest held-out
    /// score, when there are too few held-out runs to take the quantile the coverage asks for.
    pub uncalibrated_margin: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            coverage: 0.995,
            min_bytes: 64 << 10,
            max_bytes: u64::MAX,
            refit_every: 100,
            first_fit_after: 60,
            window: 5_000,
            calibration_share: 0.35,
            min_fit: 30,
            penalty: 1e-3,
            rule_bytes_per_source_byte: 4.0,
            rule_base_bytes: 32 << 20,
            rule_history_margin: 1.5,
            uncalibrated_margin: 0.05,
        }
    }
}

impl Config {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |m: &str| Err(crate::Error::Config(m.into()));
        if !(self.coverage > 0.0 && self.coverage < 1.0) {
            return bad("coverage must be between 0 and 1 (exclusive)");
        }
        if !(self.calibration_share > 0.0 && self.calibration_share < 1.0) {
            return bad("calibration_share must be between 0 and 1 (exclusive)");
        }
        if self.min_bytes > self.max_bytes {
            return bad("min_bytes exceeds max_bytes");
        }
        for (name, v) in
            [("penalty", self.penalty), ("rule_bytes_per_source_byte", self.rule_bytes_per_source_byte), ("uncalibrated_margin", self.uncalibrated_margin)]
        {
            if !(v.is_finite() && v >= 0.0) {
                return Err(crate::Error::Config(format!("{name} must be a finite number ≥ 0")));
            }
        }
        if !(self.rule_history_margin.is_finite() && self.rule_history_margin >= 1.0) {
            return bad("rule_history_margin must be at least 1");
        }
        if self.refit_every == 0 || self.window == 0 || self.min_fit == 0 {
            return bad("refit_every, window and min_fit must be at least 1");
        }
        Ok(())
    }
}

/// Which part of the estimator answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The size rule: no history, no fitted cold model.
    ColdRule,
    /// The cold regression.
    Cold,
    /// The last peak scaled by growth: history but no fitted warm model.
    WarmRule,
    /// The warm regression.
    Warm,
}

/// What a run will need.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Predicted peak memory.
    pub memory_bytes: u64,
    /// The upper bound at the configured coverage: the grant.
    pub memory_bound_bytes: u64,
    /// Predicted runtime.
    pub runtime_seconds: f64,
    /// The runtime's upper bound at the configured coverage.
    pub runtime_bound_seconds: f64,
    /// Which part answered.
    pub basis: Basis,
    /// The model version (0: rules only).
    pub model_version: u64,
}

/// A regression on log scale with its spread and calibrated margin: the bound at `x` is
/// `mean(x) + margin × spread(x)` (normalized split conformal: runs the model knows well get
/// a tight bound, noisy ones a wide one, and the held-out runs set `margin` for the coverage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bounded {
    /// The log of the target.
    pub mean: Linear,
    /// The log of the typical absolute log-residual, over the spread features.
    pub spread: Linear,
    /// The conformal quantile of residual ÷ spread on the held-out runs, per group of runs
    /// (Mondrian conformal: each group calibrated on its own held-out runs).
    pub margins: Vec<f64>,
    /// Added to the log bound, per group: [`Config::uncalibrated_margin`] for a group whose
    /// margin is the largest held-out score (too few runs for the quantile), 0 otherwise.
    #[serde(default)]
    pub extra: Vec<f64>,
}

/// The smallest spread (a log-ratio): runs are never trusted to better than about 3%.
const MIN_SPREAD: f64 = 0.03;
/// The largest spread.
const MAX_SPREAD: f64 = 3.0;

impl Bounded {
    fn spread_at(&self, s: &[f64]) -> f64 {
        let v = self.spread.predict(s).exp();
        if v.is_finite() { v.clamp(MIN_SPREAD, MAX_SPREAD) } else { MAX_SPREAD }
    }

    /// (ln point, ln bound) at features `x`, spread features `s`, in `group`.
    fn at(&self, x: &[f64], s: &[f64], group: usize) -> (f64, f64) {
        let p = self.mean.predict(x);
        let margin = self.margins.get(group).or(self.margins.iter().max_by(|a, b| a.total_cmp(b))).copied().unwrap_or(0.0);
        let extra = self.extra.get(group).or(self.extra.iter().max_by(|a, b| a.total_cmp(b))).copied().unwrap_or(0.0);
        (p, p + margin * self.spread_at(s) + extra)
    }
}

/// One regime's regressions and calibrated margins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regime {
    /// ln(peak bytes).
    pub memory: Bounded,
    /// ln(runtime seconds).
    pub runtime: Bounded,
    /// Runs fitted on.
    pub fitted_on: usize,
    /// Held-out runs the margins come from.
    pub calibrated_on: usize,
    /// True when the margins are the conformal quantile (enough held-out runs), false when
    /// they are the largest residual plus a safety margin.
    pub calibrated: bool,
    /// Warm only: for a run that reads exactly what its segment's last run read, on one
    /// partition, the bound of ln(peak ÷ last peak) — the conformal quantile at the coverage
    /// over such repeats in the window, or the largest plus `uncalibrated_margin` when there
    /// are too few. `None` before any repeat was seen.
    #[serde(default)]
    pub repeat_margin: Option<f64>,
}

/// A fitted estimator model: what the control plane stores and reloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Increases with each fit.
    pub version: u64,
    /// The coverage the margins were calibrated for.
    pub coverage: f64,
    /// Finished runs it learned from.
    pub trained_on: usize,
    /// Segments seen before.
    pub warm: Option<Regime>,
    /// Segments never seen.
    pub cold: Option<Regime>,
}

/// Estimates runs: a model (if fitted yet) and the configuration.
#[derive(Debug, Clone)]
pub struct Estimator {
    /// Settings.
    pub config: Config,
    /// The fitted model, if any.
    pub model: Option<Model>,
}

fn ln1(v: u64) -> f64 {
    (v as f64 + 1.0).ln()
}

/// What a segment's recent runs say, for the warm regime.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Summary {
    last_peak: f64,
    /// The largest of the recent peaks per row read (runs that finished): peaks grow with the
    /// rows read, in steps as hash tables double, and the largest recent ratio covers the step.
    per_row_max: f64,
    last: Sizes,
    /// Autopilot-style: the largest of the recent peaks, each halved for every four runs of age.
    decayed_max: f64,
    /// ln(last peak / the one before).
    trend: f64,
    /// How much the segment's peak moved between its recent runs beyond what its rows did:
    /// the largest |Δ ln peak − Δ ln rows| (runs on several partitions vary run to run).
    volatility: f64,
    /// The most recent runtime known, with the sizes it ran on.
    last_runtime: Option<(f64, Sizes)>,
    /// The largest grant the last run ran out of, if it never finished.
    censored_at: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Sizes {
    rows: u64,
    bytes: u64,
    partitions: u32,
}

impl Sizes {
    fn of(f: &Features) -> Sizes {
        Sizes { rows: f.source_rows, bytes: f.source_bytes, partitions: f.partitions.max(1) }
    }
}

/// Runs of age `HALF_LIFE_RUNS` count half in the decayed maximum.
pub const HALF_LIFE_RUNS: f64 = 4.0;

/// Autopilot-style: the largest of the recent peaks, each halved for every
/// [`HALF_LIFE_RUNS`] runs of age (`None` without history).
pub fn decayed_max(history: &[PastRun]) -> Option<f64> {
    history.iter().rev().enumerate().map(|(age, r)| r.peak_bytes * 0.5f64.powf(age as f64 / HALF_LIFE_RUNS)).reduce(f64::max)
}

fn summarize(history: &[PastRun]) -> Option<Summary> {
    let last = history.last()?;
    // A run that never finished ran out of a grant; a retry doubles it, so its peak was more.
    let last_peak = if last.censored { last.peak_bytes * 2.0 } else { last.peak_bytes };
    let decayed_max = decayed_max(history).unwrap_or(last_peak).max(last_peak);
    let trend = match history.len() {
        0 | 1 => 0.0,
        n => (last.peak_bytes / history[n - 2].peak_bytes.max(1.0)).ln(),
    };
    let volatility = history
        .windows(2)
        .filter(|w| !w[0].censored && !w[1].censored)
        .map(|w| ((w[1].peak_bytes / w[0].peak_bytes.max(1.0)).ln() - (ln1(w[1].features.source_rows) - ln1(w[0].features.source_rows))).abs())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let last_runtime = history.iter().rev().find_map(|r| r.runtime_seconds.map(|s| (s.max(1e-4), Sizes::of(&r.features))));
    let per_row_max = history.iter().filter(|r| !r.censored).map(|r| r.peak_bytes / (r.features.source_rows as f64 + 1.0)).fold(0.0, f64::max);
    Some(Summary {
        last_peak: last_peak.max(1.0),
        per_row_max,
        last: Sizes::of(&last.features),
        decayed_max,
        trend: if trend.is_finite() { trend } else { 0.0 },
        volatility,
        last_runtime,
        censored_at: last.censored.then_some(last.peak_bytes),
    })
}

/// Growth of what is read since `then`, as log-ratios of rows and bytes, and of partitions.
fn growth(f: &Features, then: Sizes) -> [f64; 3] {
    [ln1(f.source_rows) - ln1(then.rows), ln1(f.source_bytes) - ln1(then.bytes), (f.partitions.max(1) as f64).ln() - (then.partitions as f64).ln()]
}

/// Cold features; the first four are sizes (weights kept ≥ 0).
fn cold_x(f: &Features) -> Vec<f64> {
    vec![
        ln1(f.source_bytes),
        ln1(f.source_rows),
        ln1(f.root_rows),
        ln1(f.largest_rows),
        f.objects as f64,
        f.joins as f64,
        f.related_predicates as f64,
        f.max_hops as f64,
        f.phases as f64,
        (f.partitions.max(1) as f64).ln(),
    ]
}
const COLD_NON_NEGATIVE: [bool; 10] = [true, true, true, true, false, false, false, false, false, false];

/// The segment's peak scaled to this run: the last peak when it reads exactly what the last
/// run read on one partition (the peak repeats), else the largest recent peak per row read
/// times the rows it reads (at least the last peak after a censored run, whose true peak was
/// above its grant).
fn scaled_peak(f: &Features, s: &Summary) -> f64 {
    let repeat = warm_group(f, s) == 0;
    let scaled = s.per_row_max * (f.source_rows as f64 + 1.0);
    let scaled = if s.censored_at.is_some() { scaled.max(s.last_peak) } else { scaled };
    if repeat || !(scaled > 0.0) { s.last_peak } else { scaled.max(1.0) }
}

/// Warm features for memory: the scaled peak alone (growth and the decayed maximum as extra
/// features made the bound wider on recorded traces, not tighter).
fn warm_memory_x(f: &Features, s: &Summary) -> Vec<f64> {
    vec![scaled_peak(f, s).ln()]
}
const WARM_MEMORY_NON_NEGATIVE: [bool; 1] = [true];
/// Runtime features of the warm regime; the first four are sizes (weights kept ≥ 0).
const WARM_RUNTIME_NON_NEGATIVE: [bool; 6] = [true, true, true, true, false, false];

/// Spread features of the warm regime: how far the run is from its last (growth, only
/// upward so that larger inputs never narrow the bound) and how unsettled its history is.
fn warm_spread_x(f: &Features, then: Sizes, last: f64, s: &Summary) -> Vec<f64> {
    let [rows, bytes, _] = growth(f, then);
    vec![
        rows.max(0.0),
        bytes.max(0.0),
        (s.decayed_max / s.last_peak).ln(),
        s.trend.abs(),
        last.ln(),
        (f.partitions.max(1) as f64).ln(),
        s.volatility,
        (s.volatility + 0.01).ln(),
    ]
}
const WARM_SPREAD_NON_NEGATIVE: [bool; 8] = [true, true, false, false, false, false, false, false];

/// Warm features for runtime, from the last runtime known.
fn warm_runtime_x(f: &Features, last_runtime: (f64, Sizes)) -> Vec<f64> {
    let (seconds, then) = last_runtime;
    let [rows, bytes, partitions] = growth(f, then);
    vec![seconds.ln(), rows, bytes, ln1(f.source_bytes), 0.0, partitions]
}

/// The upper quantile of `scores` that split conformal prediction takes for `coverage`: the
/// ⌈(n+1)·coverage⌉-th smallest, or `None` when there are too few scores for it.
pub fn conformal_quantile(scores: &[f64], coverage: f64) -> Option<f64> {
    let n = scores.len();
    let k = ((n as f64 + 1.0) * coverage).ceil() as usize;
    if n == 0 || k > n || k == 0 {
        return None;
    }
    let mut sorted: Vec<f64> = scores.iter().copied().filter(|s| s.is_finite()).collect();
    if sorted.len() < n {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    Some(sorted[k - 1])
}

/// One target of a training example: features, spread features, log target, group.
type Target = (Vec<f64>, Vec<f64>, f64, usize);

/// The group of a warm run, calibrated apart from the others: the same sizes as last time on
/// one partition (the peak repeats exactly), other sizes on one partition, several partitions
/// (runs vary from run to run).
fn warm_group(f: &Features, s: &Summary) -> usize {
    if f.partitions.max(1) > 1 || s.last.partitions > 1 {
        2
    } else if f.source_rows == s.last.rows && f.source_bytes == s.last.bytes {
        0
    } else {
        1
    }
}

/// One training example (log scale).
struct Example {
    memory: Target,
    runtime: Option<Target>,
}

/// Fits mean and spread on `fit`, calibrates the margin on `cal`. `None` without enough runs.
fn fit_bounded(fit: &[&Target], cal: &[&Target], non_negative: (&[bool], &[bool]), config: &Config) -> Option<(Bounded, bool)> {
    if fit.len() < config.min_fit || cal.is_empty() {
        return None;
    }
    let mean =
        regression::fit(&fit.iter().map(|t| t.0.clone()).collect::<Vec<_>>(), &fit.iter().map(|t| t.2).collect::<Vec<_>>(), non_negative.0, config.penalty)
            .ok()?;
    let spread_y: Vec<f64> = fit.iter().map(|t| ((t.2 - mean.predict(&t.0)).abs() + MIN_SPREAD).ln()).collect();
    let spread = regression::fit(&fit.iter().map(|t| t.1.clone()).collect::<Vec<_>>(), &spread_y, non_negative.1, config.penalty).ok()?;
    let mut bounded = Bounded { mean, spread, margins: Vec::new(), extra: Vec::new() };
    let scored: Vec<(usize, f64)> = cal.iter().map(|t| (t.3, (t.2 - bounded.mean.predict(&t.0)) / bounded.spread_at(&t.1))).collect();
    let all: Vec<f64> = scored.iter().map(|(_, v)| *v).collect();
    let largest = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    // Too few held-out runs for the quantile: the largest score, and a safety margin on the
    // log bound.
    let pooled = conformal_quantile(&all, config.coverage);
    let mut calibrated = pooled.is_some();
    let pooled_extra = if calibrated { 0.0 } else { config.uncalibrated_margin };
    let pooled = pooled.unwrap_or_else(|| largest(&all)).max(0.0);
    let groups = cal.iter().map(|t| t.3 + 1).max().unwrap_or(1);
    for g in 0..groups {
        let mine: Vec<f64> = scored.iter().filter(|(group, _)| *group == g).map(|(_, v)| *v).collect();
        // A group with too few held-out runs of its own takes the pooled margin, or its own
        // largest residual if that is more.
        let (margin, extra) = match conformal_quantile(&mine, config.coverage) {
            Some(q) => (q.max(0.0), 0.0),
            None => {
                calibrated &= mine.is_empty();
                (pooled.max(largest(&mine)), if mine.is_empty() { pooled_extra } else { config.uncalibrated_margin })
            }
        };
        bounded.margins.push(margin);
        bounded.extra.push(extra);
    }
    Some((bounded, calibrated))
}

fn targets(v: &[Example], runtime: bool) -> Vec<&Target> {
    v.iter().filter_map(|e| if runtime { e.runtime.as_ref() } else { Some(&e.memory) }).collect()
}

/// Fits a regime on `examples` (oldest first): the older part fitted, the newest held out.
/// `non_negative`: which weights stay ≥ 0 in the memory, runtime and spread regressions.
fn fit_regime(examples: &[Example], non_negative: [&[bool]; 3], config: &Config) -> Option<Regime> {
    let n = examples.len();
    let held_out = ((n as f64 * config.calibration_share).ceil() as usize).clamp(1, n.saturating_sub(1).max(1));
    let fit_n = n.checked_sub(held_out)?;
    let (fit, cal) = examples.split_at(fit_n);
    let [memory_nn, runtime_nn, spread_nn] = non_negative;
    let (memory, calibrated) = fit_bounded(&targets(fit, false), &targets(cal, false), (memory_nn, spread_nn), config)?;
    let (runtime, _) = fit_bounded(&targets(fit, true), &targets(cal, true), (runtime_nn, spread_nn), config)?;
    Some(Regime { memory, runtime, fitted_on: fit_n, calibrated_on: cal.len(), calibrated, repeat_margin: None })
}

/// The bound of ln(peak ÷ last peak) over the recent `repeats` (see [`Regime::repeat_margin`]).
fn repeat_margin(repeats: &[f64], config: &Config) -> Option<f64> {
    let recent = &repeats[repeats.len().saturating_sub(config.window)..];
    if recent.is_empty() {
        return None;
    }
    let margin =
        conformal_quantile(recent, config.coverage).unwrap_or_else(|| recent.iter().copied().fold(f64::NEG_INFINITY, f64::max) + config.uncalibrated_margin);
    margin.is_finite().then_some(margin.max(0.0))
}

/// Fits a model on finished runs (any order; they are replayed by time, each seeing only the
/// runs before it as its segment's history).
pub fn fit(records: &[Record], config: &Config, version: u64) -> Model {
    let mut order: Vec<&Record> = records.iter().collect();
    order.sort_by_key(|r| r.at);
    let mut histories = Histories::default();
    let mut warm = Vec::new();
    let mut cold = Vec::new();
    let mut repeats = Vec::new();
    let mut trained_on = 0;
    for r in order {
        if let Some(peak) = r.peak_bytes {
            trained_on += 1;
            let y = (peak.max(1) as f64).ln();
            let runtime_y = r.runtime_seconds.filter(|s| s.is_finite() && *s >= 0.0).map(|s| s.max(1e-4).ln());
            let history = histories.get(&r.tenant, &r.segment);
            if let Some(s) = summarize(&history) {
                let g = warm_group(&r.features, &s);
                if g == 0 && s.censored_at.is_none() {
                    repeats.push(y - s.last_peak.ln());
                }
                warm.push(Example {
                    memory: (warm_memory_x(&r.features, &s), warm_spread_x(&r.features, s.last, s.last_peak, &s), y, g),
                    runtime: runtime_y
                        .and_then(|ry| s.last_runtime.map(|lr| (warm_runtime_x(&r.features, lr), warm_spread_x(&r.features, lr.1, lr.0, &s), ry, g))),
                });
            }
            // The cold regime learns from every run: its features never need history.
            let x = cold_x(&r.features);
            cold.push(Example { memory: (x.clone(), x.clone(), y, 0), runtime: runtime_y.map(|ry| (x.clone(), x, ry, 0)) });
        }
        histories.push(r);
    }
    let recent = |v: Vec<Example>| -> Vec<Example> {
        let skip = v.len().saturating_sub(config.window);
        v.into_iter().skip(skip).collect()
    };
    Model {
        version,
        coverage: config.coverage,
        trained_on,
        warm: fit_regime(&recent(warm), [&WARM_MEMORY_NON_NEGATIVE, &WARM_RUNTIME_NON_NEGATIVE, &WARM_SPREAD_NON_NEGATIVE], config)
            .map(|regime| Regime { repeat_margin: repeat_margin(&repeats, config), ..regime }),
        cold: fit_regime(&recent(cold), [&COLD_NON_NEGATIVE, &COLD_NON_NEGATIVE, &COLD_NON_NEGATIVE], config),
    }
}

impl Estimator {
    /// An estimator with no model yet: rules only.
    pub fn new(config: Config) -> Self {
        Estimator { config, model: None }
    }

    /// Estimates a run with these features, after these runs of the same segment (oldest first).
    pub fn estimate(&self, features: &Features, history: &[PastRun]) -> Estimate {
        let c = &self.config;
        let summary = summarize(history);
        let model = self.model.as_ref();
        let version = model.map_or(0, |m| m.version);
        // (ln point, ln bound) for memory and runtime, and the basis.
        let (memory, runtime, basis) = match (summary, model.and_then(|m| m.warm.as_ref()), model.and_then(|m| m.cold.as_ref())) {
            (Some(s), Some(warm), cold) => {
                let g = warm_group(features, &s);
                // A repeat of the last run: its peak, within what repeats have varied by.
                let m = match (g, s.censored_at, warm.repeat_margin) {
                    (0, None, Some(margin)) => (s.last_peak.ln(), s.last_peak.ln() + margin),
                    _ => {
                        let (point, bound) = warm.memory.at(&warm_memory_x(features, &s), &warm_spread_x(features, s.last, s.last_peak, &s), g);
                        // Reading more than the last run never earns less than repeating it.
                        let grew = features.source_rows >= s.last.rows && features.source_bytes >= s.last.bytes;
                        match (warm.repeat_margin, grew) {
                            (Some(margin), true) => (point, bound.max(s.last_peak.ln() + margin)),
                            _ => (point, bound),
                        }
                    }
                };
                let rt = match (s.last_runtime, cold) {
                    (Some(lr), _) => warm.runtime.at(&warm_runtime_x(features, lr), &warm_spread_x(features, lr.1, lr.0, &s), g),
                    (None, Some(cold)) => regime_runtime(cold, features),
                    (None, None) => rule_runtime(features),
                };
                (m, rt, Basis::Warm)
            }
            (Some(s), None, _) => {
                let [_, _, partitions] = growth(features, s.last);
                let m = scaled_peak(features, &s).ln() + partitions.max(0.0);
                let rt = match s.last_runtime {
                    Some((seconds, then)) => {
                        let p = seconds.ln() + growth(features, then)[0].max(0.0);
                        (p, p + c.rule_history_margin.ln())
                    }
                    None => rule_runtime(features),
                };
                ((m, m + c.rule_history_margin.ln()), rt, Basis::WarmRule)
            }
            (None, _, Some(cold)) => {
                let x = cold_x(features);
                (cold.memory.at(&x, &x, 0), regime_runtime(cold, features), Basis::Cold)
            }
            (None, _, None) => {
                let point = c.rule_base_bytes as f64 + c.rule_bytes_per_source_byte * features.source_bytes as f64;
                ((point.max(1.0).ln(), (point.max(1.0) * 2.0).ln()), rule_runtime(features), Basis::ColdRule)
            }
        };
        // A last run that never finished ran out of its grant: ask for at least double.
        let floor = summary.and_then(|s| s.censored_at).map_or(c.min_bytes as f64, |e| (e * 2.0).max(c.min_bytes as f64));
        let bound = to_bytes(memory.1.max(memory.0)).max(floor as u64).clamp(c.min_bytes, c.max_bytes.max(c.min_bytes));
        let point = to_bytes(memory.0).min(bound);
        let runtime_point = to_seconds(runtime.0);
        let runtime_bound = to_seconds(runtime.1).max(runtime_point);
        Estimate {
            memory_bytes: point,
            memory_bound_bytes: bound,
            runtime_seconds: runtime_point,
            runtime_bound_seconds: runtime_bound,
            basis,
            model_version: version,
        }
    }
}

fn regime_runtime(r: &Regime, f: &Features) -> (f64, f64) {
    let x = cold_x(f);
    r.runtime.at(&x, &x, 0)
}

/// About 100 MB/s of source, with a floor of 50 ms; the bound four times that.
fn rule_runtime(f: &Features) -> (f64, f64) {
    let p = (0.05 + f.source_bytes as f64 / 100e6).ln();
    (p, p + 4f64.ln())
}

/// e^v bytes, finite and at least 1.
/// Bytes from a log, rounded up: a bound of exactly a past peak must not come out a byte short.
fn to_bytes(v: f64) -> u64 {
    let b = v.exp();
    if b.is_nan() {
        return u64::MAX;
    }
    b.ceil().clamp(1.0, u64::MAX as f64) as u64
}

/// e^v seconds, finite and in [1 ms, 1 year].
fn to_seconds(v: f64) -> f64 {
    let s = v.exp();
    if s.is_nan() { 365.0 * 86_400.0 } else { s.clamp(1e-3, 365.0 * 86_400.0) }
}
