//! Schedules on a controlled clock, against a real store (SQLite, and PostgreSQL when
//! `COHORT_TEST_DATABASE_URL` is set): each due run is enqueued once however often and from
//! however many processes the schedules tick; the overlap policies; the catch-up rule.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cohort_control::Store;
use cohort_control::jobs::JobStatus;
use cohort_control::policy::{Deadlines, SizeRule};
use cohort_control::pool::Sizing;
use cohort_control::schedules::{CronSchedule, Micros, tick};
use cohort_control::store::{JobRow, SegmentRow};

use crate::{finish, stores, tenant_and_segment};

const S: Micros = 1_000_000;
const HOUR: Micros = 3600 * S;

/// 2026-11-01T00:00:00Z.
fn t0() -> Micros {
    cohort_executor::parse_timestamp("2026-11-01T00:00:00Z").expect("timestamp")
}

fn sizing() -> Sizing {
    Sizing::rule(
        Arc::new(SizeRule { min_bytes: 1 << 20, per_source_byte: 0.0, max_bytes: 1 << 30 }),
        Deadlines { factor: 10.0, floor: Duration::from_secs(60), ceiling: Duration::from_secs(3600) },
    )
}

/// Stores segment `id` with `schedule` and `overlap`, its first due time the first after `now`.
async fn scheduled(store: &Store, id: &str, schedule: &str, overlap: &str, now: Micros) {
    let next = CronSchedule::parse(schedule, "UTC").expect("schedule").next_after(now);
    let row = SegmentRow {
        tenant_id: "acme".into(),
        id: id.into(),
        definition: "{}".into(),
        schedule: Some(schedule.into()),
        timezone: "UTC".into(),
        overlap: overlap.into(),
        next_due_at: next,
        ..SegmentRow::default()
    };
    store.put_segment(&row).await.expect("segment");
}

async fn scheduled_jobs(store: &Store, segment: &str) -> Vec<JobRow> {
    let mut jobs: Vec<JobRow> =
        store.jobs_of_segment("acme", segment, "", 100_000).await.expect("jobs").into_iter().filter(|j| j.trigger == "schedule").collect();
    jobs.sort_by_key(|j| j.as_of);
    jobs
}

async fn segment(store: &Store, id: &str) -> SegmentRow {
    store.segment("acme", id).await.expect("segment").expect("exists")
}

/// Ends a queued job (as if it ran), so the segment has no run going.
async fn end(store: &Store, job: &JobRow) {
    assert!(store.transition(&job.id, JobStatus::Queued, JobStatus::Cancelled, "ended by the test", None).await.expect("end"));
}

async fn at(store: &Store, now: Micros) -> cohort_control::schedules::TickReport {
    tick(store, &sizing(), now, HOUR).await.expect("tick")
}

#[tokio::test]
async fn each_due_run_is_enqueued_once_however_often_the_schedules_tick() {
    for s in stores().await {
        let store = &s.store;
        tenant_and_segment(store).await;
        scheduled(store, "every10", "*/10 * * * * *", "allow", t0()).await;
        // Ticks every half second for two minutes, each twice; and once more at the end.
        for step in 1..=240 {
            let now = t0() + step * S / 2;
            at(store, now).await;
            at(store, now).await;
        }
        at(store, t0() + 120 * S).await;
        let jobs = scheduled_jobs(store, "every10").await;
        let due: Vec<Micros> = jobs.iter().map(|j| j.as_of).collect();
        let expected: Vec<Micros> = (1..=12).map(|k| t0() + k * 10 * S).collect();
        assert_eq!(due, expected, "one job per due time, evaluated as of it");
        assert!(jobs.iter().all(|j| j.due_at == Some(j.as_of) && j.status == JobStatus::Queued));
        let row = segment(store, "every10").await;
        assert_eq!((row.missed_runs, row.overlapped_runs, row.next_due_at), (0, 0, Some(t0() + 130 * S)));
        finish(s).await;
    }
}

