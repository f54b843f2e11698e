//! Membership runs: a run's commit (with its riders) and the runs of a segment.
//!
//! `commit_run` is the membership commit: the history record (`runs`, keyed by run id, so a second
//! commit is impossible), the segment's latest run (conditional on the latest the diff was computed
//! against) and the job's `succeeded`, in one transaction, fenced by the attempt's lease and number.
//! `commit_riders` commits the jobs that rode on a committed run: a compare-and-set from `queued`
//! per rider, their transitions, attempts (`rode_on`) and history records chained after the leader,
//! and the segment's latest moved from the leader to the last rider — a few statements per hundred
//! riders, one transaction, nothing at all if the latest moved meanwhile.

use super::*;

impl Store {
    // ---- membership runs

    /// Commits a successful run in one transaction: its history record (naming the files its
    /// attempt wrote), the segment's latest run and count, and the job's final state. Only
    /// the attempt `c.attempt` of the process `c.owner` holding the job's lease commits.
    pub async fn commit_run(&self, c: &Commit<'_>) -> Result<CommitResult> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let seen = sqlx::query("SELECT run_id FROM runs WHERE run_id = $1").bind(c.job_id).fetch_optional(&mut *tx).await?;
        if seen.is_some() {
            return Ok(CommitResult::AlreadyCommitted);
        }
        let fence = Fence { owner: c.owner, attempt: c.attempt };
        if let Some(refused) = fenced_out(&mut tx, c.job_id, fence).await? {
            return Ok(refused);
        }
        let latest = sqlx::query("SELECT latest_run_id FROM segments WHERE tenant_id = $1 AND id = $2")
            .bind(c.tenant_id)
            .bind(c.segment_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(latest) = latest else {
            return Err(Error::NotFound(format!("segment {:?} was deleted while it ran", c.segment_id)));
        };
        let latest: String = latest.try_get(0)?;
        if latest != c.previous_run_id {
            return Ok(CommitResult::LatestMoved(latest));
        }
        // The fence again, in the statement that ends the job: a process that queued the job
        // again meanwhile (PostgreSQL, read committed) makes this touch no row.
        let job = sqlx::query(
            "UPDATE jobs SET status = $1, updated_at = $2, finished_at = $2, members = $3, added = $4, removed = $5, \
             error_class = NULL, error_message = NULL WHERE id = $6 AND status = $7 AND lease_owner = $8 AND attempts = $9",
        )
        .bind(JobStatus::Succeeded.as_str())
        .bind(now)
        .bind(c.members)
        .bind(c.added)
        .bind(c.removed)
        .bind(c.job_id)
        .bind(JobStatus::Running.as_str())
        .bind(c.owner)
        .bind(c.attempt)
        .execute(&mut *tx)
        .await?;
        if job.rows_affected() == 0 {
            return Ok(fenced_out(&mut tx, c.job_id, fence).await?.unwrap_or(CommitResult::NotRunning));
        }
        insert_event(&mut tx, c.job_id, now, JobStatus::Running.as_str(), JobStatus::Succeeded.as_str(), "membership committed").await?;
        settle_estimate(&mut tx, c.job_id, now).await?;
        sqlx::query(
            "INSERT INTO runs (run_id, tenant_id, segment_id, previous_run_id, members, added, removed, key_type, committed_at, files) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(c.job_id)
        .bind(c.tenant_id)
        .bind(c.segment_id)
        .bind(c.previous_run_id)
        .bind(c.members)
        .bind(c.added)
        .bind(c.removed)
        .bind(c.key_type)
        .bind(now)
        .bind(c.files)
        .execute(&mut *tx)
        .await?;
        // Conditional on the latest run read above: a concurrent commit of the same segment
        // (PostgreSQL, read committed) makes this touch no row, and this commit starts over.
        let moved = sqlx::query("UPDATE segments SET latest_run_id = $1, members = $2 WHERE tenant_id = $3 AND id = $4 AND latest_run_id = $5")
            .bind(c.job_id)
            .bind(c.members)
            .bind(c.tenant_id)
            .bind(c.segment_id)
            .bind(c.previous_run_id)
            .execute(&mut *tx)
            .await?;
        if moved.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(CommitResult::LatestMoved(String::new()));
        }
        tx.commit().await?;
        Ok(CommitResult::Committed)
    }

    /// Commits the jobs that rode on run `leader` (committed, with `members` members, still
    /// its segment's latest): each one still queued moves through admitted and running to
    /// succeeded, with an attempt that names the leader, and a history record that added and
    /// removed nothing and names the leader's files, chained after the leader in the order of
    /// their ids; the last becomes the segment's latest run. One transaction. Returns the ids
    /// committed: none if the latest run moved meanwhile (they are still queued then), else
    /// those still queued; and the time they finished at.
    pub async fn commit_riders(&self, leader: &Commit<'_>, started_at: i64, riders: &[&str]) -> Result<(Vec<String>, i64)> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let mut moved = Vec::with_capacity(riders.len());
        // A few statements per 32 riders, not a few per rider.
        for chunk in riders.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE jobs SET status = $1, updated_at = $2, started_at = $3, finished_at = $2, attempts = attempts + 1, \
                 members = $4, added = 0, removed = 0, error_class = NULL, error_message = NULL \
                 WHERE status = $5 AND attempts = 0 AND tenant_id = $6 AND id IN ({}) RETURNING id",
                placeholders(7, chunk.len())
            );
            let mut update = sqlx::query(&sql)
                .bind(JobStatus::Succeeded.as_str())
                .bind(now)
                .bind(started_at)
                .bind(leader.members)
                .bind(JobStatus::Queued.as_str())
                .bind(leader.tenant_id);
            for id in chunk {
                update = update.bind(*id);
            }
            for row in update.fetch_all(&mut *tx).await? {
                moved.push(row.try_get::<String, _>(0)?);
            }
        }
        let Some(last) = moved.iter().max().cloned() else {
            return Ok((Vec::new(), now));
        };
        moved.sort_unstable();
        let admitted = format!("rides on job {}: same segment and as-of", leader.job_id);
        let succeeded = format!("membership committed (that of run {})", leader.job_id);
        let mut previous = leader.job_id.to_string();
        for chunk in moved.chunks(ROWS_PER_STATEMENT) {
            // They ran nothing: the estimator has nothing to learn from them.
            let sql = format!("DELETE FROM job_estimates WHERE job_id IN ({})", placeholders(1, chunk.len()));
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.as_str());
            }
            query.execute(&mut *tx).await?;

            let sql = format!("INSERT INTO job_events (job_id, at, from_status, to_status, detail) VALUES {}", rows_of(5, chunk.len() * 3, ""));
            let mut query = sqlx::query(&sql);
            for id in chunk {
                let steps = [
                    (started_at, JobStatus::Queued, JobStatus::Admitted, admitted.as_str()),
                    (started_at, JobStatus::Admitted, JobStatus::Running, "started"),
                    (now, JobStatus::Running, JobStatus::Succeeded, succeeded.as_str()),
                ];
                for (at, from, to, detail) in steps {
                    query = query.bind(id.as_str()).bind(at).bind(from.as_str()).bind(to.as_str()).bind(detail);
                }
            }
            query.execute(&mut *tx).await?;

            let sql = format!(
                "INSERT INTO attempts (job_id, started_at, finished_at, outcome, rode_on, attempt, grant_bytes) VALUES {}",
                rows_of(5, chunk.len(), ", 1, 0")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.as_str()).bind(started_at).bind(now).bind(JobStatus::Succeeded.as_str()).bind(leader.job_id);
            }
            query.execute(&mut *tx).await?;

            let sql = format!(
                "INSERT INTO runs (run_id, previous_run_id, tenant_id, segment_id, members, key_type, committed_at, files, added, removed) VALUES {}",
                rows_of(8, chunk.len(), ", 0, 0")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query
                    .bind(id.as_str())
                    .bind(std::mem::replace(&mut previous, id.clone()))
                    .bind(leader.tenant_id)
                    .bind(leader.segment_id)
                    .bind(leader.members)
                    .bind(leader.key_type)
                    .bind(now)
                    .bind(leader.files);
            }
            query.execute(&mut *tx).await?;
        }
        let latest = sqlx::query("UPDATE segments SET latest_run_id = $1 WHERE tenant_id = $2 AND id = $3 AND latest_run_id = $4")
            .bind(&last)
            .bind(leader.tenant_id)
            .bind(leader.segment_id)
            .bind(leader.job_id)
            .execute(&mut *tx)
            .await?;
        if latest.rows_affected() == 0 {
            // Another run of the segment committed after the leader: what the riders would
            // add or remove after it is unknown. They stay queued and run again.
            tx.rollback().await?;
            return Ok((Vec::new(), now));
        }
        tx.commit().await?;
        Ok((moved, now))
    }

    /// A segment's history, newest first, before `before` (a run id; '' for the newest).
    pub async fn runs(&self, tenant_id: &str, segment_id: &str, before: &str, limit: i64) -> Result<Vec<RunRow>> {
        let before = newest_first(before);
        let rows =
            sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE tenant_id = $1 AND segment_id = $2 AND run_id < $3 ORDER BY run_id DESC LIMIT $4"))
                .bind(tenant_id)
                .bind(segment_id)
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// The files of the newest run of a segment committed before `run` whose files are not
    /// `files` (those of the run `run` replaced, shared by riders): the generation of members
    /// a commit no longer keeps. Runs committed after `run` (by jobs of the segment running
    /// beside it, before this cleanup) are never it: one of them is the segment's latest.
    pub async fn files_before(&self, tenant_id: &str, segment_id: &str, run: &str, files: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT COALESCE(files, run_id) FROM runs WHERE tenant_id = $1 AND segment_id = $2 AND run_id <> $3 \
             AND COALESCE(files, run_id) <> $4 \
             AND committed_at < (SELECT committed_at FROM runs WHERE tenant_id = $1 AND run_id = $3) \
             ORDER BY committed_at DESC LIMIT 1",
        )
        .bind(tenant_id)
        .bind(segment_id)
        .bind(run)
        .bind(files)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
    }

    /// One history record.
    pub async fn run(&self, tenant_id: &str, run_id: &str) -> Result<Option<RunRow>> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE tenant_id = $1 AND run_id = $2"))
            .bind(tenant_id)
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| run_from_row(&r)).transpose()
    }
}
