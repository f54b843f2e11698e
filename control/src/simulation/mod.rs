//! A month of Cohort on a virtual clock: the real scheduling core, retry policy, estimator and
//! alert evaluator, driven by a simulated workload and a simulated executor.
//!
//! Pure and deterministic: the settings (with the seed) are the only input, the [`Report`] the
//! output; time is a virtual clock in microseconds moved by an event queue, randomness comes
//! from seeded `ChaCha8Rng` streams, and nothing iterates a hash map into a result. The
//! workload ([`workload`]) draws from streams of its own, so runs that differ only in their
//! policies see the same jobs, the same true costs and the same faults.
//!
//! What runs as in the service:
//! - admission by [`Core`] (slots, budget, tenant caps, quotas and token buckets, fair share,
//!   reservation and backfilling), decided after every instant something happened and every
//!   second while jobs wait beside free slots (the service's poll);
//! - grants from the estimator's calibrated bound ([`Estimator::estimate`] over the segment's
//!   [`Histories`]), or from [`SizeRule`] with the estimator off; deadlines from [`Deadlines`];
//!   every finished job becomes a [`Record`] (an attempt that ran out of memory gives its
//!   grant as a lower bound), and the model is refitted with [`cohort_estimator::fit`] on a
//!   bounded window of recent records, after a number of finished attempts (60 at first, then
//!   twice the records of the last fit, up to `refit_runs`) or after `refit_interval`;
//! - after a failed attempt, [`RetryPolicy::decide`]: at once with a doubled grant, after a
//!   backoff with jitter, or never;
//! - each job's final failure goes to the alert [`Evaluator`] with its tenant and region at
//!   its virtual time; transitions to firing are counted by scope.

mod report;
pub mod workload;

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use cohort_alerting::{Evaluator, FailureRule, State, Transition};
use cohort_estimator::{Estimator, Features, Histories, Record};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::policy::{Deadlines, FailureClass, Retry, RetryPolicy, SizeRule, Sizer, SizingInput};
use crate::scheduler::{Core, CoreConfig, Job, Kind, Micros};
use crate::{Error, Result};
use report::Tally;
pub use report::{Report, SizeClassWaits};
use workload::{Arrival, World};

/// A second of virtual time.
pub const SECOND: Micros = 1_000_000;
/// A minute of virtual time.
pub const MINUTE: Micros = 60 * SECOND;
/// An hour of virtual time.
pub const HOUR: Micros = 60 * MINUTE;
/// A day of virtual time.
pub const DAY: Micros = 24 * HOUR;

/// The faults injected, per attempt and over the month. The defaults are meant to be
/// realistic for a service of this size, not kind: see `cohort simulate --help`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Faults {
    /// Chance that an attempt fails on its own by a transient error: 80% of them a source
    /// that does not answer (`source_unavailable`), 20% an executor failure (`execution`).
    pub transient_failure_probability: f64,
    /// Regional incidents (every source of one region unreachable) per region per 30 days.
    pub regional_incidents_per_region_month: f64,
    /// The median length of an incident in minutes (log-normal, spread 0.6, 2 min to 12 h).
    pub regional_incident_minutes: f64,
    /// Chance that an attempt reading during an incident of its region fails.
    pub regional_incident_failure_probability: f64,
    /// Broken models deployed per tenant per 30 days (its runs fail `schema_mismatch` or
    /// `invalid`, not retried, until it is fixed).
    pub bad_deployments_per_tenant_month: f64,
    /// The median time to fix a bad deployment in hours (log-normal, spread 0.8, 10 min to
    /// 3 days).
    pub bad_deployment_hours: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            transient_failure_probability: 0.0025,
            regional_incidents_per_region_month: 0.5,
            regional_incident_minutes: 15.0,
            regional_incident_failure_probability: 0.9,
            bad_deployments_per_tenant_month: 0.012,
            bad_deployment_hours: 2.0,
        }
    }
}