#[tokio::test]
async fn overlap_skip_drops_a_due_run_while_the_previous_one_goes() {
    for s in stores().await {
        let store = &s.store;
        tenant_and_segment(store).await;
        scheduled(store, "skipper", "*/10 * * * * *", "skip", t0()).await;
        assert_eq!(at(store, t0() + 10 * S).await.enqueued.len(), 1);
        let report = at(store, t0() + 20 * S).await;
        assert_eq!((report.enqueued.len(), report.overlapped), (0, 1), "the first run still goes: skipped");
        end(store, &scheduled_jobs(store, "skipper").await[0]).await;
        assert_eq!(at(store, t0() + 30 * S).await.enqueued.len(), 1);
        let due: Vec<Micros> = scheduled_jobs(store, "skipper").await.iter().map(|j| j.as_of).collect();
        assert_eq!(due, vec![t0() + 10 * S, t0() + 30 * S]);
        assert_eq!(segment(store, "skipper").await.overlapped_runs, 1);
        finish(s).await;
    }
}

#[tokio::test]
async fn overlap_buffer_one_holds_the_newest_due_run_until_the_previous_one_ends() {
    for s in stores().await {
        let store = &s.store;
        tenant_and_segment(store).await;
        scheduled(store, "buffered", "*/10 * * * * *", "buffer_one", t0()).await;
        assert_eq!(at(store, t0() + 10 * S).await.enqueued.len(), 1);
        assert!(at(store, t0() + 20 * S).await.enqueued.is_empty());
        assert_eq!(segment(store, "buffered").await.buffered_due_at, Some(t0() + 20 * S));
        // A newer due run replaces the held one, which counts as skipped.
        let report = at(store, t0() + 30 * S).await;
        assert_eq!((report.enqueued.len(), report.overlapped), (0, 1));
        assert_eq!(segment(store, "buffered").await.buffered_due_at, Some(t0() + 30 * S));
        assert!(at(store, t0() + 35 * S).await.enqueued.is_empty(), "the first run still goes");
        end(store, &scheduled_jobs(store, "buffered").await[0]).await;
        let released = at(store, t0() + 36 * S).await;
        assert_eq!(released.enqueued.iter().map(|j| j.as_of).collect::<Vec<_>>(), vec![t0() + 30 * S], "the held run goes once the first ends");
        assert_eq!(segment(store, "buffered").await.buffered_due_at, None);
        assert!(at(store, t0() + 37 * S).await.enqueued.is_empty(), "released once");
        let due: Vec<Micros> = scheduled_jobs(store, "buffered").await.iter().map(|j| j.as_of).collect();
        assert_eq!(due, vec![t0() + 10 * S, t0() + 30 * S]);
        finish(s).await;
    }
}

#[tokio::test]
async fn overlap_allow_enqueues_every_due_run() {
    for s in stores().await {
        let store = &s.store;
        tenant_and_segment(store).await;
        scheduled(store, "allowed", "*/10 * * * * *", "allow", t0()).await;
        for k in 1..=3 {
            assert_eq!(at(store, t0() + k * 10 * S).await.enqueued.len(), 1);
        }
        let jobs = scheduled_jobs(store, "allowed").await;
        assert_eq!(jobs.len(), 3);
        assert!(jobs.iter().all(|j| j.status == JobStatus::Queued), "all three wait together");
        finish(s).await;
    }
}

