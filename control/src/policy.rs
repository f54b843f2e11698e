//! Pure policy: how a job is sized, its deadline, how a failure is retried and where a job
//! runs. No I/O: the pool applies it and the simulation runs the same rules.

use std::time::Duration;

use crate::scheduler::TenantPolicy;
use crate::store::Tenant;

/// What sizing knows about a job before it runs.
#[derive(Debug, Clone)]
pub struct SizingInput {
    /// Total bytes of the tenant's sources when the model was stored.
    pub source_bytes: u64,
    /// Objects in the model.
    pub objects: u64,
}

/// A job's predicted needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grant {
    /// The memory the job runs under.
    pub memory_bytes: u64,
    /// The runtime expected.
    pub runtime: Duration,
}

/// Predicts a job's needs. The estimator fills this in; until it does, [`SizeRule`] does.
pub trait Sizer: Send + Sync + std::fmt::Debug {
    /// The grant for a job.
    fn size(&self, input: &SizingInput) -> Grant;
}

/// A simple rule: a floor plus a multiple of the sources' bytes, capped at the budget.
#[derive(Debug, Clone)]
pub struct SizeRule {
    /// The smallest grant.
    pub min_bytes: u64,
    /// Grant per source byte.
    pub per_source_byte: f64,
    /// The largest grant (the pool's budget).
    pub max_bytes: u64,
}

impl Sizer for SizeRule {
    fn size(&self, input: &SizingInput) -> Grant {
        let scaled = (input.source_bytes as f64 * self.per_source_byte).min(u64::MAX as f64) as u64;
        let memory_bytes = self.min_bytes.saturating_add(scaled).min(self.max_bytes);
        // About 100 MB/s of source per job, with a floor.
        let runtime = Duration::from_millis(100 + input.source_bytes / 100_000);
        Grant { memory_bytes, runtime }
    }
}

/// How long an attempt may run: the expected runtime times a factor, within a floor and a
/// ceiling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deadlines {
    /// Multiple of the expected runtime.
    pub factor: f64,
    /// The shortest deadline.
    pub floor: Duration,
    /// The longest deadline (also caps a deadline asked for with the run).
    pub ceiling: Duration,
}

impl Deadlines {
    /// The deadline of a job expected to run `expected`.
    pub fn for_runtime(&self, expected: Duration) -> Duration {
        let ceiling = self.ceiling.max(self.floor);
        let scaled = Duration::try_from_secs_f64(expected.as_secs_f64() * self.factor.max(1.0)).unwrap_or(ceiling);
        scaled.clamp(self.floor, ceiling)
    }
}

/// Why an attempt failed: the executor's [`cohort_executor::ErrorClass`], and what the
/// service itself adds (a deadline passed, the store failed, the run could not be committed).
/// Stored, exported in metrics and shown in triage as [`FailureClass::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureClass {
    /// The model or segment is invalid (or gone): another attempt cannot help.
    Invalid,
    /// The data does not match the model.
    SchemaMismatch,
    /// A source could not be read: may pass by itself.
    SourceUnavailable,
    /// The memory grant was too small: retried with a larger one.
    ResourcesExhausted,
    /// The engine failed for another reason: may pass by itself.
    Execution,
    /// A bug.
    Internal,
    /// The attempt ran past its deadline.
    Timeout,
    /// The store failed while the job was set up: may pass by itself.
    Store,
    /// The run could not be committed.
    Commit,
}

impl FailureClass {
    /// Every class, in the order metrics and docs list them.
    pub const ALL: [FailureClass; 9] = [
        FailureClass::Invalid,
        FailureClass::SchemaMismatch,
        FailureClass::SourceUnavailable,
        FailureClass::ResourcesExhausted,
        FailureClass::Execution,
        FailureClass::Internal,
        FailureClass::Timeout,
        FailureClass::Store,
        FailureClass::Commit,
    ];

    /// Classes worth another attempt after a wait: they may pass by themselves.
    pub const TRANSIENT: [FailureClass; 3] = [FailureClass::SourceUnavailable, FailureClass::Execution, FailureClass::Store];

    /// Its name as stored and exported.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureClass::Invalid => "invalid",
            FailureClass::SchemaMismatch => "schema_mismatch",
            FailureClass::SourceUnavailable => "source_unavailable",
            FailureClass::ResourcesExhausted => "resources_exhausted",
            FailureClass::Execution => "execution",
            FailureClass::Internal => "internal",
            FailureClass::Timeout => "timeout",
            FailureClass::Store => "store",
            FailureClass::Commit => "commit",
        }
    }

    /// Whether another attempt after a wait may pass.
    pub fn is_transient(self) -> bool {
        Self::TRANSIENT.contains(&self)
    }

    /// Whether the data can cause it: the attempt's data is probed for triage.
    pub fn is_probed(self) -> bool {
        matches!(self, FailureClass::ResourcesExhausted | FailureClass::Execution)
    }
}

