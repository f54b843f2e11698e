//! Cohort's alerting, pure: events and time in, transitions and notification decisions out.
//! No I/O, no clock, no async: the service (`cohort-control`) reads the store and the clock and
//! passes them in, so `cohort alerts replay` runs the same decisions.
//!
//! - [`rule`]: the failure rule (at least T failures within W at the tenant, region and
//!   global scopes), incremental and exact to the millisecond; the live service and
//!   `cohort alerts replay` run the same [`rule::Evaluator`].
//! - [`inhibit`]: which firing alert holds back which narrower ones (decisions over the alerts
//!   firing at the moment).
//! - [`silence`]: label matchers, and whether a silence holds back an alert's notification at
//!   an instant.
//! - [`dispatch`]: what is notified, when it is due, and what is sent again (group and repeat
//!   intervals).
//! - [`pipeline`]: the three above in memory, transitions in, notifications out, as the
//!   service's store and outbox take them; `cohort alerts replay --output notifications`.
//! - [`replay`]: reading outcome and silence files, writing transitions and notifications.
//! - [`slo`]: burn-rate alerts on the success rate and runtime-versus-baseline alerts.
//! - [`notify`]: an alert's labels, the Alertmanager webhook payload, Standard Webhooks
//!   signatures and one delivery's retry schedule.
//! - [`config`]: the `[alerts]` configuration.
//! - [`triage`]: failure signatures (normalized messages), their classification and
//!   remediation, and the triage report.

#![deny(missing_docs)]

pub mod config;
pub mod dispatch;
pub mod inhibit;
pub mod notify;
pub mod pipeline;
pub mod replay;
pub mod rule;
pub mod silence;
pub mod slo;
pub mod triage;

pub use config::AlertRules;
pub use rule::{Evaluator, FailureRule, RuleKind, Scope, State, Transition};

/// What can go wrong reading alert inputs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A line of an events file that is not a job outcome.
    #[error("line {line}: {message}")]
    Input {
        /// The line, counting from 1.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// Alerting's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
