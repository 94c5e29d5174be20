//! The blocking librdkafka reads behind [`super::rdkafka_admin::RdKafkaAdmin`]:
//! the clients' configuration, a record's timestamp, offsets by time, the
//! partitions of topics and what groups committed on them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::failure::Failure;
use super::rdkafka_admin::{Client, QuietContext, REQUEST_TIMEOUT};
use super::{ClusterConnection, GroupOffsets, TopicOffsets};

/// How long reading one record's timestamp may wait for the broker.
const RECORD_WAIT: Duration = Duration::from_secs(2);

/// The timestamp of the first record at or after `offset`, read by
/// `reader`, which is assigned the partition for the read alone.
pub(super) fn first_record_time(
    reader: &BaseConsumer<QuietContext>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<i64>, rdkafka::error::KafkaError> {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    reader.assign(&list)?;
    let deadline = Instant::now() + RECORD_WAIT;
    let mut found = Ok(None);
    while Instant::now() < deadline {
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(record))
                if record.topic() == topic
                    && record.partition() == partition
                    && record.offset() >= offset =>
            {
                found = Ok(record.timestamp().to_millis());
                break;
            }
            Some(Err(error)) => {
                found = Err(error);
                break;
            }
            Some(Ok(_)) | None => {}
        }
    }
    // Fetches nothing more until the next read.
    reader.unassign()?;
    found
}

/// Per partition, the first offset at or after `timestamp` (ListOffsets by time).
pub(super) fn offsets_at_time(
    reader: &BaseConsumer<QuietContext>,
    topic: &str,
    timestamp: i64,
) -> Result<BTreeMap<i32, Option<i64>>, rdkafka::error::KafkaError> {
    let metadata = reader.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let mut query = TopicPartitionList::new();
    for found in metadata.topics().iter().filter(|t| t.name() == topic) {
        for partition in found.partitions() {
            query.add_partition_offset(topic, partition.id(), Offset::Offset(timestamp))?;
        }
    }
    let answer = reader.offsets_for_times(query, REQUEST_TIMEOUT)?;
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
pub(super) fn topic_partitions(
    client: &Client,
    topics: &[String],
) -> Result<TopicPartitionList, rdkafka::error::KafkaError> {
    let mut partitions = TopicPartitionList::new();
    // A topic may be named more than once (a set's drained segments name it
    // once per move); librdkafka refuses a list with a partition twice.
    for topic in topics.iter().collect::<BTreeSet<_>>() {
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

/// A client configuration for `connection`: its bootstrap servers and
/// properties (security protocol, credentials).
pub(super) fn client_config(connection: &ClusterConnection) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &connection.bootstrap_servers);
    for (key, value) in &connection.properties {
        config.set(key, value);
    }
    config
}

/// The reader of a connection: a consumer that is assigned one partition
/// at a time, never subscribes or commits, and prefetches little (it reads
/// one record per assignment).
pub(super) fn reading_consumer(
    connection: &ClusterConnection,
) -> Result<BaseConsumer<QuietContext>, rdkafka::error::KafkaError> {
    client_config(connection)
        .set("group.id", "kappa-operator-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("queued.min.messages", "1")
        .set("queued.max.messages.kbytes", "1024")
        .set("fetch.wait.max.ms", "100")
        .create_with_context(QuietContext)
}

/// A consumer of `group` that never joins it: it commits a restored
/// snapshot's offsets (OffsetCommit) and fetches nothing.
pub(super) fn group_member(
    connection: &ClusterConnection,
    group: &str,
) -> Result<BaseConsumer<QuietContext>, rdkafka::error::KafkaError> {
    client_config(connection)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create_with_context(QuietContext)
}

/// `group`'s committed offsets on `partitions`: topic -> partition -> offset.
pub(super) fn committed_of(
    client: &Client,
    group: &str,
    partitions: &TopicPartitionList,
) -> Result<TopicOffsets, Failure> {
    super::group_offsets::committed(client.inner(), group, partitions, REQUEST_TIMEOUT)
}

/// Lists the cluster's consumer groups and reads each one's committed
/// offsets on `topics`.
pub(super) fn committed_by_group(
    client: &Client,
    topics: &[String],
) -> Result<GroupOffsets, Failure> {
    let partitions = topic_partitions(client, topics)?;
    let mut offsets = GroupOffsets::new();
    let groups = client.inner().fetch_group_list(None, REQUEST_TIMEOUT)?;
    for group in groups.groups() {
        let committed = committed_of(client, group.name(), &partitions)?;
        if !committed.is_empty() {
            offsets.insert(group.name().to_string(), committed);
        }
    }
    Ok(offsets)
}