/// What to simulate and under which policies.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Days of arrivals (the pool then drains).
    pub days: u32,
    /// Jobs asked for per day, scheduled and on demand.
    pub jobs_per_day: u64,
    /// Tenants.
    pub tenants: u32,
    /// Regions.
    pub regions: u32,
    /// The seed of every random stream.
    pub seed: u64,
    /// Executor slots of the pool.
    pub slots: usize,
    /// The pool's memory budget (a cluster's).
    pub memory_budget_bytes: u64,
    /// The estimator's coverage: the share of runs meant to stay within their grant.
    pub coverage: f64,
    /// Fair share between tenants (off: first come, first served across tenants).
    pub fair_share: bool,
    /// Backfilling around a job that holds the memory reservation.
    pub backfill: bool,
    /// Grants from the estimator (off: the size rule's `min_grant + 4 × the tenant's bytes`).
    pub estimator: bool,
    /// Start as a service that ran before: the store holds the last runs of every segment
    /// that existed before the month, and the model was fitted on them (off: an empty store,
    /// rules until the first fit, every segment cold).
    pub warm_start: bool,
    /// Refit after at most this many finished attempts…
    pub refit_runs: u64,
    /// …or this much virtual time.
    pub refit_interval: Micros,
    /// Fit on at most this many recent records.
    pub fit_window: usize,
    /// Fair share: usage halves every this long.
    pub half_life: Micros,
    /// Retries, as the service's defaults.
    pub retry: RetryPolicy,
    /// Deadlines, as the service's defaults.
    pub deadlines: Deadlines,
    /// The smallest grant (the service's `min_grant`).
    pub min_grant_bytes: u64,
    /// The size rule's grant per source byte (the service's `grant_per_source_byte`).
    pub grant_per_source_byte: f64,
    /// Jobs not finished this long after the last arrival are cancelled and counted.
    pub drain_limit: Micros,
    /// The faults injected.
    pub faults: Faults,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            days: 30,
            jobs_per_day: 100_000,
            tenants: 5_000,
            regions: 6,
            seed: 1,
            slots: 128,
            memory_budget_bytes: 1 << 40,
            coverage: 0.995,
            fair_share: true,
            backfill: true,
            estimator: true,
            warm_start: true,
            refit_runs: 10_000,
            refit_interval: 6 * HOUR,
            fit_window: 20_000,
            half_life: HOUR,
            retry: RetryPolicy::default(),
            deadlines: Deadlines { factor: 10.0, floor: Duration::from_secs(60), ceiling: Duration::from_secs(6 * 3600) },
            min_grant_bytes: 64 << 10,
            grant_per_source_byte: 4.0,
            drain_limit: 7 * DAY,
            faults: Faults::default(),
        }
    }
}

