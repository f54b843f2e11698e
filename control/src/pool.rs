//! The executor pool: worker slots and a memory budget, fed from the store.
//!
//! Jobs wait in the store. The dispatcher holds the queued ones in the scheduling core
//! ([`crate::scheduler`]), which decides what starts: slots, budget, tenant caps, quotas and
//! rate limits, fair share and reservations. Jobs reach it as they are submitted in this
//! process, from a scan of the store at each poll (jobs of other processes), and from a full
//! read of the queue at start and every half minute. Admission is a committed transition; so
//! is every step after it. Execution happens on a runtime of its own, so segment evaluation
//! never stalls the HTTP server.
//!
//! An attempt runs under its grant and its deadline. A failure is retried by its class
//! ([`RetryPolicy`]): out of memory at once with a doubled grant, transient failures after a
//! backoff with jitter, the rest not at all.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use cohort_executor::{Catalog, Model, ProbeOptions, RunReport, Segment, probe_data, run_segment};
use datafusion::prelude::SessionContext;
use tokio::sync::{Notify, broadcast};

use crate::estimates::{Estimates, run_options};
use crate::jobs::JobStatus;
use crate::membership::{MembershipFiles, attempt_files, diff};
use crate::scheduler::{Core, CoreConfig, Job as CoreJob, Kind, TenantPolicy, Wait};
use crate::store::{AttemptOutcome, Commit, CommitResult, Fence, JobEstimate, JobRow, ModelRow, SegmentRow, Store, Tenant};
use crate::traces::{AttemptSpans, JobLabels, PhaseSpan, system_time};
use crate::{Error, Result, Telemetry, now_micros, rfc3339};

/// What sizing knows about a job before it runs.
#[derive(Debug, Clone)]
pub struct SizingInput {
    /// Total bytes of the tenant's sources when the model was stored.
    pub source_bytes: u64,
    /// Objects in the model.
    pub objects: u64,
}

/// A job's predicted needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grant {
    /// The memory the job runs under.
    pub memory_bytes: u64,
    /// The runtime expected.
    pub runtime: Duration,
}

/// Predicts a job's needs. The estimator fills this in; until it does, [`SizeRule`] does.
pub trait Sizer: Send + Sync + std::fmt::Debug {
    /// The grant for a job.
    fn size(&self, input: &SizingInput) -> Grant;
}

/// A simple rule: a floor plus a multiple of the sources' bytes, capped at the budget.
#[derive(Debug, Clone)]
pub struct SizeRule {
    /// The smallest grant.
    pub min_bytes: u64,
    /// Grant per source byte.
    pub per_source_byte: f64,
    /// The largest grant (the pool's budget).
    pub max_bytes: u64,
}

impl Sizer for SizeRule {
    fn size(&self, input: &SizingInput) -> Grant {
        let scaled = (input.source_bytes as f64 * self.per_source_byte).min(u64::MAX as f64) as u64;
        let memory_bytes = self.min_bytes.saturating_add(scaled).min(self.max_bytes);
        // About 100 MB/s of source per job, with a floor.
        let runtime = Duration::from_millis(100 + input.source_bytes / 100_000);
        Grant { memory_bytes, runtime }
    }
}

/// How long an attempt may run: the expected runtime times a factor, within a floor and a
/// ceiling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deadlines {
    /// Multiple of the expected runtime.
    pub factor: f64,
    /// The shortest deadline.
    pub floor: Duration,
    /// The longest deadline (also caps a deadline asked for with the run).
    pub ceiling: Duration,
}

impl Deadlines {
    /// The deadline of a job expected to run `expected`.
    pub fn for_runtime(&self, expected: Duration) -> Duration {
        let ceiling = self.ceiling.max(self.floor);
        let scaled = Duration::try_from_secs_f64(expected.as_secs_f64() * self.factor.max(1.0)).unwrap_or(ceiling);
        scaled.clamp(self.floor, ceiling)
    }
}

/// Failure classes worth another attempt after a wait: they may pass by themselves.
pub const TRANSIENT_CLASSES: &[&str] = &["source_unavailable", "execution", "store"];

/// Failure classes the data can cause: their attempts' data is probed for triage.
const PROBED_CLASSES: &[&str] = &["resources_exhausted", "execution"];

/// How long the data probe of a failed attempt may take.
const PROBE_TIME: Duration = Duration::from_secs(10);
/// The memory a data probe asks to be lent (it samples at most 200,000 rows an object).
const PROBE_MEMORY: u64 = 256 << 20;

/// How failed attempts are retried, by failure class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all for a job failing transiently (the first included).
    pub transient_attempts: u32,
    /// The wait before the first transient retry; it doubles at each next one.
    pub backoff_base: Duration,
    /// The longest wait.
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { transient_attempts: 3, backoff_base: Duration::from_secs(1), backoff_max: Duration::from_secs(300) }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Retry {
    /// Run again at once with this larger grant.
    Larger(u64),
    /// Run again after this wait.
    After(Duration),
    /// Fail the job, for this reason.
    No(String),
}

impl RetryPolicy {
    /// The decision after an attempt under `grant` failed with `class`: `cap` is the largest
    /// grant the job may have, `transient_failures` how many of its attempts failed
    /// transiently (this one included), `jitter` a number in [0, 1).
    pub fn decide(&self, class: &str, grant: u64, cap: u64, transient_failures: u32, jitter: f64) -> Retry {
        match class {
            "resources_exhausted" if grant < cap => Retry::Larger(grant.saturating_mul(2).min(cap)),
            "resources_exhausted" => Retry::No(format!("ran out of memory at the largest grant it may have ({cap} bytes)")),
            c if TRANSIENT_CLASSES.contains(&c) => {
                if transient_failures < self.transient_attempts {
                    Retry::After(self.backoff(transient_failures, jitter))
                } else {
                    Retry::No(format!("failed {transient_failures} times ({c}); no attempts left"))
                }
            }
            c => Retry::No(format!("{c}: another attempt cannot help")),
        }
    }

    /// The wait after the `n`th transient failure: `base × 2^(n-1)`, capped, with "equal
    /// jitter" (half of it fixed, half random) so retries of many jobs spread out.
    pub fn backoff(&self, n: u32, jitter: f64) -> Duration {
        let full = self.backoff_base.saturating_mul(1u32 << n.saturating_sub(1).min(20)).min(self.backoff_max);
        full / 2 + (full / 2).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// Makes jobs: sizes them and sets their deadlines.
#[derive(Debug, Clone)]
pub struct Sizing {
    /// The size rule: grants when the estimator is off or cannot read a job's features.
    pub sizer: Arc<dyn Sizer>,
    /// Deadlines from the runtimes.
    pub deadlines: Deadlines,
    /// The estimator; `None`: the size rule alone, and no features recorded.
    pub estimates: Option<Arc<Estimates>>,
    /// The tenants' catalogs (the pool's), for the features.
    pub catalogs: Arc<Catalogs>,
    /// With a Ballista cluster configured: which jobs go there.
    pub route: Option<Route>,
}

/// Which jobs run on the Ballista cluster: those whose memory estimate exceeds what the pool
/// may grant them (the budget, or their tenant's quota when smaller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The pool's budget.
    pub budget: u64,
    /// What this process holds of a job on the cluster (the rows read back, parts run
    /// first): its first grant, doubled on `resources_exhausted` like any other.
    pub client_grant: u64,
}

impl Route {
    /// The backend of a job estimated at `estimate` bytes of a tenant with `quota` (0: none),
    /// and its grant in this process.
    pub fn choose(&self, estimate: u64, quota: i64) -> (&'static str, u64) {
        let cap = u64::try_from(quota).ok().filter(|q| *q > 0).map_or(self.budget, |q| q.min(self.budget));
        if estimate > cap { (crate::store::BALLISTA, self.client_grant.min(cap)) } else { (crate::store::EMBEDDED, estimate) }
    }
}

impl Sizing {
    /// Sizing by the rule alone.
    pub fn rule(sizer: Arc<dyn Sizer>, deadlines: Deadlines) -> Sizing {
        Sizing { sizer, deadlines, estimates: None, catalogs: Arc::new(Catalogs::default()), route: None }
    }

