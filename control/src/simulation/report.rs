//! What a simulation counts as it goes ([`Tally`]) and what it reports ([`Report`]).

use std::collections::BTreeMap;
use std::fmt;

use cohort_alerting::Scope;
use cohort_common::units::{human_bytes as bytes, human_seconds as duration};
use cohort_estimator::{Basis, Features};
use serde::Serialize;

use super::workload::{SIZE_CLASSES, World, size_class};
use super::{AttemptSummary, DAY, Faults, SECOND, Settings};
use crate::scheduler::{Kind, Micros};

const GIB_HOUR: f64 = 1024.0 * 1024.0 * 1024.0 * 3600.0 * SECOND as f64;

/// The outcome of a simulation. Deterministic: the same settings give the same report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// What was simulated, under which policies.
    pub settings: SettingsEcho,
    /// The world the seed made.
    pub world: WorldSummary,
    /// Jobs and how they ended.
    pub jobs: Jobs,
    /// Jobs that succeeded (after retries) ÷ jobs asked for.
    pub success_rate: f64,
    /// Attempts and how they ended.
    pub attempts: Attempts,
    /// The wait from submission to a job's first start, by the records it reads.
    pub queue_wait: Vec<SizeClassWaits>,
    /// Memory granted against memory used.
    pub memory: Memory,
    /// How the estimator learned.
    pub estimator: EstimatorSummary,
    /// Alerts of the failure rule (5 final failures in 10 minutes) that fired.
    pub alerts: Alerts,
    /// How busy the pool was.
    pub pool: PoolSummary,
    /// Checks made at every decision; all zero in a correct run.
    pub invariants: Invariants,
}

/// The settings a report was made with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingsEcho {
    /// Days of arrivals.
    pub days: u32,
    /// Jobs asked for per day.
    pub jobs_per_day: u64,
    /// Tenants.
    pub tenants: u32,
    /// Regions.
    pub regions: u32,
    /// The seed.
    pub seed: u64,
    /// Executor slots.
    pub slots: usize,
    /// The memory budget.
    pub memory_budget_bytes: u64,
    /// The estimator's coverage.
    pub coverage: f64,
    /// Fair share between tenants.
    pub fair_share: bool,
    /// Backfilling around the reserved job.
    pub backfill: bool,
    /// Grants from the estimator (else the size rule).
    pub estimator: bool,
    /// Whether the store held the segments' runs from before the month.
    pub warm_start: bool,
    /// Refit after at most this many finished attempts…
    pub refit_runs: u64,
    /// …or this many seconds.
    pub refit_interval_seconds: f64,
    /// Records the estimator fits on.
    pub fit_window: usize,
    /// The faults injected.
    pub faults: Faults,
}

/// A count under a name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NamedCount {
    /// The name.
    pub name: String,
    /// The count.
    pub count: u64,
}

/// The world the seed made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorldSummary {
    /// Segments in all.
    pub segments: usize,
    /// Segments scheduled every hour.
    pub segments_hourly: usize,
    /// Segments scheduled every day.
    pub segments_daily: usize,
    /// Tenants by the records they hold at the start (size classes as the waits').
    pub tenants_by_size_class: Vec<NamedCount>,
    /// The most records a tenant holds at the start.
    pub largest_tenant_records: u64,
    /// Regional incidents laid out.
    pub regional_incidents: usize,
    /// Their total length in minutes.
    pub regional_incident_minutes: f64,
    /// Bad deployments laid out.
    pub bad_deployments: usize,
    /// Their total length in hours.
    pub bad_deployment_hours: f64,
}

/// Jobs and how they ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Jobs {
    /// Jobs asked for.
    pub created: u64,
    /// Of them, by a schedule.
    pub scheduled: u64,
    /// Of them, on demand.
    pub on_demand: u64,
    /// Ended succeeded.
    pub succeeded: u64,
    /// Ended failed.
    pub failed: u64,
    /// Not finished when the drain limit passed; cancelled.
    pub cancelled_at_end: u64,
    /// Failed jobs by the class of their last attempt.
    pub final_failures_by_class: BTreeMap<String, u64>,
}

