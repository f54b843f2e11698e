//! The evaluators' feed: finished jobs in (this process's job events on SQLite, the store's
//! reads of every process's jobs on a shared PostgreSQL store), the transitions of the
//! failure, burn-rate and runtime rules out, as [`Change`]s with the labels and annotations
//! their alerts carry. A rebuild reads the evaluators' state back from the store.

use std::collections::{BTreeMap, HashMap};

use cohort_alerting::notify::alert_labels;
use cohort_alerting::slo::{BurnRate, Runtime};
use cohort_alerting::{AlertRules, Evaluator, RuleKind, Scope, State};
use cohort_common::units::compact_ms;

use super::{Alerting, Change, Term};
use crate::jobs::JobStatus;
use crate::pool::JobEvent;
use crate::store::alerts::FinishedJob;
use crate::{Result, Store, now_micros};

/// A job whose final state became visible up to this long (microseconds) after its
/// `finished_at` (a slow commit, another host's clock) is still read.
pub(super) const LOOKBACK_MICROS: i64 = 3_000_000;
/// A rebuild replays each segment's runs finished within this long (microseconds: 7 days)
/// for its runtime baseline.
const RUNTIME_LOOKBACK_MICROS: i64 = 7 * 86_400 * 1_000_000;

impl Alerting {
    /// A finished job of this process as the evaluator takes it; `None` for a cancelled one
    /// (or one gone from the store).
    pub(super) async fn outcome_of(&self, event: &JobEvent) -> Result<Option<Outcome>> {
        let failed = match event.status {
            JobStatus::Succeeded => false,
            JobStatus::Failed => true,
            _ => return Ok(None),
        };
        // A success says what it needs; a failure is read back (its time exactly as stored).
        Ok(Some(match &event.succeeded {
            Some(s) => Outcome {
                job_id: event.job_id.clone(),
                failed,
                tenant_id: s.tenant_id.clone(),
                segment_id: s.segment_id.clone(),
                created_at: s.created_at,
                finished_at: s.finished_at,
            },
            None => {
                let Some(job) = self.store.job_by_id(&event.job_id).await? else { return Ok(None) };
                Outcome {
                    job_id: event.job_id.clone(),
                    failed,
                    tenant_id: job.tenant_id,
                    segment_id: job.segment_id,
                    created_at: job.created_at,
                    finished_at: job.finished_at.unwrap_or_else(now_micros),
                }
            }
        }))
    }

    /// A finished job: its failure into the failure rule, its outcome into burn rate and runtime.
    pub(super) async fn observe(&self, live: &mut Live, outcome: &Outcome, changes: &mut Vec<Change>) -> Result<()> {
        let region = live.region(&self.store, &outcome.tenant_id).await?;
        let finished = outcome.finished_at;
        let at_ms = finished.div_euclid(1000);
        let failed = outcome.failed;
        let tenant_id = &outcome.tenant_id;
        if failed {
            let mut transitions = Vec::new();
            live.failures.fail(at_ms, tenant_id, &region, &mut transitions);
            for t in transitions {
                changes.push(live.failure_change(&t));
            }
        }
        if self.settings.rules.burn_rate.enabled {
            for t in live.burn.observe(at_ms, tenant_id, &region, failed) {
                changes.push(live.burn_change(&t));
            }
        }
        if self.settings.rules.runtime.enabled {
            let seconds = (finished - outcome.created_at) as f64 / 1e6;
            if let Some(t) = live.runtime.observe(tenant_id, &outcome.segment_id, seconds, !failed) {
                let started = self.store.job_started_at(&outcome.job_id).await?;
                changes.push(live.runtime_change(&t, outcome, started));
            }
        }
        Ok(())
    }