    /// A queued job of `segment` (of `tenant`, both as just read) for `as_of`, granted the
    /// estimator's bound (or the size rule's grant), with what the estimator read and said.
    /// `timeout` (capped at the ceiling) replaces the deadline from the estimate.
    #[allow(clippy::too_many_arguments)]
    pub async fn new_job(
        &self,
        store: &Store,
        tenant: &Tenant,
        segment: &SegmentRow,
        as_of: i64,
        key: Option<String>,
        trigger: &str,
        timeout: Option<Duration>,
    ) -> Result<JobRow> {
        let (tenant_id, segment_id) = (tenant.id.as_str(), segment.id.as_str());
        let model = store.recent_model(tenant_id).await?.ok_or_else(|| Error::Conflict("the tenant has no model".into()))?;
        let mut grant = self.sizer.size(&SizingInput { source_bytes: model.source_bytes.max(0) as u64, objects: model.objects.max(0) as u64 });
        let mut estimate = None;
        if let Some(estimates) = &self.estimates {
            match prepare_rows(&self.catalogs, tenant, &model, segment).await {
                Ok((catalog, segment)) => {
                    let features = crate::estimates::features(&catalog, &segment, &run_options(&catalog, as_of));
                    let e = estimates.estimate(store, tenant_id, segment_id, &features).await?;
                    if estimates.enabled() {
                        grant = Grant { memory_bytes: e.memory_bound_bytes, runtime: Duration::try_from_secs_f64(e.runtime_seconds).unwrap_or(grant.runtime) };
                    }
                    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                    estimate = Some(JobEstimate {
                        features: serde_json::to_string(&features).map_err(|e| Error::Internal(format!("features: {e}")))?,
                        model_version: as_i64(e.model_version),
                        basis: serde_json::to_value(e.basis).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                        memory_bytes: as_i64(e.memory_bytes),
                        bound_bytes: as_i64(grant.memory_bytes),
                        runtime_micros: micros(grant.runtime),
                    });
                }
                // The run will fail with this reason; the rule sizes it meanwhile.
                Err(e) => tracing::debug!(tenant = tenant_id, segment = segment_id, error = %e.describe().1, "no features for the estimator"),
            }
        }
        let (backend, local_grant) = match &self.route {
            Some(route) => route.choose(grant.memory_bytes, tenant.memory_quota_bytes),
            None => (crate::store::EMBEDDED, grant.memory_bytes),
        };
        let mut job = JobRow::queued(tenant_id, segment_id, key, trigger, as_of, local_grant.min(i64::MAX as u64) as i64);
        job.backend = backend.to_string();
        let deadline = match timeout {
            Some(t) => t.min(self.deadlines.ceiling),
            None => self.deadlines.for_runtime(grant.runtime),
        };
        job.expected_micros = micros(grant.runtime);
        job.deadline_micros = micros(deadline).max(1);
        job.estimate = estimate;
        Ok(job)
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A change of a job's status, for whoever waits on it.
#[derive(Debug, Clone)]
pub struct JobEvent {
    /// The job.
    pub job_id: String,
    /// Its new status.
    pub status: JobStatus,
    /// For a job that succeeded: what it was and when it ended, so that listeners need not
    /// read it back (`None` otherwise).
    pub succeeded: Option<Arc<Succeeded>>,
}

/// A job that succeeded, as its [`JobEvent`] tells it.
#[derive(Debug, Clone)]
pub struct Succeeded {
    /// Its tenant.
    pub tenant_id: String,
    /// Its segment.
    pub segment_id: String,
    /// Submitted (microseconds).
    pub created_at: i64,
    /// Committed (microseconds; as stored for a rider, just after the commit for a leader).
    pub finished_at: i64,
}

impl Succeeded {
    fn of(job: &JobRow, finished_at: i64) -> Option<Arc<Succeeded>> {
        Some(Arc::new(Succeeded { tenant_id: job.tenant_id.clone(), segment_id: job.segment_id.clone(), created_at: job.created_at, finished_at }))
    }
}

/// Why a job is not running yet, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// `slot`, `memory`, `tenant_cap`, `quota`, `rate_limit`, `fair_share`, `reservation`,
    /// `behind_own_jobs`, `retry_backoff`, `riding` (a running job's execution answers it
    /// too) or `not_seen`.
    pub reason: String,
    /// The same, in words, with the numbers behind it.
    pub message: String,
}

/// The pool's settings.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Worker slots.
    pub slots: usize,
    /// Memory budget.
    pub budget: u64,
    /// How often the store is read even when nothing signalled (jobs of other processes).
    pub poll: Duration,
    /// Fair-share usage halves every this long.
    pub half_life: Duration,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// This process's name in the leases of the jobs it admits.
    pub instance: String,
    /// How long a lease holds without renewal.
    pub lease: Duration,
    /// The Ballista cluster jobs queued for it run on (`None`: every job runs here).
    pub ballista: Option<cohort_executor::BallistaUrl>,
}

#[derive(Debug)]
struct Running {
    cancel: Arc<Notify>,
}

/// The dispatcher's view: the scheduling core, the rows of the jobs it holds, the running
/// jobs. Rebuilt from the store at start.
#[derive(Debug)]
struct Sched {
    core: Core,
    queued: HashMap<String, JobRow>,
    /// The queued jobs one execution answers alike: by tenant, segment and as-of.
    alike: HashMap<(String, String, i64), BTreeSet<String>>,
    running: HashMap<String, Running>,
    /// Jobs riding on a running job's execution: still queued in the store, out of the core.
    riding: HashSet<String>,
    /// The newest queued job id read from the store.
    watermark: String,
}

/// The jobs that share one execution.
fn alike_key(job: &JobRow) -> (String, String, i64) {
    (job.tenant_id.clone(), job.segment_id.clone(), job.as_of)
}

impl Sched {
    /// Whether the dispatcher holds this job already (queued, running or riding).
    fn holds(&self, id: &str) -> bool {
        self.queued.contains_key(id) || self.running.contains_key(id) || self.riding.contains(id)
    }

    /// Queues a job in the core and here.
    fn queue(&mut self, row: JobRow, now: i64) {
        self.core.submit(core_job(&row), now);
        self.alike.entry(alike_key(&row)).or_default().insert(row.id.clone());
        self.queued.insert(row.id.clone(), row);
    }

    /// Forgets a queued job here (the core is the caller's business).
    fn unqueue(&mut self, id: &str) -> Option<JobRow> {
        let row = self.queued.remove(id)?;
        let key = alike_key(&row);
        if let Some(ids) = self.alike.get_mut(&key) {
            ids.remove(id);
            if ids.is_empty() {
                self.alike.remove(&key);
            }
        }
        Some(row)
    }

    /// Riders whose execution did not answer them: queued again.
    fn unride(&mut self, riders: Vec<JobRow>, now: i64) {
        for row in riders {
            if self.riding.remove(&row.id) {
                self.queue(row, now);
            }
        }
    }

