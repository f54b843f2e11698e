//! The alert API's reads and writes: alerts with their history, silences and receivers, and
//! the views the API shows them in.

use std::collections::BTreeMap;

use cohort_alerting::notify::Matcher;
use cohort_alerting::silence::Silence;
use serde::Serialize;
use sqlx::Row;

use super::matchers_of;
use crate::store::Store;
use crate::{Result, new_id, now_micros};

/// An alert as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertView {
    /// Its id.
    pub id: String,
    /// The hash of its labels (stable across firings).
    pub fingerprint: String,
    /// `failures`, `burn_rate` or `runtime`.
    pub rule: String,
    /// `global`, `region` or `tenant`.
    pub scope: String,
    /// The scope key: `global`, a region or a tenant.
    pub key: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// Its labels (as in the notification).
    pub labels: BTreeMap<String, String>,
    /// Its annotations (summary, failures).
    pub annotations: BTreeMap<String, String>,
    /// The wider alert that inhibits it, while it does.
    pub inhibited_by: Option<String>,
    /// The narrower alerts it inhibits (or inhibited).
    pub inhibits: Vec<String>,
    /// When it fired.
    pub started_at: String,
    /// When it resolved.
    pub resolved_at: Option<String>,
    /// Failures in the window at its last transition.
    pub failures: i64,
    /// Its history (only on GET of one alert).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AlertEventView>,
}

/// One entry of an alert's history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertEventView {
    /// When.
    pub at: String,
    /// `fired`, `inhibited`, `uninhibited`, `unsilenced`, `notified` or `resolved`.
    pub kind: String,
    /// More about it.
    pub detail: String,
}

/// A silence.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SilenceView {
    /// Its id.
    pub id: String,
    /// Label matchers, all of which must hold.
    pub matchers: Vec<String>,
    /// When it starts.
    pub starts_at: String,
    /// When it ends.
    pub ends_at: String,
    /// Why it was made.
    pub comment: String,
    /// Whether it silences now.
    pub active: bool,
}

/// A webhook receiver (its secret is shown once, when it is created).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReceiverView {
    /// Its id.
    pub id: String,
    /// Where notifications are POSTed.
    pub url: String,
    /// Label matchers, all of which must hold.
    pub matchers: Vec<String>,
    /// False once a 410 disabled it.
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The signing secret (only when created).
    pub secret: Option<String>,
    /// Notifications waiting, delivered, and given up.
    pub pending: i64,
    /// Notifications delivered.
    pub delivered: i64,
    /// Notifications given up.
    pub dead: i64,
    /// Why the oldest waiting notification's last attempt failed.
    pub last_error: Option<String>,
}

const ALERT_COLUMNS: &str = "id, fingerprint, rule, scope, alert_key, state, labels, annotations, inhibited_by, started_at, resolved_at, failures";

