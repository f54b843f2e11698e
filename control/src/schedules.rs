//! Schedules: a segment's cron expression (with seconds, read by the `cron` crate) in its time
//! zone, turned into due runs — each enqueued once.
//!
//! The state of a schedule lives in its segment's row: the next due time not yet handled, and
//! a run held back by overlap policy `buffer_one`. A tick reads the segments whose next due
//! time has come and, for each, decides with [`plan`] (pure: no clock, no store) what to do,
//! then applies the decision in one transaction that first checks the row still holds what
//! was read ([`Store::schedule_step`]). Whichever process or tick gets there first moves the
//! schedule on; the others change nothing. So a due run is enqueued once across restarts and
//! across several processes on one database.
//!
//! Missed runs (the service was down, or a tick came late): of the due times passed, the latest
//! runs if it is within the catch-up window; the others are skipped and counted.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use tokio::sync::Notify;

use crate::pool::{Pool, Sizing};
use crate::store::{JobRow, ScheduleStep, SegmentRow, Store};
use crate::{Result, now_micros, rfc3339};

/// Microseconds since the Unix epoch.
pub type Micros = i64;

/// Due times counted one by one at most; beyond, the count is this many.
const COUNT_CAP: i64 = 100_000;

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    schedule: cron::Schedule,
    tz: Tz,
}

impl CronSchedule {
    /// Parses `expression` (seconds first: `sec min hour day-of-month month day-of-week
    /// [year]`) in time zone `timezone` (an IANA name such as `Europe/Paris`, or `UTC`).
    pub fn parse(expression: &str, timezone: &str) -> std::result::Result<CronSchedule, String> {
        let fields = expression.split_whitespace().count();
        if !(6..=7).contains(&fields) {
            return Err(format!(
                "schedule {expression:?}: expected 6 or 7 fields (sec min hour day-of-month month day-of-week [year]), \
                 like \"0 0 * * * *\" for every hour; found {fields}"
            ));
        }
        let schedule = cron::Schedule::from_str(expression).map_err(|e| format!("schedule {expression:?}: {e}"))?;
        let tz = Tz::from_str(timezone).map_err(|_| format!("timezone {timezone:?}: not an IANA time zone name (like \"UTC\" or \"America/New_York\")"))?;
        Ok(CronSchedule { schedule, tz })
    }

    fn at(&self, t: Micros) -> Option<DateTime<Tz>> {
        DateTime::<Utc>::from_timestamp_micros(t).map(|u| self.tz.from_utc_datetime(&u.naive_utc()))
    }

    /// The first due time strictly after `t`.
    pub fn next_after(&self, t: Micros) -> Option<Micros> {
        let at = self.at(t)?;
        self.schedule.after(&at).next().map(|d| d.timestamp_micros())
    }

    /// The last due time at or before `t`.
    pub fn latest_until(&self, t: Micros) -> Option<Micros> {
        // Due times are whole seconds: the last one before the next second after `t`.
        let ceiling = self.at(t.div_euclid(1_000_000) * 1_000_000 + 1_000_000)?;
        self.schedule.after(&ceiling).next_back().map(|d| d.timestamp_micros()).filter(|d| *d <= t)
    }

    /// Due times in `[from, to]`, `from` itself a due time; at most [`COUNT_CAP`].
    fn count(&self, from: Micros, to: Micros) -> i64 {
        if from > to {
            return 0;
        }
        let mut n = 1;
        let mut t = from;
        while n < COUNT_CAP {
            match self.next_after(t) {
                Some(next) if next <= to => {
                    n += 1;
                    t = next;
                }
                _ => break,
            }
        }
        n
    }
}

/// What a due run does while the segment's previous run still goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// It is skipped (and counted).
    Skip,
    /// It waits, and runs when the previous one ends; one such run is held at most (a newer
    /// due run replaces it, and the replaced one is counted as skipped).
    BufferOne,
    /// It is enqueued anyway.
    Allow,
}

impl Overlap {
    /// The policy named `name`.
    pub fn parse(name: &str) -> Option<Overlap> {
        match name {
            "skip" => Some(Overlap::Skip),
            "buffer_one" => Some(Overlap::BufferOne),
            "allow" => Some(Overlap::Allow),
            _ => None,
        }
    }
}

/// A schedule's state, as read from its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// The next due time not yet handled.
    pub next_due_at: Option<Micros>,
    /// The run held back for `buffer_one`.
    pub buffered_due_at: Option<Micros>,
}

/// What a tick does to one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The due time to enqueue a run for (its `as_of`).
    pub enqueue: Option<Micros>,
    /// The schedule's state after, and what was skipped.
    pub step: ScheduleStep,
}

