//! `Pipeline`: one streaming job, its streams, how it is upgraded and what it promises.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{CommonStatus, Resources, NAME_PATTERN};
use crate::duration::SpecDuration;

/// One streaming job (Flink, or a plain consumer app) with its input and
/// output streams, upgrade mode, savepoint policy and SLOs.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kappa.dev",
    version = "v1alpha1",
    kind = "Pipeline",
    namespaced,
    status = "PipelineStatus",
    shortname = "kpipe",
    category = "kappa",
    doc = "A streaming job (Flink or a consumer app) reading and writing streams of a KafkaClusterSet.",
    printcolumn(name = "Engine", type_ = "string", json_path = ".spec.engine.type"),
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.phase",
        description = "Lifecycle phase"
    ),
    printcolumn(
        name = "Job",
        type_ = "string",
        json_path = ".status.job.state",
        description = "Job state reported by the engine"
    ),
    printcolumn(
        name = "Lag",
        type_ = "integer",
        json_path = ".status.totalLagRecords",
        description = "Records behind, over all inputs"
    ),
    printcolumn(
        name = "Last Savepoint",
        type_ = "date",
        json_path = ".status.lastSavepoint.time"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        priority = 1
    ),
    printcolumn(
        name = "SLO",
        type_ = "string",
        json_path = ".status.slo.summary",
        priority = 1
    ),
    printcolumn(
        name = "Budget Left",
        type_ = "number",
        json_path = ".status.slo.budgetLeftPercent",
        description = "Lowest error budget left over the SLO's objectives, in percent",
        priority = 1
    ),
    printcolumn(
        name = "Rules",
        type_ = "string",
        json_path = ".status.slo.rules",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSpec {
    /// Name of the KafkaClusterSet, in the same namespace, carrying the streams.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub cluster_set: String,
    /// Streams the job reads.
    #[schemars(length(min = 1, max = 100))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["stream"]))]
    pub inputs: Vec<PipelineInput>,
    /// Streams the job writes.
    #[serde(default)]
    #[schemars(length(max = 100))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["stream"]))]
    pub outputs: Vec<PipelineOutput>,
    /// What runs the job.
    pub engine: Engine,
    /// How a spec change reaches the running job, with the Flink Kubernetes
    /// Operator's meanings.
    #[serde(default)]
    pub upgrade_mode: UpgradeMode,
    /// Desired state of the job.
    #[serde(default)]
    pub state: JobState,
    /// Change to any other value to restart the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_nonce: Option<i64>,
    /// State to start the first deployment from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<RestoreFrom>,
    /// Periodic savepoints and their retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoints: Option<SavepointPolicy>,
    /// ConfigMap (same namespace) with the discovery document the job routes
    /// by; the set's `<clusterSet>-discovery` when unset. A Backfill gives its
    /// job its own view this way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub discovery: Option<String>,
    /// Service level objectives, turned into alert rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<Slo>,
}

/// A stream the job reads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineInput {
    /// Logical stream name declared by the KafkaClusterSet.
    #[schemars(length(min = 1, max = 63), regex(pattern = NAME_PATTERN))]
    pub stream: String,
    /// Kafka consumer group; `<pipeline>-<stream>` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), regex(pattern = "^[a-zA-Z0-9._-]+$"))]
    pub consumer_group: Option<String>,
}

/// A stream the job writes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineOutput {
    /// Logical stream name declared by the KafkaClusterSet.
    #[schemars(length(min = 1, max = 63), regex(pattern = NAME_PATTERN))]
    pub stream: String,
}

// Each section, and the Flink section's optional pod template, is boxed:
// with the pod templates inline a Pipeline took 5.5 KB in every cache and
// every copy, whichever engine it uses and whether or not it sets one.
/// What runs the job: set `type` and the section of the same name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Engine {
    /// `flink` or `consumer`.
    #[serde(rename = "type")]
    pub type_: EngineType,
    /// Settings when `type` is `flink`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flink: Option<Box<FlinkEngine>>,
    /// Settings when `type` is `consumer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<Box<ConsumerEngine>>,
}

