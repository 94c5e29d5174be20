//! `Backfill`: one reprocessing run on temporary extra Kafka capacity.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{CommonStatus, NAME_PATTERN};
use crate::duration::SpecDuration;

/// A reprocessing run: extra clusters are added, the time range is replayed
/// into them, a backfill job runs, its state is handed to the live pipeline,
/// and the capacity is torn down.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kappa.dev",
    version = "v1alpha1",
    kind = "Backfill",
    namespaced,
    status = "BackfillStatus",
    shortname = "kbf",
    category = "kappa",
    doc = "A reprocessing run of a Pipeline over a time range on temporary extra Kafka clusters.",
    printcolumn(name = "Pipeline", type_ = "string", json_path = ".spec.pipelineRef"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Progress",
        type_ = "string",
        json_path = ".status.progress.percent"
    ),
    printcolumn(
        name = "ETA",
        type_ = "string",
        json_path = ".status.progress.eta",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackfillSpec {
    /// Name of the live Pipeline, in the same namespace, to reprocess for.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub pipeline_ref: String,
    /// Start of the replayed range (RFC 3339), inclusive.
    pub from: Time,
    /// End of the replayed range (RFC 3339), exclusive; must be after `from`.
    pub to: Time,
    /// Extra capacity for the run.
    #[serde(default)]
    pub capacity: Capacity,
    /// State the backfill job starts from.
    #[serde(default)]
    pub start_state: StartState,
    /// What happens when the backfill job has caught up.
    #[serde(default)]
    pub completion: Completion,
    /// Keep the extra clusters this long after completion before tearing them down.
    #[serde(default = "default_teardown_after")]
    pub teardown_after: SpecDuration,
}

fn default_teardown_after() -> SpecDuration {
    "0s".into()
}

/// Extra capacity for a backfill.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    /// Number of extra Kafka clusters.
    #[serde(default = "default_clusters")]
    #[schemars(range(min = 1, max = 16))]
    pub clusters: i32,
    /// Partitions of the replayed topics, as a multiple of the source's.
    #[serde(default = "default_partition_multiplier")]
    #[schemars(range(min = 1, max = 64))]
    pub partition_multiplier: i32,
    /// Parallelism of the backfill job.
    #[serde(default = "default_backfill_parallelism")]
    #[schemars(range(min = 1, max = 32768))]
    pub parallelism: i32,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            clusters: default_clusters(),
            partition_multiplier: default_partition_multiplier(),
            parallelism: default_backfill_parallelism(),
        }
    }
}

fn default_clusters() -> i32 {
    1
}
fn default_partition_multiplier() -> i32 {
    1
}
fn default_backfill_parallelism() -> i32 {
    4
}

/// State a backfill job starts from: empty, or a Savepoint of the same pipeline.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartState {
    /// `empty` or `savepoint`.
    #[serde(rename = "type", default)]
    pub type_: StartStateType,
    /// Name of the Savepoint when `type` is `savepoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub savepoint: Option<String>,
}

/// Kinds of start state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StartStateType {
    /// No state.
    #[default]
    Empty,
    /// State from a Savepoint.
    Savepoint,
}

/// What happens when the backfill job has caught up.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Completion {
    /// The live pipeline restarts from the backfill job's final savepoint at the hand-off offsets.
    #[default]
    Handoff,
    /// Only the output is kept; the live pipeline is not touched.
    OutputOnly,
}

/// Phases of a backfill; each is recorded before it acts.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum BackfillPhase {
    /// Accepted, not started.
    Pending,
    /// Extra clusters are being created.
    Provisioning,
    /// History is being copied into the extra clusters.
    Replaying,
    /// The backfill job is running.
    Processing,
    /// The live pipeline takes over the backfill job's state.
    HandingOff,
    /// The extra clusters are being removed.
    TearingDown,
    /// Done.
    Completed,
    /// Stopped; the reason is in the conditions.
    Failed,
}

/// Observed state of a Backfill.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackfillStatus {
    /// Generation and conditions.
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackfillPhase>,
    /// The KafkaClusterSet the extra clusters join (the Pipeline's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_set: Option<String>,
    /// Extra clusters this run holds in the set; emptied when it releases them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    /// What the replay copies and where the live pipeline takes over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayStatus>,
    /// Why the run failed, when it did; the run still releases what it created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// When the current phase began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_time: Option<Time>,
    /// Replay and processing progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run completed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// The replay's plan, as recorded when it was made.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayStatus {
    /// ConfigMap holding the plan the workers read.
    pub plan: String,
    /// Replay Jobs, one per worker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<String>,
    /// Records in the range.
    pub records_total: i64,
    /// Per input stream, the source offsets where the range ends: where the
    /// live pipeline continues after a hand-off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handoff_offsets: Vec<StreamOffsets>,
    /// Times the range was copied again on emptied topics because the
    /// extra clusters did not hold exactly the range after the workers had
    /// finished (a broker lost records, or another writer added some).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reruns: i32,
    /// Per extra cluster and stream, the offsets the replay wrote up to:
    /// where the backfill job's reading ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub written: Vec<StreamOffsets>,
}

fn is_zero(value: &i32) -> bool {
    *value == 0
}

/// Offsets of one stream's topic, per partition (as decimal strings).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamOffsets {
    /// The cluster: the source for hand-off offsets, an extra cluster for written ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Logical stream.
    pub stream: String,
    /// Topic on the source cluster.
    pub topic: String,
    /// Partition -> offset.
    pub offsets: std::collections::BTreeMap<String, i64>,
}

/// Progress of a backfill.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Records copied so far.
    pub records_replayed: i64,
    /// Records in the range.
    pub records_total: i64,
    /// `records_replayed / records_total` as a percentage, e.g. `42%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<String>,
    /// Records the backfill job is behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
    /// Records per second, recent average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Estimated time left, e.g. `12m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<String>,
    /// Key and value bytes of the records replayed so far, as the workers
    /// recorded them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_replayed: Option<i64>,
    /// Bytes replayed per second, average over the replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<f64>,
}
