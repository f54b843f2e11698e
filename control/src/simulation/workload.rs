//! The simulated world: tenants in regions with heavy-tailed data that grows, their segments
//! of varied shapes and schedules, the day's arrivals, what each run really needs, and the
//! faults (regional incidents, bad deployments) laid out in advance.
//!
//! Everything here is drawn from seeded streams that do not depend on the pool's policies, so
//! two runs with the same seed and different policies see the same jobs, the same true peaks
//! and runtimes, and the same faults.

use cohort_estimator::{Features, HISTORY_LEN, Record};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scheduler::{Kind, Micros, TenantPolicy};
use crate::simulation::{DAY, Faults, HOUR, MINUTE, SECOND, Settings};

/// Region names, in order; a simulation with more regions names the rest `region-N`.
const REGION_NAMES: [&str; 6] = ["us-east", "eu-west", "us-west", "eu-central", "ap-northeast", "ap-south"];

/// Sources smaller than this run on one partition, as `estimates::run_options` decides.
const ONE_PARTITION_BELOW_BYTES: u64 = 64 << 20;
/// Partitions of a job over larger sources (an executor node's cores)…
const PARTITIONS_LARGE: u32 = 16;
/// …and over sources of at least this many bytes (a larger executor).
const SIXTY_FOUR_PARTITIONS_FROM_BYTES: u64 = 64 << 30;
/// Rows a job reads per second on one partition (filters and joins included).
const ROWS_PER_SECOND_PER_PARTITION: f64 = 1.5e6;
/// What every run spends besides reading (catalog, planning, commit), in seconds, per
/// object read.
const RUN_OVERHEAD_SECONDS_PER_OBJECT: f64 = 0.06;
/// …and once.
const RUN_OVERHEAD_SECONDS: f64 = 0.2;
/// Memory every run holds whatever it reads (DataFusion's session, buffers).
const BASE_PEAK_BYTES: f64 = 24.0 * 1024.0 * 1024.0;
/// Bytes of hash table per (root row)^[`PEAK_ROWS_EXPONENT`].
const PEAK_BYTES_PER_ROW: f64 = 16.0;
/// Peaks grow a little slower than the rows (partial aggregation, streaming).
const PEAK_ROWS_EXPONENT: f64 = 0.88;
/// Share of the month's scheduled runs among all runs (the rest are on demand).
const SCHEDULED_SHARE: f64 = 0.7;
/// Segments of tenants with at least this many records are never scheduled hourly.
const HOURLY_MAX_RECORDS: f64 = 1e8;
/// Memory per partition a run holds (its buffers).
const PEAK_BYTES_PER_PARTITION: f64 = 4.0 * 1024.0 * 1024.0;
/// Share of segments created during the month (the rest existed before it).
const NEW_SEGMENT_SHARE: f64 = 0.03;

/// The size classes queue waits are reported by: (name, records read below this).
pub const SIZE_CLASSES: [(&str, u64); 4] = [("small", 1_000_000), ("medium", 100_000_000), ("large", 10_000_000_000), ("huge", u64::MAX)];

/// The size class of a run that reads `records` rows.
pub fn size_class(records: u64) -> usize {
    SIZE_CLASSES.iter().position(|(_, below)| records < *below).unwrap_or(SIZE_CLASSES.len() - 1)
}

/// A uniform number in (0, 1].
fn open01(rng: &mut ChaCha8Rng) -> f64 {
    1.0 - rng.random::<f64>()
}

/// An exponential number of mean `mean`.
pub(crate) fn exponential(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    -open01(rng).ln() * mean
}

