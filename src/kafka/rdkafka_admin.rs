//! [`KafkaAdmin`] over librdkafka. Per connection, one admin client and one
//! reading consumer are kept and reused for every call, whatever pipeline or
//! group it is about, so the connections opened do not grow with the
//! pipelines measured; the clients of a cluster that stopped answering are
//! dropped so that the next attempt starts from the bootstrap servers again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::admin::{
    AdminClient, AdminOptions, NewPartitions, NewTopic, OwnedResourceSpecifier, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::failure::Failure;
use super::rdkafka_reads::{
    client_config, committed_by_group, committed_of, first_record_time, group_member,
    offsets_at_time, reading_consumer, topic_partitions,
};
use super::{
    ClusterConnection, ClusterView, DesiredTopic, GroupOffsets, KafkaAdmin, KafkaError,
    ObservedTopic, TopicOffsets,
};

pub(super) type Client = AdminClient<QuietContext>;

/// Routes librdkafka's own log lines to tracing. A cluster that does not
/// answer is reported in the set's status and conditions; librdkafka's
/// connection errors are warnings here, its chatter debug lines.
#[derive(Clone, Copy, Default)]
pub struct QuietContext;

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::warn!(facility, message, "librdkafka"),
            _ => tracing::debug!(facility, message, "librdkafka"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "librdkafka");
    }
}

/// The consumers never join a group: they read records of partitions
/// assigned to them, and commit a restored snapshot's offsets.
impl ConsumerContext for QuietContext {}

/// How long one admin request may take before the cluster counts as unreachable.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What a blocking call asked, to name in a refusal.
struct Asked {
    operation: &'static str,
    topic: String,
}

impl Asked {
    fn new(operation: &'static str, topic: &str) -> Self {
        Self {
            operation,
            topic: topic.to_string(),
        }
    }
}

/// The real admin client.
#[derive(Default)]
pub struct RdKafkaAdmin {
    clients: Mutex<HashMap<ClusterConnection, Arc<Clients>>>,
}

/// The long-lived clients of one connection.
struct Clients {
    /// Asks for metadata, topics, configurations and committed offsets.
    admin: Client,
    /// Reads a record's timestamp and offsets by time; made on first use
    /// (a set's cluster needs none), used by one call at a time.
    reader: Mutex<Option<BaseConsumer<QuietContext>>>,
}

impl Clients {
    /// Runs `work` with the reader, made first if there is none yet.
    fn read<T>(
        &self,
        connection: &ClusterConnection,
        work: impl FnOnce(&BaseConsumer<QuietContext>) -> Result<T, rdkafka::error::KafkaError>,
    ) -> Result<T, rdkafka::error::KafkaError> {
        let mut reader = self
            .reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let consumer = match reader.take() {
            Some(consumer) => consumer,
            None => reading_consumer(connection)?,
        };
        let result = work(&consumer);
        *reader = Some(consumer);
        result
    }
}

