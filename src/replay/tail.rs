//! Reading what a destination partition already holds, so that a worker
//! that starts again knows which source records are there.
//!
//! A fetch must start at the first offset of a produced batch: Tansu 0.6
//! returns nothing, or the next batch, for a fetch that starts inside one,
//! and reports a partition's high watermark as one past the *first* offset
//! of its last batch. So a scan starts at 0 or at a recorded batch boundary
//! ([`super::worker`] records one per flush), reads until it has seen the
//! offset before the high watermark, and then drains what that fetch
//! returned.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{ReplayError, SOURCE_OFFSET_HEADER};

/// How long a scan waits for a destination partition to return its records.
const SCAN_WAIT: Duration = Duration::from_secs(15);
/// Quiet time after which the records of the last fetched batch are all in
/// (the high watermark only says where that batch starts); generous, as a
/// record missed here would be written again.
const DRAIN_WAIT: Duration = Duration::from_secs(2);
/// How long a metadata or watermark request may take.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What one destination partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tail {
    /// Greatest source offset among its records; `None` when it is empty.
    pub last_source_offset: Option<i64>,
    /// The offset its next record gets.
    pub next_offset: i64,
}

/// The tails of `partitions` of `topic` on the cluster `consumer` talks to,
/// scanning from `hints` (batch boundaries) where they are below the high
/// watermark and from 0 otherwise, or where a hint returns nothing.
pub fn read_tails(
    consumer: &BaseConsumer,
    cluster: usize,
    topic: &str,
    partitions: &[i32],
    hints: &BTreeMap<i32, i64>,
) -> Result<BTreeMap<i32, Tail>, ReplayError> {
    let mut highs = BTreeMap::new();
    for &partition in partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(ReplayError::kafka(format!(
                "reading the high watermark of {topic}/{partition} on destination {cluster}"
            )))?;
        highs.insert(partition, high);
    }
    let starts: BTreeMap<i32, i64> = highs
        .iter()
        .filter(|(_, high)| **high > 0)
        .map(|(p, high)| (*p, hints.get(p).copied().filter(|h| h < high).unwrap_or(0)))
        .collect();
    let mut tails: BTreeMap<i32, Tail> = partitions.iter().map(|p| (*p, Tail::default())).collect();
    let mut scan = Scan {
        consumer,
        cluster,
        topic,
        highs: &highs,
    };
    let (found, missing) = scan.run(&starts)?;
    tails.extend(found);
    let (retry, mut unread): (Vec<i32>, Vec<i32>) = missing
        .into_iter()
        .partition(|p| starts.get(p).is_some_and(|start| *start > 0));
    let (found, missing) = scan.run(&retry.iter().map(|p| (*p, 0)).collect())?;
    tails.extend(found);
    unread.extend(missing);
    match unread.first() {
        None => Ok(tails),
        Some(partition) => Err(ReplayError::Unreadable {
            cluster,
            topic: topic.to_string(),
            partition: *partition,
        }),
    }
}

struct Scan<'a> {
    consumer: &'a BaseConsumer,
    cluster: usize,
    topic: &'a str,
    highs: &'a BTreeMap<i32, i64>,
}

impl Scan<'_> {
    /// Whether the scan has read `partition` up to its high watermark.
    fn reached(&self, tails: &BTreeMap<i32, Tail>, partition: i32) -> bool {
        tails
            .get(&partition)
            .is_some_and(|t| t.next_offset >= self.highs[&partition])
    }

    /// Reads from `starts`; returns the tails of the partitions that reached
    /// their high watermark and the partitions that did not.
    fn run(
        &mut self,
        starts: &BTreeMap<i32, i64>,
    ) -> Result<(BTreeMap<i32, Tail>, Vec<i32>), ReplayError> {
        if starts.is_empty() {
            return Ok((BTreeMap::new(), Vec::new()));
        }
        let mut list = TopicPartitionList::new();
        for (partition, start) in starts {
            list.add_partition_offset(self.topic, *partition, Offset::Offset(*start))
                .map_err(ReplayError::kafka("assigning destination partitions"))?;
        }
        self.consumer
            .assign(&list)
            .map_err(ReplayError::kafka("assigning destination partitions"))?;
        let mut tails: BTreeMap<i32, Tail> = BTreeMap::new();
        let deadline = Instant::now() + SCAN_WAIT;
        let mut quiet_since: Option<Instant> = None;
        loop {
            let reached = starts
                .keys()
                .all(|p| tails.get(p).is_some_and(|t| t.next_offset >= self.highs[p]));
            if reached && quiet_since.is_some_and(|at| at.elapsed() >= DRAIN_WAIT) {
                break;
            }
            if !reached && Instant::now() >= deadline {
                break;
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {
                    quiet_since.get_or_insert_with(Instant::now);
                }
                Some(Err(error)) => {
                    return Err(ReplayError::Kafka {
                        what: format!("scanning {} on destination {}", self.topic, self.cluster),
                        source: error,
                    })
                }
                Some(Ok(record)) => {
                    quiet_since = None;
                    // A record without replay headers is someone else's: it
                    // says nothing of what this replay wrote. The Backfill
                    // counts it when the workers are done, and copies the
                    // range again onto emptied topics.
                    let tail = tails.entry(record.partition()).or_default();
                    tail.last_source_offset = tail.last_source_offset.max(source_offset(&record));
                    tail.next_offset = tail.next_offset.max(record.offset() + 1);
                }
            }
        }
        self.consumer
            .unassign()
            .map_err(ReplayError::kafka("releasing destination partitions"))?;
        let missing = starts
            .keys()
            .filter(|p| !self.reached(&tails, **p))
            .copied()
            .collect::<Vec<_>>();
        tails.retain(|p, _| !missing.contains(p));
        Ok((tails, missing))
    }
}

/// The source offset a replayed record carries (its last such header).
pub fn source_offset(record: &impl Message) -> Option<i64> {
    let headers = record.headers()?;
    headers
        .iter()
        .filter(|h| h.key == SOURCE_OFFSET_HEADER)
        .filter_map(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
        .last()
}
