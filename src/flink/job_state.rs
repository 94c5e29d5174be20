//! A Flink job's state, as Flink's REST API names it (`JobStatus` in
//! Flink), so that the operator compares variants instead of spelling them.

use std::fmt;

/// The state of a Flink job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlinkJobState {
    /// Being set up before it is created.
    Initializing,
    /// Created; no task has started.
    Created,
    /// Running (its tasks may still be deploying).
    Running,
    /// Failing: its tasks are being cancelled after a failure.
    Failing,
    /// Failed for good.
    Failed,
    /// Being cancelled.
    Cancelling,
    /// Cancelled.
    Canceled,
    /// Finished (a bounded job's end, or stopped with a savepoint).
    Finished,
    /// Restarting after a failure.
    Restarting,
    /// Suspended: its JobManager gave up leadership.
    Suspended,
    /// Being reconciled after a JobManager failover.
    Reconciling,
    /// A state this operator does not know, in Flink's words.
    Other(String),
}

impl FlinkJobState {
    /// Every state this operator knows, as Flink names them.
    const KNOWN: [(&'static str, FlinkJobState); 11] = [
        ("INITIALIZING", FlinkJobState::Initializing),
        ("CREATED", FlinkJobState::Created),
        ("RUNNING", FlinkJobState::Running),
        ("FAILING", FlinkJobState::Failing),
        ("FAILED", FlinkJobState::Failed),
        ("CANCELLING", FlinkJobState::Cancelling),
        ("CANCELED", FlinkJobState::Canceled),
        ("FINISHED", FlinkJobState::Finished),
        ("RESTARTING", FlinkJobState::Restarting),
        ("SUSPENDED", FlinkJobState::Suspended),
        ("RECONCILING", FlinkJobState::Reconciling),
    ];

    /// The state Flink names `name`.
    pub fn parse(name: &str) -> Self {
        Self::KNOWN
            .iter()
            .find(|(known, _)| *known == name)
            .map_or_else(|| Self::Other(name.to_string()), |(_, state)| state.clone())
    }

    /// The state's name, as Flink spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Other(name) => name,
            known => Self::KNOWN
                .iter()
                .find(|(_, state)| state == known)
                .map_or("", |(name, _)| name),
        }
    }

    /// Whether the job has ended for good: nothing of it runs, and it will
    /// not run again (Flink's globally terminal states).
    pub fn has_ended(&self) -> bool {
        matches!(self, Self::Canceled | Self::Failed | Self::Finished)
    }
}

impl fmt::Display for FlinkJobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_state_reads_back_as_its_name_and_others_keep_their_words() {
        for (name, state) in FlinkJobState::KNOWN {
            assert_eq!(FlinkJobState::parse(name), state);
            assert_eq!(state.as_str(), name);
        }
        let newer = FlinkJobState::parse("PAUSED");
        assert_eq!(newer, FlinkJobState::Other("PAUSED".into()));
        assert_eq!(newer.to_string(), "PAUSED");
    }

    #[test]
    fn only_cancelled_failed_and_finished_jobs_have_ended() {
        let ended: Vec<&str> = FlinkJobState::KNOWN
            .iter()
            .filter(|(_, state)| state.has_ended())
            .map(|(name, _)| *name)
            .collect();
        assert_eq!(ended, ["FAILED", "CANCELED", "FINISHED"]);
        assert!(!FlinkJobState::parse("PAUSED").has_ended());
    }
}