/// Attempts and how they ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempts {
    /// Attempts in all.
    pub total: u64,
    /// Attempts per job that started.
    pub per_job: f64,
    /// Attempts by outcome: `succeeded` or the failure class.
    pub by_outcome: BTreeMap<String, u64>,
}

/// Queue waits of one size class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SizeClassWaits {
    /// `small`, `medium`, `large` or `huge`.
    pub size_class: String,
    /// Jobs of this class read fewer records than this (none for the last class).
    pub records_below: Option<u64>,
    /// Jobs of the class that started.
    pub jobs: u64,
    /// Median wait to the first start.
    pub p50_seconds: f64,
    /// 99th percentile.
    pub p99_seconds: f64,
    /// The longest.
    pub max_seconds: f64,
}

/// Memory granted against memory used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    /// Σ grant × time over every attempt, in GiB-hours.
    pub gib_hours_granted: f64,
    /// Σ memory used (the true peak, at most the grant) × time, in GiB-hours.
    pub gib_hours_used: f64,
    /// Mean of (first grant − peak) ÷ first grant over jobs whose first grant held.
    pub relative_slack: f64,
    /// Jobs whose first grant was below their peak ÷ jobs that started.
    pub under_grant_rate: f64,
    /// Jobs whose first grant was below their peak.
    pub under_granted_jobs: u64,
    /// Jobs whose first grant was more than 10× their peak…
    pub over_granted_10x_jobs: u64,
    /// …and the GiB-hours their attempts were granted.
    pub over_granted_10x_gib_hours: f64,
}

/// How the estimator learned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EstimatorSummary {
    /// Whether grants came from it.
    pub enabled: bool,
    /// Records of runs before the month the store started with (and the first model was
    /// fitted on).
    pub warm_start_records: usize,
    /// Fits made during the month.
    pub fits: u64,
    /// The last model's version.
    pub model_version: u64,
    /// Runs the last model learned from.
    pub trained_on: usize,
    /// Estimates by which part of the estimator answered.
    pub estimates_by_basis: BTreeMap<String, u64>,
    /// Median of |expected − actual| ÷ actual runtime, over succeeded jobs.
    pub runtime_mdape: f64,
}

/// Alerts that fired.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alerts {
    /// Transitions to firing at the global scope.
    pub global: u64,
    /// Transitions to firing at the region scope.
    pub region: u64,
    /// Transitions to firing at the tenant scope.
    pub tenant: u64,
    /// Region alerts by region.
    pub region_by_name: BTreeMap<String, u64>,
    /// Distinct tenants that had an alert.
    pub tenants_alerted: usize,
}

/// How busy the pool was.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolSummary {
    /// Virtual seconds until the last job ended.
    pub simulated_seconds: f64,
    /// Most jobs running at once.
    pub max_running_jobs: usize,
    /// Jobs running, averaged over the arrival days.
    pub mean_running_jobs: f64,
    /// Most memory granted at once.
    pub max_memory_granted_bytes: u64,
    /// Memory granted, averaged over the arrival days.
    pub mean_memory_granted_bytes: f64,
}

/// Checks made at every decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Invariants {
    /// Decisions of the core.
    pub decisions: u64,
    /// Decisions after which the core granted more than the budget.
    pub budget_exceeded: u64,
    /// Decisions after which more jobs ran than slots.
    pub slots_exceeded: u64,
    /// Decisions after which the core's granted memory differed from the sum of the
    /// running attempts' grants.
    pub ledger_mismatches: u64,
    /// Events or starts for a job that was not where it should be.
    pub orphan_events: u64,
}

