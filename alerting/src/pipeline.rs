//! Notifications in memory: transitions through inhibition ([`crate::inhibit`]), silences
//! ([`crate::silence`]) and dispatch ([`crate::dispatch`]), as the service's store and outbox
//! take them, to one receiver that takes every alert. `cohort alerts replay --output
//! notifications` runs it.
//!
//! The service records each transition in a store transaction and sends from its outbox; here
//! both happen in memory and without delays: a transition is taken at its instant (before
//! anything else due then), a notification is sent the instant it is due (it never fails, so
//! it is never retried), and repeats are looked for the instant they are due. The
//! notifications are the ones the service sends, each at the earliest instant it would.
//!
//! Instants are microseconds.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::dispatch::{Kind, Timing, update_wanted};
use crate::inhibit::{self, Firing, Subject};
use crate::notify::alert_labels;
use crate::rule::{RuleKind, Scope, State, Transition};
use crate::silence::{self, Silence};

/// How notifications are decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Whether narrower alerts under a firing wider one are inhibited.
    pub inhibit: bool,
    /// The group and repeat intervals.
    pub timing: Timing,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { inhibit: true, timing: Timing::default() }
    }
}

/// A transition of one alert, as the pipeline takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What raised it.
    pub rule: RuleKind,
    /// Its scope.
    pub scope: Scope,
    /// Its scope key.
    pub key: String,
    /// Firing or resolved.
    pub state: State,
    /// Its labels ([`alert_labels`]).
    pub labels: BTreeMap<String, String>,
}

/// A notification sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// When it was sent (microseconds).
    pub at: i64,
    /// What raised its alert.
    pub rule: RuleKind,
    /// Its alert's scope.
    pub scope: Scope,
    /// Its alert's scope key.
    pub key: String,
    /// Its alert's labels.
    pub labels: BTreeMap<String, String>,
    /// What its payload says: firing or resolved.
    pub state: State,
    /// Why it was sent.
    pub kind: Kind,
    /// The alerts its alert inhibits or inhibited (`scope=key`, sorted): its `inhibited`
    /// annotation.
    pub inhibited: Vec<String>,
}

#[derive(Debug)]
struct Alert {
    rule: RuleKind,
    scope: Scope,
    key: String,
    labels: BTreeMap<String, String>,
    firing: bool,
    inhibited_by: Option<usize>,
    /// When it was last notified (sent, or claimed for a repeat).
    notified_at: Option<i64>,
    /// Its notifications, in the order they were queued.
    queued: Vec<usize>,
}

/// Where a queued notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outbox {
    /// Waiting to be sent.
    Pending,
    /// Sent.
    Delivered,
    /// Held back by a silence when it was due.
    Silenced,
    /// Held back, then notified anew once no silence held it.
    Released,
}

#[derive(Debug)]
struct Queued {
    alert: usize,
    kind: Kind,
    state: Outbox,
    created_at: i64,
}

/// The alerts, the outbox and what was sent.
#[derive(Debug)]
pub struct Pipeline {
    settings: Settings,
    silences: Vec<Silence>,
    alerts: Vec<Alert>,
    /// The firing alert of each (rule, scope, key).
    firing: HashMap<(RuleKind, Scope, String), usize>,
    queued: Vec<Queued>,
    /// Pending notifications by when they are due, then in the order they were queued.
    due: BTreeSet<(i64, usize)>,
    sent: Vec<Notification>,
}

impl Pipeline {
    /// No alert yet; `silences` hold back what they match while active.
    pub fn new(settings: Settings, silences: Vec<Silence>) -> Pipeline {
        Pipeline { settings, silences, alerts: Vec::new(), firing: HashMap::new(), queued: Vec::new(), due: BTreeSet::new(), sent: Vec::new() }
    }

    /// What was sent so far, in the order it was sent.
    pub fn sent(&self) -> &[Notification] {
        &self.sent
    }