/// Kinds of engine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EngineType {
    /// A Flink job.
    Flink,
    /// A plain consumer application whose state is its committed offsets.
    Consumer,
}

/// A Flink job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlinkEngine {
    /// `application`: the operator runs a JobManager and TaskManagers for this
    /// job; `session`: the job is submitted to an existing Flink cluster.
    #[serde(default)]
    pub mode: FlinkMode,
    /// REST URL of the existing Flink cluster (session mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^https?://[^\\s]+$"))]
    pub session_url: Option<String>,
    /// Flink image (application mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Flink version of the image or session cluster.
    #[serde(default = "default_flink_version")]
    #[schemars(regex(pattern = "^[0-9]+\\.[0-9]+(\\.[0-9]+)?$"))]
    pub flink_version: String,
    /// Where the job jar is: `local://` inside the image, or `http(s)://` to
    /// be fetched and uploaded.
    #[schemars(regex(pattern = "^(local|https?|file)://[^\\s]+\\.jar$"))]
    pub jar_uri: String,
    /// Main class; the jar manifest's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[A-Za-z_$][A-Za-z0-9_$]*(\\.[A-Za-z_$][A-Za-z0-9_$]*)*$"))]
    pub entry_class: Option<String>,
    /// Program arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Job parallelism.
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 1, max = 32768))]
    pub parallelism: i32,
    /// Allow a restore that skips state of operators no longer in the job.
    #[serde(default)]
    pub allow_non_restored_state: bool,
    /// JobManager resources (application mode).
    #[serde(default)]
    pub job_manager: Resources,
    /// TaskManagers (application mode).
    #[serde(default)]
    pub task_manager: TaskManager,
    /// Flink configuration (`config.yaml` keys and values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub flink_configuration: BTreeMap<String, String>,
    /// Base of the JobManager and TaskManager pods (application mode): its
    /// volumes, sidecars and scheduling are kept, and its container named
    /// `flink-main-container`, if any, is the base of the Flink container
    /// (environment, volume mounts, pull policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::embedded_pod_template")]
    pub pod_template: Option<Box<PodTemplateSpec>>,
}

fn default_flink_version() -> String {
    "2.3".into()
}
fn default_parallelism() -> i32 {
    1
}

/// Flink deployment modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FlinkMode {
    /// A Flink cluster of its own, run by the operator.
    #[default]
    Application,
    /// An existing Flink cluster, reached through `sessionUrl`.
    Session,
}

/// TaskManagers of an application-mode job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskManager {
    /// Number of TaskManagers.
    #[serde(default = "default_task_managers")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
    /// Task slots per TaskManager.
    #[serde(default = "default_task_slots")]
    #[schemars(range(min = 1, max = 256))]
    pub task_slots: i32,
    /// Resources per TaskManager.
    #[serde(default)]
    pub resources: Resources,
}

impl Default for TaskManager {
    fn default() -> Self {
        Self {
            replicas: default_task_managers(),
            task_slots: default_task_slots(),
            resources: Resources::default(),
        }
    }
}

fn default_task_managers() -> i32 {
    1
}
fn default_task_slots() -> i32 {
    1
}

/// A consumer application run as a Deployment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerEngine {
    /// Number of replicas.
    #[serde(default = "default_consumer_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Pod template of the application; the discovery map is mounted and the
    /// stream and group settings are set in its environment.
    #[schemars(schema_with = "super::schema::embedded_pod_template")]
    pub template: PodTemplateSpec,
}

fn default_consumer_replicas() -> i32 {
    1
}

/// How a spec change reaches the running job.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UpgradeMode {
    /// Cancel and redeploy with empty state.
    #[serde(rename = "stateless")]
    Stateless,
    /// Stop with a savepoint and redeploy from it; stop the upgrade if the savepoint fails.
    #[default]
    #[serde(rename = "savepoint")]
    Savepoint,
    /// Redeploy from the latest completed checkpoint or savepoint.
    #[serde(rename = "last-state")]
    LastState,
}