    /// Rebuilds the evaluators from the store and makes the store's firing alerts agree with
    /// them. `None` when `lead` no longer holds the claim on the evaluator.
    ///
    /// - failure rule: the failures inside its windows, instants closed up to `settle_ms` ago;
    /// - burn rate: the outcomes inside its longest window, decided as of now;
    /// - runtime: each segment's last runs (of the last [`RUNTIME_LOOKBACK_MICROS`]).
    ///
    /// What fires in the store but not in the rebuilt evaluators (its failures expired, its
    /// rate recovered while the service was down, or its rule is off now) resolves now; what
    /// fires in them but not in the store (a crash between an outcome and its transition)
    /// fires now.
    pub(super) async fn rebuild(&self, live: &mut Live, lead: Option<&Term>, settle_ms: i64) -> Result<Option<Rebuilt>> {
        *live = Live::new(&self.settings.rules);
        let rules = &self.settings.rules;
        let rule = rules.failure_rule();
        let longest = Scope::ALL.iter().map(|s| rule.at(*s).window_ms).max().unwrap_or(600_000);
        let read_at = now_micros();
        let now_ms = read_at / 1000;
        let failures_since = read_at - longest.saturating_mul(1000);
        let since = if rules.burn_rate.enabled { failures_since.min(read_at - rules.burn_rate.longest_ms().saturating_mul(1000)) } else { failures_since };
        let rows = self.store.finished_outcomes_since(since).await?;
        let mut changes = Vec::new();
        // Resolutions go narrowest first, so none frees a narrower alert resolving with it.
        let mut resolutions = Vec::new();
        let mut firings = Vec::new();
        let mut transitions = Vec::new();
        let mut outcomes = Vec::new();
        for row in rows {
            let (finished, tenant, region, id, failed) = (row.finished_at, row.tenant_id, row.region, row.job_id, row.failed);
            live.regions.insert(tenant.clone(), region.clone());
            if failed && finished > failures_since {
                live.failures.fail(finished.div_euclid(1000), &tenant, &region, &mut transitions);
            }
            if rules.burn_rate.enabled {
                live.burn.load(finished.div_euclid(1000), &tenant, &region, failed);
            }
            outcomes.push((id, finished));
        }
        live.failures.advance(now_ms - settle_ms, &mut transitions);
        for t in &transitions {
            changes.push(live.failure_change(t));
        }
        // Transitions already recorded are no-ops; what fires in the store but no longer in
        // the evaluator (its failures expired while the service was down) resolves now.
        let firing_now: Vec<(Scope, String)> = live.failures.firing().into_iter().map(|(s, k, _)| (s, k)).collect();
        for (scope, key) in self.store.firing_keys(RuleKind::Failures).await? {
            if !firing_now.contains(&(scope, key.clone())) {
                let failures = i64::from(live.failures.failures(scope, &key));
                resolutions.push(resolution(RuleKind::Failures, scope, key, read_at, failures));
            }
        }

        // Burn rate: decided as of now over what was loaded.
        let burning = if rules.burn_rate.enabled {
            let _ = live.burn.tick(now_ms);
            live.burn.firing()
        } else {
            Vec::new()
        };
        let stored = self.store.firing_keys(RuleKind::BurnRate).await?;
        for (scope, key) in &stored {
            if !burning.contains(&(*scope, key.clone())) {
                resolutions.push(resolution(RuleKind::BurnRate, *scope, key.clone(), read_at, 0));
            }
        }
        for (scope, key) in burning {
            if !stored.contains(&(scope, key.clone())) {
                let ratio = live.burn.error_ratio(now_ms, scope, &key);
                let t = cohort_alerting::slo::BurnTransition { at: now_ms, scope, key, state: State::Firing, error_ratio: ratio };
                firings.push(live.burn_change(&t));
            }
        }

        // Runtime: each segment's last runs replayed, its baseline and state as they were.
        let mut slow: HashMap<String, Change> = HashMap::new();
        if rules.runtime.enabled {
            let per_segment = i64::try_from(rules.runtime.baseline_runs.saturating_mul(3)).unwrap_or(i64::MAX);
            let runs = self.store.recent_runs_per_segment(read_at - RUNTIME_LOOKBACK_MICROS, per_segment).await?;
            for run in runs {
                let started = run.started_at;
                let outcome = Outcome::from(run);
                let seconds = (outcome.finished_at - outcome.created_at) as f64 / 1e6;
                if let Some(t) = live.runtime.observe(&outcome.tenant_id, &outcome.segment_id, seconds, !outcome.failed) {
                    live.region(&self.store, &outcome.tenant_id).await?;
                    let change = live.runtime_change(&t, &outcome, started);
                    match t.state {
                        State::Firing => slow.insert(change.key.clone(), change),
                        State::Resolved => slow.remove(&change.key),
                    };
                }
            }
        }
        let stored = self.store.firing_keys(RuleKind::Runtime).await?;
        for (_, key) in &stored {
            if !slow.contains_key(key) {
                resolutions.push(resolution(RuleKind::Runtime, Scope::Tenant, key.clone(), read_at, 0));
            }
        }
        let mut slow: Vec<Change> = slow.into_values().filter(|c| !stored.iter().any(|(_, k)| *k == c.key)).collect();
        slow.sort_by_key(|c| c.at);
        resolutions.sort_by_key(|c| std::cmp::Reverse(c.scope));
        changes.extend(resolutions);
        changes.extend(firings);
        changes.extend(slow);

        if !self.apply_all(changes, lead).await? {
            return Ok(None);
        }
        Ok(Some(Rebuilt { read_at, outcomes }))
    }
}