/// A standard normal number (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let (u, v) = (open01(rng), rng.random::<f64>());
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// A log-normal number of median `median` and log-spread `sigma`.
pub(crate) fn log_normal(rng: &mut ChaCha8Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// A Poisson count of mean `mean` (inversion; means here are small, and large ones are
/// approximated by a rounded normal).
fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> u64 {
    if !(mean > 0.0) {
        return 0;
    }
    if mean > 50.0 {
        return (mean + mean.sqrt() * normal(rng)).round().max(0.0) as u64;
    }
    let (mut k, mut p, limit) = (0u64, 1.0, (-mean).exp());
    loop {
        p *= rng.random::<f64>();
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

/// Picks an index by weight.
fn pick(rng: &mut ChaCha8Rng, cumulative: &[f64]) -> usize {
    let total = cumulative.last().copied().unwrap_or(0.0);
    let x = rng.random::<f64>() * total;
    cumulative.partition_point(|c| *c <= x).min(cumulative.len().saturating_sub(1))
}

/// A tenant of the simulated world.
#[derive(Debug, Clone)]
pub struct SimTenant {
    /// Its id (`t00042`).
    pub name: String,
    /// Its region's index.
    pub region: usize,
    /// Records of all its objects at the start of the month.
    pub records_at_start: f64,
    /// Growth of its data per 30 days (0.05: 5%).
    pub growth_per_month: f64,
    /// A backfill that multiplies its data from this instant on, if any: (at, factor).
    pub backfill: Option<(Micros, f64)>,
    /// Bytes per row of its files.
    pub bytes_per_row: f64,
    /// What the scheduler lets it use.
    pub policy: TenantPolicy,
}

impl SimTenant {
    /// Its records at `at`.
    pub fn records_at(&self, at: Micros) -> f64 {
        let months = at as f64 / (30.0 * DAY as f64);
        let step = match self.backfill {
            Some((when, factor)) if at >= when => factor,
            _ => 1.0,
        };
        self.records_at_start * (self.growth_per_month * months).exp() * step
    }
}

/// How often a segment's schedule runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Only on demand.
    None,
    /// Every hour at this offset into the hour.
    Hourly(Micros),
    /// Every day at this offset into the day (UTC).
    Daily(Micros),
}

/// A segment of the simulated world.
#[derive(Debug, Clone)]
pub struct SimSegment {
    /// Its tenant's index.
    pub tenant: usize,
    /// Its id within the tenant (`s3`).
    pub name: String,
    /// The plan's shape: objects, joins, related predicates, hops, phases.
    pub objects: u32,
    /// Relationship hops over all related nodes.
    pub joins: u32,
    /// `related` nodes.
    pub related_predicates: u32,
    /// The longest path of one related node.
    pub max_hops: u32,
    /// Plans executed (top-level branches when phased).
    pub phases: u32,
    /// Share of the tenant's records it reads.
    pub read_share: f64,
    /// Share of what it reads that is the root object.
    pub root_share: f64,
    /// Share of what it reads that is the largest object.
    pub largest_share: f64,
    /// Key skew: its hash tables are this many times larger than the rows say (1: none).
    pub skew: f64,
    /// How much its peak and runtime vary from run to run (log-spread).
    pub volatility: f64,
    /// Its schedule.
    pub schedule: Schedule,
    /// When its tenant created it: 0 for segments that existed before the month.
    pub created_at: Micros,
}

impl SimSegment {
    /// What the estimator knows of a run at `at`.
    pub fn features(&self, tenant: &SimTenant, at: Micros) -> Features {
        let records = tenant.records_at(at);
        let source_rows = (records * self.read_share).max(1_000.0);
        let source_bytes = source_rows * tenant.bytes_per_row;
        let partitions = match source_bytes as u64 {
            b if b < ONE_PARTITION_BELOW_BYTES => 1,
            b if b < SIXTY_FOUR_PARTITIONS_FROM_BYTES => PARTITIONS_LARGE,
            _ => 64,
        };
        Features {
            objects: self.objects,
            joins: self.joins,
            related_predicates: self.related_predicates,
            max_hops: self.max_hops,
            phases: self.phases,
            partitions,
            source_rows: source_rows as u64,
            source_bytes: source_bytes as u64,
            root_rows: (source_rows * self.root_share) as u64,
            largest_rows: (source_rows * self.largest_share) as u64,
        }
    }

    /// What a run with `features` really needs: (peak bytes, runtime), drawn from the job's
    /// own stream.
    pub fn true_cost(&self, features: &Features, rng: &mut ChaCha8Rng) -> (u64, Micros) {
        let shape_memory =
            ((1.0 + 0.3 * f64::from(self.joins.min(10))) * (1.0 + 0.1 * f64::from(self.related_predicates)) / f64::from(self.phases.max(1)).powf(0.4)).min(4.0);
        let mut peak = BASE_PEAK_BYTES
            + PEAK_BYTES_PER_PARTITION * f64::from(features.partitions)
            + PEAK_BYTES_PER_ROW * (features.root_rows.max(1) as f64).powf(PEAK_ROWS_EXPONENT) * shape_memory * self.skew;
        peak *= log_normal(rng, 1.0, self.volatility);
        // Now and then a run's data is unusual (a hot key this time): a heavy tail.
        if rng.random::<f64>() < 0.002 {
            peak *= 1.5 + 1.5 * rng.random::<f64>();
        }
        let shape_runtime =
            (1.0 + 0.25 * f64::from(self.joins.min(10))) * (1.0 + 0.05 * f64::from(self.related_predicates)) * f64::from(self.phases.max(1)).sqrt();
        let rows_per_second = ROWS_PER_SECOND_PER_PARTITION * f64::from(features.partitions.max(1)).powf(0.9);
        let overhead = RUN_OVERHEAD_SECONDS + RUN_OVERHEAD_SECONDS_PER_OBJECT * f64::from(self.objects);
        let mut seconds = overhead + features.source_rows as f64 / rows_per_second * shape_runtime.min(3.0);
        seconds *= log_normal(rng, 1.0, 0.12 + self.volatility / 2.0);
        // Stragglers: a slow node, a cold cache.
        if rng.random::<f64>() < 0.003 {
            seconds *= 1.5 + 2.5 * rng.random::<f64>();
        }
        (peak.clamp(1.0, u64::MAX as f64) as u64, ((seconds * SECOND as f64) as Micros).max(1))
    }
}

/// A bad deployment of a tenant's model: its runs fail with `class` from `start` until `end`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BadDeployment {
    /// When the broken model was deployed.
    pub start: Micros,
    /// When it was fixed.
    pub end: Micros,
    /// `schema_mismatch` or `invalid`.
    pub class: crate::policy::FailureClass,
}

/// The simulated world, fixed by the seed.
#[derive(Debug)]
pub struct World {
    /// Region names.
    pub regions: Vec<String>,
    /// Tenants.
    pub tenants: Vec<SimTenant>,
    /// Segments, grouped by tenant.
    pub segments: Vec<SimSegment>,
    /// Each region's incidents, as (start, end), in order of start.
    pub incidents: Vec<Vec<(Micros, Micros)>>,
    /// Each tenant's bad deployments, in order of start.
    pub bad_deployments: Vec<Vec<BadDeployment>>,
    /// Jobs asked for per day.
    jobs_per_day: u64,
    /// Cumulative weights of the hours of a day for on-demand runs.
    hour_weights: Vec<f64>,
    /// The stream of arrivals.
    arrivals: ChaCha8Rng,
}

/// One run asked for: when, of which segment, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Arrival {
    /// When it is submitted.
    pub at: Micros,
    /// Its segment's index.
    pub segment: u32,
    /// Scheduled or on demand.
    pub kind: ArrivalKind,
}

