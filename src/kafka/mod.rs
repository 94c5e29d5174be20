//! Everything the operator asks of a Kafka cluster, behind one small trait
//! ([`KafkaAdmin`]) with one real implementation over librdkafka
//! ([`rdkafka_admin::RdKafkaAdmin`]).

mod failure;
mod group_offsets;
mod incremental_alter;
mod native;
pub mod rdkafka_admin;
mod rdkafka_reads;
pub mod topic;

use std::collections::BTreeMap;
use std::fmt;

use futures::future::BoxFuture;

/// How to reach one cluster: bootstrap servers plus client properties
/// (security protocol, CA, SASL credentials). `Debug` never prints values,
/// so a connection can be logged without leaking a secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClusterConnection {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// librdkafka properties, some of them secret.
    pub properties: BTreeMap<String, String>,
}

impl ClusterConnection {
    /// A plaintext connection to `bootstrap_servers`.
    pub fn plaintext(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            properties: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for ClusterConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConnection")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A topic as the cluster reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedTopic {
    /// Number of partitions.
    pub partitions: i32,
    /// Topic configuration entries the cluster reports as set on the topic.
    pub config: BTreeMap<String, String>,
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTopic {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication: i32,
    /// Topic configuration.
    pub config: BTreeMap<String, String>,
}

/// A failed call to a cluster. The messages carry Kafka's own error text.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KafkaError {
    /// No broker answered.
    #[error("no broker of {bootstrap} answered: {message}")]
    Unreachable {
        /// Bootstrap servers tried.
        bootstrap: String,
        /// librdkafka's error.
        message: String,
    },
    /// The client could not be configured (bad property, bad CA, ...).
    #[error("the Kafka client could not be configured: {0}")]
    Configuration(String),
    /// The cluster refused a request.
    #[error("{operation} on topic `{topic}` failed: {message}")]
    Refused {
        /// What was asked.
        operation: &'static str,
        /// The topic.
        topic: String,
        /// The broker's error.
        message: String,
    },
}

impl KafkaError {
    /// One error of each kind, for tests of what users are told.
    #[cfg(test)]
    pub(crate) fn examples() -> [Self; 3] {
        let words = String::new;
        [
            Self::Unreachable {
                bootstrap: words(),
                message: words(),
            },
            Self::Configuration(words()),
            Self::Refused {
                operation: "CreateTopics",
                topic: words(),
                message: words(),
            },
        ]
    }

    /// A fixed name per variant, for metric labels and condition reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "ClusterUnreachable",
            Self::Configuration(_) => "ClientConfigInvalid",
            Self::Refused { .. } => "TopicOperationRefused",
        }
    }
}

/// The admin operations the operator needs. One real implementation; tests
/// of error paths no broker can be made to produce may supply another.
pub trait KafkaAdmin: Send + Sync {
    /// Number of brokers and the named topics that exist, with their state.
    fn describe(
        &self,
        connection: &ClusterConnection,
        topics: &[String],
    ) -> BoxFuture<'_, Result<ClusterView, KafkaError>>;

    /// Creates a topic.
    fn create_topic(
        &self,
        connection: &ClusterConnection,
        topic: &DesiredTopic,
    ) -> BoxFuture<'_, Result<(), KafkaError>>;

    /// Deletes these topics with their records and the offsets committed on
    /// them; a topic that does not exist counts as deleted.
    fn delete_topics(
        &self,
        connection: &ClusterConnection,
        topics: &[String],
    ) -> BoxFuture<'_, Result<(), KafkaError>>;

    /// Grows a topic to `partitions` partitions.
    fn grow_partitions(
        &self,
        connection: &ClusterConnection,
        topic: &str,
        partitions: i32,
    ) -> BoxFuture<'_, Result<(), KafkaError>>;

    /// Sets these configuration entries on `topic`, leaving the others alone.
    fn set_topic_config(
        &self,
        connection: &ClusterConnection,
        topic: &str,
        entries: &[(String, String)],
    ) -> BoxFuture<'_, Result<(), KafkaError>>;

    /// Every consumer group's committed offsets on these topics: group ->
    /// topic -> partition -> offset. Groups without commits there are absent.
    fn committed_offsets(
        &self,
        connection: &ClusterConnection,
        topics: &[String],
    ) -> BoxFuture<'_, Result<GroupOffsets, KafkaError>>;

    /// One group's committed offsets on these topics: topic -> partition ->
    /// offset. Partitions without a commit are absent.
    fn group_offsets(
        &self,
        connection: &ClusterConnection,
        group: &str,
        topics: &[String],
    ) -> BoxFuture<'_, Result<TopicOffsets, KafkaError>>;

    /// Commits these offsets of `topic` for `group` without joining it; the
    /// broker refuses while the group has members.
    fn commit_offsets(
        &self,
        connection: &ClusterConnection,
        group: &str,
        topic: &str,
        offsets: &BTreeMap<i32, i64>,
    ) -> BoxFuture<'_, Result<(), KafkaError>>;

    /// The high watermark (next offset) of every partition of `topic`.
    fn end_offsets(
        &self,
        connection: &ClusterConnection,
        topic: &str,
    ) -> BoxFuture<'_, Result<BTreeMap<i32, i64>, KafkaError>>;

    /// Per partition of `topic`, the offset of the first record whose
    /// timestamp (ms since the epoch) is at or after `timestamp`; `None` for
    /// a partition with no such record yet. Brokers that store batches
    /// whole (Tansu) answer with the first offset of that record's batch.
    fn offsets_at(
        &self,
        connection: &ClusterConnection,
        topic: &str,
        timestamp: i64,
    ) -> BoxFuture<'_, Result<BTreeMap<i32, Option<i64>>, KafkaError>>;

    /// The timestamp (ms since the epoch) of the first record at or after
    /// `offset` of one partition, read without joining any group; `None`
    /// when the broker returns no record within a short wait.
    fn record_time(
        &self,
        connection: &ClusterConnection,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> BoxFuture<'_, Result<Option<i64>, KafkaError>>;
}

/// Committed offsets of one group: topic -> partition -> offset.
pub type TopicOffsets = BTreeMap<String, BTreeMap<i32, i64>>;

/// Committed offsets: group -> topic -> partition -> offset.
pub type GroupOffsets = BTreeMap<String, TopicOffsets>;

/// What one cluster looks like from its admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// Brokers in the cluster's metadata.
    pub brokers: usize,
    /// The requested topics that exist.
    pub topics: BTreeMap<String, ObservedTopic>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_prints_no_property_value() {
        let mut connection = ClusterConnection::plaintext("kafka:9092");
        connection
            .properties
            .insert("sasl.password".into(), "hunter2".into());
        let printed = format!("{connection:?}");
        assert!(printed.contains("sasl.password") && printed.contains("kafka:9092"));
        assert!(!printed.contains("hunter2"), "{printed}");
    }
}