    /// The queued jobs that `leader`'s execution answers too: first attempts of its tenant,
    /// segment and as-of. Each was submitted before the execution starts, so the data it
    /// reads is what the job would have read had it started then. They leave the queue and
    /// ride.
    fn riders(&mut self, leader: &JobRow) -> Vec<JobRow> {
        let Some(ids) = self.alike.get(&alike_key(leader)) else { return Vec::new() };
        let others: Vec<String> = ids.iter().filter(|id| **id != leader.id).cloned().collect();
        let mut riders = Vec::new();
        for id in others {
            if self.queued.get(&id).is_none_or(|row| row.attempts > 0) {
                continue;
            }
            if !self.core.ride(&id, &leader.tenant_id) {
                continue;
            }
            if let Some(row) = self.unqueue(&id) {
                self.riding.insert(id);
                riders.push(row);
            }
        }
        riders
    }
}

/// Queued jobs read at a reconcile, at most.
const RECONCILE_LIMIT: i64 = 1_000_000;
/// How often the whole queue is read again (jobs cancelled or queued by other processes).
const RECONCILE_EVERY: Duration = Duration::from_secs(30);
/// A scan of new jobs also looks this far behind the newest id it saw: ids are made before
/// their row is committed, so another process's job may land behind it.
const SCAN_SLACK_MICROS: i64 = 10_000_000;

/// The pool. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Pool {
    store: Store,
    files: MembershipFiles,
    settings: PoolSettings,
    sched: std::sync::Mutex<Sched>,
    inbox: std::sync::Mutex<Vec<JobRow>>,
    next_retry: AtomicI64,
    wake: Notify,
    idle: Notify,
    stopping: AtomicBool,
    events: broadcast::Sender<JobEvent>,
    executor: tokio::runtime::Handle,
    catalogs: Arc<Catalogs>,
    learner: std::sync::OnceLock<Arc<Estimates>>,
    telemetry: Arc<Telemetry>,
}

impl Pool {
    /// A pool running jobs on `executor`.
    pub fn new(store: Store, files: MembershipFiles, settings: PoolSettings, executor: tokio::runtime::Handle, telemetry: Arc<Telemetry>) -> Arc<Pool> {
        let (events, _) = broadcast::channel(4096);
        let mut settings = settings;
        settings.slots = settings.slots.max(1);
        let core =
            Core::new(CoreConfig { slots: settings.slots, budget: settings.budget, half_life: micros(settings.half_life).max(1), ..CoreConfig::default() });
        Arc::new(Pool {
            store,
            files,
            settings,
            sched: std::sync::Mutex::new(Sched {
                core,
                queued: HashMap::new(),
                alike: HashMap::new(),
                running: HashMap::new(),
                riding: HashSet::new(),
                watermark: String::new(),
            }),
            inbox: std::sync::Mutex::new(Vec::new()),
            next_retry: AtomicI64::new(i64::MIN),
            wake: Notify::new(),
            idle: Notify::new(),
            stopping: AtomicBool::new(false),
            events,
            executor,
            catalogs: Arc::new(Catalogs::default()),
            learner: std::sync::OnceLock::new(),
            telemetry,
        })
    }

    /// The tenants' catalogs this pool loads and reuses (share them with [`Sizing`]).
    pub fn catalogs(&self) -> Arc<Catalogs> {
        Arc::clone(&self.catalogs)
    }

    /// Tells `estimates` of every finished attempt, so that it refits when enough ran.
    pub fn learn_with(&self, estimates: Arc<Estimates>) {
        let _ = self.learner.set(estimates);
    }

