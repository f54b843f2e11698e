//! The alert tables: `alerts` and their history (`alert_events`), `silences`, `receivers`, the
//! delivery outbox (`deliveries`) and the evaluator's claim (`alert_evaluator`), and the reads
//! of finished jobs the evaluator is fed by.
//!
//! Only queries live here; what to record is decided by `crate::alerts` with the pure policy of
//! `cohort_alerting` (inhibition, silences, dispatch timing). Queries that belong to one of its
//! transactions take that transaction (`&mut sqlx::Transaction<'_, sqlx::Any>`); the others run
//! on the pool, or in a transaction of their own. Labels, annotations and matchers are stored as
//! JSON text; times are microseconds.

use std::collections::BTreeMap;

use cohort_alerting::dispatch::Kind;
use cohort_alerting::inhibit::{Firing, Subject};
use cohort_alerting::notify::Matcher;
use cohort_alerting::silence::Silence;
use cohort_alerting::{RuleKind, Scope};
use sqlx::Row;

use super::Store;
use crate::jobs::JobStatus;
use crate::{Result, new_id, now_micros};

/// The `alert_evaluator` row.
const EVALUATOR: &str = "evaluator";

/// A transaction of the store.
pub(crate) type Tx<'t> = sqlx::Transaction<'t, sqlx::Any>;

mod views;

pub use views::{AlertEventView, AlertView, ReceiverView, SilenceView};

// ---- rows

/// A finished job (succeeded or failed) as the alert evaluator reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FinishedJob {
    /// The job.
    pub job_id: String,
    /// Failed (else succeeded).
    pub failed: bool,
    /// Its tenant.
    pub tenant_id: String,
    /// Its segment.
    pub segment_id: String,
    /// When it was submitted.
    pub created_at: i64,
    /// When its last attempt started, when the read says.
    pub started_at: Option<i64>,
    /// When it finished.
    pub finished_at: i64,
}

/// A finished job with its tenant's region, as a rebuild of the evaluators reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FinishedOutcome {
    /// The job.
    pub job_id: String,
    /// Failed (else succeeded).
    pub failed: bool,
    /// Its tenant.
    pub tenant_id: String,
    /// Its tenant's region.
    pub region: String,
    /// When it finished.
    pub finished_at: i64,
}

/// A firing alert as inhibition sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FiringRow {
    /// Its id.
    pub id: String,
    /// What raised it (an unknown name reads as the failure rule).
    pub rule: RuleKind,
    /// Its scope (an unknown one reads as the tenant scope).
    pub scope: Scope,
    /// Its scope key.
    pub key: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The alert inhibiting it.
    pub inhibited_by: Option<String>,
}

impl FiringRow {
    fn from_row(r: &sqlx::any::AnyRow) -> Result<FiringRow> {
        Ok(FiringRow {
            id: r.try_get(0)?,
            rule: RuleKind::parse(&r.try_get::<String, _>(1)?).unwrap_or(RuleKind::Failures),
            scope: Scope::parse(&r.try_get::<String, _>(2)?).unwrap_or(Scope::Tenant),
            key: r.try_get(3)?,
            labels: serde_json::from_str(&r.try_get::<String, _>(4)?).unwrap_or_default(),
            inhibited_by: r.try_get(5)?,
        })
    }

    /// The alert, as the decisions of `cohort_alerting::inhibit` take it.
    pub fn firing(&self) -> Firing<'_, &str> {
        Firing {
            id: &self.id,
            alert: Subject { rule: self.rule, scope: self.scope, key: &self.key, labels: &self.labels },
            inhibited_by: self.inhibited_by.as_deref(),
        }
    }
}

const FIRING_COLUMNS: &str = "id, rule, scope, alert_key, labels, inhibited_by";

