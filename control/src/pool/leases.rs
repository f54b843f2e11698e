//! Leases: renewed for the jobs this process runs; jobs of processes whose leases ran out,
//! and jobs whose step failed, queued again.
//!
//! `keep_leases` renews the leases of the jobs this process runs every third of `lease_seconds`
//! and queues again other processes' jobs whose leases ran out (`Store::requeue_expired`). A
//! process whose lease ran out while it ran (frozen, or cut off from the store) finds the job
//! queued again or another attempt running it, commits nothing (`CommitResult::Superseded`) and
//! deletes the files it wrote. At start, on SQLite every admitted or running job is queued again;
//! on PostgreSQL only those no live lease covers, and those its own name held.

use super::*;

impl Pool {
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

    /// A job just queued again in the store: announced and handed to the dispatcher.
    pub(super) async fn requeued(&self, id: &str) -> Result<()> {
        self.announce(id, JobStatus::Queued);
        if let Some(row) = self.store.job_by_id(id).await? {
            lock(&self.inbox).push(row);
        }
        Ok(())
    }

    /// Retrying jobs whose wait is over: queued again.
    pub(super) async fn promote_retries(&self, now: i64) -> Result<()> {
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
    pub(super) async fn requeue_after_error(&self, job_id: &str) {
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
}
