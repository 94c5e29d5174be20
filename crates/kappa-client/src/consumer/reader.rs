//! The reader of one cluster of a stream: a librdkafka consumer, the thread
//! that fetches from it, and what the routed consumer knows of the cluster.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{Record, REQUEST_TIMEOUT};
use crate::discovery::EPOCH_HEADER;
use crate::ClientError;

/// How long to wait before asking an unreachable cluster again; doubled
/// after every failure up to [`RETRY_AT_MOST`].
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// The longest wait between two attempts.
const RETRY_AT_MOST: Duration = Duration::from_secs(60);

/// A record as fetched, with the [`EPOCH_HEADER`] its producer set.
pub(super) struct Fetched {
    pub(super) record: Record,
    pub(super) epoch: Option<Vec<u8>>,
}

/// What a cluster's fetching thread hands over.
pub(super) type Polled = (String, rdkafka::error::KafkaResult<Fetched>);

/// How long the fetching thread waits for a record before it looks whether
/// it should stop.
pub(super) const POLL_WAIT: Duration = Duration::from_millis(100);

/// A librdkafka consumer of one cluster and the thread that fetches from
/// it. librdkafka serves fetched records to an application that waits in
/// its poll call; the thread does that wait, off the async runtime, and
/// hands the records over a channel.
pub(super) struct Fetcher {
    pub(super) consumer: Arc<BaseConsumer>,
    stop: Arc<AtomicBool>,
}

impl Fetcher {
    pub(super) fn start(
        config: &rdkafka::ClientConfig,
        cluster: &str,
        records: &mpsc::Sender<Polled>,
    ) -> Result<Self, ClientError> {
        let consumer: Arc<BaseConsumer> = Arc::new(config.create()?);
        let stop = Arc::new(AtomicBool::new(false));
        let (fetching, stopped) = (consumer.clone(), stop.clone());
        let (cluster, records) = (cluster.to_string(), records.clone());
        std::thread::Builder::new()
            .name(format!("fetch-{cluster}"))
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    let polled = match fetching.poll(POLL_WAIT) {
                        None => continue,
                        Some(Err(error)) => Err(error),
                        Some(Ok(message)) => Ok(Fetched {
                            epoch: message
                                .headers()
                                .and_then(|h| h.iter().filter(|h| h.key == EPOCH_HEADER).last())
                                .and_then(|h| h.value.map(<[u8]>::to_vec)),
                            record: Record {
                                cluster: cluster.clone(),
                                partition: message.partition(),
                                offset: message.offset(),
                                key: message.key().map(<[u8]>::to_vec),
                                payload: message.payload().map(<[u8]>::to_vec),
                                timestamp: message.timestamp().to_millis(),
                            },
                        }),
                    };
                    if records.blocking_send((cluster.clone(), polled)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| ClientError::Malformed(format!("no thread to fetch with: {e}")))?;
        Ok(Self { consumer, stop })
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        // The thread lets go of the consumer, and librdkafka's close (which
        // may wait for the broker) runs there, not on the async runtime.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The reader of one cluster.
pub(super) struct ClusterReader {
    /// How to connect, to replace a stalled consumer.
    pub(super) config: rdkafka::ClientConfig,
    pub(super) fetcher: Fetcher,
    pub(super) topic: String,
    /// Partitions whose committed offsets are known.
    pub(super) loaded: bool,
    /// When to ask again after a failure.
    pub(super) retry_at: Option<Instant>,
    /// Failures in a row, for the backoff.
    pub(super) failures: u32,
    /// Stalls in a row per partition, for how far back to fetch from.
    pub(super) stalls: BTreeMap<i32, u32>,
    /// Whether its partitions and committed offsets are being read.
    pub(super) loading: bool,
    /// What it is assigned: partition -> when it last made progress
    /// (assigned, or a record read).
    pub(super) assigned: BTreeMap<i32, Instant>,
    /// Positions not yet committed.
    pub(super) uncommitted: BTreeMap<i32, i64>,
}

impl ClusterReader {
    /// Notes a failed attempt to reach the cluster; the next waits twice as long.
    pub(super) fn retry_later(&mut self, name: &str, error: &dyn std::fmt::Display) {
        let wait = RETRY_AFTER
            .saturating_mul(1 << self.failures.min(10))
            .min(RETRY_AT_MOST);
        self.failures += 1;
        tracing::warn!(cluster = %name, %error, retry_in = ?wait, "cluster unreachable; retrying while the others are read");
        self.retry_at = Some(Instant::now() + wait);
    }

    /// Stops fetching `leaving`, then fetches `coming` from the given offsets.
    pub(super) fn switch(&self, leaving: &[i32], coming: &[(i32, i64)]) -> Result<(), ClientError> {
        if !leaving.is_empty() {
            let mut list = TopicPartitionList::new();
            for partition in leaving {
                list.add_partition(&self.topic, *partition);
            }
            self.fetcher.consumer.incremental_unassign(&list)?;
        }
        if !coming.is_empty() {
            let mut list = TopicPartitionList::new();
            for (partition, from) in coming {
                list.add_partition_offset(&self.topic, *partition, Offset::Offset(*from))?;
            }
            self.fetcher.consumer.incremental_assign(&list)?;
        }
        Ok(())
    }
}

/// The partitions of `topic` on the cluster of `consumer`, with the group's
/// committed offsets.
pub(super) fn load(
    consumer: &BaseConsumer,
    topic: &str,
) -> rdkafka::error::KafkaResult<Vec<(i32, Offset)>> {
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let mut list = TopicPartitionList::new();
    for found in metadata.topics().iter().filter(|t| t.error().is_none()) {
        for partition in found.partitions() {
            list.add_partition(topic, partition.id());
        }
    }
    let committed = consumer.committed_offsets(list, REQUEST_TIMEOUT)?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect())
}
