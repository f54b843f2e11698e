//! The executor pool: worker slots and a memory budget, fed from the store.
//!
//! Jobs wait in the store. The dispatcher wakes when a job is submitted or finishes (and on a
//! slow backstop tick), reads the oldest queued jobs, and admits each that fits: a free slot
//! and a grant within the budget left. Admission is a committed transition; so is every step
//! after it. Execution happens on a runtime of its own, so segment evaluation never stalls
//! the HTTP server.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cohort_executor::{Catalog, Model, RunOptions, RunReport, Segment, run_segment};
use datafusion::prelude::SessionContext;
use tokio::sync::{Notify, broadcast};

use crate::jobs::JobStatus;
use crate::membership::{MembershipFiles, diff};
use crate::store::{AttemptOutcome, Commit, CommitResult, JobRow, Store};
use crate::{Error, Result};

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

/// A change of a job's status, for whoever waits on it.
#[derive(Debug, Clone)]
pub struct JobEvent {
    /// The job.
    pub job_id: String,
    /// Its new status.
    pub status: JobStatus,
}

#[derive(Debug)]
struct Running {
    grant: u64,
    cancel: Arc<Notify>,
}

#[derive(Debug, Default)]
struct State {
    running: HashMap<String, Running>,
    used: u64,
}

/// The pool. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Pool {
    store: Store,
    files: MembershipFiles,
    slots: usize,
    budget: u64,
    state: std::sync::Mutex<State>,
    wake: Notify,
    idle: Notify,
    stopping: AtomicBool,
    events: broadcast::Sender<JobEvent>,
    executor: tokio::runtime::Handle,
    poll: Duration,
}

impl Pool {
    /// A pool of `slots` workers and `budget` bytes, running jobs on `executor`.
    pub fn new(store: Store, files: MembershipFiles, slots: usize, budget: u64, executor: tokio::runtime::Handle, poll: Duration) -> Arc<Pool> {
        let (events, _) = broadcast::channel(4096);
        Arc::new(Pool {
            store,
            files,
            slots: slots.max(1),
            budget,
            state: std::sync::Mutex::new(State::default()),
            wake: Notify::new(),
            idle: Notify::new(),
            stopping: AtomicBool::new(false),
            events,
            executor,
            poll,
        })
    }

    /// Job status changes as they are committed.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    /// Tells the dispatcher to look at the store.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Announces a committed status change.
    pub fn announce(&self, job_id: &str, status: JobStatus) {
        let _ = self.events.send(JobEvent { job_id: job_id.to_string(), status });
    }

    /// Slots in use, memory granted to running jobs.
    pub fn usage(&self) -> (usize, u64) {
        let state = self.lock();
        (state.running.len(), state.used)
    }

