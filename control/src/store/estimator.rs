//! What the estimator learns from: finished runs' records, job estimates and stored models.
//!
//! The estimator's records are the newest settled estimates (`settled_at` set at the job's final
//! state), found by an index of finished jobs' estimates past any queued ones; only those jobs'
//! attempts are grouped.

use super::*;

/// Finished runs as the estimator learns from them: the features recorded before the run,
/// the peak and runtime of the attempt that succeeded, and the largest grant an attempt ran
/// out of. `$1` is the limit (the jobs that finished last); `{segment}` narrows to one
/// segment. Those jobs are picked first, by an index of finished jobs' estimates (queued
/// ones are not in its way), and only their attempts grouped.
pub(super) const ESTIMATOR_RECORDS: &str = "SELECT e.job_id, e.tenant_id, e.segment_id, e.created_at, e.features, e.bound_bytes, e.runtime_micros, \
     MAX(CASE WHEN a.outcome = 'succeeded' THEN a.peak_memory_bytes END), \
     MAX(CASE WHEN a.outcome = 'succeeded' THEN a.elapsed_micros END), \
     MAX(CASE WHEN a.error_class = 'resources_exhausted' THEN a.grant_bytes END) \
     FROM (SELECT e.job_id, e.tenant_id, e.segment_id, e.created_at, e.features, e.bound_bytes, e.runtime_micros \
           FROM job_estimates e JOIN jobs j ON j.id = e.job_id \
           WHERE e.settled_at IS NOT NULL AND j.status IN ('succeeded', 'failed') {segment} ORDER BY e.settled_at DESC LIMIT $1) e \
     JOIN attempts a ON a.job_id = e.job_id AND a.rode_on IS NULL \
     GROUP BY e.job_id, e.tenant_id, e.segment_id, e.created_at, e.features, e.bound_bytes, e.runtime_micros \
     ORDER BY e.created_at DESC, e.job_id DESC";

impl Store {
    /// The newest `limit` finished runs (of one segment when `segment` is given) with what the
    /// estimator knew before each, oldest first. Runs that neither finished nor ran out of
    /// memory (failed for another reason) say nothing of their peak and are left out.
    pub async fn estimator_records(&self, segment: Option<(&str, &str)>, limit: i64) -> Result<Vec<cohort_estimator::Record>> {
        let rows = match segment {
            Some((tenant, segment)) => {
                sqlx::query(&ESTIMATOR_RECORDS.replace("{segment}", "AND e.tenant_id = $2 AND e.segment_id = $3"))
                    .bind(limit)
                    .bind(tenant)
                    .bind(segment)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => sqlx::query(&ESTIMATOR_RECORDS.replace("{segment}", "")).bind(limit).fetch_all(&self.pool).await?,
        };
        let mut records = Vec::with_capacity(rows.len());
        for r in rows.iter().rev() {
            let features: String = r.try_get(4)?;
            let estimated_runtime: i64 = r.try_get(6)?;
            let peak: Option<i64> = r.try_get(7)?;
            let elapsed: Option<i64> = r.try_get(8)?;
            let exhausted: Option<i64> = r.try_get(9)?;
            if peak.is_none() && exhausted.is_none() {
                continue;
            }
            let bound: i64 = r.try_get(5)?;
            let to_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
            records.push(cohort_estimator::Record {
                at: r.try_get(3)?,
                tenant: r.try_get(1)?,
                segment: r.try_get(2)?,
                job: r.try_get(0)?,
                features: serde_json::from_str(&features).map_err(|e| Error::Internal(format!("features of a job in the store do not parse: {e}")))?,
                peak_bytes: peak.map(to_u64),
                runtime_seconds: peak.and(elapsed).map(|m| m.max(0) as f64 / 1e6),
                exhausted_bytes: exhausted.map(to_u64),
                granted_bytes: Some(to_u64(bound)),
                estimated_runtime_seconds: Some(estimated_runtime.max(0) as f64 / 1e6),
            });
        }
        Ok(records)
    }

    /// What the estimator said of a job, if it was asked.
    pub async fn job_estimate(&self, job_id: &str) -> Result<Option<JobEstimate>> {
        let row = sqlx::query("SELECT features, model_version, basis, memory_bytes, bound_bytes, runtime_micros FROM job_estimates WHERE job_id = $1")
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(JobEstimate {
                features: r.try_get(0)?,
                model_version: r.try_get(1)?,
                basis: r.try_get(2)?,
                memory_bytes: r.try_get(3)?,
                bound_bytes: r.try_get(4)?,
                runtime_micros: r.try_get(5)?,
            })
        })
        .transpose()
    }

    /// Stores a fitted estimator model as `version`; false when that version exists already
    /// (another replica fitted first).
    pub async fn save_estimator_model(&self, version: i64, trained_on: i64, model: &str) -> Result<bool> {
        let done =
            sqlx::query("INSERT INTO estimator_models (version, created_at, trained_on, model) VALUES ($1, $2, $3, $4) ON CONFLICT (version) DO NOTHING")
                .bind(version)
                .bind(now_micros())
                .bind(trained_on)
                .bind(model)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The newest estimator model: version, when it was stored (microseconds) and its JSON.
    pub async fn latest_estimator_model(&self) -> Result<Option<(i64, i64, String)>> {
        let row = sqlx::query("SELECT version, created_at, model FROM estimator_models ORDER BY version DESC LIMIT 1").fetch_optional(&self.pool).await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).transpose()
    }
}