/// Why a run was asked for (ordered so that sorting is total).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ArrivalKind {
    /// Its schedule was due.
    Scheduled,
    /// Someone asked for it.
    OnDemand,
}

impl ArrivalKind {
    /// The scheduler's kind.
    pub fn core_kind(self) -> Kind {
        match self {
            ArrivalKind::Scheduled => Kind::Scheduled,
            ArrivalKind::OnDemand => Kind::OnDemand,
        }
    }
}

/// The stream numbers of the seed's independent streams.
pub(crate) const STREAM_WORLD: u64 = 0;
const STREAM_FAULTS: u64 = 1;
const STREAM_ARRIVALS: u64 = 2;
/// Segments' runs before the month draw from `STREAM_HISTORY + segment number`.
const STREAM_HISTORY: u64 = 1 << 31;
/// Jobs draw from `STREAM_JOBS + job number`.
pub(crate) const STREAM_JOBS: u64 = 1 << 32;

/// A stream of the seed.
pub(crate) fn stream(seed: u64, number: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(number);
    rng
}

impl World {
    /// Builds the world of `settings` (validated).
    pub fn new(settings: &Settings) -> World {
        let mut rng = stream(settings.seed, STREAM_WORLD);
        let regions: Vec<String> =
            (0..settings.regions as usize).map(|i| REGION_NAMES.get(i).map_or_else(|| format!("region-{}", i + 1), |n| (*n).to_string())).collect();
        // Larger regions first: weights 1, 1/2^0.7, 1/3^0.7, …
        let region_weights: Vec<f64> = (0..regions.len())
            .scan(0.0, |sum, i| {
                *sum += 1.0 / ((i + 1) as f64).powf(0.7);
                Some(*sum)
            })
            .collect();
        let mut tenants = Vec::with_capacity(settings.tenants as usize);
        let mut segments = Vec::new();
        for t in 0..settings.tenants as usize {
            // Records: 10^4 × 10^Exp(mean 0.95), at most 10^11: most tenants hold tens of
            // thousands of records, one in a thousand a hundred billion.
            let exponent = (4.0 + exponential(&mut rng, 0.95)).min(11.0);
            let records_at_start = 10f64.powf(exponent);
            let growth_per_month = 0.01 + 0.2 * rng.random::<f64>().powi(2);
            let backfill = (rng.random::<f64>() < 0.03).then(|| {
                let at = (rng.random::<f64>() * f64::from(settings.days) * DAY as f64) as Micros;
                (at, 1.5 + 2.0 * rng.random::<f64>())
            });
            let bytes_per_row = 30.0 + 90.0 * rng.random::<f64>();
            let policy = tenant_policy(&format!("t{t:05}"), records_at_start, settings.memory_budget_bytes);
            tenants.push(SimTenant {
                name: format!("t{t:05}"),
                region: pick(&mut rng, &region_weights),
                records_at_start,
                growth_per_month,
                backfill,
                bytes_per_row,
                policy,
            });
            let count = (1.0 + exponential(&mut rng, 2.0)).min(8.0) as usize;
            for s in 0..count {
                let objects = 1 + rng.random_range(0..6u32);
                let related_predicates = if objects == 1 { 0 } else { (exponential(&mut rng, 2.5) as u32).min(14) };
                let joins = if related_predicates == 0 { 0 } else { related_predicates + rng.random_range(0..=related_predicates) };
                let max_hops = if related_predicates == 0 { 0 } else { 1 + rng.random_range(0..3u32) };
                let phases = if related_predicates > 8 { 2 + rng.random_range(0..3u32) } else { 1 };
                let skew = if rng.random::<f64>() < 0.08 { 1.5 + 1.5 * rng.random::<f64>() } else { 1.0 };
                segments.push(SimSegment {
                    tenant: t,
                    name: format!("s{s}"),
                    objects,
                    joins,
                    related_predicates,
                    max_hops,
                    phases,
                    read_share: (0.15 * f64::from(objects) + 0.1 * rng.random::<f64>()).min(1.0),
                    root_share: 0.02 + 0.3 * rng.random::<f64>().powi(2),
                    largest_share: 0.4 + 0.5 * rng.random::<f64>(),
                    skew,
                    volatility: 0.04 + 0.2 * rng.random::<f64>().powi(3),
                    schedule: Schedule::None,
                    created_at: 0,
                });
            }
        }
        assign_schedules(&mut rng, &mut segments, &tenants, settings.jobs_per_day);
        for segment in segments.iter_mut() {
            if rng.random::<f64>() < NEW_SEGMENT_SHARE {
                segment.created_at = (rng.random::<f64>() * f64::from(settings.days) * DAY as f64) as Micros;
            }
        }
        // On-demand runs follow working hours (UTC; most tenants are in the first regions).
        let hour_weights: Vec<f64> = (0..24)
            .scan(0.0, |sum, h| {
                *sum += 0.4 + (std::f64::consts::PI * (f64::from(h) - 6.0) / 14.0).sin().max(0.0);
                Some(*sum)
            })
            .collect();
        let mut faults = stream(settings.seed, STREAM_FAULTS);
        let (incidents, bad_deployments) = lay_out_faults(&mut faults, &settings.faults, settings.days, regions.len(), tenants.len());
        World {
            regions,
            tenants,
            segments,
            incidents,
            bad_deployments,
            jobs_per_day: settings.jobs_per_day,
            hour_weights,
            arrivals: stream(settings.seed, STREAM_ARRIVALS),
        }
    }