    /// Job status changes as they are committed.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    /// Tells the dispatcher to look again.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// What the pool reports about its jobs.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    fn labels(&self, job: &JobRow) -> JobLabels {
        JobLabels { job: job.id.clone(), tenant: job.tenant_id.clone(), region: self.telemetry.metrics.region(&job.tenant_id), segment: job.segment_id.clone() }
    }

    /// A job reached its final state (already committed): counted, and its trace's root span
    /// recorded.
    pub fn ended(&self, job: &JobRow, outcome: &str, error: Option<(&str, &str)>) {
        self.telemetry.metrics.finished(&job.tenant_id, outcome, error.map(|e| e.0));
        self.telemetry.traces.job(&self.labels(job), system_time(job.created_at), SystemTime::now(), outcome, error, job.trace_link.as_deref());
    }

    /// Announces a committed status change.
    pub fn announce(&self, job_id: &str, status: JobStatus) {
        let _ = self.events.send(JobEvent { job_id: job_id.to_string(), status, succeeded: None });
    }

    /// Announces that a job settled (a final state or a retry, committed): the estimator
    /// reads its segment's recent runs again first.
    fn settle(&self, job: &JobRow, status: JobStatus) {
        if let Some(learner) = self.learner.get() {
            learner.settled(&job.tenant_id, &job.segment_id);
        }
        let succeeded = if status == JobStatus::Succeeded { Succeeded::of(job, now_micros()) } else { None };
        let _ = self.events.send(JobEvent { job_id: job.id.clone(), status, succeeded });
    }

    /// Hands a job just committed as queued to the dispatcher. With its tenant at hand the
    /// job joins the core at once (so the API can say at once why it waits); otherwise the
    /// dispatcher's next round takes it, loading the tenant's policy.
    pub fn enqueued(&self, job: JobRow, tenant: Option<&Tenant>) {
        self.announce(&job.id, JobStatus::Queued);
        if let Some(t) = tenant {
            self.telemetry.metrics.set_region(&t.id, &t.region);
        }
        let mut sched = lock(&self.sched);
        let known = sched.core.knows_tenant(&job.tenant_id);
        match tenant {
            Some(t) if !known => sched.core.set_tenant(&t.id, policy(t), now_micros()),
            None if !known => {
                drop(sched);
                lock(&self.inbox).push(job);
                self.wake();
                return;
            }
            _ => {}
        }
        if job.id > sched.watermark {
            sched.watermark = job.id.clone();
        }
        if !sched.holds(&job.id) {
            sched.queue(job, now_micros());
        }
        drop(sched);
        self.wake();
    }

    /// Slots in use, memory granted to running jobs.
    pub fn usage(&self) -> (usize, u64) {
        let sched = lock(&self.sched);
        (sched.running.len(), sched.core.used())
    }

    /// Worker slots and memory budget.
    pub fn capacity(&self) -> (usize, u64) {
        (self.settings.slots, self.settings.budget)
    }

    /// Jobs the dispatcher holds queued.
    pub fn queued(&self) -> usize {
        lock(&self.sched).core.queued()
    }

    /// Asks a running job to stop; true if it was running here.
    pub fn cancel(&self, job_id: &str) -> bool {
        let sched = lock(&self.sched);
        match sched.running.get(job_id) {
            Some(r) => {
                r.cancel.notify_one();
                true
            }
            None => false,
        }
    }

    /// Drops a queued job that was cancelled.
    pub fn forget(&self, job_id: &str, tenant_id: &str) {
        let mut sched = lock(&self.sched);
        sched.core.remove(job_id, tenant_id);
        sched.unqueue(job_id);
    }

    /// Why a job is not running yet, if it is waiting.
    pub fn why_waiting(&self, job: &JobRow) -> Option<Waiting> {
        let waiting = |reason: &str, message: String| Some(Waiting { reason: reason.into(), message });
        match job.status {
            JobStatus::Retrying => waiting(
                "retry_backoff",
                format!(
                    "its last attempt failed ({}); it is queued again at {}",
                    job.error_class.as_deref().unwrap_or("unknown"),
                    job.not_before.map(rfc3339).unwrap_or_default()
                ),
            ),
            JobStatus::Queued => {
                let sched = lock(&self.sched);
                if sched.riding.contains(&job.id) {
                    return waiting("riding", "a running job of the same segment and as-of answers it too".into());
                }
                let core = &sched.core;
                let Some(wait) = core.why_waiting(&job.id, &job.tenant_id) else {
                    return waiting("not_seen", "the dispatcher has not read it yet".into());
                };
                let (slots, budget) = (core.config().slots, core.config().budget);
                let grant = sched.queued.get(&job.id).map_or(job.grant_bytes.max(0) as u64, |q| q.grant_bytes.max(0) as u64);
                let (tenant_running, tenant_memory) = core.tenant_usage(&job.tenant_id).unwrap_or_default();
                let message = match wait {
                    Wait::Slot => format!("all {slots} worker slots are busy"),
                    Wait::Memory => format!("its grant of {grant} bytes exceeds the {} bytes of the budget left", budget.saturating_sub(core.used())),
                    Wait::TenantCap => format!("its tenant already runs {tenant_running} jobs, its concurrency cap"),
                    Wait::Quota => format!("its tenant's running jobs hold {tenant_memory} bytes; {grant} more would pass its memory quota"),
                    Wait::RateLimit => "its tenant used its rate limit (jobs per minute); the next token comes soon".into(),
                    Wait::FairShare => "tenants with less recent use of the pool (for their weight) go first".into(),
                    Wait::Reservation => match core.reservation() {
                        Some(r) => {
                            format!("job {} holds a reservation for {} bytes from {}; starting this one would delay it", r.job, r.grant, rfc3339(r.start_at))
                        }
                        None => "another job holds a reservation".into(),
                    },
                    Wait::Behind => "older jobs of its tenant go first".into(),
                };
                waiting(wait.as_str(), message)
            }
            _ => None,
        }
    }

    /// Admits jobs until stopped.
    pub async fn dispatch(self: Arc<Self>) {
        let mut reconciled: Option<std::time::Instant> = None;
        let mut scan = true;
        while !self.stopping.load(Ordering::SeqCst) {
            let reconcile = reconciled.is_none_or(|at| at.elapsed() >= RECONCILE_EVERY);
            let failed = match self.round(scan, reconcile).await {
                Ok(()) => {
                    if reconcile {
                        reconciled = Some(std::time::Instant::now());
                    }
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admission failed; trying again");
                    true
                }
            };
            let retry_in = self.next_retry.load(Ordering::SeqCst).saturating_sub(now_micros());
            // After a failure (the store is down?) wait a poll interval, not a retry's time.
            let nap = if failed { self.settings.poll } else { self.settings.poll.min(Duration::from_micros(retry_in.clamp(0, i64::MAX) as u64)) };
            scan = tokio::select! {
                () = self.wake.notified() => false,
                () = tokio::time::sleep(nap) => true,
            };
        }
    }

    /// One pass: retries whose wait is over go back to the queue, new jobs join the core, and
    /// the core's decisions are admitted.
    async fn round(self: &Arc<Self>, scan: bool, reconcile: bool) -> Result<()> {
        let now = now_micros();
        if scan || reconcile || self.next_retry.load(Ordering::SeqCst) <= now {
            self.promote_retries(now).await?;
        }
        let mut fresh: Vec<JobRow> = std::mem::take(&mut *lock(&self.inbox));
        let mut all_queued = None;
        let read_at = now_micros();
        let read: Result<()> = async {
            if reconcile {
                let rows = self.store.queued_jobs(RECONCILE_LIMIT).await?;
                all_queued = Some(rows.iter().map(|r| r.id.clone()).collect::<std::collections::HashSet<_>>());
                fresh.extend(rows);
            } else if scan {
                let from = lock(&self.sched).watermark.clone();
                fresh.extend(self.store.queued_after(&id_before(&from, SCAN_SLACK_MICROS), 10_000).await?);
            }
            self.learn_tenants(&fresh, reconcile).await
        }
        .await;
        if let Err(e) = read {
            // What was handed over stays for the next round.
            lock(&self.inbox).extend(fresh);
            return Err(e);
        }
        let decided = {
            let mut guard = lock(&self.sched);
            let sched = &mut *guard;
            if let Some(keep) = &all_queued {
                // Jobs no longer queued in the store (cancelled, or taken by another process);
                // not ones submitted while the queue was read.
                let gone: Vec<(String, String)> = sched
                    .queued
                    .values()
                    .filter(|j| !keep.contains(&j.id) && j.created_at < read_at - SCAN_SLACK_MICROS)
                    .map(|j| (j.id.clone(), j.tenant_id.clone()))
                    .collect();
                for (id, tenant) in gone {
                    sched.core.remove(&id, &tenant);
                    sched.unqueue(&id);
                }
            }
            for row in fresh {
                if row.id > sched.watermark {
                    sched.watermark = row.id.clone();
                }
                if sched.holds(&row.id) || row.status != JobStatus::Queued {
                    continue;
                }
                sched.queue(row, now);
            }
            if self.stopping.load(Ordering::SeqCst) {
                return Ok(());
            }
            let started = sched.core.decide(now);
            for (tenant, why) in sched.core.take_held() {
                self.telemetry.metrics.held(&tenant, why.as_str());
            }
            let mut decided = Vec::new();
            for j in started {
                if let Some(row) = sched.unqueue(&j.id) {
                    let riders = sched.riders(&row);
                    decided.push((j.grant, row, riders));
                }
            }
            decided
        };
        let mut decided = decided.into_iter();
        while let Some((grant, job, riders)) = decided.next() {
            let until = now_micros().saturating_add(micros(self.settings.lease));
            let detail = match (&self.settings.ballista, job.backend == crate::store::BALLISTA) {
                (Some(url), true) => format!("slot granted, runs on the Ballista cluster {url} (process {})", self.settings.instance),
                _ => format!("slot and memory granted (process {})", self.settings.instance),
            };
            let admitted = match self.store.admit(&job.id, &self.settings.instance, until, &detail).await {
                Ok(done) => done,
                Err(e) => {
                    // Give this job and every other one decided in this round back to the
                    // queue: their slots and memory must not stay counted.
                    let mut sched = lock(&self.sched);
                    for (_, job, riders) in std::iter::once((grant, job, riders)).chain(decided) {
                        sched.core.abandon(&job.id);
                        sched.queue(job, now);
                        sched.unride(riders, now);
                    }
                    return Err(e);
                }
            };
            if !admitted {
                // Cancelled meanwhile, or another process took it.
                let mut sched = lock(&self.sched);
                sched.core.abandon(&job.id);
                sched.unride(riders, now);
                continue;
            }
            self.telemetry.metrics.admitted(&job.tenant_id, Duration::from_micros(u64::try_from(now_micros() - job.updated_at).unwrap_or(0)));
            let cancel = Arc::new(Notify::new());
            lock(&self.sched).running.insert(job.id.clone(), Running { cancel: Arc::clone(&cancel) });
            self.announce(&job.id, JobStatus::Admitted);
            let pool = Arc::clone(self);
            tokio::spawn(async move {
                let id = job.id.clone();
                if let Err(e) = Arc::clone(&pool).work(job, grant, cancel, riders).await {
                    tracing::error!(job = %id, error = %e, "job bookkeeping failed; queuing the job again");
                    pool.requeue_after_error(&id).await;
                }
                pool.release(&id);
            });
        }
        Ok(())
    }

    /// Renews the leases of the jobs this process runs, every third of a lease, and queues
    /// again the jobs of other processes whose leases ran out (the process died or lost
    /// the store), until stopped.
    pub async fn keep_leases(self: Arc<Self>) {
        let every = (self.settings.lease / 3).max(Duration::from_millis(100));
        while !self.stopping.load(Ordering::SeqCst) {
            tokio::time::sleep(every).await;
            let held: Vec<String> = lock(&self.sched).running.keys().cloned().collect();
            let now = now_micros();
            if let Err(e) = self.store.renew_leases(&self.settings.instance, &held, now.saturating_add(micros(self.settings.lease))).await {
                tracing::warn!(error = %e, "renewing job leases failed; trying again");
                continue;
            }
            match self.store.requeue_expired(now, None, &self.settings.instance).await {
                Ok(ids) => self.taken_over(ids).await,
                Err(e) => tracing::warn!(error = %e, "looking for jobs whose leases ran out failed; trying again"),
            }
        }
    }

    /// Jobs just queued again in the store (recovered): announced and handed to the dispatcher.
    pub async fn taken_over(&self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        tracing::info!(jobs = ids.len(), "jobs whose leases ran out are queued again");
        for id in ids {
            if let Err(e) = self.requeued(&id).await {
                tracing::warn!(job = %id, error = %e, "a recovered job waits for the next full read of the queue");
            }
        }
        self.wake();
    }

    /// Loads the policies of tenants the core does not know yet (all of them at a reconcile).
    async fn learn_tenants(&self, rows: &[JobRow], all: bool) -> Result<()> {
        let mut unknown: Vec<&str> = {
            let sched = lock(&self.sched);
            rows.iter().map(|r| r.tenant_id.as_str()).filter(|t| all || !sched.core.knows_tenant(t)).collect()
        };
        unknown.sort_unstable();
        unknown.dedup();
        let now = now_micros();
        for id in unknown {
            if let Some(tenant) = self.store.tenant(id).await? {
                self.telemetry.metrics.set_region(id, &tenant.region);
                lock(&self.sched).core.set_tenant(id, policy(&tenant), now);
            }
        }
        Ok(())
    }

    /// A job just queued again in the store: announced and handed to the dispatcher.
    async fn requeued(&self, id: &str) -> Result<()> {
        self.announce(id, JobStatus::Queued);
        if let Some(row) = self.store.job_by_id(id).await? {
            lock(&self.inbox).push(row);
        }
        Ok(())
    }

    /// Retrying jobs whose wait is over: queued again.
    async fn promote_retries(&self, now: i64) -> Result<()> {
        for id in self.store.due_retries(now, 1000).await? {
            if self.store.transition(&id, JobStatus::Retrying, JobStatus::Queued, "retry wait over: queued again", None).await? {
                self.requeued(&id).await?;
            }
        }
        let next = self.store.next_retry_at().await?.unwrap_or(i64::MAX);
        self.next_retry.store(next, Ordering::SeqCst);
        Ok(())
    }

    /// After a store error mid-job: put the job back in the queue so it is not left running.
    /// If the store stays unreachable, the next start recovers it.
    async fn requeue_after_error(&self, job_id: &str) {
        for attempt in 0..5u32 {
            let mut done = false;
            for from in [JobStatus::Running, JobStatus::Admitted] {
                match self.store.transition(job_id, from, JobStatus::Queued, "store error during the run: queued again", None).await {
                    Ok(true) => {
                        if let Err(e) = self.requeued(job_id).await {
                            tracing::warn!(job = %job_id, error = %e, "a requeued job waits for the next full read of the queue");
                        }
                        return;
                    }
                    Ok(false) => done = true,
                    Err(e) => {
                        done = false;
                        tracing::warn!(job = %job_id, error = %e, "requeue failed");
                        break;
                    }
                }
            }
            if done {
                // Neither running nor admitted any more: someone else moved it on.
                return;
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
    }

    fn release(&self, job_id: &str) {
        let mut sched = lock(&self.sched);
        sched.running.remove(job_id);
        sched.core.finish(job_id, now_micros());
        if sched.running.is_empty() {
            self.idle.notify_waiters();
        }
        drop(sched);
        self.wake();
    }

    /// One admitted job: run it under its deadline, commit what it found, record the attempt;
    /// a failure is retried or final by its class.
    /// `riders` are queued jobs this job's execution answers too: committed after it if it
    /// succeeds, queued again otherwise.
    async fn work(self: Arc<Self>, job: JobRow, grant: u64, cancel: Arc<Notify>, riders: Vec<JobRow>) -> Result<()> {
        let mut riders = Riders { pool: &self, jobs: riders };
        let admitted = SystemTime::now();
        let Some(attempt) = self.store.start_running(&job.id, &self.settings.instance, i64::try_from(grant).unwrap_or(i64::MAX)).await? else {
            return Ok(());
        };
        // Every move of the job out of `running` below is this attempt's only while this
        // process still holds the job's lease for it.
        let fence = Fence { owner: &self.settings.instance, attempt };
        let started_at = now_micros();
        self.announce(&job.id, JobStatus::Running);
        let store = self.store.clone();
        let catalogs = Arc::clone(&self.catalogs);
        let input = job.clone();
        let started = std::time::Instant::now();
        let ballista = self.settings.ballista.clone().filter(|_| job.backend == crate::store::BALLISTA);
        if ballista.is_none() && job.backend == crate::store::BALLISTA {
            tracing::warn!(job = %job.id, "queued for the Ballista cluster, but none is configured now: it runs here");
        }
        let execution = self.executor.spawn(async move { execute(&store, &catalogs, &input, grant, ballista).await });
        let abort = execution.abort_handle();
        // Rows from before deadlines existed carry 0: no deadline.
        let deadline = (job.deadline_micros > 0).then(|| Duration::from_micros(job.deadline_micros as u64));
        let mut spans = AttemptSpans {
            attempt,
            grant,
            queued: system_time(job.updated_at),
            admitted,
            planning: None,
            phases: Vec::new(),
            execution: None,
            commit: None,
            end: admitted,
            plan_mode: None,
            peak: None,
            error: None,
        };
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        enum Ended {
            Ran(std::result::Result<Executed, ExecError>),
            Stopped,
            TimedOut,
        }
        let outcome = tokio::select! {
            joined = execution => match joined {
                Ok(result) => Ended::Ran(result),
                Err(e) => Ended::Ran(Err(ExecError::Internal(format!("the execution task ended: {e}")))),
            },
            () = cancel.notified() => {
                abort.abort();
                Ended::Stopped
            }
            () = timer => {
                abort.abort();
                Ended::TimedOut
            }
        };
        match outcome {
            Ended::Stopped => {
                if self.stopping.load(Ordering::SeqCst) {
                    // Shutting down: the job goes back to the queue for the next start.
                    self.store.finish_attempt(&job.id, attempt, &AttemptOutcome { outcome: "interrupted".into(), ..Default::default() }).await?;
                    if self.store.end_attempt(&job.id, fence, JobStatus::Queued, "shutdown: queued again", None).await? {
                        self.announce(&job.id, JobStatus::Queued);
                    }
                } else {
                    self.store.finish_attempt(&job.id, attempt, &AttemptOutcome { outcome: "cancelled".into(), ..Default::default() }).await?;
                    if self.store.end_attempt(&job.id, fence, JobStatus::Cancelled, "cancelled by request", None).await? {
                        self.settle(&job, JobStatus::Cancelled);
                        self.record_attempt(&job, &mut spans, started.elapsed(), false);
                        self.ended(&job, "cancelled", None);
                    }
                }
            }
            Ended::TimedOut => {
                let limit = deadline.unwrap_or_default();
                let message = format!("ran past its deadline of {:.3} s and was stopped", limit.as_secs_f64());
                let measured = AttemptOutcome {
                    outcome: "failed".into(),
                    error_class: Some("timeout".into()),
                    error_message: Some(message.clone()),
                    elapsed_micros: Some(micros(started.elapsed())),
                    data_quality: self.probe(&job, grant).await,
                    ..Default::default()
                };
                self.store.finish_attempt(&job.id, attempt, &measured).await?;
                spans.error = Some(("timeout".into(), message.clone()));
                self.record_attempt(&job, &mut spans, started.elapsed(), false);
                if self.store.end_attempt(&job.id, fence, JobStatus::Failed, &message, Some(("timeout", &message))).await? {
                    self.settle(&job, JobStatus::Failed);
                    self.ended(&job, "failed", Some(("timeout", &message)));
                }
            }
            Ended::Ran(Ok(Executed { report, began, run_began })) => {
                let mut measured = measured(&report);
                measured.outcome = "succeeded".into();
                let planned = run_began + report.planned;
                spans.planning = Some((began, planned));
                spans.execution = Some((planned, run_began + report.elapsed));
                spans.phases = report
                    .phases
                    .iter()
                    .map(|p| PhaseSpan { place: p.place.clone(), start: run_began + p.started, end: run_began + p.started + p.elapsed, rows: p.rows as u64 })
                    .collect();
                spans.plan_mode = Some(report.plan_mode.to_string());
                spans.peak = Some(report.peak_memory_bytes as u64);
                let commit_began = SystemTime::now();
                let committed = self.commit(&job, fence, report.members, report.key_type.name()).await?;
                spans.commit = Some((commit_began, SystemTime::now()));
                if let Committed::Refused(why) = &committed {
                    // What it found is not the run's: another attempt's commit is (or none).
                    measured.outcome = "superseded".into();
                    measured.error_message = Some(why.clone());
                }
                self.store.finish_attempt(&job.id, attempt, &measured).await?;
                self.record_attempt(&job, &mut spans, started.elapsed(), false);
                if let Committed::Run { members, files } = committed {
                    self.settle(&job, JobStatus::Succeeded);
                    self.ended(&job, "succeeded", None);
                    let leader = Commit {
                        job_id: &job.id,
                        tenant_id: &job.tenant_id,
                        segment_id: &job.segment_id,
                        previous_run_id: "",
                        members,
                        added: 0,
                        removed: 0,
                        key_type: report.key_type.name(),
                        attempt,
                        owner: &self.settings.instance,
                        files: &files,
                    };
                    riders.commit(&leader, started_at).await?;
                }
            }
            Ended::Ran(Err(failure)) => {
                let (class, message) = failure.describe();
                spans.error = Some((class.clone(), message));
                self.record_attempt(&job, &mut spans, started.elapsed(), class == "resources_exhausted");
                self.failed(&job, fence, grant, &failure, started.elapsed()).await?;
            }
        }
        if let Some(learner) = self.learner.get() {
            learner.finished();
        }
        Ok(())
    }

    /// Reports an attempt that ended: its duration and memory to the metrics, its spans to
    /// the job's trace.
    fn record_attempt(&self, job: &JobRow, spans: &mut AttemptSpans, elapsed: Duration, under_grant: bool) {
        spans.end = SystemTime::now();
        self.telemetry.metrics.attempt(&job.tenant_id, elapsed, spans.grant, spans.peak, under_grant);
        self.telemetry.traces.attempt(&self.labels(job), spans);
    }

    /// Measures the data a failed attempt read (a sample of its key fields) for triage: JSON
    /// findings, `None` when it could not be measured within [`PROBE_TIME`].
    async fn probe(&self, job: &JobRow, grant: u64) -> Option<String> {
        // The probe runs in the job's name while its grant is still held (its attempt's memory
        // is free again), with what the budget can lend it besides: within the budget.
        let limit = lock(&self.sched).core.lend(&job.id, PROBE_MEMORY.max(grant));
        let limit = if limit == 0 { grant } else { limit };
        let options = ProbeOptions { memory_limit_bytes: usize::try_from(limit).unwrap_or(usize::MAX), ..ProbeOptions::default() };
        let store = self.store.clone();
        let catalogs = Arc::clone(&self.catalogs);
        let (tenant, segment) = (job.tenant_id.clone(), job.segment_id.clone());
        let probe = self.executor.spawn(async move {
            let (catalog, segment) = prepare(&store, &catalogs, &tenant, &segment).await.map_err(|e| e.describe().1)?;
            probe_data(&catalog, &segment, &options).await.map_err(|e| e.to_string())
        });
        let abort = probe.abort_handle();
        match tokio::time::timeout(PROBE_TIME, probe).await {
            Ok(Ok(Ok(findings))) => serde_json::to_string(&findings).ok(),
            Ok(Ok(Err(why))) => {
                tracing::debug!(job = %job.id, error = %why, "data probe failed");
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(job = %job.id, error = %e, "data probe task ended");
                None
            }
            Err(_) => {
                abort.abort();
                tracing::debug!(job = %job.id, "data probe ran out of time");
                None
            }
        }
    }

    /// Records a failed attempt and retries the job or fails it, by the failure's class.
    async fn failed(&self, job: &JobRow, fence: Fence<'_>, grant: u64, failure: &ExecError, elapsed: Duration) -> Result<()> {
        let attempt = fence.attempt;
        let (class, message) = failure.describe();
        let probed = if PROBED_CLASSES.contains(&class.as_str()) { self.probe(job, grant).await } else { None };
        let measured = AttemptOutcome {
            outcome: "failed".into(),
            error_class: Some(class.clone()),
            error_message: Some(message.clone()),
            elapsed_micros: Some(micros(elapsed)),
            data_quality: probed,
            ..Default::default()
        };
        self.store.finish_attempt(&job.id, attempt, &measured).await?;
        let transient = if TRANSIENT_CLASSES.contains(&class.as_str()) {
            u32::try_from(self.store.failed_attempts(&job.id, TRANSIENT_CLASSES).await?).unwrap_or(u32::MAX)
        } else {
            0
        };
        let cap = lock(&self.sched).core.grant_cap(&job.tenant_id);
        let now = now_micros();
        let (not_before, next_grant, detail) = match self.settings.retry.decide(&class, grant, cap, transient, rand::random::<f64>()) {
            Retry::Larger(larger) => (now, larger, format!("attempt {attempt} ran out of its {grant}-byte grant: retrying at once with {larger} bytes")),
            Retry::After(wait) => {
                (now.saturating_add(micros(wait)), grant, format!("attempt {attempt} failed ({class}): retrying in {:.3} s", wait.as_secs_f64()))
            }
            Retry::No(why) => {
                let detail = format!("attempt {attempt} failed: {why}");
                if self.store.end_attempt(&job.id, fence, JobStatus::Failed, &detail, Some((&class, &message))).await? {
                    self.settle(job, JobStatus::Failed);
                    self.ended(job, "failed", Some((&class, &message)));
                }
                return Ok(());
            }
        };
        if self.store.retry(&job.id, fence, (&class, &message), not_before, i64::try_from(next_grant).unwrap_or(i64::MAX), &detail).await? {
            self.settle(job, JobStatus::Retrying);
            self.telemetry.metrics.retried(&job.tenant_id, &class);
            self.next_retry.fetch_min(not_before, Ordering::SeqCst);
            self.wake();
        }
        Ok(())
    }

    /// Writes the attempt's files and commits the run with them, if this process still holds
    /// the job's lease for this attempt; retries the diff if another run of the same segment
    /// committed meanwhile.
    async fn commit(&self, job: &JobRow, fence: Fence<'_>, mut members: Vec<String>, key_type: &str) -> Result<Committed> {
        members.sort_unstable();
        members.dedup();
        let members = Arc::new(members);
        let own = attempt_files(&job.id, fence.attempt);
        let refused = |why: String| {
            // Files no commit names: never read, deleted here.
            self.files.forget_attempt(&job.tenant_id, &job.segment_id, &own);
            Ok(Committed::Refused(why))
        };
        let mut previous = match self.store.segment(&job.tenant_id, &job.segment_id).await? {
            Some(s) => s.latest_run_id,
            None => return self.fail_commit(job, fence, "the segment was deleted while it ran").await,
        };
        for _ in 0..16 {
            // The files of the latest run, as its history record names them.
            let previous_files = match previous.as_str() {
                "" => String::new(),
                run => match self.store.run(&job.tenant_id, run).await? {
                    Some(r) => r.files,
                    None => return Err(Error::Internal(format!("the latest run {run} has no history record"))),
                },
            };
            let files = self.files.clone();
            let (tenant, segment, name, prev, current) =
                (job.tenant_id.clone(), job.segment_id.clone(), own.clone(), previous_files.clone(), Arc::clone(&members));
            let written = tokio::task::spawn_blocking(move || -> Result<(i64, i64)> {
                let before = files.read_members(&tenant, &segment, &prev)?;
                let (added, removed) = diff(&before, &current);
                files.write_run(&tenant, &segment, &name, &current, &added, &removed)?;
                Ok((added.len() as i64, removed.len() as i64))
            })
            .await
            .map_err(|e| Error::Internal(format!("membership writer: {e}")))?;
            let (added, removed) = match written {
                Ok(counts) => counts,
                Err(e) => {
                    // The run read as latest may have been replaced (and its file deleted)
                    // meanwhile: diff against the new latest. Otherwise the error stands.
                    let latest = self.store.segment(&job.tenant_id, &job.segment_id).await?.map(|s| s.latest_run_id);
                    match latest {
                        Some(latest) if latest != previous => {
                            previous = latest;
                            continue;
                        }
                        Some(_) => return Err(e),
                        None => return self.fail_commit(job, fence, "the segment was deleted while it ran").await,
                    }
                }
            };
            let commit = Commit {
                job_id: &job.id,
                tenant_id: &job.tenant_id,
                segment_id: &job.segment_id,
                previous_run_id: &previous,
                members: members.len() as i64,
                added,
                removed,
                key_type,
                attempt: fence.attempt,
                owner: fence.owner,
                files: &own,
            };
            match self.store.commit_run(&commit).await? {
                CommitResult::Committed => {
                    // The members of the run replaced stay for readers that pinned it (until
                    // the next commit); the generation before it goes.
                    if let Some(older) = self.store.files_before(&job.tenant_id, &job.segment_id, &job.id, &previous_files).await? {
                        self.files.forget_members(&job.tenant_id, &job.segment_id, &older);
                    }
                    return Ok(Committed::Run { members: members.len() as i64, files: own });
                }
                CommitResult::LatestMoved(_) => {
                    previous = match self.store.segment(&job.tenant_id, &job.segment_id).await? {
                        Some(s) => s.latest_run_id,
                        None => return self.fail_commit(job, fence, "the segment was deleted while it ran").await,
                    };
                }
                CommitResult::NotRunning => return refused("not committed: the job was no longer running".into()),
                CommitResult::AlreadyCommitted => return refused("not committed: another attempt's run was committed".into()),
                CommitResult::Superseded => {
                    tracing::warn!(job = %job.id, attempt = fence.attempt, "this attempt's lease ran out and another attempt runs the job: nothing committed");
                    return refused(format!("not committed: the lease of process {} ran out and another attempt runs the job", fence.owner));
                }
            }
        }
        self.fail_commit(job, fence, "the segment's latest run kept changing; the commit gave up").await
    }

    async fn fail_commit(&self, job: &JobRow, fence: Fence<'_>, why: &str) -> Result<Committed> {
        self.files.forget_attempt(&job.tenant_id, &job.segment_id, &attempt_files(&job.id, fence.attempt));
        if self.store.end_attempt(&job.id, fence, JobStatus::Failed, why, Some(("commit", why))).await? {
            self.settle(job, JobStatus::Failed);
            self.ended(job, "failed", Some(("commit", why)));
        }
        Ok(Committed::Failed)
    }

    /// Stops admitting; waits up to `grace` for running jobs, then interrupts the rest, which
    /// go back to the queue.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let idle = self.idle.notified();
            if lock(&self.sched).running.is_empty() {
                return;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                break;
            }
        }
        let ids: Vec<String> = lock(&self.sched).running.keys().cloned().collect();
        tracing::info!(jobs = ids.len(), "grace period over: interrupting running jobs, they are queued again");
        for id in &ids {
            self.cancel(id);
        }
        loop {
            let idle = self.idle.notified();
            if lock(&self.sched).running.is_empty() {
                return;
            }
            if tokio::time::timeout(Duration::from_secs(10), idle).await.is_err() {
                return;
            }
        }
    }
}