/// What the simulation counts as it goes.
#[derive(Debug)]
pub(super) struct Tally {
    created: u64,
    scheduled: u64,
    succeeded: u64,
    failed: u64,
    cancelled: u64,
    final_failures: BTreeMap<&'static str, u64>,
    attempts: u64,
    attempts_by_outcome: BTreeMap<&'static str, u64>,
    started_jobs: u64,
    waits: [Vec<Micros>; SIZE_CLASSES.len()],
    granted_byte_micros: u128,
    used_byte_micros: u128,
    under_granted: u64,
    over_granted: u64,
    over_granted_byte_micros: u128,
    slack_sum: f64,
    slack_jobs: u64,
    runtime_errors: Vec<f32>,
    basis: BTreeMap<&'static str, u64>,
    fits: u64,
    trained_on: usize,
    fired: [u64; 3],
    region_fired: BTreeMap<String, u64>,
    tenants_alerted: std::collections::BTreeSet<String>,
    /// Time-weighted pool use: the last decision's time, running jobs and memory, and sums.
    last_pool: (Micros, usize, u64),
    running_micros: u128,
    memory_byte_micros: u128,
    max_running: usize,
    max_memory: u64,
    pub(super) simulated_until: Micros,
    pub(super) warm_start_records: usize,
    pub(super) invariants: Invariants,
    tenants_by_class: [u64; SIZE_CLASSES.len()],
}

impl Tally {
    pub(super) fn new(world: &World) -> Tally {
        let mut tenants_by_class = [0; SIZE_CLASSES.len()];
        for t in &world.tenants {
            tenants_by_class[size_class(t.records_at_start as u64)] += 1;
        }
        Tally {
            created: 0,
            scheduled: 0,
            succeeded: 0,
            failed: 0,
            cancelled: 0,
            final_failures: BTreeMap::new(),
            attempts: 0,
            attempts_by_outcome: BTreeMap::new(),
            started_jobs: 0,
            waits: Default::default(),
            granted_byte_micros: 0,
            used_byte_micros: 0,
            under_granted: 0,
            over_granted: 0,
            over_granted_byte_micros: 0,
            slack_sum: 0.0,
            slack_jobs: 0,
            runtime_errors: Vec::new(),
            basis: BTreeMap::new(),
            fits: 0,
            trained_on: 0,
            fired: [0; 3],
            region_fired: BTreeMap::new(),
            tenants_alerted: Default::default(),
            last_pool: (0, 0, 0),
            running_micros: 0,
            memory_byte_micros: 0,
            max_running: 0,
            max_memory: 0,
            simulated_until: 0,
            warm_start_records: 0,
            invariants: Invariants::default(),
            tenants_by_class,
        }
    }

