//! Every reason a Backfill's conditions give, as one enum: each is listed,
//! with what it means and what to do, in `docs/backfill.md` (a test holds
//! the two together).

use crate::api::backfill::BackfillPhase;

/// Why a Backfill's `Ready` (or `Degraded`) condition reads as it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The run is in this phase, with nothing in its way.
    Phase(BackfillPhase),
    /// The referenced Pipeline does not exist.
    PipelineNotFound,
    /// The Pipeline runs on an engine backfills do not support.
    EngineNotSupported,
    /// The start state asked for cannot be given to the backfill job.
    StartStateNotSupported,
    /// The Pipeline's KafkaClusterSet does not exist.
    ClusterSetNotFound,
    /// The set cannot run extra clusters.
    CapacityUnavailable,
    /// The extra clusters are not all ready yet.
    ClustersStarting,
    /// The set's write cluster is not in its status yet.
    SourceNotReady,
    /// The range's end has not been written on every partition yet.
    RangeOpen,
    /// The destination topics could not be created on the extra clusters.
    TopicsMissing,
    /// The replay's plan is not recorded in the status.
    PlanLost,
    /// A replay worker's Job gave up.
    ReplayFailed,
    /// The extra clusters hold records more than once.
    ReplayDuplicated,
    /// The extra clusters lack records of the range.
    ReplayIncomplete,
    /// How far the copy or the job has got could not be read.
    ProgressUnreadable,
    /// The set has not published its discovery document.
    DiscoveryMissing,
    /// The Pipeline or set of a run under way is gone.
    ReferenceGone,
    /// The status holds no offsets to hand the live job.
    NoHandoffOffsets,
    /// The run failed (on `Degraded`).
    RunFailed,
    /// Nothing has failed (on `Degraded`).
    NoFailure,
    /// The set's cluster provider or Kafka said why, in the words the
    /// KafkaClusterSet's own conditions use (`ClusterUnreachable`,
    /// `SecretNotFound`, …).
    Cluster(&'static str),
}

impl Reason {
    /// Every reason the controller gives, but those of [`Reason::Cluster`].
    #[cfg(test)]
    const ALL: [Reason; 27] = [
        Reason::Phase(BackfillPhase::Pending),
        Reason::Phase(BackfillPhase::Provisioning),
        Reason::Phase(BackfillPhase::Replaying),
        Reason::Phase(BackfillPhase::Processing),
        Reason::Phase(BackfillPhase::HandingOff),
        Reason::Phase(BackfillPhase::TearingDown),
        Reason::Phase(BackfillPhase::Completed),
        Reason::Phase(BackfillPhase::Failed),
        Reason::PipelineNotFound,
        Reason::EngineNotSupported,
        Reason::StartStateNotSupported,
        Reason::ClusterSetNotFound,
        Reason::CapacityUnavailable,
        Reason::ClustersStarting,
        Reason::SourceNotReady,
        Reason::RangeOpen,
        Reason::TopicsMissing,
        Reason::PlanLost,
        Reason::ReplayFailed,
        Reason::ReplayDuplicated,
        Reason::ReplayIncomplete,
        Reason::ProgressUnreadable,
        Reason::DiscoveryMissing,
        Reason::ReferenceGone,
        Reason::NoHandoffOffsets,
        Reason::RunFailed,
        Reason::NoFailure,
    ];

    /// The reason as conditions spell it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Phase(phase) => match phase {
                BackfillPhase::Pending => "Pending",
                BackfillPhase::Provisioning => "Provisioning",
                BackfillPhase::Replaying => "Replaying",
                BackfillPhase::Processing => "Processing",
                BackfillPhase::HandingOff => "HandingOff",
                BackfillPhase::TearingDown => "TearingDown",
                BackfillPhase::Completed => "Completed",
                BackfillPhase::Failed => "Failed",
            },
            Self::PipelineNotFound => "PipelineNotFound",
            Self::EngineNotSupported => "EngineNotSupported",
            Self::StartStateNotSupported => "StartStateNotSupported",
            Self::ClusterSetNotFound => "ClusterSetNotFound",
            Self::CapacityUnavailable => "CapacityUnavailable",
            Self::ClustersStarting => "ClustersStarting",
            Self::SourceNotReady => "SourceNotReady",
            Self::RangeOpen => "RangeOpen",
            Self::TopicsMissing => "TopicsMissing",
            Self::PlanLost => "PlanLost",
            Self::ReplayFailed => "ReplayFailed",
            Self::ReplayDuplicated => "ReplayDuplicated",
            Self::ReplayIncomplete => "ReplayIncomplete",
            Self::ProgressUnreadable => "ProgressUnreadable",
            Self::DiscoveryMissing => "DiscoveryMissing",
            Self::ReferenceGone => "ReferenceGone",
            Self::NoHandoffOffsets => "NoHandoffOffsets",
            Self::RunFailed => "RunFailed",
            Self::NoFailure => "NoFailure",
            Self::Cluster(words) => words,
        }
    }
}

crate::controller::status::condition_reason!(Reason, "docs/backfill.md");