/// How an attempt's commit ended.
#[derive(Debug)]
enum Committed {
    /// The run is committed with this many members, in the attempt's files of this name.
    Run { members: i64, files: String },
    /// Nothing committed, and the job is not this attempt's to end (why, in words).
    Refused(String),
    /// Nothing committed: the job failed (or was no longer this attempt's to fail).
    Failed,
}

/// The jobs riding on one execution. Whatever does not commit them (a failure, an
/// interruption, an error of the store) queues them again when this is dropped.
struct Riders<'a> {
    pool: &'a Pool,
    jobs: Vec<JobRow>,
}

impl Riders<'_> {
    /// Commits the riders after `leader`'s run (started at `started_at`) committed.
    async fn commit(&mut self, leader: &Commit<'_>, started_at: i64) -> Result<()> {
        if self.jobs.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = self.jobs.iter().map(|j| j.id.as_str()).collect();
        // Their history records name the leader's files: the last one, the latest run now,
        // has its members file.
        let (committed, finished_at) = self.pool.store.commit_riders(leader, started_at, &ids).await?;
        let committed: HashSet<String> = committed.into_iter().collect();
        if committed.is_empty() {
            // Still queued in the store: dropping `self` queues them here again.
            return Ok(());
        }
        let jobs = std::mem::take(&mut self.jobs);
        let mut sched = lock(&self.pool.sched);
        for job in &jobs {
            sched.riding.remove(&job.id);
        }
        drop(sched);
        let waited_from = started_at;
        for job in jobs.iter().filter(|j| committed.contains(&j.id)) {
            let wait = Duration::from_micros(u64::try_from(waited_from - job.updated_at).unwrap_or(0));
            self.pool.telemetry.metrics.admitted(&job.tenant_id, wait);
            // A rider adds nothing the estimator learns from: announced without a new read.
            let _ = self.pool.events.send(JobEvent { job_id: job.id.clone(), status: JobStatus::Succeeded, succeeded: Succeeded::of(job, finished_at) });
            self.pool.ended(job, "succeeded", None);
        }
        Ok(())
    }
}

