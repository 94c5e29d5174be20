//! `Savepoint`: one snapshot of a pipeline's state.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{CommonStatus, NAME_PATTERN};

/// A snapshot of a Pipeline's state: a Flink savepoint, or the committed
/// consumer-group offsets of a consumer app.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kappa.dev",
    version = "v1alpha1",
    kind = "Savepoint",
    namespaced,
    status = "SavepointStatus",
    shortname = "ksp",
    category = "kappa",
    doc = "One snapshot of a Pipeline's state: a Flink savepoint or committed consumer-group offsets.",
    printcolumn(name = "Pipeline", type_ = "string", json_path = ".spec.pipelineRef"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Location",
        type_ = "string",
        json_path = ".status.location",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SavepointSpec {
    /// Name of the Pipeline, in the same namespace, whose state this is.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub pipeline_ref: String,
    /// `flink` for a Flink savepoint, `offsets` for a consumer app's committed offsets.
    #[serde(rename = "type", default)]
    pub type_: SavepointType,
    /// Directory to write a Flink savepoint to; the pipeline's savepoint
    /// directory when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub target_directory: Option<String>,
    /// Register a savepoint that already exists at this path instead of taking one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub path: Option<String>,
    /// Register these offsets (type `offsets`) instead of reading the
    /// pipeline's groups: a Backfill's hand-off names where the live job
    /// continues this way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offsets: Vec<PartitionOffset>,
    /// Delete the snapshot's files when this resource is deleted.
    #[serde(default)]
    pub dispose_on_delete: bool,
    /// Retries before the savepoint is marked Failed.
    #[serde(default = "default_backoff_limit")]
    #[schemars(range(min = 0, max = 100))]
    pub backoff_limit: i32,
}

fn default_backoff_limit() -> i32 {
    1
}

/// Kinds of snapshot.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SavepointType {
    /// A Flink savepoint.
    #[default]
    Flink,
    /// Committed consumer-group offsets on every read cluster.
    Offsets,
}

/// Lifecycle of a snapshot.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SavepointPhase {
    /// Not yet triggered.
    Pending,
    /// Triggered, not yet complete.
    InProgress,
    /// Complete; `location` or `offsets` says where.
    Completed,
    /// Failed more than `backoffLimit` times.
    Failed,
    /// Its pipeline went away before it completed.
    Abandoned,
}

/// Observed state of a Savepoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointStatus {
    /// Generation and conditions.
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SavepointPhase>,
    /// Where the Flink savepoint is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Committed offsets (offsets type).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offsets: Vec<PartitionOffset>,
    /// Flink's trigger (request) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<String>,
    /// When it was triggered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_time: Option<Time>,
    /// When it completed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Failed attempts so far.
    #[serde(default)]
    pub failures: i32,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A committed offset of one partition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionOffset {
    /// Cluster name in the KafkaClusterSet.
    pub cluster: String,
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Next offset to read.
    pub offset: i64,
}