/// A finished job as the evaluator takes it.
#[derive(Debug, Clone)]
pub(super) struct Outcome {
    job_id: String,
    failed: bool,
    tenant_id: String,
    segment_id: String,
    /// Microseconds.
    created_at: i64,
    /// Microseconds.
    finished_at: i64,
}

impl From<FinishedJob> for Outcome {
    fn from(job: FinishedJob) -> Outcome {
        Outcome {
            job_id: job.job_id,
            failed: job.failed,
            tenant_id: job.tenant_id,
            segment_id: job.segment_id,
            created_at: job.created_at,
            finished_at: job.finished_at,
        }
    }
}

/// What a rebuild read.
#[derive(Debug)]
pub(super) struct Rebuilt {
    /// When it read (microseconds).
    read_at: i64,
    /// The outcomes it counted: job ids and when they finished.
    outcomes: Vec<(String, i64)>,
}

impl Rebuilt {
    /// The jobs it counted that finished within [`LOOKBACK_MICROS`] of its read: the ones
    /// whose outcome may still come after it (an event, a read of the store).
    pub(super) fn recent(&self) -> HashMap<String, i64> {
        self.outcomes.iter().filter(|(_, finished)| *finished > self.read_at - LOOKBACK_MICROS).cloned().collect()
    }
}

/// The jobs every process finished, read from a shared store: each read takes what finished
/// since the previous one, and again the last [`LOOKBACK_MICROS`] of it for the commits that
/// became visible late; the ids already taken inside that lookback are skipped. Outcomes wait
/// in finishing order until they are old enough to go into the evaluator.
#[derive(Debug, Default)]
pub(super) struct Feed {
    /// When the last read began (microseconds).
    cursor: i64,
    /// Jobs taken that finished inside the lookback, and when.
    seen: HashMap<String, i64>,
    /// Outcomes read, by finishing time and job id, not yet in the evaluator.
    pending: BTreeMap<(i64, String), Outcome>,
}

impl Feed {
    /// After a rebuild: the failures it counted are taken, reads go on from when it read.
    pub(super) fn restart(&mut self, rebuilt: Rebuilt) {
        self.pending.clear();
        self.cursor = rebuilt.read_at;
        self.seen = rebuilt.recent();
    }

    /// Reads the jobs finished since the last read (succeeded or failed: cancelled ones count
    /// nowhere). The index `jobs_finished` (status, finished_at) serves it.
    pub(super) async fn read(&mut self, store: &Store) -> Result<()> {
        let read_at = now_micros();
        for job in store.jobs_finished_since(self.cursor - LOOKBACK_MICROS).await? {
            if self.seen.contains_key(&job.job_id) {
                continue;
            }
            let (id, finished_at) = (job.job_id.clone(), job.finished_at);
            self.seen.insert(id.clone(), finished_at);
            self.pending.insert((finished_at, id), Outcome::from(job));
        }
        self.cursor = read_at;
        // What finished before the next read's lookback is never read again.
        self.seen.retain(|_, finished| *finished > read_at - LOOKBACK_MICROS);
        Ok(())
    }

