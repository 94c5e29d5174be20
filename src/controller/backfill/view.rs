//! The backfill job's own discovery document: the live set's document with
//! every input stream read from the extra clusters, each up to the offsets
//! the replay wrote there, one segment per cluster; outputs unchanged.

use std::collections::BTreeMap;

use crate::api::backfill::StreamOffsets;
use crate::discovery::{DiscoveryDocument, ReadSegment};

/// The view of `live` for a job reading `inputs` from what `written` records.
pub fn view(
    live: &DiscoveryDocument,
    inputs: &[String],
    written: &[StreamOffsets],
) -> DiscoveryDocument {
    let mut document = live.clone();
    for stream in document
        .streams
        .iter_mut()
        .filter(|s| inputs.contains(&s.name))
    {
        stream.read = written
            .iter()
            .filter(|w| w.stream == stream.name)
            .filter_map(|w| {
                Some(ReadSegment {
                    cluster: w.cluster.clone()?,
                    topic: w.topic.clone(),
                    start_offsets: None,
                    end_offsets: Some(w.offsets.clone()),
                })
            })
            .collect();
    }
    document
}

/// Whether a group's committed offsets (cluster -> partition -> offset)
/// reach every offset in `written`.
pub fn consumed(
    written: &[StreamOffsets],
    committed: &BTreeMap<String, BTreeMap<i32, i64>>,
) -> bool {
    written.iter().all(|w| {
        let on = w.cluster.as_ref().and_then(|c| committed.get(c));
        w.offsets.iter().all(|(partition, end)| {
            *end == 0
                || partition
                    .parse::<i32>()
                    .ok()
                    .and_then(|p| on?.get(&p).copied())
                    .is_some_and(|at| at >= *end)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kafka_cluster_set::ClusterRole;
    use crate::discovery::{
        ClusterState, DiscoveredCluster, DiscoveredStream, Segment, FORMAT_VERSION,
    };

    fn written(cluster: &str, offsets: &[(&str, i64)]) -> StreamOffsets {
        StreamOffsets {
            cluster: Some(cluster.into()),
            stream: "orders".into(),
            topic: "orders".into(),
            offsets: offsets.iter().map(|(p, o)| (p.to_string(), *o)).collect(),
        }
    }

    #[test]
    fn inputs_read_the_extra_clusters_up_to_what_was_written() {
        let stream = |name: &str| DiscoveredStream {
            name: name.into(),
            write: Segment {
                cluster: "blue".into(),
                topic: name.into(),
            },
            read: vec![ReadSegment {
                cluster: "blue".into(),
                topic: name.into(),
                start_offsets: None,
                end_offsets: None,
            }],
        };
        let live = DiscoveryDocument {
            version: FORMAT_VERSION,
            epoch: 7,
            namespace: "shop".into(),
            set: "events".into(),
            clusters: vec![DiscoveredCluster {
                name: "blue".into(),
                role: ClusterRole::Primary,
                state: ClusterState::Active,
                bootstrap_servers: "blue:9092".into(),
                security: None,
            }],
            streams: vec![stream("orders"), stream("totals")],
        };
        let written = [
            written("rerun-0", &[("0", 10), ("1", 0)]),
            written("rerun-1", &[("0", 5)]),
        ];
        let shown = view(&live, &["orders".into()], &written);
        let read: Vec<(&str, Option<i64>)> = shown.streams[0]
            .read
            .iter()
            .map(|s| {
                (
                    s.cluster.as_str(),
                    s.end_offsets.as_ref().and_then(|e| e.get("0").copied()),
                )
            })
            .collect();
        assert_eq!(read, [("rerun-0", Some(10)), ("rerun-1", Some(5))]);
        assert_eq!(shown.streams[1], live.streams[1]);

        let mut committed = BTreeMap::from([("rerun-0".to_string(), BTreeMap::from([(0, 10)]))]);
        assert!(!consumed(&written, &committed));
        committed.insert("rerun-1".into(), BTreeMap::from([(0, 5)]));
        assert!(consumed(&written, &committed));
    }
}