/// An alert to insert, firing.
#[derive(Debug)]
pub(crate) struct NewAlert<'a> {
    /// Its id.
    pub id: &'a str,
    /// The hash of its labels.
    pub fingerprint: &'a str,
    /// What raised it.
    pub rule: RuleKind,
    /// Its scope.
    pub scope: Scope,
    /// Its scope key.
    pub key: &'a str,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: &'a BTreeMap<String, String>,
    /// The wider alert inhibiting it from the start.
    pub inhibited_by: Option<&'a str>,
    /// When it fired.
    pub started_at: i64,
    /// Failures in the window when it fired.
    pub failures: i64,
    /// When it is recorded.
    pub updated_at: i64,
}

/// A due outbox row with its receiver.
#[derive(Debug)]
pub(crate) struct DueDelivery {
    /// The row (the `webhook-id`).
    pub id: String,
    /// Its receiver.
    pub receiver: String,
    /// The alert notified, or `None` for a triage report (whose body is rendered when queued).
    pub alert: Option<String>,
    /// `firing`, `update`, `repeat` or `resolved` (a report's own kind otherwise).
    pub kind: String,
    /// The body, once rendered.
    pub body: Option<String>,
    /// Attempts made.
    pub attempts: i64,
    /// When it is due.
    pub not_before: i64,
    /// When it was queued.
    pub created_at: i64,
    /// The receiver's URL.
    pub url: String,
    /// The receiver's signing secret.
    pub secret: String,
    /// False once a 410 disabled the receiver.
    pub enabled: bool,
}

/// An alert as a notification of it shows it.
#[derive(Debug)]
pub(crate) struct NotifiedAlert {
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it fired.
    pub started_at: i64,
    /// When it resolved, if it has.
    pub resolved_at: Option<i64>,
    /// The alerts it inhibits or inhibited, `scope=key`, ordered.
    pub inhibited: Vec<String>,
}

/// A receiver that was told of an alert, for an update of it.
#[derive(Debug)]
pub(crate) struct UpdateTarget {
    /// The receiver.
    pub receiver: String,
    /// When the last notification of the alert to it (not a resolution) was queued.
    pub last_queued: i64,
    /// Those still waiting unsent.
    pub waiting: i64,
}

/// Notifications a silence held back, of one alert to one receiver.
#[derive(Debug)]
pub(crate) struct HeldBack {
    /// The outbox rows, oldest first.
    pub ids: Vec<String>,
    /// The alert.
    pub alert: String,
    /// The receiver.
    pub receiver: String,
    /// The alert's labels.
    pub labels: BTreeMap<String, String>,
}

fn json_text(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).unwrap_or_else(|_| "{}".to_string())
}

/// Matchers stored as JSON (none when unreadable).
fn matchers_of(text: &str) -> Vec<Matcher> {
    serde_json::from_str(text).unwrap_or_default()
}

// ---- the evaluator: its claim and its reads

impl Store {
    /// Gives up `instance`'s claim on the alert evaluator.
    pub(crate) async fn release_alert_evaluator(&self, instance: &str) -> Result<()> {
        sqlx::query("UPDATE alert_evaluator SET lease_until = 0 WHERE id = $1 AND owner = $2").bind(EVALUATOR).bind(instance).execute(&self.pool).await?;
        Ok(())
    }