    /// The runs asked for on `day`, in order of time (then segment).
    pub fn arrivals(&mut self, day: u32) -> Vec<Arrival> {
        let start = Micros::from(day) * DAY;
        let end = start + DAY;
        let mut out = Vec::new();
        for (i, segment) in self.segments.iter().enumerate() {
            let segment_index = u32::try_from(i).unwrap_or(u32::MAX);
            // The schedule loop enqueues a due run within half a second.
            let mut due = |at: Micros, out: &mut Vec<Arrival>| {
                let at = (at + self.arrivals.random_range(0..SECOND / 2)).min(end - 1);
                out.push(Arrival { at, segment: segment_index, kind: ArrivalKind::Scheduled });
            };
            let created = segment.created_at;
            match segment.schedule {
                Schedule::None => {}
                Schedule::Hourly(offset) => (0..24).map(|h| start + h * HOUR + offset).filter(|at| *at >= created).for_each(|at| due(at, &mut out)),
                Schedule::Daily(offset) => Some(start + offset).filter(|at| *at >= created).into_iter().for_each(|at| due(at, &mut out)),
            }
        }
        // On-demand runs make up the rest of the day's jobs (more on days when segments
        // created later skip their schedules).
        let count = self.segments.len();
        let on_demand = self.jobs_per_day.saturating_sub(out.len() as u64);
        for _ in 0..on_demand {
            let hour = pick(&mut self.arrivals, &self.hour_weights) as Micros;
            let at = start + hour * HOUR + self.arrivals.random_range(0..HOUR);
            // Someone runs one of the segments that exist by then.
            let first = self.arrivals.random_range(0..count);
            let Some(segment) = (0..count).map(|k| (first + k) % count).find(|&i| self.segments[i].created_at <= at) else { continue };
            out.push(Arrival { at, segment: u32::try_from(segment).unwrap_or(u32::MAX), kind: ArrivalKind::OnDemand });
        }
        out.sort_unstable();
        out
    }

