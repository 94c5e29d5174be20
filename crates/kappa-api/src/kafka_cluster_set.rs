//! `KafkaClusterSet`: an ordered set of immutable Kafka clusters carrying the same streams.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::common::{
    CommonStatus, Resources, SecretKeyRef, NAME_PATTERN, QUANTITY_PATTERN, TOPIC_PATTERN,
};
use crate::duration::SpecDuration;

/// A set of immutable Kafka clusters that carry the same logical streams, and
/// how producers and consumers are routed among them.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kappa.dev",
    version = "v1alpha1",
    kind = "KafkaClusterSet",
    namespaced,
    status = "KafkaClusterSetStatus",
    shortname = "kcs",
    category = "kappa",
    doc = "An ordered set of immutable Kafka clusters carrying the same streams; clients are routed among them through the `<name>-discovery` ConfigMap.",
    printcolumn(
        name = "Clusters",
        type_ = "integer",
        json_path = ".status.clusterCount",
        description = "Clusters in the set, ephemeral ones included"
    ),
    printcolumn(
        name = "Write Cluster",
        type_ = "string",
        json_path = ".spec.routing.writeCluster",
        description = "Where producers write"
    ),
    printcolumn(
        name = "Epoch",
        type_ = "integer",
        json_path = ".status.epoch",
        description = "Discovery document epoch"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct KafkaClusterSetSpec {
    /// Defaults for every cluster of the set; each cluster may override parts of it.
    pub template: ClusterTemplate,
    /// The clusters of the set, in order. A cluster is immutable once created:
    /// to change its version or configuration add a new cluster and move
    /// `routing.writeCluster` to it.
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub clusters: Vec<ClusterEntry>,
    /// Logical streams, created as topics on every active cluster.
    #[serde(default)]
    #[schemars(length(max = 1000))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub streams: Vec<StreamSpec>,
    /// How producers and consumers are routed among the clusters.
    pub routing: Routing,
}

/// The cluster spec shared by the set's clusters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTemplate {
    /// Who runs the clusters: `builtin` (the operator runs Kafka in KRaft
    /// mode) or `external` (an existing cluster reached by bootstrap servers).
    #[serde(default)]
    pub provider: Provider,
    /// Settings for the `builtin` provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<BuiltinCluster>,
    /// Settings for the `external` provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalCluster>,
}

/// Who runs a cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Provider {
    /// The operator runs Apache Kafka in KRaft mode as a StatefulSet.
    #[default]
    Builtin,
    /// An existing cluster, reached by its bootstrap servers.
    External,
}

/// A Kafka cluster run by the operator: combined controller+broker nodes in KRaft mode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuiltinCluster {
    /// Container image of Apache Kafka.
    #[serde(default = "default_kafka_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Kafka version the image runs, recorded in the discovery document.
    #[serde(default = "default_kafka_version")]
    #[schemars(regex(pattern = "^[0-9]+\\.[0-9]+(\\.[0-9]+)?$"))]
    pub version: String,
    /// Number of combined controller+broker nodes.
    #[serde(default = "default_nodes")]
    #[schemars(range(min = 1, max = 9))]
    pub nodes: i32,
    /// Persistent storage of each node's log directory.
    #[serde(default)]
    pub storage: Storage,
    /// Resources of each node.
    #[serde(default)]
    pub resources: Resources,
    /// Broker configuration (`server.properties` keys and values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

impl Default for BuiltinCluster {
    fn default() -> Self {
        Self {
            image: default_kafka_image(),
            version: default_kafka_version(),
            nodes: default_nodes(),
            storage: Storage::default(),
            resources: Resources::default(),
            config: BTreeMap::new(),
        }
    }
}

fn default_kafka_image() -> String {
    "apache/kafka:4.1.0".into()
}
fn default_kafka_version() -> String {
    "4.1.0".into()
}
fn default_nodes() -> i32 {
    3
}

/// A persistent volume claim template for a node's log directory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Size of each node's volume, e.g. `100Gi`.
    #[serde(default = "default_storage_size")]
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub size: String,
    /// Storage class of the volumes; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub storage_class: Option<String>,
    /// Keep each node's log directory in an `emptyDir` of at most `size`
    /// instead of a PersistentVolumeClaim: the data goes with the pod. For
    /// throwaway clusters (tests, backfill capacity) where no volume
    /// provisioner exists.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ephemeral: bool,
    /// Delete the cluster's PersistentVolumeClaims when it is retired (removed
    /// from the set and drained). By default they are kept.
    #[serde(default, skip_serializing_if = "is_false")]
    pub delete_claims: bool,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class: None,
            ephemeral: false,
            delete_claims: false,
        }
    }
}