    /// Claims the alert evaluator for `instance` until `until`, or renews its claim; the term
    /// held, or `None` when another process holds a claim that has not run out at `now`.
    pub(crate) async fn claim_alert_evaluator(&self, instance: &str, until: i64, now: i64) -> Result<Option<i64>> {
        // The term grows when the claim changes hands (SET reads the row as it was).
        let row = sqlx::query(
            "UPDATE alert_evaluator SET term = CASE WHEN owner = $1 THEN term ELSE term + 1 END, owner = $1, lease_until = $2 \
             WHERE id = $3 AND (owner = $1 OR lease_until < $4) RETURNING term",
        )
        .bind(instance)
        .bind(until)
        .bind(EVALUATOR)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => Some(row.try_get(0)?),
            None => None,
        })
    }

    /// When a job's last attempt started, if it did.
    pub(crate) async fn job_started_at(&self, job: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT started_at FROM jobs WHERE id = $1").bind(job).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(row) => row.try_get::<Option<i64>, _>(0)?,
            None => None,
        })
    }

    /// The jobs that succeeded or failed after `since`, in finishing order, with their
    /// tenants' regions.
    pub(crate) async fn finished_outcomes_since(&self, since: i64) -> Result<Vec<FinishedOutcome>> {
        let rows = sqlx::query(
            "SELECT j.finished_at, j.tenant_id, t.region, j.id, j.status FROM jobs j JOIN tenants t ON t.id = j.tenant_id \
             WHERE j.status IN ('succeeded', 'failed') AND j.finished_at > $1 ORDER BY j.finished_at",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(FinishedOutcome {
                    finished_at: row.try_get(0)?,
                    tenant_id: row.try_get(1)?,
                    region: row.try_get(2)?,
                    job_id: row.try_get(3)?,
                    failed: row.try_get::<String, _>(4)? == JobStatus::Failed.as_str(),
                })
            })
            .collect()
    }

    /// Each segment's last `per_segment` runs that succeeded or failed after `since`, in
    /// finishing order (then by id).
    pub(crate) async fn recent_runs_per_segment(&self, since: i64, per_segment: i64) -> Result<Vec<FinishedJob>> {
        let rows = sqlx::query(
            "SELECT id, status, tenant_id, segment_id, created_at, started_at, finished_at FROM \
             (SELECT id, status, tenant_id, segment_id, created_at, started_at, finished_at, \
              ROW_NUMBER() OVER (PARTITION BY tenant_id, segment_id ORDER BY finished_at DESC, id DESC) AS n \
              FROM jobs WHERE status IN ('succeeded', 'failed') AND finished_at > $1) recent \
             WHERE n <= $2 ORDER BY finished_at, id",
        )
        .bind(since)
        .bind(per_segment)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(FinishedJob {
                    job_id: row.try_get(0)?,
                    failed: row.try_get::<String, _>(1)? == JobStatus::Failed.as_str(),
                    tenant_id: row.try_get(2)?,
                    segment_id: row.try_get(3)?,
                    created_at: row.try_get(4)?,
                    started_at: row.try_get(5)?,
                    finished_at: row.try_get(6)?,
                })
            })
            .collect()
    }

    /// The jobs that succeeded or failed after `since`, in finishing order (cancelled ones count
    /// nowhere). The index `jobs_finished` (status, finished_at) serves it.
    pub(crate) async fn jobs_finished_since(&self, since: i64) -> Result<Vec<FinishedJob>> {
        let rows = sqlx::query(
            "SELECT id, status, tenant_id, segment_id, created_at, finished_at FROM jobs \
             WHERE status IN ('succeeded', 'failed') AND finished_at > $1 ORDER BY finished_at",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(FinishedJob {
                    job_id: row.try_get(0)?,
                    failed: row.try_get::<String, _>(1)? == JobStatus::Failed.as_str(),
                    tenant_id: row.try_get(2)?,
                    segment_id: row.try_get(3)?,
                    created_at: row.try_get(4)?,
                    started_at: None,
                    finished_at: row.try_get(5)?,
                })
            })
            .collect()
    }

    /// The scope and key of every alert of `rule` that fires.
    pub(crate) async fn firing_keys(&self, rule: RuleKind) -> Result<Vec<(Scope, String)>> {
        let rows = sqlx::query("SELECT scope, alert_key FROM alerts WHERE state = 'firing' AND rule = $1").bind(rule.as_str()).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (scope, key): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            out.push((Scope::parse(&scope).unwrap_or(Scope::Tenant), key));
        }
        Ok(out)
    }
}

// ---- recording a transition (inside its transaction)