    /// The runs of segments that existed before the month, as the service's store holds them
    /// at its start: each such segment's last [`HISTORY_LEN`] runs at its schedule's period
    /// (a day for on-demand segments) before the month, in order of time. Their costs are
    /// drawn as the month's are, from streams of their own.
    pub fn past_runs(&self, seed: u64) -> Vec<Record> {
        let mut records = Vec::new();
        for (i, segment) in self.segments.iter().enumerate() {
            if segment.created_at > 0 {
                continue;
            }
            let tenant = &self.tenants[segment.tenant];
            let period = match segment.schedule {
                Schedule::Hourly(_) => HOUR,
                Schedule::Daily(_) | Schedule::None => DAY,
            };
            let mut rng = stream(seed, STREAM_HISTORY + i as u64);
            for k in (1..=HISTORY_LEN as Micros).rev() {
                let at = -k * period;
                let features = segment.features(tenant, at);
                let (peak, runtime) = segment.true_cost(&features, &mut rng);
                records.push(Record {
                    at,
                    tenant: tenant.name.clone(),
                    segment: segment.name.clone(),
                    job: String::new(),
                    features,
                    peak_bytes: Some(peak),
                    runtime_seconds: Some(runtime as f64 / SECOND as f64),
                    exhausted_bytes: None,
                    granted_bytes: None,
                    estimated_runtime_seconds: None,
                });
            }
        }
        records.sort_by_key(|r| r.at);
        records
    }

    /// The incident of `region` that overlaps `[from, to]`, if any: its start.
    pub fn incident_during(&self, region: usize, from: Micros, to: Micros) -> Option<Micros> {
        self.incidents.get(region)?.iter().find(|(start, end)| *start <= to && *end > from).map(|(start, _)| *start)
    }

    /// The bad deployment of `tenant` in force at `at`, if any.
    pub fn bad_deployment_at(&self, tenant: usize, at: Micros) -> Option<&BadDeployment> {
        self.bad_deployments.get(tenant)?.iter().find(|d| d.start <= at && at < d.end)
    }
}

