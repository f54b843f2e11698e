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
use crate::scheduler::{Core, CoreConfig, Job as CoreJob, Kind, Wait};
use crate::storage::StorageConfig;
use crate::store::{AttemptOutcome, Commit, CommitResult, Fence, JobEstimate, JobRow, ModelRow, SegmentRow, SnapshotView, Store, Tenant};
use crate::traces::{AttemptSpans, JobLabels, PhaseSpan, system_time};
use crate::{Error, Result, Telemetry, now_micros, rfc3339};

mod attempt;
mod catalog;
mod leases;
mod riders;

use crate::policy::*;
pub use attempt::*;
pub use catalog::*;
use riders::*;

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

/// Locks a mutex; a panic while it was held leaves state that is still consistent.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