/// Whether `instance` in `term` still holds the claim on the evaluator; the row stays locked
/// until the transaction ends, so the claim cannot change hands before it commits.
pub(crate) async fn still_leads(tx: &mut Tx<'_>, instance: &str, term: i64) -> Result<bool> {
    let row = sqlx::query("SELECT owner, term FROM alert_evaluator WHERE id = $1 FOR UPDATE").bind(EVALUATOR).fetch_optional(&mut **tx).await?;
    Ok(match row {
        Some(row) => row.try_get::<String, _>(0)? == instance && row.try_get::<i64, _>(1)? == term,
        None => false,
    })
}

/// The firing alert of `rule` at `scope` and `key`: its id and the alert inhibiting it.
pub(crate) async fn firing_alert(tx: &mut Tx<'_>, rule: RuleKind, scope: Scope, key: &str) -> Result<Option<(String, Option<String>)>> {
    let row = sqlx::query("SELECT id, inhibited_by FROM alerts WHERE rule = $1 AND scope = $2 AND alert_key = $3 AND state = 'firing'")
        .bind(rule.as_str())
        .bind(scope.as_str())
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match row {
        Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
        None => None,
    })
}

/// The firing alerts at these (rule, scope, key) places, in their order.
pub(crate) async fn firing_at(tx: &mut Tx<'_>, places: &[(RuleKind, Scope, String)]) -> Result<Vec<FiringRow>> {
    let mut out = Vec::new();
    for (rule, scope, key) in places {
        let row = sqlx::query(&format!("SELECT {FIRING_COLUMNS} FROM alerts WHERE rule = $1 AND scope = $2 AND alert_key = $3 AND state = 'firing'"))
            .bind(rule.as_str())
            .bind(scope.as_str())
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
        if let Some(row) = row {
            out.push(FiringRow::from_row(&row)?);
        }
    }
    Ok(out)
}

/// The firing alerts of these rules that nothing inhibits.
pub(crate) async fn firing_uninhibited(tx: &mut Tx<'_>, rules: &[RuleKind]) -> Result<Vec<FiringRow>> {
    let mut out = Vec::new();
    for rule in rules {
        let rows = sqlx::query(&format!("SELECT {FIRING_COLUMNS} FROM alerts WHERE rule = $1 AND state = 'firing' AND inhibited_by IS NULL"))
            .bind(rule.as_str())
            .fetch_all(&mut **tx)
            .await?;
        for row in &rows {
            out.push(FiringRow::from_row(row)?);
        }
    }
    Ok(out)
}

/// The firing alerts that `wider` inhibits.
pub(crate) async fn firing_inhibited_by(tx: &mut Tx<'_>, wider: &str) -> Result<Vec<FiringRow>> {
    let rows =
        sqlx::query(&format!("SELECT {FIRING_COLUMNS} FROM alerts WHERE inhibited_by = $1 AND state = 'firing'")).bind(wider).fetch_all(&mut **tx).await?;
    rows.iter().map(FiringRow::from_row).collect()
}