#[tokio::test]
async fn missed_runs_follow_the_catch_up_rule() {
    for s in stores().await {
        let store = &s.store;
        tenant_and_segment(store).await;
        scheduled(store, "hourly", "0 0 * * * *", "allow", t0()).await;
        scheduled(store, "daily", "0 0 0 * * *", "allow", t0()).await;
        // Down from t0 until 5h30m later: "hourly" was due at 1h..5h. The latest (5h) is
        // 30 min late, within the hour of catch-up: it runs; the four before are skipped.
        let report = at(store, t0() + 5 * HOUR + 30 * 60 * S).await;
        assert_eq!((report.enqueued.len(), report.missed), (1, 4));
        assert_eq!(scheduled_jobs(store, "hourly").await.iter().map(|j| j.as_of).collect::<Vec<_>>(), vec![t0() + 5 * HOUR]);
        let hourly = segment(store, "hourly").await;
        assert_eq!((hourly.missed_runs, hourly.next_due_at), (4, Some(t0() + 6 * HOUR)));
        // Down again until 25h30m: "daily" was due at 24h, now 90 min late, past the window:
        // it does not run and counts as missed. "hourly" runs its 25h run, skipping 19.
        let report = at(store, t0() + 25 * HOUR + 30 * 60 * S).await;
        assert_eq!((report.enqueued.len(), report.missed), (1, 20));
        assert!(scheduled_jobs(store, "daily").await.is_empty());
        let daily = segment(store, "daily").await;
        assert_eq!((daily.missed_runs, daily.next_due_at), (1, Some(t0() + 48 * HOUR)));
        let hourly = segment(store, "hourly").await;
        assert_eq!(hourly.missed_runs, 23);
        // Starting again at the same instant (a restart) enqueues nothing more.
        let again = at(store, t0() + 25 * HOUR + 30 * 60 * S).await;
        assert_eq!((again.enqueued.len(), again.missed), (0, 0));
        assert_eq!(scheduled_jobs(store, "hourly").await.len(), 2);
        finish(s).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_ticking_together_never_enqueue_a_due_run_twice() {
    for s in stores().await {
        tenant_and_segment(&s.store).await;
        for k in 0..20 {
            scheduled(&s.store, &format!("seg{k:02}"), "* * * * * *", "allow", t0()).await;
        }
        // A second process: its own connections to the same database.
        let other = Store::connect(&s.url, 4).await.expect("second store");
        let mut lost = 0;
        for step in 1..=15 {
            // Their clocks differ by a little; both tick at every step.
            let now = t0() + step * S;
            let sizing = sizing();
            let (a, b) = tokio::join!(tick(&s.store, &sizing, now, HOUR), tick(&other, &sizing, now + 300_000, HOUR));
            lost += a.expect("tick a").lost_races + b.expect("tick b").lost_races;
        }
        let mut per_due: BTreeMap<(String, Micros), usize> = BTreeMap::new();
        for k in 0..20 {
            for job in scheduled_jobs(&s.store, &format!("seg{k:02}")).await {
                *per_due.entry((job.segment_id.clone(), job.as_of)).or_default() += 1;
            }
        }
        assert_eq!(per_due.len(), 20 * 15, "every due run of every segment enqueued");
        assert!(per_due.values().all(|n| *n == 1), "a due run enqueued twice: {per_due:?}");
        println!("{:?}: {lost} steps found the other process had been first", s.store.backend());
        other.close().await;
        finish(s).await;
    }
}

#[tokio::test]
async fn schedules_stored_without_a_due_time_get_one_at_start_and_on_the_next_put() {
    for s in stores().await {
        let store = &s.store;
        tenant_and_segment(store).await;
        // As stored before schedules ran: a schedule, no next due time.
        let row = SegmentRow {
            tenant_id: "acme".into(),
            id: "old".into(),
            definition: "{}".into(),
            schedule: Some("0 */5 * * * *".into()),
            timezone: "UTC".into(),
            overlap: "skip".into(),
            ..SegmentRow::default()
        };
        store.put_segment(&row).await.expect("segment");
        assert_eq!(cohort_control::schedules::start_unstarted(store, t0()).await.expect("start"), 1);
        assert_eq!(segment(store, "old").await.next_due_at, Some(t0() + 300 * S));
        assert_eq!(cohort_control::schedules::start_unstarted(store, t0()).await.expect("again"), 0);
        // The same PUT again of a schedule with no due time takes the one it brings.
        let mut again = row.clone();
        again.id = "older".into();
        store.put_segment(&again).await.expect("segment");
        again.next_due_at = Some(t0() + 600 * S);
        store.put_segment(&again).await.expect("same schedule again");
        assert_eq!(segment(store, "older").await.next_due_at, Some(t0() + 600 * S));
        finish(s).await;
    }
}
