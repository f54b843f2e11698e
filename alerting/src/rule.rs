//! The failure rule: at least `threshold` failures within `window` at a scope key.
//!
//! For a key `s` at instant `t`, `n_s(t)` counts the failures of `s` with `at` in
//! `(t - window, t]`; `s` fires while `n_s(t) >= threshold`. A transition is emitted at each
//! instant where the state differs from the state just before it. [`Evaluator`] is incremental:
//! failures go in as they happen, and an instant is *closed* (its transitions emitted) once
//! time has moved past it, because another failure may still arrive at the same millisecond.
//! Each scope keeps one queue of expiry instants (its window is fixed, so expiries arrive in
//! order) and one counter per key: work per failure is constant, memory is bounded by the
//! failures inside the windows plus one small entry per key seen.
//!
//! Expiry instants are closed like arrivals, so a resolution falls exactly at `t0 + window`;
//! the transitions of one instant come out sorted by scope (global, region, tenant), then key.
//! A failure that arrives after its instant was closed (live only: a replay sorts first)
//! counts at the earliest instant not yet closed (see [`Evaluator::late`]). [`recount`]
//! is the rule computed from scratch at every instant, for tests.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a failure counts. The order is the output order of simultaneous transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every job, wherever it ran.
    Global,
    /// The jobs of one region's tenants.
    Region,
    /// One tenant's jobs.
    Tenant,
}

impl Scope {
    /// Every scope, widest first.
    pub const ALL: [Scope; 3] = [Scope::Global, Scope::Region, Scope::Tenant];

    /// Its name in labels, the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Region => "region",
            Scope::Tenant => "tenant",
        }
    }

    /// The scope named `text` (`global`, `region`, `tenant`).
    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The scopes an alert of this scope is narrower than (its inhibitors, widest first).
    pub fn wider(self) -> &'static [Scope] {
        match self {
            Scope::Global => &[],
            Scope::Region => &[Scope::Global],
            Scope::Tenant => &[Scope::Global, Scope::Region],
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The condition holds.
    Firing,
    /// It held, and no longer does.
    Resolved,
}

impl State {
    /// Its name in labels, the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }
}

/// What kind of rule raised an alert: the store's `rule` column and the `alertname` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// At least T failures within W ([`Evaluator`]).
    Failures,
    /// The success rate burning its error budget ([`crate::slo::BurnRate`]).
    BurnRate,
    /// A segment's run far slower than its recent ones ([`crate::slo::Runtime`]).
    Runtime,
}

impl RuleKind {
    /// Every kind.
    pub const ALL: [RuleKind; 3] = [RuleKind::Failures, RuleKind::BurnRate, RuleKind::Runtime];

    /// Its name in the store and the API: `failures`, `burn_rate`, `runtime`.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Failures => "failures",
            RuleKind::BurnRate => "burn_rate",
            RuleKind::Runtime => "runtime",
        }
    }

    /// The kind named `text`, if any.
    pub fn parse(text: &str) -> Option<RuleKind> {
        RuleKind::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The `alertname` label of its alerts.
    pub fn alertname(self) -> &'static str {
        match self {
            RuleKind::Failures => "CohortJobFailures",
            RuleKind::BurnRate => "CohortSuccessRateBurn",
            RuleKind::Runtime => "CohortSegmentRuntimeHigh",
        }
    }

    /// The `severity` label of its alerts: a page, or a ticket for a slow segment.
    pub fn severity(self) -> &'static str {
        match self {
            RuleKind::Failures | RuleKind::BurnRate => "page",
            RuleKind::Runtime => "ticket",
        }
    }
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One scope's window and threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Milliseconds; at least 1.
    pub window_ms: i64,
    /// Failures; at least 1.
    pub threshold: u32,
}

impl Default for Window {
    fn default() -> Self {
        Window { window_ms: 10 * 60 * 1000, threshold: 5 }
    }
}

/// The rule at each scope (the spec's defaults: 10 minutes, 5 failures, everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureRule {
    /// Every failure, wherever it happened.
    pub global: Window,
    /// The failures of one region's tenants.
    pub region: Window,
    /// One tenant's failures.
    pub tenant: Window,
}