/// Inserts an alert, firing.
pub(crate) async fn insert_alert(tx: &mut Tx<'_>, a: &NewAlert<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO alerts (id, fingerprint, rule, scope, alert_key, labels, annotations, state, inhibited_by, started_at, failures, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'firing', $8, $9, $10, $11)",
    )
    .bind(a.id)
    .bind(a.fingerprint)
    .bind(a.rule.as_str())
    .bind(a.scope.as_str())
    .bind(a.key)
    .bind(json_text(a.labels))
    .bind(json_text(a.annotations))
    .bind(a.inhibited_by)
    .bind(a.started_at)
    .bind(a.failures)
    .bind(a.updated_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Sets (or clears) the alert inhibiting `alert`.
pub(crate) async fn set_inhibited_by(tx: &mut Tx<'_>, alert: &str, wider: Option<&str>, now: i64) -> Result<()> {
    sqlx::query("UPDATE alerts SET inhibited_by = $1, updated_at = $2 WHERE id = $3").bind(wider).bind(now).bind(alert).execute(&mut **tx).await?;
    Ok(())
}

/// Resolves a firing alert at `at`; false when it no longer fires (another transaction
/// resolved it).
pub(crate) async fn resolve_alert(tx: &mut Tx<'_>, alert: &str, at: i64, failures: i64, now: i64) -> Result<bool> {
    let resolved = sqlx::query("UPDATE alerts SET state = 'resolved', resolved_at = $1, failures = $2, updated_at = $3 WHERE id = $4 AND state = 'firing'")
        .bind(at)
        .bind(failures)
        .bind(now)
        .bind(alert)
        .execute(&mut **tx)
        .await?;
    Ok(resolved.rows_affected() > 0)
}

/// Appends to an alert's history.
pub(crate) async fn alert_event(tx: &mut Tx<'_>, alert: &str, at: i64, kind: &str, detail: &str) -> Result<()> {
    sqlx::query("INSERT INTO alert_events (alert_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
        .bind(alert)
        .bind(at)
        .bind(kind)
        .bind(detail)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The receivers that were told of `alert`: queued a notification of it that is not a
/// resolution.
pub(crate) async fn receivers_told(tx: &mut Tx<'_>, alert: &str) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT DISTINCT receiver_id FROM deliveries WHERE alert_id = $1 AND kind <> 'resolved'").bind(alert).fetch_all(&mut **tx).await?;
    Ok(rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?)
}

/// The enabled receivers and their matchers.
pub(crate) async fn enabled_receivers(tx: &mut Tx<'_>) -> Result<Vec<(String, Vec<Matcher>)>> {
    let rows = sqlx::query("SELECT id, matchers FROM receivers WHERE enabled = 1").fetch_all(&mut **tx).await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, matchers_of(&row.try_get::<String, _>(1)?)))).collect()
}

/// The receivers told of `alert`, each with when its last notification of it was queued and
/// how many of them wait unsent.
pub(crate) async fn update_targets(tx: &mut Tx<'_>, alert: &str) -> Result<Vec<UpdateTarget>> {
    let rows = sqlx::query(
        "SELECT receiver_id, MAX(created_at), SUM(CASE WHEN state = 'pending' AND body IS NULL THEN 1 ELSE 0 END) \
         FROM deliveries WHERE alert_id = $1 AND kind <> 'resolved' GROUP BY receiver_id",
    )
    .bind(alert)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(|row| Ok(UpdateTarget { receiver: row.try_get(0)?, last_queued: row.try_get(1)?, waiting: row.try_get(2)? })).collect()
}

/// Queues a notification of `alert` to `receiver`, due at `not_before`.
pub(crate) async fn insert_delivery(tx: &mut Tx<'_>, receiver: &str, alert: &str, kind: Kind, not_before: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO deliveries (id, receiver_id, alert_id, kind, state, attempts, not_before, created_at) \
         VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6)",
    )
    .bind(new_id("msg_"))
    .bind(receiver)
    .bind(alert)
    .bind(kind.as_str())
    .bind(not_before)
    .bind(now_micros())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Claims a firing alert's repeat: its last notification becomes `now` if it was at or before
/// `cutoff` (so replicas never repeat it twice); whether this claim took it.
pub(crate) async fn claim_repeat(tx: &mut Tx<'_>, alert: &str, now: i64, cutoff: i64) -> Result<bool> {
    let claimed =
        sqlx::query("UPDATE alerts SET notified_at = $1 WHERE id = $2 AND notified_at <= $3").bind(now).bind(alert).bind(cutoff).execute(&mut **tx).await?;
    Ok(claimed.rows_affected() == 1)
}

// ---- the outbox