    /// Worker slots and memory budget.
    pub fn capacity(&self) -> (usize, u64) {
        (self.slots, self.budget)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves counts that are still consistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks a running job to stop; true if it was running here.
    pub fn cancel(&self, job_id: &str) -> bool {
        let state = self.lock();
        match state.running.get(job_id) {
            Some(r) => {
                r.cancel.notify_one();
                true
            }
            None => false,
        }
    }

    /// Admits jobs until stopped.
    pub async fn dispatch(self: Arc<Self>) {
        while !self.stopping.load(Ordering::SeqCst) {
            match self.admit_round().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "admission failed; trying again"),
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// One pass over the queue; true if anything was admitted.
    async fn admit_round(self: &Arc<Self>) -> Result<bool> {
        let (free, left) = {
            let state = self.lock();
            (self.slots.saturating_sub(state.running.len()), self.budget.saturating_sub(state.used))
        };
        if free == 0 {
            return Ok(false);
        }
        let queued = self.store.queued_jobs((free as i64).saturating_mul(4).max(16)).await?;
        let (mut free, mut left) = (free, left);
        let mut admitted = false;
        for job in queued {
            if free == 0 || self.stopping.load(Ordering::SeqCst) {
                break;
            }
            let grant = (job.grant_bytes.max(0) as u64).min(self.budget);
            if grant > left {
                continue;
            }
            if !self.store.transition(&job.id, JobStatus::Queued, JobStatus::Admitted, "slot and memory granted", None).await? {
                continue;
            }
            let cancel = Arc::new(Notify::new());
            {
                let mut state = self.lock();
                state.used += grant;
                state.running.insert(job.id.clone(), Running { grant, cancel: Arc::clone(&cancel) });
            }
            self.announce(&job.id, JobStatus::Admitted);
            free -= 1;
            left -= grant;
            admitted = true;
            let pool = Arc::clone(self);
            tokio::spawn(async move {
                let id = job.id.clone();
                if let Err(e) = Arc::clone(&pool).work(job, grant, cancel).await {
                    tracing::error!(job = %id, error = %e, "job bookkeeping failed; queuing the job again");
                    pool.requeue_after_error(&id).await;
                }
                pool.release(&id);
            });
        }
        Ok(admitted)
    }

    /// After a store error mid-job: put the job back in the queue so it is not left running.
    /// If the store stays unreachable, the next start recovers it.
    async fn requeue_after_error(&self, job_id: &str) {
        for attempt in 0..5u32 {
            let mut done = false;
            for from in [JobStatus::Running, JobStatus::Admitted] {
                match self.store.transition(job_id, from, JobStatus::Queued, "store error during the run: queued again", None).await {
                    Ok(true) => {
                        self.announce(job_id, JobStatus::Queued);
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
        let mut state = self.lock();
        if let Some(r) = state.running.remove(job_id) {
            state.used = state.used.saturating_sub(r.grant);
        }
        if state.running.is_empty() {
            self.idle.notify_waiters();
        }
        drop(state);
        self.wake();
    }

    /// One admitted job: run it, commit what it found, record the attempt.
    async fn work(self: Arc<Self>, job: JobRow, grant: u64, cancel: Arc<Notify>) -> Result<()> {
        if !self.store.transition(&job.id, JobStatus::Admitted, JobStatus::Running, "started", None).await? {
            return Ok(());
        }
        self.announce(&job.id, JobStatus::Running);
        let attempt = job.attempts + 1;
        self.store.start_attempt(&job.id, attempt, grant as i64).await?;
        let store = self.store.clone();
        let input = job.clone();
        let execution = self.executor.spawn(async move { execute(&store, &input, grant).await });
        let abort = execution.abort_handle();
        let outcome = tokio::select! {
            joined = execution => match joined {
                Ok(result) => Some(result),
                Err(e) => Some(Err(ExecError::Internal(format!("the execution task ended: {e}")))),
            },
            () = cancel.notified() => {
                abort.abort();
                None
            }
        };
        match outcome {
            None => {
                if self.stopping.load(Ordering::SeqCst) {
                    // Shutting down: the job goes back to the queue for the next start.
                    self.store.finish_attempt(&job.id, attempt, &AttemptOutcome { outcome: "interrupted".into(), ..Default::default() }).await?;
                    if self.store.transition(&job.id, JobStatus::Running, JobStatus::Queued, "shutdown: queued again", None).await? {
                        self.announce(&job.id, JobStatus::Queued);
                    }
                } else {
                    self.store.finish_attempt(&job.id, attempt, &AttemptOutcome { outcome: "cancelled".into(), ..Default::default() }).await?;
                    if self.store.transition(&job.id, JobStatus::Running, JobStatus::Cancelled, "cancelled by request", None).await? {
                        self.announce(&job.id, JobStatus::Cancelled);
                    }
                }
            }
            Some(Ok(report)) => {
                let mut measured = measured(&report);
                measured.outcome = "succeeded".into();
                let committed = self.commit(&job, report.members, report.key_type.name()).await?;
                self.store.finish_attempt(&job.id, attempt, &measured).await?;
                if committed {
                    self.announce(&job.id, JobStatus::Succeeded);
                }
            }
            Some(Err(failure)) => {
                let (class, message) = failure.describe();
                let measured = AttemptOutcome {
                    outcome: "failed".into(),
                    error_class: Some(class.clone()),
                    error_message: Some(message.clone()),
                    ..Default::default()
                };
                self.store.finish_attempt(&job.id, attempt, &measured).await?;
                if self.store.transition(&job.id, JobStatus::Running, JobStatus::Failed, "failed", Some((&class, &message))).await? {
                    self.announce(&job.id, JobStatus::Failed);
                }
            }
        }
        Ok(())
    }

    /// Writes the run's files and commits it; retries the diff if another run of the same
    /// segment committed meanwhile. False if the job was no longer running.
    async fn commit(&self, job: &JobRow, mut members: Vec<String>, key_type: &str) -> Result<bool> {
        members.sort_unstable();
        members.dedup();
        let members = Arc::new(members);
        let mut previous = match self.store.segment(&job.tenant_id, &job.segment_id).await? {
            Some(s) => s.latest_run_id,
            None => return self.fail_commit(job, "the segment was deleted while it ran").await,
        };
        for _ in 0..16 {
            let files = self.files.clone();
            let (tenant, segment, run, prev, current) =
                (job.tenant_id.clone(), job.segment_id.clone(), job.id.clone(), previous.clone(), Arc::clone(&members));
            let (added, removed) = tokio::task::spawn_blocking(move || -> Result<(i64, i64)> {
                let before = files.read_members(&tenant, &segment, &prev)?;
                let (added, removed) = diff(&before, &current);
                files.write_run(&tenant, &segment, &run, &current, &added, &removed)?;
                Ok((added.len() as i64, removed.len() as i64))
            })
            .await
            .map_err(|e| Error::Internal(format!("membership writer: {e}")))??;
            let commit = Commit {
                job_id: &job.id,
                tenant_id: &job.tenant_id,
                segment_id: &job.segment_id,
                previous_run_id: &previous,
                members: members.len() as i64,
                added,
                removed,
                key_type,
            };
            match self.store.commit_run(&commit).await? {
                CommitResult::Committed => {
                    self.files.forget_members(&job.tenant_id, &job.segment_id, &previous);
                    return Ok(true);
                }
                CommitResult::LatestMoved(_) => {
                    previous = match self.store.segment(&job.tenant_id, &job.segment_id).await? {
                        Some(s) => s.latest_run_id,
                        None => return self.fail_commit(job, "the segment was deleted while it ran").await,
                    };
                }
                CommitResult::NotRunning | CommitResult::AlreadyCommitted => return Ok(false),
            }
        }
        self.fail_commit(job, "the segment's latest run kept changing; the commit gave up").await
    }

    async fn fail_commit(&self, job: &JobRow, why: &str) -> Result<bool> {
        if self.store.transition(&job.id, JobStatus::Running, JobStatus::Failed, why, Some(("commit", why))).await? {
            self.announce(&job.id, JobStatus::Failed);
        }
        Ok(false)
    }

    /// Stops admitting; waits up to `grace` for running jobs, then interrupts the rest, which
    /// go back to the queue.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let idle = self.idle.notified();
            if self.lock().running.is_empty() {
                return;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                break;
            }
        }
        let ids: Vec<String> = self.lock().running.keys().cloned().collect();
        tracing::info!(jobs = ids.len(), "grace period over: interrupting running jobs, they are queued again");
        for id in &ids {
            self.cancel(id);
        }
        loop {
            let idle = self.idle.notified();
            if self.lock().running.is_empty() {
                return;
            }
            if tokio::time::timeout(Duration::from_secs(10), idle).await.is_err() {
                return;
            }
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
            ExecError::Internal(m) => ("internal".into(), m.clone()),
        }
    }
}

impl From<Error> for ExecError {
    fn from(e: Error) -> Self {
        ExecError::Internal(e.to_string())
    }
}

/// Loads the job's tenant, model and segment and evaluates it under `grant` bytes.
async fn execute(store: &Store, job: &JobRow, grant: u64) -> std::result::Result<RunReport, ExecError> {
    let tenant = store.tenant(&job.tenant_id).await?.ok_or_else(|| ExecError::Missing("the tenant was deleted".into()))?;
    let model_row = store.model(&job.tenant_id).await?.ok_or_else(|| ExecError::Missing("the tenant has no model".into()))?;
    let segment_row = store
        .segment(&job.tenant_id, &job.segment_id)
        .await?
        .ok_or_else(|| ExecError::Missing(format!("segment {:?} was deleted", job.segment_id)))?;
    let root = Path::new(&tenant.data_root);
    let model = Model::from_json(&model_row.definition, root).map_err(ExecError::Executor)?;
    model.confined_to(root).map_err(ExecError::Executor)?;
    let catalog = Catalog::load(model, &SessionContext::new()).await.map_err(ExecError::Executor)?;
    let segment = Segment::from_json(&segment_row.definition, &catalog).map_err(ExecError::Executor)?;
    let mut options = RunOptions::new(job.as_of);
    options.memory_limit_bytes = Some(usize::try_from(grant).unwrap_or(usize::MAX));
    // Small jobs run best on one partition; large ones use the cores.
    let source_bytes: u64 = catalog.objects.iter().map(|o| o.bytes).sum();
    if source_bytes < (64 << 20) {
        options.target_partitions = 1;
    }
    run_segment(&catalog, &segment, &options).await.map_err(ExecError::Executor)
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
        shape: Some([
            report.shape.objects as i64,
            report.shape.joins as i64,
            report.shape.related_predicates as i64,
            report.shape.max_hops as i64,
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_rule_has_a_floor_and_a_cap() {
        let rule = SizeRule { min_bytes: 64 << 20, per_source_byte: 4.0, max_bytes: 1 << 30 };
        assert_eq!(rule.size(&SizingInput { source_bytes: 0, objects: 1 }).memory_bytes, 64 << 20);
        assert_eq!(rule.size(&SizingInput { source_bytes: 1 << 20, objects: 1 }).memory_bytes, (64 << 20) + (4 << 20));
        assert_eq!(rule.size(&SizingInput { source_bytes: u64::MAX, objects: 1 }).memory_bytes, 1 << 30);
    }
}
