//! Every reason a Savepoint's `Ready` condition gives, as one enum: each is
//! listed, with what it means and what to do, in `docs/pipelines.md` (a
//! test holds the two together).

/// Why a Savepoint's `Ready` condition reads as it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Flink is taking the savepoint.
    SavepointInProgress,
    /// The snapshot is taken and where it is recorded.
    SavepointCompleted,
    /// `path` named a savepoint that exists already.
    SavepointRegistered,
    /// An attempt failed; another follows.
    SavepointRetrying,
    /// Every attempt `backoffLimit` allows failed.
    SavepointFailed,
    /// The pipeline went away while Flink took the savepoint.
    SavepointAbandoned,
    /// The pipeline has no running job or app to snapshot yet.
    PipelineNotRunning,
}

impl Reason {
    /// Every reason.
    #[cfg(test)]
    const ALL: [Reason; 7] = [
        Reason::SavepointInProgress,
        Reason::SavepointCompleted,
        Reason::SavepointRegistered,
        Reason::SavepointRetrying,
        Reason::SavepointFailed,
        Reason::SavepointAbandoned,
        Reason::PipelineNotRunning,
    ];

    /// The reason as conditions spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SavepointInProgress => "SavepointInProgress",
            Self::SavepointCompleted => "SavepointCompleted",
            Self::SavepointRegistered => "SavepointRegistered",
            Self::SavepointRetrying => "SavepointRetrying",
            Self::SavepointFailed => "SavepointFailed",
            Self::SavepointAbandoned => "SavepointAbandoned",
            Self::PipelineNotRunning => "PipelineNotRunning",
        }
    }
}

crate::controller::status::condition_reason!(Reason, "docs/pipelines.md");