impl Store {
    /// Up to `limit` outbox rows due at `now`, oldest due first, with their receivers.
    pub(crate) async fn due_deliveries(&self, now: i64, limit: i64) -> Result<Vec<DueDelivery>> {
        let rows = sqlx::query(
            "SELECT d.id, d.receiver_id, d.alert_id, d.kind, d.body, d.attempts, d.not_before, d.created_at, r.url, r.secret, r.enabled \
             FROM deliveries d JOIN receivers r ON r.id = d.receiver_id \
             WHERE d.state = 'pending' AND d.not_before <= $1 ORDER BY d.not_before, d.id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueDelivery {
                    id: r.try_get(0)?,
                    receiver: r.try_get(1)?,
                    alert: r.try_get(2)?,
                    kind: r.try_get(3)?,
                    body: r.try_get(4)?,
                    attempts: r.try_get(5)?,
                    not_before: r.try_get(6)?,
                    created_at: r.try_get(7)?,
                    url: r.try_get(8)?,
                    secret: r.try_get(9)?,
                    enabled: r.try_get::<i64, _>(10)? != 0,
                })
            })
            .collect()
    }

    /// When the next pending outbox row is due.
    pub(crate) async fn next_delivery_due(&self) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MIN(not_before) FROM deliveries WHERE state = 'pending'").fetch_one(&self.pool).await?;
        Ok(row.try_get::<Option<i64>, _>(0)?)
    }

    /// Claims a pending row due at `not_before` until `lease` (compare-and-set: another replica,
    /// or a later round, leaves it alone meanwhile); whether this claim took it.
    pub(crate) async fn claim_delivery(&self, id: &str, lease: i64, not_before: i64) -> Result<bool> {
        let claimed = sqlx::query("UPDATE deliveries SET not_before = $1 WHERE id = $2 AND state = 'pending' AND not_before = $3")
            .bind(lease)
            .bind(id)
            .bind(not_before)
            .execute(&self.pool)
            .await?;
        Ok(claimed.rows_affected() > 0)
    }

    /// Stores the body rendered at a row's first attempt (sent unchanged after).
    pub(crate) async fn set_delivery_body(&self, id: &str, body: &str) -> Result<()> {
        sqlx::query("UPDATE deliveries SET body = $1 WHERE id = $2 AND body IS NULL").bind(body).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// A row was delivered at `now`; its alert's history says so, in the same transaction, so
    /// nobody reads the one without the other, even after a crash between them.
    pub(crate) async fn record_delivered(&self, d: &DueDelivery, now: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, delivered_at = $1 WHERE id = $2")
            .bind(now_micros())
            .bind(&d.id)
            .execute(&mut *tx)
            .await?;
        if let Some(alert) = &d.alert {
            sqlx::query("UPDATE alerts SET notified_at = $1 WHERE id = $2").bind(now).bind(alert).execute(&mut *tx).await?;
            alert_event(&mut tx, alert, now, "notified", &format!("{} to {} ({})", d.kind, d.receiver, d.id)).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Disables a receiver, saying why.
    pub(crate) async fn disable_receiver(&self, id: &str, reason: &str) -> Result<()> {
        sqlx::query("UPDATE receivers SET enabled = 0, disabled_reason = $1 WHERE id = $2").bind(reason).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// An attempt failed: the row is due again at `next`.
    pub(crate) async fn retry_delivery(&self, id: &str, next: i64, why: &str) -> Result<()> {
        sqlx::query("UPDATE deliveries SET attempts = attempts + 1, not_before = $1, last_error = $2 WHERE id = $3")
            .bind(next)
            .bind(why)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends a row in `state` (`dead` or `silenced`), with why when given.
    pub(crate) async fn finish_delivery(&self, id: &str, state: &str, error: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE deliveries SET state = $1, attempts = attempts + 1, delivered_at = $2, last_error = COALESCE($3, last_error) WHERE id = $4")
            .bind(state)
            .bind(now_micros())
            .bind(error)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// An alert as its notification shows it, with what it inhibits.
    pub(crate) async fn alert_to_notify(&self, id: &str) -> Result<Option<NotifiedAlert>> {
        let Some(row) = sqlx::query("SELECT labels, annotations, started_at, resolved_at, state, failures FROM alerts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let inhibited = sqlx::query("SELECT scope, alert_key FROM alerts WHERE inhibited_by = $1 ORDER BY scope, alert_key")
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok::<_, sqlx::Error>(format!("{}={}", r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
            .collect::<Result<_, _>>()?;
        Ok(Some(NotifiedAlert {
            labels: serde_json::from_str(&row.try_get::<String, _>(0)?).unwrap_or_default(),
            annotations: serde_json::from_str(&row.try_get::<String, _>(1)?).unwrap_or_default(),
            started_at: row.try_get(2)?,
            resolved_at: row.try_get(3)?,
            inhibited,
        }))
    }

    /// The silences active at `now`.
    pub(crate) async fn active_silences(&self, now: i64) -> Result<Vec<Silence>> {
        let rows =
            sqlx::query("SELECT matchers, starts_at, ends_at FROM silences WHERE starts_at <= $1 AND ends_at > $1").bind(now).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| Ok(Silence { matchers: matchers_of(&row.try_get::<String, _>(0)?), starts_at: row.try_get(1)?, ends_at: row.try_get(2)? }))
            .collect()
    }

    /// When the next silence to end after `now` ends, if one does.
    pub(crate) async fn next_silence_end(&self, now: i64) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MIN(ends_at) FROM silences WHERE ends_at > $1").bind(now).fetch_one(&self.pool).await?;
        Ok(row.try_get::<Option<i64>, _>(0)?)
    }

    /// The notifications a silence held back (not resolutions) of alerts that still fire, not
    /// inhibited, to enabled receivers: by alert and receiver, oldest first.
    pub(crate) async fn held_back(&self) -> Result<Vec<HeldBack>> {
        let rows = sqlx::query(
            "SELECT d.id, d.alert_id, d.receiver_id, a.labels FROM deliveries d \
             JOIN alerts a ON a.id = d.alert_id JOIN receivers r ON r.id = d.receiver_id \
             WHERE d.state = 'silenced' AND d.kind <> 'resolved' AND a.state = 'firing' AND a.inhibited_by IS NULL AND r.enabled = 1 \
             ORDER BY d.created_at",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut held: BTreeMap<(String, String), HeldBack> = BTreeMap::new();
        for row in rows {
            let (id, alert, receiver, labels): (String, String, String, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
            held.entry((alert.clone(), receiver.clone()))
                .or_insert_with(|| HeldBack { ids: Vec::new(), alert, receiver, labels: serde_json::from_str(&labels).unwrap_or_default() })
                .ids
                .push(id);
        }
        Ok(held.into_values().collect())
    }

    /// Releases what a silence held back of one alert to one receiver, and queues a `firing`
    /// notification of it in its place, in one transaction; false when another process
    /// released them first (each row is released once: compare-and-set).
    pub(crate) async fn release_held(&self, held: &HeldBack, now: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let mut released = 0;
        for id in &held.ids {
            released +=
                sqlx::query("UPDATE deliveries SET state = 'released' WHERE id = $1 AND state = 'silenced'").bind(id).execute(&mut *tx).await?.rows_affected();
        }
        if released > 0 {
            insert_delivery(&mut tx, &held.receiver, &held.alert, Kind::Firing, now).await?;
            alert_event(&mut tx, &held.alert, now, "unsilenced", &format!("the silence ended; notifying {}", held.receiver)).await?;
        }
        tx.commit().await?;
        Ok(released > 0)
    }

    /// Firing alerts nothing inhibits, notified on their own at or before `cutoff`: their ids
    /// and labels.
    pub(crate) async fn repeats_due(&self, cutoff: i64) -> Result<Vec<(String, BTreeMap<String, String>)>> {
        let rows =
            sqlx::query("SELECT id, labels FROM alerts WHERE state = 'firing' AND inhibited_by IS NULL AND notified_at IS NOT NULL AND notified_at <= $1")
                .bind(cutoff)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, serde_json::from_str(&row.try_get::<String, _>(1)?).unwrap_or_default()))).collect()
    }
}