    /// The outcomes that finished before `until_ms`, oldest first.
    pub(super) fn ready(&mut self, until_ms: i64) -> Vec<Outcome> {
        let later = self.pending.split_off(&(until_ms.saturating_mul(1000), String::new()));
        std::mem::replace(&mut self.pending, later).into_values().collect()
    }
}

/// The evaluators and what they need at hand.
#[derive(Debug)]
pub(super) struct Live {
    pub(super) failures: Evaluator,
    burn: BurnRate,
    runtime: Runtime,
    regions: HashMap<String, String>,
    rules: AlertRules,
}

impl Live {
    pub(super) fn new(rules: &AlertRules) -> Live {
        Live {
            failures: Evaluator::new(rules.failure_rule()),
            burn: BurnRate::new(rules.burn_rate.clone()),
            runtime: Runtime::new(rules.runtime.clone()),
            regions: HashMap::new(),
            rules: rules.clone(),
        }
    }

    /// Time has reached `until_ms`: the failure rule's instants before it are closed.
    pub(super) fn close(&mut self, until_ms: i64, changes: &mut Vec<Change>) {
        let mut transitions = Vec::new();
        self.failures.advance(until_ms, &mut transitions);
        for t in transitions {
            changes.push(self.failure_change(&t));
        }
    }

    /// Burn-rate alerts decided again as time passes (cooled-down ones resolve).
    pub(super) fn tick_burn(&mut self, now_ms: i64, changes: &mut Vec<Change>) {
        if self.rules.burn_rate.enabled {
            // Resolutions narrowest first (none frees a narrower alert resolving with it),
            // then what fires, widest first (narrower ones are inhibited as they come).
            let (mut resolved, firing): (Vec<_>, Vec<_>) = self.burn.tick(now_ms).into_iter().partition(|t| t.state == State::Resolved);
            resolved.reverse();
            for t in resolved.iter().chain(&firing) {
                changes.push(self.burn_change(t));
            }
        }
    }

    async fn region(&mut self, store: &Store, tenant: &str) -> Result<String> {
        if let Some(r) = self.regions.get(tenant) {
            return Ok(r.clone());
        }
        let region = store.tenant(tenant).await?.map(|t| t.region).unwrap_or_default();
        self.regions.insert(tenant.to_string(), region.clone());
        Ok(region)
    }

    /// The labels of an alert of `rule` at `scope` and `key` (a tenant's with its region).
    fn labels(&self, rule: RuleKind, scope: Scope, key: &str) -> BTreeMap<String, String> {
        let region = if scope == Scope::Tenant { self.regions.get(key).map_or("", String::as_str) } else { "" };
        alert_labels(rule, scope, key, region)
    }

    fn failure_change(&self, t: &cohort_alerting::Transition) -> Change {
        let w = self.rules.failure_rule().at(t.scope);
        let mut annotations = BTreeMap::new();
        let place = if t.scope == Scope::Global { "everywhere".to_string() } else { format!("for {} {}", t.scope, t.key) };
        annotations.insert("summary".to_string(), format!("{} jobs failed within {} {place} (threshold {})", t.failures, compact_ms(w.window_ms), w.threshold));
        annotations.insert("failures".to_string(), t.failures.to_string());
        Change {
            rule: RuleKind::Failures,
            scope: t.scope,
            key: t.key.clone(),
            state: t.state,
            at: t.at.saturating_mul(1000),
            failures: i64::from(t.failures),
            labels: self.labels(RuleKind::Failures, t.scope, &t.key),
            annotations,
        }
    }

