//! The rules beyond 5-in-10: success-rate burn (multi-window, multi-burn-rate) at each scope,
//! and a segment's runtime far above its own recent baseline.
//!
//! [`BurnRate`] counts outcomes per scope key in buckets (a fifth of the shortest window, at
//! most a minute: a minute with the default pairs 1h/5m at 14.4× and 6h/30m at 6×) and fires
//! while, over both windows of one pair, the error ratio is above the pair's factor × the error
//! budget `1 - slo`, once the long window holds `min_outcomes` outcomes. [`Runtime`] fires when
//! a run takes more than `factor ×` the median of its segment's last `baseline_runs` successful
//! runs (and more than `min_seconds`); the next successful run back under it resolves.

use std::collections::{HashMap, VecDeque};

#[cfg(test)]
use crate::config::BurnWindow;
use crate::config::{BurnRateRule, RuntimeRule};
use crate::rule::{GLOBAL, Scope, State};

#[cfg(test)]
const MINUTE_MS: i64 = 60_000;

/// A burn-rate change of state.
#[derive(Debug, Clone, PartialEq)]
pub struct BurnTransition {
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    /// Where it counts.
    pub scope: Scope,
    /// The scope's key: `global`, the region, or the tenant.
    pub key: String,
    /// Firing or resolved.
    pub state: State,
    /// The error ratio over the long window that decided it.
    pub error_ratio: f64,
}

#[derive(Debug, Default)]
struct Buckets {
    /// (bucket, outcomes, failures), oldest first, none older than the longest window.
    buckets: VecDeque<(i64, u64, u64)>,
    firing: bool,
}

impl Buckets {
    fn add(&mut self, bucket: i64, failed: bool) {
        match self.buckets.back_mut() {
            Some(b) if b.0 == bucket => {
                b.1 += 1;
                b.2 += u64::from(failed);
            }
            // Outcomes arrive in finishing order; one a little older than the newest bucket
            // (another process's late commit) counts in that bucket.
            Some(b) if b.0 > bucket => {
                b.1 += 1;
                b.2 += u64::from(failed);
            }
            _ => self.buckets.push_back((bucket, 1, u64::from(failed))),
        }
    }

    fn trim(&mut self, now_bucket: i64, kept: i64) {
        while self.buckets.front().is_some_and(|b| b.0 <= now_bucket - kept) {
            self.buckets.pop_front();
        }
    }

    /// (outcomes, failures) over the last `buckets` buckets up to `now_bucket`.
    fn over(&self, now_bucket: i64, buckets: i64) -> (u64, u64) {
        self.buckets.iter().rev().take_while(|b| b.0 > now_bucket - buckets).fold((0, 0), |(n, f), b| (n + b.1, f + b.2))
    }
}

/// Burn-rate alerts: fires when, over both a long and a short window of one of the rule's
/// pairs, failures eat the error budget (`1 - slo`) faster than the pair's factor. Outcomes
/// are counted in buckets of [`BurnRateRule::bucket_ms`] (a minute by default).
#[derive(Debug)]
pub struct BurnRate {
    rule: BurnRateRule,
    bucket_ms: i64,
    /// (long, short) windows in buckets, and the factor.
    windows: Vec<(i64, i64, f64)>,
    /// Buckets kept per key: the longest window.
    kept: i64,
    keys: HashMap<(Scope, String), Buckets>,
}

impl BurnRate {
    /// Burn-rate alerts with no outcomes seen.
    pub fn new(rule: BurnRateRule) -> BurnRate {
        let bucket_ms = rule.bucket_ms().max(1);
        let buckets = |ms: i64| ((ms + bucket_ms - 1) / bucket_ms).max(1);
        let windows: Vec<(i64, i64, f64)> = rule.windows.iter().map(|w| (buckets(w.long), buckets(w.short), w.factor)).collect();
        let kept = windows.iter().map(|w| w.0.max(w.1)).max().unwrap_or(1);
        BurnRate { rule, bucket_ms, windows, kept, keys: HashMap::new() }
    }