    /// Jobs in a final state.
    pub(super) fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled
    }

    pub(super) fn created(&mut self, kind: Kind) {
        self.created += 1;
        self.scheduled += u64::from(kind == Kind::Scheduled);
    }

    /// A job's first start, after `wait`, under `first_grant`.
    pub(super) fn first_start(&mut self, features: &Features, wait: Micros, first_grant: u64, true_peak: u64) {
        self.started_jobs += 1;
        self.waits[size_class(features.source_rows)].push(wait.max(0));
        self.over_granted += u64::from(first_grant / 10 > true_peak);
        if first_grant < true_peak {
            self.under_granted += 1;
        } else {
            self.slack_sum += (first_grant - true_peak) as f64 / first_grant.max(1) as f64;
            self.slack_jobs += 1;
        }
    }

    pub(super) fn basis(&mut self, basis: Basis) {
        let name = match basis {
            Basis::ColdRule => "cold_rule",
            Basis::Cold => "cold",
            Basis::WarmRule => "warm_rule",
            Basis::Warm => "warm",
        };
        *self.basis.entry(name).or_default() += 1;
    }

    pub(super) fn attempt(&mut self, a: &AttemptSummary) {
        self.attempts += 1;
        *self.attempts_by_outcome.entry(a.class).or_default() += 1;
        let elapsed = u128::try_from(a.elapsed.max(0)).unwrap_or(0);
        self.granted_byte_micros += u128::from(a.grant) * elapsed;
        self.used_byte_micros += u128::from(a.used) * elapsed;
        if a.over_granted {
            self.over_granted_byte_micros += u128::from(a.grant) * elapsed;
        }
    }

    pub(super) fn finished_job(&mut self, succeeded: bool, failure: Option<&'static str>, runtime: Micros, expected: Micros) {
        if succeeded {
            self.succeeded += 1;
            self.runtime_errors.push(((expected - runtime).abs() as f64 / runtime.max(1) as f64) as f32);
        } else {
            self.failed += 1;
            *self.final_failures.entry(failure.unwrap_or("unknown")).or_default() += 1;
        }
    }

    pub(super) fn cancelled_job(&mut self) {
        self.cancelled += 1;
    }

    pub(super) fn fitted(&mut self, trained_on: usize) {
        self.fits += 1;
        self.trained_on = trained_on;
    }

    pub(super) fn fired(&mut self, scope: Scope, key: &str) {
        let i = match scope {
            Scope::Global => 0,
            Scope::Region => 1,
            Scope::Tenant => 2,
        };
        self.fired[i] += 1;
        match scope {
            Scope::Region => *self.region_fired.entry(key.to_string()).or_default() += 1,
            Scope::Tenant => {
                if !self.tenants_alerted.contains(key) {
                    self.tenants_alerted.insert(key.to_string());
                }
            }
            Scope::Global => {}
        }
    }

    /// The pool after a decision at `now`.
    pub(super) fn pool(&mut self, now: Micros, running: usize, used: u64) {
        let (at, was_running, was_used) = self.last_pool;
        let dt = u128::try_from((now - at).max(0)).unwrap_or(0);
        self.running_micros += dt * was_running as u128;
        self.memory_byte_micros += dt * u128::from(was_used);
        self.last_pool = (now, running, used);
        self.max_running = self.max_running.max(running);
        self.max_memory = self.max_memory.max(used);
    }

    pub(super) fn report(mut self, settings: &Settings, world: &World, model_version: u64) -> Report {
        let span = (Micros::from(settings.days) * DAY) as f64;
        let names = |m: &BTreeMap<&'static str, u64>| m.iter().map(|(k, v)| ((*k).to_string(), *v)).collect::<BTreeMap<_, _>>();
        let queue_wait = SIZE_CLASSES
            .iter()
            .zip(self.waits.iter_mut())
            .map(|((name, below), waits)| {
                waits.sort_unstable();
                let seconds = |v: Micros| v as f64 / SECOND as f64;
                SizeClassWaits {
                    size_class: (*name).to_string(),
                    records_below: (*below != u64::MAX).then_some(*below),
                    jobs: waits.len() as u64,
                    p50_seconds: seconds(percentile(waits, 0.50)),
                    p99_seconds: seconds(percentile(waits, 0.99)),
                    max_seconds: seconds(waits.last().copied().unwrap_or(0)),
                }
            })
            .collect();
        self.runtime_errors.sort_unstable_by(f32::total_cmp);
        let runtime_mdape = self.runtime_errors.get(self.runtime_errors.len() / 2).map_or(0.0, |v| f64::from(*v));
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let incidents: Vec<&(Micros, Micros)> = world.incidents.iter().flatten().collect();
        let bad: Vec<_> = world.bad_deployments.iter().flatten().collect();
        Report {
            settings: SettingsEcho {
                days: settings.days,
                jobs_per_day: settings.jobs_per_day,
                tenants: settings.tenants,
                regions: settings.regions,
                seed: settings.seed,
                slots: settings.slots,
                memory_budget_bytes: settings.memory_budget_bytes,
                coverage: settings.coverage,
                fair_share: settings.fair_share,
                backfill: settings.backfill,
                estimator: settings.estimator,
                warm_start: settings.warm_start,
                refit_runs: settings.refit_runs,
                refit_interval_seconds: settings.refit_interval as f64 / SECOND as f64,
                fit_window: settings.fit_window,
                faults: settings.faults.clone(),
            },
            world: WorldSummary {
                segments: world.segments.len(),
                segments_hourly: world.segments.iter().filter(|s| matches!(s.schedule, super::workload::Schedule::Hourly(_))).count(),
                segments_daily: world.segments.iter().filter(|s| matches!(s.schedule, super::workload::Schedule::Daily(_))).count(),
                tenants_by_size_class: SIZE_CLASSES
                    .iter()
                    .zip(self.tenants_by_class)
                    .map(|((name, _), count)| NamedCount { name: (*name).to_string(), count })
                    .collect(),
                largest_tenant_records: world.tenants.iter().map(|t| t.records_at_start as u64).max().unwrap_or(0),
                regional_incidents: incidents.len(),
                regional_incident_minutes: incidents.iter().map(|(s, e)| (e - s) as f64 / 60e6).fold(0.0, |a, b| a + b),
                bad_deployments: bad.len(),
                bad_deployment_hours: bad.iter().map(|d| (d.end - d.start) as f64 / 3600e6).fold(0.0, |a, b| a + b),
            },
            jobs: Jobs {
                created: self.created,
                scheduled: self.scheduled,
                on_demand: self.created - self.scheduled,
                succeeded: self.succeeded,
                failed: self.failed,
                cancelled_at_end: self.cancelled,
                final_failures_by_class: names(&self.final_failures),
            },
            success_rate: ratio(self.succeeded, self.created),
            attempts: Attempts { total: self.attempts, per_job: ratio(self.attempts, self.started_jobs), by_outcome: names(&self.attempts_by_outcome) },
            queue_wait,
            memory: Memory {
                gib_hours_granted: self.granted_byte_micros as f64 / GIB_HOUR,
                gib_hours_used: self.used_byte_micros as f64 / GIB_HOUR,
                relative_slack: if self.slack_jobs == 0 { 0.0 } else { self.slack_sum / self.slack_jobs as f64 },
                under_grant_rate: ratio(self.under_granted, self.started_jobs),
                under_granted_jobs: self.under_granted,
                over_granted_10x_jobs: self.over_granted,
                over_granted_10x_gib_hours: self.over_granted_byte_micros as f64 / GIB_HOUR,
            },
            estimator: EstimatorSummary {
                enabled: settings.estimator,
                warm_start_records: self.warm_start_records,
                fits: self.fits,
                model_version,
                trained_on: self.trained_on,
                estimates_by_basis: names(&self.basis),
                runtime_mdape,
            },
            alerts: Alerts {
                global: self.fired[0],
                region: self.fired[1],
                tenant: self.fired[2],
                region_by_name: self.region_fired,
                tenants_alerted: self.tenants_alerted.len(),
            },
            pool: PoolSummary {
                simulated_seconds: self.simulated_until as f64 / SECOND as f64,
                max_running_jobs: self.max_running,
                mean_running_jobs: self.running_micros as f64 / span,
                max_memory_granted_bytes: self.max_memory,
                mean_memory_granted_bytes: self.memory_byte_micros as f64 / span,
            },
            invariants: self.invariants,
        }
    }
}