/// Settings added with a `false` default are left out when false, so that
/// the spec hash of a cluster recorded before they existed stays the same.
fn is_false(value: &bool) -> bool {
    !value
}

fn default_storage_size() -> String {
    "10Gi".into()
}

/// An existing Kafka cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalCluster {
    /// `host:port` pairs to bootstrap from.
    #[schemars(length(min = 1, max = 32))]
    #[schemars(inner(regex(pattern = "^[A-Za-z0-9.-]+:[0-9]{1,5}$")))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub bootstrap_servers: Vec<String>,
    /// TLS settings; plaintext when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ExternalTls>,
    /// SASL authentication; none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<ExternalSasl>,
}

/// TLS towards an external cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalTls {
    /// The CA certificate (PEM) that signs the brokers' certificates.
    pub ca_cert: SecretKeyRef,
}

/// SASL towards an external cluster; credentials stay in the Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSasl {
    /// SASL mechanism.
    pub mechanism: SaslMechanism,
    /// Name of the Secret holding `username` and `password`.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub secret_name: String,
}

/// SASL mechanisms librdkafka and Kafka agree on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SaslMechanism {
    /// Username and password in clear (use with TLS).
    #[serde(rename = "PLAIN")]
    Plain,
    /// SCRAM with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

/// One cluster of the set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterEntry {
    /// Name of the cluster, unique in the set; part of its children's names.
    #[schemars(length(min = 1, max = 40), regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// What the cluster is for.
    #[serde(default)]
    pub role: ClusterRole,
    /// Changes to the template for this cluster only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<ClusterOverrides>,
}

/// What a cluster is for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ClusterRole {
    /// Carries live traffic.
    #[default]
    Primary,
    /// Kept in step, ready to take writes.
    Standby,
    /// Extra capacity for reprocessing; never takes live writes.
    Backfill,
}

/// Parts of the template one cluster replaces.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterOverrides {
    /// Replaces `template.provider`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    /// Replaces `template.builtin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<BuiltinCluster>,
    /// Replaces `template.external`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalCluster>,
}

/// A logical stream and the topic that carries it on every cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamSpec {
    /// Logical name used by pipelines.
    #[schemars(length(min = 1, max = 63), regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// Kafka topic name; the stream's name when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), regex(pattern = TOPIC_PATTERN))]
    pub topic: Option<String>,
    /// Number of partitions; it may only grow.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 10000))]
    pub partitions: i32,
    /// Replication factor.
    #[serde(default = "default_replication")]
    #[schemars(range(min = 1, max = 9))]
    pub replication: i32,
    /// Cleanup policy: `delete` keeps a retention window, `compact` keeps the
    /// latest record per key for unbounded history.
    #[serde(default)]
    pub cleanup_policy: CleanupPolicy,
    /// How long records are kept (`retention.ms`); forever when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<SpecDuration>,
    /// Move closed segments to remote storage (`remote.storage.enable`).
    #[serde(default)]
    pub tiered_storage: bool,
    /// Further topic configuration (`min.insync.replicas`, …). Keys set by the
    /// typed fields above are refused here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

fn default_partitions() -> i32 {
    6
}
fn default_replication() -> i32 {
    1
}

/// Kafka `cleanup.policy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CleanupPolicy {
    /// Delete segments older than the retention.
    #[default]
    Delete,
    /// Keep the latest record per key.
    Compact,
    /// Compact, and delete what is older than the retention.
    #[serde(rename = "compact,delete")]
    CompactDelete,
}

/// Client routing among the clusters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    /// The cluster producers write to. Moving it runs an ordered migration.
    #[schemars(length(min = 1, max = 40), regex(pattern = NAME_PATTERN))]
    pub write_cluster: String,
}

/// Observed state of a KafkaClusterSet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaClusterSetStatus {
    /// Generation and conditions.
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Number of clusters, ephemeral ones included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_count: Option<i32>,
    /// Epoch of the published discovery document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// Per-cluster state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub clusters: Vec<ClusterStatus>,
    /// Digest of the published discovery document without its epoch: the
    /// epoch grows only when this changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_hash: Option<String>,
    /// The write cluster the discovery document settled on. A different
    /// `spec.routing.writeCluster` starts a migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_cluster: Option<String>,
    /// The write-cluster move in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationStatus>,
    /// Segments no longer written, oldest first: consumers read each up to
    /// its end offsets before the next.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub drained_segments: Vec<DrainedSegment>,
}