impl Settings {
    /// Checks that the settings describe a simulation that can run.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let probability = |name: &str, v: f64| if (0.0..=1.0).contains(&v) { Ok(()) } else { bad(format!("{name} must be between 0 and 1, not {v}")) };
        let non_negative = |name: &str, v: f64| if v.is_finite() && v >= 0.0 { Ok(()) } else { bad(format!("{name} must be a finite number ≥ 0, not {v}")) };
        let positive = |name: &str, v: f64| if v.is_finite() && v > 0.0 { Ok(()) } else { bad(format!("{name} must be a finite number > 0, not {v}")) };
        if self.days == 0 || self.days > 3_650 {
            return bad(format!("days must be 1 to 3,650, not {}", self.days));
        }
        if self.jobs_per_day == 0 || self.jobs_per_day > 10_000_000 {
            return bad(format!("jobs per day must be 1 to 10,000,000, not {}", self.jobs_per_day));
        }
        if self.tenants == 0 || self.tenants > 1_000_000 {
            return bad(format!("tenants must be 1 to 1,000,000, not {}", self.tenants));
        }
        if self.regions == 0 || self.regions > 1_000 {
            return bad(format!("regions must be 1 to 1,000, not {}", self.regions));
        }
        if self.slots == 0 || self.slots > 1_000_000 {
            return bad(format!("slots must be 1 to 1,000,000, not {}", self.slots));
        }
        if self.memory_budget_bytes < 256 << 20 {
            return bad(format!("the memory budget must be at least 256 MiB, not {} bytes", self.memory_budget_bytes));
        }
        if !(self.coverage > 0.0 && self.coverage < 1.0) {
            return bad(format!("coverage must be between 0 and 1 (exclusive), not {}", self.coverage));
        }
        if self.refit_runs == 0 || self.refit_interval <= 0 || self.fit_window < 100 {
            return bad("refit runs and interval must be positive and the fit window at least 100 records".into());
        }
        if self.half_life <= 0 || self.drain_limit < 0 || self.min_grant_bytes == 0 {
            return bad("the half-life and the smallest grant must be positive, the drain limit not negative".into());
        }
        non_negative("grant per source byte", self.grant_per_source_byte)?;
        let f = &self.faults;
        probability("the transient failure probability", f.transient_failure_probability)?;
        probability("the incident failure probability", f.regional_incident_failure_probability)?;
        non_negative("regional incidents per region-month", f.regional_incidents_per_region_month)?;
        non_negative("bad deployments per tenant-month", f.bad_deployments_per_tenant_month)?;
        positive("the incident length in minutes", f.regional_incident_minutes)?;
        positive("the time to fix a bad deployment in hours", f.bad_deployment_hours)?;
        if f.regional_incidents_per_region_month * f64::from(self.days) / 30.0 * f64::from(self.regions) > 1e6
            || f.bad_deployments_per_tenant_month * f64::from(self.days) / 30.0 * f64::from(self.tenants) > 1e7
        {
            return bad("fault rates this high describe no service: lower them".into());
        }
        self.estimator_config().validate().map_err(|e| Error::Config(e.to_string()))
    }

    /// The estimator's settings, as the service derives them from its configuration.
    pub fn estimator_config(&self) -> cohort_estimator::Config {
        cohort_estimator::Config {
            coverage: self.coverage,
            min_bytes: self.min_grant_bytes,
            max_bytes: self.memory_budget_bytes,
            rule_base_bytes: self.min_grant_bytes,
            rule_bytes_per_source_byte: self.grant_per_source_byte,
            window: self.fit_window,
            ..cohort_estimator::Config::default()
        }
    }
}

/// Where a simulation is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Virtual time now.
    pub now: Micros,
    /// Virtual time of the last arrival's day end.
    pub end: Micros,
    /// Jobs asked for so far.
    pub jobs_created: u64,
    /// Jobs in a final state so far.
    pub jobs_finished: u64,
    /// Jobs queued in the core now.
    pub queued: usize,
    /// Jobs running now.
    pub running: usize,
}

/// Simulates `settings` to the end and reports. `progress` is called every simulated quarter
/// hour (and once at the end).
pub fn run(settings: &Settings, progress: &mut dyn FnMut(&Progress)) -> Result<Report> {
    settings.validate()?;
    let mut sim = Simulation::new(settings.clone());
    sim.run(progress);
    Ok(sim.report())
}

/// What happens at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// A running attempt of this job ends (its outcome was drawn when it started).
    AttemptEnd(u64),
    /// This job's backoff is over: it is queued again.
    RetryDue(u64),
    /// A second passed with jobs waiting beside free slots (token buckets refill).
    Tick,
}

/// An event at its time; `seq` orders events of one instant as they were scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scheduled {
    at: Micros,
    seq: u64,
    event: Event,
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // The heap is a max-heap: the earliest event is the greatest.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A running attempt, its outcome decided when it started.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    grant: u64,
    elapsed: Micros,
    /// `None`: it succeeds.
    failure: Option<FailureClass>,
}

