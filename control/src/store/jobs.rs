//! Jobs and their attempts: submission (group-committed), admission, leases, transitions,
//! retries and attempt records.
//!
//! `insert_job` without an idempotency key is a group commit: concurrent submissions queue their
//! rows and one task inserts each batch in one transaction (on PostgreSQL as multi-row statements),
//! answering each only after the commit; a failed batch is retried job by job so each gets its own
//! answer. Admission (`admit`) records a lease (the process's instance name, `lease_until`);
//! `renew_leases` and `requeue_expired` keep and take them over. Every move of a running job by its
//! attempt (`end_attempt`, `retry`, the commit) is conditioned on the lease holder and the attempt
//! count (`Fence`). A job's estimate gets `settled_at` when the job reaches its final state.

use super::*;

impl Store {
    // ---- jobs

    /// Queues a job. With an idempotency key already used by this tenant, returns the first
    /// job instead (and `false`).
    pub async fn insert_job(&self, job: &JobRow) -> Result<(JobRow, bool)> {
        if job.idempotency_key.is_none() {
            // Without a key nothing can conflict: the job joins the next group commit.
            let (sender, answer) = tokio::sync::oneshot::channel();
            let flush = {
                let mut queue = self.inserts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                queue.pending.push((job.clone(), sender));
                !std::mem::replace(&mut queue.flushing, true)
            };
            if flush {
                let store = self.clone();
                tokio::spawn(async move { store.flush_inserts().await });
            }
            answer.await.map_err(|_| Error::Internal("the job's insert was dropped".into()))??;
            let mut job = job.clone();
            job.status = JobStatus::Queued;
            return Ok((job, true));
        }
        if let Some(key) = &job.idempotency_key
            && let Some(existing) = self.job_by_key(&job.tenant_id, key).await?
        {
            return Ok((existing, false));
        }
        let mut tx = self.begin().await?;
        let inserted = insert_queued_job(&mut tx, job).await;
        match inserted {
            Ok(_) => {}
            // Two submissions with the same key raced: the other one won.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() && job.idempotency_key.is_some() => {
                drop(tx);
                let key = job.idempotency_key.as_deref().unwrap_or_default();
                let existing = self.job_by_key(&job.tenant_id, key).await?;
                return existing.map(|j| (j, false)).ok_or_else(|| Error::Internal("idempotency key conflict without a job".into()));
            }
            Err(e) => return Err(e.into()),
        }
        insert_event(&mut tx, &job.id, job.created_at, "", JobStatus::Queued.as_str(), "submitted").await?;
        tx.commit().await?;
        let mut job = job.clone();
        job.status = JobStatus::Queued;
        Ok((job, true))
    }

    /// Inserts the jobs waiting for a group commit, a batch per transaction, until none is
    /// left. A batch that fails is inserted one job at a time, so that each job gets its own
    /// answer.
    pub(super) async fn flush_inserts(&self) {
        loop {
            let batch: Vec<PendingInsert> = {
                let mut queue = self.inserts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if queue.pending.is_empty() {
                    queue.flushing = false;
                    return;
                }
                let n = queue.pending.len().min(INSERTS_PER_COMMIT);
                queue.pending.drain(..n).collect()
            };
            match self.insert_batch(batch.iter().map(|(job, _)| job)).await {
                Ok(()) => {
                    for (_, sender) in batch {
                        let _ = sender.send(Ok(()));
                    }
                }
                Err(_) if batch.len() > 1 => {
                    for (job, sender) in batch {
                        let _ = sender.send(self.insert_batch(std::iter::once(&job)).await);
                    }
                }
                Err(e) => {
                    if let Some((_, sender)) = batch.into_iter().next() {
                        let _ = sender.send(Err(e));
                    }
                }
            }
        }
    }

    /// Queued jobs (without idempotency keys), their estimates and first events, in one
    /// transaction. On PostgreSQL three statements per [`ROWS_PER_STATEMENT`] jobs (each
    /// statement is a round trip to the server); on SQLite a few cached statements per job
    /// (a statement in the same process costs less than preparing one of many rows).
    pub(super) async fn insert_batch(&self, jobs: impl Iterator<Item = &JobRow>) -> Result<()> {
        let jobs: Vec<&JobRow> = jobs.collect();
        let mut tx = self.begin().await?;
        if self.backend == Backend::Sqlite {
            for job in jobs {
                insert_queued_job(&mut tx, job).await?;
                insert_event(&mut tx, &job.id, job.created_at, "", JobStatus::Queued.as_str(), "submitted").await?;
            }
            tx.commit().await?;
            return Ok(());
        }
        for chunk in jobs.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO jobs (id, tenant_id, segment_id, status, idempotency_key, trigger_kind, as_of, grant_bytes, created_at, \
                 updated_at, expected_micros, deadline_micros, due_at, trace_link, backend, attempts) VALUES {}",
                rows_of(15, chunk.len(), ", 0")
            );
            let mut query = sqlx::query(&sql);
            for job in chunk {
                query = query
                    .bind(job.id.as_str())
                    .bind(job.tenant_id.as_str())
                    .bind(job.segment_id.as_str())
                    .bind(JobStatus::Queued.as_str())
                    .bind(job.idempotency_key.as_deref())
                    .bind(job.trigger.as_str())
                    .bind(job.as_of)
                    .bind(job.grant_bytes)
                    .bind(job.created_at)
                    .bind(job.created_at)
                    .bind(job.expected_micros)
                    .bind(job.deadline_micros)
                    .bind(job.due_at)
                    .bind(job.trace_link.as_deref())
                    .bind(job.backend.as_str());
            }
            query.execute(&mut *tx).await?;
            let estimated: Vec<(&JobRow, &JobEstimate)> = chunk.iter().filter_map(|j| j.estimate.as_ref().map(|e| (*j, e))).collect();
            if !estimated.is_empty() {
                let sql = format!(
                    "INSERT INTO job_estimates (job_id, tenant_id, segment_id, created_at, features, model_version, basis, memory_bytes, \
                     bound_bytes, runtime_micros) VALUES {}",
                    rows_of(10, estimated.len(), "")
                );
                let mut query = sqlx::query(&sql);
                for (job, e) in &estimated {
                    query = query
                        .bind(job.id.as_str())
                        .bind(job.tenant_id.as_str())
                        .bind(job.segment_id.as_str())
                        .bind(job.created_at)
                        .bind(e.features.as_str())
                        .bind(e.model_version)
                        .bind(e.basis.as_str())
                        .bind(e.memory_bytes)
                        .bind(e.bound_bytes)
                        .bind(e.runtime_micros);
                }
                query.execute(&mut *tx).await?;
            }
            let sql = format!("INSERT INTO job_events (job_id, at, detail, from_status, to_status) VALUES {}", rows_of(3, chunk.len(), ", '', 'queued'"));
            let mut query = sqlx::query(&sql);
            for job in chunk {
                query = query.bind(job.id.as_str()).bind(job.created_at).bind("submitted");
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn job_by_key(&self, tenant_id: &str, key: &str) -> Result<Option<JobRow>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2"))
            .bind(tenant_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    /// One job of a tenant.
    pub async fn job(&self, tenant_id: &str, id: &str) -> Result<Option<JobRow>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    /// A segment's jobs, newest first, before `before` (a job id; '' for the newest).
    pub async fn jobs_of_segment(&self, tenant_id: &str, segment_id: &str, before: &str, limit: i64) -> Result<Vec<JobRow>> {
        let before = newest_first(before);
        let rows = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND segment_id = $2 AND id < $3 ORDER BY id DESC LIMIT $4"))
            .bind(tenant_id)
            .bind(segment_id)
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Queued jobs, oldest first.
    pub async fn queued_jobs(&self, limit: i64) -> Result<Vec<JobRow>> {
        let rows = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE status = $1 ORDER BY id LIMIT $2"))
            .bind(JobStatus::Queued.as_str())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Counts of jobs by status.
    pub async fn job_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?))).collect()
    }

    /// Jobs waiting (queued or waiting to retry), by their tenant's region: every region that
    /// has a tenant, 0 where none wait.
    pub async fn queue_depth_by_region(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT t.region, COUNT(j.id) FROM tenants t \
             LEFT JOIN jobs j ON j.tenant_id = t.id AND j.status IN ('queued', 'retrying') \
             GROUP BY t.region ORDER BY t.region",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?))).collect()
    }

    /// Moves a job from `from` to `to` if it is still in `from`; false if it was not.
    /// Starting to run counts an attempt; a final state records its time, error and counts.
    pub async fn transition(&self, job_id: &str, from: JobStatus, to: JobStatus, detail: &str, failure: Option<(&str, &str)>) -> Result<bool> {
        self.transition_fenced(job_id, from, to, detail, failure, None).await
    }

    /// Moves a running job to `to` for the attempt `fence` runs, if the job is still running
    /// that attempt under that process's lease; false if not (the job moved on, or its lease
    /// ran out and another attempt runs it).
    pub async fn end_attempt(&self, job_id: &str, fence: Fence<'_>, to: JobStatus, detail: &str, failure: Option<(&str, &str)>) -> Result<bool> {
        self.transition_fenced(job_id, JobStatus::Running, to, detail, failure, Some(fence)).await
    }

    pub(super) async fn transition_fenced(
        &self,
        job_id: &str,
        from: JobStatus,
        to: JobStatus,
        detail: &str,
        failure: Option<(&str, &str)>,
        fence: Option<Fence<'_>>,
    ) -> Result<bool> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let (set, next) = if to == JobStatus::Running {
            (", started_at = $2, attempts = attempts + 1", 3)
        } else if to.is_final() {
            (", finished_at = $2, error_class = $3, error_message = $4", 5)
        } else {
            ("", 3)
        };
        let fenced = if fence.is_some() { format!(" AND lease_owner = ${} AND attempts = ${}", next + 2, next + 3) } else { String::new() };
        let sql = format!("UPDATE jobs SET status = $1, updated_at = $2{set} WHERE id = ${next} AND status = ${}{fenced}", next + 1);
        let mut query = sqlx::query(&sql).bind(to.as_str()).bind(now);
        if to.is_final() {
            query = query.bind(failure.map(|f| f.0.to_string())).bind(failure.map(|f| f.1.to_string()));
        }
        query = query.bind(job_id).bind(from.as_str());
        if let Some(fence) = fence {
            query = query.bind(fence.owner).bind(fence.attempt);
        }
        let done = query.execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_event(&mut tx, job_id, now, from.as_str(), to.as_str(), detail).await?;
        if to.is_final() {
            settle_estimate(&mut tx, job_id, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Admits a queued job for process `owner`, its claim holding until `until`; false if
    /// it was no longer queued.
    pub async fn admit(&self, job_id: &str, owner: &str, until: i64, detail: &str) -> Result<bool> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE jobs SET status = $1, updated_at = $2, lease_owner = $3, lease_until = $4 WHERE id = $5 AND status = $6")
            .bind(JobStatus::Admitted.as_str())
            .bind(now)
            .bind(owner)
            .bind(until)
            .bind(job_id)
            .bind(JobStatus::Queued.as_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_event(&mut tx, job_id, now, JobStatus::Queued.as_str(), JobStatus::Admitted.as_str(), detail).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Extends `owner`'s claims on these jobs (those it still holds) to `until`.
    pub async fn renew_leases(&self, owner: &str, ids: &[String], until: i64) -> Result<()> {
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE jobs SET lease_until = $1 WHERE lease_owner = $2 AND status IN ('admitted', 'running') AND id IN ({})",
                placeholders(3, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(until).bind(owner);
            for id in chunk {
                query = query.bind(id.as_str());
            }
            query.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Jobs admitted or running whose claim ran out at `now` (or that `owner`, a process's
    /// previous life, held; or that no claim covers), other than `except`'s: queued again,
    /// each with a recorded transition. Returns their ids.
    pub async fn requeue_expired(&self, now: i64, owner: Option<&str>, except: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id, status, lease_owner FROM jobs WHERE status IN ('admitted', 'running')              AND (lease_until IS NULL OR lease_until < $1 OR lease_owner = $2) AND (lease_owner IS NULL OR lease_owner <> $3)",
        )
        .bind(now)
        .bind(owner.unwrap_or(""))
        .bind(except)
        .fetch_all(&self.pool)
        .await?;
        let mut requeued = Vec::new();
        for row in rows {
            let (id, status, held_by): (String, String, Option<String>) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let from = if status == JobStatus::Running.as_str() { JobStatus::Running } else { JobStatus::Admitted };
            let detail = match held_by {
                Some(p) if Some(p.as_str()) == owner => format!("recovered at start: this process ({p}) stopped while it ran"),
                Some(p) => format!("recovered: the lease of process {p} ran out"),
                None => "recovered: no process held it".to_string(),
            };
            if self.transition(&id, from, JobStatus::Queued, &detail, None).await? {
                requeued.push(id);
            }
        }
        Ok(requeued)
    }

    /// Jobs left admitted or running by a process that stopped: queued again, each with a
    /// recorded transition. Returns how many.
    pub async fn requeue_unfinished(&self, detail: &str) -> Result<u64> {
        let mut total = 0;
        for from in [JobStatus::Admitted, JobStatus::Running] {
            let rows = sqlx::query("SELECT id FROM jobs WHERE status = $1").bind(from.as_str()).fetch_all(&self.pool).await?;
            for row in rows {
                let id: String = row.try_get(0)?;
                if self.transition(&id, from, JobStatus::Queued, detail, None).await? {
                    total += 1;
                }
            }
        }
        Ok(total)
    }

    /// A failed attempt that will be retried: `running → retrying`, with the failure, the
    /// time it may be queued again and the grant of the next attempt.
    /// Only the attempt `fence` runs moves the job.
    pub async fn retry(&self, job_id: &str, fence: Fence<'_>, failure: (&str, &str), not_before: i64, grant_bytes: i64, detail: &str) -> Result<bool> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE jobs SET status = $1, updated_at = $2, error_class = $3, error_message = $4, not_before = $5, grant_bytes = $6 \
             WHERE id = $7 AND status = $8 AND lease_owner = $9 AND attempts = $10",
        )
        .bind(JobStatus::Retrying.as_str())
        .bind(now)
        .bind(failure.0)
        .bind(failure.1)
        .bind(not_before)
        .bind(grant_bytes)
        .bind(job_id)
        .bind(JobStatus::Running.as_str())
        .bind(fence.owner)
        .bind(fence.attempt)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_event(&mut tx, job_id, now, JobStatus::Running.as_str(), JobStatus::Retrying.as_str(), detail).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Retrying jobs whose wait is over at `now`, oldest first.
    pub async fn due_retries(&self, now: i64, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM jobs WHERE status = $1 AND not_before <= $2 ORDER BY not_before, id LIMIT $3")
            .bind(JobStatus::Retrying.as_str())
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// The earliest time a retrying job may be queued again.
    pub async fn next_retry_at(&self) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MIN(not_before) FROM jobs WHERE status = $1").bind(JobStatus::Retrying.as_str()).fetch_one(&self.pool).await?;
        Ok(row.try_get::<Option<i64>, _>(0)?)
    }

    /// Queued jobs with ids after `after`, oldest first.
    pub async fn queued_after(&self, after: &str, limit: i64) -> Result<Vec<JobRow>> {
        let rows = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE status = $1 AND id > $2 ORDER BY id LIMIT $3"))
            .bind(JobStatus::Queued.as_str())
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// The table snapshots a job's first attempt recorded (JSON), if any.
    pub async fn job_snapshots(&self, id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT snapshots FROM jobs WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(r) => r.try_get(0)?,
            None => None,
        })
    }

    /// Records the table snapshots a job's attempt read, unless an earlier attempt recorded
    /// some: the first attempt's stay.
    pub async fn record_snapshots(&self, id: &str, snapshots: &str) -> Result<()> {
        sqlx::query("UPDATE jobs SET snapshots = $1 WHERE id = $2 AND snapshots IS NULL").bind(snapshots).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// A job by id alone (for the pool, which serves every tenant).
    pub async fn job_by_id(&self, id: &str) -> Result<Option<JobRow>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    /// How many of a job's attempts failed with one of `classes`.
    pub async fn failed_attempts(&self, job_id: &str, classes: &[&str]) -> Result<i64> {
        let rows = sqlx::query("SELECT error_class FROM attempts WHERE job_id = $1 AND outcome = 'failed'").bind(job_id).fetch_all(&self.pool).await?;
        let mut n = 0;
        for r in rows {
            let class: Option<String> = r.try_get(0)?;
            if class.is_some_and(|c| classes.contains(&c.as_str())) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The attempts of a job, in order.
    pub async fn attempts(&self, job_id: &str) -> Result<Vec<AttemptRow>> {
        let rows = sqlx::query(
            "SELECT attempt, started_at, finished_at, outcome, error_class, error_message, grant_bytes, peak_memory_bytes, \
             elapsed_micros, plan_mode, phases, rode_on, rows_scanned, bytes_scanned FROM attempts WHERE job_id = $1 ORDER BY attempt",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRow {
                    attempt: r.try_get(0)?,
                    started_at: r.try_get(1)?,
                    finished_at: r.try_get(2)?,
                    outcome: r.try_get(3)?,
                    error_class: r.try_get(4)?,
                    error_message: r.try_get(5)?,
                    grant_bytes: r.try_get(6)?,
                    peak_memory_bytes: r.try_get(7)?,
                    elapsed_micros: r.try_get(8)?,
                    plan_mode: r.try_get(9)?,
                    phases: r.try_get(10)?,
                    rode_on: r.try_get(11)?,
                    rows_scanned: r.try_get(12)?,
                    bytes_scanned: r.try_get(13)?,
                })
            })
            .collect()
    }

    // ---- attempts

    /// Moves a job admitted for process `owner` to running and records the start of its next
    /// attempt under `grant_bytes`, in one transaction. Returns the attempt's number (the
    /// job's attempt count now, what its commit is conditioned on); `None` if the job was no
    /// longer admitted for `owner`.
    pub async fn start_running(&self, job_id: &str, owner: &str, grant_bytes: i64) -> Result<Option<i64>> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let started = sqlx::query(
            "UPDATE jobs SET status = $1, updated_at = $2, started_at = $2, attempts = attempts + 1 \
             WHERE id = $3 AND status = $4 AND lease_owner = $5 RETURNING attempts",
        )
        .bind(JobStatus::Running.as_str())
        .bind(now)
        .bind(job_id)
        .bind(JobStatus::Admitted.as_str())
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(started) = started else {
            return Ok(None);
        };
        let attempt: i64 = started.try_get(0)?;
        insert_event(&mut tx, job_id, now, JobStatus::Admitted.as_str(), JobStatus::Running.as_str(), "started").await?;
        // A crash may have left this attempt's row behind: replace it.
        sqlx::query("DELETE FROM attempts WHERE job_id = $1 AND attempt = $2").bind(job_id).bind(attempt).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO attempts (job_id, attempt, started_at, grant_bytes) VALUES ($1, $2, $3, $4)")
            .bind(job_id)
            .bind(attempt)
            .bind(now)
            .bind(grant_bytes)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(attempt))
    }

    /// Records how attempt `attempt` of a job ended.
    pub async fn finish_attempt(&self, job_id: &str, attempt: i64, o: &AttemptOutcome) -> Result<()> {
        let shape = o.shape.unwrap_or_default();
        let has_shape = o.shape.is_some();
        sqlx::query(
            "UPDATE attempts SET finished_at = $1, outcome = $2, error_class = $3, error_message = $4, peak_memory_bytes = $5, \
             elapsed_micros = $6, rows_scanned = $7, bytes_scanned = $8, spill_count = $9, plan_mode = $10, objects = $11, \
             joins = $12, related_predicates = $13, max_hops = $14, phases = $15, data_quality = $16 WHERE job_id = $17 AND attempt = $18",
        )
        .bind(now_micros())
        .bind(&o.outcome)
        .bind(&o.error_class)
        .bind(&o.error_message)
        .bind(o.peak_memory_bytes)
        .bind(o.elapsed_micros)
        .bind(o.rows_scanned)
        .bind(o.bytes_scanned)
        .bind(o.spill_count)
        .bind(&o.plan_mode)
        .bind(has_shape.then_some(shape[0]))
        .bind(has_shape.then_some(shape[1]))
        .bind(has_shape.then_some(shape[2]))
        .bind(has_shape.then_some(shape[3]))
        .bind(&o.phases)
        .bind(&o.data_quality)
        .bind(job_id)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Inserts a job as queued, without its first event.
pub(super) async fn insert_queued_job(tx: &mut sqlx::Transaction<'_, sqlx::Any>, job: &JobRow) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, segment_id, status, idempotency_key, trigger_kind, as_of, grant_bytes, attempts, \
         created_at, updated_at, expected_micros, deadline_micros, due_at, trace_link, backend) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&job.id)
    .bind(&job.tenant_id)
    .bind(&job.segment_id)
    .bind(JobStatus::Queued.as_str())
    .bind(&job.idempotency_key)
    .bind(&job.trigger)
    .bind(job.as_of)
    .bind(job.grant_bytes)
    .bind(job.created_at)
    .bind(job.expected_micros)
    .bind(job.deadline_micros)
    .bind(job.due_at)
    .bind(&job.trace_link)
    .bind(&job.backend)
    .execute(&mut **tx)
    .await?;
    if let Some(e) = &job.estimate {
        sqlx::query(
            "INSERT INTO job_estimates (job_id, tenant_id, segment_id, created_at, features, model_version, basis, memory_bytes, \
             bound_bytes, runtime_micros) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&job.id)
        .bind(&job.tenant_id)
        .bind(&job.segment_id)
        .bind(job.created_at)
        .bind(&e.features)
        .bind(e.model_version)
        .bind(&e.basis)
        .bind(e.memory_bytes)
        .bind(e.bound_bytes)
        .bind(e.runtime_micros)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
