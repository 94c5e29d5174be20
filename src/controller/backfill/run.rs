//! The phases of a Backfill. Each reconcile acts on the phase its status
//! records and, when that phase's work is done, records the next one
//! without acting on it: the next reconcile does. So every phase is in the
//! status before anything of it happens, and an operator restarted at any
//! instant picks up where the status says.
//!
//! Pending: the Pipeline and its set are checked, the extra clusters named.
//! Provisioning: the set runs them (it reads them from this status); once
//! they and their topics are ready, the range is located on the source
//! cluster and the plan stored. Replaying: one Job per worker copies it.
//! Processing: a Pipeline derived from the live one reads the copy through
//! its own discovery view until it has consumed everything written.
//! TearingDown: the derived Pipeline goes, the clusters are kept for
//! `teardownAfter`, then released; once the set has retired them, the Jobs
//! and plan go and the run is Completed (or Failed, with the reason kept).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};

use super::objects::{self, JobState};
use super::view;
use crate::api::backfill::{
    Backfill, BackfillPhase, BackfillStatus, Completion, Progress, ReplayStatus, StartStateType,
    StreamOffsets,
};
use crate::api::kafka_cluster_set::{ClusterStatus, KafkaClusterSet, Provider};
use crate::api::pipeline::{EngineType, JobState as PipelineState, Pipeline, PipelineSpec};
use crate::conditions::{DEGRADED, PROGRESSING, READY};
use crate::controller::kafka_cluster_set::provider::{ClusterProvider, ProviderError, Providers};
use crate::controller::pipeline::{consumer, snapshots};
use crate::controller::verdict::{own_fields, Act, Outcome, Requeue, Wanted};
use crate::controller::{apply_if_changed, gone, lookup, Shared};
use crate::discovery::{config_map_name, DiscoveryDocument, DOCUMENT_KEY};
use crate::error::Error;
use crate::kafka::topic::desired_topic;
use crate::kafka::{ClusterConnection, DesiredTopic, KafkaAdmin, TopicOffsets};
use crate::metrics::{Metrics, Present};
use crate::replay::bytes_group;
use crate::replay::plan::{locate, LocateError, ReplayPlan};

/// How often a phase that waits on something outside Kubernetes looks again.
const RECHECK: Duration = Duration::from_secs(5);
/// Times the copy starts again on emptied topics when the extra clusters do
/// not hold exactly the range after the workers finished, before the run
/// fails.
const MAX_RERUNS: i32 = 3;
/// How often a range whose end has not been reached yet is looked at again.
const RANGE_RECHECK: Duration = Duration::from_secs(30);

/// What the Backfill controller reads and talks to.
pub struct BackfillDeps {
    /// Pipelines, to find the live one.
    pub pipelines: Store<DeserializeGuard<Pipeline>>,
    /// Sets, to find the clusters.
    pub sets: Store<DeserializeGuard<KafkaClusterSet>>,
    /// Kafka's admin API.
    pub admin: Arc<dyn KafkaAdmin>,
    /// The operator's own image, which replay workers run.
    pub image: String,
}

/// Acts on one Backfill.
pub struct RunBackfill<'c> {
    /// Shared controller parts.
    pub shared: &'c Shared,
    /// Stores, Kafka and the image.
    pub deps: &'c BackfillDeps,
}

impl Act<Backfill> for RunBackfill<'_> {
    fn act<'a>(self, backfill: &'a Backfill) -> BoxFuture<'a, Result<Outcome, Error>>
    where
        Self: 'a,
    {
        async move { self.run(backfill).await }.boxed()
    }
}

/// Where one reconcile leaves the run.
struct Step {
    status: BackfillStatus,
    reason: &'static str,
    message: String,
    requeue: Requeue,
}

impl Step {
    fn wait(
        status: BackfillStatus,
        reason: &'static str,
        message: impl Into<String>,
        requeue: Requeue,
    ) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
            requeue,
        }
    }

    /// The run moves to `phase`; the next reconcile acts on it.
    fn advance(
        mut status: BackfillStatus,
        phase: BackfillPhase,
        message: impl Into<String>,
    ) -> Self {
        status.phase = Some(phase);
        status.phase_time = Some(now());
        Self::wait(
            status,
            phase_reason(phase),
            message,
            Requeue::After(Duration::from_millis(200)),
        )
    }

    /// The run cannot go on: it tears down what it created and ends Failed.
    fn fail(mut status: BackfillStatus, reason: &'static str, message: String) -> Self {
        status.failure = Some(format!("{reason}: {message}"));
        Self::advance(status, BackfillPhase::TearingDown, message)
    }

    fn outcome(self) -> Result<Outcome, Error> {
        let phase = self.status.phase.unwrap_or(BackfillPhase::Pending);
        let mut conditions = vec![match phase {
            BackfillPhase::Completed => {
                Wanted::new(READY, "True", "Completed", self.message.clone())
            }
            BackfillPhase::Failed => Wanted::new(READY, "False", "Failed", self.message.clone()),
            _ => Wanted::new(READY, "Unknown", self.reason, self.message.clone()),
        }];
        let settled = matches!(phase, BackfillPhase::Completed | BackfillPhase::Failed);
        conditions.push(if settled {
            Wanted::new(
                PROGRESSING,
                "False",
                phase_reason(phase),
                self.message.clone(),
            )
        } else {
            Wanted::new(PROGRESSING, "True", self.reason, self.message.clone())
        });
        conditions.push(match &self.status.failure {
            Some(failure) => Wanted::new(DEGRADED, "True", "RunFailed", failure.clone()),
            None => Wanted::new(DEGRADED, "False", "NoFailure", "nothing has failed"),
        });
        Ok(Outcome {
            conditions,
            fields: own_fields(serde_json::to_value(&self.status)?),
            requeue: self.requeue,
        })
    }
}

