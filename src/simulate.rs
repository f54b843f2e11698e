//! `cohort simulate`: a month of the service on a virtual clock, to size the pool and price
//! the policies. The engine is `cohort_control::simulation`; this is its command line: flags
//! to `simulation::Settings`, the progress bar, the printed report and the JSON file (`--json`:
//! the report, with `wall_seconds` beside it, the one figure that a seed does not fix).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::ValueEnum;
use cohort_control::simulation::{self, DAY, Faults, HOUR, Progress, Report, Settings};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::alerts::BadInput;

/// On or off. (Its variants carry no doc comments, so clap lists them as `[possible values:
/// on, off]`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl Switch {
    fn on(self) -> bool {
        self == Switch::On
    }
}

/// Arguments of `cohort simulate`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct SimulateArgs {
    /// Days of arrivals (the pool then drains what is left).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Jobs asked for per day: about 70% by hourly and daily schedules (many at round
    /// times), the rest on demand, following working hours.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub jobs_per_day: u64,
    /// Tenants. Their data is heavy-tailed: 10^4 × 10^Exp(mean 0.95) records, at most 10^11,
    /// growing 1–21% a month (3% of tenants also backfill 1.5–3.5× once).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub tenants: u32,
    /// Regions (the first ones hold more tenants).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub regions: u32,
    /// The seed: the same seed gives the same report (apart from `wall_seconds`).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Executor slots of the pool.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub slots: u32,
    /// The pool's memory budget (a cluster's): 512GiB, 1TiB, 2000GB…
    #[arg(long, default_value = "1TiB", value_name = "SIZE", value_parser = parse_budget)]
    pub memory: u64,
    /// The estimator's coverage: the share of runs meant to stay within their grant.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.995, value_parser = parse_open_unit)]
    pub coverage: f64,
    /// Fair share between tenants (off: first come, first served across tenants).
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub fair_share: Switch,
    /// Backfilling: smaller jobs start ahead of the one waiting for memory when they cannot
    /// delay it (off: strictly in order).
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub backfill: Switch,
    /// Grants from the estimator's calibrated bound (off: the static rule the service falls
    /// back on, 64 KiB + 4 × the tenant's source bytes, capped at the budget).
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub estimator: Switch,
    /// Start as a service that ran before (on: the store holds the last 8 runs of every
    /// segment that existed before the month, and the model was fitted on them; 3% of the
    /// segments are created during the month and start cold) or from an empty store (off:
    /// size rules until the first fit, every segment cold).
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub warm_start: Switch,
    /// Refit the estimator after at most this many finished attempts (60 at first, then
    /// twice the records of the last fit up to this)…
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub refit_runs: u64,
    /// …or after this many simulated hours.
    #[arg(long, allow_negative_numbers = true, default_value_t = 6.0, value_parser = parse_positive)]
    pub refit_hours: f64,
    /// Fit on the most recent this many records.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=10_000_000))]
    pub fit_window: u64,
    /// Chance that an attempt fails on its own, transiently (80% `source_unavailable`, 20%
    /// `execution`); retried after 1 s and 2 s with jitter, 3 attempts in all.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0025, value_parser = parse_probability)]
    pub transient_failure_rate: f64,
    /// Regional incidents per region per 30 days: every source of the region unreachable.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.5, value_parser = parse_non_negative)]
    pub incidents_per_region_month: f64,
    /// The median length of a regional incident, in minutes (log-normal, 2 min to 12 h).
    #[arg(long, allow_negative_numbers = true, default_value_t = 15.0, value_parser = parse_positive)]
    pub incident_minutes: f64,
    /// Chance that an attempt reading during an incident of its region fails.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.9, value_parser = parse_probability)]
    pub incident_failure_rate: f64,
    /// Broken models deployed per tenant per 30 days: the tenant's runs fail
    /// `schema_mismatch` or `invalid` (never retried) until it is fixed.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.012, value_parser = parse_non_negative)]
    pub bad_deploys_per_tenant_month: f64,
    /// The median time to fix a bad deployment, in hours (log-normal, 10 min to 3 days).
    #[arg(long, allow_negative_numbers = true, default_value_t = 2.0, value_parser = parse_positive)]
    pub bad_deploy_hours: f64,
    /// Jobs still unfinished this many days after the last arrival are cancelled (and
    /// counted in the report).
    #[arg(long, allow_negative_numbers = true, default_value_t = 7.0, value_parser = parse_non_negative)]
    pub drain_days: f64,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

const AFTER_HELP: &str = "\
The simulation drives Cohort's own scheduling core, retry policy, estimator and alert rule on a
virtual clock; only the executor and the workload are simulated.

Workload: tenants in regions with heavy-tailed data (most hold tens of thousands of records, a
few up to 10^11), each with 1 to 8 segments of varied plan shapes (objects, joins, related
predicates, hops, phases). About 70% of the jobs are scheduled runs (daily ones at 00:00 and
06:00 UTC above all, hourly ones for tenants under 10^8 records, most at minute 0), the rest
on-demand runs in working hours. A run's true peak memory and runtime follow from what it reads
and its shape, with run-to-run noise, key skew on 8% of segments, a heavy tail of unusual runs
(0.2% with 1.5-3x the peak) and stragglers (0.3% with 1.5-4x the runtime). An attempt fails
`resources_exhausted` when its grant is below its true peak (part-way through), `timeout` past
its deadline (10x the expected runtime, 60 s to 6 h).

