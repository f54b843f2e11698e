//! Triage's reads and writes: the failed attempts of a window (and of the windows before it),
//! the alerts that fired in it, and the stored reports with their notifications.

use cohort_alerting::notify;
use cohort_alerting::triage::{DataFinding, Failure, FiredAlert};

use super::*;

/// A stored report, as the API lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoredReport {
    /// Its id (`tr_` and the end of its window in microseconds).
    pub id: String,
    /// Window start (RFC 3339).
    pub from: String,
    /// Window end (RFC 3339).
    pub to: String,
    /// Failed attempts in the window.
    pub failures: i64,
    /// Signatures.
    pub signatures: i64,
    /// Signatures not seen in the windows before.
    pub new_signatures: i64,
    /// When it was made (RFC 3339).
    pub created_at: String,
}

/// A scheduled report to store.
#[derive(Debug)]
pub struct NewReport<'a> {
    /// Its id (`tr_` and the end of its window).
    pub id: &'a str,
    /// Window start (microseconds).
    pub from: i64,
    /// Window end (microseconds).
    pub to: i64,
    /// Failed attempts in it.
    pub failures: i64,
    /// Signatures.
    pub signatures: i64,
    /// Signatures not seen before.
    pub new_signatures: i64,
    /// The report.
    pub json: String,
    /// Now (microseconds).
    pub at: i64,
}