    /// Records a transition at `now`, queueing what it notifies (as the service's transaction
    /// for it does).
    pub fn apply(&mut self, change: Change, now: i64) {
        let index = (change.rule, change.scope, change.key.clone());
        match change.state {
            State::Firing => {
                if self.firing.contains_key(&index) {
                    return;
                }
                let subject = Subject { rule: change.rule, scope: change.scope, key: &change.key, labels: &change.labels };
                let (inhibitor, inhibits) = if self.settings.inhibit {
                    let firing = self.firing_now();
                    (inhibit::inhibitor(subject, &firing), inhibit::newly_inhibited(subject, &firing))
                } else {
                    (None, Vec::new())
                };
                let id = self.alerts.len();
                self.alerts.push(Alert {
                    rule: change.rule,
                    scope: change.scope,
                    key: change.key,
                    labels: change.labels,
                    firing: true,
                    inhibited_by: inhibitor,
                    notified_at: None,
                    queued: Vec::new(),
                });
                self.firing.insert(index, id);
                match inhibitor {
                    Some(wider) => self.queue_update(wider, now),
                    None => self.queue(id, Kind::Firing, now),
                }
                for narrow in inhibits {
                    self.alerts[narrow].inhibited_by = Some(id);
                }
            }
            State::Resolved => {
                let Some(id) = self.firing.remove(&index) else { return };
                self.alerts[id].firing = false;
                if self.alerts[id].inhibited_by.is_none() && self.told(id) {
                    self.queue(id, Kind::Resolved, now);
                }
                let freed = inhibit::freed(id, &self.firing_now());
                for (narrow, other) in freed {
                    self.alerts[narrow].inhibited_by = other;
                    if other.is_none() {
                        self.queue(narrow, Kind::Firing, now);
                    }
                }
            }
        }
    }

    /// Time has reached `now`: sends what is due, queues the repeats due and releases what a
    /// silence no longer holds back, until nothing more is due at `now`.
    pub fn advance(&mut self, now: i64) {
        loop {
            let mut busy = self.send_due(now);
            busy |= self.queue_repeats(now);
            busy |= self.queue_unsilenced(now);
            if !busy {
                return;
            }
        }
    }

    /// The next instant after `now` at which something is due: a notification, a repeat, or
    /// the end of a silence while it holds something back.
    pub fn next_instant(&self, now: i64) -> Option<i64> {
        let repeat = self
            .firing
            .values()
            .filter_map(|&id| {
                let alert = &self.alerts[id];
                alert.notified_at.filter(|_| alert.inhibited_by.is_none()).map(|n| self.settings.timing.repeat_due(n))
            })
            .min()
            .filter(|&t| t > now);
        [self.next_instant_without_repeats(now), repeat].into_iter().flatten().min()
    }

    /// [`Pipeline::next_instant`] leaving out repeats.
    pub fn next_instant_without_repeats(&self, now: i64) -> Option<i64> {
        let due = self.due.first().map(|d| d.0);
        let held = self.queued.iter().any(|q| q.state == Outbox::Silenced);
        let release = if held { silence::next_end(&self.silences, now) } else { None };
        [due, release].into_iter().flatten().filter(|&t| t > now).min()
    }