impl Drop for Riders<'_> {
    fn drop(&mut self) {
        if !self.jobs.is_empty() {
            lock(&self.pool.sched).unride(std::mem::take(&mut self.jobs), now_micros());
            self.pool.wake();
        }
    }
}

/// Why an execution failed.
#[derive(Debug)]
pub enum ExecError {
    /// The executor refused or failed.
    Executor(cohort_executor::Error),
    /// The job's tenant, model or segment is gone or unusable.
    Missing(String),
    /// The store failed while the job was set up (may pass by itself).
    Store(String),
    /// A bug.
    Internal(String),
}

impl ExecError {
    /// The failure's class and message, as stored.
    pub fn describe(&self) -> (String, String) {
        match self {
            ExecError::Executor(e) => {
                let class = serde_json::to_value(e.class()).ok().and_then(|v| v.as_str().map(String::from));
                (class.unwrap_or_else(|| "execution".into()), e.to_string())
            }
            ExecError::Missing(m) => ("invalid".into(), m.clone()),
            ExecError::Store(m) => ("store".into(), m.clone()),
            ExecError::Internal(m) => ("internal".into(), m.clone()),
        }
    }
}

impl From<Error> for ExecError {
    fn from(e: Error) -> Self {
        match e {
            Error::Store(_) => ExecError::Store(e.to_string()),
            other => ExecError::Internal(other.to_string()),
        }
    }
}

