//! Jobs riding on another job's execution: committed after it, or queued again if it fails.
//!
//! When a job starts, the other first attempts of its tenant, segment and `as_of` still queued
//! ride on its execution: they stay queued in the store until the leader's run commits, then
//! `Store::commit_riders` commits them; if the run fails, is interrupted or the commit finds the
//! segment moved on, [`Riders`] queues them here again when dropped.

use super::*;

/// The jobs riding on one execution. Whatever does not commit them (a failure, an
/// interruption, an error of the store) queues them again when this is dropped.
pub(super) struct Riders<'a> {
    pub(super) pool: &'a Pool,
    pub(super) jobs: Vec<JobRow>,
}

impl Riders<'_> {
    /// Commits the riders after `leader`'s run (started at `started_at`) committed.
    pub(super) async fn commit(&mut self, leader: &Commit<'_>, started_at: i64) -> Result<()> {
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
