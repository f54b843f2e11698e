//! Cohort's alerting, pure: events and time in, transitions out.
//!
//! - [`rule`]: the failure rule (at least T failures within W at the tenant, region and
//!   global scopes), incremental and exact to the millisecond; the live service and
//!   `cohort alerts replay` run the same [`rule::Evaluator`].
//! - [`replay`]: reading outcome files and writing transitions.
//! - [`slo`]: burn-rate alerts on the success rate and runtime-versus-baseline alerts.
//! - [`notify`]: the Alertmanager webhook payload, Standard Webhooks signatures, matchers and
//!   the delivery schedule.
//! - [`config`]: the `[alerts]` configuration.
//! - [`triage`]: failure signatures (normalized messages), their classification and
//!   remediation, and the triage report.

pub mod config;
pub mod notify;
pub mod replay;
pub mod rule;
pub mod slo;
pub mod triage;

pub use config::AlertRules;
pub use rule::{Evaluator, FailureRule, Scope, State, Transition};

/// What can go wrong reading alert inputs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A line of an events file that is not a job outcome.
    #[error("line {line}: {message}")]
    Input { line: usize, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