/// A job between its arrival and its final state.
#[derive(Debug)]
struct SimJob {
    id: String,
    segment: u32,
    kind: Kind,
    created: Micros,
    features: Features,
    true_peak: u64,
    true_runtime: Micros,
    /// The grant of the first attempt (the estimate until it starts), and of the next one.
    first_grant: u64,
    grant: u64,
    expected_runtime: Micros,
    deadline: Micros,
    attempts: u32,
    transient_failures: u32,
    /// The largest grant an attempt ran out of.
    exhausted: Option<u64>,
    started_once: bool,
    running: Option<Attempt>,
    /// The job's own random stream: its attempts' draws do not depend on other jobs.
    rng: ChaCha8Rng,
}

struct Simulation {
    settings: Settings,
    world: World,
    core: Core,
    estimator: Estimator,
    size_rule: SizeRule,
    histories: Histories,
    /// Recent finished jobs as records (the fit's window), and how many have a measured peak.
    window: VecDeque<Record>,
    window_measured: usize,
    finished_since_fit: u64,
    records_at_last_fit: u64,
    fitted_at: Micros,
    alerts: Evaluator,
    transitions: Vec<Transition>,
    events: BinaryHeap<Scheduled>,
    seq: u64,
    arrivals: VecDeque<Arrival>,
    next_day: u32,
    jobs: HashMap<u64, SimJob>,
    next_job: u64,
    job_streams: ChaCha8Rng,
    tick_pending: bool,
    /// Grants of the running attempts, kept here to check the core's own count.
    granted_running: u64,
    now: Micros,
    tally: Tally,
}

impl Simulation {
    fn new(settings: Settings) -> Simulation {
        let world = World::new(&settings);
        let mut core = Core::new(CoreConfig {
            slots: settings.slots,
            budget: settings.memory_budget_bytes,
            half_life: settings.half_life,
            backfill: settings.backfill,
            fair_share: settings.fair_share,
            ..CoreConfig::default()
        });
        for tenant in &world.tenants {
            core.set_tenant(&tenant.name, tenant.policy.clone(), 0);
        }
        let mut estimator = Estimator::new(settings.estimator_config());
        let mut histories = Histories::default();
        let mut window = VecDeque::new();
        let mut warm_start_records = 0;
        if settings.warm_start {
            let past = world.past_runs(settings.seed);
            warm_start_records = past.len();
            for r in &past {
                histories.push(r);
            }
            let skip = past.len().saturating_sub(settings.fit_window);
            window = past.into_iter().skip(skip).collect::<VecDeque<_>>();
            estimator.model = Some(cohort_estimator::fit(window.make_contiguous(), &estimator.config, 1));
        }
        let size_rule =
            SizeRule { min_bytes: settings.min_grant_bytes, per_source_byte: settings.grant_per_source_byte, max_bytes: settings.memory_budget_bytes };
        let mut tally = Tally::new(&world);
        tally.warm_start_records = warm_start_records;
        Simulation {
            estimator,
            window_measured: window.iter().filter(|r| r.measured()).count(),
            records_at_last_fit: window.len() as u64,
            window,
            histories,
            job_streams: workload::stream(settings.seed, workload::STREAM_JOBS),
            world,
            core,
            size_rule,
            finished_since_fit: 0,
            fitted_at: 0,
            alerts: Evaluator::new(FailureRule::default()),
            transitions: Vec::new(),
            events: BinaryHeap::new(),
            seq: 0,
            arrivals: VecDeque::new(),
            next_day: 0,
            jobs: HashMap::new(),
            next_job: 0,
            tick_pending: false,
            granted_running: 0,
            now: 0,
            tally,
            settings,
        }
    }

    fn schedule(&mut self, at: Micros, event: Event) {
        self.seq += 1;
        self.events.push(Scheduled { at, seq: self.seq, event });
    }

    /// The time of the next arrival, generating the next day's when the current one is done.
    fn next_arrival(&mut self) -> Option<Micros> {
        while self.arrivals.is_empty() && self.next_day < self.settings.days {
            let day = self.next_day;
            self.arrivals = self.world.arrivals(day).into();
            self.next_day += 1;
        }
        self.arrivals.front().map(|a| a.at)
    }