/// A move of the write cluster: the document announces `to`, live producers
/// acknowledge the epoch, then `from`'s end offsets are recorded.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    /// The write cluster producers leave.
    pub from: String,
    /// The write cluster producers move to.
    pub to: String,
    /// Epoch of the document that announced the move.
    pub epoch: i64,
    /// Live producers that have not acknowledged the epoch yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
}

/// One stream's topic on one cluster, read between recorded offsets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainedSegment {
    /// Cluster name.
    pub cluster: String,
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Per partition, where the segment starts (absent: the beginning).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub start_offsets: BTreeMap<String, i64>,
    /// Per partition, the offset at which the segment ends (exclusive).
    pub end_offsets: BTreeMap<String, i64>,
}

/// Observed state of one cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Cluster name.
    pub name: String,
    /// Cluster role.
    #[serde(default)]
    pub role: ClusterRole,
    /// Where the cluster is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,
    /// Hash of the spec the cluster was created with; a later change is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// The settings the cluster was created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<ClusterSettings>,
    /// The Backfill that added this ephemeral cluster, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Bootstrap servers clients are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
    /// Brokers the cluster's metadata lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<i32>,
    /// Why the cluster is not Ready, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The topic of every stream on this cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["stream"]))]
    pub streams: Vec<TopicStatus>,
}

/// Where a cluster of a set is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClusterPhase {
    /// Its provider is still starting it.
    Starting,
    /// Its provider cannot give its address (a Secret missing, its objects refused).
    Unavailable,
    /// It does not answer Kafka's admin requests.
    Unreachable,
    /// A change of a stream's topics was refused (such as fewer partitions).
    Refused,
    /// Every stream's topic is on it as declared.
    Ready,
    /// A stream's topic could not be created or changed.
    Failed,
    /// It is leaving the set; the message says what it waits for.
    Retiring,
}

impl ClusterPhase {
    /// Every phase, in the order the metrics list them.
    pub const ALL: [Self; 7] = [
        Self::Ready,
        Self::Starting,
        Self::Unavailable,
        Self::Unreachable,
        Self::Refused,
        Self::Failed,
        Self::Retiring,
    ];

    /// The phase as the status and the metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "Starting",
            Self::Unavailable => "Unavailable",
            Self::Unreachable => "Unreachable",
            Self::Refused => "Refused",
            Self::Ready => "Ready",
            Self::Failed => "Failed",
            Self::Retiring => "Retiring",
        }
    }
}

/// Whether a stream's topic on a cluster is as declared.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TopicState {
    /// Not looked at yet, because another topic's change was refused.
    #[default]
    Pending,
    /// As declared.
    Ready,
    /// The change it needs is refused (such as fewer partitions).
    Refused,
    /// Creating or changing it failed; the message says why.
    Failed,
}

/// A cluster's settings after its overrides over the template, as recorded
/// when the cluster was first reached: they keep a cluster that leaves the
/// spec reachable until it is drained.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSettings {
    /// Who runs it.
    pub provider: Provider,
    /// Builtin settings, for a builtin cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<BuiltinCluster>,
    /// External settings, for an external cluster (Secrets by name only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalCluster>,
}

/// The topic of one stream on one cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Partitions the cluster reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Whether the topic is as the stream declares it.
    pub state: TopicState,
    /// Why it is not Ready, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ClusterSettings {
    /// The settings of `cluster`: its overrides over the set's template.
    pub fn of(spec: &KafkaClusterSetSpec, cluster: &ClusterEntry) -> Self {
        let overrides = cluster.overrides.clone().unwrap_or_default();
        let provider = overrides.provider.unwrap_or(spec.template.provider);
        match provider {
            Provider::Builtin => Self {
                provider,
                builtin: Some(
                    overrides
                        .builtin
                        .or_else(|| spec.template.builtin.clone())
                        .unwrap_or_default(),
                ),
                external: None,
            },
            Provider::External => Self {
                provider,
                builtin: None,
                external: overrides
                    .external
                    .or_else(|| spec.template.external.clone()),
            },
        }
    }

    /// A digest of the settings; a recorded cluster whose digest changes has
    /// had its spec edited.
    pub fn hash(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(bytes)[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}