/// Loaded catalogs, one per tenant, reused while the tenant's model version and the files
/// under its sources are unchanged. Loading a catalog reads every source's metadata (Parquet
/// footers); for small jobs that is most of the work, so each run of an unchanged tenant
/// skips it. The files are checked at every run (names, sizes, modification times): data
/// that grows or changes between runs is loaded again.
#[derive(Debug, Default)]
pub struct Catalogs {
    loaded: std::sync::Mutex<HashMap<String, CachedCatalog>>,
}

/// A tenant's catalog with the model version and file fingerprint it was loaded for.
type CachedCatalog = (i64, u64, Arc<Catalog>);

impl Catalogs {
    /// The catalog of `model` (version `version` of `tenant`'s), loaded or reused.
    pub async fn get(&self, tenant: &str, version: i64, model: Model) -> std::result::Result<Arc<Catalog>, ExecError> {
        let files = fingerprint(&model);
        if let Some((v, f, catalog)) = lock(&self.loaded).get(tenant)
            && *v == version
            && *f == files
        {
            return Ok(Arc::clone(catalog));
        }
        let catalog = Arc::new(Catalog::load(model, &SessionContext::new()).await.map_err(ExecError::Executor)?);
        lock(&self.loaded).insert(tenant.to_string(), (version, files, Arc::clone(&catalog)));
        Ok(catalog)
    }
}

