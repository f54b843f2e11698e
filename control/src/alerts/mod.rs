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
//!
//! The files: this one holds the handle, the evaluation loops and the claim on the evaluator;
//! `feed` the outcomes going into the evaluators (events, the store's reads, rebuilds) and
//! the transitions they give; `record` a transition recorded in the store with its
//! inhibition and its notifications queued; `delivery` the outbox sent. The policy is
//! `cohort_alerting`'s ([`cohort_alerting::inhibit`], [`cohort_alerting::silence`],
//! [`cohort_alerting::dispatch`]), the same `cohort alerts replay` runs; the SQL is the store's
//! (`crate::store::alerts`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use cohort_alerting::dispatch::Timing;
use cohort_alerting::{AlertRules, RuleKind, Scope, State};
use prometheus::IntGauge;
use tokio::sync::{Notify, broadcast};

use crate::pool::JobEvent;
use crate::store::Backend;
use crate::{Result, Store, now_micros};

mod delivery;
mod feed;
mod record;

pub use crate::store::alerts::{AlertEventView, AlertView, ReceiverView, SilenceView};

use feed::{Feed, Live};

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

impl AlertSettings {
    /// The group and repeat intervals, as the dispatch policy takes them.
    pub fn timing(&self) -> Timing {
        Timing::new(self.group_interval, self.repeat_interval)
    }
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

/// How often the evaluating process reads the jobs finished on a shared store.
const FEED_POLL: Duration = Duration::from_millis(250);
/// How often burn-rate alerts are decided again as time passes, at most (more often with
/// buckets narrower than this).
const BURN_TICK: Duration = Duration::from_secs(15);
/// The gauge of the evaluating process.
const EVALUATING: &str = "cohort_alert_evaluator_leader";

/// A change to apply to the store.
#[derive(Debug, Clone)]
struct Change {
    rule: RuleKind,
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
        if let Err(e) = self.store.release_alert_evaluator(&replica.instance).await {
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
        let term = self.store.claim_alert_evaluator(&replica.instance, until, now).await?;
        Ok(term.map(|term| Term { instance: replica.instance.clone(), term }))
    }
}

#[cfg(test)]
mod tests {
    /// The alert tables' queries are the store's (`store/alerts.rs`): no file here writes or
    /// runs one.
    #[test]
    fn no_query_is_written_outside_the_store() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/alerts");
        let needles = [concat!("sqlx", "::query"), concat!("SEL", "ECT "), concat!("UPD", "ATE "), concat!("INS", "ERT "), concat!("DEL", "ETE ")];
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).expect("src/alerts") {
            let path = entry.expect("an entry").path();
            let text = std::fs::read_to_string(&path).expect("a source file");
            files += 1;
            for needle in needles {
                assert!(!text.contains(needle), "{} holds {needle:?}: queries belong in store/alerts.rs", path.display());
            }
        }
        assert!(files >= 4, "{files} files in {}", dir.display());
    }
}