impl std::fmt::Display for FailureClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FailureClass {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        FailureClass::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| format!("{s:?} is not a failure class"))
    }
}

impl From<cohort_executor::ErrorClass> for FailureClass {
    fn from(c: cohort_executor::ErrorClass) -> Self {
        use cohort_executor::ErrorClass as E;
        match c {
            E::Invalid => FailureClass::Invalid,
            E::SchemaMismatch => FailureClass::SchemaMismatch,
            E::SourceUnavailable => FailureClass::SourceUnavailable,
            E::ResourcesExhausted => FailureClass::ResourcesExhausted,
            E::Execution => FailureClass::Execution,
            E::Internal => FailureClass::Internal,
        }
    }
}

/// How long the data probe of a failed attempt may take.
pub const PROBE_TIME: Duration = Duration::from_secs(10);
/// The memory a data probe asks to be lent (it samples at most 200,000 rows an object).
pub const PROBE_MEMORY: u64 = 256 << 20;

/// How failed attempts are retried, by failure class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all for a job failing transiently (the first included).
    pub transient_attempts: u32,
    /// The wait before the first transient retry; it doubles at each next one.
    pub backoff_base: Duration,
    /// The longest wait.
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { transient_attempts: 3, backoff_base: Duration::from_secs(1), backoff_max: Duration::from_secs(300) }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Retry {
    /// Run again at once with this larger grant.
    Larger(u64),
    /// Run again after this wait.
    After(Duration),
    /// Fail the job, for this reason.
    No(String),
}

impl RetryPolicy {
    /// The decision after an attempt under `grant` failed with `class`: `cap` is the largest
    /// grant the job may have, `transient_failures` how many of its attempts failed
    /// transiently (this one included), `jitter` a number in [0, 1).
    pub fn decide(&self, class: FailureClass, grant: u64, cap: u64, transient_failures: u32, jitter: f64) -> Retry {
        match class {
            FailureClass::ResourcesExhausted if grant < cap => Retry::Larger(grant.saturating_mul(2).min(cap)),
            FailureClass::ResourcesExhausted => Retry::No(format!("ran out of memory at the largest grant it may have ({cap} bytes)")),
            c if c.is_transient() => {
                if transient_failures < self.transient_attempts {
                    Retry::After(self.backoff(transient_failures, jitter))
                } else {
                    Retry::No(format!("failed {transient_failures} times ({c}); no attempts left"))
                }
            }
            c => Retry::No(format!("{c}: another attempt cannot help")),
        }
    }

    /// The wait after the `n`th transient failure: `base × 2^(n-1)`, capped, with "equal
    /// jitter" (half of it fixed, half random) so retries of many jobs spread out.
    pub fn backoff(&self, n: u32, jitter: f64) -> Duration {
        cohort_common::backoff::equal_jitter(self.backoff_base, self.backoff_max, n, jitter)
    }
}

/// Which jobs run on the Ballista cluster: those whose memory estimate exceeds what the pool
/// may grant them (the budget, or their tenant's quota when smaller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The pool's budget.
    pub budget: u64,
    /// What this process holds of a job on the cluster (the rows read back, parts run
    /// first): its first grant, doubled on `resources_exhausted` like any other.
    pub client_grant: u64,
}

impl Route {
    /// The backend of a job estimated at `estimate` bytes of a tenant with `quota` (0: none),
    /// and its grant in this process.
    pub fn choose(&self, estimate: u64, quota: i64) -> (&'static str, u64) {
        let cap = u64::try_from(quota).ok().filter(|q| *q > 0).map_or(self.budget, |q| q.min(self.budget));
        if estimate > cap { (crate::store::BALLISTA, self.client_grant.min(cap)) } else { (crate::store::EMBEDDED, estimate) }
    }
}

/// A tenant's limits as the core applies them. The token bucket holds a tenth of a minute's
/// jobs (at least one).
pub fn policy(t: &Tenant) -> TenantPolicy {
    let per_minute = t.jobs_per_minute.max(1) as f64;
    TenantPolicy {
        max_concurrent: u32::try_from(t.max_concurrent_jobs.max(1)).unwrap_or(u32::MAX),
        memory_quota: u64::try_from(t.memory_quota_bytes).ok().filter(|q| *q > 0).unwrap_or(u64::MAX),
        jobs_per_minute: per_minute,
        burst: (per_minute / 10.0).max(1.0),
        weight: if t.share > 0.0 { t.share } else { 1.0 },
    }
}