Default fault mix (per month of 100,000 jobs a day, 5,000 tenants, 6 regions):
  transient errors      0.25% of attempts (retries recover almost all of them)
  regional incidents    0.5 per region (about 3), median 15 min, 90% of reads fail; retries
                        after 1 s and 2 s do not outlast them: the region's jobs fail meanwhile
  bad deployments       0.012 per tenant (about 60), median 2 h to fix, never retried
With seed 1 this mix fails 469 of 3,000,000 jobs for good (99.984% success after retries):
321 `source_unavailable` (jobs that read during the 4 incidents: 3 attempts within 3 s), 141
`schema_mismatch`/`invalid` (bad deployments) and 7 `timeout` (new segments whose first runtime
estimate was far too low).

The service starts warm (--warm-start on): the store holds the last 8 runs of every segment
that existed before the month; 3% of the segments are created during the month and start
cold.

Report (standard output; --json writes it as JSON with `wall_seconds` apart): jobs and the
success rate after retries, attempts by outcome, queue wait p50/p99 by size class, memory
granted against used (GiB-hours, relative slack, under-grant rate), the estimator's fits,
alerts fired by scope (5 final failures within 10 minutes per tenant, region, everywhere), pool
use, and checks made at every decision (budget and slots never exceeded).

Exit status: 0 done, 2 bad flags, 1 anything else.";

fn parse_budget(text: &str) -> Result<u64, String> {
    let bytes = cohort_control::config::parse_bytes(text)?;
    if bytes < 256 << 20 {
        return Err(format!("{text:?} is too small for a pool: at least 256MiB"));
    }
    Ok(bytes)
}

fn parse_number(text: &str) -> Result<f64, String> {
    let v: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number"))?;
    if !v.is_finite() {
        return Err(format!("{text:?} is not a finite number"));
    }
    Ok(v)
}

fn parse_probability(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{v} is not a probability between 0 and 1"));
    }
    Ok(v)
}

fn parse_open_unit(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if !(v > 0.0 && v < 1.0) {
        return Err(format!("{v} must be between 0 and 1 (exclusive), e.g. 0.995"));
    }
    Ok(v)
}

fn parse_non_negative(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if v < 0.0 {
        return Err(format!("{v} must not be negative"));
    }
    Ok(v)
}

fn parse_positive(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if v <= 0.0 {
        return Err(format!("{v} must be greater than 0"));
    }
    Ok(v)
}

impl SimulateArgs {
    /// The engine's settings.
    pub fn settings(&self) -> Settings {
        Settings {
            days: self.days,
            jobs_per_day: self.jobs_per_day,
            tenants: self.tenants,
            regions: self.regions,
            seed: self.seed,
            slots: self.slots as usize,
            memory_budget_bytes: self.memory,
            coverage: self.coverage,
            fair_share: self.fair_share.on(),
            backfill: self.backfill.on(),
            estimator: self.estimator.on(),
            warm_start: self.warm_start.on(),
            refit_runs: self.refit_runs,
            refit_interval: (self.refit_hours * HOUR as f64).min(i64::MAX as f64) as i64,
            fit_window: usize::try_from(self.fit_window).unwrap_or(usize::MAX),
            drain_limit: (self.drain_days * DAY as f64).min(i64::MAX as f64) as i64,
            faults: Faults {
                transient_failure_probability: self.transient_failure_rate,
                regional_incidents_per_region_month: self.incidents_per_region_month,
                regional_incident_minutes: self.incident_minutes,
                regional_incident_failure_probability: self.incident_failure_rate,
                bad_deployments_per_tenant_month: self.bad_deploys_per_tenant_month,
                bad_deployment_hours: self.bad_deploy_hours,
            },
            ..Settings::default()
        }
    }
}

/// The report as the JSON file holds it: the simulation's report, and apart from it the wall
/// time the simulation took (the only part that differs between runs with the same seed).
#[derive(Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    report: &'a Report,
    wall_seconds: f64,
}

/// Runs `cohort simulate`.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let settings = args.settings();
    settings.validate().map_err(|e| BadInput(format!("cohort simulate: {e}")))?;
    let end_minutes = u64::from(settings.days) * 24 * 60;
    let bar = ProgressBar::with_draw_target(Some(end_minutes), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{bar:30}] {msg} ({elapsed})") {
        bar.set_style(style.progress_chars("=> "));
    }
    let started = Instant::now();
    let mut show = |p: &Progress| {
        let minutes = u64::try_from(p.now / 60_000_000).unwrap_or(0);
        bar.set_position(minutes.min(end_minutes));
        let wall = started.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!(
            "day {:.1}/{}: {} jobs, {} finished, {} queued, {} running; {:.0} jobs/s",
            p.now as f64 / DAY as f64,
            p.end / DAY,
            p.jobs_created,
            p.jobs_finished,
            p.queued,
            p.running,
            p.jobs_finished as f64 / wall
        ));
    };
    let report = simulation::run(&settings, &mut show).map_err(|e| BadInput(format!("cohort simulate: {e}")))?;
    let wall_seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    print!("{report}");
    println!("Wall time of the simulation: {wall_seconds:.1} s ({:.1} µs per job)", wall_seconds * 1e6 / report.jobs.created.max(1) as f64);
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&JsonReport { report: &report, wall_seconds })?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing the report to {}", path.display()))?;
    }
    Ok(())
}
