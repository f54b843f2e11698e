//! What the built-in dashboard reads: the jobs and attempts of a window, tenants by region and
//! the tenant list.

use super::*;

/// One job as the dashboard shows it.
#[derive(Debug, Clone)]
pub struct WindowJob {
    /// The job.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// Its tenant's region.
    pub region: String,
    /// Its segment.
    pub segment: String,
    /// Its status.
    pub status: String,
    /// Submitted (microseconds).
    pub created_at: i64,
    /// Its last attempt started.
    pub started_at: Option<i64>,
    /// It ended.
    pub finished_at: Option<i64>,
    /// Its failure's class.
    pub error_class: Option<String>,
}

/// The columns [`window_job`] reads, over `jobs j JOIN tenants t`.
const WINDOW_JOB_COLUMNS: &str = "j.id, j.tenant_id, t.region, j.segment_id, j.status, j.created_at, j.started_at, j.finished_at, j.error_class";

fn window_job(r: &AnyRow) -> std::result::Result<WindowJob, sqlx::Error> {
    Ok(WindowJob {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        region: r.try_get(2)?,
        segment: r.try_get(3)?,
        status: r.try_get(4)?,
        created_at: r.try_get(5)?,
        started_at: r.try_get(6)?,
        finished_at: r.try_get(7)?,
        error_class: r.try_get(8)?,
    })
}

impl Store {
    /// Jobs that finished since `since` (microseconds), and those not finished yet.
    pub async fn window_jobs(&self, since: i64) -> Result<Vec<WindowJob>> {
        let columns = WINDOW_JOB_COLUMNS;
        let rows = sqlx::query(&format!(
            "SELECT {columns} FROM jobs j JOIN tenants t ON t.id = j.tenant_id \
             WHERE j.status IN ('succeeded', 'failed', 'cancelled') AND j.finished_at >= $1 \
             UNION ALL SELECT {columns} FROM jobs j JOIN tenants t ON t.id = j.tenant_id \
             WHERE j.status IN ('queued', 'admitted', 'running', 'retrying') LIMIT 200000"
        ))
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(window_job).collect::<std::result::Result<_, _>>()?)
    }

    /// A tenant's newest `limit` jobs.
    pub async fn tenant_jobs(&self, tenant_id: &str, limit: i64) -> Result<Vec<WindowJob>> {
        let rows = sqlx::query(&format!(
            "SELECT {WINDOW_JOB_COLUMNS} FROM jobs j JOIN tenants t ON t.id = j.tenant_id WHERE j.tenant_id = $1 ORDER BY j.id DESC LIMIT $2"
        ))
        .bind(tenant_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(window_job).collect::<std::result::Result<_, _>>()?)
    }

    /// Attempts that ended since `since`, of jobs submitted since `jobs_since`: (ended, grant,
    /// peak, elapsed).
    pub async fn window_attempts(&self, since: i64, jobs_since: i64) -> Result<Vec<(i64, i64, Option<i64>, Option<i64>)>> {
        let rows = sqlx::query("SELECT finished_at, grant_bytes, peak_memory_bytes, elapsed_micros FROM attempts WHERE job_id >= $1 AND finished_at >= $2")
            .bind(format!("run_{:014x}", jobs_since.max(0)))
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))).collect()
    }

    /// How many tenants each region has, by region.
    pub async fn tenants_by_region(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT region, COUNT(*) FROM tenants GROUP BY region ORDER BY region").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// A page of tenants whose id contains `contains` (taken literally), of `region` (all when
    /// empty), after `after`: (id, region, segments).
    pub async fn tenant_list(&self, contains: &str, region: &str, after: &str, limit: i64) -> Result<Vec<(String, String, i64)>> {
        // `LIKE` wildcards in the search are taken literally.
        let pattern = format!("%{}%", contains.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        let rows = sqlx::query(
            "SELECT t.id, t.region, (SELECT COUNT(*) FROM segments g WHERE g.tenant_id = t.id) FROM tenants t \
             WHERE t.id LIKE $1 ESCAPE '\\' AND ($2 = '' OR t.region = $2) AND t.id > $3 ORDER BY t.id LIMIT $4",
        )
        .bind(&pattern)
        .bind(region)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }
}
