//! Recording transitions: each one store transaction that holds the alert row, its history,
//! its inhibition and the outbox rows of its notifications. What is inhibited and what is
//! notified are `cohort_alerting`'s decisions ([`cohort_alerting::inhibit`],
//! [`cohort_alerting::dispatch`]) over the rows the store reads, the same decisions `cohort
//! alerts replay` takes over its alerts in memory.

use std::collections::BTreeMap;

use cohort_alerting::dispatch::{Kind, update_wanted};
use cohort_alerting::inhibit::{self, Firing, Subject};
use cohort_alerting::notify;
use cohort_alerting::{Scope, State};

use super::{Alerting, Change, Term};
use crate::store::alerts::{self as store, FiringRow, NewAlert, Tx};
use crate::{Result, new_id, now_micros};

fn firing(rows: &[FiringRow]) -> Vec<Firing<'_, &str>> {
    rows.iter().map(FiringRow::firing).collect()
}

impl Alerting {
    /// Records transitions in order; false when `lead` no longer holds the claim on the
    /// evaluator (what is left is not recorded: the process that holds it now records it).
    pub(super) async fn apply_all(&self, changes: Vec<Change>, lead: Option<&Term>) -> Result<bool> {
        let mut raised = false;
        let mut leading = true;
        for change in changes {
            match self.apply(&change, lead).await? {
                Some(queued) => raised |= queued,
                None => {
                    leading = false;
                    break;
                }
            }
        }
        if raised {
            self.wake();
        }
        Ok(leading)
    }

    /// Records one transition: whether it queued notifications, or `None` when `lead` no
    /// longer holds the claim on the evaluator (nothing recorded).
    async fn apply(&self, c: &Change, lead: Option<&Term>) -> Result<Option<bool>> {
        let now = now_micros();
        let mut tx = self.store.begin_write().await?;
        // Two processes may both believe they evaluate for a moment (one's claim ran out and
        // the other took it): the claim's row, locked until this transaction ends, decides.
        if let Some(lead) = lead
            && !store::still_leads(&mut tx, &lead.instance, lead.term).await?
        {
            return Ok(None);
        }
        let firing_now = store::firing_alert(&mut tx, c.rule, c.scope, &c.key).await?;
        let subject = Subject { rule: c.rule, scope: c.scope, key: &c.key, labels: &c.labels };
        let mut queued = false;
        match c.state {
            State::Firing => {
                if firing_now.is_some() {
                    return Ok(Some(false));
                }
                let id = new_id("al_");
                let fingerprint = notify::fingerprint(&c.labels);
                let inhibitor = if self.settings.rules.inhibit {
                    let wider = store::firing_at(&mut tx, &inhibit::inhibitor_candidates(subject)).await?;
                    inhibit::inhibitor(subject, &firing(&wider)).map(str::to_string)
                } else {
                    None
                };
                let alert = NewAlert {
                    id: &id,
                    fingerprint: &fingerprint,
                    rule: c.rule,
                    scope: c.scope,
                    key: &c.key,
                    labels: &c.labels,
                    annotations: &c.annotations,
                    inhibited_by: inhibitor.as_deref(),
                    started_at: c.at,
                    failures: c.failures,
                    updated_at: now,
                };
                store::insert_alert(&mut tx, &alert).await?;
                store::alert_event(&mut tx, &id, c.at, "fired", &format!("{} failures", c.failures)).await?;
                match &inhibitor {
                    Some(wider) => {
                        store::alert_event(&mut tx, &id, now, "inhibited", &format!("inhibited by {wider}")).await?;
                        queued |= self.queue_update(&mut tx, wider, now).await?;
                    }
                    None => queued |= self.queue(&mut tx, &id, &c.labels, Kind::Firing, now).await?,
                }
                // Narrower alerts firing under this one are inhibited by it from now on.
                if self.settings.rules.inhibit && c.scope != Scope::Tenant {
                    let candidates = store::firing_uninhibited(&mut tx, inhibit::inhibited_rules(c.rule)).await?;
                    for narrow in inhibit::newly_inhibited(subject, &firing(&candidates)) {
                        store::set_inhibited_by(&mut tx, narrow, Some(&id), now).await?;
                        store::alert_event(&mut tx, narrow, now, "inhibited", &format!("inhibited by {id}")).await?;
                    }
                }
            }
            State::Resolved => {
                let Some((id, inhibited_by)) = firing_now else { return Ok(Some(false)) };
                if !store::resolve_alert(&mut tx, &id, c.at, c.failures, now).await? {
                    // Resolved meanwhile by another transaction: notified by it.
                    return Ok(Some(false));
                }
                store::alert_event(&mut tx, &id, c.at, "resolved", &format!("{} failures", c.failures)).await?;
                if inhibited_by.is_none() {
                    // Whoever was told it fires is told it resolved.
                    for receiver in store::receivers_told(&mut tx, &id).await? {
                        store::insert_delivery(&mut tx, &receiver, &id, Kind::Resolved, now).await?;
                        queued = true;
                    }
                }
                // What it inhibited and still fires: inhibited by another wider alert, or
                // notified on its own now.
                let narrow = store::firing_inhibited_by(&mut tx, &id).await?;
                // They, and the alerts that may inhibit them now, each once.
                let mut rows = narrow.clone();
                for n in &narrow {
                    for wider in store::firing_at(&mut tx, &inhibit::inhibitor_candidates(n.firing().alert)).await? {
                        if !rows.iter().any(|r| r.id == wider.id) {
                            rows.push(wider);
                        }
                    }
                }
                let freed: Vec<(String, Option<String>)> =
                    inhibit::freed(id.as_str(), &firing(&rows)).into_iter().map(|(n, other)| (n.to_string(), other.map(str::to_string))).collect();
                for (narrow_id, other) in freed {
                    store::set_inhibited_by(&mut tx, &narrow_id, other.as_deref(), now).await?;
                    if other.is_none() {
                        store::alert_event(&mut tx, &narrow_id, now, "uninhibited", &format!("{id} resolved")).await?;
                        let labels = narrow.iter().find(|n| n.id == narrow_id).map(|n| n.labels.clone()).unwrap_or_default();
                        queued |= self.queue(&mut tx, &narrow_id, &labels, Kind::Firing, now).await?;
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(Some(queued))
    }

    /// Queues a notification of an alert to every enabled receiver whose matchers hold.
    pub(super) async fn queue(&self, tx: &mut Tx<'_>, alert: &str, labels: &BTreeMap<String, String>, kind: Kind, now: i64) -> Result<bool> {
        let mut any = false;
        for (receiver, matchers) in store::enabled_receivers(tx).await? {
            if notify::all_match(&matchers, labels) {
                store::insert_delivery(tx, &receiver, alert, kind, now).await?;
                any = true;
            }
        }
        Ok(any)
    }

    /// A narrower alert was inhibited under `wider`: the receivers that were told of `wider`
    /// get its updated list, at most once per group interval (a pending update is enough).
    async fn queue_update(&self, tx: &mut Tx<'_>, wider: &str, now: i64) -> Result<bool> {
        let timing = self.settings.timing();
        let mut any = false;
        for target in store::update_targets(tx, wider).await? {
            if !update_wanted(target.waiting) {
                continue;
            }
            store::insert_delivery(tx, &target.receiver, wider, Kind::Update, timing.update_due(now, target.last_queued)).await?;
            any = true;
        }
        Ok(any)
    }
}
