//! Retiring a cluster that left the spec: it stays in the discovery
//! document (as `draining`) and reachable until every consumer group that
//! has read it is past the end offsets of its segments; then its provider
//! removes it and its segments leave the document.

use std::collections::BTreeMap;

use crate::api::kafka_cluster_set::{DrainedSegment, KafkaClusterSet, KafkaClusterSetStatus};
use crate::controller::common::provider::{ClusterProvider, Endpoint};
use crate::kafka::{GroupOffsets, KafkaAdmin};

/// Where the retirement of one cluster stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retirement {
    /// Not yet: why.
    Waiting(String),
    /// Removed from the set.
    Retired,
}

/// The consumer groups that have read `cluster`'s topics but are not yet past
/// the end of its last segment of each, with where they stand.
pub fn laggards(cluster: &str, segments: &[DrainedSegment], offsets: &GroupOffsets) -> Vec<String> {
    let mut ends: BTreeMap<&str, &BTreeMap<String, i64>> = BTreeMap::new();
    for segment in segments.iter().filter(|s| s.cluster == cluster) {
        ends.insert(&segment.topic, &segment.end_offsets);
    }
    let mut behind = Vec::new();
    for (group, topics) in offsets {
        for (topic, end_offsets) in &ends {
            let Some(committed) = topics.get(*topic) else {
                continue;
            };
            for (partition, end) in *end_offsets {
                let position = partition
                    .parse::<i32>()
                    .ok()
                    .and_then(|p| committed.get(&p).copied())
                    .unwrap_or(0);
                if position < *end {
                    behind.push(format!(
                        "{group} ({topic}[{partition}] at {position} of {end})"
                    ));
                }
            }
        }
    }
    behind
}

/// The clusters the status records that the spec no longer names.
pub fn retiring(set: &KafkaClusterSet, status: &KafkaClusterSetStatus) -> Vec<String> {
    status
        .clusters
        .iter()
        .filter(|c| !set.spec.clusters.iter().any(|s| s.name == c.name))
        .map(|c| c.name.clone())
        .collect()
}

/// Whether `cluster` is written, or a migration moves writes from or to it.
pub fn written(next: &KafkaClusterSetStatus, cluster: &str) -> bool {
    next.write_cluster.as_deref() == Some(cluster)
        || next
            .migration
            .as_ref()
            .is_some_and(|m| m.from == cluster || m.to == cluster)
}

/// Advances the retirement of `cluster` by at most one step, editing `next`.
/// `endpoint` is where the cluster answers, or why it cannot be reached.
pub async fn advance(
    admin: &dyn KafkaAdmin,
    providers: &dyn ClusterProvider,
    set: &KafkaClusterSet,
    cluster: &str,
    endpoint: Result<&Endpoint, &str>,
    next: &mut KafkaClusterSetStatus,
) -> Retirement {
    if written(next, cluster) {
        return Retirement::Waiting(format!(
            "cluster `{cluster}` is still written; it retires once the migration away from it completes"
        ));
    }
    let topics: Vec<String> = next
        .drained_segments
        .iter()
        .filter(|s| s.cluster == cluster)
        .map(|s| s.topic.clone())
        .collect();
    if !topics.is_empty() {
        let endpoint = match endpoint {
            Ok(endpoint) => endpoint,
            Err(why) => {
                return Retirement::Waiting(format!(
                    "cluster `{cluster}` is unreachable ({why}); its readers' positions are unknown"
                ))
            }
        };
        let offsets = match admin.committed_offsets(&endpoint.connection, &topics).await {
            Ok(offsets) => offsets,
            Err(error) => {
                return Retirement::Waiting(format!(
                    "cluster `{cluster}`: reading consumer positions failed: {error}"
                ))
            }
        };
        let behind = laggards(cluster, &next.drained_segments, &offsets);
        if !behind.is_empty() {
            return Retirement::Waiting(format!(
                "cluster `{cluster}` is drained when consumer group(s) {} pass its end offsets",
                behind.join(", ")
            ));
        }
    }
    let settings = next
        .clusters
        .iter()
        .find(|c| c.name == cluster)
        .and_then(|c| c.settings.clone());
    if let Some(settings) = settings {
        if let Err(error) = providers.retire(set, cluster, &settings).await {
            tracing::warn!(cluster, %error, "removing a retired cluster failed");
            return Retirement::Waiting(format!(
                "cluster `{cluster}`: removing it failed: {error}"
            ));
        }
    }
    next.drained_segments.retain(|s| s.cluster != cluster);
    next.clusters.retain(|c| c.name != cluster);
    Retirement::Retired
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(cluster: &str, end: i64) -> DrainedSegment {
        DrainedSegment {
            cluster: cluster.into(),
            stream: "orders".into(),
            topic: "orders".into(),
            start_offsets: BTreeMap::new(),
            end_offsets: BTreeMap::from([("0".to_string(), end), ("1".to_string(), 0)]),
        }
    }

    #[test]
    fn groups_are_measured_against_the_last_segment_on_the_cluster() {
        let segments = [segment("blue", 5), segment("green", 9), segment("blue", 12)];
        let at = |offset| BTreeMap::from([("orders".to_string(), BTreeMap::from([(0, offset)]))]);
        let offsets = GroupOffsets::from([
            ("done".to_string(), at(12)),
            ("slow".to_string(), at(7)),
            ("elsewhere".to_string(), BTreeMap::new()),
        ]);
        assert_eq!(
            laggards("blue", &segments, &offsets),
            ["slow (orders[0] at 7 of 12)"]
        );
        assert!(laggards("green", &segments, &GroupOffsets::new()).is_empty());
    }
}