impl RdKafkaAdmin {
    fn client(&self, connection: &ClusterConnection) -> Result<Arc<Clients>, KafkaError> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = clients.get(connection) {
            return Ok(client.clone());
        }
        let admin: Client = client_config(connection)
            .set("socket.timeout.ms", REQUEST_TIMEOUT.as_millis().to_string())
            .create_with_context(QuietContext)
            .map_err(|e| KafkaError::Configuration(e.to_string()))?;
        let client = Arc::new(Clients {
            admin,
            reader: Mutex::new(None),
        });
        clients.insert(connection.clone(), client.clone());
        Ok(client)
    }

    fn forget(&self, connection: &ClusterConnection) {
        self.clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(connection);
    }

    fn unreachable(&self, connection: &ClusterConnection, error: impl ToString) -> KafkaError {
        self.forget(connection);
        KafkaError::Unreachable {
            bootstrap: connection.bootstrap_servers.clone(),
            message: error.to_string(),
        }
    }

    fn options() -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .operation_timeout(Some(REQUEST_TIMEOUT))
    }

    async fn describe_inner(
        &self,
        connection: &ClusterConnection,
        topics: &[String],
    ) -> Result<ClusterView, KafkaError> {
        let client = self.client(connection)?;
        let metadata_client = client.clone();
        let metadata = self
            .blocking(
                connection,
                Asked::new("Metadata", &topics.join(", ")),
                move || {
                    Ok(metadata_client
                        .admin
                        .inner()
                        .fetch_metadata(None, REQUEST_TIMEOUT)?)
                },
            )
            .await?;
        let brokers = metadata.brokers().len();
        let mut partitions = BTreeMap::new();
        for topic in metadata.topics() {
            if topics.iter().any(|t| t == topic.name()) && topic.error().is_none() {
                partitions.insert(topic.name().to_string(), topic.partitions().len() as i32);
            }
        }
        let specifiers: Vec<_> = partitions
            .keys()
            .map(|name| ResourceSpecifier::Topic(name))
            .collect();
        let mut configs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        if !specifiers.is_empty() {
            let described = client
                .admin
                .describe_configs(&specifiers, &Self::options())
                .await
                .map_err(|e| {
                    let names = partitions.keys().cloned().collect::<Vec<_>>().join(", ");
                    self.failed(connection, Asked::new("DescribeConfigs", &names), e)
                })?;
            for result in described {
                let resource = result.map_err(|code| KafkaError::Refused {
                    operation: "DescribeConfigs",
                    topic: partitions.keys().cloned().collect::<Vec<_>>().join(","),
                    message: code.to_string(),
                })?;
                let OwnedResourceSpecifier::Topic(name) = resource.specifier else {
                    continue;
                };
                let entries = resource
                    .entries
                    .into_iter()
                    .filter_map(|entry| entry.value.map(|value| (entry.name, value)))
                    .collect();
                configs.insert(name, entries);
            }
        }
        let topics = partitions
            .into_iter()
            .map(|(name, partitions)| {
                let config = configs.remove(&name).unwrap_or_default();
                (name, ObservedTopic { partitions, config })
            })
            .collect();
        Ok(ClusterView { brokers, topics })
    }

    async fn create_inner(
        &self,
        connection: &ClusterConnection,
        topic: &DesiredTopic,
    ) -> Result<(), KafkaError> {
        let client = self.client(connection)?;
        let mut new_topic = NewTopic::new(
            &topic.name,
            topic.partitions,
            TopicReplication::Fixed(topic.replication),
        );
        for (key, value) in &topic.config {
            new_topic = new_topic.set(key, value);
        }
        let results = client
            .admin
            .create_topics([&new_topic], &Self::options())
            .await
            .map_err(|e| self.failed(connection, Asked::new("CreateTopics", &topic.name), e))?;
        topic_results("CreateTopics", results)
    }

    async fn delete_inner(
        &self,
        connection: &ClusterConnection,
        topics: &[String],
    ) -> Result<(), KafkaError> {
        let client = self.client(connection)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let results = client
            .admin
            .delete_topics(&names, &Self::options())
            .await
            .map_err(|e| {
                self.failed(connection, Asked::new("DeleteTopics", &names.join(", ")), e)
            })?;
        let kept = results
            .into_iter()
            .filter(|r| !matches!(r, Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))))
            .collect();
        topic_results("DeleteTopics", kept)
    }

    async fn grow_inner(
        &self,
        connection: &ClusterConnection,
        topic: &str,
        partitions: i32,
    ) -> Result<(), KafkaError> {
        let client = self.client(connection)?;
        let count = usize::try_from(partitions).unwrap_or_default();
        let results = client
            .admin
            .create_partitions([&NewPartitions::new(topic, count)], &Self::options())
            .await
            .map_err(|e| self.failed(connection, Asked::new("CreatePartitions", topic), e))?;
        topic_results("CreatePartitions", results)
    }

    async fn set_config_inner(
        &self,
        connection: &ClusterConnection,
        topic: &str,
        entries: Vec<(String, String)>,
    ) -> Result<(), KafkaError> {
        let client = self.client(connection)?;
        let name = topic.to_string();
        let asked = Asked::new("IncrementalAlterConfigs", topic);
        self.blocking(connection, asked, move || {
            super::incremental_alter::set_topic_config(
                client.admin.inner(),
                &name,
                &entries,
                REQUEST_TIMEOUT,
            )
        })
        .await
    }

    async fn committed_inner(
        &self,
        connection: &ClusterConnection,
        topics: Vec<String>,
    ) -> Result<GroupOffsets, KafkaError> {
        let client = self.client(connection)?;
        let asked = Asked::new("OffsetFetch", &topics.join(", "));
        self.blocking(connection, asked, move || {
            committed_by_group(&client.admin, &topics)
        })
        .await
    }

    async fn group_offsets_inner(
        &self,
        connection: &ClusterConnection,
        group: String,
        topics: Vec<String>,
    ) -> Result<TopicOffsets, KafkaError> {
        let client = self.client(connection)?;
        let asked = Asked::new("OffsetFetch", &topics.join(", "));
        self.blocking(connection, asked, move || {
            let partitions = topic_partitions(&client.admin, &topics)?;
            committed_of(&client.admin, &group, &partitions)
        })
        .await
    }

    async fn commit_inner(
        &self,
        connection: &ClusterConnection,
        group: String,
        topic: String,
        offsets: BTreeMap<i32, i64>,
    ) -> Result<(), KafkaError> {
        let connection_for_group = connection.clone();
        let asked = Asked::new("OffsetCommit", &topic);
        self.blocking(connection, asked, move || {
            let consumer = group_member(&connection_for_group, &group)?;
            let mut list = TopicPartitionList::new();
            for (partition, offset) in offsets {
                list.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
            }
            Ok(consumer.commit(&list, CommitMode::Sync)?)
        })
        .await
    }

    /// What a failure of the call `asked` on `connection` is to the caller:
    /// when no broker answered, the cluster is unreachable (and its clients
    /// are made again next time); a refusal names what was asked.
    fn failed(
        &self,
        connection: &ClusterConnection,
        asked: Asked,
        failure: impl Into<Failure>,
    ) -> KafkaError {
        match failure.into() {
            Failure::NoAnswer(message) => self.unreachable(connection, message),
            Failure::Refused(message) => KafkaError::Refused {
                operation: asked.operation,
                topic: asked.topic,
                message,
            },
        }
    }

    /// Runs `work` on a blocking thread; a failure is [`Self::failed`].
    async fn blocking<T: Send + 'static>(
        &self,
        connection: &ClusterConnection,
        asked: Asked,
        work: impl FnOnce() -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, KafkaError> {
        let result = tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| self.unreachable(connection, e))?;
        result.map_err(|failure| self.failed(connection, asked, failure))
    }

    /// Runs `work` with the reader of `connection` on a blocking thread.
    async fn reading<T: Send + 'static>(
        &self,
        connection: &ClusterConnection,
        asked: Asked,
        work: impl FnOnce(&BaseConsumer<QuietContext>) -> Result<T, rdkafka::error::KafkaError>
            + Send
            + 'static,
    ) -> Result<T, KafkaError> {
        let client = self.client(connection)?;
        let target = connection.clone();
        self.blocking(connection, asked, move || Ok(client.read(&target, work)?))
            .await
    }

    async fn end_offsets_inner(
        &self,
        connection: &ClusterConnection,
        topic: &str,
    ) -> Result<BTreeMap<i32, i64>, KafkaError> {
        let client = self.client(connection)?;
        let name = topic.to_string();
        self.blocking(connection, Asked::new("ListOffsets", topic), move || {
            let client = &client.admin;
            let metadata = client
                .inner()
                .fetch_metadata(Some(&name), REQUEST_TIMEOUT)?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            partitions
                .into_iter()
                .map(|partition| {
                    client
                        .inner()
                        .fetch_watermarks(&name, partition, REQUEST_TIMEOUT)
                        .map(|(_, high)| (partition, high))
                })
                .collect::<Result<BTreeMap<_, _>, _>>()
                .map_err(Failure::from)
        })
        .await
    }
}