    /// One outcome; returns the transitions it causes.
    pub fn observe(&mut self, at: i64, tenant: &str, region: &str, failed: bool) -> Vec<BurnTransition> {
        let bucket = at.div_euclid(self.bucket_ms);
        let mut out = Vec::new();
        for (scope, key) in [(Scope::Global, GLOBAL), (Scope::Region, region), (Scope::Tenant, tenant)] {
            let entry = self.keys.entry((scope, key.to_string())).or_default();
            entry.add(bucket, failed);
            if let Some(t) = decide(&self.rule, &self.windows, self.bucket_ms, at, scope, key, entry) {
                out.push(t);
            }
        }
        out
    }

    /// One outcome counted without deciding anything (rebuilding from stored outcomes, in
    /// finishing order); [`BurnRate::tick`] decides once they are all in.
    pub fn load(&mut self, at: i64, tenant: &str, region: &str, failed: bool) {
        let bucket = at.div_euclid(self.bucket_ms);
        for (scope, key) in [(Scope::Global, GLOBAL), (Scope::Region, region), (Scope::Tenant, tenant)] {
            self.keys.entry((scope, key.to_string())).or_default().add(bucket, failed);
        }
    }

    /// Time passes: resolves what has cooled down and forgets keys with nothing left.
    pub fn tick(&mut self, now: i64) -> Vec<BurnTransition> {
        let mut out = Vec::new();
        let bucket = now.div_euclid(self.bucket_ms);
        for ((scope, key), entry) in &mut self.keys {
            entry.trim(bucket, self.kept);
            if let Some(t) = decide(&self.rule, &self.windows, self.bucket_ms, now, *scope, key, entry) {
                out.push(t);
            }
        }
        self.keys.retain(|_, e| !e.buckets.is_empty() || e.firing);
        out.sort_by(|a, b| (a.scope, &a.key).cmp(&(b.scope, &b.key)));
        out
    }

    /// The keys that fire now (as of the last decision).
    pub fn firing(&self) -> Vec<(Scope, String)> {
        let mut out: Vec<(Scope, String)> = self.keys.iter().filter(|(_, e)| e.firing).map(|(k, _)| k.clone()).collect();
        out.sort();
        out
    }

    /// The error ratio over the longest window of a key, now.
    pub fn error_ratio(&self, now: i64, scope: Scope, key: &str) -> f64 {
        let bucket = now.div_euclid(self.bucket_ms);
        self.keys.get(&(scope, key.to_string())).map_or(0.0, |e| {
            let (n, f) = e.over(bucket, self.kept);
            if n == 0 { 0.0 } else { f as f64 / n as f64 }
        })
    }
}

fn decide(rule: &BurnRateRule, windows: &[(i64, i64, f64)], bucket_ms: i64, at: i64, scope: Scope, key: &str, entry: &mut Buckets) -> Option<BurnTransition> {
    let bucket = at.div_euclid(bucket_ms);
    let budget = 1.0 - rule.slo;
    let mut firing = false;
    let mut ratio = 0.0;
    for &(long, short, factor) in windows {
        let (n_long, f_long) = entry.over(bucket, long);
        let (n_short, f_short) = entry.over(bucket, short);
        let long_ratio = if n_long == 0 { 0.0 } else { f_long as f64 / n_long as f64 };
        let short_ratio = if n_short == 0 { 0.0 } else { f_short as f64 / n_short as f64 };
        ratio = f64::max(ratio, long_ratio);
        if n_long >= rule.min_outcomes && long_ratio > factor * budget && short_ratio > factor * budget {
            firing = true;
        }
    }
    (firing != entry.firing).then(|| {
        entry.firing = firing;
        BurnTransition { at, scope, key: key.to_string(), state: if firing { State::Firing } else { State::Resolved }, error_ratio: ratio }
    })
}

/// A runtime change of state for one segment.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeTransition {
    /// The segment's tenant.
    pub tenant: String,
    /// The segment.
    pub segment: String,
    /// Firing or resolved.
    pub state: State,
    /// The runtime of the run that decided it.
    pub seconds: f64,
    /// The median runtime of the segment's recent successful runs.
    pub baseline_seconds: f64,
}

/// Runtime alerts: a run slower than `factor ×` the median of its segment's recent successful
/// runs (and slower than `min_seconds`) fires; the next run back under it resolves.
#[derive(Debug)]
pub struct Runtime {
    rule: RuntimeRule,
    segments: HashMap<(String, String), (VecDeque<f64>, bool)>,
}