/// Decides one tick of one schedule at `now`: `active` says whether a run of the segment is
/// queued or running.
pub fn plan(schedule: &CronSchedule, state: State, now: Micros, catch_up: Micros, overlap: Overlap, active: bool) -> Plan {
    let mut step = ScheduleStep { next_due_at: state.next_due_at, buffered_due_at: state.buffered_due_at, missed: 0, overlapped: 0 };
    let mut candidate = None;
    if let Some(next) = state.next_due_at.filter(|n| *n <= now) {
        let latest = schedule.latest_until(now).filter(|l| *l >= next).unwrap_or(next);
        let due = schedule.count(next, now);
        step.next_due_at = schedule.next_after(now);
        if now - latest <= catch_up {
            candidate = Some(latest);
            step.missed = due - 1;
        } else {
            step.missed = due;
        }
    }
    let mut enqueue = None;
    if !active {
        if let Some(buffered) = step.buffered_due_at.take() {
            if candidate.is_some() {
                // A newer due run supersedes the held one.
                step.overlapped += 1;
            } else {
                enqueue = Some(buffered);
            }
        }
        if candidate.is_some() {
            enqueue = candidate;
        }
    } else if let Some(due) = candidate {
        match overlap {
            Overlap::Skip => step.overlapped += 1,
            Overlap::BufferOne => {
                if step.buffered_due_at.replace(due).is_some() {
                    step.overlapped += 1;
                }
            }
            Overlap::Allow => enqueue = Some(due),
        }
    }
    Plan { enqueue, step }
}

/// What one tick did.
#[derive(Debug, Clone, Default)]
pub struct TickReport {
    /// Jobs enqueued.
    pub enqueued: Vec<JobRow>,
    /// Due runs skipped as missed.
    pub missed: i64,
    /// Due runs skipped for overlap.
    pub overlapped: i64,
    /// Steps another process (or tick) applied first.
    pub lost_races: u64,
    /// Steps that failed (logged; the next tick tries again).
    pub failed: u64,
}

/// The idempotency key of a segment's run due at `due`: a second guard (after the schedule
/// state's compare-and-set) against enqueuing it twice.
pub fn due_key(segment: &str, due: Micros) -> String {
    format!("schedule:{segment}:{}", rfc3339(due))
}

/// One tick at `now` over every schedule that is due or holds a buffered run.
pub async fn tick(store: &Store, sizing: &Sizing, now: Micros, catch_up: Micros) -> Result<TickReport> {
    let mut report = TickReport::default();
    let mut segments = store.due_segments(now, 1000).await?;
    for buffered in store.buffered_segments(1000).await? {
        if !segments.iter().any(|s| s.tenant_id == buffered.tenant_id && s.id == buffered.id) {
            segments.push(buffered);
        }
    }
    for segment in segments {
        match step(store, sizing, &segment, now, catch_up, &mut report).await {
            Ok(()) => {}
            Err(e) => {
                report.failed += 1;
                tracing::warn!(tenant = %segment.tenant_id, segment = %segment.id, error = %e, "schedule step failed; next tick tries again");
            }
        }
    }
    Ok(report)
}

async fn step(store: &Store, sizing: &Sizing, segment: &SegmentRow, now: Micros, catch_up: Micros, report: &mut TickReport) -> Result<()> {
    let state = State { next_due_at: segment.next_due_at, buffered_due_at: segment.buffered_due_at };
    let Some(expression) = segment.schedule.as_deref() else {
        // The schedule was removed: clear what is left of its state.
        let cleared = ScheduleStep::default();
        if state != (State { next_due_at: None, buffered_due_at: None }) && !store.schedule_step(segment, &cleared, None).await? {
            report.lost_races += 1;
        }
        return Ok(());
    };
    let schedule = match CronSchedule::parse(expression, &segment.timezone) {
        Ok(s) => s,
        Err(e) => {
            // Checked when stored; a store edited by hand is the only way here. Stop it.
            tracing::error!(tenant = %segment.tenant_id, segment = %segment.id, error = %e, "unreadable schedule: stopped");
            store.schedule_step(segment, &ScheduleStep::default(), None).await?;
            return Ok(());
        }
    };
    let overlap = Overlap::parse(&segment.overlap).unwrap_or(Overlap::Skip);
    let active = store.has_active_job(&segment.tenant_id, &segment.id).await?;
    let plan = plan(&schedule, state, now, catch_up, overlap, active);
    if plan.enqueue.is_none() && plan.step.next_due_at == state.next_due_at && plan.step.buffered_due_at == state.buffered_due_at {
        return Ok(());
    }
    let job = match plan.enqueue {
        Some(due) => {
            let Some(tenant) = store.tenant(&segment.tenant_id).await? else { return Ok(()) };
            let mut job = sizing.new_job(store, &tenant, segment, due, Some(due_key(&segment.id, due)), "schedule", None).await?;
            job.due_at = Some(due);
            Some(job)
        }
        None => None,
    };
    if store.schedule_step(segment, &plan.step, job.as_ref()).await? {
        report.missed += plan.step.missed;
        report.overlapped += plan.step.overlapped;
        if plan.step.missed > 0 {
            tracing::info!(tenant = %segment.tenant_id, segment = %segment.id, missed = plan.step.missed, "due runs missed past the catch-up window: skipped");
        }
        report.enqueued.extend(job);
    } else {
        report.lost_races += 1;
    }
    Ok(())
}