impl Store {
    /// The failed attempts that finished in `[from, to)` (microseconds), of one tenant or all.
    pub async fn triage_failures(&self, from: i64, to: i64, tenant: Option<&str>) -> Result<Vec<Failure>> {
        let sql = format!(
            "SELECT a.finished_at, j.tenant_id, t.region, j.segment_id, a.job_id, a.attempt, a.error_class, a.error_message, \
             j.status, a.grant_bytes, a.data_quality \
             FROM attempts a JOIN jobs j ON j.id = a.job_id JOIN tenants t ON t.id = j.tenant_id \
             WHERE a.outcome = 'failed' AND a.finished_at >= $1 AND a.finished_at < $2{} ORDER BY a.finished_at",
            if tenant.is_some() { " AND j.tenant_id = $3" } else { "" }
        );
        let mut query = sqlx::query(&sql).bind(from).bind(to);
        if let Some(t) = tenant {
            query = query.bind(t);
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let data: Option<String> = r.try_get(10)?;
            let status: String = r.try_get(8)?;
            let grant: i64 = r.try_get(9)?;
            out.push(Failure {
                at: r.try_get::<i64, _>(0)? / 1000,
                tenant: r.try_get(1)?,
                region: r.try_get(2)?,
                segment: r.try_get(3)?,
                job: r.try_get(4)?,
                attempt: u32::try_from(r.try_get::<i64, _>(5)?).unwrap_or(u32::MAX),
                class: r.try_get::<Option<String>, _>(6)?.unwrap_or_else(|| "internal".into()),
                message: r.try_get::<Option<String>, _>(7)?.unwrap_or_default(),
                recovered: status == "succeeded",
                job_failed: status == "failed",
                grant: u64::try_from(grant).ok(),
                // A finding that does not parse is dropped, not the failure.
                data: data.and_then(|d| serde_json::from_str::<Vec<DataFinding>>(&d).ok()).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// The failed attempts of `[from, to)` (microseconds) with only what a report needs of the
    /// windows before its own: when, class, message and data findings.
    pub async fn triage_history(&self, from: i64, to: i64, tenant: Option<&str>) -> Result<Vec<Failure>> {
        let sql = match tenant {
            Some(_) => {
                "SELECT a.finished_at, a.error_class, a.error_message, a.data_quality FROM attempts a JOIN jobs j ON j.id = a.job_id \
                        WHERE a.outcome = 'failed' AND a.finished_at >= $1 AND a.finished_at < $2 AND j.tenant_id = $3"
            }
            None => {
                "SELECT a.finished_at, a.error_class, a.error_message, a.data_quality FROM attempts a \
                     WHERE a.outcome = 'failed' AND a.finished_at >= $1 AND a.finished_at < $2"
            }
        };
        let mut query = sqlx::query(sql).bind(from).bind(to);
        if let Some(t) = tenant {
            query = query.bind(t);
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let data: Option<String> = r.try_get(3)?;
            out.push(Failure {
                at: r.try_get::<i64, _>(0)? / 1000,
                tenant: String::new(),
                region: String::new(),
                segment: String::new(),
                job: String::new(),
                attempt: 0,
                class: r.try_get::<Option<String>, _>(1)?.unwrap_or_else(|| "internal".into()),
                message: r.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
                recovered: false,
                job_failed: false,
                grant: None,
                data: data.and_then(|d| serde_json::from_str::<Vec<DataFinding>>(&d).ok()).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// The alerts that fired during `[from, to)` (microseconds), or started up to `window_ms`
    /// after it (fed by its last failures); of one tenant's own alerts only, when `tenant` is given.
    pub async fn fired_alerts_between(&self, from: i64, to: i64, window_ms: i64, tenant: Option<&str>) -> Result<Vec<FiredAlert>> {
        let rows = sqlx::query(
            "SELECT id, scope, alert_key, started_at, resolved_at FROM alerts WHERE started_at < $1 AND (resolved_at IS NULL OR resolved_at >= $2)",
        )
        .bind(to.saturating_add(window_ms.saturating_mul(1000)))
        .bind(from)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let alert = FiredAlert {
                id: r.try_get(0)?,
                scope: r.try_get(1)?,
                key: r.try_get(2)?,
                started: r.try_get::<i64, _>(3)? / 1000,
                resolved: r.try_get::<Option<i64>, _>(4)?.map(|t| t / 1000),
            };
            if tenant.is_none_or(|t| alert.scope == "tenant" && alert.key == t) {
                out.push(alert);
            }
        }
        Ok(out)
    }

    /// Stored reports, newest first.
    pub async fn triage_reports(&self, limit: i64) -> Result<Vec<StoredReport>> {
        let rows = sqlx::query("SELECT id, from_at, to_at, failures, signatures, new_signatures, created_at FROM triage_reports ORDER BY to_at DESC LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredReport {
                    id: r.try_get(0)?,
                    from: crate::rfc3339(r.try_get(1)?),
                    to: crate::rfc3339(r.try_get(2)?),
                    failures: r.try_get(3)?,
                    signatures: r.try_get(4)?,
                    new_signatures: r.try_get(5)?,
                    created_at: crate::rfc3339(r.try_get(6)?),
                })
            })
            .collect()
    }

    /// One stored report's JSON.
    pub async fn triage_report(&self, id: &str) -> Result<Option<serde_json::Value>> {
        let row = sqlx::query("SELECT report FROM triage_reports WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(r) => Some(serde_json::from_str(&r.try_get::<String, _>(0)?).map_err(|e| crate::Error::Internal(format!("stored report {id}: {e}")))?),
            None => None,
        })
    }

    /// Stores a scheduled report, unless one of its id exists, and in the same transaction
    /// queues a delivery for each enabled receiver that `notification` gives a body for (from
    /// its id and matchers). False if the report existed.
    pub async fn save_triage_report(&self, r: &NewReport<'_>, notification: impl Fn(&str, &[notify::Matcher]) -> Option<String>) -> Result<bool> {
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO triage_reports (id, from_at, to_at, failures, signatures, new_signatures, report, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(r.id)
        .bind(r.from)
        .bind(r.to)
        .bind(r.failures)
        .bind(r.signatures)
        .bind(r.new_signatures)
        .bind(&r.json)
        .bind(r.at)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(false);
        }
        let receivers = sqlx::query("SELECT id, matchers FROM receivers WHERE enabled = 1").fetch_all(&mut *tx).await?;
        for row in receivers {
            let (receiver, matchers): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let matchers: Vec<notify::Matcher> = serde_json::from_str(&matchers).unwrap_or_default();
            let Some(body) = notification(&receiver, &matchers) else { continue };
            sqlx::query(
                "INSERT INTO deliveries (id, receiver_id, report_id, kind, state, body, attempts, not_before, created_at) \
                 VALUES ($1, $2, $3, 'triage', 'pending', $4, 0, $5, $5)",
            )
            .bind(crate::new_id("msg_"))
            .bind(&receiver)
            .bind(r.id)
            .bind(body)
            .bind(r.at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}