    fn burn_change(&self, t: &cohort_alerting::slo::BurnTransition) -> Change {
        let mut annotations = BTreeMap::new();
        let place = if t.scope == Scope::Global { "everywhere".to_string() } else { format!("for {} {}", t.scope, t.key) };
        annotations.insert(
            "summary".to_string(),
            format!(
                "job success rate {place} is burning its {}% objective's error budget too fast ({:.2}% failing)",
                self.rules.burn_rate.slo * 100.0,
                t.error_ratio * 100.0
            ),
        );
        Change {
            rule: RuleKind::BurnRate,
            scope: t.scope,
            key: t.key.clone(),
            state: t.state,
            at: t.at.saturating_mul(1000),
            failures: 0,
            labels: self.labels(RuleKind::BurnRate, t.scope, &t.key),
            annotations,
        }
    }
}

impl Live {
    /// A runtime transition of the run `outcome` (its last attempt started at `started`):
    /// measured end to end, from submission to its end, and split into the wait before its
    /// last attempt started (queued, admitted, retries' backoff) and that attempt's execution.
    fn runtime_change(&self, t: &cohort_alerting::slo::RuntimeTransition, outcome: &Outcome, started: Option<i64>) -> Change {
        let mut labels = self.labels(RuleKind::Runtime, Scope::Tenant, &t.tenant);
        labels.insert("segment".to_string(), t.segment.clone());
        let started = started.unwrap_or(outcome.finished_at).clamp(outcome.created_at, outcome.finished_at);
        let queued = (started - outcome.created_at) as f64 / 1e6;
        let executing = (outcome.finished_at - started) as f64 / 1e6;
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "summary".to_string(),
            format!(
                "segment {} of tenant {} took {:.3} s end to end ({queued:.3} s queued, {executing:.3} s executing), its recent median is {:.3} s",
                t.segment, t.tenant, t.seconds, t.baseline_seconds
            ),
        );
        annotations.insert("run".to_string(), outcome.job_id.clone());
        annotations.insert("seconds".to_string(), format!("{:.3}", t.seconds));
        annotations.insert("queued_seconds".to_string(), format!("{queued:.3}"));
        annotations.insert("executing_seconds".to_string(), format!("{executing:.3}"));
        annotations.insert("baseline_seconds".to_string(), format!("{:.3}", t.baseline_seconds));
        Change {
            rule: RuleKind::Runtime,
            scope: Scope::Tenant,
            key: format!("{}/{}", t.tenant, t.segment),
            state: t.state,
            at: outcome.finished_at,
            failures: 0,
            labels,
            annotations,
        }
    }
}

/// A stored firing alert resolving at a rebuild (its labels are the stored ones).
fn resolution(rule: RuleKind, scope: Scope, key: String, at: i64, failures: i64) -> Change {
    Change { rule, scope, key, state: State::Resolved, at, failures, labels: BTreeMap::new(), annotations: BTreeMap::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(finished_at: i64) -> Outcome {
        Outcome { job_id: "j".into(), failed: true, tenant_id: "t".into(), segment_id: "s".into(), created_at: 0, finished_at }
    }

    #[test]
    fn the_feed_hands_out_outcomes_in_finishing_order_once_old_enough() {
        let mut feed = Feed::default();
        for (id, at) in [("b", 2_500), ("a", 2_000), ("c", 3_000), ("d", 1_999)] {
            feed.pending.insert((at, id.to_string()), outcome(at));
        }
        // Before millisecond 3: what finished in milliseconds 1 and 2, oldest first.
        let ready: Vec<i64> = feed.ready(3).iter().map(|o| o.finished_at).collect();
        assert_eq!(ready, [1_999, 2_000, 2_500]);
        assert!(feed.ready(3).is_empty());
        assert_eq!(feed.ready(4).len(), 1);
    }

    #[test]
    fn after_a_rebuild_the_feed_skips_the_failures_it_counted_inside_the_lookback() {
        let mut feed = Feed::default();
        feed.pending.insert((1, "old".into()), outcome(1));
        let read_at = 10 * LOOKBACK_MICROS;
        feed.restart(Rebuilt { read_at, outcomes: vec![("counted".into(), read_at - 1), ("expired".into(), read_at - LOOKBACK_MICROS)] });
        assert!(feed.pending.is_empty());
        assert_eq!(feed.cursor, read_at);
        assert_eq!(feed.seen.keys().collect::<Vec<_>>(), ["counted"]);
    }
}