/// The nearest-rank percentile of sorted values (0 when empty).
fn percentile(sorted: &[Micros], q: f64) -> Micros {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A count with thousands separators.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn list(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter().map(|(k, v)| format!("{k} {}", grouped(*v))).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        let w = &self.world;
        let j = &self.jobs;
        writeln!(
            f,
            "Simulated {} days: {} jobs ({} scheduled, {} on demand), {} tenants in {} regions, {} segments ({} hourly, {} daily); seed {}",
            s.days,
            grouped(j.created),
            grouped(j.scheduled),
            grouped(j.on_demand),
            grouped(u64::from(s.tenants)),
            s.regions,
            grouped(w.segments as u64),
            grouped(w.segments_hourly as u64),
            grouped(w.segments_daily as u64),
            s.seed
        )?;
        let tenants: Vec<String> = w.tenants_by_size_class.iter().map(|c| format!("{} {}", grouped(c.count), c.name)).collect();
        writeln!(f, "Tenants by size: {}; the largest holds {} records", tenants.join(", "), grouped(w.largest_tenant_records))?;
        writeln!(
            f,
            "Pool: {} slots, {} budget; fair share {}, backfill {}, estimator {} (coverage {}%)",
            s.slots,
            bytes(s.memory_budget_bytes),
            on_off(s.fair_share),
            on_off(s.backfill),
            on_off(s.estimator),
            s.coverage * 100.0
        )?;
        let fl = &s.faults;
        writeln!(
            f,
            "Faults: transient {}% of attempts; {} regional incidents ({:.0} min in all, {}% of reads fail); {} bad deployments ({:.1} h in all)",
            fl.transient_failure_probability * 100.0,
            w.regional_incidents,
            w.regional_incident_minutes,
            fl.regional_incident_failure_probability * 100.0,
            w.bad_deployments,
            w.bad_deployment_hours
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "Success rate after retries: {:.4}% ({} succeeded, {} failed{})",
            self.success_rate * 100.0,
            grouped(j.succeeded),
            grouped(j.failed),
            if j.cancelled_at_end > 0 { format!(", {} cancelled unfinished at the drain limit", grouped(j.cancelled_at_end)) } else { String::new() }
        )?;
        writeln!(f, "Final failures by class: {}", list(&j.final_failures_by_class))?;
        writeln!(f, "Attempts: {} ({:.4} per job): {}", grouped(self.attempts.total), self.attempts.per_job, list(&self.attempts.by_outcome))?;
        writeln!(f)?;
        writeln!(f, "Queue wait to first start:")?;
        writeln!(f, "| size class | records read | jobs | p50 | p99 | max |")?;
        writeln!(f, "|---|---|---:|---:|---:|---:|")?;
        let mut lower = 0u64;
        for c in &self.queue_wait {
            let range = match c.records_below {
                Some(below) => format!("{} to {}", short(lower), short(below)),
                None => format!("{} and more", short(lower)),
            };
            lower = c.records_below.unwrap_or(lower);
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} |",
                c.size_class,
                range,
                grouped(c.jobs),
                duration(c.p50_seconds),
                duration(c.p99_seconds),
                duration(c.max_seconds)
            )?;
        }
        writeln!(f)?;
        let m = &self.memory;
        writeln!(
            f,
            "Memory: {:.1} GiB-h granted, {:.1} GiB-h used ({:.1}%); relative slack {:.1}%; under-grant rate {:.3}% ({} jobs)",
            m.gib_hours_granted,
            m.gib_hours_used,
            if m.gib_hours_granted > 0.0 { m.gib_hours_used / m.gib_hours_granted * 100.0 } else { 0.0 },
            m.relative_slack * 100.0,
            m.under_grant_rate * 100.0,
            grouped(m.under_granted_jobs)
        )?;
        writeln!(f, "Grants over 10x the peak: {} jobs, {:.1} GiB-h granted to them", grouped(m.over_granted_10x_jobs), m.over_granted_10x_gib_hours)?;
        let e = &self.estimator;
        writeln!(
            f,
            "Estimator: {}{} fits, model version {} trained on {} runs; estimates by basis: {}; runtime MdAPE {:.1}%",
            if e.warm_start_records > 0 {
                format!("started from {} runs before the month; ", grouped(e.warm_start_records as u64))
            } else {
                "started cold; ".into()
            },
            e.fits,
            e.model_version,
            grouped(e.trained_on as u64),
            list(&e.estimates_by_basis),
            e.runtime_mdape * 100.0
        )?;
        let a = &self.alerts;
        writeln!(
            f,
            "Alerts fired: global {}, region {} ({}), tenant {} ({} tenants)",
            a.global,
            a.region,
            list(&a.region_by_name),
            a.tenant,
            a.tenants_alerted
        )?;
        let p = &self.pool;
        writeln!(
            f,
            "Pool use: {:.1} jobs running on average, {} at most; {} granted on average, {} at most; drained after {:.2} days",
            p.mean_running_jobs,
            p.max_running_jobs,
            bytes(p.mean_memory_granted_bytes as u64),
            bytes(p.max_memory_granted_bytes),
            p.simulated_seconds / 86_400.0
        )?;
        let i = &self.invariants;
        writeln!(
            f,
            "Checks over {} decisions: budget exceeded {}, slots exceeded {}, ledger mismatches {}, orphan events {}",
            grouped(i.decisions),
            i.budget_exceeded,
            i.slots_exceeded,
            i.ledger_mismatches,
            i.orphan_events
        )
    }
}

/// A power-of-ten count, short: 10^6 → 1M.
fn short(n: u64) -> String {
    match n {
        0 => "0".into(),
        n if n >= 1_000_000_000 && n % 1_000_000_000 == 0 => format!("{}G", n / 1_000_000_000),
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}