/// The first refusal among per-topic results, if any.
fn topic_results(
    operation: &'static str,
    results: Vec<Result<String, (String, RDKafkaErrorCode)>>,
) -> Result<(), KafkaError> {
    match results.into_iter().find_map(Result::err) {
        None => Ok(()),
        Some((_, RDKafkaErrorCode::TopicAlreadyExists)) => Ok(()),
        Some((topic, code)) => Err(KafkaError::Refused {
            operation,
            topic,
            message: code.to_string(),
        }),
    }
}

impl KafkaAdmin for RdKafkaAdmin {
    fn describe(
        &self,
        connection: &ClusterConnection,
        topics: &[String],
    ) -> BoxFuture<'_, Result<ClusterView, KafkaError>> {
        let (connection, topics) = (connection.clone(), topics.to_vec());
        async move { self.describe_inner(&connection, &topics).await }.boxed()
    }

    fn create_topic(
        &self,
        connection: &ClusterConnection,
        topic: &DesiredTopic,
    ) -> BoxFuture<'_, Result<(), KafkaError>> {
        let (connection, topic) = (connection.clone(), topic.clone());
        async move { self.create_inner(&connection, &topic).await }.boxed()
    }

    fn delete_topics(
        &self,
        connection: &ClusterConnection,
        topics: &[String],
    ) -> BoxFuture<'_, Result<(), KafkaError>> {
        let (connection, topics) = (connection.clone(), topics.to_vec());
        async move { self.delete_inner(&connection, &topics).await }.boxed()
    }

    fn grow_partitions(
        &self,
        connection: &ClusterConnection,
        topic: &str,
        partitions: i32,
    ) -> BoxFuture<'_, Result<(), KafkaError>> {
        let (connection, topic) = (connection.clone(), topic.to_string());
        async move { self.grow_inner(&connection, &topic, partitions).await }.boxed()
    }

    fn set_topic_config(
        &self,
        connection: &ClusterConnection,
        topic: &str,
        entries: &[(String, String)],
    ) -> BoxFuture<'_, Result<(), KafkaError>> {
        let (connection, topic, entries) =
            (connection.clone(), topic.to_string(), entries.to_vec());
        async move { self.set_config_inner(&connection, &topic, entries).await }.boxed()
    }

    fn committed_offsets(
        &self,
        connection: &ClusterConnection,
        topics: &[String],
    ) -> BoxFuture<'_, Result<GroupOffsets, KafkaError>> {
        let (connection, topics) = (connection.clone(), topics.to_vec());
        async move { self.committed_inner(&connection, topics).await }.boxed()
    }

    fn end_offsets(
        &self,
        connection: &ClusterConnection,
        topic: &str,
    ) -> BoxFuture<'_, Result<BTreeMap<i32, i64>, KafkaError>> {
        let (connection, topic) = (connection.clone(), topic.to_string());
        async move { self.end_offsets_inner(&connection, &topic).await }.boxed()
    }

    fn offsets_at(
        &self,
        connection: &ClusterConnection,
        topic: &str,
        timestamp: i64,
    ) -> BoxFuture<'_, Result<BTreeMap<i32, Option<i64>>, KafkaError>> {
        let (connection, topic) = (connection.clone(), topic.to_string());
        async move {
            let asked = Asked::new("ListOffsets", &topic);
            self.reading(&connection, asked, move |reader| {
                offsets_at_time(reader, &topic, timestamp)
            })
            .await
        }
        .boxed()
    }

    fn record_time(
        &self,
        connection: &ClusterConnection,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> BoxFuture<'_, Result<Option<i64>, KafkaError>> {
        let (connection, topic) = (connection.clone(), topic.to_string());
        async move {
            let asked = Asked::new("Fetch", &topic);
            self.reading(&connection, asked, move |reader| {
                first_record_time(reader, &topic, partition, offset)
            })
            .await
        }
        .boxed()
    }

    fn group_offsets(
        &self,
        connection: &ClusterConnection,
        group: &str,
        topics: &[String],
    ) -> BoxFuture<'_, Result<TopicOffsets, KafkaError>> {
        let (connection, group, topics) = (connection.clone(), group.to_string(), topics.to_vec());
        async move { self.group_offsets_inner(&connection, group, topics).await }.boxed()
    }

    fn commit_offsets(
        &self,
        connection: &ClusterConnection,
        group: &str,
        topic: &str,
        offsets: &BTreeMap<i32, i64>,
    ) -> BoxFuture<'_, Result<(), KafkaError>> {
        let (connection, group, topic, offsets) = (
            connection.clone(),
            group.to_string(),
            topic.to_string(),
            offsets.clone(),
        );
        async move { self.commit_inner(&connection, group, topic, offsets).await }.boxed()
    }
}
