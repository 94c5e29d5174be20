//! A consumer engine's state: its groups' committed offsets on every
//! cluster its input streams are read from, as the set's published
//! discovery document lists them. Read for offsets Savepoints and for lag;
//! written back when the pipeline restores from an offsets Savepoint.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client, ResourceExt};

use super::pipelines::groups;
use super::provider::{discovered_connection, ProviderError};
use crate::api::pipeline::{Pipeline, StreamLag};
use crate::api::savepoint::PartitionOffset;
use crate::client::segments::{oldest_unread, unread, Positions, Unread};
use crate::discovery::{config_map_name, DiscoveredStream, DiscoveryDocument, DOCUMENT_KEY};
use crate::kafka::{ClusterConnection, KafkaAdmin, KafkaError};

/// Why the offsets could not be read or written. Each is a condition reason.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    /// The set has not published a readable discovery document.
    #[error("{0}")]
    NoDiscovery(String),
    /// The pipeline reads a stream the document does not route.
    #[error("the discovery document of KafkaClusterSet `{set}` has no stream `{stream}`")]
    UnknownStream {
        /// The set.
        set: String,
        /// The stream.
        stream: String,
    },
    /// A cluster's credentials could not be read.
    #[error("{0}")]
    Provider(#[from] ProviderError),
    /// A cluster did not answer or refused.
    #[error("{0}")]
    Kafka(#[from] KafkaError),
    /// The API server did not answer.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
}

impl OffsetsError {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoDiscovery(_) => "DiscoveryNotPublished",
            Self::UnknownStream { .. } => "StreamNotRouted",
            Self::Provider(error) => error.reason(),
            Self::Kafka(error) => error.category(),
            Self::Kube(_) => "KubeApiError",
        }
    }
}

/// The clusters a pipeline's inputs are read from, and how to reach them.
pub struct ReadView {
    document: DiscoveryDocument,
    connections: BTreeMap<String, ClusterConnection>,
}

/// Every (cluster, topic) a stream is read from, once each.
fn read_topics(stream: &DiscoveredStream) -> BTreeSet<(String, String)> {
    stream
        .read
        .iter()
        .map(|s| (s.cluster.clone(), s.topic.clone()))
        .collect()
}

impl ReadView {
    /// Reads the discovery document of `pipeline`'s set and resolves a
    /// connection to each of its clusters.
    pub async fn of(client: &Client, pipeline: &Pipeline) -> Result<Self, OffsetsError> {
        let namespace = pipeline.namespace().unwrap_or_default();
        let set = &pipeline.spec.cluster_set;
        let name = config_map_name(set);
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
        let document = config_maps
            .get_opt(&name)
            .await?
            .and_then(|map| map.data?.remove(DOCUMENT_KEY))
            .ok_or_else(|| {
                OffsetsError::NoDiscovery(format!(
                    "KafkaClusterSet `{set}` has not published ConfigMap `{name}` yet"
                ))
            })?;
        let document: DiscoveryDocument = serde_json::from_str(&document).map_err(|error| {
            OffsetsError::NoDiscovery(format!(
                "ConfigMap `{name}` holds no valid document: {error}"
            ))
        })?;
        let mut connections = BTreeMap::new();
        for cluster in &document.clusters {
            let connection = discovered_connection(client, &namespace, cluster).await?;
            connections.insert(cluster.name.clone(), connection);
        }
        Ok(Self {
            document,
            connections,
        })
    }

