//! Segments' schedules: what is due, buffered or missed, and each schedule step.

use super::*;

impl Store {
    // ---- schedules

    /// Scheduled segments due at `now` (next due time reached), earliest first.
    pub async fn due_segments(&self, now: i64, limit: i64) -> Result<Vec<SegmentRow>> {
        let rows = sqlx::query(&format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE next_due_at <= $1 ORDER BY next_due_at, tenant_id, id LIMIT $2"))
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(segment_from_row).collect()
    }

    /// Segments holding a buffered due run.
    pub async fn buffered_segments(&self, limit: i64) -> Result<Vec<SegmentRow>> {
        let rows = sqlx::query(&format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE buffered_due_at IS NOT NULL ORDER BY buffered_due_at LIMIT $1"))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(segment_from_row).collect()
    }

    /// Scheduled segments without a next due time: stored before schedules ran, or past
    /// their last due time.
    pub async fn schedules_without_due(&self, limit: i64) -> Result<Vec<SegmentRow>> {
        let rows = sqlx::query(&format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE schedule IS NOT NULL AND next_due_at IS NULL LIMIT $1"))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(segment_from_row).collect()
    }

    /// Sets a schedule's next due time if it has none.
    pub async fn set_first_due(&self, tenant_id: &str, segment_id: &str, next_due_at: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE segments SET next_due_at = $1 WHERE tenant_id = $2 AND id = $3 AND next_due_at IS NULL")
            .bind(next_due_at)
            .bind(tenant_id)
            .bind(segment_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The earliest next due time of any schedule.
    pub async fn next_due_at(&self) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MIN(next_due_at) FROM segments").fetch_one(&self.pool).await?;
        Ok(row.try_get::<Option<i64>, _>(0)?)
    }

    /// Whether a run of the segment is queued, admitted, running or retrying.
    pub async fn has_active_job(&self, tenant_id: &str, segment_id: &str) -> Result<bool> {
        let row = sqlx::query("SELECT id FROM jobs WHERE tenant_id = $1 AND segment_id = $2 AND status IN ($3, $4, $5, $6) LIMIT 1")
            .bind(tenant_id)
            .bind(segment_id)
            .bind(JobStatus::Queued.as_str())
            .bind(JobStatus::Admitted.as_str())
            .bind(JobStatus::Running.as_str())
            .bind(JobStatus::Retrying.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Applies one schedule step in one transaction, if the segment's schedule state is still
    /// `seen` (its next due time and buffered run as read): the new state, the skipped counts,
    /// and the job to enqueue. False (and nothing written) if another process or tick moved it
    /// first: this is what makes a due run enqueued once.
    pub async fn schedule_step(&self, seen: &SegmentRow, step: &ScheduleStep, job: Option<&JobRow>) -> Result<bool> {
        let mut tx = self.begin().await?;
        let moved = sqlx::query(
            "UPDATE segments SET next_due_at = $1, buffered_due_at = $2, missed_runs = missed_runs + $3, \
             overlapped_runs = overlapped_runs + $4 WHERE tenant_id = $5 AND id = $6 \
             AND COALESCE(next_due_at, -1) = $7 AND COALESCE(buffered_due_at, -1) = $8",
        )
        .bind(step.next_due_at)
        .bind(step.buffered_due_at)
        .bind(step.missed)
        .bind(step.overlapped)
        .bind(&seen.tenant_id)
        .bind(&seen.id)
        .bind(seen.next_due_at.unwrap_or(-1))
        .bind(seen.buffered_due_at.unwrap_or(-1))
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(job) = job {
            insert_queued_job(&mut tx, job).await?;
            insert_event(&mut tx, &job.id, job.created_at, "", JobStatus::Queued.as_str(), "enqueued by the schedule").await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Due runs skipped so far, over all segments: (missed while down, overlapped). (SUM of a
    /// BIGINT is NUMERIC on PostgreSQL, which the `Any` driver cannot read: cast back.)
    pub async fn skipped_runs(&self) -> Result<(i64, i64)> {
        let row = sqlx::query("SELECT CAST(COALESCE(SUM(missed_runs), 0) AS BIGINT), CAST(COALESCE(SUM(overlapped_runs), 0) AS BIGINT) FROM segments")
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// The transitions of a job, oldest first: (time, from, to, detail).
    pub async fn job_events(&self, job_id: &str) -> Result<Vec<(i64, String, String, String)>> {
        let rows = sqlx::query("SELECT at, from_status, to_status, detail FROM job_events WHERE job_id = $1 ORDER BY at, to_status")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))).collect()
    }
}
