//! Live alerting: the rule evaluator fed by job outcomes, the alerts' lifecycle in the store,
//! and the delivery of notifications to webhook receivers through a durable outbox.
//!
//! Two background tasks, neither on the job path:
//! - **evaluate**: listens to the pool's job events; a final failure goes into the same
//!   [`Evaluator`] `cohort alerts replay` runs, keyed by the job's commit time (milliseconds).
//!   An instant is closed once the clock is `settle` past it (a failure committed in the same
//!   millisecond by another worker still counts). Each transition is one store transaction:
//!   the alert row, its history, inhibition, and the outbox rows of its notifications. At
//!   start (and whenever it may have missed events) the evaluators are rebuilt from the store
//!   (failures inside the failure windows, outcomes inside the longest burn-rate window, each
//!   segment's last runs for its runtime baseline) and reconciled with the alerts of every
//!   rule the store says fire, so a crash between a job's outcome and its alert loses
//!   nothing, and an alert that recovered meanwhile resolves.
//!
//!   With several processes on one PostgreSQL store, one of them evaluates: the holder of the
//!   claim on the `alert_evaluator` row (a lease renewed from the loop every third of
//!   `lease_seconds`; another process takes over once it runs out). That process reads the
//!   jobs every process finished (successes too: burn rate and runtime need them) from the
//!   store every 250 ms, again over a short lookback for late commits, de-duplicated by job
//!   id, and feeds them in finishing order once they are `settle` + 500 ms old. On gaining
//!   the claim it rebuilds from the store; each transition's transaction first locks the claim
//!   row and records nothing unless the row still names this process and its term, so two
//!   processes that both believe they evaluate never record one transition twice.
//! - **deliver**: sends due outbox rows (claimed by compare-and-set, so replicas never send one
//!   row twice at once), signed as Standard Webhooks do it, the body rendered at the first
//!   attempt and resent unchanged with the same `webhook-id`. Failures back off exponentially
//!   with jitter, `Retry-After` is honoured, 410 disables the receiver. Also re-notifies firing
//!   alerts every `repeat_interval`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cohort_alerting::notify::{self, Matcher};
use cohort_alerting::rule::GLOBAL;
use cohort_alerting::slo::{BurnRate, Runtime};
use cohort_alerting::{AlertRules, Evaluator, Scope, State};
use prometheus::IntGauge;
use serde::Serialize;
use sqlx::Row;
use tokio::sync::{Notify, broadcast};

use crate::jobs::JobStatus;
use crate::pool::JobEvent;
use crate::store::Backend;
use crate::{Result, Store, new_id, now_micros};

/// How alerting runs (from the configuration).
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// The rules.
    pub rules: AlertRules,
    /// How long after an instant it is closed (failures of that millisecond may still arrive).
    pub settle: Duration,
    /// The least time between two notifications of one alert to one receiver when the alert
    /// changes (more narrower alerts inhibited under it).
    pub group_interval: Duration,
    /// Firing alerts are notified again this often.
    pub repeat_interval: Duration,
    /// The first retry's wait; doubling after.
    pub retry_base: Duration,
    /// The longest wait between retries.
    pub retry_max: Duration,
    /// A notification not delivered within this long is given up (and counted).
    pub give_up_after: Duration,
    /// One delivery attempt's time limit.
    pub timeout: Duration,
    /// Which addresses webhooks may reach.
    pub egress: crate::egress::EgressPolicy,
    /// This service's URL, for `externalURL` and `generatorURL`.
    pub external_url: String,
}

/// Delivery counters for `/metrics`.
#[derive(Debug, Default)]
pub struct DeliveryCounts {
    /// Notifications a receiver took (2xx).
    pub delivered: AtomicU64,
    /// Attempts that failed and will be retried.
    pub failed: AtomicU64,
    /// Notifications given up after `give_up_after`.
    pub gave_up: AtomicU64,
    /// Notifications not sent: a silence matched.
    pub silenced: AtomicU64,
    /// Receivers disabled by a 410 answer.
    pub disabled: AtomicU64,
}

/// The live alerting of one service process.
#[derive(Debug)]
pub struct Alerting {
    store: Store,
    settings: AlertSettings,
    wake: Notify,
    client: reqwest::Client,
    /// Delivery results.
    pub counts: DeliveryCounts,
    /// 1 while this process evaluates the alert rules.
    evaluating: IntGauge,
}

/// This process among the processes sharing a store (PostgreSQL), for the evaluator's claim.
#[derive(Debug, Clone)]
pub struct Replica {
    /// The process's name (the pool's `instance`: the same name its job leases carry).
    pub instance: String,
    /// How long a claim on the evaluator holds unless renewed; renewed every third of it.
    pub lease: Duration,
}

/// The claim this process holds on the evaluator: transitions are recorded only while the
/// store's `alert_evaluator` row still names this process and this term.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    instance: String,
    term: i64,
}

/// The `alert_evaluator` row.
const EVALUATOR: &str = "evaluator";
/// How often the evaluating process reads the jobs finished on a shared store.
const FEED_POLL: Duration = Duration::from_millis(250);
/// A job whose final state became visible up to this long (microseconds) after its
/// `finished_at` (a slow commit, another host's clock) is still read.
const LOOKBACK_MICROS: i64 = 3_000_000;
/// How often burn-rate alerts are decided again as time passes, at most (more often with
/// buckets narrower than this).
const BURN_TICK: Duration = Duration::from_secs(15);
/// A rebuild replays each segment's runs finished within this long (microseconds: 7 days)
/// for its runtime baseline.
const RUNTIME_LOOKBACK_MICROS: i64 = 7 * 86_400 * 1_000_000;
/// The gauge of the evaluating process.
const EVALUATING: &str = "cohort_alert_evaluator_leader";

/// What kind of rule raised an alert.
const FAILURES: &str = "failures";
const BURN_RATE: &str = "burn_rate";
const RUNTIME: &str = "runtime";

/// A change to apply to the store.
#[derive(Debug, Clone)]
struct Change {
    rule: &'static str,
    scope: Scope,
    key: String,
    state: State,
    /// Microseconds.
    at: i64,
    failures: i64,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

impl Alerting {
    /// The alerting of one process over `store`.
    pub fn new(store: Store, settings: AlertSettings) -> Arc<Alerting> {
        let client = settings.egress.client(settings.timeout);
        let evaluating = IntGauge::new(EVALUATING, "1 while this process evaluates the alert rules (one process at a time on a shared store).")
            .expect("a constant, valid metric name");
        Arc::new(Alerting { store, settings, wake: Notify::new(), client, counts: DeliveryCounts::default(), evaluating })
    }

    /// How it runs.
    pub fn settings(&self) -> &AlertSettings {
        &self.settings
    }

    /// How often burn-rate alerts are decided again: every bucket of the rule's windows, at
    /// least every 100 ms and at most every [`BURN_TICK`].
    fn burn_tick(&self) -> Duration {
        let bucket = u64::try_from(self.settings.rules.burn_rate.bucket_ms()).unwrap_or(60_000);
        Duration::from_millis(bucket).clamp(Duration::from_millis(100), BURN_TICK)
    }

    /// Wakes the delivery task (a receiver was added, an alert raised).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    // ---- evaluation

    /// Runs the evaluator until the process stops. On SQLite (one process per store) it is fed
    /// by this process's job events. On PostgreSQL, where several processes may share the
    /// store, one process at a time evaluates: the one holding the claim on the store's
    /// `alert_evaluator` row, renewed every third of `replica.lease`. It reads the jobs every
    /// process finished from the store, so its counts and ratios cover all of them.
    pub async fn evaluate(self: Arc<Self>, events: broadcast::Receiver<JobEvent>, replica: Replica) {
        match self.store.backend() {
            Backend::Sqlite => {
                self.evaluating.set(1);
                self.evaluate_events(events).await;
            }
            Backend::Postgres => {
                // Other processes' outcomes are read from the store, this one's as well.
                drop(events);
                self.evaluate_shared(replica).await;
            }
        }
    }

    /// The gauge saying whether this process evaluates the alert rules (for `/metrics`).
    pub fn evaluating_gauge(&self) -> IntGauge {
        self.evaluating.clone()
    }

