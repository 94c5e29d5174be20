//! [`KafkaAdmin`] over librdkafka's admin client. One client per connection
//! is kept and reused; a client whose cluster stopped answering is dropped so
//! that the next attempt starts from the bootstrap servers again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::{
    ClusterConnection, ClusterView, DesiredTopic, GroupOffsets, KafkaAdmin, KafkaError,
    ObservedTopic, TopicOffsets,
};

type Client = AdminClient<QuietContext>;

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

/// The consumers that read committed offsets never join a group.
impl ConsumerContext for QuietContext {}

/// How long one admin request may take before the cluster counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The real admin client.
#[derive(Default)]
pub struct RdKafkaAdmin {
    clients: Mutex<HashMap<ClusterConnection, Arc<Client>>>,
}

impl RdKafkaAdmin {
    fn client(&self, connection: &ClusterConnection) -> Result<Arc<Client>, KafkaError> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = clients.get(connection) {
            return Ok(client.clone());
        }
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &connection.bootstrap_servers)
            .set("socket.timeout.ms", REQUEST_TIMEOUT.as_millis().to_string());
        for (key, value) in &connection.properties {
            config.set(key, value);
        }
        let client: Client = config
            .create_with_context(QuietContext)
            .map_err(|e| KafkaError::Configuration(e.to_string()))?;
        let client = Arc::new(client);
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
        let metadata = tokio::task::spawn_blocking(move || {
            metadata_client
                .inner()
                .fetch_metadata(None, REQUEST_TIMEOUT)
        })
        .await
        .map_err(|e| self.unreachable(connection, e))?
        .map_err(|e| self.unreachable(connection, e))?;
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
                .describe_configs(&specifiers, &Self::options())
                .await
                .map_err(|e| self.unreachable(connection, e))?;
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
            .create_topics([&new_topic], &Self::options())
            .await
            .map_err(|e| self.unreachable(connection, e))?;
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
            .delete_topics(&names, &Self::options())
            .await
            .map_err(|e| self.unreachable(connection, e))?;
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
            .create_partitions([&NewPartitions::new(topic, count)], &Self::options())
            .await
            .map_err(|e| self.unreachable(connection, e))?;
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
        let result = tokio::task::spawn_blocking(move || {
            super::incremental_alter::set_topic_config(
                client.inner(),
                &name,
                &entries,
                REQUEST_TIMEOUT,
            )
        })
        .await
        .map_err(|e| self.unreachable(connection, e))?;
        result.map_err(|message| KafkaError::Refused {
            operation: "IncrementalAlterConfigs",
            topic: topic.to_string(),
            message,
        })
    }

    async fn committed_inner(
        &self,
        connection: &ClusterConnection,
        topics: Vec<String>,
    ) -> Result<GroupOffsets, KafkaError> {
        let client = self.client(connection)?;
        let connection_for_groups = connection.clone();
        let result = tokio::task::spawn_blocking(move || {
            committed_by_group(&client, &connection_for_groups, &topics)
        })
        .await
        .map_err(|e| self.unreachable(connection, e))?;
        result.map_err(|e| self.unreachable(connection, e))
    }

    async fn group_offsets_inner(
        &self,
        connection: &ClusterConnection,
        group: String,
        topics: Vec<String>,
    ) -> Result<TopicOffsets, KafkaError> {
        let client = self.client(connection)?;
        let connection_for_group = connection.clone();
        let result = tokio::task::spawn_blocking(move || {
            let partitions = topic_partitions(&client, &topics)?;
            committed_of(&connection_for_group, &group, &partitions)
        })
        .await
        .map_err(|e| self.unreachable(connection, e))?;
        result.map_err(|e| self.unreachable(connection, e))
    }

    async fn commit_inner(
        &self,
        connection: &ClusterConnection,
        group: String,
        topic: String,
        offsets: BTreeMap<i32, i64>,
    ) -> Result<(), KafkaError> {
        let connection_for_group = connection.clone();
        let name = topic.clone();
        let result = tokio::task::spawn_blocking(move || {
            let consumer = group_member(&connection_for_group, &group)?;
            let mut list = TopicPartitionList::new();
            for (partition, offset) in offsets {
                list.add_partition_offset(&name, partition, Offset::Offset(offset))?;
            }
            consumer.commit(&list, CommitMode::Sync)
        })
        .await
        .map_err(|e| self.unreachable(connection, e))?;
        result.map_err(|e| KafkaError::Refused {
            operation: "OffsetCommit",
            topic,
            message: e.to_string(),
        })
    }

    /// Runs `work` with a connection on a blocking thread; its failure is
    /// the cluster being unreachable.
    async fn blocking<T: Send + 'static>(
        &self,
        connection: &ClusterConnection,
        work: impl FnOnce(&ClusterConnection) -> Result<T, rdkafka::error::KafkaError> + Send + 'static,
    ) -> Result<T, KafkaError> {
        let probe = connection.clone();
        let result = tokio::task::spawn_blocking(move || work(&probe))
            .await
            .map_err(|e| self.unreachable(connection, e))?;
        result.map_err(|e| self.unreachable(connection, e))
    }

    async fn end_offsets_inner(
        &self,
        connection: &ClusterConnection,
        topic: &str,
    ) -> Result<BTreeMap<i32, i64>, KafkaError> {
        let client = self.client(connection)?;
        let name = topic.to_string();
        let result = tokio::task::spawn_blocking(move || {
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
        })
        .await
        .map_err(|e| self.unreachable(connection, e))?;
        result.map_err(|e| self.unreachable(connection, e))
    }
}

