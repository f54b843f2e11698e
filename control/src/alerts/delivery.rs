//! Delivery: the outbox sent to the webhook receivers. Due rows are claimed by
//! compare-and-set (replicas never send one row twice at once), signed as Standard Webhooks do
//! it, the body rendered at the first attempt and resent unchanged with the same `webhook-id`.
//! Failures back off exponentially with jitter, `Retry-After` is honoured, 410 disables the
//! receiver. Whether a silence holds a notification back is decided when it is sent
//! ([`cohort_alerting::silence`]); repeats and what a silence released are queued here
//! ([`cohort_alerting::dispatch`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cohort_alerting::dispatch::{Kind, repeat_check_every};
use cohort_alerting::{notify, silence};

use super::Alerting;
use crate::store::alerts::{self as store, DueDelivery};
use crate::{Result, now_micros};

impl Alerting {
    /// Sends due notifications until the process stops.
    pub async fn deliver(self: Arc<Self>) {
        let mut next_repeat = tokio::time::Instant::now();
        loop {
            let mut busy = false;
            match self.store.due_deliveries(now_micros(), 32).await {
                Ok(due) => {
                    busy = due.len() == 32;
                    for d in due {
                        if let Err(e) = self.send(d).await {
                            tracing::warn!(error = %e, "delivery: store error");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "delivery: cannot read the outbox"),
            }
            if tokio::time::Instant::now() >= next_repeat {
                next_repeat = tokio::time::Instant::now() + repeat_check_every(self.settings.repeat_interval);
                match self.queue_repeats().await {
                    Ok(true) => busy = true,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "delivery: cannot queue repeats"),
                }
            }
            match self.queue_unsilenced().await {
                Ok(true) => busy = true,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "delivery: cannot queue the notifications a silence held back"),
            }
            if busy {
                continue;
            }
            let now = now_micros();
            let next = self.store.next_delivery_due().await.ok().flatten();
            // A silence that ends releases what it held back then.
            let next = match (next, self.store.next_silence_end(now).await.ok().flatten()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wait = next.map_or(Duration::from_secs(60), |at| Duration::from_micros(u64::try_from(at - now).unwrap_or(0)));
            let deadline = (tokio::time::Instant::now() + wait.min(Duration::from_secs(60))).min(next_repeat);
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// One attempt at one notification.
    async fn send(&self, d: DueDelivery) -> Result<()> {
        let now = now_micros();
        // Claim the row: another replica (or a later round) leaves it alone meanwhile.
        let lease = now + i64::try_from(self.settings.timeout.as_micros()).unwrap_or(10_000_000) + 5_000_000;
        if !self.store.claim_delivery(&d.id, lease, d.not_before).await? {
            return Ok(());
        }
        if !d.enabled {
            self.finish(&d, "dead", Some("the receiver is disabled")).await?;
            return Ok(());
        }
        let body = match (d.body.clone(), &d.alert) {
            (Some(body), _) => body,
            (None, None) => {
                self.finish(&d, "dead", Some("a report notification without a body")).await?;
                return Ok(());
            }
            (None, Some(alert_id)) => {
                let Some((labels, mut alert)) = self.alert(alert_id).await? else {
                    self.finish(&d, "dead", Some("the alert is gone")).await?;
                    return Ok(());
                };
                if self.silenced(&labels, now).await? {
                    self.counts.silenced.fetch_add(1, Ordering::Relaxed);
                    self.finish(&d, "silenced", None).await?;
                    return Ok(());
                }
                if Kind::parse(&d.kind).is_none_or(Kind::shows_firing) {
                    // A firing notification that left after the alert resolved says it fires:
                    // the resolved one follows.
                    alert.ends_at = None;
                }
                let body = notify::payload(&d.receiver, &self.settings.external_url, &[alert]).to_string();
                self.store.set_delivery_body(&d.id, &body).await?;
                body
            }
        };
        if let Err(why) = reqwest::Url::parse(&d.url).map_err(|e| e.to_string()).and_then(|url| self.settings.egress.check_url(&url)) {
            tracing::warn!(receiver = %d.receiver, error = %why, "webhook address refused");
            return self.finish(&d, "dead", Some(&format!("webhook address refused: {why}"))).await;
        }
        let timestamp = now / 1_000_000;
        let signature = notify::sign(&d.secret, &d.id, timestamp, body.as_bytes());
        let answer = self
            .client
            .post(&d.url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match answer {
            Ok(a) if a.status().is_success() => {
                self.counts.delivered.fetch_add(1, Ordering::Relaxed);
                // Delivered, and the alert's history says so, in one transaction.
                self.store.record_delivered(&d, now).await?;
            }
            Ok(a) if a.status() == reqwest::StatusCode::GONE => {
                self.counts.disabled.fetch_add(1, Ordering::Relaxed);
                self.store.disable_receiver(&d.receiver, "the receiver answered 410 Gone").await?;
                self.finish(&d, "dead", Some("410 Gone: receiver disabled")).await?;
                tracing::warn!(receiver = %d.receiver, "receiver answered 410 Gone: disabled");
            }
            Ok(a) => {
                let retry_after = a.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| notify::retry_after(v, now / 1000));
                let why = if a.status().is_redirection() { format!("HTTP {}: redirects are not followed", a.status()) } else { format!("HTTP {}", a.status()) };
                self.retry(&d, &why, retry_after).await?;
            }
            Err(e) => self.retry(&d, &error_chain(&e), None).await?,
        }
        Ok(())
    }

    async fn retry(&self, d: &DueDelivery, why: &str, retry_after: Option<Duration>) -> Result<()> {
        self.counts.failed.fetch_add(1, Ordering::Relaxed);
        let now = now_micros();
        let give_up = d.created_at.saturating_add(i64::try_from(self.settings.give_up_after.as_micros()).unwrap_or(i64::MAX));
        if now >= give_up {
            self.counts.gave_up.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(delivery = %d.id, receiver = %d.receiver, error = why, "notification given up");
            return self.finish(d, "dead", Some(&format!("given up: {why}"))).await;
        }
        let attempt = u32::try_from(d.attempts + 1).unwrap_or(u32::MAX);
        let wait = cohort_common::backoff::equal_jitter(self.settings.retry_base, self.settings.retry_max, attempt, rand::random::<f64>())
            .max(retry_after.unwrap_or_default());
        let next = now + i64::try_from(wait.as_micros()).unwrap_or(i64::MAX / 2);
        self.store.retry_delivery(&d.id, next, why).await?;
        tracing::debug!(delivery = %d.id, receiver = %d.receiver, error = why, wait_ms = wait.as_millis() as u64, "notification will be retried");
        Ok(())
    }

    async fn finish(&self, d: &DueDelivery, state: &str, error: Option<&str>) -> Result<()> {
        self.store.finish_delivery(&d.id, state, error).await
    }

    /// An alert as a notification shows it: its labels, annotations (with what it inhibits).
    async fn alert(&self, id: &str) -> Result<Option<(BTreeMap<String, String>, notify::Alert)>> {
        let Some(row) = self.store.alert_to_notify(id).await? else { return Ok(None) };
        let mut annotations = row.annotations;
        if !row.inhibited.is_empty() {
            annotations.insert("inhibited".to_string(), row.inhibited.join(","));
        }
        let alert = notify::Alert {
            labels: row.labels.clone(),
            annotations,
            starts_at: row.started_at / 1000,
            ends_at: row.resolved_at.map(|r| r / 1000),
            link: format!("/v1/alerts/{id}"),
        };
        Ok(Some((row.labels, alert)))
    }

    /// Whether an active silence holds back the notifications of an alert with `labels` now.
    async fn silenced(&self, labels: &BTreeMap<String, String>, now: i64) -> Result<bool> {
        Ok(silence::silenced(&self.store.active_silences(now).await?, labels, now))
    }

    /// Alerts that still fire, not inhibited, whose notification to a receiver a silence held
    /// back and that no silence holds back any more: notified to that receiver now (a
    /// `firing` notification; repeats follow from it). Each held-back row is released once
    /// (compare-and-set, so replicas never queue one twice).
    async fn queue_unsilenced(&self) -> Result<bool> {
        let now = now_micros();
        let mut any = false;
        for held in self.store.held_back().await? {
            if self.silenced(&held.labels, now).await? {
                continue;
            }
            any |= self.store.release_held(&held, now).await?;
        }
        Ok(any)
    }

    /// Firing alerts notified on their own longer than `repeat_interval` ago: notified again.
    async fn queue_repeats(&self) -> Result<bool> {
        let now = now_micros();
        let cutoff = self.settings.timing().repeat_cutoff(now);
        let mut any = false;
        for (id, labels) in self.store.repeats_due(cutoff).await? {
            let mut tx = self.store.begin_write().await?;
            if store::claim_repeat(&mut tx, &id, now, cutoff).await? {
                any |= self.queue(&mut tx, &id, &labels, Kind::Repeat, now).await?;
            }
            tx.commit().await?;
        }
        Ok(any)
    }
}

/// An error with its causes, so a refused address says which and why.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}