/// Desired job state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum JobState {
    /// The job runs.
    #[default]
    Running,
    /// The job is stopped with a savepoint and resumes from it when set back to running.
    Suspended,
}

/// State for the first deployment: set exactly one of the two.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreFrom {
    /// Name of a Completed Savepoint in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub savepoint: Option<String>,
    /// A savepoint path, e.g. `s3://bucket/savepoints/savepoint-abc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub path: Option<String>,
}

/// Periodic savepoints.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointPolicy {
    /// Take a savepoint this often; none periodically when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<SpecDuration>,
    /// Where savepoints are written (Flink), e.g. `s3://bucket/savepoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub target_directory: Option<String>,
    /// Give up on a savepoint after this long.
    #[serde(default = "default_savepoint_timeout")]
    pub timeout: SpecDuration,
    /// Which periodic savepoints are kept.
    #[serde(default)]
    pub retention: SavepointRetention,
}

fn default_savepoint_timeout() -> SpecDuration {
    "10m".into()
}

/// Retention of periodic savepoints: the newest `maxCount`, none older than `maxAge`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointRetention {
    /// Keep at most this many.
    #[serde(default = "default_max_count")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_count: i32,
    /// Delete those older than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<SpecDuration>,
}

impl Default for SavepointRetention {
    fn default() -> Self {
        Self {
            max_count: default_max_count(),
            max_age: None,
        }
    }
}

fn default_max_count() -> i32 {
    5
}

/// Service level objectives of the pipeline. Each objective set here (and
/// availability, always) is sampled by the operator and turned into
/// multi-window, multi-burn-rate alert rules (docs/slo.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Slo {
    /// Maximum acceptable age of the oldest unread record, e.g. `30s`; at
    /// least the 15 s at which lag is measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<SpecDuration>,
    /// Maximum acceptable lag in records, over all inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_lag_records: Option<i64>,
    /// Target in percent, above 0 and below 100, e.g. `99.9`: the share of
    /// samples over `window` in which each objective must hold (the job
    /// running, and the lag objectives set here).
    #[serde(default = "default_availability")]
    #[schemars(range(min = 0.0, max = 100.0), extend("exclusiveMinimum" = true, "exclusiveMaximum" = true))]
    pub availability: f64,
    /// Period the target is measured over, e.g. `30d` (the default); the
    /// alert windows scale with it, so it must be at least `6d` for the
    /// shortest of them to span a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<SpecDuration>,
    /// Runbook linked from the alerts; the `docs/alerts.md` section of the
    /// alert when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub runbook_url: Option<String>,
}

fn default_availability() -> f64 {
    99.0
}

/// Where a pipeline's job is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PipelinePhase {
    /// Its workload is being created or rolled out, or its job's tasks deployed.
    Deploying,
    /// It runs, every replica or task ready.
    Running,
    /// Its job is being stopped to start again changed.
    Upgrading,
    /// Its job is being stopped to be suspended.
    Suspending,
    /// It is suspended; its state is kept.
    Suspended,
    /// Its job was stopped outside the Pipeline.
    Stopped,
    /// Its job failed; the reason is in the conditions.
    Failed,
    /// A consumer pipeline commits the offsets it restores from.
    Restoring,
    /// A consumer pipeline's replicas stop to be started with a new count.
    Resharding,
}

impl PipelinePhase {
    /// The phase as the status shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploying => "Deploying",
            Self::Running => "Running",
            Self::Upgrading => "Upgrading",
            Self::Suspending => "Suspending",
            Self::Suspended => "Suspended",
            Self::Stopped => "Stopped",
            Self::Failed => "Failed",
            Self::Restoring => "Restoring",
            Self::Resharding => "Resharding",
        }
    }
}