/// A tenant's limits by its size: small tenants run 2 jobs at once, medium 4, large and huge
/// 8; large tenants weigh 2 in the fair share and huge ones 4; the memory quota is half the
/// budget (three quarters for huge tenants); 60 jobs a minute. The burst follows the
/// service's rule (`policy::policy`).
fn tenant_policy(name: &str, records: f64, budget: u64) -> TenantPolicy {
    let (max_concurrent, share, quota) = if records < 1e6 {
        (2, 1.0, budget / 2)
    } else if records < 1e8 {
        (4, 1.0, budget / 2)
    } else if records < 1e10 {
        (8, 2.0, budget / 2)
    } else {
        (8, 4.0, budget / 4 * 3)
    };
    let row = crate::store::Tenant {
        id: name.to_string(),
        region: String::new(),
        data_root: String::new(),
        max_concurrent_jobs: max_concurrent,
        memory_quota_bytes: i64::try_from(quota).unwrap_or(i64::MAX),
        jobs_per_minute: 60,
        share,
        created_at: String::new(),
        storage: None,
    };
    crate::policy::policy(&row)
}

/// A minute of the hour as tenants choose it: mostly round.
fn round_minute(rng: &mut ChaCha8Rng) -> Micros {
    let x = rng.random::<f64>();
    let minute = if x < 0.55 {
        0
    } else if x < 0.70 {
        30
    } else if x < 0.80 {
        [15, 45][rng.random_range(0..2)]
    } else {
        rng.random_range(0..60)
    };
    minute * MINUTE
}

/// Gives segments schedules so that about [`SCHEDULED_SHARE`] of `jobs_per_day` are
/// scheduled: daily runs first (midnight UTC and 06:00 are popular), then hourly ones for
/// segments of tenants small enough to run every hour.
fn assign_schedules(rng: &mut ChaCha8Rng, segments: &mut [SimSegment], tenants: &[SimTenant], jobs_per_day: u64) {
    let target = (jobs_per_day as f64 * SCHEDULED_SHARE) as u64;
    // A random order of segments: the first become daily, some of those hourly.
    let mut order: Vec<usize> = (0..segments.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let daily = order.len().min(usize::try_from(target).unwrap_or(usize::MAX));
    let mut per_day = daily as u64;
    for &i in &order[..daily] {
        let x = rng.random::<f64>();
        let hour = if x < 0.35 {
            0
        } else if x < 0.55 {
            6
        } else {
            rng.random_range(0..24)
        };
        segments[i].schedule = Schedule::Daily(hour * HOUR + round_minute(rng));
    }
    for &i in &order[..daily] {
        if per_day + 23 > target {
            break;
        }
        if tenants[segments[i].tenant].records_at_start < HOURLY_MAX_RECORDS {
            segments[i].schedule = Schedule::Hourly(round_minute(rng));
            per_day += 23;
        }
    }
}

/// The incidents of each region and the bad deployments of each tenant over `days`.
#[allow(clippy::type_complexity)]
fn lay_out_faults(rng: &mut ChaCha8Rng, faults: &Faults, days: u32, regions: usize, tenants: usize) -> (Vec<Vec<(Micros, Micros)>>, Vec<Vec<BadDeployment>>) {
    let span = f64::from(days) * DAY as f64;
    let months = f64::from(days) / 30.0;
    let mut incidents = vec![Vec::new(); regions];
    for region in incidents.iter_mut() {
        for _ in 0..poisson(rng, faults.regional_incidents_per_region_month * months) {
            let start = (rng.random::<f64>() * span) as Micros;
            let minutes = log_normal(rng, faults.regional_incident_minutes, 0.6).clamp(2.0, 12.0 * 60.0);
            region.push((start, start + (minutes * MINUTE as f64) as Micros));
        }
        region.sort_unstable();
    }
    let mut bad = vec![Vec::new(); tenants];
    if tenants > 0 {
        for _ in 0..poisson(rng, faults.bad_deployments_per_tenant_month * months * tenants as f64) {
            let tenant = rng.random_range(0..tenants);
            let start = (rng.random::<f64>() * span) as Micros;
            let hours = log_normal(rng, faults.bad_deployment_hours, 0.8).clamp(10.0 / 60.0, 72.0);
            let class = if rng.random::<f64>() < 0.6 { crate::policy::FailureClass::SchemaMismatch } else { crate::policy::FailureClass::Invalid };
            bad[tenant].push(BadDeployment { start, end: start + (hours * HOUR as f64) as Micros, class });
        }
        for list in bad.iter_mut() {
            list.sort_unstable_by_key(|d| d.start);
        }
    }
    (incidents, bad)
}
