//! The vocabulary Cohort's crates share, and nothing else: the executor, the estimator,
//! alerting and the control plane know nothing of each other, but all of them write sizes and
//! durations for people, read them from settings, back off with jitter, and speak of what is
//! wrong with a tenant's data. Each of those has one home here.
//!
//! - [`units`]: sizes and durations, read (`512MiB`, `10m`) and written (`1.5 GiB`, `2.5 min`).
//! - [`backoff`]: the wait before a retry, exponential with "equal jitter".
//! - [`DataFinding`]: one problem in one key field of a tenant's data, measured on a sample.
//!
//! It depends on `serde` alone and may not depend on any other crate of the workspace.

#![deny(missing_docs)]

pub mod backoff;
mod finding;
pub mod units;

pub use finding::DataFinding;