    /// The firing alerts, as inhibition sees them.
    fn firing_now(&self) -> Vec<Firing<'_, usize>> {
        let mut ids: Vec<usize> = self.firing.values().copied().collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|id| {
                let a = &self.alerts[id];
                Firing { id, alert: Subject { rule: a.rule, scope: a.scope, key: &a.key, labels: &a.labels }, inhibited_by: a.inhibited_by }
            })
            .collect()
    }

    /// Whether the receiver was told of `alert` (queued a notification that is not a resolution).
    fn told(&self, alert: usize) -> bool {
        self.alerts[alert].queued.iter().any(|&q| self.queued[q].kind.tells())
    }

    fn queue(&mut self, alert: usize, kind: Kind, now: i64) {
        self.queue_at(alert, kind, now, now);
    }

    fn queue_at(&mut self, alert: usize, kind: Kind, not_before: i64, now: i64) {
        let q = self.queued.len();
        self.queued.push(Queued { alert, kind, state: Outbox::Pending, created_at: now });
        self.alerts[alert].queued.push(q);
        self.due.insert((not_before, q));
    }

    /// A narrower alert was inhibited under `wider`: an update, if the receiver was told of it
    /// and nothing of it waits unsent, a group interval after the last one queued.
    fn queue_update(&mut self, wider: usize, now: i64) {
        let told: Vec<&Queued> = self.alerts[wider].queued.iter().map(|&q| &self.queued[q]).filter(|q| q.kind.tells()).collect();
        let Some(last) = told.iter().map(|q| q.created_at).max() else { return };
        let waiting = told.iter().filter(|q| q.state == Outbox::Pending).count();
        if update_wanted(i64::try_from(waiting).unwrap_or(i64::MAX)) {
            let due = self.settings.timing.update_due(now, last);
            self.queue_at(wider, Kind::Update, due, now);
        }
    }

    /// Sends every notification due at `now`; whether there was one.
    fn send_due(&mut self, now: i64) -> bool {
        let mut any = false;
        while let Some(&(at, q)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.remove(&(at, q));
            any = true;
            let (alert, kind) = (self.queued[q].alert, self.queued[q].kind);
            if silence::silenced(&self.silences, &self.alerts[alert].labels, now) {
                self.queued[q].state = Outbox::Silenced;
                continue;
            }
            self.queued[q].state = Outbox::Delivered;
            let a = &self.alerts[alert];
            let mut inhibited: Vec<(&str, &str)> =
                self.alerts.iter().filter(|n| n.inhibited_by == Some(alert)).map(|n| (n.scope.as_str(), n.key.as_str())).collect();
            inhibited.sort_unstable();
            self.sent.push(Notification {
                at: now,
                rule: a.rule,
                scope: a.scope,
                key: a.key.clone(),
                labels: a.labels.clone(),
                state: if kind.shows_firing() || a.firing { State::Firing } else { State::Resolved },
                kind,
                inhibited: inhibited.into_iter().map(|(s, k)| format!("{s}={k}")).collect(),
            });
            self.alerts[alert].notified_at = Some(now);
        }
        any
    }

    /// Firing alerts notified on their own a repeat interval ago or more: queued again.
    fn queue_repeats(&mut self, now: i64) -> bool {
        let cutoff = self.settings.timing.repeat_cutoff(now);
        let mut due: Vec<usize> = self
            .firing
            .values()
            .copied()
            .filter(|&id| {
                let a = &self.alerts[id];
                a.inhibited_by.is_none() && a.notified_at.is_some_and(|n| n <= cutoff)
            })
            .collect();
        due.sort_unstable();
        for &id in &due {
            self.alerts[id].notified_at = Some(now);
            self.queue(id, Kind::Repeat, now);
        }
        !due.is_empty()
    }

    /// What a silence held back of an alert that still fires, is not inhibited and is no longer
    /// silenced: released, and the alert notified now.
    fn queue_unsilenced(&mut self, now: i64) -> bool {
        let mut held: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (q, queued) in self.queued.iter().enumerate() {
            let a = &self.alerts[queued.alert];
            if queued.state == Outbox::Silenced && queued.kind.tells() && a.firing && a.inhibited_by.is_none() {
                held.entry(queued.alert).or_default().push(q);
            }
        }
        let mut any = false;
        for (alert, rows) in held {
            if silence::silenced(&self.silences, &self.alerts[alert].labels, now) {
                continue;
            }
            for q in rows {
                self.queued[q].state = Outbox::Released;
            }
            self.queue(alert, Kind::Firing, now);
            any = true;
        }
        any
    }
}

/// The failure rule's transitions (in time order, milliseconds, as the evaluator gives them)
/// as changes: labelled as the service labels them, a tenant with its region from `regions`.
pub fn failure_changes<'a>(transitions: &'a [Transition], regions: &'a HashMap<String, String>) -> impl Iterator<Item = (i64, Change)> + 'a {
    transitions.iter().map(move |t| {
        let region = if t.scope == Scope::Tenant { regions.get(&t.key).map_or("", String::as_str) } else { "" };
        let labels = alert_labels(RuleKind::Failures, t.scope, &t.key, region);
        (t.at.saturating_mul(1000), Change { rule: RuleKind::Failures, scope: t.scope, key: t.key.clone(), state: t.state, labels })
    })
}

/// Every notification of `changes` (in time order, microseconds; one older than the one
/// before it is taken at the later instant), and of what follows them. After the last change
/// the instants at which a notification is due or a silence ends are followed, not the
/// repeats of what still fires (they would go on for ever); a replay's last changes resolve
/// everything.
pub fn notifications(settings: Settings, silences: Vec<Silence>, changes: impl IntoIterator<Item = (i64, Change)>) -> Vec<Notification> {
    let mut pipeline = Pipeline::new(settings, silences);
    let mut changes = changes.into_iter().peekable();
    let mut now = i64::MIN;
    loop {
        let next = match changes.peek() {
            Some((at, _)) => Some(pipeline.next_instant(now).map_or(*at, |t| t.min(*at))),
            None => pipeline.next_instant_without_repeats(now),
        };
        let Some(next) = next else { break };
        now = now.max(next);
        while let Some((_, change)) = changes.next_if(|(at, _)| *at <= now) {
            pipeline.apply(change, now);
        }
        pipeline.advance(now);
    }
    pipeline.sent
}