impl FailureRule {
    /// The window and threshold at `scope`.
    pub fn at(&self, scope: Scope) -> Window {
        match scope {
            Scope::Global => self.global,
            Scope::Region => self.region,
            Scope::Tenant => self.tenant,
        }
    }

    /// The rule with the same window and threshold at every scope.
    pub fn uniform(window_ms: i64, threshold: u32) -> FailureRule {
        let w = Window { window_ms, threshold };
        FailureRule { global: w, region: w, tenant: w }
    }
}

/// A change of state of one scope key at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    /// Where it counts.
    pub scope: Scope,
    /// The scope's key: `global`, the region, or the tenant.
    pub key: String,
    /// Firing or resolved.
    pub state: State,
    /// `n_s(at)` after the transition.
    pub failures: u32,
}

/// The key of the global scope.
pub const GLOBAL: &str = "global";

#[derive(Debug)]
struct Key {
    name: Box<str>,
    count: u32,
    firing: bool,
    /// The instant this key was last touched (so it is evaluated once per instant).
    touched: i64,
}

#[derive(Debug)]
struct ScopeState {
    window: Window,
    keys: Vec<Key>,
    index: HashMap<Box<str>, u32>,
    /// Expiry instants of the failures inside the window, in order, with their key.
    expiries: VecDeque<(i64, u32)>,
}

impl ScopeState {
    fn new(window: Window) -> ScopeState {
        ScopeState { window, keys: Vec::new(), index: HashMap::new(), expiries: VecDeque::new() }
    }

    fn key(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let id = u32::try_from(self.keys.len()).unwrap_or(u32::MAX);
        self.keys.push(Key { name: name.into(), count: 0, firing: false, touched: i64::MIN });
        self.index.insert(name.into(), id);
        id
    }
}

/// The incremental evaluator of the failure rule at the three scopes.
#[derive(Debug)]
pub struct Evaluator {
    scopes: [ScopeState; 3],
    /// The instant that failures are being gathered at, not yet closed.
    open: Option<i64>,
    /// Every instant before this one is closed.
    horizon: i64,
    touched: Vec<(Scope, u32)>,
    late: u64,
}

impl Evaluator {
    /// An evaluator with no outcomes seen (a window or threshold of 0 counts as 1).
    pub fn new(rule: FailureRule) -> Evaluator {
        let window = |w: Window| Window { window_ms: w.window_ms.max(1), threshold: w.threshold.max(1) };
        Evaluator {
            scopes: [ScopeState::new(window(rule.global)), ScopeState::new(window(rule.region)), ScopeState::new(window(rule.tenant))],
            open: None,
            horizon: i64::MIN,
            touched: Vec::new(),
            late: 0,
        }
    }

    /// A failure at `at` (milliseconds) for a tenant in a region. Closes every instant before
    /// `at` first, appending their transitions to `out`. A failure older than an instant
    /// already closed counts at the oldest open instant instead (see [`Evaluator::late`]).
    pub fn fail(&mut self, at: i64, tenant: &str, region: &str, out: &mut Vec<Transition>) {
        self.advance(at, out);
        let at = at.max(self.horizon);
        if at > self.open.unwrap_or(i64::MIN) {
            self.open = Some(at);
        } else if at < self.open.unwrap_or(i64::MIN) {
            self.late += 1;
        }
        let at = self.open.unwrap_or(at);
        for (scope, name) in [(Scope::Global, GLOBAL), (Scope::Region, region), (Scope::Tenant, tenant)] {
            let state = &mut self.scopes[scope.index()];
            let id = state.key(name);
            let expiry = at.saturating_add(state.window.window_ms);
            state.expiries.push_back((expiry, id));
            let key = &mut state.keys[id as usize];
            key.count += 1;
            if key.touched != at {
                key.touched = at;
                self.touched.push((scope, id));
            }
        }
    }

    /// Time has reached `until`: closes every instant before it (arrivals and expiries).
    pub fn advance(&mut self, until: i64, out: &mut Vec<Transition>) {
        while let Some(t) = self.next_instant() {
            if t >= until {
                break;
            }
            self.close(t, out);
        }
        if until > self.horizon {
            self.horizon = until;
        }
    }

    /// Closes everything: the resolutions that follow once every failure has expired.
    pub fn finish(&mut self, out: &mut Vec<Transition>) {
        self.advance(i64::MAX, out);
    }