    /// Gives up the claim on the evaluator (at a clean stop), so another process takes over
    /// without waiting for the claim to run out.
    pub async fn release(&self, replica: &Replica) {
        if self.store.backend() != Backend::Postgres {
            return;
        }
        let released = sqlx::query("UPDATE alert_evaluator SET lease_until = 0 WHERE id = $1 AND owner = $2")
            .bind(EVALUATOR)
            .bind(&replica.instance)
            .execute(self.store.pool())
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "alert evaluator: cannot release the claim; another process takes over once it runs out");
        }
        self.evaluating.set(0);
    }

    /// The evaluator fed by this process's job events (the only process on the store).
    async fn evaluate_events(self: Arc<Self>, mut events: broadcast::Receiver<JobEvent>) {
        let settle = i64::try_from(self.settings.settle.as_millis()).unwrap_or(50);
        let mut live = Live::new(&self.settings.rules);
        let mut stale = true;
        let mut next_tick = tokio::time::Instant::now();
        // Jobs the last rebuild counted whose events may still be on their way.
        let mut counted: HashMap<String, i64> = HashMap::new();
        loop {
            if stale {
                match self.rebuild(&mut live, None, settle).await {
                    Ok(rebuilt) => {
                        counted = rebuilt.map(|r| r.recent()).unwrap_or_default();
                        stale = false;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "alert evaluator: cannot read recent failures; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            let now_ms = now_micros() / 1000;
            let close_in = live.failures.next_instant().map(|t| (t + settle + 1 - now_ms).clamp(0, 60_000) as u64);
            let wait = close_in.map_or(Duration::from_secs(60), Duration::from_millis);
            let deadline = (tokio::time::Instant::now() + wait).min(next_tick);
            let mut changes = Vec::new();
            tokio::select! {
                event = events.recv() => match event {
                    Ok(event) if event.status.is_final() && counted.remove(&event.job_id).is_none() => {
                        let observed = match self.outcome_of(&event).await {
                            Ok(Some(outcome)) => self.observe(&mut live, &outcome, &mut changes).await,
                            Ok(None) => Ok(()),
                            Err(e) => Err(e),
                        };
                        if let Err(e) = observed {
                            tracing::warn!(job = %event.job_id, error = %e, "alert evaluator: cannot read a finished job; rebuilding");
                            stale = true;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "alert evaluator fell behind the job events; rebuilding from the store");
                        stale = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = tokio::time::sleep_until(deadline) => {}
            }
            let now_ms = now_micros() / 1000;
            live.close(now_ms - settle, &mut changes);
            if tokio::time::Instant::now() >= next_tick {
                next_tick = tokio::time::Instant::now() + self.burn_tick();
                live.tick_burn(now_ms, &mut changes);
            }
            if let Err(e) = self.apply_all(changes, None).await {
                tracing::warn!(error = %e, "alert evaluator: cannot record transitions; rebuilding from the store");
                stale = true;
            }
        }
    }

    /// The evaluator of a store shared by several processes: claims the evaluator, and while
    /// it holds the claim reads what every process finished and records the transitions.
    async fn evaluate_shared(self: Arc<Self>, replica: Replica) {
        // An outcome goes into the evaluator once it is `hold` old: by then the read that
        // finds it (every FEED_POLL, a little after its commit) has happened.
        let hold_ms = i64::try_from((self.settings.settle + 2 * FEED_POLL).as_millis()).unwrap_or(550);
        let renew_every = (replica.lease / 3).max(Duration::from_millis(100));
        let mut live = Live::new(&self.settings.rules);
        let mut feed = Feed::default();
        let mut term: Option<Term> = None;
        let mut stale = true;
        let mut next_claim = tokio::time::Instant::now();
        let mut next_tick = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_claim {
                next_claim = tokio::time::Instant::now() + renew_every;
                match self.claim(&replica).await {
                    Ok(claimed) => {
                        if claimed != term {
                            match &claimed {
                                Some(t) => tracing::info!(instance = %t.instance, term = t.term, "this process evaluates the alert rules now"),
                                None => tracing::info!(instance = %replica.instance, "another process evaluates the alert rules now"),
                            }
                            // Gaining the claim (again): rebuilt from the store first.
                            stale = true;
                        }
                        term = claimed;
                    }
                    // Still evaluating meanwhile: a transition is recorded only while the
                    // store names this process, so nothing is recorded twice.
                    Err(e) => tracing::warn!(error = %e, "alert evaluator: cannot renew the claim on the evaluator"),
                }
                self.evaluating.set(i64::from(term.is_some()));
            }
            if let Some(lead) = term.clone() {
                match self.lead_round(&lead, &mut live, &mut feed, &mut stale, &mut next_tick, hold_ms).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::info!(instance = %replica.instance, "another process took over the alert evaluator");
                        term = None;
                        self.evaluating.set(0);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "alert evaluator: store error; rebuilding from the store");
                        stale = true;
                    }
                }
            }
            let deadline = (tokio::time::Instant::now() + FEED_POLL).min(next_claim);
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// One round of the evaluating process: rebuilt when needed, the outcomes finished since
    /// the last round read, instants closed and transitions recorded. False when another
    /// process holds the claim now.
    async fn lead_round(
        &self,
        lead: &Term,
        live: &mut Live,
        feed: &mut Feed,
        stale: &mut bool,
        next_tick: &mut tokio::time::Instant,
        hold_ms: i64,
    ) -> Result<bool> {
        if *stale {
            let Some(rebuilt) = self.rebuild(live, Some(lead), hold_ms).await? else { return Ok(false) };
            feed.restart(rebuilt);
            *stale = false;
        }
        feed.read(&self.store).await?;
        let now_ms = now_micros() / 1000;
        let mut changes = Vec::new();
        for outcome in feed.ready(now_ms - hold_ms) {
            self.observe(live, &outcome, &mut changes).await?;
        }
        live.close(now_ms - hold_ms, &mut changes);
        if tokio::time::Instant::now() >= *next_tick {
            *next_tick = tokio::time::Instant::now() + self.burn_tick();
            live.tick_burn(now_ms, &mut changes);
        }
        self.apply_all(changes, Some(lead)).await
    }

    /// Claims the evaluator, or renews this process's claim; the claim held, or `None` when
    /// another process holds a claim that has not run out.
    async fn claim(&self, replica: &Replica) -> Result<Option<Term>> {
        let now = now_micros();
        let until = now.saturating_add(i64::try_from(replica.lease.as_micros()).unwrap_or(i64::MAX / 2));
        // The term grows when the claim changes hands (SET reads the row as it was).
        let row = sqlx::query(
            "UPDATE alert_evaluator SET term = CASE WHEN owner = $1 THEN term ELSE term + 1 END, owner = $1, lease_until = $2 \
             WHERE id = $3 AND (owner = $1 OR lease_until < $4) RETURNING term",
        )
        .bind(&replica.instance)
        .bind(until)
        .bind(EVALUATOR)
        .bind(now)
        .fetch_optional(self.store.pool())
        .await?;
        Ok(match row {
            Some(row) => Some(Term { instance: replica.instance.clone(), term: row.try_get(0)? }),
            None => None,
        })
    }

    /// A finished job of this process as the evaluator takes it; `None` for a cancelled one
    /// (or one gone from the store).
    async fn outcome_of(&self, event: &JobEvent) -> Result<Option<Outcome>> {
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
    async fn observe(&self, live: &mut Live, outcome: &Outcome, changes: &mut Vec<Change>) -> Result<()> {
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
                let started = self.started_at(&outcome.job_id).await?;
                changes.push(live.runtime_change(&t, outcome, started));
            }
        }
        Ok(())
    }

    /// When a job's last attempt started (microseconds), if it did.
    async fn started_at(&self, job: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT started_at FROM jobs WHERE id = $1").bind(job).fetch_optional(self.store.pool()).await?;
        Ok(match row {
            Some(row) => row.try_get::<Option<i64>, _>(0)?,
            None => None,
        })
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
    async fn rebuild(&self, live: &mut Live, lead: Option<&Term>, settle_ms: i64) -> Result<Option<Rebuilt>> {
        *live = Live::new(&self.settings.rules);
        let rules = &self.settings.rules;
        let rule = rules.failure_rule();
        let longest = Scope::ALL.iter().map(|s| rule.at(*s).window_ms).max().unwrap_or(600_000);
        let read_at = now_micros();
        let now_ms = read_at / 1000;
        let failures_since = read_at - longest.saturating_mul(1000);
        let since = if rules.burn_rate.enabled { failures_since.min(read_at - rules.burn_rate.longest_ms().saturating_mul(1000)) } else { failures_since };
        let rows = sqlx::query(
            "SELECT j.finished_at, j.tenant_id, t.region, j.id, j.status FROM jobs j JOIN tenants t ON t.id = j.tenant_id \
             WHERE j.status IN ('succeeded', 'failed') AND j.finished_at > $1 ORDER BY j.finished_at",
        )
        .bind(since)
        .fetch_all(self.store.pool())
        .await?;
        let mut changes = Vec::new();
        // Resolutions go narrowest first, so none frees a narrower alert resolving with it.
        let mut resolutions = Vec::new();
        let mut firings = Vec::new();
        let mut transitions = Vec::new();
        let mut outcomes = Vec::new();
        for row in rows {
            let (finished, tenant, region, id, status): (i64, String, String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?, row.try_get(4)?);
            let failed = status == JobStatus::Failed.as_str();
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
        for (scope, key) in self.stored_firing(FAILURES).await? {
            if !firing_now.contains(&(scope, key.clone())) {
                let failures = i64::from(live.failures.failures(scope, &key));
                resolutions.push(resolution(FAILURES, scope, key, read_at, failures));
            }
        }

        // Burn rate: decided as of now over what was loaded.
        let burning = if rules.burn_rate.enabled {
            let _ = live.burn.tick(now_ms);
            live.burn.firing()
        } else {
            Vec::new()
        };
        let stored = self.stored_firing(BURN_RATE).await?;
        for (scope, key) in &stored {
            if !burning.contains(&(*scope, key.clone())) {
                resolutions.push(resolution(BURN_RATE, *scope, key.clone(), read_at, 0));
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
            let runs = sqlx::query(
                "SELECT id, status, tenant_id, segment_id, created_at, started_at, finished_at FROM \
                 (SELECT id, status, tenant_id, segment_id, created_at, started_at, finished_at, \
                  ROW_NUMBER() OVER (PARTITION BY tenant_id, segment_id ORDER BY finished_at DESC, id DESC) AS n \
                  FROM jobs WHERE status IN ('succeeded', 'failed') AND finished_at > $1) recent \
                 WHERE n <= $2 ORDER BY finished_at, id",
            )
            .bind(read_at - RUNTIME_LOOKBACK_MICROS)
            .bind(i64::try_from(rules.runtime.baseline_runs.saturating_mul(3)).unwrap_or(i64::MAX))
            .fetch_all(self.store.pool())
            .await?;
            for row in runs {
                let outcome = Outcome {
                    job_id: row.try_get(0)?,
                    failed: row.try_get::<String, _>(1)? == JobStatus::Failed.as_str(),
                    tenant_id: row.try_get(2)?,
                    segment_id: row.try_get(3)?,
                    created_at: row.try_get(4)?,
                    finished_at: row.try_get(6)?,
                };
                let started: Option<i64> = row.try_get(5)?;
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
        let stored = self.stored_firing(RUNTIME).await?;
        for (_, key) in &stored {
            if !slow.contains_key(key) {
                resolutions.push(resolution(RUNTIME, Scope::Tenant, key.clone(), read_at, 0));
            }
        }
        let mut slow: Vec<Change> = slow.into_values().filter(|c| !stored.iter().any(|(_, k)| *k == c.key)).collect();
        slow.sort_by_key(|c| c.at);
        resolutions.sort_by(|a, b| b.scope.cmp(&a.scope));
        changes.extend(resolutions);
        changes.extend(firings);
        changes.extend(slow);

        if !self.apply_all(changes, lead).await? {
            return Ok(None);
        }
        Ok(Some(Rebuilt { read_at, outcomes }))
    }

    /// The scope and key of every alert of `rule` the store says fires.
    async fn stored_firing(&self, rule: &str) -> Result<Vec<(Scope, String)>> {
        let rows = sqlx::query("SELECT scope, alert_key FROM alerts WHERE state = 'firing' AND rule = $1").bind(rule).fetch_all(self.store.pool()).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (scope, key): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            out.push((Scope::parse(&scope).unwrap_or(Scope::Tenant), key));
        }
        Ok(out)
    }

    /// Records transitions in order; false when `lead` no longer holds the claim on the
    /// evaluator (what is left is not recorded: the process that holds it now records it).
    async fn apply_all(&self, changes: Vec<Change>, lead: Option<&Term>) -> Result<bool> {
        let mut raised = false;
        let mut leading = true;
        for change in changes {
            match self.apply(&change, lead).await? {
                Some(queued) => raised |= queued,
                None => {
                    leading = false;
                    break;
                }
            }
        }
        if raised {
            self.wake();
        }
        Ok(leading)
    }

    /// Records one transition: whether it queued notifications, or `None` when `lead` no
    /// longer holds the claim on the evaluator (nothing recorded).
    async fn apply(&self, c: &Change, lead: Option<&Term>) -> Result<Option<bool>> {
        let now = now_micros();
        let mut tx = self.store.begin_write().await?;
        // Two processes may both believe they evaluate for a moment (one's claim ran out and
        // the other took it): the claim's row, locked until this transaction ends, decides.
        if let Some(lead) = lead {
            if !still_leads(&mut tx, lead).await? {
                return Ok(None);
            }
        }
        let firing: Option<(String, Option<String>)> =
            sqlx::query("SELECT id, inhibited_by FROM alerts WHERE rule = $1 AND scope = $2 AND alert_key = $3 AND state = 'firing'")
                .bind(c.rule)
                .bind(c.scope.as_str())
                .bind(&c.key)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
                .transpose()?;
        let mut queued = false;
        match c.state {
            State::Firing => {
                if firing.is_some() {
                    return Ok(Some(false));
                }
                let id = new_id("al_");
                let fingerprint = notify::fingerprint(&c.labels);
                let inhibitor = if self.settings.rules.inhibit { wider_firing(&mut tx, c).await? } else { None };
                sqlx::query(
                    "INSERT INTO alerts (id, fingerprint, rule, scope, alert_key, labels, annotations, state, inhibited_by, started_at, failures, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'firing', $8, $9, $10, $11)",
                )
                .bind(&id)
                .bind(&fingerprint)
                .bind(c.rule)
                .bind(c.scope.as_str())
                .bind(&c.key)
                .bind(json_text(&c.labels))
                .bind(json_text(&c.annotations))
                .bind(inhibitor.as_deref())
                .bind(c.at)
                .bind(c.failures)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                alert_event(&mut tx, &id, c.at, "fired", &format!("{} failures", c.failures)).await?;
                match &inhibitor {
                    Some(wider) => {
                        alert_event(&mut tx, &id, now, "inhibited", &format!("inhibited by {wider}")).await?;
                        queued |= self.queue_update(&mut tx, wider, now).await?;
                    }
                    None => queued |= self.queue(&mut tx, &id, &c.labels, "firing", now).await?,
                }
                // Narrower alerts firing under this one are inhibited by it from now on.
                if self.settings.rules.inhibit && c.scope != Scope::Tenant {
                    for narrow in narrower_firing(&mut tx, c).await? {
                        sqlx::query("UPDATE alerts SET inhibited_by = $1, updated_at = $2 WHERE id = $3")
                            .bind(&id)
                            .bind(now)
                            .bind(&narrow)
                            .execute(&mut *tx)
                            .await?;
                        alert_event(&mut tx, &narrow, now, "inhibited", &format!("inhibited by {id}")).await?;
                    }
                }
            }
            State::Resolved => {
                let Some((id, inhibited_by)) = firing else { return Ok(Some(false)) };
                let resolved =
                    sqlx::query("UPDATE alerts SET state = 'resolved', resolved_at = $1, failures = $2, updated_at = $3 WHERE id = $4 AND state = 'firing'")
                        .bind(c.at)
                        .bind(c.failures)
                        .bind(now)
                        .bind(&id)
                        .execute(&mut *tx)
                        .await?;
                if resolved.rows_affected() == 0 {
                    // Resolved meanwhile by another transaction: notified by it.
                    return Ok(Some(false));
                }
                alert_event(&mut tx, &id, c.at, "resolved", &format!("{} failures", c.failures)).await?;
                if inhibited_by.is_none() {
                    // Whoever was told it fires is told it resolved.
                    let receivers: Vec<String> = sqlx::query("SELECT DISTINCT receiver_id FROM deliveries WHERE alert_id = $1 AND kind <> 'resolved'")
                        .bind(&id)
                        .fetch_all(&mut *tx)
                        .await?
                        .iter()
                        .map(|r| r.try_get(0))
                        .collect::<Result<_, _>>()?;
                    for receiver in receivers {
                        insert_delivery(&mut tx, &receiver, &id, "resolved", now).await?;
                        queued = true;
                    }
                }
                // What it inhibited and still fires: inhibited by another wider alert, or
                // notified on its own now.
                let freed: Vec<(String, String, String, String, String)> =
                    sqlx::query("SELECT id, rule, scope, alert_key, labels FROM alerts WHERE inhibited_by = $1 AND state = 'firing'")
                        .bind(&id)
                        .fetch_all(&mut *tx)
                        .await?
                        .iter()
                        .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?)))
                        .collect::<Result<_, _>>()?;
                for (narrow, rule, scope, key, labels) in freed {
                    let labels: BTreeMap<String, String> = serde_json::from_str(&labels).unwrap_or_default();
                    let probe = Change {
                        rule: rule_of(&rule),
                        scope: Scope::parse(&scope).unwrap_or(Scope::Tenant),
                        key,
                        state: State::Firing,
                        at: now,
                        failures: 0,
                        labels: labels.clone(),
                        annotations: BTreeMap::new(),
                    };
                    let other = wider_firing(&mut tx, &probe).await?.filter(|w| *w != id);
                    sqlx::query("UPDATE alerts SET inhibited_by = $1, updated_at = $2 WHERE id = $3")
                        .bind(other.as_deref())
                        .bind(now)
                        .bind(&narrow)
                        .execute(&mut *tx)
                        .await?;
                    if other.is_none() {
                        alert_event(&mut tx, &narrow, now, "uninhibited", &format!("{id} resolved")).await?;
                        queued |= self.queue(&mut tx, &narrow, &labels, "firing", now).await?;
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(Some(queued))
    }

    /// Queues a notification of an alert to every enabled receiver whose matchers hold.
    async fn queue(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>, alert: &str, labels: &BTreeMap<String, String>, kind: &str, now: i64) -> Result<bool> {
        let rows = sqlx::query("SELECT id, matchers FROM receivers WHERE enabled = 1").fetch_all(&mut **tx).await?;
        let mut any = false;
        for row in rows {
            let (receiver, matchers): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let matchers: Vec<Matcher> = serde_json::from_str(&matchers).unwrap_or_default();
            if notify::all_match(&matchers, labels) {
                insert_delivery(tx, &receiver, alert, kind, now).await?;
                any = true;
            }
        }
        Ok(any)
    }

    /// A narrower alert was inhibited under `wider`: the receivers that were told of `wider`
    /// get its updated list, at most once per group interval (a pending update is enough).
    async fn queue_update(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>, wider: &str, now: i64) -> Result<bool> {
        let rows = sqlx::query(
            "SELECT receiver_id, MAX(created_at), SUM(CASE WHEN state = 'pending' AND body IS NULL THEN 1 ELSE 0 END) \
             FROM deliveries WHERE alert_id = $1 AND kind <> 'resolved' GROUP BY receiver_id",
        )
        .bind(wider)
        .fetch_all(&mut **tx)
        .await?;
        let interval = i64::try_from(self.settings.group_interval.as_micros()).unwrap_or(i64::MAX);
        let mut any = false;
        for row in rows {
            let (receiver, last, pending): (String, i64, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if pending > 0 {
                continue;
            }
            insert_delivery(tx, &receiver, wider, "update", now.max(last.saturating_add(interval))).await?;
            any = true;
        }
        Ok(any)
    }

    // ---- delivery

    /// Sends due notifications until the process stops.
    pub async fn deliver(self: Arc<Self>) {
        let mut next_repeat = tokio::time::Instant::now();
        loop {
            let mut busy = false;
            match self.due(32).await {
                Ok(due) => {
                    busy = due.len() == 32;
                    for d in due {
                        if let Err(e) = self.send(d).await {
                            tracing::warn!(error = %e, "delivery: store error");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "delivery: cannot read the outbox"),
            }
            if tokio::time::Instant::now() >= next_repeat {
                next_repeat = tokio::time::Instant::now() + (self.settings.repeat_interval / 8).clamp(Duration::from_millis(200), Duration::from_secs(60));
                match self.queue_repeats().await {
                    Ok(true) => busy = true,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "delivery: cannot queue repeats"),
                }
            }
            match self.queue_unsilenced().await {
                Ok(true) => busy = true,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "delivery: cannot queue the notifications a silence held back"),
            }
            if busy {
                continue;
            }
            let now = now_micros();
            let next = self.next_due().await.ok().flatten();
            // A silence that ends releases what it held back then.
            let next = match (next, self.next_silence_end(now).await.ok().flatten()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wait = next.map_or(Duration::from_secs(60), |at| Duration::from_micros(u64::try_from(at - now).unwrap_or(0)));
            let deadline = (tokio::time::Instant::now() + wait.min(Duration::from_secs(60))).min(next_repeat);
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    async fn due(&self, limit: i64) -> Result<Vec<Due>> {
        let rows = sqlx::query(
            "SELECT d.id, d.receiver_id, d.alert_id, d.kind, d.body, d.attempts, d.not_before, d.created_at, r.url, r.secret, r.enabled \
             FROM deliveries d JOIN receivers r ON r.id = d.receiver_id \
             WHERE d.state = 'pending' AND d.not_before <= $1 ORDER BY d.not_before, d.id LIMIT $2",
        )
        .bind(now_micros())
        .bind(limit)
        .fetch_all(self.store.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Due {
                    id: r.try_get(0)?,
                    receiver: r.try_get(1)?,
                    alert: r.try_get(2)?,
                    kind: r.try_get(3)?,
                    body: r.try_get(4)?,
                    attempts: r.try_get(5)?,
                    not_before: r.try_get(6)?,
                    created_at: r.try_get(7)?,
                    url: r.try_get(8)?,
                    secret: r.try_get(9)?,
                    enabled: r.try_get::<i64, _>(10)? != 0,
                })
            })
            .collect()
    }

    async fn next_due(&self) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MIN(not_before) FROM deliveries WHERE state = 'pending'").fetch_one(self.store.pool()).await?;
        Ok(row.try_get::<Option<i64>, _>(0)?)
    }

    /// One attempt at one notification.
    async fn send(&self, d: Due) -> Result<()> {
        let now = now_micros();
        // Claim the row: another replica (or a later round) leaves it alone meanwhile.
        let lease = now + i64::try_from(self.settings.timeout.as_micros()).unwrap_or(10_000_000) + 5_000_000;
        let claimed = sqlx::query("UPDATE deliveries SET not_before = $1 WHERE id = $2 AND state = 'pending' AND not_before = $3")
            .bind(lease)
            .bind(&d.id)
            .bind(d.not_before)
            .execute(self.store.pool())
            .await?;
        if claimed.rows_affected() == 0 {
            return Ok(());
        }
        if !d.enabled {
            self.finish(&d, "dead", Some("the receiver is disabled")).await?;
            return Ok(());
        }
        let body = match (d.body.clone(), &d.alert) {
            (Some(body), _) => body,
            (None, None) => {
                self.finish(&d, "dead", Some("a report notification without a body")).await?;
                return Ok(());
            }
            (None, Some(alert_id)) => {
                let Some((labels, mut alert)) = self.alert(alert_id).await? else {
                    self.finish(&d, "dead", Some("the alert is gone")).await?;
                    return Ok(());
                };
                if self.silenced(&labels, now).await? {
                    self.counts.silenced.fetch_add(1, Ordering::Relaxed);
                    self.finish(&d, "silenced", None).await?;
                    return Ok(());
                }
                if d.kind != "resolved" {
                    // A firing notification that left after the alert resolved says it fires:
                    // the resolved one follows.
                    alert.ends_at = None;
                }
                let body = notify::payload(&d.receiver, &self.settings.external_url, &[alert]).to_string();
                sqlx::query("UPDATE deliveries SET body = $1 WHERE id = $2 AND body IS NULL").bind(&body).bind(&d.id).execute(self.store.pool()).await?;
                body
            }
        };
        if let Err(why) = reqwest::Url::parse(&d.url).map_err(|e| e.to_string()).and_then(|url| self.settings.egress.check_url(&url)) {
            tracing::warn!(receiver = %d.receiver, error = %why, "webhook address refused");
            return self.finish(&d, "dead", Some(&format!("webhook address refused: {why}"))).await;
        }
        let timestamp = now / 1_000_000;
        let signature = notify::sign(&d.secret, &d.id, timestamp, body.as_bytes());
        let answer = self
            .client
            .post(&d.url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match answer {
            Ok(a) if a.status().is_success() => {
                self.counts.delivered.fetch_add(1, Ordering::Relaxed);
                // Delivered, and the alert's history says so, in one transaction: nobody reads
                // the one without the other, even after a crash between them.
                let mut tx = self.store.begin_write().await?;
                sqlx::query("UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, delivered_at = $1 WHERE id = $2")
                    .bind(now_micros())
                    .bind(&d.id)
                    .execute(&mut *tx)
                    .await?;
                if let Some(alert) = &d.alert {
                    sqlx::query("UPDATE alerts SET notified_at = $1 WHERE id = $2").bind(now).bind(alert).execute(&mut *tx).await?;
                    alert_event(&mut tx, alert, now, "notified", &format!("{} to {} ({})", d.kind, d.receiver, d.id)).await?;
                }
                tx.commit().await?;
            }
            Ok(a) if a.status() == reqwest::StatusCode::GONE => {
                self.counts.disabled.fetch_add(1, Ordering::Relaxed);
                sqlx::query("UPDATE receivers SET enabled = 0, disabled_reason = $1 WHERE id = $2")
                    .bind("the receiver answered 410 Gone")
                    .bind(&d.receiver)
                    .execute(self.store.pool())
                    .await?;
                self.finish(&d, "dead", Some("410 Gone: receiver disabled")).await?;
                tracing::warn!(receiver = %d.receiver, "receiver answered 410 Gone: disabled");
            }
            Ok(a) => {
                let retry_after = a.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| notify::retry_after(v, now / 1000));
                let why = if a.status().is_redirection() { format!("HTTP {}: redirects are not followed", a.status()) } else { format!("HTTP {}", a.status()) };
                self.retry(&d, &why, retry_after).await?;
            }
            Err(e) => self.retry(&d, &error_chain(&e), None).await?,
        }
        Ok(())
    }

    async fn retry(&self, d: &Due, why: &str, retry_after: Option<Duration>) -> Result<()> {
        self.counts.failed.fetch_add(1, Ordering::Relaxed);
        let now = now_micros();
        let give_up = d.created_at.saturating_add(i64::try_from(self.settings.give_up_after.as_micros()).unwrap_or(i64::MAX));
        if now >= give_up {
            self.counts.gave_up.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(delivery = %d.id, receiver = %d.receiver, error = why, "notification given up");
            return self.finish(d, "dead", Some(&format!("given up: {why}"))).await;
        }
        let attempt = u32::try_from(d.attempts + 1).unwrap_or(u32::MAX);
        let wait = notify::backoff(attempt, self.settings.retry_base, self.settings.retry_max, rand::random::<f64>()).max(retry_after.unwrap_or_default());
        let next = now + i64::try_from(wait.as_micros()).unwrap_or(i64::MAX / 2);
        sqlx::query("UPDATE deliveries SET attempts = attempts + 1, not_before = $1, last_error = $2 WHERE id = $3")
            .bind(next)
            .bind(why)
            .bind(&d.id)
            .execute(self.store.pool())
            .await?;
        tracing::debug!(delivery = %d.id, receiver = %d.receiver, error = why, wait_ms = wait.as_millis() as u64, "notification will be retried");
        Ok(())
    }

    async fn finish(&self, d: &Due, state: &str, error: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE deliveries SET state = $1, attempts = attempts + 1, delivered_at = $2, last_error = COALESCE($3, last_error) WHERE id = $4")
            .bind(state)
            .bind(now_micros())
            .bind(error)
            .bind(&d.id)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// An alert as a notification shows it: its labels, annotations (with what it inhibits).
    async fn alert(&self, id: &str) -> Result<Option<(BTreeMap<String, String>, notify::Alert)>> {
        let Some(row) = sqlx::query("SELECT labels, annotations, started_at, resolved_at, state, failures FROM alerts WHERE id = $1")
            .bind(id)
            .fetch_optional(self.store.pool())
            .await?
        else {
            return Ok(None);
        };
        let labels: BTreeMap<String, String> = serde_json::from_str(&row.try_get::<String, _>(0)?).unwrap_or_default();
        let mut annotations: BTreeMap<String, String> = serde_json::from_str(&row.try_get::<String, _>(1)?).unwrap_or_default();
        let started: i64 = row.try_get(2)?;
        let resolved: Option<i64> = row.try_get(3)?;
        let inhibited: Vec<String> = sqlx::query("SELECT scope, alert_key FROM alerts WHERE inhibited_by = $1 ORDER BY scope, alert_key")
            .bind(id)
            .fetch_all(self.store.pool())
            .await?
            .iter()
            .map(|r| Ok::<_, sqlx::Error>(format!("{}={}", r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
            .collect::<Result<_, _>>()?;
        if !inhibited.is_empty() {
            annotations.insert("inhibited".to_string(), inhibited.join(","));
        }
        let alert = notify::Alert {
            labels: labels.clone(),
            annotations,
            starts_at: started / 1000,
            ends_at: resolved.map(|r| r / 1000),
            link: format!("/v1/alerts/{id}"),
        };
        Ok(Some((labels, alert)))
    }

    async fn silenced(&self, labels: &BTreeMap<String, String>, now: i64) -> Result<bool> {
        let rows = sqlx::query("SELECT matchers FROM silences WHERE starts_at <= $1 AND ends_at > $1").bind(now).fetch_all(self.store.pool()).await?;
        for row in rows {
            let matchers: Vec<Matcher> = serde_json::from_str(&row.try_get::<String, _>(0)?).unwrap_or_default();
            if !matchers.is_empty() && notify::all_match(&matchers, labels) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// When the next active silence ends (microseconds), if one is active.
    async fn next_silence_end(&self, now: i64) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MIN(ends_at) FROM silences WHERE ends_at > $1").bind(now).fetch_one(self.store.pool()).await?;
        Ok(row.try_get::<Option<i64>, _>(0)?)
    }

    /// Alerts that still fire, not inhibited, whose notification to a receiver a silence held
    /// back and that no silence holds back any more: notified to that receiver now (a
    /// `firing` notification; repeats follow from it). Each held-back row is released once
    /// (compare-and-set, so replicas never queue one twice).
    async fn queue_unsilenced(&self) -> Result<bool> {
        let now = now_micros();
        let rows = sqlx::query(
            "SELECT d.id, d.alert_id, d.receiver_id, a.labels FROM deliveries d \
             JOIN alerts a ON a.id = d.alert_id JOIN receivers r ON r.id = d.receiver_id \
             WHERE d.state = 'silenced' AND d.kind <> 'resolved' AND a.state = 'firing' AND a.inhibited_by IS NULL AND r.enabled = 1 \
             ORDER BY d.created_at",
        )
        .fetch_all(self.store.pool())
        .await?;
        let mut held: BTreeMap<(String, String), (BTreeMap<String, String>, Vec<String>)> = BTreeMap::new();
        for row in rows {
            let (id, alert, receiver, labels): (String, String, String, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
            let entry = held.entry((alert, receiver)).or_insert_with(|| (serde_json::from_str(&labels).unwrap_or_default(), Vec::new()));
            entry.1.push(id);
        }
        let mut any = false;
        for ((alert, receiver), (labels, ids)) in held {
            if self.silenced(&labels, now).await? {
                continue;
            }
            let mut tx = self.store.begin_write().await?;
            let mut released = 0;
            for id in &ids {
                released += sqlx::query("UPDATE deliveries SET state = 'released' WHERE id = $1 AND state = 'silenced'")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            if released > 0 {
                insert_delivery(&mut tx, &receiver, &alert, "firing", now).await?;
                alert_event(&mut tx, &alert, now, "unsilenced", &format!("the silence ended; notifying {receiver}")).await?;
                any = true;
            }
            tx.commit().await?;
        }
        Ok(any)
    }

    /// Firing alerts notified on their own longer than `repeat_interval` ago: notified again.
    async fn queue_repeats(&self) -> Result<bool> {
        let now = now_micros();
        let before = now - i64::try_from(self.settings.repeat_interval.as_micros()).unwrap_or(i64::MAX / 2);
        let rows =
            sqlx::query("SELECT id, labels FROM alerts WHERE state = 'firing' AND inhibited_by IS NULL AND notified_at IS NOT NULL AND notified_at <= $1")
                .bind(before)
                .fetch_all(self.store.pool())
                .await?;
        let mut any = false;
        for row in rows {
            let (id, labels): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let labels: BTreeMap<String, String> = serde_json::from_str(&labels).unwrap_or_default();
            let mut tx = self.store.begin_write().await?;
            let claimed = sqlx::query("UPDATE alerts SET notified_at = $1 WHERE id = $2 AND notified_at <= $3")
                .bind(now)
                .bind(&id)
                .bind(before)
                .execute(&mut *tx)
                .await?;
            if claimed.rows_affected() == 1 {
                any |= self.queue(&mut tx, &id, &labels, "repeat", now).await?;
            }
            tx.commit().await?;
        }
        Ok(any)
    }
}

/// Whether `lead` still holds the claim on the evaluator; the row stays locked until the
/// transaction ends, so the claim cannot change hands before it commits.
async fn still_leads(tx: &mut sqlx::Transaction<'_, sqlx::Any>, lead: &Term) -> Result<bool> {
    let row = sqlx::query("SELECT owner, term FROM alert_evaluator WHERE id = $1 FOR UPDATE").bind(EVALUATOR).fetch_optional(&mut **tx).await?;
    Ok(match row {
        Some(row) => row.try_get::<String, _>(0)? == lead.instance && row.try_get::<i64, _>(1)? == lead.term,
        None => false,
    })
}

/// A finished job as the evaluator takes it.
#[derive(Debug, Clone)]
struct Outcome {
    job_id: String,
    failed: bool,
    tenant_id: String,
    segment_id: String,
    /// Microseconds.
    created_at: i64,
    /// Microseconds.
    finished_at: i64,
}

/// What a rebuild read.
#[derive(Debug)]
struct Rebuilt {
    /// When it read (microseconds).
    read_at: i64,
    /// The outcomes it counted: job ids and when they finished.
    outcomes: Vec<(String, i64)>,
}

impl Rebuilt {
    /// The jobs it counted that finished within [`LOOKBACK_MICROS`] of its read: the ones
    /// whose outcome may still come after it (an event, a read of the store).
    fn recent(&self) -> HashMap<String, i64> {
        self.outcomes.iter().filter(|(_, finished)| *finished > self.read_at - LOOKBACK_MICROS).cloned().collect()
    }
}

/// The jobs every process finished, read from a shared store: each read takes what finished
/// since the previous one, and again the last [`LOOKBACK_MICROS`] of it for the commits that
/// became visible late; the ids already taken inside that lookback are skipped. Outcomes wait
/// in finishing order until they are old enough to go into the evaluator.
#[derive(Debug, Default)]
struct Feed {
    /// When the last read began (microseconds).
    cursor: i64,
    /// Jobs taken that finished inside the lookback, and when.
    seen: HashMap<String, i64>,
    /// Outcomes read, by finishing time and job id, not yet in the evaluator.
    pending: BTreeMap<(i64, String), Outcome>,
}

impl Feed {
    /// After a rebuild: the failures it counted are taken, reads go on from when it read.
    fn restart(&mut self, rebuilt: Rebuilt) {
        self.pending.clear();
        self.cursor = rebuilt.read_at;
        self.seen = rebuilt.recent();
    }

    /// Reads the jobs finished since the last read (succeeded or failed: cancelled ones count
    /// nowhere). The index `jobs_finished` (status, finished_at) serves it.
    async fn read(&mut self, store: &Store) -> Result<()> {
        let read_at = now_micros();
        let rows = sqlx::query(
            "SELECT id, status, tenant_id, segment_id, created_at, finished_at FROM jobs              WHERE status IN ('succeeded', 'failed') AND finished_at > $1 ORDER BY finished_at",
        )
        .bind(self.cursor - LOOKBACK_MICROS)
        .fetch_all(store.pool())
        .await?;
        for row in rows {
            let id: String = row.try_get(0)?;
            if self.seen.contains_key(&id) {
                continue;
            }
            let finished_at: i64 = row.try_get(5)?;
            let outcome = Outcome {
                job_id: id.clone(),
                failed: row.try_get::<String, _>(1)? == JobStatus::Failed.as_str(),
                tenant_id: row.try_get(2)?,
                segment_id: row.try_get(3)?,
                created_at: row.try_get(4)?,
                finished_at,
            };
            self.seen.insert(id.clone(), finished_at);
            self.pending.insert((finished_at, id), outcome);
        }
        self.cursor = read_at;
        // What finished before the next read's lookback is never read again.
        self.seen.retain(|_, finished| *finished > read_at - LOOKBACK_MICROS);
        Ok(())
    }

    /// The outcomes that finished before `until_ms`, oldest first.
    fn ready(&mut self, until_ms: i64) -> Vec<Outcome> {
        let later = self.pending.split_off(&(until_ms.saturating_mul(1000), String::new()));
        std::mem::replace(&mut self.pending, later).into_values().collect()
    }
}

/// A due outbox row with its receiver.
#[derive(Debug)]
struct Due {
    id: String,
    receiver: String,
    /// The alert notified, or `None` for a triage report (whose body is rendered when queued).
    alert: Option<String>,
    kind: String,
    body: Option<String>,
    attempts: i64,
    not_before: i64,
    created_at: i64,
    url: String,
    secret: String,
    enabled: bool,
}

/// The evaluators and what they need at hand.
#[derive(Debug)]
struct Live {
    failures: Evaluator,
    burn: BurnRate,
    runtime: Runtime,
    regions: HashMap<String, String>,
    rules: AlertRules,
}

impl Live {
    fn new(rules: &AlertRules) -> Live {
        Live {
            failures: Evaluator::new(rules.failure_rule()),
            burn: BurnRate::new(rules.burn_rate.clone()),
            runtime: Runtime::new(rules.runtime.clone()),
            regions: HashMap::new(),
            rules: rules.clone(),
        }
    }

    /// Time has reached `until_ms`: the failure rule's instants before it are closed.
    fn close(&mut self, until_ms: i64, changes: &mut Vec<Change>) {
        let mut transitions = Vec::new();
        self.failures.advance(until_ms, &mut transitions);
        for t in transitions {
            changes.push(self.failure_change(&t));
        }
    }

    /// Burn-rate alerts decided again as time passes (cooled-down ones resolve).
    fn tick_burn(&mut self, now_ms: i64, changes: &mut Vec<Change>) {
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

    fn labels(&self, alertname: &str, scope: Scope, key: &str, severity: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), alertname.to_string());
        labels.insert("scope".to_string(), scope.as_str().to_string());
        labels.insert("severity".to_string(), severity.to_string());
        match scope {
            Scope::Global => {}
            Scope::Region => {
                labels.insert("region".to_string(), key.to_string());
            }
            Scope::Tenant => {
                labels.insert("tenant".to_string(), key.to_string());
                labels.insert("region".to_string(), self.regions.get(key).cloned().unwrap_or_default());
            }
        }
        labels
    }

    fn failure_change(&self, t: &cohort_alerting::Transition) -> Change {
        let w = self.rules.failure_rule().at(t.scope);
        let mut annotations = BTreeMap::new();
        let place = if t.scope == Scope::Global { "everywhere".to_string() } else { format!("for {} {}", t.scope, t.key) };
        annotations.insert("summary".to_string(), format!("{} jobs failed within {} {place} (threshold {})", t.failures, human_ms(w.window_ms), w.threshold));
        annotations.insert("failures".to_string(), t.failures.to_string());
        Change {
            rule: FAILURES,
            scope: t.scope,
            key: t.key.clone(),
            state: t.state,
            at: t.at.saturating_mul(1000),
            failures: i64::from(t.failures),
            labels: self.labels("CohortJobFailures", t.scope, &t.key, "page"),
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
            rule: BURN_RATE,
            scope: t.scope,
            key: t.key.clone(),
            state: t.state,
            at: t.at.saturating_mul(1000),
            failures: 0,
            labels: self.labels("CohortSuccessRateBurn", t.scope, &t.key, "page"),
            annotations,
        }
    }
}

impl Live {
    /// A runtime transition of the run `outcome` (its last attempt started at `started`):
    /// measured end to end, from submission to its end, and split into the wait before its
    /// last attempt started (queued, admitted, retries' backoff) and that attempt's execution.
    fn runtime_change(&self, t: &cohort_alerting::slo::RuntimeTransition, outcome: &Outcome, started: Option<i64>) -> Change {
        let mut labels = self.labels("CohortSegmentRuntimeHigh", Scope::Tenant, &t.tenant, "ticket");
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
            rule: RUNTIME,
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
fn resolution(rule: &'static str, scope: Scope, key: String, at: i64, failures: i64) -> Change {
    Change { rule, scope, key, state: State::Resolved, at, failures, labels: BTreeMap::new(), annotations: BTreeMap::new() }
}

fn human_ms(ms: i64) -> String {
    match ms {
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1000 == 0 => format!("{}s", m / 1000),
        m => format!("{m}ms"),
    }
}

fn json_text(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).unwrap_or_else(|_| "{}".to_string())
}

/// The rules whose wider alerts inhibit an alert of `rule`: a failure alert inhibits the
/// narrower alerts of every rule, a burn-rate alert the narrower burn-rate alerts (runtime
/// alerts are tenant-wide: nothing is narrower).
fn inhibitors(rule: &str) -> &'static [&'static str] {
    match rule {
        BURN_RATE => &[FAILURES, BURN_RATE],
        _ => &[FAILURES],
    }
}

/// The rules whose narrower alerts an alert of `rule` inhibits (the converse of [`inhibitors`]).
fn inhibited_rules(rule: &str) -> &'static [&'static str] {
    match rule {
        FAILURES => &[FAILURES, BURN_RATE, RUNTIME],
        BURN_RATE => &[BURN_RATE],
        _ => &[],
    }
}

/// A stored rule name as the constant it is.
fn rule_of(name: &str) -> &'static str {
    match name {
        BURN_RATE => BURN_RATE,
        RUNTIME => RUNTIME,
        _ => FAILURES,
    }
}

/// The firing alert at a wider scope over this one that inhibits it, if any (global first,
/// a failure alert before a burn-rate one).
async fn wider_firing(tx: &mut sqlx::Transaction<'_, sqlx::Any>, c: &Change) -> Result<Option<String>> {
    for scope in c.scope.wider() {
        let key = match scope {
            Scope::Global => GLOBAL.to_string(),
            Scope::Region => match c.labels.get("region") {
                Some(r) => r.clone(),
                None => continue,
            },
            Scope::Tenant => continue,
        };
        for rule in inhibitors(c.rule) {
            let row = sqlx::query("SELECT id FROM alerts WHERE rule = $1 AND scope = $2 AND alert_key = $3 AND state = 'firing'")
                .bind(*rule)
                .bind(scope.as_str())
                .bind(&key)
                .fetch_optional(&mut **tx)
                .await?;
            if let Some(row) = row {
                return Ok(Some(row.try_get(0)?));
            }
        }
    }
    Ok(None)
}

/// Firing, not yet inhibited alerts under a wider one that it inhibits.
async fn narrower_firing(tx: &mut sqlx::Transaction<'_, sqlx::Any>, c: &Change) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for rule in inhibited_rules(c.rule) {
        let rows = sqlx::query("SELECT id, scope, labels FROM alerts WHERE rule = $1 AND state = 'firing' AND inhibited_by IS NULL")
            .bind(*rule)
            .fetch_all(&mut **tx)
            .await?;
        for row in rows {
            let (id, scope, labels): (String, String, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let Some(scope) = Scope::parse(&scope) else { continue };
            if scope <= c.scope {
                continue;
            }
            let labels: BTreeMap<String, String> = serde_json::from_str(&labels).unwrap_or_default();
            let under = match c.scope {
                Scope::Global => true,
                Scope::Region => labels.get("region") == Some(&c.key),
                Scope::Tenant => false,
            };
            if under {
                out.push(id);
            }
        }
    }
    Ok(out)
}

async fn alert_event(tx: &mut sqlx::Transaction<'_, sqlx::Any>, alert: &str, at: i64, kind: &str, detail: &str) -> Result<()> {
    sqlx::query("INSERT INTO alert_events (alert_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
        .bind(alert)
        .bind(at)
        .bind(kind)
        .bind(detail)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_delivery(tx: &mut sqlx::Transaction<'_, sqlx::Any>, receiver: &str, alert: &str, kind: &str, not_before: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO deliveries (id, receiver_id, alert_id, kind, state, attempts, not_before, created_at) \
         VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6)",
    )
    .bind(new_id("msg_"))
    .bind(receiver)
    .bind(alert)
    .bind(kind)
    .bind(not_before)
    .bind(now_micros())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

// ---- the API's view

/// An alert as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertView {
    /// Its id.
    pub id: String,
    /// The hash of its labels (stable across firings).
    pub fingerprint: String,
    /// `failures`, `burn_rate` or `runtime`.
    pub rule: String,
    /// `global`, `region` or `tenant`.
    pub scope: String,
    /// The scope key: `global`, a region or a tenant.
    pub key: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// Its labels (as in the notification).
    pub labels: BTreeMap<String, String>,
    /// Its annotations (summary, failures).
    pub annotations: BTreeMap<String, String>,
    /// The wider alert that inhibits it, while it does.
    pub inhibited_by: Option<String>,
    /// The narrower alerts it inhibits (or inhibited).
    pub inhibits: Vec<String>,
    /// When it fired.
    pub started_at: String,
    /// When it resolved.
    pub resolved_at: Option<String>,
    /// Failures in the window at its last transition.
    pub failures: i64,
    /// Its history (only on GET of one alert).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AlertEventView>,
}

/// One entry of an alert's history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertEventView {
    /// When.
    pub at: String,
    /// `fired`, `inhibited`, `uninhibited`, `unsilenced`, `notified` or `resolved`.
    pub kind: String,
    /// More about it.
    pub detail: String,
}

/// A silence.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SilenceView {
    /// Its id.
    pub id: String,
    /// Label matchers, all of which must hold.
    pub matchers: Vec<String>,
    /// When it starts.
    pub starts_at: String,
    /// When it ends.
    pub ends_at: String,
    /// Why it was made.
    pub comment: String,
    /// Whether it silences now.
    pub active: bool,
}

/// A webhook receiver (its secret is shown once, when it is created).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReceiverView {
    /// Its id.
    pub id: String,
    /// Where notifications are POSTed.
    pub url: String,
    /// Label matchers, all of which must hold.
    pub matchers: Vec<String>,
    /// False once a 410 disabled it.
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The signing secret (only when created).
    pub secret: Option<String>,
    /// Notifications waiting, delivered, and given up.
    pub pending: i64,
    /// Notifications delivered.
    pub delivered: i64,
    /// Notifications given up.
    pub dead: i64,
    /// Why the oldest waiting notification's last attempt failed.
    pub last_error: Option<String>,
}

fn matcher_text(m: &Matcher) -> String {
    format!("{}{}{}", m.label, if m.negate { "!=" } else { "=" }, m.value)
}

const ALERT_COLUMNS: &str = "id, fingerprint, rule, scope, alert_key, state, labels, annotations, inhibited_by, started_at, resolved_at, failures";

/// Store queries behind the alert API.
impl Store {
    /// Alerts, newest first: `state` = `firing`, `resolved` or all; only `tenant`'s when given.
    pub async fn alerts(&self, state: Option<&str>, tenant: Option<&str>, limit: i64) -> Result<Vec<AlertView>> {
        // A tenant's alerts: its tenant-scope failure and burn-rate alerts (key = tenant) and
        // its segments' runtime alerts (key = tenant/segment).
        let rows = sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE ($1 = '' OR state = $1) \
             AND ($2 = '' OR (scope = 'tenant' AND (alert_key = $2 OR substr(alert_key, 1, length($2) + 1) = $2 || '/'))) \
             ORDER BY started_at DESC, id DESC LIMIT $3"
        ))
        .bind(state.unwrap_or(""))
        .bind(tenant.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(self.alert_view(r).await?);
        }
        Ok(out)
    }

    /// One alert with its history.
    pub async fn alert(&self, id: &str) -> Result<Option<AlertView>> {
        let row = sqlx::query(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1")).bind(id).fetch_optional(self.pool()).await?;
        let Some(row) = row else { return Ok(None) };
        let mut alert = self.alert_view(&row).await?;
        let rows = sqlx::query("SELECT at, kind, detail FROM alert_events WHERE alert_id = $1 ORDER BY at").bind(id).fetch_all(self.pool()).await?;
        alert.history = rows
            .iter()
            .map(|r| Ok::<_, sqlx::Error>(AlertEventView { at: crate::rfc3339(r.try_get(0)?), kind: r.try_get(1)?, detail: r.try_get(2)? }))
            .collect::<Result<_, _>>()?;
        Ok(Some(alert))
    }

    async fn alert_view(&self, r: &sqlx::any::AnyRow) -> Result<AlertView> {
        let id: String = r.try_get(0)?;
        let inhibits = sqlx::query("SELECT id FROM alerts WHERE inhibited_by = $1").bind(&id).fetch_all(self.pool()).await?;
        Ok(AlertView {
            inhibits: inhibits.iter().map(|x| x.try_get(0)).collect::<Result<_, _>>()?,
            id,
            fingerprint: r.try_get(1)?,
            rule: r.try_get(2)?,
            scope: r.try_get(3)?,
            key: r.try_get(4)?,
            state: r.try_get(5)?,
            labels: serde_json::from_str(&r.try_get::<String, _>(6)?).unwrap_or_default(),
            annotations: serde_json::from_str(&r.try_get::<String, _>(7)?).unwrap_or_default(),
            inhibited_by: r.try_get(8)?,
            started_at: crate::rfc3339(r.try_get(9)?),
            resolved_at: r.try_get::<Option<i64>, _>(10)?.map(crate::rfc3339),
            failures: r.try_get(11)?,
            history: Vec::new(),
        })
    }

    /// Firing alerts by rule and scope (for `/metrics`).
    pub async fn firing_alerts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query("SELECT rule, scope, COUNT(*) FROM alerts WHERE state = 'firing' GROUP BY rule, scope").fetch_all(self.pool()).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    /// Stores a silence.
    pub async fn create_silence(&self, matchers: &[Matcher], starts_at: i64, ends_at: i64, comment: &str) -> Result<SilenceView> {
        let id = new_id("sil_");
        sqlx::query("INSERT INTO silences (id, matchers, starts_at, ends_at, comment, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&id)
            .bind(serde_json::to_string(matchers).unwrap_or_else(|_| "[]".into()))
            .bind(starts_at)
            .bind(ends_at)
            .bind(comment)
            .bind(now_micros())
            .execute(self.pool())
            .await?;
        Ok(SilenceView {
            id,
            matchers: matchers.iter().map(matcher_text).collect(),
            starts_at: crate::rfc3339(starts_at),
            ends_at: crate::rfc3339(ends_at),
            comment: comment.to_string(),
            active: starts_at <= now_micros() && now_micros() < ends_at,
        })
    }

    /// Silences, newest first (expired ones included).
    pub async fn silences(&self) -> Result<Vec<SilenceView>> {
        let now = now_micros();
        let rows = sqlx::query("SELECT id, matchers, starts_at, ends_at, comment FROM silences ORDER BY created_at DESC").fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                let matchers: Vec<Matcher> = serde_json::from_str(&r.try_get::<String, _>(1)?).unwrap_or_default();
                let (starts, ends): (i64, i64) = (r.try_get(2)?, r.try_get(3)?);
                Ok(SilenceView {
                    id: r.try_get(0)?,
                    matchers: matchers.iter().map(matcher_text).collect(),
                    starts_at: crate::rfc3339(starts),
                    ends_at: crate::rfc3339(ends),
                    comment: r.try_get(4)?,
                    active: starts <= now && now < ends,
                })
            })
            .collect()
    }

    /// Ends a silence now; false when there is none by that id.
    pub async fn expire_silence(&self, id: &str) -> Result<bool> {
        let now = now_micros();
        let done = sqlx::query("UPDATE silences SET ends_at = $1 WHERE id = $2 AND ends_at > $1").bind(now).bind(id).execute(self.pool()).await?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        Ok(sqlx::query("SELECT id FROM silences WHERE id = $1").bind(id).fetch_optional(self.pool()).await?.is_some())
    }

    /// Stores a receiver; false when the id is taken.
    pub async fn create_receiver(&self, id: &str, url: &str, secret: &str, matchers: &[Matcher]) -> Result<bool> {
        let done =
            sqlx::query("INSERT INTO receivers (id, url, secret, matchers, enabled, created_at) VALUES ($1, $2, $3, $4, 1, $5) ON CONFLICT (id) DO NOTHING")
                .bind(id)
                .bind(url)
                .bind(secret)
                .bind(serde_json::to_string(matchers).unwrap_or_else(|_| "[]".into()))
                .bind(now_micros())
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Receivers with their delivery counts.
    pub async fn receivers(&self) -> Result<Vec<ReceiverView>> {
        let rows = sqlx::query(
            "SELECT r.id, r.url, r.matchers, r.enabled, r.disabled_reason, \
             (SELECT COUNT(*) FROM deliveries d WHERE d.receiver_id = r.id AND d.state = 'pending'), \
             (SELECT COUNT(*) FROM deliveries d WHERE d.receiver_id = r.id AND d.state = 'delivered'), \
             (SELECT COUNT(*) FROM deliveries d WHERE d.receiver_id = r.id AND d.state = 'dead'), \
             (SELECT d.last_error FROM deliveries d WHERE d.receiver_id = r.id AND d.state = 'pending' AND d.last_error IS NOT NULL \
              ORDER BY d.created_at LIMIT 1) \
             FROM receivers r ORDER BY r.id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let matchers: Vec<Matcher> = serde_json::from_str(&r.try_get::<String, _>(2)?).unwrap_or_default();
                Ok(ReceiverView {
                    id: r.try_get(0)?,
                    url: r.try_get(1)?,
                    matchers: matchers.iter().map(matcher_text).collect(),
                    enabled: r.try_get::<i64, _>(3)? != 0,
                    disabled_reason: r.try_get(4)?,
                    secret: None,
                    pending: r.try_get(5)?,
                    delivered: r.try_get(6)?,
                    dead: r.try_get(7)?,
                    last_error: r.try_get(8)?,
                })
            })
            .collect()
    }

    /// Deletes a receiver (and its undelivered notifications); false when there is none.
    pub async fn delete_receiver(&self, id: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM deliveries WHERE receiver_id = $1").bind(id).execute(&mut *tx).await?;
        let done = sqlx::query("DELETE FROM receivers WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }
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

/// An error with its causes, so a refused address says which and why.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}