impl Runtime {
    /// Runtime alerts with no runs seen.
    pub fn new(rule: RuntimeRule) -> Runtime {
        Runtime { rule, segments: HashMap::new() }
    }

    /// A finished run of a segment.
    pub fn observe(&mut self, tenant: &str, segment: &str, seconds: f64, succeeded: bool) -> Option<RuntimeTransition> {
        if !seconds.is_finite() || seconds < 0.0 {
            return None;
        }
        let (recent, firing) = self.segments.entry((tenant.to_string(), segment.to_string())).or_default();
        let baseline = (recent.len() >= self.rule.baseline_runs).then(|| median(recent));
        let slow = baseline.is_some_and(|b| seconds > self.rule.factor * b && seconds > self.rule.min_seconds);
        if succeeded {
            recent.push_back(seconds);
            if recent.len() > self.rule.baseline_runs {
                recent.pop_front();
            }
        }
        (slow != *firing && (slow || succeeded)).then(|| {
            *firing = slow;
            RuntimeTransition {
                tenant: tenant.to_string(),
                segment: segment.to_string(),
                state: if slow { State::Firing } else { State::Resolved },
                seconds,
                baseline_seconds: baseline.unwrap_or(0.0),
            }
        })
    }
}

fn median(values: &VecDeque<f64>) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_burns_both_windows_and_cools_down() {
        let rule = BurnRateRule { enabled: true, slo: 0.999, min_outcomes: 20, ..BurnRateRule::default() };
        let mut burn = BurnRate::new(rule);
        let t0 = 1_000 * MINUTE_MS;
        let mut fired = Vec::new();
        for i in 0..100 {
            fired.extend(burn.observe(t0 + i * 1000, "a", "r", i % 10 == 0));
        }
        // 10% errors against a 0.1% budget: 100× the budget, over both windows.
        assert!(fired.iter().any(|t| t.scope == Scope::Tenant && t.state == State::Firing), "{fired:?}");
        // An hour of silence later the short window is empty: resolved.
        let later = burn.tick(t0 + 61 * MINUTE_MS);
        assert!(later.iter().all(|t| t.state == State::Resolved) && later.len() == 3, "{later:?}");
    }

    #[test]
    fn burn_windows_are_settings_and_seconds_long_ones_decide_in_seconds() {
        let rule = BurnRateRule { enabled: true, slo: 0.9, min_outcomes: 3, windows: vec![BurnWindow { long: 20_000, short: 5_000, factor: 2.0 }] };
        let mut burn = BurnRate::new(rule);
        let t0 = 1_000_000_000;
        let mut fired = Vec::new();
        for i in 0..3 {
            fired.extend(burn.observe(t0 + i * 100, "a", "r", true));
        }
        assert_eq!(fired.iter().filter(|t| t.state == State::Firing).count(), 3, "{fired:?}");
        // Six seconds later the short window is empty: resolved.
        assert_eq!(burn.tick(t0 + 6_000).len(), 3);
        assert!(burn.firing().is_empty());
    }

    #[test]
    fn burn_outcomes_loaded_decide_at_the_next_tick() {
        let rule = BurnRateRule { enabled: true, slo: 0.9, min_outcomes: 3, windows: vec![BurnWindow { long: 20_000, short: 5_000, factor: 2.0 }] };
        let mut burn = BurnRate::new(rule);
        for i in 0..3 {
            burn.load(1_000_000_000 + i * 100, "a", "r", true);
        }
        assert!(burn.firing().is_empty());
        assert_eq!(burn.tick(1_000_001_000).len(), 3);
        assert_eq!(burn.firing().len(), 3);
    }

    #[test]
    fn a_slow_run_fires_and_the_next_normal_one_resolves() {
        let rule = RuntimeRule { enabled: true, factor: 3.0, min_seconds: 1.0, baseline_runs: 5 };
        let mut rt = Runtime::new(rule);
        for _ in 0..5 {
            assert_eq!(rt.observe("t", "s", 2.0, true), None);
        }
        assert_eq!(rt.observe("t", "s", 7.0, true).map(|t| t.state), Some(State::Firing));
        assert_eq!(rt.observe("t", "s", 2.1, true).map(|t| t.state), Some(State::Resolved));
    }
}
