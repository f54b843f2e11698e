//! The simulated month at reduced scale: deterministic by seed, every job ends once, the
//! pool's limits hold, the default fault mix keeps the objective, and faults raise the alerts
//! they should.

use cohort_control::simulation::{self, Faults, Report, Settings};

/// A smaller world than the default month, on a pool sized like it per job.
fn reduced(days: u32, jobs_per_day: u64, tenants: u32) -> Settings {
    Settings { days, jobs_per_day, tenants, slots: 64, memory_budget_bytes: 512 << 30, ..Settings::default() }
}

fn simulate(settings: &Settings) -> Report {
    simulation::run(settings, &mut |_| {}).expect("the settings are valid")
}

fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("the report serializes")
}

#[test]
fn the_same_seed_gives_the_same_report_and_another_seed_another() {
    let settings = reduced(2, 5_000, 200);
    let first = simulate(&settings);
    let again = simulate(&settings);
    assert_eq!(json(&first), json(&again), "same seed, different reports");
    assert_eq!(first, again);
    let other = simulate(&Settings { seed: settings.seed + 1, ..settings.clone() });
    assert_ne!(json(&first), json(&other), "another seed gave the same report");
    assert_eq!(other.jobs.created, first.jobs.created, "the jobs asked for do not depend on the seed");
}

#[test]
fn every_job_ends_once_and_the_pool_limits_hold() {
    let settings = reduced(2, 5_000, 200);
    let r = simulate(&settings);
    println!("{r}");
    let j = &r.jobs;
    assert_eq!(j.created, 2 * 5_000);
    assert_eq!(j.succeeded + j.failed + j.cancelled_at_end, j.created, "every job ends in exactly one final state");
    assert_eq!(j.cancelled_at_end, 0, "the pool drained");
    assert_eq!(j.final_failures_by_class.values().sum::<u64>(), j.failed);
    assert!(r.attempts.total >= j.created, "{} attempts for {} jobs", r.attempts.total, j.created);
    assert_eq!(r.attempts.by_outcome.values().sum::<u64>(), r.attempts.total);
    assert_eq!(r.attempts.by_outcome.get("succeeded").copied().unwrap_or(0), j.succeeded, "one succeeded attempt per succeeded job");
    assert_eq!(r.queue_wait.iter().map(|c| c.jobs).sum::<u64>(), j.created, "every job started once");
    let i = &r.invariants;
    assert!(i.decisions > 0);
    assert_eq!((i.budget_exceeded, i.slots_exceeded, i.ledger_mismatches, i.orphan_events), (0, 0, 0, 0), "{i:?}");
    assert!(r.pool.max_memory_granted_bytes <= settings.memory_budget_bytes);
    assert!(r.pool.max_running_jobs <= settings.slots);
    assert!(r.memory.gib_hours_used <= r.memory.gib_hours_granted);
    assert!(r.estimator.fits > 0, "the estimator learned as the days went");
}

#[test]
fn the_default_fault_mix_keeps_the_success_rate_above_the_objective() {
    let settings = reduced(4, 20_000, 1_000);
    let r = simulate(&settings);
    println!("{r}");
    // The faults happened: transient errors were retried, some jobs failed for good.
    let transient = r.attempts.by_outcome.get("source_unavailable").copied().unwrap_or(0);
    assert!(transient > 0, "no transient failures injected: {:?}", r.attempts.by_outcome);
    assert!(r.attempts.by_outcome.get("resources_exhausted").copied().unwrap_or(0) > 0, "no grant was ever too small");
    assert!(r.success_rate >= 0.9995, "success rate {:.5} under the 99.95% objective; failures {:?}", r.success_rate, r.jobs.final_failures_by_class);
    assert!(r.success_rate < 1.0, "nothing failed at all: the fault mix did nothing");
}

#[test]
fn a_long_regional_incident_fires_region_alerts() {
    let calm = Settings { faults: Faults { regional_incidents_per_region_month: 0.0, ..Faults::default() }, ..reduced(2, 5_000, 200) };
    let stormy =
        Settings { faults: Faults { regional_incidents_per_region_month: 30.0, regional_incident_minutes: 90.0, ..Faults::default() }, ..calm.clone() };
    let (calm, stormy) = (simulate(&calm), simulate(&stormy));
    println!("calm: {:?}\nstormy: {:?}", calm.alerts, stormy.alerts);
    assert_eq!(calm.world.regional_incidents, 0);
    assert!(stormy.world.regional_incidents > 0);
    assert_eq!(calm.alerts.region, 0, "region alerts without an incident: {:?}", calm.alerts);
    assert!(stormy.alerts.region > 0, "no region alert during {} incidents", stormy.world.regional_incidents);
    assert!(stormy.alerts.global > 0, "a region failing for an hour fires the global alert too");
    assert!(stormy.jobs.final_failures_by_class.get("source_unavailable").copied().unwrap_or(0) > 0);
    assert!(stormy.success_rate < calm.success_rate);
}

#[test]
fn the_estimator_grants_less_than_the_static_rule() {
    let on = reduced(2, 5_000, 200);
    let off = Settings { estimator: false, ..on.clone() };
    let (on, off) = (simulate(&on), simulate(&off));
    println!("estimator on: {:?}\nestimator off: {:?}", on.memory, off.memory);
    assert!(on.memory.gib_hours_granted < off.memory.gib_hours_granted, "{:?} vs {:?}", on.memory, off.memory);
    assert!(on.memory.relative_slack < off.memory.relative_slack);
    assert!(off.estimator.estimates_by_basis.is_empty(), "with the estimator off nothing asks it");
}
