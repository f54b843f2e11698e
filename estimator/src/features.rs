//! What is known of a run before it starts, and what a finished run taught.
//!
//! [`Features`]: the plan's shape, the partitions, and the rows and bytes of the objects read.
//! [`Record`]: a finished run (its features, the measured peak and runtime, the largest grant
//! it ran out of), as the control plane stores it and as one line of a trace holds it.
//! [`PastRun`]: a record as a segment's history holds it (its peak only a lower bound when no
//! attempt finished). [`Histories`]: each segment's last [`HISTORY_LEN`] runs.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// What is known of a run before it starts: the plan's shape and the sizes of what it reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Features {
    /// Distinct objects the segment reads.
    pub objects: u32,
    /// Relationship hops walked, over all `related` nodes.
    pub joins: u32,
    /// `related` nodes.
    pub related_predicates: u32,
    /// The longest path of one `related` node.
    pub max_hops: u32,
    /// Plans executed: 1, or the top-level branches when the filter runs in phases.
    pub phases: u32,
    /// Partitions the executor runs the plan on.
    pub partitions: u32,
    /// Rows of the objects the segment reads (Parquet metadata; 0 where unknown).
    pub source_rows: u64,
    /// Bytes of the files of the objects the segment reads.
    pub source_bytes: u64,
    /// Rows of the segment's root object.
    pub root_rows: u64,
    /// Rows of the largest object the segment reads.
    pub largest_rows: u64,
}

/// One finished run, as the control plane records it and as a trace line (JSON) holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// When the run was estimated (microseconds since the epoch): the trace's order.
    pub at: i64,
    /// The tenant.
    pub tenant: String,
    /// The segment (the tenant's own id).
    pub segment: String,
    /// The job, where known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub job: String,
    /// What was known before the run.
    pub features: Features,
    /// The peak memory of the attempt that succeeded.
    #[serde(default)]
    pub peak_bytes: Option<u64>,
    /// The elapsed time of the attempt that succeeded.
    #[serde(default)]
    pub runtime_seconds: Option<f64>,
    /// The largest grant an attempt of this run ran out of: the true peak lies above it.
    #[serde(default)]
    pub exhausted_bytes: Option<u64>,
    /// The memory the run was first granted, where known.
    #[serde(default)]
    pub granted_bytes: Option<u64>,
    /// The runtime estimated for it then, where known.
    #[serde(default)]
    pub estimated_runtime_seconds: Option<f64>,
}

impl Record {
    /// The peak this run is known to have reached: the measured one, or a lower bound from an
    /// exhausted grant.
    pub fn peak_at_least(&self) -> Option<f64> {
        let measured = self.peak_bytes.map(|p| p as f64);
        let bound = self.exhausted_bytes.map(|e| e as f64);
        match (measured, bound) {
            (Some(m), Some(b)) => Some(m.max(b)),
            (m, b) => m.or(b),
        }
    }

    /// Whether the peak was measured (not only bounded from below).
    pub fn measured(&self) -> bool {
        self.peak_bytes.is_some()
    }
}

/// A past run of the same segment, as the estimator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PastRun {
    /// Its features.
    pub features: Features,
    /// Its peak, or the lower bound an exhausted grant gave.
    pub peak_bytes: f64,
    /// True when `peak_bytes` is only a lower bound (no attempt finished).
    pub censored: bool,
    /// Its runtime, when it finished.
    pub runtime_seconds: Option<f64>,
}

impl PastRun {
    /// The past run a record makes, if it says anything about the peak.
    pub fn from_record(r: &Record) -> Option<PastRun> {
        let peak = r.peak_at_least()?;
        Some(PastRun {
            features: r.features.clone(),
            peak_bytes: peak.max(1.0),
            censored: !r.measured(),
            runtime_seconds: r.runtime_seconds.filter(|s| s.is_finite() && *s >= 0.0),
        })
    }
}

/// How many past runs of a segment the estimator looks at.
pub const HISTORY_LEN: usize = 8;

/// Recent runs of every segment, oldest first: what the replay and the fitting keep.
#[derive(Debug, Clone, Default)]
pub struct Histories {
    by_segment: HashMap<(String, String), VecDeque<PastRun>>,
}

impl Histories {
    /// The recent runs of `segment` of `tenant`, oldest first.
    pub fn get(&self, tenant: &str, segment: &str) -> Vec<PastRun> {
        self.by_segment.get(&(tenant.to_owned(), segment.to_owned())).map(|d| d.iter().cloned().collect()).unwrap_or_default()
    }

    /// Adds a finished run.
    pub fn push(&mut self, r: &Record) {
        let Some(past) = PastRun::from_record(r) else { return };
        let runs = self.by_segment.entry((r.tenant.clone(), r.segment.clone())).or_default();
        runs.push_back(past);
        while runs.len() > HISTORY_LEN {
            runs.pop_front();
        }
    }
}