impl std::fmt::Display for PipelinePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Observed state of a Pipeline.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    /// Generation and conditions.
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Where the job is; none before the operator first acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PipelinePhase>,
    /// The job as the engine reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobStatus>,
    /// What the running job was restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
    /// The hand-off Savepoint a Backfill last restarted the job from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_off_from: Option<String>,
    /// The newest completed savepoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_savepoint: Option<SavepointRecord>,
    /// Recent deployments and upgrades, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// Lag per input stream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lag: Vec<StreamLag>,
    /// Records behind, over all inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_lag_records: Option<i64>,
    /// A change of the running job under way (an upgrade, a suspension, a
    /// restart), recorded before each step so that a restarted operator
    /// finishes it with the same savepoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<Transition>,
    /// The objectives of `spec.slo`, where their rules are, and their
    /// error budgets when the operator reads them from Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloStatus>,
}

/// What became of a Pipeline's SLO.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SloStatus {
    /// The objectives, e.g. `freshness<=30s, availability 99.9% over 30d`.
    pub summary: String,
    /// The objectives one by one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objectives: Vec<ObjectiveStatus>,
    /// The objects holding the rules, e.g. `ConfigMap/orders-slo-rules`;
    /// unset when rules are not delivered in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<String>,
    /// Digest of the rules last delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_digest: Option<String>,
    /// When the job was first seen running: samples are counted from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_since: Option<Time>,
    /// The lowest error budget left over the objectives, in percent, as
    /// Prometheus last reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_left_percent: Option<f64>,
}

/// One objective of a Pipeline's SLO.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectiveStatus {
    /// `freshness`, `lag_records` or `availability`: the `objective` label
    /// of its samples and alerts.
    pub name: String,
    /// Whether the operator measures it for this pipeline's engine; a Flink
    /// job's lag is not measured.
    pub measured: bool,
    /// Share of good samples over the window, in percent, from Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sli_percent: Option<f64>,
    /// Error budget left over the window, in percent (negative when spent),
    /// from Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_left_percent: Option<f64>,
}

/// A change of the running job: stop it (with a savepoint, a cancel, or
/// after noting its latest checkpoint, by upgrade mode), then deploy the
/// new spec from that state, or stay suspended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// Hash of the engine settings being deployed.
    pub to_hash: String,
    /// The spec generation it was started for; a failed change is tried
    /// again once the spec changes.
    pub generation: i64,
    /// How the old job is stopped.
    pub mode: UpgradeMode,
    /// Whether the job stays stopped (`state: suspended`).
    #[serde(default)]
    pub suspend: bool,
    /// The savepoint trigger id, chosen before triggering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<String>,
    /// Whether the old job has stopped.
    #[serde(default)]
    pub stopped: bool,
    /// The state the next job starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<String>,
    /// Why the change stopped, when it did; it is not retried for the same generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The job as the engine reports it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    /// Engine job id (Flink job id, or the Deployment name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Engine job state (RUNNING, FAILED, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// How many deployments the pipeline has had; this job is the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<i64>,
    /// Whether the engine has taken the job (its id is chosen before, so a
    /// submission retried after a crash cannot run it twice).
    #[serde(default)]
    pub submitted: bool,
    /// Hash of the engine settings the job was deployed with, to tell an
    /// upgrade from a resync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// How many times the engine restarted the job (Flink's `numRestarts`),
    /// or its containers were restarted (consumer engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<i64>,
    /// REST endpoint of the Flink cluster running the job: `sessionUrl`, or
    /// the JobManager Service of an application-mode pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest_url: Option<String>,
}

/// A savepoint the pipeline knows of.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointRecord {
    /// Savepoint resource name.
    pub name: String,
    /// Location or description of the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// When it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// One past deployment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Spec generation deployed.
    pub generation: i64,
    /// What happened (Deployed, Upgraded, Suspended, Restarted).
    pub event: String,
    /// What the job was restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
    /// When.
    pub time: Time,
}

/// Lag of one input stream over all its read clusters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamLag {
    /// Stream name.
    pub stream: String,
    /// Records behind.
    pub records: i64,
    /// Seconds behind, where record timestamps allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}
