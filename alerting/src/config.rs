//! The `[alerts]` section of the configuration file: the rules, per scope, and inhibition.
//!
//! ```toml
//! [alerts]
//! inhibit = true                 # narrower alerts under a firing wider one are not notified alone
//! [alerts.failures.tenant]       # also .global and .region; defaults: 10m and 5
//! window = "10m"
//! threshold = 5
//! [alerts.runtime]               # a run far slower than its segment's recent median
//! factor = 3.0
//! [alerts.burn_rate]             # multi-window burn-rate alerts on the success-rate SLO
//! slo = 0.9995
//! windows = [{ long = "1h", short = "5m", factor = 14.4 }, { long = "6h", short = "30m", factor = 6.0 }]
//! ```

use serde::{Deserialize, Deserializer};

use crate::rule::{FailureRule, Scope, Window};

/// All alert rules.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertRules {
    /// Inhibition of narrower alerts by a firing wider one (the spec's default: on).
    pub inhibit: bool,
    /// The failure rule at each scope (`[alerts.failures.<scope>]`).
    pub failures: FailureScopes,
    /// Runtime alerts (`[alerts.runtime]`).
    pub runtime: RuntimeRule,
    /// Burn-rate alerts (`[alerts.burn_rate]`).
    pub burn_rate: BurnRateRule,
}

impl Default for AlertRules {
    fn default() -> Self {
        AlertRules { inhibit: true, failures: FailureScopes::default(), runtime: RuntimeRule::default(), burn_rate: BurnRateRule::default() }
    }
}

impl AlertRules {
    /// Checks ranges; the message names the setting.
    pub fn check(&self) -> Result<(), String> {
        for scope in Scope::ALL {
            let w = self.failures.at(scope);
            if w.window_ms < 1 {
                return Err(format!("alerts.failures.{scope}.window must be at least 1ms"));
            }
            if w.threshold < 1 {
                return Err(format!("alerts.failures.{scope}.threshold must be at least 1"));
            }
        }
        if !(self.runtime.factor > 1.0) {
            return Err("alerts.runtime.factor must be above 1".into());
        }
        if self.runtime.baseline_runs < 3 {
            return Err("alerts.runtime.baseline_runs must be at least 3".into());
        }
        if !(self.burn_rate.slo > 0.0 && self.burn_rate.slo < 1.0) {
            return Err("alerts.burn_rate.slo must be between 0 and 1".into());
        }
        if self.burn_rate.windows.is_empty() {
            return Err("alerts.burn_rate.windows needs at least one {long, short, factor}".into());
        }
        for (i, w) in self.burn_rate.windows.iter().enumerate() {
            if w.short < 50 || w.short > w.long {
                return Err(format!("alerts.burn_rate.windows[{i}]: short must be at least 50ms and at most long"));
            }
            if w.long > 7 * 86_400_000 {
                return Err(format!("alerts.burn_rate.windows[{i}]: long must be at most 7d"));
            }
            if !(w.factor > 0.0 && w.factor.is_finite()) {
                return Err(format!("alerts.burn_rate.windows[{i}]: factor must be above 0"));
            }
        }
        Ok(())
    }

    /// The failure rule the evaluator runs.
    pub fn failure_rule(&self) -> FailureRule {
        FailureRule { global: self.failures.global.window(), region: self.failures.region.window(), tenant: self.failures.tenant.window() }
    }
}

/// The failure rule at each scope.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailureScopes {
    /// Every failure, wherever it happened.
    pub global: FailureWindow,
    /// The failures of one region's tenants.
    pub region: FailureWindow,
    /// One tenant's failures.
    pub tenant: FailureWindow,
}

impl FailureScopes {
    /// The window and threshold at `scope`.
    pub fn at(&self, scope: Scope) -> Window {
        match scope {
            Scope::Global => self.global.window(),
            Scope::Region => self.region.window(),
            Scope::Tenant => self.tenant.window(),
        }
    }
}

/// One scope's window (a duration: `10m`, `30s`, `1500ms`) and threshold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailureWindow {
    /// How far back failures count (milliseconds; written `10m`, `30s`, `1500ms`).
    #[serde(deserialize_with = "de_duration_ms")]
    pub window: i64,
    /// Failures within the window at which the alert fires.
    pub threshold: u32,
}

impl Default for FailureWindow {
    fn default() -> Self {
        let w = Window::default();
        FailureWindow { window: w.window_ms, threshold: w.threshold }
    }
}

impl FailureWindow {
    /// The window the evaluator runs.
    pub fn window(&self) -> Window {
        Window { window_ms: self.window, threshold: self.threshold }
    }
}

/// A run whose runtime is far above its segment's recent baseline.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeRule {
    /// Whether these alerts are evaluated at all.
    pub enabled: bool,
    /// Fires when a run takes more than this times the median of the segment's recent runs...
    pub factor: f64,
    /// ...and more than this many seconds (short jobs jitter)...
    pub min_seconds: f64,
    /// ...over the last this many successful runs (no alert before that many).
    pub baseline_runs: usize,
}

impl Default for RuntimeRule {
    fn default() -> Self {
        RuntimeRule { enabled: true, factor: 3.0, min_seconds: 60.0, baseline_runs: 10 }
    }
}

/// Multi-window burn-rate alerts on the success rate at each scope (by default the SRE
/// workbook's 1h/5m at 14.4× and 6h/30m at 6× the error budget).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BurnRateRule {
    /// Whether these alerts are evaluated at all.
    pub enabled: bool,
    /// The success-rate objective.
    pub slo: f64,
    /// Outcomes a long window needs before it may fire (a handful of runs proves nothing).
    pub min_outcomes: u64,
    /// Fires while, over one of these pairs, both the long and the short window's error ratio
    /// are above `factor × (1 - slo)`.
    pub windows: Vec<BurnWindow>,
}

impl Default for BurnRateRule {
    fn default() -> Self {
        BurnRateRule { enabled: true, slo: 0.9995, min_outcomes: 20, windows: BurnWindow::workbook() }
    }
}

/// One pair of burn-rate windows (durations: `1h`, `5m`, `30s`) and its burn factor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurnWindow {
    /// Milliseconds.
    #[serde(deserialize_with = "de_duration_ms")]
    pub long: i64,
    /// Milliseconds; at most `long`.
    #[serde(deserialize_with = "de_duration_ms")]
    pub short: i64,
    /// How many times faster than the budget allows failures must come.
    pub factor: f64,
}

impl BurnWindow {
    /// The SRE workbook's pairs: 1h and 5m above 14.4×, 6h and 30m above 6×.
    pub fn workbook() -> Vec<BurnWindow> {
        vec![BurnWindow { long: 3_600_000, short: 300_000, factor: 14.4 }, BurnWindow { long: 21_600_000, short: 1_800_000, factor: 6.0 }]
    }
}

impl BurnRateRule {
    /// The width of the buckets outcomes are counted in: a fifth of the shortest window, at
    /// most a minute (a minute with the default windows), at least 10 ms.
    pub fn bucket_ms(&self) -> i64 {
        let shortest = self.windows.iter().map(|w| w.short).min().unwrap_or(300_000);
        (shortest / 5).clamp(10, 60_000)
    }

    /// The longest window (milliseconds): how far back outcomes matter.
    pub fn longest_ms(&self) -> i64 {
        self.windows.iter().map(|w| w.long).max().unwrap_or(0)
    }
}

pub use cohort_common::units::parse_duration_ms;

fn de_duration_ms<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Number(n) => Ok(n),
        Raw::Text(t) => parse_duration_ms(&t).map_err(serde::de::Error::custom),
    }
}
