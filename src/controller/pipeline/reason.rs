//! Every reason a Pipeline's `Ready` condition gives once its spec is valid,
//! as one enum: each is listed, with what it means and what to do, in
//! `docs/pipelines.md` (a test holds the two together). A spec that is not
//! valid gives the validation's reasons instead.

use crate::api::pipeline::PipelinePhase;

/// Why a Pipeline's `Ready` condition reads as it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The pipeline is in this phase, with nothing in its way:
    /// `Deploying`, `Upgrading`, `Suspending`, `Suspended`, `Restoring` or
    /// `Resharding`.
    Phase(PipelinePhase),
    /// The Flink job was submitted or launched and is not running yet.
    JobStarting,
    /// The Flink job runs.
    JobRunning,
    /// The Flink job failed.
    JobFailed,
    /// The Flink job was stopped outside the Pipeline.
    JobStopped,
    /// Stopping the job for an upgrade or suspension failed.
    UpgradeFailed,
    /// The savepoint or checkpoint to start from cannot be used yet.
    RestoreStateNotReady,
    /// The Savepoint to restore a consumer app from is not complete yet.
    RestoreSavepointNotReady,
    /// Every replica of a consumer app is ready.
    ReplicasReady,
    /// A suspended consumer app's pods are stopping.
    PodsStopping,
    /// A consumer app's StatefulSet is rolling out.
    RollingOut,
    /// Flink refused, or could not be reached: the words of
    /// [`crate::flink::FlinkError::reason`].
    Flink(&'static str),
    /// A consumer app's offsets could not be restored: the words of
    /// [`crate::controller::common::offsets::OffsetsError::reason`].
    Offsets(&'static str),
}

impl Reason {
    /// Every reason the controller gives, but those of [`Reason::Flink`]
    /// and [`Reason::Offsets`].
    #[cfg(test)]
    const ALL: [Reason; 16] = [
        Reason::Phase(PipelinePhase::Deploying),
        Reason::Phase(PipelinePhase::Upgrading),
        Reason::Phase(PipelinePhase::Suspending),
        Reason::Phase(PipelinePhase::Suspended),
        Reason::Phase(PipelinePhase::Restoring),
        Reason::Phase(PipelinePhase::Resharding),
        Reason::JobStarting,
        Reason::JobRunning,
        Reason::JobFailed,
        Reason::JobStopped,
        Reason::UpgradeFailed,
        Reason::RestoreStateNotReady,
        Reason::RestoreSavepointNotReady,
        Reason::ReplicasReady,
        Reason::PodsStopping,
        Reason::RollingOut,
    ];

    /// The reason as conditions spell it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Phase(phase) => phase.as_str(),
            Self::JobStarting => "JobStarting",
            Self::JobRunning => "JobRunning",
            Self::JobFailed => "JobFailed",
            Self::JobStopped => "JobStopped",
            Self::UpgradeFailed => "UpgradeFailed",
            Self::RestoreStateNotReady => "RestoreStateNotReady",
            Self::RestoreSavepointNotReady => "RestoreSavepointNotReady",
            Self::ReplicasReady => "ReplicasReady",
            Self::PodsStopping => "PodsStopping",
            Self::RollingOut => "RollingOut",
            Self::Flink(words) | Self::Offsets(words) => words,
        }
    }
}

crate::controller::status::condition_reason!(Reason, "docs/pipelines.md");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::common::offsets::OffsetsError;
    use crate::controller::common::provider::ProviderError;
    use crate::controller::status::assert_documented;
    use crate::flink::FlinkError;
    use crate::kafka::KafkaError;

    #[test]
    fn the_words_of_flink_and_offset_errors_are_documented_for_users() {
        let offsets = [
            OffsetsError::NoDiscovery(String::new()),
            OffsetsError::UnknownStream {
                set: String::new(),
                stream: String::new(),
            },
        ]
        .into_iter()
        .chain(ProviderError::examples().map(OffsetsError::Provider))
        .chain(KafkaError::examples().map(OffsetsError::Kafka));
        let reasons: Vec<Reason> = FlinkError::examples()
            .iter()
            .map(|e| Reason::Flink(e.reason()))
            .chain(offsets.map(|e| Reason::Offsets(e.reason())))
            .collect();
        assert_documented(reasons.iter().map(|r| r.as_str()), "docs/pipelines.md");
    }
}
