//! Job-size estimation learned from past runs.
//!
//! Pure: features in, estimates out. No I/O, no clock, no randomness — the same runs give the
//! same model and the same estimates. The control plane records each finished run as a
//! [`Record`], refits with [`fit`] and stores the serialized [`Model`]; before a run it asks
//! [`Estimator::estimate`] with the run's [`Features`] and its segment's recent runs.
//!
//! The grant is [`Estimate::memory_bound_bytes`]: the predicted peak raised by a margin
//! calibrated on held-out recent runs (split conformal), so that the share of runs exceeding
//! their grant is what [`Config::coverage`] says. [`eval::replay`] checks exactly that on a
//! recorded trace, against a static grant and an Autopilot-style decayed maximum.

#![deny(missing_docs)]

pub mod eval;
mod features;
mod model;
mod regression;

pub use features::{Features, HISTORY_LEN, Histories, PastRun, Record};
pub use model::{Basis, Bounded, Config, Estimate, Estimator, HALF_LIFE_RUNS, Model, Regime, conformal_quantile, fit};
pub use regression::Linear;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A regression could not be fitted.
    #[error("fitting: {0}")]
    Fit(String),
    /// A setting is out of range.
    #[error("estimator configuration: {0}")]
    Config(String),
    /// A trace line is not a run record.
    #[error("trace line {line}: {message}")]
    Trace {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// Reads a trace: one JSON [`Record`] per line (blank lines skipped).
pub fn parse_trace(text: &str) -> Result<Vec<Record>, Error> {
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(line).map_err(|e| Error::Trace { line: i + 1, message: e.to_string() })?;
        if record.runtime_seconds.is_some_and(|s| !s.is_finite() || s < 0.0) {
            return Err(Error::Trace { line: i + 1, message: "runtime_seconds must be a finite number ≥ 0".into() });
        }
        records.push(record);
    }
    Ok(records)
}