    fn run(&mut self, progress: &mut dyn FnMut(&Progress)) {
        let end = Micros::from(self.settings.days) * DAY;
        let give_up_at = end.saturating_add(self.settings.drain_limit);
        let mut next_progress: Micros = 0;
        loop {
            let arrival = self.next_arrival();
            let event = self.events.peek().map(|e| e.at);
            let at = match (arrival, event) {
                (None, None) => break,
                (Some(a), Some(e)) => a.min(e),
                (a, e) => a.or(e).unwrap_or(Micros::MAX),
            };
            if arrival.is_none() && self.jobs.is_empty() {
                break;
            }
            if at > give_up_at {
                self.cancel_the_rest();
                break;
            }
            while at >= next_progress {
                progress(&self.progress(end));
                next_progress += 15 * MINUTE;
            }
            self.now = at;
            // Everything at this instant, then one decision.
            loop {
                if self.arrivals.front().is_some_and(|a| a.at == at) {
                    if let Some(a) = self.arrivals.pop_front() {
                        self.arrive(a);
                    }
                } else if self.events.peek().is_some_and(|e| e.at == at) {
                    if let Some(e) = self.events.pop() {
                        self.handle(e.event);
                    }
                } else {
                    break;
                }
                if self.arrivals.is_empty() {
                    self.next_arrival();
                }
            }
            self.decide();
        }
        self.alerts.finish(&mut self.transitions);
        self.count_transitions();
        self.tally.simulated_until = self.now;
        progress(&self.progress(end));
    }

    fn progress(&self, end: Micros) -> Progress {
        Progress {
            now: self.now,
            end,
            jobs_created: self.next_job,
            jobs_finished: self.tally.finished(),
            queued: self.core.queued(),
            running: self.core.running(),
        }
    }

    /// A run is asked for: size it, draw what it really needs, queue it.
    fn arrive(&mut self, arrival: Arrival) {
        let number = self.next_job;
        self.next_job += 1;
        let Some(segment) = self.world.segments.get(arrival.segment as usize) else { return };
        let tenant = &self.world.tenants[segment.tenant];
        let features = segment.features(tenant, arrival.at);
        let mut rng = self.job_streams.clone();
        rng.set_stream(workload::STREAM_JOBS + number);
        let (true_peak, true_runtime) = segment.true_cost(&features, &mut rng);
        let (grant, runtime_seconds) = if self.settings.estimator {
            let history = self.histories.get(&tenant.name, &segment.name);
            let estimate = self.estimator.estimate(&features, &history);
            self.tally.basis(estimate.basis);
            (estimate.memory_bound_bytes, estimate.runtime_seconds)
        } else {
            let source_bytes = (tenant.records_at(arrival.at) * tenant.bytes_per_row) as u64;
            let g = self.size_rule.size(&SizingInput { source_bytes, objects: u64::from(segment.objects) });
            (g.memory_bytes, g.runtime.as_secs_f64())
        };
        let expected = Duration::try_from_secs_f64(runtime_seconds).unwrap_or(self.settings.deadlines.ceiling);
        let deadline = self.settings.deadlines.for_runtime(expected);
        let job = SimJob {
            id: number.to_string(),
            segment: arrival.segment,
            kind: arrival.kind.core_kind(),
            created: arrival.at,
            true_peak,
            true_runtime,
            first_grant: grant,
            grant,
            expected_runtime: micros(expected).max(1),
            deadline: micros(deadline).max(1),
            attempts: 0,
            transient_failures: 0,
            exhausted: None,
            started_once: false,
            running: None,
            rng,
            features,
        };
        self.tally.created(job.kind);
        self.submit(&job);
        self.jobs.insert(number, job);
    }