/// Gives schedules that have no next due time (stored before schedules ran) their first one
/// after `now`; one that is never due again keeps none. Returns how many were set.
pub async fn start_unstarted(store: &Store, now: Micros) -> Result<u64> {
    let mut set = 0;
    for segment in store.schedules_without_due(100_000).await? {
        let Some(expression) = segment.schedule.as_deref() else { continue };
        let Ok(schedule) = CronSchedule::parse(expression, &segment.timezone) else { continue };
        if let Some(next) = schedule.next_after(now)
            && store.set_first_due(&segment.tenant_id, &segment.id, next).await?
        {
            set += 1;
        }
    }
    Ok(set)
}

/// The schedule loop of `cohort serve`: ticks at each next due time (at least every second,
/// so buffered runs go soon after the run they waited for), and when woken because a schedule
/// changed. Jobs it enqueues go straight to the pool.
pub async fn run(store: Store, sizing: Sizing, pool: std::sync::Arc<Pool>, wake: std::sync::Arc<Notify>, catch_up: Micros) {
    loop {
        let now = now_micros();
        let failed = match tick(&store, &sizing, now, catch_up).await {
            Ok(report) => {
                for job in report.enqueued {
                    tracing::info!(tenant = %job.tenant_id, segment = %job.segment_id, job = %job.id, due = %rfc3339(job.as_of), "scheduled run enqueued");
                    pool.enqueued(job, None);
                }
                report.failed > 0
            }
            Err(e) => {
                tracing::warn!(error = %e, "schedule tick failed; trying again");
                true
            }
        };
        let next = store.next_due_at().await.ok().flatten().unwrap_or(i64::MAX);
        // After a failure the due time may still be past: wait a second, not zero.
        let nap = if failed { 1_000_000 } else { next.saturating_sub(now_micros()).clamp(0, 1_000_000) };
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(std::time::Duration::from_micros(nap as u64)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Micros = 1_000_000;

    fn t(text: &str) -> Micros {
        cohort_executor::parse_timestamp(text).expect("a timestamp")
    }

    #[test]
    fn next_and_latest_follow_the_expression() {
        let every_ten = CronSchedule::parse("*/10 * * * * *", "UTC").expect("parses");
        let at = t("2026-11-01T00:00:20Z");
        assert_eq!(every_ten.next_after(at), Some(at + 10 * S));
        assert_eq!(every_ten.next_after(at - 1), Some(at));
        assert_eq!(every_ten.latest_until(at), Some(at));
        assert_eq!(every_ten.latest_until(at + 9 * S + 999_999), Some(at));
        assert_eq!(every_ten.latest_until(at - 1), Some(at - 10 * S));
        assert_eq!(every_ten.count(at, at + 60 * S), 7);
    }

    #[test]
    fn time_zones_move_the_due_instant() {
        let paris = CronSchedule::parse("0 0 9 * * *", "Europe/Paris").expect("parses");
        // 09:00 in Paris on 1 November 2026 (winter time, UTC+1) is 08:00 UTC.
        assert_eq!(paris.next_after(t("2026-11-01T00:00:00Z")), Some(t("2026-11-01T08:00:00Z")));
        // In July (summer time, UTC+2) it is 07:00 UTC.
        assert_eq!(paris.next_after(t("2026-07-01T00:00:00Z")), Some(t("2026-07-01T07:00:00Z")));
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_the_reason() {
        let message = |expression: &str, zone: &str| CronSchedule::parse(expression, zone).err().unwrap_or_default();
        assert!(message("0 * * * *", "UTC").contains("6 or 7 fields"));
        assert!(!message("0 0 25 * * *", "UTC").is_empty());
        assert!(message("0 0 * * * *", "Mars/Olympus").contains("time zone"));
    }
}