/// The Backfill's progress and phase as metrics.
fn record_metrics(metrics: &Metrics, backfill: &Backfill, status: &BackfillStatus) {
    let namespace = backfill.namespace().unwrap_or_default();
    let name = backfill.name_any();
    if let Some(progress) = &status.progress {
        for (kind, value) in [
            ("range", Some(progress.records_total)),
            ("replayed", Some(progress.records_replayed)),
            ("lag", progress.lag),
        ] {
            if let Some(value) = value {
                metrics
                    .backfill_records
                    .with_label_values(&[&namespace, &name, kind])
                    .set(value);
            }
        }
        metrics
            .backfill_rate
            .with_label_values(&[&namespace, &name])
            .set(progress.rate.unwrap_or(0.0));
        let eta = progress
            .eta
            .as_deref()
            .and_then(|eta| crate::duration::parse_duration(eta).ok());
        if let Some(eta) = eta {
            metrics
                .backfill_expected_end
                .with_label_values(&[&namespace, &name])
                .set(Timestamp::now().as_second() + eta.as_secs() as i64);
        }
        if let Some(bytes) = progress.bytes_replayed {
            metrics
                .backfill_bytes
                .with_label_values(&[&namespace, &name])
                .set(bytes);
        }
    }
    let current = status.phase.unwrap_or(BackfillPhase::Pending);
    for phase in ALL_PHASES {
        metrics
            .backfill_phase
            .with_label_values(&[&namespace, &name, phase_reason(phase)])
            .set(i64::from(phase == current));
    }
}

/// Removes the metric series of Backfills `present` says are gone: a
/// deleted Backfill's progress must not stay on dashboards.
pub fn forget_metrics(metrics: &Metrics, present: &Present) {
    let recorded: BTreeSet<(String, String)> =
        crate::metrics::label_values(&metrics.backfill_phase, ["namespace", "backfill"])
            .into_iter()
            .map(|[namespace, name]| (namespace, name))
            .collect();
    for (namespace, name) in recorded.iter().filter(|(ns, name)| present.gone(ns, name)) {
        // A series that was never set is simply not there to remove.
        for phase in ALL_PHASES {
            let _ =
                metrics
                    .backfill_phase
                    .remove_label_values(&[namespace, name, phase_reason(phase)]);
        }
        for kind in ["range", "replayed", "lag"] {
            let _ = metrics
                .backfill_records
                .remove_label_values(&[namespace, name, kind]);
        }
        let _ = metrics
            .backfill_rate
            .remove_label_values(&[namespace, name]);
        let _ = metrics
            .backfill_expected_end
            .remove_label_values(&[namespace, name]);
        let _ = metrics
            .backfill_bytes
            .remove_label_values(&[namespace, name]);
    }
}

const ALL_PHASES: [BackfillPhase; 8] = [
    BackfillPhase::Pending,
    BackfillPhase::Provisioning,
    BackfillPhase::Replaying,
    BackfillPhase::Processing,
    BackfillPhase::HandingOff,
    BackfillPhase::TearingDown,
    BackfillPhase::Completed,
    BackfillPhase::Failed,
];