    fn stream(&self, name: &str) -> Result<&DiscoveredStream, OffsetsError> {
        self.document
            .streams
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| OffsetsError::UnknownStream {
                set: self.document.set.clone(),
                stream: name.to_string(),
            })
    }

    fn connection(&self, cluster: &str) -> Result<&ClusterConnection, OffsetsError> {
        self.connections.get(cluster).ok_or_else(|| {
            OffsetsError::NoDiscovery(format!(
                "the discovery document reads cluster `{cluster}` but does not list it"
            ))
        })
    }

    /// `group`'s committed offsets on every cluster `stream` is read from.
    async fn committed(
        &self,
        admin: &dyn KafkaAdmin,
        stream: &DiscoveredStream,
        group: &str,
    ) -> Result<Vec<PartitionOffset>, OffsetsError> {
        let mut offsets = Vec::new();
        for (cluster, topic) in read_topics(stream) {
            let connection = self.connection(&cluster)?;
            let committed = admin
                .group_offsets(connection, group, std::slice::from_ref(&topic))
                .await?;
            for (partition, offset) in committed.get(&topic).into_iter().flatten() {
                offsets.push(PartitionOffset {
                    cluster: cluster.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                });
            }
        }
        Ok(offsets)
    }

    /// The snapshot of a consumer pipeline: every input group's committed
    /// offsets on every cluster its stream is read from.
    pub async fn snapshot(
        &self,
        admin: &dyn KafkaAdmin,
        pipeline: &Pipeline,
    ) -> Result<Vec<PartitionOffset>, OffsetsError> {
        let mut offsets = Vec::new();
        for (stream, group) in groups(&pipeline.name_any(), &pipeline.spec) {
            let stream = self.stream(&stream)?;
            offsets.extend(self.committed(admin, stream, &group).await?);
        }
        Ok(offsets)
    }

    /// Commits a snapshot's offsets for the group of the input whose stream
    /// is read from each cluster and topic. The group must have no members.
    pub async fn restore(
        &self,
        admin: &dyn KafkaAdmin,
        pipeline: &Pipeline,
        offsets: &[PartitionOffset],
    ) -> Result<(), OffsetsError> {
        for (stream, group) in groups(&pipeline.name_any(), &pipeline.spec) {
            for (cluster, topic) in read_topics(self.stream(&stream)?) {
                let wanted: BTreeMap<i32, i64> = offsets
                    .iter()
                    .filter(|o| o.cluster == cluster && o.topic == topic)
                    .map(|o| (o.partition, o.offset))
                    .collect();
                if wanted.is_empty() {
                    continue;
                }
                let connection = self.connection(&cluster)?;
                admin
                    .commit_offsets(connection, &group, &topic, &wanted)
                    .await?;
            }
        }
        Ok(())
    }

    /// Records each input's group has not yet read, over every segment of
    /// its stream, and how old the oldest of them is.
    pub async fn lag(
        &self,
        admin: &dyn KafkaAdmin,
        pipeline: &Pipeline,
    ) -> Result<Vec<StreamLag>, OffsetsError> {
        let mut lags = Vec::new();
        for (name, group) in groups(&pipeline.name_any(), &pipeline.spec) {
            let stream = self.stream(&name)?;
            let positions: Positions = self
                .committed(admin, stream, &group)
                .await?
                .into_iter()
                .map(|o| ((o.cluster, o.partition), o.offset))
                .collect();
            let mut highs = Positions::new();
            for (cluster, topic) in read_topics(stream) {
                let ends = admin
                    .end_offsets(self.connection(&cluster)?, &topic)
                    .await?;
                highs.extend(ends.into_iter().map(|(p, end)| ((cluster.clone(), p), end)));
            }
            let unread = unread(&stream.read, &positions, &highs);
            lags.push(StreamLag {
                stream: name,
                records: unread.iter().map(|u| u.to - u.from).sum(),
                seconds: self.age_of_oldest(admin, &unread).await,
            });
        }
        Ok(lags)
    }

    /// Seconds since the oldest unread record was written (0 when nothing
    /// is unread), from the timestamps of the first unread record of each
    /// partition; `None` when no such record could be read.
    async fn age_of_oldest(&self, admin: &dyn KafkaAdmin, unread: &[Unread]) -> Option<f64> {
        if unread.is_empty() {
            return Some(0.0);
        }
        let reads = oldest_unread(unread).into_iter().map(|u| async move {
            let connection = self.connection(&u.cluster).ok()?;
            match admin
                .record_time(connection, &u.topic, u.partition, u.from)
                .await
            {
                Ok(time) => time,
                Err(error) => {
                    tracing::debug!(cluster = %u.cluster, topic = %u.topic, %error, "record time unknown");
                    None
                }
            }
        });
        let oldest = futures::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .min()?;
        let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
        // Whole seconds: status changes no more often than that.
        Some(((now - oldest).max(0) / 1000) as f64)
    }
}
