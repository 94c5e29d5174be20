//! The discovery document of a set and the ConfigMap that carries it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::kafka_cluster_set::{KafkaClusterSet, KafkaClusterSetStatus};
use crate::controller::common::provider::Endpoint;
use crate::controller::reconcile::FIELD_MANAGER;
use crate::discovery::{
    config_map_name, ClusterState, DiscoveredCluster, DiscoveredStream, DiscoveryDocument,
    ReadSegment, Segment, DOCUMENT_KEY, FORMAT_VERSION,
};
use crate::error::Error;
use crate::kafka::topic::desired_topic;

/// The cluster the document tells producers to write to: the target of a
/// migration in progress, else the settled one, else (first publication) the spec's.
pub fn write_cluster<'a>(set: &'a KafkaClusterSet, routing: &'a KafkaClusterSetStatus) -> &'a str {
    routing
        .migration
        .as_ref()
        .map(|m| m.to.as_str())
        .or(routing.write_cluster.as_deref())
        .unwrap_or(&set.spec.routing.write_cluster)
}

/// Where the last drained segment of `stream` on `cluster` ended, if any:
/// the next segment there starts at those offsets.
pub fn last_end<'a>(
    routing: &'a KafkaClusterSetStatus,
    cluster: &str,
    stream: &str,
) -> Option<&'a BTreeMap<String, i64>> {
    routing
        .drained_segments
        .iter()
        .rev()
        .find(|s| s.cluster == cluster && s.stream == stream)
        .map(|s| &s.end_offsets)
}

/// The document for `set` at `epoch`, given the endpoints found and the
/// routing state (write cluster, migration, drained segments) in `routing`.
/// `None` while the write cluster has no endpoint: clients keep the last map.
pub fn document(
    set: &KafkaClusterSet,
    endpoints: &BTreeMap<String, Endpoint>,
    routing: &KafkaClusterSetStatus,
    epoch: i64,
) -> Option<DiscoveryDocument> {
    let write = write_cluster(set, routing);
    endpoints.get(write)?;
    let declared = set
        .spec
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.role, ClusterState::Active));
    // Clusters that left the spec and are not retired yet are read, not written.
    let leaving = routing
        .clusters
        .iter()
        .filter(|c| !set.spec.clusters.iter().any(|s| s.name == c.name))
        .map(|c| (c.name.as_str(), c.role, ClusterState::Draining));
    let clusters = declared
        .chain(leaving)
        .filter_map(|(name, role, state)| {
            let endpoint = endpoints.get(name)?;
            Some(DiscoveredCluster {
                name: name.to_string(),
                role,
                state,
                bootstrap_servers: endpoint.connection.bootstrap_servers.clone(),
                security: endpoint.security.clone(),
            })
        })
        .collect();
    let open = |cluster: &str, stream: &str, topic: &str| ReadSegment {
        cluster: cluster.to_string(),
        topic: topic.to_string(),
        start_offsets: last_end(routing, cluster, stream).cloned(),
        end_offsets: None,
    };
    let streams = set
        .spec
        .streams
        .iter()
        .map(|stream| {
            let topic = desired_topic(stream).name;
            let mut read: Vec<ReadSegment> = routing
                .drained_segments
                .iter()
                .filter(|s| s.stream == stream.name)
                .map(|s| ReadSegment {
                    cluster: s.cluster.clone(),
                    topic: s.topic.clone(),
                    start_offsets: (!s.start_offsets.is_empty()).then(|| s.start_offsets.clone()),
                    end_offsets: Some(s.end_offsets.clone()),
                })
                .collect();
            if let Some(migration) = &routing.migration {
                read.push(open(&migration.from, &stream.name, &topic));
            }
            read.push(open(write, &stream.name, &topic));
            DiscoveredStream {
                name: stream.name.clone(),
                write: Segment {
                    cluster: write.to_string(),
                    topic,
                },
                read,
            }
        })
        .collect();
    Some(DiscoveryDocument {
        version: FORMAT_VERSION,
        epoch,
        namespace: set.namespace().unwrap_or_default(),
        set: set.name_any(),
        clusters,
        streams,
    })
}

/// The ConfigMap carrying `document`, owned by the set so that deleting the
/// set deletes it.
pub fn config_map(set: &KafkaClusterSet, document: &DiscoveryDocument) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(config_map_name(&set.name_any())),
            namespace: set.namespace(),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_string(),
                    "kafka-discovery".to_string(),
                ),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "kappa-operator".to_string(),
                ),
                ("kappa.dev/cluster-set".to_string(), set.name_any()),
            ])),
            owner_references: set.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            DOCUMENT_KEY.to_string(),
            document.to_json(),
        )])),
        ..ConfigMap::default()
    }
}

/// Writes the ConfigMap unless it already carries this document. Returns
/// whether it wrote.
pub async fn publish(
    client: &Client,
    set: &KafkaClusterSet,
    document: &DiscoveryDocument,
) -> Result<bool, Error> {
    let namespace = set
        .namespace()
        .ok_or(Error::MissingObjectField("metadata.namespace"))?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let name = config_map_name(&set.name_any());
    let desired = config_map(set, document);
    if let Some(existing) = api.get_opt(&name).await? {
        let same_data = existing.data == desired.data;
        let same_owner = existing.metadata.owner_references == desired.metadata.owner_references;
        if same_data && same_owner {
            return Ok(false);
        }
    }
    let mut patch = serde_json::to_value(&desired)?;
    patch["apiVersion"] = "v1".into();
    patch["kind"] = "ConfigMap".into();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(true)
}
