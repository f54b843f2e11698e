//! Dispatch: what is notified to a receiver, when it is due, and what is sent again.
//!
//! - An alert that fires and is not inhibited is notified (`firing`) at once to every receiver
//!   whose matchers hold.
//! - An alert inhibited as it fires is not notified on its own: each receiver that was told of
//!   the alert inhibiting it (queued a notification of it that is not a resolution) gets that
//!   wider alert again (`update`, its `inhibited` annotation listing the narrower ones), not
//!   before the group interval has passed since the last notification of it queued to that
//!   receiver, and not while one to that receiver is still waiting unsent: the one waiting
//!   lists the new alert when it is sent ([`Timing::update_due`], [`update_wanted`]).
//! - An alert that resolves is notified (`resolved`) to every receiver that was told of it,
//!   unless it is inhibited when it resolves ([`Kind::tells`]).
//! - A firing alert notified on its own, not inhibited, is notified again (`repeat`) once the
//!   repeat interval has passed since it was last notified ([`Timing::repeat_cutoff`]).
//! - A notification a silence held back, of an alert that still fires, is not inhibited and is
//!   silenced no more, is released: notified (`firing`) then.
//! - Every notification that is not a resolution says its alert fires, even one that leaves
//!   after the alert resolved (the resolution follows it) ([`Kind::shows_firing`]).
//!
//! Whether a notification is silenced is decided when it is sent ([`crate::silence`]).
//! Instants and intervals are microseconds, as the store keeps them.

use std::fmt;
use std::time::Duration;

/// Why a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// The alert fires (or fires again after it was held back or inhibited).
    Firing,
    /// More alerts are inhibited under it.
    Update,
    /// It still fires, a repeat interval after it was last notified.
    Repeat,
    /// It resolved.
    Resolved,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [Kind::Firing, Kind::Update, Kind::Repeat, Kind::Resolved];

    /// Its name in the outbox (`deliveries.kind`) and in an alert's history.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Firing => "firing",
            Kind::Update => "update",
            Kind::Repeat => "repeat",
            Kind::Resolved => "resolved",
        }
    }

    /// The kind named `text`, if any.
    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Whether a receiver queued a notification of this kind was told the alert fires: it is
    /// told of its resolution and of the alerts inhibited under it.
    pub fn tells(self) -> bool {
        self != Kind::Resolved
    }

    /// Whether a notification of this kind says its alert fires, whenever it leaves.
    pub fn shows_firing(self) -> bool {
        self != Kind::Resolved
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The group and repeat intervals, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The least time between two notifications of one alert to one receiver when more alerts
    /// are inhibited under it.
    pub group_interval: i64,
    /// Firing alerts are notified again this long after they were last notified.
    pub repeat_interval: i64,
}

impl Default for Timing {
    /// 30 seconds and 4 hours, the service's defaults.
    fn default() -> Self {
        Timing::new(Duration::from_secs(30), Duration::from_secs(4 * 3600))
    }
}

impl Timing {
    /// The intervals as durations (a repeat interval beyond the representable means never).
    pub fn new(group_interval: Duration, repeat_interval: Duration) -> Timing {
        Timing {
            group_interval: i64::try_from(group_interval.as_micros()).unwrap_or(i64::MAX),
            repeat_interval: i64::try_from(repeat_interval.as_micros()).unwrap_or(i64::MAX / 2),
        }
    }

    /// When an update of an alert queued at `now` is due to a receiver that was last queued a
    /// notification of it at `last_queued`.
    pub fn update_due(&self, now: i64, last_queued: i64) -> i64 {
        now.max(last_queued.saturating_add(self.group_interval))
    }

    /// At `now`, the firing alerts last notified at or before this instant are due a repeat.
    pub fn repeat_cutoff(&self, now: i64) -> i64 {
        now.saturating_sub(self.repeat_interval)
    }

    /// When an alert last notified at `notified_at` is due a repeat.
    pub fn repeat_due(&self, notified_at: i64) -> i64 {
        notified_at.saturating_add(self.repeat_interval)
    }
}

/// Whether an update is queued to a receiver that has `waiting` notifications of the alert
/// not yet sent (not resolutions): only when none waits.
pub fn update_wanted(waiting: i64) -> bool {
    waiting <= 0
}

/// How often the service looks for alerts due a repeat: an eighth of the repeat interval,
/// between 200 ms and a minute.
pub fn repeat_check_every(repeat_interval: Duration) -> Duration {
    (repeat_interval / 8).clamp(Duration::from_millis(200), Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_back_as_they_are_written() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("page"), None);
        assert!(!Kind::Resolved.tells() && Kind::Update.tells() && Kind::Repeat.shows_firing());
    }

    #[test]
    fn an_update_waits_a_group_interval_after_the_last_notification() {
        let t = Timing::new(Duration::from_secs(30), Duration::from_secs(3600));
        assert_eq!(t.update_due(100_000_000, 90_000_000), 120_000_000);
        assert_eq!(t.update_due(200_000_000, 90_000_000), 200_000_000, "long after: at once");
        assert!(update_wanted(0) && !update_wanted(1));
    }

    #[test]
    fn a_repeat_is_due_a_repeat_interval_after_the_last_notification() {
        let t = Timing::new(Duration::from_secs(30), Duration::from_secs(3600));
        let notified = 1_000_000_000;
        assert_eq!(t.repeat_due(notified), notified + 3_600_000_000);
        assert!(notified <= t.repeat_cutoff(t.repeat_due(notified)));
        assert!(notified > t.repeat_cutoff(t.repeat_due(notified) - 1));
        assert_eq!(Timing::default(), Timing::new(Duration::from_secs(30), Duration::from_secs(14_400)));
    }

    #[test]
    fn repeats_are_looked_for_every_eighth_of_the_interval_within_bounds() {
        assert_eq!(repeat_check_every(Duration::from_secs(80)), Duration::from_secs(10));
        assert_eq!(repeat_check_every(Duration::from_secs(1)), Duration::from_millis(200));
        assert_eq!(repeat_check_every(Duration::from_secs(4 * 3600)), Duration::from_secs(60));
    }
}