/// A hash of the names, sizes and modification times of every file under the model's sources.
fn fingerprint(model: &Model) -> u64 {
    use std::hash::{Hash, Hasher};
    fn walk(path: &Path, h: &mut std::collections::hash_map::DefaultHasher, depth: u32) {
        path.hash(h);
        match std::fs::metadata(path) {
            Ok(m) => {
                m.len().hash(h);
                m.modified().ok().hash(h);
                if m.is_dir() && depth > 0 {
                    let mut entries: Vec<std::path::PathBuf> = std::fs::read_dir(path).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
                    entries.sort();
                    for entry in entries {
                        walk(&entry, h, depth - 1);
                    }
                }
            }
            Err(_) => 0u8.hash(h),
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for object in &model.objects {
        let path = object.source.path.as_str();
        // A glob's files live under the folder before its first pattern character.
        let base = match path.find(['*', '?', '[']) {
            Some(i) if path[..i].ends_with('/') => Path::new(&path[..i]).to_path_buf(),
            Some(i) => Path::new(&path[..i]).parent().map(Path::to_path_buf).unwrap_or_default(),
            None => Path::new(path).to_path_buf(),
        };
        walk(&model.base_dir.join(base), &mut h, 16);
    }
    h.finish()
}

/// Loads a tenant's catalog (or reuses it) and checks the segment against it.
async fn prepare(store: &Store, catalogs: &Catalogs, tenant_id: &str, segment_id: &str) -> std::result::Result<(Arc<Catalog>, Segment), ExecError> {
    let tenant = store.tenant(tenant_id).await?.ok_or_else(|| ExecError::Missing("the tenant was deleted".into()))?;
    let model_row = store.model(tenant_id).await?.ok_or_else(|| ExecError::Missing("the tenant has no model".into()))?;
    let segment_row = store.segment(tenant_id, segment_id).await?.ok_or_else(|| ExecError::Missing(format!("segment {segment_id:?} was deleted")))?;
    prepare_rows(catalogs, &tenant, &model_row, &segment_row).await
}

/// [`prepare`] from rows already read.
async fn prepare_rows(
    catalogs: &Catalogs,
    tenant: &Tenant,
    model_row: &ModelRow,
    segment_row: &SegmentRow,
) -> std::result::Result<(Arc<Catalog>, Segment), ExecError> {
    let root = Path::new(&tenant.data_root);
    let model = Model::from_json(&model_row.definition, root).and_then(|m| m.confined_to(root)).map_err(ExecError::Executor)?;
    let catalog = catalogs.get(&tenant.id, model_row.version, model).await?;
    let segment = Segment::from_json(&segment_row.definition, &catalog).map_err(ExecError::Executor)?;
    Ok((catalog, segment))
}

/// A run and when its parts began (for the job's trace).
#[derive(Debug)]
struct Executed {
    report: RunReport,
    /// Loading the model and segment began.
    began: SystemTime,
    /// The executor's run began (its report's offsets count from here).
    run_began: SystemTime,
}

/// Loads the job's tenant, model and segment and evaluates it under `grant` bytes, here or
/// on the Ballista cluster at `ballista`.
async fn execute(
    store: &Store,
    catalogs: &Catalogs,
    job: &JobRow,
    grant: u64,
    ballista: Option<cohort_executor::BallistaUrl>,
) -> std::result::Result<Executed, ExecError> {
    let began = SystemTime::now();
    let (catalog, segment) = prepare(store, catalogs, &job.tenant_id, &job.segment_id).await?;
    let mut options = run_options(&catalog, job.as_of);
    options.memory_limit_bytes = Some(usize::try_from(grant).unwrap_or(usize::MAX));
    options.ballista = ballista;
    let run_began = SystemTime::now();
    let report = run_segment(&catalog, &segment, &options).await.map_err(ExecError::Executor)?;
    Ok(Executed { report, began, run_began })
}

/// Locks a mutex; a panic while it was held leaves state that is still consistent.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A tenant's limits as the core applies them. The token bucket holds a tenth of a minute's
/// jobs (at least one).
pub fn policy(t: &Tenant) -> TenantPolicy {
    let per_minute = t.jobs_per_minute.max(1) as f64;
    TenantPolicy {
        max_concurrent: u32::try_from(t.max_concurrent_jobs.max(1)).unwrap_or(u32::MAX),
        memory_quota: u64::try_from(t.memory_quota_bytes).ok().filter(|q| *q > 0).unwrap_or(u64::MAX),
        jobs_per_minute: per_minute,
        burst: (per_minute / 10.0).max(1.0),
        weight: if t.share > 0.0 { t.share } else { 1.0 },
    }
}

fn core_job(row: &JobRow) -> CoreJob {
    CoreJob {
        id: row.id.clone(),
        tenant: row.tenant_id.clone(),
        grant: row.grant_bytes.max(0) as u64,
        expected_runtime: if row.expected_micros > 0 { row.expected_micros } else { 1_000_000 },
        submitted: row.created_at,
        kind: if row.trigger == "schedule" { Kind::Scheduled } else { Kind::OnDemand },
    }
}

/// A job id made `slack` microseconds before the time in `id` ('' stays '').
fn id_before(id: &str, slack: i64) -> String {
    let Some(time) = id.strip_prefix("run_").and_then(|rest| rest.get(..14)).and_then(|hex| i64::from_str_radix(hex, 16).ok()) else {
        return String::new();
    };
    format!("run_{:014x}", (time - slack).max(0))
}

fn measured(report: &RunReport) -> AttemptOutcome {
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    AttemptOutcome {
        outcome: String::new(),
        error_class: None,
        error_message: None,
        peak_memory_bytes: Some(as_i64(report.peak_memory_bytes as u64)),
        elapsed_micros: Some(as_i64(report.elapsed.as_micros() as u64)),
        rows_scanned: Some(as_i64(report.rows_scanned)),
        bytes_scanned: Some(as_i64(report.bytes_scanned)),
        spill_count: Some(as_i64(report.spill_count as u64)),
        plan_mode: Some(format!("{:?}", report.plan_mode).to_lowercase()),
        shape: Some([report.shape.objects as i64, report.shape.joins as i64, report.shape.related_predicates as i64, report.shape.max_hops as i64]),
        data_quality: None,
        phases: (!report.phases.is_empty())
            .then(|| {
                let phases: Vec<serde_json::Value> = report
                    .phases
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "place": p.place,
                            "rows": p.rows,
                            "started_ms": p.started.as_secs_f64() * 1e3,
                            "elapsed_ms": p.elapsed.as_secs_f64() * 1e3,
                        })
                    })
                    .collect();
                serde_json::to_string(&phases).ok()
            })
            .flatten(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_fingerprint_follows_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events = dir.path().join("events");
        std::fs::create_dir_all(&events).expect("dir");
        std::fs::write(events.join("a.parquet"), b"one").expect("write");
        let model = Model::from_json(
            r#"{"objects": [{"name": "e", "primary_key": "id", "source": {"format": "parquet", "path": "events/"}},
                            {"name": "g", "primary_key": "id", "source": {"format": "parquet", "path": "events/*.parquet"}}]}"#,
            dir.path(),
        )
        .expect("model");
        let first = fingerprint(&model);
        assert_eq!(fingerprint(&model), first, "nothing changed");
        std::fs::write(events.join("b.parquet"), b"two").expect("write");
        let grown = fingerprint(&model);
        assert_ne!(grown, first, "a new file");
        std::fs::write(events.join("b.parquet"), b"three").expect("write");
        assert_ne!(fingerprint(&model), grown, "a rewritten file");
    }

    #[test]
    fn the_size_rule_has_a_floor_and_a_cap() {
        let rule = SizeRule { min_bytes: 64 << 20, per_source_byte: 4.0, max_bytes: 1 << 30 };
        assert_eq!(rule.size(&SizingInput { source_bytes: 0, objects: 1 }).memory_bytes, 64 << 20);
        assert_eq!(rule.size(&SizingInput { source_bytes: 1 << 20, objects: 1 }).memory_bytes, (64 << 20) + (4 << 20));
        assert_eq!(rule.size(&SizingInput { source_bytes: u64::MAX, objects: 1 }).memory_bytes, 1 << 30);
    }
}