/// How long reading one record's timestamp may wait for the broker.
const RECORD_WAIT: Duration = Duration::from_secs(2);

/// The timestamp of the first record at or after `offset`, read by a consumer
/// that is assigned the partition and never joins or commits.
fn first_record_time(
    connection: &ClusterConnection,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<i64>, rdkafka::error::KafkaError> {
    let consumer = group_member(connection, "kappa-operator-record-time")?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&list)?;
    let deadline = Instant::now() + RECORD_WAIT;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(record)) if record.offset() >= offset => {
                return Ok(record.timestamp().to_millis());
            }
            Some(Err(error)) => return Err(error),
            Some(Ok(_)) | None => {}
        }
    }
    Ok(None)
}

/// Per partition, the first offset at or after `timestamp` (ListOffsets by time).
fn offsets_at_time(
    connection: &ClusterConnection,
    topic: &str,
    timestamp: i64,
) -> Result<BTreeMap<i32, Option<i64>>, rdkafka::error::KafkaError> {
    let consumer = group_member(connection, "kappa-operator-offsets-at")?;
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let mut query = TopicPartitionList::new();
    for found in metadata.topics().iter().filter(|t| t.name() == topic) {
        for partition in found.partitions() {
            query.add_partition_offset(topic, partition.id(), Offset::Offset(timestamp))?;
        }
    }
    let answer = consumer.offsets_for_times(query, REQUEST_TIMEOUT)?;
    Ok(answer
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(offset) => (e.partition(), Some(offset)),
            _ => (e.partition(), None),
        })
        .collect())
}

/// Every partition of `topics`, as the cluster's metadata lists them.
fn topic_partitions(
    client: &Client,
    topics: &[String],
) -> Result<TopicPartitionList, rdkafka::error::KafkaError> {
    let mut partitions = TopicPartitionList::new();
    for topic in topics {
        let metadata = client
            .inner()
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
        for found in metadata.topics().iter().filter(|t| t.name() == topic) {
            for partition in found.partitions() {
                partitions.add_partition(topic, partition.id());
            }
        }
    }
    Ok(partitions)
}

/// A consumer of `group` that never joins it: it reads and commits offsets
/// (OffsetFetch, OffsetCommit) and fetches nothing.
fn group_member(
    connection: &ClusterConnection,
    group: &str,
) -> Result<BaseConsumer<QuietContext>, rdkafka::error::KafkaError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &connection.bootstrap_servers)
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    for (key, value) in &connection.properties {
        config.set(key, value);
    }
    config.create_with_context(QuietContext)
}

/// `group`'s committed offsets on `partitions`: topic -> partition -> offset.
fn committed_of(
    connection: &ClusterConnection,
    group: &str,
    partitions: &TopicPartitionList,
) -> Result<TopicOffsets, rdkafka::error::KafkaError> {
    let consumer = group_member(connection, group)?;
    let committed = consumer.committed_offsets(partitions.clone(), REQUEST_TIMEOUT)?;
    let mut offsets: TopicOffsets = BTreeMap::new();
    for element in committed.elements() {
        if let Offset::Offset(offset) = element.offset() {
            offsets
                .entry(element.topic().to_string())
                .or_default()
                .insert(element.partition(), offset);
        }
    }
    Ok(offsets)
}

/// Lists the cluster's consumer groups and reads each one's committed
/// offsets on `topics`.
fn committed_by_group(
    client: &Client,
    connection: &ClusterConnection,
    topics: &[String],
) -> Result<GroupOffsets, rdkafka::error::KafkaError> {
    let partitions = topic_partitions(client, topics)?;
    let mut offsets = GroupOffsets::new();
    let groups = client.inner().fetch_group_list(None, REQUEST_TIMEOUT)?;
    for group in groups.groups() {
        let committed = committed_of(connection, group.name(), &partitions)?;
        if !committed.is_empty() {
            offsets.insert(group.name().to_string(), committed);
        }
    }
    Ok(offsets)
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
            self.blocking(&connection, move |c| offsets_at_time(c, &topic, timestamp))
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
            self.blocking(&connection, move |c| {
                first_record_time(c, &topic, partition, offset)
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