    fn submit(&mut self, job: &SimJob) {
        let tenant = &self.world.tenants[self.world.segments[job.segment as usize].tenant];
        self.core.submit(
            Job {
                id: job.id.clone(),
                tenant: tenant.name.clone(),
                grant: job.grant,
                expected_runtime: job.expected_runtime,
                submitted: job.created,
                kind: job.kind,
            },
            self.now,
        );
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick => self.tick_pending = false,
            Event::RetryDue(number) => match self.jobs.remove(&number) {
                Some(job) => {
                    self.submit(&job);
                    self.jobs.insert(number, job);
                }
                None => self.tally.invariants.orphan_events += 1,
            },
            Event::AttemptEnd(number) => self.attempt_ended(number),
        }
    }

    /// One decision of the core; each job it starts runs an attempt.
    fn decide(&mut self) {
        let started = self.core.decide(self.now);
        for job in started {
            self.granted_running = self.granted_running.saturating_add(job.grant);
            match job.id.parse::<u64>() {
                Ok(number) if self.jobs.contains_key(&number) => self.start(number, job.grant),
                _ => self.tally.invariants.orphan_events += 1,
            }
        }
        let (used, running) = (self.core.used(), self.core.running());
        let inv = &mut self.tally.invariants;
        inv.decisions += 1;
        inv.budget_exceeded += u64::from(used > self.settings.memory_budget_bytes);
        inv.slots_exceeded += u64::from(running > self.settings.slots);
        inv.ledger_mismatches += u64::from(used != self.granted_running);
        self.tally.pool(self.now, running, used);
        // Token buckets refill with time alone: look again in a second (as the service polls).
        if !self.tick_pending && self.core.queued() > 0 && running < self.settings.slots {
            self.tick_pending = true;
            self.schedule(self.now + SECOND, Event::Tick);
        }
    }

    /// Starts an attempt of a job under `grant` and draws how it ends.
    fn start(&mut self, number: u64, grant: u64) {
        let now = self.now;
        let Some(job) = self.jobs.get_mut(&number) else { return };
        let segment = &self.world.segments[job.segment as usize];
        let tenant = segment.tenant;
        let region = self.world.tenants[tenant].region;
        if !job.started_once {
            // The grant it runs under: the estimate capped at the budget and its quota.
            job.started_once = true;
            job.first_grant = grant;
            self.tally.first_start(&job.features, now - job.created, grant, job.true_peak);
        }
        job.attempts += 1;
        job.grant = grant;
        // Every attempt draws the same numbers in the same order, whatever happens.
        let rng = &mut job.rng;
        let (incident_draw, transient_draw, transient_at, transient_kind, oom_at) =
            (rng.random::<f64>(), rng.random::<f64>(), rng.random::<f64>(), rng.random::<f64>(), rng.random::<f64>());
        let runtime = job.true_runtime;
        let faults = &self.settings.faults;
        // Candidates (elapsed, failure); the earliest wins.
        let mut outcome: (Micros, Option<FailureClass>) = (runtime, None);
        let mut consider = |elapsed: Micros, failure: FailureClass| {
            if elapsed < outcome.0 || (elapsed == outcome.0 && outcome.1.is_none()) {
                outcome = (elapsed.max(1), Some(failure));
            }
        };
        if let Some(bad) = self.world.bad_deployment_at(tenant, now) {
            // The model does not match the data: planning fails.
            consider(runtime.min(300_000), bad.class);
        }
        let reading = (runtime / 5).clamp(SECOND, MINUTE).min(runtime);
        if let Some(incident) = self.world.incident_during(region, now, now + reading)
            && incident_draw < faults.regional_incident_failure_probability
        {
            consider((incident - now).max(0) + SECOND / 2, FailureClass::SourceUnavailable);
        }
        if transient_draw < faults.transient_failure_probability {
            let class = if transient_kind < 0.8 { FailureClass::SourceUnavailable } else { FailureClass::Execution };
            consider((runtime as f64 * transient_at) as Micros, class);
        }
        if grant < job.true_peak {
            // Memory climbs through the run; it runs out when it passes the grant.
            let share = 0.1 + 0.8 * (grant as f64 / job.true_peak as f64) * (0.5 + 0.5 * oom_at);
            consider((runtime as f64 * share) as Micros, FailureClass::ResourcesExhausted);
        }
        if runtime > job.deadline {
            consider(job.deadline, FailureClass::Timeout);
        }
        let (elapsed, failure) = outcome;
        job.running = Some(Attempt { grant, elapsed, failure });
        self.schedule(now + elapsed, Event::AttemptEnd(number));
    }

    fn attempt_ended(&mut self, number: u64) {
        let Some(mut job) = self.jobs.remove(&number) else {
            self.tally.invariants.orphan_events += 1;
            return;
        };
        let Some(attempt) = job.running.take() else {
            self.tally.invariants.orphan_events += 1;
            self.jobs.insert(number, job);
            return;
        };
        self.core.finish(&job.id, self.now);
        self.granted_running = self.granted_running.saturating_sub(attempt.grant);
        self.tally.attempt(&attempt_summary(&attempt, job.first_grant, job.true_peak));
        self.finished_since_fit += 1;
        match attempt.failure {
            None => self.finish(job, true, None),
            Some(class) => {
                if class == FailureClass::ResourcesExhausted {
                    job.exhausted = Some(job.exhausted.map_or(attempt.grant, |e| e.max(attempt.grant)));
                }
                if class.is_transient() {
                    job.transient_failures += 1;
                }
                let tenant = self.world.segments[job.segment as usize].tenant;
                let cap = self.core.grant_cap(&self.world.tenants[tenant].name);
                let jitter = job.rng.random::<f64>();
                match self.settings.retry.decide(class, attempt.grant, cap, job.transient_failures, jitter) {
                    Retry::Larger(grant) => {
                        job.grant = grant;
                        self.submit(&job);
                        self.jobs.insert(number, job);
                    }
                    Retry::After(wait) => {
                        self.schedule(self.now.saturating_add(micros(wait)), Event::RetryDue(number));
                        self.jobs.insert(number, job);
                    }
                    Retry::No(_) => self.finish(job, false, Some(class.as_str())),
                }
            }
        }
        self.maybe_refit();
    }

    /// A job reached its final state: count it, learn from it, alert on it.
    fn finish(&mut self, job: SimJob, succeeded: bool, failure: Option<&'static str>) {
        let segment = &self.world.segments[job.segment as usize];
        let tenant = &self.world.tenants[segment.tenant];
        self.tally.finished_job(succeeded, failure, job.true_runtime, job.expected_runtime);
        if failure.is_some() {
            self.alerts.fail(self.now / 1_000, &tenant.name, &self.world.regions[tenant.region], &mut self.transitions);
            for t in self.transitions.drain(..) {
                if t.state == State::Firing {
                    self.tally.fired(t.scope, &t.key);
                }
            }
        }
        // What the service's store makes of it: a record when the run says something of its
        // peak (it finished, or an attempt ran out of memory).
        if succeeded || job.exhausted.is_some() {
            let record = Record {
                at: job.created,
                tenant: tenant.name.clone(),
                segment: segment.name.clone(),
                job: String::new(),
                features: job.features,
                peak_bytes: succeeded.then_some(job.true_peak),
                runtime_seconds: succeeded.then(|| job.true_runtime as f64 / SECOND as f64),
                exhausted_bytes: job.exhausted,
                granted_bytes: Some(job.first_grant),
                estimated_runtime_seconds: Some(job.expected_runtime as f64 / SECOND as f64),
            };
            self.histories.push(&record);
            self.window_measured += usize::from(record.measured());
            self.window.push_back(record);
            while self.window.len() > self.settings.fit_window {
                if let Some(old) = self.window.pop_front() {
                    self.window_measured -= usize::from(old.measured());
                }
            }
        }
    }

    /// Refits when due: after 60 finished attempts at first, then after twice the records of
    /// the last fit (up to `refit_runs`), or when `refit_interval` passed; never with fewer
    /// measured records than the estimator's `min_fit`.
    fn maybe_refit(&mut self) {
        let config = &self.estimator.config;
        let due_runs = self.records_at_last_fit.clamp(config.first_fit_after as u64, self.settings.refit_runs);
        let due = self.finished_since_fit >= due_runs || self.now - self.fitted_at >= self.settings.refit_interval;
        if !due || self.window_measured < config.min_fit {
            return;
        }
        let version = self.estimator.model.as_ref().map_or(0, |m| m.version) + 1;
        let model = cohort_estimator::fit(self.window.make_contiguous(), config, version);
        self.tally.fitted(model.trained_on);
        self.estimator.model = Some(model);
        self.records_at_last_fit = self.window.len() as u64;
        self.finished_since_fit = 0;
        self.fitted_at = self.now;
    }

    fn count_transitions(&mut self) {
        for t in self.transitions.drain(..) {
            if t.state == State::Firing {
                self.tally.fired(t.scope, &t.key);
            }
        }
    }

    /// The drain limit passed: whatever is left is cancelled and counted.
    fn cancel_the_rest(&mut self) {
        let mut left: Vec<u64> = self.jobs.keys().copied().collect();
        left.sort_unstable();
        for number in left {
            if let Some(job) = self.jobs.remove(&number) {
                let tenant = &self.world.tenants[self.world.segments[job.segment as usize].tenant];
                self.core.remove(&job.id, &tenant.name);
                self.tally.cancelled_job();
            }
        }
    }

    fn report(self) -> Report {
        let model = self.estimator.model.as_ref();
        self.tally.report(&self.settings, &self.world, model.map_or(0, |m| m.version))
    }
}