    /// The next instant with something to decide (an open instant or an expiry), if any.
    pub fn next_instant(&self) -> Option<i64> {
        let expiry = self.scopes.iter().filter_map(|s| s.expiries.front().map(|e| e.0)).min();
        match (self.open, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Failures that arrived after their instant was closed (live only; a replay sorts first).
    pub fn late(&self) -> u64 {
        self.late
    }

    /// The keys firing now, with their failure counts.
    pub fn firing(&self) -> Vec<(Scope, String, u32)> {
        let mut all = Vec::new();
        for scope in Scope::ALL {
            for key in &self.scopes[scope.index()].keys {
                if key.firing {
                    all.push((scope, key.name.to_string(), key.count));
                }
            }
        }
        all
    }

    /// Failures inside the window of a key now.
    pub fn failures(&self, scope: Scope, key: &str) -> u32 {
        let state = &self.scopes[scope.index()];
        state.index.get(key).map_or(0, |&id| state.keys[id as usize].count)
    }

    /// Failures held for their windows (the structure's memory, in entries).
    pub fn held(&self) -> usize {
        self.scopes.iter().map(|s| s.expiries.len()).sum()
    }

    fn close(&mut self, t: i64, out: &mut Vec<Transition>) {
        for scope in Scope::ALL {
            let state = &mut self.scopes[scope.index()];
            while let Some(&(expiry, id)) = state.expiries.front() {
                if expiry > t {
                    break;
                }
                state.expiries.pop_front();
                let key = &mut state.keys[id as usize];
                key.count -= 1;
                if key.touched != t {
                    key.touched = t;
                    self.touched.push((scope, id));
                }
            }
        }
        if self.open == Some(t) {
            self.open = None;
        }
        let first = out.len();
        for (scope, id) in self.touched.drain(..) {
            let state = &mut self.scopes[scope.index()];
            let threshold = state.window.threshold;
            let key = &mut state.keys[id as usize];
            let firing = key.count >= threshold;
            if firing != key.firing {
                key.firing = firing;
                out.push(Transition {
                    at: t,
                    scope,
                    key: key.name.to_string(),
                    state: if firing { State::Firing } else { State::Resolved },
                    failures: key.count,
                });
            }
        }
        out[first..].sort_by(|a, b| (a.scope, &a.key).cmp(&(b.scope, &b.key)));
        if t + 1 > self.horizon {
            self.horizon = t + 1;
        }
    }
}

/// The rule recounted from scratch at every instant (for tests): all failures, any order.
pub fn recount(rule: FailureRule, failures: &[(i64, String, String)]) -> Vec<Transition> {
    let mut instants: Vec<i64> = Vec::new();
    for (at, _, _) in failures {
        instants.push(*at);
        for scope in Scope::ALL {
            instants.push(at + rule.at(scope).window_ms.max(1));
        }
    }
    instants.sort_unstable();
    instants.dedup();
    let mut keys: Vec<(Scope, String)> = Vec::new();
    for (_, tenant, region) in failures {
        keys.push((Scope::Global, GLOBAL.to_string()));
        keys.push((Scope::Region, region.clone()));
        keys.push((Scope::Tenant, tenant.clone()));
    }
    keys.sort();
    keys.dedup();
    let count = |scope: Scope, key: &str, lo_excl: i64, hi_incl: i64| -> u32 {
        failures
            .iter()
            .filter(|(at, tenant, region)| {
                let k = match scope {
                    Scope::Global => GLOBAL,
                    Scope::Region => region,
                    Scope::Tenant => tenant,
                };
                k == key && *at > lo_excl && *at <= hi_incl
            })
            .count() as u32
    };
    let mut out = Vec::new();
    for &t in &instants {
        for (scope, key) in &keys {
            let w = rule.at(*scope);
            let (window, threshold) = (w.window_ms.max(1), w.threshold.max(1));
            let now = count(*scope, key, t - window, t);
            // Just before t: the window (t - ε - W, t - ε] holds [t - W, t).
            let before = count(*scope, key, t - window - 1, t - 1);
            let (was, is) = (before >= threshold, now >= threshold);
            if was != is {
                out.push(Transition { at: t, scope: *scope, key: key.clone(), state: if is { State::Firing } else { State::Resolved }, failures: now });
            }
        }
    }
    out
}
