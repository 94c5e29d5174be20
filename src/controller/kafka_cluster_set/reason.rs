//! Every reason a KafkaClusterSet's `Ready`, `Progressing` and `Degraded`
//! conditions give once its spec is valid, as one enum: each is listed,
//! with what it means and what to do, in `docs/discovery.md` (a test holds
//! the two together). A spec that is not valid gives the validation's
//! reasons instead.

/// Why a KafkaClusterSet's conditions read as they do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Every cluster is reachable and carries every stream (`Ready`).
    ClustersReady,
    /// A cluster's pods are not all ready yet (`Ready`, `Progressing`).
    ClusterStarting,
    /// A retiring cluster waits for its readers (`Progressing`).
    RetiringCluster,
    /// No move of the write cluster is under way (`Progressing`).
    Settled,
    /// A move is announced in the discovery document (`Progressing`).
    MigrationAnnounced,
    /// A move waits for producers to acknowledge it (`Progressing`).
    AwaitingProducers,
    /// Every cluster carries every stream as declared (`Degraded`).
    AsDeclared,
    /// A cluster's spec changed after it was created (`Degraded`).
    ImmutableClusterChanged,
    /// A stream asks for more replicas than a cluster has brokers.
    ReplicationImpossible,
    /// A stream declares fewer partitions than its topic has.
    PartitionDecreaseRefused,
    /// A cluster's provider said why it cannot be run or found: the words
    /// of [`crate::controller::common::provider::ProviderError::reason`].
    Provider(&'static str),
    /// A cluster did not answer or refused: the words of
    /// [`crate::kafka::KafkaError::category`].
    Kafka(&'static str),
}

impl Reason {
    /// Every reason the controller gives, but those of [`Reason::Provider`]
    /// and [`Reason::Kafka`].
    #[cfg(test)]
    const ALL: [Reason; 10] = [
        Reason::ClustersReady,
        Reason::ClusterStarting,
        Reason::RetiringCluster,
        Reason::Settled,
        Reason::MigrationAnnounced,
        Reason::AwaitingProducers,
        Reason::AsDeclared,
        Reason::ImmutableClusterChanged,
        Reason::ReplicationImpossible,
        Reason::PartitionDecreaseRefused,
    ];

    /// The reason as conditions spell it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ClustersReady => "ClustersReady",
            Self::ClusterStarting => "ClusterStarting",
            Self::RetiringCluster => "RetiringCluster",
            Self::Settled => "Settled",
            Self::MigrationAnnounced => "MigrationAnnounced",
            Self::AwaitingProducers => "AwaitingProducers",
            Self::AsDeclared => "AsDeclared",
            Self::ImmutableClusterChanged => "ImmutableClusterChanged",
            Self::ReplicationImpossible => "ReplicationImpossible",
            Self::PartitionDecreaseRefused => "PartitionDecreaseRefused",
            Self::Provider(words) | Self::Kafka(words) => words,
        }
    }
}

crate::controller::status::condition_reason!(Reason, "docs/discovery.md");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::common::provider::ProviderError;
    use crate::controller::status::assert_documented;
    use crate::kafka::KafkaError;

    #[test]
    fn the_words_of_provider_and_kafka_errors_are_documented_for_users() {
        let provider = ProviderError::examples().map(|e| Reason::Provider(e.reason()));
        let kafka = KafkaError::examples().map(|e| Reason::Kafka(e.category()));
        assert_documented(
            provider.iter().chain(&kafka).map(|r| r.as_str()),
            "docs/discovery.md",
        );
    }
}
