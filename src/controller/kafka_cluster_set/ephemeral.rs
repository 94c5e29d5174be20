//! Clusters a Backfill adds to a set for one run. They are never written
//! into the set's spec: the set reads them from the Backfills whose status
//! names it, treats them as members with the `backfill` role and the set's
//! template, gives their topics the backfill's partition layout, and
//! records them in its status with their owner. A Backfill that releases
//! them (empties `status.clusters`) or is deleted leaves them to be retired
//! like any cluster that left the set.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::core::DeserializeGuard;
use kube::ResourceExt;

use crate::api::backfill::Backfill;
use crate::api::kafka_cluster_set::{ClusterEntry, ClusterRole, KafkaClusterSet};
use crate::kafka::DesiredTopic;
use crate::replay::route::Layout;

/// One cluster a Backfill holds in the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ephemeral {
    /// Cluster name in the set.
    pub name: String,
    /// The Backfill holding it.
    pub owner: String,
    /// How many clusters that Backfill holds.
    pub clusters: i32,
    /// Its partition multiplier.
    pub multiplier: i32,
}

impl Ephemeral {
    /// `topic` as this cluster carries it: the backfill's layout of the
    /// source topic's partitions over its clusters.
    pub fn topic(&self, topic: &DesiredTopic) -> DesiredTopic {
        let layout = Layout {
            source_partitions: topic.partitions,
            clusters: self.clusters,
            multiplier: self.multiplier,
        };
        DesiredTopic {
            partitions: layout.destination_partitions(),
            ..topic.clone()
        }
    }
}

/// The clusters the Backfills in `backfills` hold in `set`, by name. A name
/// the spec already declares is the spec's.
pub fn members(
    set: &KafkaClusterSet,
    backfills: &[Arc<DeserializeGuard<Backfill>>],
) -> BTreeMap<String, Ephemeral> {
    let namespace = set.namespace();
    let name = set.name_any();
    backfills
        .iter()
        .filter_map(|b| b.0.as_ref().ok())
        .filter(|b| b.namespace() == namespace && b.metadata.deletion_timestamp.is_none())
        .filter_map(|b| Some((b, b.status.as_ref()?)))
        .filter(|(_, status)| status.cluster_set.as_deref() == Some(name.as_str()))
        .flat_map(|(backfill, status)| {
            status.clusters.iter().map(move |cluster| Ephemeral {
                name: cluster.clone(),
                owner: backfill.name_any(),
                clusters: status.clusters.len() as i32,
                multiplier: backfill.spec.capacity.partition_multiplier,
            })
        })
        .filter(|e| !set.spec.clusters.iter().any(|c| c.name == e.name))
        .map(|e| (e.name.clone(), e))
        .collect()
}

/// `set` with `members` as clusters of its spec (role `backfill`, the
/// template's settings), for the reconciler's eyes only.
pub fn widen(set: &KafkaClusterSet, members: &BTreeMap<String, Ephemeral>) -> KafkaClusterSet {
    let mut widened = set.clone();
    widened
        .spec
        .clusters
        .extend(members.keys().map(|name| ClusterEntry {
            name: name.clone(),
            role: ClusterRole::Backfill,
            overrides: None,
        }));
    widened
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn backfill(
        name: &str,
        set: &str,
        clusters: &[&str],
        deleting: bool,
    ) -> Arc<DeserializeGuard<Backfill>> {
        let mut metadata = json!({"name": name, "namespace": "shop"});
        if deleting {
            metadata["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let object: Backfill = serde_json::from_value(json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "Backfill", "metadata": metadata,
            "spec": {"pipelineRef": "p", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z",
                     "capacity": {"clusters": clusters.len(), "partitionMultiplier": 3}},
            "status": {"clusterSet": set, "clusters": clusters}
        }))
        .expect("backfill");
        Arc::new(DeserializeGuard(Ok(object)))
    }

    #[test]
    fn only_live_backfills_naming_the_set_add_clusters() {
        let set: KafkaClusterSet = serde_json::from_value(json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "KafkaClusterSet",
            "metadata": {"name": "events", "namespace": "shop"},
            "spec": {"template": {"provider": "builtin", "builtin": {}},
                     "clusters": [{"name": "blue"}], "streams": [{"name": "orders", "partitions": 4}],
                     "routing": {"writeCluster": "blue"}}
        }))
        .expect("set");
        let backfills = [
            backfill("rerun", "events", &["rerun-0", "rerun-1"], false),
            backfill("other", "elsewhere", &["other-0"], false),
            backfill("gone", "events", &["gone-0"], true),
            backfill("clash", "events", &["blue"], false),
        ];
        let found = members(&set, &backfills);
        assert_eq!(found.keys().collect::<Vec<_>>(), ["rerun-0", "rerun-1"]);
        let topic = DesiredTopic {
            name: "orders".into(),
            partitions: 4,
            replication: 1,
            config: Default::default(),
        };
        assert_eq!(found["rerun-0"].topic(&topic).partitions, 6);
        let widened = widen(&set, &found);
        assert_eq!(widened.spec.clusters.len(), 3);
        assert_eq!(widened.spec.clusters[2].role, ClusterRole::Backfill);
    }
}