/// What the tally needs of an ended attempt.
struct AttemptSummary {
    grant: u64,
    /// The job's first grant was more than 10× its peak.
    over_granted: bool,
    used: u64,
    elapsed: Micros,
    class: &'static str,
}

fn attempt_summary(a: &Attempt, first_grant: u64, true_peak: u64) -> AttemptSummary {
    // A failed attempt held its grant for its time; it touched at most its peak.
    AttemptSummary {
        grant: a.grant,
        over_granted: first_grant / 10 > true_peak,
        used: true_peak.min(a.grant),
        elapsed: a.elapsed,
        class: a.failure.map_or("succeeded", FailureClass::as_str),
    }
}

fn micros(d: Duration) -> Micros {
    Micros::try_from(d.as_micros()).unwrap_or(Micros::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Settings {
        Settings { days: 1, jobs_per_day: 2_000, tenants: 100, slots: 32, memory_budget_bytes: 256 << 30, ..Settings::default() }
    }

    #[test]
    fn events_come_out_earliest_first_then_in_order_scheduled() {
        let mut heap = BinaryHeap::new();
        for (at, seq) in [(5, 1), (3, 2), (5, 0), (3, 3)] {
            heap.push(Scheduled { at, seq, event: Event::Tick });
        }
        let order: Vec<(Micros, u64)> = std::iter::from_fn(|| heap.pop().map(|e| (e.at, e.seq))).collect();
        assert_eq!(order, vec![(3, 2), (3, 3), (5, 0), (5, 1)]);
    }

    #[test]
    fn a_day_of_arrivals_totals_the_jobs_per_day() {
        let settings = small();
        let mut world = World::new(&settings);
        let arrivals = world.arrivals(0);
        assert_eq!(arrivals.len() as u64, settings.jobs_per_day);
        assert!(arrivals.windows(2).all(|w| w[0] <= w[1]));
        assert!(arrivals.iter().all(|a| (0..DAY).contains(&a.at)));
    }

    #[test]
    fn bad_settings_are_refused() {
        for bad in [
            Settings { days: 0, ..small() },
            Settings { coverage: 1.0, ..small() },
            Settings { slots: 0, ..small() },
            Settings { memory_budget_bytes: 1, ..small() },
            Settings { faults: Faults { transient_failure_probability: 2.0, ..Faults::default() }, ..small() },
            Settings { faults: Faults { regional_incident_minutes: f64::NAN, ..Faults::default() }, ..small() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(small().validate().is_ok());
    }
}