/// Store queries behind the alert API.
impl Store {
    /// Alerts, newest first: `state` = `firing`, `resolved` or all; only `tenant`'s when given.
    pub async fn alerts(&self, state: Option<&str>, tenant: Option<&str>, limit: i64) -> Result<Vec<AlertView>> {
        // A tenant's alerts: its tenant-scope failure and burn-rate alerts (key = tenant) and
        // its segments' runtime alerts (key = tenant/segment).
        let rows = sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE ($1 = '' OR state = $1) \
             AND ($2 = '' OR (scope = 'tenant' AND (alert_key = $2 OR substr(alert_key, 1, length($2) + 1) = $2 || '/'))) \
             ORDER BY started_at DESC, id DESC LIMIT $3"
        ))
        .bind(state.unwrap_or(""))
        .bind(tenant.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(self.alert_view(r).await?);
        }
        Ok(out)
    }

    /// One alert with its history.
    pub async fn alert(&self, id: &str) -> Result<Option<AlertView>> {
        let row = sqlx::query(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1")).bind(id).fetch_optional(self.pool()).await?;
        let Some(row) = row else { return Ok(None) };
        let mut alert = self.alert_view(&row).await?;
        let rows = sqlx::query("SELECT at, kind, detail FROM alert_events WHERE alert_id = $1 ORDER BY at").bind(id).fetch_all(self.pool()).await?;
        alert.history = rows
            .iter()
            .map(|r| Ok::<_, sqlx::Error>(AlertEventView { at: crate::rfc3339(r.try_get(0)?), kind: r.try_get(1)?, detail: r.try_get(2)? }))
            .collect::<Result<_, _>>()?;
        Ok(Some(alert))
    }

    async fn alert_view(&self, r: &sqlx::any::AnyRow) -> Result<AlertView> {
        let id: String = r.try_get(0)?;
        let inhibits = sqlx::query("SELECT id FROM alerts WHERE inhibited_by = $1").bind(&id).fetch_all(self.pool()).await?;
        Ok(AlertView {
            inhibits: inhibits.iter().map(|x| x.try_get(0)).collect::<Result<_, _>>()?,
            id,
            fingerprint: r.try_get(1)?,
            rule: r.try_get(2)?,
            scope: r.try_get(3)?,
            key: r.try_get(4)?,
            state: r.try_get(5)?,
            labels: serde_json::from_str(&r.try_get::<String, _>(6)?).unwrap_or_default(),
            annotations: serde_json::from_str(&r.try_get::<String, _>(7)?).unwrap_or_default(),
            inhibited_by: r.try_get(8)?,
            started_at: crate::rfc3339(r.try_get(9)?),
            resolved_at: r.try_get::<Option<i64>, _>(10)?.map(crate::rfc3339),
            failures: r.try_get(11)?,
            history: Vec::new(),
        })
    }

    /// Firing alerts by rule and scope (for `/metrics`).
    pub async fn firing_alerts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query("SELECT rule, scope, COUNT(*) FROM alerts WHERE state = 'firing' GROUP BY rule, scope").fetch_all(self.pool()).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    /// Stores a silence.
    pub async fn create_silence(&self, matchers: &[Matcher], starts_at: i64, ends_at: i64, comment: &str) -> Result<SilenceView> {
        let id = new_id("sil_");
        sqlx::query("INSERT INTO silences (id, matchers, starts_at, ends_at, comment, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&id)
            .bind(serde_json::to_string(matchers).unwrap_or_else(|_| "[]".into()))
            .bind(starts_at)
            .bind(ends_at)
            .bind(comment)
            .bind(now_micros())
            .execute(self.pool())
            .await?;
        let silence = Silence { matchers: matchers.to_vec(), starts_at, ends_at };
        Ok(SilenceView {
            id,
            matchers: matchers.iter().map(Matcher::to_string).collect(),
            starts_at: crate::rfc3339(starts_at),
            ends_at: crate::rfc3339(ends_at),
            comment: comment.to_string(),
            active: silence.active_at(now_micros()),
        })
    }

    /// Silences, newest first (expired ones included).
    pub async fn silences(&self) -> Result<Vec<SilenceView>> {
        let now = now_micros();
        let rows = sqlx::query("SELECT id, matchers, starts_at, ends_at, comment FROM silences ORDER BY created_at DESC").fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                let silence = Silence { matchers: matchers_of(&r.try_get::<String, _>(1)?), starts_at: r.try_get(2)?, ends_at: r.try_get(3)? };
                Ok(SilenceView {
                    id: r.try_get(0)?,
                    matchers: silence.matchers.iter().map(Matcher::to_string).collect(),
                    starts_at: crate::rfc3339(silence.starts_at),
                    ends_at: crate::rfc3339(silence.ends_at),
                    comment: r.try_get(4)?,
                    active: silence.active_at(now),
                })
            })
            .collect()
    }

    /// Ends a silence now; false when there is none by that id.
    pub async fn expire_silence(&self, id: &str) -> Result<bool> {
        let now = now_micros();
        let done = sqlx::query("UPDATE silences SET ends_at = $1 WHERE id = $2 AND ends_at > $1").bind(now).bind(id).execute(self.pool()).await?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        Ok(sqlx::query("SELECT id FROM silences WHERE id = $1").bind(id).fetch_optional(self.pool()).await?.is_some())
    }

    /// Stores a receiver; false when the id is taken.
    pub async fn create_receiver(&self, id: &str, url: &str, secret: &str, matchers: &[Matcher]) -> Result<bool> {
        let done =
            sqlx::query("INSERT INTO receivers (id, url, secret, matchers, enabled, created_at) VALUES ($1, $2, $3, $4, 1, $5) ON CONFLICT (id) DO NOTHING")
                .bind(id)
                .bind(url)
                .bind(secret)
                .bind(serde_json::to_string(matchers).unwrap_or_else(|_| "[]".into()))
                .bind(now_micros())
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Receivers with their delivery counts.
    pub async fn receivers(&self) -> Result<Vec<ReceiverView>> {
        let rows = sqlx::query(
            "SELECT r.id, r.url, r.matchers, r.enabled, r.disabled_reason, \
             (SELECT COUNT(*) FROM deliveries d WHERE d.receiver_id = r.id AND d.state = 'pending'), \
             (SELECT COUNT(*) FROM deliveries d WHERE d.receiver_id = r.id AND d.state = 'delivered'), \
             (SELECT COUNT(*) FROM deliveries d WHERE d.receiver_id = r.id AND d.state = 'dead'), \
             (SELECT d.last_error FROM deliveries d WHERE d.receiver_id = r.id AND d.state = 'pending' AND d.last_error IS NOT NULL \
              ORDER BY d.created_at LIMIT 1) \
             FROM receivers r ORDER BY r.id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReceiverView {
                    id: r.try_get(0)?,
                    url: r.try_get(1)?,
                    matchers: matchers_of(&r.try_get::<String, _>(2)?).iter().map(Matcher::to_string).collect(),
                    enabled: r.try_get::<i64, _>(3)? != 0,
                    disabled_reason: r.try_get(4)?,
                    secret: None,
                    pending: r.try_get(5)?,
                    delivered: r.try_get(6)?,
                    dead: r.try_get(7)?,
                    last_error: r.try_get(8)?,
                })
            })
            .collect()
    }

    /// Deletes a receiver (and its undelivered notifications); false when there is none.
    pub async fn delete_receiver(&self, id: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM deliveries WHERE receiver_id = $1").bind(id).execute(&mut *tx).await?;
        let done = sqlx::query("DELETE FROM receivers WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }
}
