//! What a replay copies and who copies what: written by the operator into
//! the replay Job's ConfigMap, read by every worker.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::route::Layout;
use crate::discovery::ClientSecurity;
use crate::kafka::{ClusterConnection, KafkaAdmin, KafkaError};

/// The whole replay of one Backfill.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReplayPlan {
    /// Bootstrap servers of the source cluster.
    pub source: String,
    /// How the source is secured; workers find the Secrets it names mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_security: Option<ClientSecurity>,
    /// Bootstrap servers of each backfill cluster, in the order routes index them.
    pub destinations: Vec<String>,
    /// Destination partitions per source partition.
    pub multiplier: i32,
    /// Number of workers (the Job's completions).
    pub workers: i32,
    /// Consumer group on the backfill clusters under which workers record
    /// how far each destination partition is written.
    pub progress_group: String,
    /// The streams to copy.
    pub streams: Vec<StreamRange>,
}

/// One stream's range.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StreamRange {
    /// Logical stream name.
    pub stream: String,
    /// Topic on the source cluster.
    pub source_topic: String,
    /// Topic on every backfill cluster.
    pub destination_topic: String,
    /// Partitions of the source topic.
    pub source_partitions: i32,
    /// The offsets to copy, per source partition.
    pub partitions: Vec<PartitionRange>,
}

/// Offsets `[start, end)` of one source partition.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionRange {
    /// Source partition.
    pub partition: i32,
    /// First offset copied.
    pub start: i64,
    /// First offset not copied.
    pub end: i64,
}

/// One source partition a worker copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit<'a> {
    /// The stream it belongs to.
    pub stream: &'a StreamRange,
    /// Its range.
    pub range: PartitionRange,
}

impl ReplayPlan {
    /// How `stream` spreads over the backfill clusters.
    pub fn layout(&self, stream: &StreamRange) -> Layout {
        Layout {
            source_partitions: stream.source_partitions,
            clusters: self.destinations.len() as i32,
            multiplier: self.multiplier,
        }
    }

    /// The source partitions worker `index` copies: every non-empty range
    /// is numbered in plan order and worker `k` takes those numbered `k`
    /// modulo the worker count.
    pub fn units_of(&self, index: i32) -> Vec<Unit<'_>> {
        self.streams
            .iter()
            .flat_map(|stream| {
                stream
                    .partitions
                    .iter()
                    .filter(|r| r.end > r.start)
                    .map(move |range| Unit {
                        stream,
                        range: *range,
                    })
            })
            .enumerate()
            .filter(|(n, _)| *n as i32 % self.workers.max(1) == index)
            .map(|(_, unit)| unit)
            .collect()
    }

    /// Records in the whole range.
    pub fn total_records(&self) -> i64 {
        self.streams
            .iter()
            .flat_map(|s| &s.partitions)
            .map(|r| (r.end - r.start).max(0))
            .sum()
    }
}

/// Why a stream's range could not be located.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// The source cluster did not answer.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// A partition has records since the start time but none since the end time.
    #[error("partition {partition} of {topic} has no record at or after the end of the range yet")]
    Open {
        /// Source topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
}

/// The range `[from, to)` (ms since the epoch) of `source_topic` on the
/// source cluster, to be copied into `destination_topic`.
pub async fn locate(
    admin: &dyn KafkaAdmin,
    source: &ClusterConnection,
    (stream, source_topic, destination_topic): (&str, &str, &str),
    (from, to): (i64, i64),
) -> Result<StreamRange, LocateError> {
    let starts = admin.offsets_at(source, source_topic, from).await?;
    let ends = admin.offsets_at(source, source_topic, to).await?;
    let partitions = ranges(&starts, &ends).map_err(|partition| LocateError::Open {
        topic: source_topic.to_string(),
        partition,
    })?;
    Ok(StreamRange {
        stream: stream.to_string(),
        source_topic: source_topic.to_string(),
        destination_topic: destination_topic.to_string(),
        source_partitions: starts.len() as i32,
        partitions,
    })
}

/// The ranges `[start, end)` of a topic's partitions from the offsets at the
/// range's start and end times (see `KafkaAdmin::offsets_at`). A partition
/// without a record since the start time has nothing to copy; one with
/// records since the start but none since the end time has a range that is
/// not closed yet: its number is the error. So is an end before the start:
/// Tansu 0.6 answers 0 where it finds no record, so such an answer means the
/// same.
pub fn ranges(
    starts: &BTreeMap<i32, Option<i64>>,
    ends: &BTreeMap<i32, Option<i64>>,
) -> Result<Vec<PartitionRange>, i32> {
    starts
        .iter()
        .map(
            |(partition, start)| match (start, ends.get(partition).copied().flatten()) {
                (None, _) => Ok(None),
                (Some(_), None) => Err(*partition),
                (Some(start), Some(end)) if end < *start => Err(*partition),
                (Some(start), Some(end)) => Ok(Some(PartitionRange {
                    partition: *partition,
                    start: *start,
                    end,
                })),
            },
        )
        .filter_map(Result::transpose)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(workers: i32) -> ReplayPlan {
        let range = |partition, start, end| PartitionRange {
            partition,
            start,
            end,
        };
        ReplayPlan {
            source: "live:9092".into(),
            source_security: None,
            destinations: vec!["b0:9092".into(), "b1:9092".into()],
            multiplier: 2,
            workers,
            progress_group: "kappa-replay".into(),
            streams: vec![StreamRange {
                stream: "orders".into(),
                source_topic: "orders".into(),
                destination_topic: "orders".into(),
                source_partitions: 4,
                partitions: vec![
                    range(0, 0, 10),
                    range(1, 5, 5),
                    range(2, 3, 9),
                    range(3, 0, 1),
                ],
            }],
        }
    }

    #[test]
    fn a_range_closes_once_every_partition_with_records_has_one_past_its_end() {
        let starts = BTreeMap::from([(0, Some(10)), (1, None), (2, Some(4))]);
        let open = BTreeMap::from([(0, Some(20)), (1, None), (2, None)]);
        assert_eq!(ranges(&starts, &open), Err(2));
        let before = BTreeMap::from([(0, Some(0)), (1, None), (2, Some(4))]);
        assert_eq!(ranges(&starts, &before), Err(0));
        let closed = BTreeMap::from([(0, Some(20)), (1, None), (2, Some(4))]);
        let found = ranges(&starts, &closed).expect("closed");
        assert_eq!(
            found
                .iter()
                .map(|r| (r.partition, r.start, r.end))
                .collect::<Vec<_>>(),
            vec![(0, 10, 20), (2, 4, 4)]
        );
    }

    #[test]
    fn workers_share_the_non_empty_partitions_without_overlap() {
        let plan = plan(2);
        let first: Vec<i32> = plan.units_of(0).iter().map(|u| u.range.partition).collect();
        let second: Vec<i32> = plan.units_of(1).iter().map(|u| u.range.partition).collect();
        assert_eq!((first, second), (vec![0, 3], vec![2]));
        assert_eq!(plan.total_records(), 17);
        assert!(plan.units_of(2).is_empty());
    }
}
