//! The job state machine.

use serde::Serialize;

/// Where a job is in its life:
/// `queued → admitted → running → succeeded | failed | cancelled`, with
/// `running → retrying → queued` between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting in the store for a slot and memory.
    Queued,
    /// Given a slot and its memory grant; about to run.
    Admitted,
    /// Running on the executor.
    Running,
    /// Failed an attempt; waiting to be queued again.
    Retrying,
    /// Done; its membership is committed.
    Succeeded,
    /// Done without a result.
    Failed,
    /// Stopped at a caller's request.
    Cancelled,
}

impl JobStatus {
    /// Every status, in life order.
    pub const ALL: [JobStatus; 7] =
        [JobStatus::Queued, JobStatus::Admitted, JobStatus::Running, JobStatus::Retrying, JobStatus::Succeeded, JobStatus::Failed, JobStatus::Cancelled];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Admitted => "admitted",
            JobStatus::Running => "running",
            JobStatus::Retrying => "retrying",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// The status called `name`.
    pub fn parse(name: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the job's life is over.
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled)
    }

    /// Whether `self → to` is a transition of the state machine.
    pub fn can_become(self, to: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, to),
            (Queued, Admitted | Cancelled)
                | (Admitted, Running | Queued | Cancelled)
                | (Running, Succeeded | Failed | Cancelled | Retrying | Queued)
                | (Retrying, Queued | Cancelled)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_states_have_no_way_out() {
        for from in JobStatus::ALL.into_iter().filter(|s| s.is_final()) {
            assert!(JobStatus::ALL.into_iter().all(|to| !from.can_become(to)), "{from:?}");
        }
    }

    #[test]
    fn names_round_trip() {
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobStatus::parse("done"), None);
    }
}