fn phase_reason(phase: BackfillPhase) -> &'static str {
    match phase {
        BackfillPhase::Pending => "Pending",
        BackfillPhase::Provisioning => "Provisioning",
        BackfillPhase::Replaying => "Replaying",
        BackfillPhase::Processing => "Processing",
        BackfillPhase::HandingOff => "HandingOff",
        BackfillPhase::TearingDown => "TearingDown",
        BackfillPhase::Completed => "Completed",
        BackfillPhase::Failed => "Failed",
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// Seconds since `time`.
fn since(time: Option<&Time>) -> f64 {
    time.map_or(0.0, |t| {
        (Timestamp::now().as_millisecond() - t.0.as_millisecond()).max(0) as f64 / 1000.0
    })
}

/// Name of the Pipeline a Backfill derives from the live one.
pub fn derived_name(backfill: &Backfill) -> String {
    derived_name_of(&backfill.name_any())
}

/// The name of Backfill `name`'s job Pipeline.
pub fn derived_name_of(name: &str) -> String {
    format!("{name}-job")
}

fn view_name(backfill: &Backfill) -> String {
    format!("{}-discovery", backfill.name_any())
}

/// Everything in `committed` (cluster -> topic -> partition -> figure) added up.
fn sum(committed: &BTreeMap<String, TopicOffsets>) -> i64 {
    committed
        .values()
        .flat_map(|t| t.values())
        .flat_map(|p| p.values())
        .sum()
}

/// `done` per second since `started`, to a tenth, once there is some.
fn per_second(done: i64, started: Option<&Time>) -> Option<f64> {
    let seconds = since(started);
    (seconds > 0.0 && done > 0).then(|| (done as f64 / seconds * 10.0).round() / 10.0)
}

/// `progress` with the replay's `bytes` and their rate since `started`.
fn with_bytes(progress: Progress, bytes: Option<i64>, started: Option<&Time>) -> Progress {
    Progress {
        bytes_replayed: bytes,
        bytes_per_second: bytes.and_then(|b| per_second(b, started)),
        ..progress
    }
}

/// Progress with its percentage, average rate since `started` and ETA.
fn progress(done: i64, total: i64, started: Option<&Time>, lag: Option<i64>) -> Progress {
    let rate = per_second(done, started);
    let eta = rate.filter(|r| *r > 0.0).map(|r| {
        let left = ((total - done).max(0) as f64 / r).ceil() as u64;
        crate::duration::format_duration(Duration::from_secs(left))
    });
    Progress {
        records_replayed: done,
        records_total: total,
        percent: (total > 0).then(|| format!("{}%", done.min(total) * 100 / total)),
        lag,
        rate,
        eta,
        ..Progress::default()
    }
}

impl RunBackfill<'_> {
    async fn run(&self, backfill: &Backfill) -> Result<Outcome, Error> {
        let status = backfill.status.clone().unwrap_or_default();
        let step = match status.phase.unwrap_or(BackfillPhase::Pending) {
            BackfillPhase::Pending => self.pending(backfill, status),
            BackfillPhase::Provisioning => self.provisioning(backfill, status).await?,
            BackfillPhase::Replaying => self.replaying(backfill, status).await?,
            BackfillPhase::Processing => self.processing(backfill, status).await?,
            BackfillPhase::HandingOff => self.handing_off(backfill, status).await?,
            BackfillPhase::TearingDown => self.tearing_down(backfill, status).await?,
            phase @ (BackfillPhase::Completed | BackfillPhase::Failed) => {
                let message = status.failure.clone().unwrap_or_else(|| {
                    format!(
                        "{}: the extra clusters, Jobs and plan are gone",
                        phase_reason(phase)
                    )
                });
                Step::wait(status, phase_reason(phase), message, Requeue::OnChange)
            }
        };
        record_metrics(&self.shared.metrics, backfill, &step.status);
        step.outcome()
    }

    fn pipeline(&self, backfill: &Backfill) -> Option<Pipeline> {
        let found = lookup(&self.deps.pipelines, backfill, &backfill.spec.pipeline_ref)?;
        found.0.as_ref().ok().cloned()
    }

    fn set(&self, backfill: &Backfill, name: &str) -> Option<KafkaClusterSet> {
        let found = lookup(&self.deps.sets, backfill, name)?;
        found.0.as_ref().ok().cloned()
    }

    fn pending(&self, backfill: &Backfill, status: BackfillStatus) -> Step {
        let Some(pipeline) = self.pipeline(backfill) else {
            return Step::wait(
                status,
                "PipelineNotFound",
                format!("Pipeline `{}` does not exist", backfill.spec.pipeline_ref),
                Requeue::OnChange,
            );
        };
        if pipeline.spec.engine.type_ != EngineType::Consumer {
            return Step::wait(
                status,
                "EngineNotSupported",
                format!("Pipeline `{}` runs on Flink; this operator version backfills consumer-engine pipelines only", pipeline.name_any()),
                Requeue::OnChange,
            );
        }
        if backfill.spec.start_state.type_ == StartStateType::Savepoint {
            return Step::wait(
                status,
                "StartStateNotSupported",
                "spec.startState: a consumer pipeline's state is its committed offsets on the live cluster, which mean nothing on the extra clusters; start empty (type: empty)",
                Requeue::OnChange,
            );
        }
        let set_name = pipeline.spec.cluster_set.clone();
        let Some(set) = self.set(backfill, &set_name) else {
            return Step::wait(
                status,
                "ClusterSetNotFound",
                format!(
                    "KafkaClusterSet `{set_name}` of Pipeline `{}` does not exist",
                    pipeline.name_any()
                ),
                Requeue::OnChange,
            );
        };
        if set.spec.template.provider != Provider::Builtin {
            return Step::wait(
                status,
                "CapacityUnavailable",
                format!("KafkaClusterSet `{set_name}` has an external template: extra clusters can only be run from a builtin template"),
                Requeue::OnChange,
            );
        }
        let mut next = status;
        next.cluster_set = Some(set_name.clone());
        next.clusters = objects::cluster_names(backfill);
        next.start_time = Some(now());
        let message = format!(
            "adding cluster(s) {} to KafkaClusterSet `{set_name}`",
            next.clusters.join(", ")
        );
        Step::advance(next, BackfillPhase::Provisioning, message)
    }

    /// Our clusters as the set's status shows them, once all are Ready.
    fn ready_clusters<'s>(
        &self,
        backfill: &Backfill,
        set: &'s KafkaClusterSet,
        names: &[String],
    ) -> Result<Vec<&'s ClusterStatus>, String> {
        let recorded = set
            .status
            .as_ref()
            .map(|s| s.clusters.as_slice())
            .unwrap_or_default();
        let mut ready = Vec::new();
        let mut waiting = Vec::new();
        for name in names {
            match recorded
                .iter()
                .find(|c| &c.name == name && c.owner.as_deref() == Some(&backfill.name_any()))
            {
                Some(c) if c.phase.as_deref() == Some("Ready") && c.bootstrap_servers.is_some() => {
                    ready.push(c)
                }
                Some(c) => waiting.push(format!(
                    "`{name}` is {}{}",
                    c.phase.as_deref().unwrap_or("starting"),
                    c.message
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                )),
                None => waiting.push(format!("`{name}` is not in the set's status yet")),
            }
        }
        if waiting.is_empty() {
            Ok(ready)
        } else {
            Err(waiting.join("; "))
        }
    }

    async fn provisioning(
        &self,
        backfill: &Backfill,
        status: BackfillStatus,
    ) -> Result<Step, Error> {
        let set_name = status.cluster_set.clone().unwrap_or_default();
        let (Some(pipeline), Some(set)) = (self.pipeline(backfill), self.set(backfill, &set_name))
        else {
            let message = format!(
                "Pipeline `{}` or KafkaClusterSet `{set_name}` is gone",
                backfill.spec.pipeline_ref
            );
            return Ok(Step::fail(status, "ReferenceGone", message));
        };
        let clusters = match self.ready_clusters(backfill, &set, &status.clusters) {
            Ok(clusters) => clusters,
            Err(waiting) => {
                return Ok(Step::wait(
                    status,
                    "ClustersStarting",
                    format!("waiting for the extra clusters: {waiting}"),
                    Requeue::After(RECHECK),
                ))
            }
        };
        let set_status = set.status.clone().unwrap_or_default();
        let write = set_status
            .write_cluster
            .clone()
            .unwrap_or_else(|| set.spec.routing.write_cluster.clone());
        let Some(source) = set_status.clusters.iter().find(|c| c.name == write) else {
            return Ok(Step::wait(
                status,
                "SourceNotReady",
                format!("the write cluster `{write}` is not in the set's status yet"),
                Requeue::After(RECHECK),
            ));
        };
        // Reached as the set reaches it: a secured source's Secrets are
        // read for the operator's calls and named for the workers.
        let reached = match &source.settings {
            Some(settings) => {
                Providers::new(self.shared.client.clone())
                    .reach(&set, &write, settings)
                    .await
            }
            None => Err(ProviderError::Starting(
                "its settings are not recorded yet".into(),
            )),
        };
        let endpoint = match reached {
            Ok(endpoint) => endpoint,
            Err(why) => {
                return Ok(Step::wait(
                    status,
                    why.reason(),
                    format!("the write cluster `{write}` cannot be reached yet: {why}"),
                    Requeue::After(RECHECK),
                ))
            }
        };
        let api: Api<ConfigMap> = Api::namespaced(
            self.shared.client.clone(),
            &backfill.namespace().unwrap_or_default(),
        );
        let plan = match api.get_opt(&objects::plan_name(backfill)).await? {
            // A plan stored by an earlier reconcile stays the plan.
            Some(stored) => stored_plan(&stored)?,
            None => {
                let connection = &endpoint.connection;
                let range = (
                    backfill.spec.from.0.as_millisecond(),
                    backfill.spec.to.0.as_millisecond(),
                );
                let mut streams = Vec::new();
                for input in &pipeline.spec.inputs {
                    let topic = source
                        .streams
                        .iter()
                        .find(|s| s.stream == input.stream)
                        .map_or_else(|| input.stream.clone(), |s| s.topic.clone());
                    match locate(
                        self.deps.admin.as_ref(),
                        connection,
                        (&input.stream, &topic, &topic),
                        range,
                    )
                    .await
                    {
                        Ok(stream) => streams.push(stream),
                        Err(error @ LocateError::Open { .. }) => {
                            return Ok(Step::wait(status, "RangeOpen", format!("{error}: the replay starts once every partition has passed spec.to"), Requeue::After(RANGE_RECHECK)));
                        }
                        Err(LocateError::Kafka(error)) => {
                            return Ok(Step::wait(
                                status,
                                error.category(),
                                format!("locating the range on `{write}`: {error}"),
                                Requeue::Backoff,
                            ));
                        }
                    }
                }
                let plan = ReplayPlan {
                    source: connection.bootstrap_servers.clone(),
                    source_security: endpoint.security.clone(),
                    destinations: clusters
                        .iter()
                        .filter_map(|c| c.bootstrap_servers.clone())
                        .collect(),
                    multiplier: backfill.spec.capacity.partition_multiplier,
                    workers: backfill.spec.capacity.parallelism,
                    progress_group: objects::progress_group(backfill),
                    streams,
                };
                let config_map = objects::plan_config_map(backfill, &plan)?;
                match api.create(&PostParams::default(), &config_map).await {
                    Ok(_) => plan,
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        return Ok(Step::wait(
                            status,
                            "Provisioning",
                            "the plan was stored meanwhile",
                            Requeue::After(Duration::from_millis(200)),
                        ));
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        };
        let mut next = status;
        let total = plan.total_records();
        next.replay = Some(ReplayStatus {
            plan: objects::plan_name(backfill),
            jobs: (0..plan.workers)
                .map(|i| objects::job_name(backfill, i))
                .collect(),
            records_total: total,
            handoff_offsets: plan
                .streams
                .iter()
                .map(|s| StreamOffsets {
                    cluster: Some(write.clone()),
                    stream: s.stream.clone(),
                    topic: s.source_topic.clone(),
                    offsets: s
                        .partitions
                        .iter()
                        .map(|r| (r.partition.to_string(), r.end))
                        .collect(),
                })
                .collect(),
            written: Vec::new(),
            reruns: 0,
        });
        next.progress = Some(progress(0, total, None, None));
        let message = format!(
            "replaying {total} record(s) from `{write}` with {} worker(s)",
            plan.workers
        );
        Ok(Step::advance(next, BackfillPhase::Replaying, message))
    }

    /// Per extra cluster, the committed offsets of `group` on `topics`.
    async fn committed(
        &self,
        set: &KafkaClusterSet,
        names: &[String],
        group: &str,
        topics: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, BTreeMap<i32, i64>>>, String> {
        let mut all = BTreeMap::new();
        for (name, connection) in extra_connections(set, names)? {
            let offsets = self
                .deps
                .admin
                .group_offsets(&connection, group, topics)
                .await
                .map_err(|e| format!("cluster `{name}`: {e}"))?;
            all.insert(name, offsets);
        }
        Ok(all)
    }

    /// Creates every destination topic of `plan` that an extra cluster
    /// lacks, with the plan's layout: a broker restarted without its data,
    /// or a copy started again, leaves them missing, and the set creates
    /// them only at its next resync.
    async fn ensure_topics(
        &self,
        set: &KafkaClusterSet,
        names: &[String],
        plan: &ReplayPlan,
    ) -> Result<(), String> {
        let mut wanted = Vec::new();
        for stream in &plan.streams {
            let Some(spec) = set.spec.streams.iter().find(|s| s.name == stream.stream) else {
                return Err(format!(
                    "stream `{}` is no longer declared in the set",
                    stream.stream
                ));
            };
            wanted.push(DesiredTopic {
                name: stream.destination_topic.clone(),
                partitions: plan.layout(stream).destination_partitions(),
                ..desired_topic(spec)
            });
        }
        let topics: Vec<String> = wanted.iter().map(|t| t.name.clone()).collect();
        for (name, connection) in extra_connections(set, names)? {
            let admin = self.deps.admin.as_ref();
            let view = admin
                .describe(&connection, &topics)
                .await
                .map_err(|e| format!("cluster `{name}`: {e}"))?;
            for topic in wanted.iter().filter(|t| !view.topics.contains_key(&t.name)) {
                admin
                    .create_topic(&connection, topic)
                    .await
                    .map_err(|e| format!("cluster `{name}`: {e}"))?;
            }
        }
        Ok(())
    }

    /// The destination partitions (`cluster/topic/partition`) whose end
    /// lies beyond the next offset the workers recorded there (`written`):
    /// someone else wrote records after theirs. Brokers that report the
    /// start of the last batch as the end (Tansu) are never beyond.
    async fn written_by_others(
        &self,
        set: &KafkaClusterSet,
        names: &[String],
        written: &BTreeMap<String, TopicOffsets>,
        topics: &[String],
    ) -> Result<Vec<String>, String> {
        let mut foreign = Vec::new();
        for (name, connection) in extra_connections(set, names)? {
            for topic in topics {
                let ends = self
                    .deps
                    .admin
                    .end_offsets(&connection, topic)
                    .await
                    .map_err(|e| format!("cluster `{name}`: {e}"))?;
                let mine = written.get(&name).and_then(|t| t.get(topic));
                foreign.extend(
                    ends.into_iter()
                        .filter(|(partition, end)| {
                            *end > mine.and_then(|m| m.get(partition)).copied().unwrap_or(0)
                        })
                        .map(|(partition, _)| format!("{name}/{topic}/{partition}")),
                );
            }
        }
        Ok(foreign)
    }

    /// Deletes `topics` on the extra clusters `names`, with what was
    /// committed on them.
    async fn empty_topics(
        &self,
        set: &KafkaClusterSet,
        names: &[String],
        topics: &[String],
    ) -> Result<(), String> {
        for (name, connection) in extra_connections(set, names)? {
            self.deps
                .admin
                .delete_topics(&connection, topics)
                .await
                .map_err(|e| format!("cluster `{name}`: {e}"))?;
        }
        Ok(())
    }

    async fn replaying(&self, backfill: &Backfill, status: BackfillStatus) -> Result<Step, Error> {
        let Some(replay) = status.replay.clone() else {
            return Ok(Step::fail(
                status,
                "PlanLost",
                "the replay's plan is not recorded".into(),
            ));
        };
        let set_name = status.cluster_set.clone().unwrap_or_default();
        let Some(set) = self.set(backfill, &set_name) else {
            return Ok(Step::fail(
                status,
                "ReferenceGone",
                format!("KafkaClusterSet `{set_name}` is gone"),
            ));
        };
        let namespace = backfill.namespace().unwrap_or_default();
        let jobs: Api<Job> = Api::namespaced(self.shared.client.clone(), &namespace);
        // One list of this Backfill's Jobs, not a read per worker.
        let selector = format!("{}={}", objects::BACKFILL_LABEL, backfill.name_any());
        let existing: BTreeMap<String, Job> = jobs
            .list(&ListParams::default().labels(&selector))
            .await?
            .into_iter()
            .map(|job| (job.name_any(), job))
            .collect();
        let mut states = Vec::new();
        // The plan is read only to start a missing worker: its topics must
        // be there, and a secured source's Secrets mounted.
        let mut stored: Option<ReplayPlan> = None;
        if replay.jobs.iter().any(|name| !existing.contains_key(name)) {
            let config_maps: Api<ConfigMap> =
                Api::namespaced(self.shared.client.clone(), &namespace);
            let plan = stored_plan(&config_maps.get(&replay.plan).await?)?;
            if let Err(why) = self.ensure_topics(&set, &status.clusters, &plan).await {
                let message = format!("creating the topics the workers write: {why}");
                return Ok(Step::wait(
                    status,
                    "TopicsMissing",
                    message,
                    Requeue::After(RECHECK),
                ));
            }
            stored = Some(plan);
        }
        for (index, name) in replay.jobs.iter().enumerate() {
            let job = match existing.get(name).cloned() {
                Some(job) => job,
                None => {
                    let security = stored.as_ref().and_then(|p| p.source_security.as_ref());
                    let desired =
                        objects::worker_job(backfill, index as i32, &self.deps.image, security);
                    match jobs.create(&PostParams::default(), &desired).await {
                        Ok(job) => job,
                        Err(kube::Error::Api(e)) if e.code == 409 => continue,
                        Err(error) => return Err(error.into()),
                    }
                }
            };
            states.push((name.clone(), objects::job_state(&job)));
        }
        // A worker that keeps failing (its Job gave up) may have met a
        // destination it cannot read or trust: the copy starts again too.
        let failed = states.iter().find_map(|(name, state)| match state {
            JobState::Failed(why) => Some(format!("replay Job `{name}` failed: {why}")),
            _ => None,
        });
        let topics: Vec<String> = replay
            .handoff_offsets
            .iter()
            .map(|s| s.topic.clone())
            .collect();
        let committed = self
            .committed(
                &set,
                &status.clusters,
                &objects::progress_group(backfill),
                &topics,
            )
            .await;
        let bytes = self
            .committed(
                &set,
                &status.clusters,
                &bytes_group(&objects::progress_group(backfill)),
                &topics,
            )
            .await
            .ok()
            .map(|all| sum(&all))
            // Unreadable for a moment: the last figure stands.
            .or_else(|| status.progress.as_ref().and_then(|p| p.bytes_replayed));
        let mut next = status;
        let replayed = committed.as_ref().map_or(0, sum);
        let started = next.phase_time.clone();
        next.progress = Some(with_bytes(
            progress(replayed, replay.records_total, started.as_ref(), None),
            bytes,
            started.as_ref(),
        ));
        let finished = states.len() == replay.jobs.len()
            && states.iter().all(|(_, s)| *s != JobState::Running);
        // A finished copy is checked before it is used.
        let checked = match (committed, failed.clone()) {
            (Ok(all), Some(why)) if finished => Ok((all, Some(("ReplayFailed", why)))),
            (Ok(all), None) if finished => self
                .written_by_others(&set, &next.clusters, &all, &topics)
                .await
                .map(|foreign| {
                    let flaw = flaw(replayed, replay.records_total, &foreign).map(|(reason, what)| {
                        let total = replay.records_total;
                        let wrong = format!(
                            "the extra clusters hold {replayed} record(s) for a range of {total}: {what}"
                        );
                        (reason, wrong)
                    });
                    (all, flaw)
                }),
            (other, _) => other.map(|all| (all, None)),
        };
        match (finished, checked) {
            (true, Ok((_, Some((reason, wrong))))) => {
                if replay.reruns >= MAX_RERUNS {
                    let message = format!("{wrong}, after {} fresh copies", replay.reruns);
                    return Ok(Step::fail(next, reason, message));
                }
                // Neither a record written twice nor one missing below the
                // last one copied can be mended in place: the copy starts
                // again on emptied topics. The workers have all finished (or
                // their Jobs gave up), so nothing writes them meanwhile.
                if let Err(why) = self.empty_topics(&set, &next.clusters, &topics).await {
                    let message = format!("{wrong}; emptying them to copy again: {why}");
                    return Ok(Step::wait(next, reason, message, Requeue::After(RECHECK)));
                }
                for name in &replay.jobs {
                    gone(jobs.delete(name, &DeleteParams::background()).await)?;
                }
                if let Some(r) = next.replay.as_mut() {
                    r.reruns += 1;
                }
                let message = format!(
                    "{wrong}; their topics were emptied and the workers copy the range again"
                );
                Ok(Step::wait(next, reason, message, Requeue::After(RECHECK)))
            }
            (true, Ok((all, None))) => {
                let written = all
                    .iter()
                    .flat_map(|(cluster, topics)| {
                        replay.handoff_offsets.iter().map(move |s| StreamOffsets {
                            cluster: Some(cluster.clone()),
                            stream: s.stream.clone(),
                            topic: s.topic.clone(),
                            offsets: topics
                                .get(&s.topic)
                                .map(|p| p.iter().map(|(k, v)| (k.to_string(), *v)).collect())
                                .unwrap_or_default(),
                        })
                    })
                    .collect();
                if let Some(r) = next.replay.as_mut() {
                    r.written = written;
                }
                next.progress = Some(with_bytes(
                    progress(replayed, replay.records_total, None, Some(replayed)),
                    bytes,
                    started.as_ref(),
                ));
                let message = format!(
                    "replayed {replayed} record(s); starting the backfill job `{}`",
                    derived_name(backfill)
                );
                Ok(Step::advance(next, BackfillPhase::Processing, message))
            }
            (_, Err(why)) => Ok(Step::wait(
                next,
                "ProgressUnreadable",
                format!("replay Jobs running; progress unreadable: {why}"),
                Requeue::After(RECHECK),
            )),
            (false, Ok(_)) => {
                let running = states
                    .iter()
                    .filter(|(_, s)| *s == JobState::Running)
                    .count();
                let mut message = format!(
                    "{replayed} of {} record(s) replayed; {running} worker(s) running",
                    replay.records_total
                );
                if let Some(why) = failed {
                    message.push_str(&format!(
                        "; {why}, so the range is copied again once the others are done"
                    ));
                }
                Ok(Step::wait(
                    next,
                    "Replaying",
                    message,
                    Requeue::After(RECHECK),
                ))
            }
        }
    }

    async fn processing(&self, backfill: &Backfill, status: BackfillStatus) -> Result<Step, Error> {
        let set_name = status.cluster_set.clone().unwrap_or_default();
        let (Some(live), Some(set)) = (self.pipeline(backfill), self.set(backfill, &set_name))
        else {
            let message = format!(
                "Pipeline `{}` or KafkaClusterSet `{set_name}` is gone",
                backfill.spec.pipeline_ref
            );
            return Ok(Step::fail(status, "ReferenceGone", message));
        };
        let written = status
            .replay
            .as_ref()
            .map(|r| r.written.clone())
            .unwrap_or_default();
        let namespace = backfill.namespace().unwrap_or_default();
        let config_maps: Api<ConfigMap> = Api::namespaced(self.shared.client.clone(), &namespace);
        let Some(document) = live_document(&config_maps, &set_name).await? else {
            return Ok(Step::wait(
                status,
                "DiscoveryMissing",
                format!("KafkaClusterSet `{set_name}` has not published its discovery document"),
                Requeue::After(RECHECK),
            ));
        };
        let inputs: Vec<String> = live.spec.inputs.iter().map(|i| i.stream.clone()).collect();
        let shown = view::view(&document, &inputs, &written);
        let view_map = ConfigMap {
            metadata: objects::owned_meta(backfill, view_name(backfill)),
            data: Some(BTreeMap::from([(
                DOCUMENT_KEY.to_string(),
                shown.to_json(),
            )])),
            ..ConfigMap::default()
        };
        apply_if_changed(&config_maps, view_map).await?;
        let derived = derive(backfill, &live);
        let pipelines: Api<Pipeline> = Api::namespaced(self.shared.client.clone(), &namespace);
        apply_if_changed(&pipelines, derived.clone()).await?;
        let topics: Vec<String> = written
            .iter()
            .map(|w| w.topic.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut done = true;
        let mut consumed = 0;
        for input in &derived.spec.inputs {
            let group = input.consumer_group.clone().unwrap_or_default();
            match self
                .committed(&set, &status.clusters, &group, &topics)
                .await
            {
                Ok(all) => {
                    let topic = written
                        .iter()
                        .find(|w| w.stream == input.stream)
                        .map(|w| w.topic.as_str());
                    let on: BTreeMap<String, BTreeMap<i32, i64>> = all
                        .into_iter()
                        .map(|(cluster, t)| {
                            let offsets = topic.and_then(|topic| t.get(topic));
                            (cluster, offsets.cloned().unwrap_or_default())
                        })
                        .collect();
                    consumed += on.values().flat_map(|p| p.values()).sum::<i64>();
                    let mine: Vec<StreamOffsets> = written
                        .iter()
                        .filter(|w| w.stream == input.stream)
                        .cloned()
                        .collect();
                    done &= view::consumed(&mine, &on);
                }
                Err(why) => {
                    return Ok(Step::wait(
                        status,
                        "ProgressUnreadable",
                        format!("backfill job running; progress unreadable: {why}"),
                        Requeue::After(RECHECK),
                    ))
                }
            }
        }
        let total: i64 = written.iter().flat_map(|w| w.offsets.values()).sum();
        let mut next = status;
        // The replay's figures stay; the job's lag, rate and ETA are added.
        let job = progress(consumed, total, next.phase_time.as_ref(), None);
        let mut shown = next.progress.clone().unwrap_or_default();
        shown.lag = Some((total - consumed).max(0));
        shown.rate = job.rate;
        shown.eta = job.eta;
        next.progress = Some(shown);
        if done {
            let message = format!("the backfill job consumed all {total} replayed record(s)");
            let then = match backfill.spec.completion {
                Completion::Handoff => BackfillPhase::HandingOff,
                Completion::OutputOnly => BackfillPhase::TearingDown,
            };
            return Ok(Step::advance(next, then, message));
        }
        Ok(Step::wait(
            next,
            "Processing",
            format!(
                "backfill job `{}` has consumed {consumed} of {total} record(s)",
                derived.name_any()
            ),
            Requeue::After(RECHECK),
        ))
    }

    /// Restarts the live pipeline where the replay ended: records the
    /// hand-off offsets as an offsets Savepoint of the live pipeline, asks
    /// the pipeline (by annotation) to restart from it, and waits until it
    /// has.
    async fn handing_off(
        &self,
        backfill: &Backfill,
        status: BackfillStatus,
    ) -> Result<Step, Error> {
        let Some(live) = self.pipeline(backfill) else {
            let message = format!("Pipeline `{}` is gone", backfill.spec.pipeline_ref);
            return Ok(Step::fail(status, "ReferenceGone", message));
        };
        let name = objects::handoff_name(backfill);
        let restarted = live
            .status
            .as_ref()
            .and_then(|s| s.handed_off_from.as_deref());
        let pipelines: Api<Pipeline> = Api::namespaced(
            self.shared.client.clone(),
            &backfill.namespace().unwrap_or_default(),
        );
        if restarted == Some(name.as_str()) {
            // The request is done: the live object goes back to what its
            // owner (or Git) wrote.
            if live
                .annotations()
                .contains_key(snapshots::HANDOFF_ANNOTATION)
            {
                request_handoff(&pipelines, &live, None).await?;
            }
            let message = format!(
                "Pipeline `{}` continues from the hand-off offsets (Savepoint `{name}`)",
                live.name_any()
            );
            return Ok(Step::advance(status, BackfillPhase::TearingDown, message));
        }
        // The annotation is set only once the Savepoint is recorded.
        if live.annotations().get(snapshots::HANDOFF_ANNOTATION) != Some(&name) {
            let offsets = objects::handoff_offsets(&status);
            if offsets.is_empty() {
                let message =
                    "the replay recorded no hand-off offsets on the source cluster".into();
                return Ok(Step::fail(status, "NoHandoffOffsets", message));
            }
            snapshots::record_handoff(&self.shared.client, &live, &name, offsets).await?;
            request_handoff(&pipelines, &live, Some(&name)).await?;
        }
        Ok(Step::wait(
            status,
            "HandingOff",
            format!(
                "waiting for Pipeline `{}` to restart from Savepoint `{name}` at the offsets where the replay ended",
                live.name_any()
            ),
            Requeue::After(RECHECK),
        ))
    }

    async fn tearing_down(
        &self,
        backfill: &Backfill,
        status: BackfillStatus,
    ) -> Result<Step, Error> {
        let namespace = backfill.namespace().unwrap_or_default();
        let params = DeleteParams::background();
        let pipelines: Api<Pipeline> = Api::namespaced(self.shared.client.clone(), &namespace);
        let job = derived_name(backfill);
        // The derived job stops first, pods and all: they read the extra
        // clusters and may still write output. Its pods outlive the
        // Pipeline while the garbage collector removes its StatefulSet.
        let stopping = match gone(pipelines.delete(&job, &params).await)? {
            false => Some(format!("stopping the backfill job `{job}`")),
            true => match consumer::pods_of(&self.shared.client, &namespace, &job)
                .await?
                .len()
            {
                0 => None,
                left => Some(format!(
                    "waiting for the {left} pod(s) of the backfill job `{job}` to stop"
                )),
            },
        };
        if let Some(message) = stopping {
            return Ok(Step::wait(
                status,
                "TearingDown",
                message,
                Requeue::After(RECHECK),
            ));
        }
        let keep =
            crate::duration::parse_duration(&backfill.spec.teardown_after).unwrap_or_default();
        let kept = since(status.phase_time.as_ref());
        if !status.clusters.is_empty() && kept < keep.as_secs_f64() {
            let left = Duration::from_secs_f64(keep.as_secs_f64() - kept);
            return Ok(Step::wait(
                status,
                "TearingDown",
                format!(
                    "keeping the extra clusters for spec.teardownAfter ({})",
                    backfill.spec.teardown_after
                ),
                Requeue::After(left.max(Duration::from_secs(1))),
            ));
        }
        let mut next = status;
        if !next.clusters.is_empty() {
            // Released: the set no longer counts them as members and retires them.
            let released = std::mem::take(&mut next.clusters).join(", ");
            return Ok(Step::wait(
                next,
                "TearingDown",
                format!("released cluster(s) {released}; waiting for the set to retire them"),
                Requeue::After(RECHECK),
            ));
        }
        let set_name = next.cluster_set.clone().unwrap_or_default();
        let lingering: Vec<String> = self
            .set(backfill, &set_name)
            .and_then(|s| s.status)
            .map(|s| {
                s.clusters
                    .into_iter()
                    .filter(|c| c.owner.as_deref() == Some(&backfill.name_any()))
                    .map(|c| c.name)
                    .collect()
            })
            .unwrap_or_default();
        if !lingering.is_empty() {
            return Ok(Step::wait(
                next,
                "TearingDown",
                format!(
                    "waiting for KafkaClusterSet `{set_name}` to retire {}",
                    lingering.join(", ")
                ),
                Requeue::After(RECHECK),
            ));
        }
        let jobs: Api<Job> = Api::namespaced(self.shared.client.clone(), &namespace);
        let config_maps: Api<ConfigMap> = Api::namespaced(self.shared.client.clone(), &namespace);
        let job_names = next
            .replay
            .as_ref()
            .map(|r| r.jobs.clone())
            .unwrap_or_default();
        for name in &job_names {
            gone(jobs.delete(name, &params).await)?;
        }
        gone(
            config_maps
                .delete(&objects::plan_name(backfill), &params)
                .await,
        )?;
        gone(config_maps.delete(&view_name(backfill), &params).await)?;
        next.completion_time = Some(now());
        let (phase, message) = match &next.failure {
            Some(failure) => (BackfillPhase::Failed, failure.clone()),
            None => (BackfillPhase::Completed, "the backfill job consumed the replayed range; extra clusters, Jobs and plan removed".to_string()),
        };
        Ok(Step::advance(next, phase, message))
    }
}

/// Why a finished copy of `total` records cannot be used, if it cannot: the
/// workers recorded `replayed` records, and `foreign` partitions hold
/// records after theirs. A condition reason and what is wrong.
fn flaw(replayed: i64, total: i64, foreign: &[String]) -> Option<(&'static str, String)> {
    if !foreign.is_empty() {
        let shown = foreign.iter().take(3).cloned().collect::<Vec<_>>();
        let what = format!(
            "{} partition(s) hold records after the last one copied, e.g. {}",
            foreign.len(),
            shown.join(", ")
        );
        Some(("ReplayDuplicated", what))
    } else if replayed > total {
        let what = "records were written more than once".to_string();
        Some(("ReplayDuplicated", what))
    } else if replayed < total {
        let what = "records are missing (a broker lost them)".to_string();
        Some(("ReplayIncomplete", what))
    } else {
        None
    }
}

/// The extra clusters `names` as the set's status records them, each with
/// a connection to it.
fn extra_connections(
    set: &KafkaClusterSet,
    names: &[String],
) -> Result<Vec<(String, ClusterConnection)>, String> {
    let recorded = set
        .status
        .as_ref()
        .map(|s| s.clusters.as_slice())
        .unwrap_or_default();
    names
        .iter()
        .map(|name| {
            recorded
                .iter()
                .find(|c| &c.name == name)
                .and_then(|c| c.bootstrap_servers.as_deref())
                .map(|bootstrap| (name.clone(), ClusterConnection::plaintext(bootstrap)))
                .ok_or_else(|| format!("cluster `{name}` has no address in the set's status"))
        })
        .collect()
}

fn stored_plan(config_map: &ConfigMap) -> Result<ReplayPlan, Error> {
    let text = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(objects::PLAN_KEY))
        .ok_or(Error::MissingObjectField("data.plan.json"))?;
    Ok(serde_json::from_str(text)?)
}

async fn live_document(
    api: &Api<ConfigMap>,
    set: &str,
) -> Result<Option<DiscoveryDocument>, Error> {
    let Some(map) = api.get_opt(&config_map_name(set)).await? else {
        return Ok(None);
    };
    Ok(map
        .data
        .as_ref()
        .and_then(|d| d.get(DOCUMENT_KEY))
        .and_then(|text| serde_json::from_str(text).ok()))
}

/// The backfill job: the live Pipeline's spec, running, with the backfill's
/// parallelism, its own consumer groups and the backfill's discovery view,
/// owned by the Backfill.
pub fn derive(backfill: &Backfill, live: &Pipeline) -> Pipeline {
    let mut spec: PipelineSpec = live.spec.clone();
    spec.state = PipelineState::Running;
    spec.restore_from = None;
    spec.savepoints = None;
    spec.slo = None;
    spec.discovery = Some(view_name(backfill));
    for input in &mut spec.inputs {
        let group = input
            .consumer_group
            .clone()
            .unwrap_or_else(|| format!("{}-{}", live.name_any(), input.stream));
        input.consumer_group = Some(format!("{group}-{}", backfill.name_any()));
    }
    if let Some(consumer) = spec.engine.consumer.as_mut() {
        consumer.replicas = backfill.spec.capacity.parallelism;
    }
    let mut pipeline = Pipeline::new(&derived_name(backfill), spec);
    pipeline.metadata = objects::owned_meta(backfill, derived_name(backfill));
    pipeline
}

/// Asks the live pipeline to restart from the hand-off Savepoint `savepoint`
/// (its annotation), or withdraws the request (`None`).
async fn request_handoff(
    pipelines: &Api<Pipeline>,
    live: &Pipeline,
    savepoint: Option<&str>,
) -> Result<(), Error> {
    let patch = serde_json::json!({"metadata": {"annotations": {snapshots::HANDOFF_ANNOTATION: savepoint}}});
    pipelines
        .patch(
            &live.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn progress_and_phase_are_metrics() {
        let backfill: Backfill = serde_json::from_value(json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "Backfill",
            "metadata": {"name": "rerun", "namespace": "shop"},
            "spec": {"pipelineRef": "p", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"},
            "status": {"phase": "Replaying", "progress": {"recordsReplayed": 250, "recordsTotal": 1000, "rate": 50.0, "bytesReplayed": 25000}}
        }))
        .expect("backfill");
        let metrics = Metrics::new("test").expect("metrics");
        record_metrics(
            &metrics,
            &backfill,
            backfill.status.as_ref().expect("status"),
        );
        let text = metrics.render().expect("render");
        for line in [
            r#"kappa_backfill_records{backfill="rerun",kind="replayed",namespace="shop"} 250"#,
            r#"kappa_backfill_records{backfill="rerun",kind="range",namespace="shop"} 1000"#,
            r#"kappa_backfill_records_per_second{backfill="rerun",namespace="shop"} 50"#,
            r#"kappa_backfill_replayed_bytes{backfill="rerun",namespace="shop"} 25000"#,
            r#"kappa_backfill_phase{backfill="rerun",namespace="shop",phase="Replaying"} 1"#,
            r#"kappa_backfill_phase{backfill="rerun",namespace="shop",phase="Pending"} 0"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        let mut other = backfill.clone();
        other.metadata.name = Some("kept".into());
        record_metrics(&metrics, &other, other.status.as_ref().expect("status"));
        forget_metrics(
            &metrics,
            &Present::new(
                None,
                BTreeSet::from([("shop".to_string(), "kept".to_string())]),
            ),
        );
        let text = metrics.render().expect("render");
        assert!(!text.contains(r#"backfill="rerun""#), "{text}");
        assert!(
            text.contains(
                r#"kappa_backfill_phase{backfill="kept",namespace="shop",phase="Replaying"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn a_copy_is_used_only_when_it_holds_exactly_the_range_and_nothing_else() {
        assert_eq!(flaw(1000, 1000, &[]), None);
        let (reason, what) = flaw(999, 1000, &[]).expect("missing");
        assert_eq!(reason, "ReplayIncomplete");
        assert!(what.contains("missing"), "{what}");
        assert_eq!(flaw(1001, 1000, &[]).map(|f| f.0), Some("ReplayDuplicated"));
        // The workers' count can be right while another writer added records.
        let foreign: Vec<String> = (0..5).map(|p| format!("b-0/orders/{p}")).collect();
        let (reason, what) = flaw(1000, 1000, &foreign).expect("foreign");
        assert_eq!(reason, "ReplayDuplicated");
        assert!(what.starts_with("5 partition(s)"), "{what}");
        assert!(
            what.contains("b-0/orders/2") && !what.contains("b-0/orders/3"),
            "{what}"
        );
    }

    #[test]
    fn eta_follows_the_average_rate() {
        let started = Time(Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(10));
        let shown = progress(500, 1_000, Some(&started), None);
        assert_eq!(shown.percent.as_deref(), Some("50%"));
        let rate = shown.rate.expect("a rate");
        assert!((45.0..=50.0).contains(&rate), "{rate}");
        assert!(
            matches!(shown.eta.as_deref(), Some("10s" | "11s")),
            "{:?}",
            shown.eta
        );
        let shown = with_bytes(shown, Some(50_000), Some(&started));
        let per_second = shown.bytes_per_second.expect("a byte rate");
        assert!((4_500.0..=5_000.0).contains(&per_second), "{per_second}");
        assert_eq!(
            with_bytes(shown, None, Some(&started)).bytes_per_second,
            None
        );
    }
}
