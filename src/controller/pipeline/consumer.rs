//! The consumer engine: the pipeline's pod template run as a StatefulSet,
//! with the discovery ConfigMap of its set mounted and its streams, consumer
//! groups, pod name and replica count in the environment, so that an
//! application using the routing client (`docs/client.md`) needs no other
//! configuration. A StatefulSet, not a Deployment: each replica reads the
//! share of the partitions its ordinal names ([`crate::client::Member`]),
//! and a StatefulSet never runs two pods of one ordinal, not even while it
//! replaces them, so no partition has two readers of one group.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodSpec, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::DeleteParams;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};

use super::lag_book::{LagBook, MEASURE_EVERY};
use super::reason::Reason;
use crate::api::pipeline::{
    ConsumerEngine, JobState, JobStatus, Pipeline, PipelinePhase, PipelineStatus,
};
use crate::api::savepoint::{Savepoint, SavepointPhase};
use crate::conditions::{ConditionStatus, READY};
use crate::controller::common::offsets::ReadView;
use crate::controller::common::pipelines::{groups, owner, pods_of, PIPELINE_LABEL};
use crate::controller::common::snapshots::HANDOFF_ANNOTATION;
use crate::controller::pod_security::restrict;
use crate::controller::status::{own_fields, Outcome, Requeue, Wanted};
use crate::controller::{apply_if_changed, lookup};
use crate::discovery::config_map_name;
use crate::error::Error;
use crate::kafka::KafkaAdmin;

/// Where the discovery ConfigMap is mounted in every container.
pub const DISCOVERY_DIR: &str = "/etc/kappa/discovery";
/// Pod template annotation carrying `restartNonce`.
const RESTART_ANNOTATION: &str = "kappa.dev/restart-nonce";
/// The volume that mounts it.
const DISCOVERY_VOLUME: &str = "kappa-discovery";
/// How often a StatefulSet that is rolling out is looked at besides its
/// changes, which wake the pipeline (every pod that becomes ready or goes
/// changes its status). A safety net only: every such pipeline looked at
/// every 10 s kept the controller busy with a thousand of them whose pods
/// could not start, and kube-runtime's queue then never got round to some
/// other objects at all.
const ROLLING_RECHECK: Duration = Duration::from_secs(60);
/// How often a restore waiting for its Savepoint, or a pipeline waiting for
/// its pods to stop, looks again.
const STOPPING_RECHECK: Duration = Duration::from_secs(2);
/// The replica count every container is told.
const REPLICAS_ENV: &str = "KAPPA_REPLICAS";
/// An environment variable set to `value`.
fn value(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    }
}

/// An environment variable set to field `path` of the pod.
fn pod_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// Sets `env` in every container of `pod`, over variables of the same names.
fn set_env(pod: &mut PodSpec, env: &[EnvVar]) {
    for container in &mut pod.containers {
        let own = container.env.get_or_insert_with(Vec::new);
        own.retain(|e| !env.iter().any(|ours| ours.name == e.name));
        own.extend(env.iter().cloned());
    }
}

/// The environment every container gets.
fn environment(pipeline: &Pipeline) -> Vec<EnvVar> {
    let name = pipeline.name_any();
    let spec = &pipeline.spec;
    let groups = groups(&name, spec);
    let mut env = vec![
        value("KAPPA_DISCOVERY_DIR", DISCOVERY_DIR.into()),
        pod_field("KAPPA_NAMESPACE", "metadata.namespace"),
        value("KAPPA_PIPELINE", name.clone()),
        value(
            "KAPPA_INPUTS",
            groups
                .iter()
                .map(|(stream, group)| format!("{stream}={group}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        value(
            "KAPPA_OUTPUTS",
            spec.outputs
                .iter()
                .map(|o| o.stream.clone())
                .collect::<Vec<_>>()
                .join(","),
        ),
    ];
    if let Some((stream, group)) = groups.first() {
        env.push(value("KAPPA_STREAM", stream.clone()));
        env.push(value("KAPPA_GROUP", group.clone()));
    }
    env
}

/// The StatefulSet that runs `pipeline` with `engine` on `replicas` pods;
/// every pod learns its name and the engine's replica count, which split
/// the partitions among them.
pub fn stateful_set(
    pipeline: &Pipeline,
    engine: &ConsumerEngine,
    replicas: i32,
) -> Result<StatefulSet, Error> {
    let name = pipeline.name_any();
    let labels = BTreeMap::from([
        (PIPELINE_LABEL.to_string(), name.clone()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "kappa-operator".to_string(),
        ),
    ]);
    let mut template = engine.template.clone();
    let metadata = template.metadata.get_or_insert_with(ObjectMeta::default);
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(labels.clone());
    if let Some(nonce) = pipeline.spec.restart_nonce {
        // A new nonce is a new pod template: the StatefulSet rolls its pods.
        metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(RESTART_ANNOTATION.to_string(), nonce.to_string());
    }
    let pod = template.spec.get_or_insert_with(Default::default);
    mount_discovery(pipeline, pod);
    set_env(
        pod,
        &[
            pod_field("KAPPA_POD_NAME", "metadata.name"),
            value(REPLICAS_ENV, engine.replicas.to_string()),
        ],
    );
    restrict(pod);
    Ok(StatefulSet {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: pipeline.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner(pipeline)?]),
            ..ObjectMeta::default()
        },
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([(PIPELINE_LABEL.to_string(), name.clone())])),
                ..LabelSelector::default()
            },
            // Pods start and stop together; only a rollout goes one by one.
            pod_management_policy: Some("Parallel".into()),
            // Required by API servers before 1.30; no Service is needed.
            service_name: Some(name),
            template,
            ..StatefulSetSpec::default()
        },
        status: None,
    })
}

/// Mounts the discovery ConfigMap of the pipeline's set into every container
/// of `pod`, and sets the streams and groups in their environment.
pub fn mount_discovery(pipeline: &Pipeline, pod: &mut PodSpec) {
    pod.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: DISCOVERY_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: pipeline
                .spec
                .discovery
                .clone()
                .unwrap_or_else(|| config_map_name(&pipeline.spec.cluster_set)),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    });
    for container in &mut pod.containers {
        container
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: DISCOVERY_VOLUME.into(),
                mount_path: DISCOVERY_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
    }
    set_env(pod, &environment(pipeline));
}

/// What the consumer engine reads and writes besides the StatefulSet.
pub struct ConsumerDeps<'a> {
    /// The API server.
    pub client: &'a Client,
    /// The Kafka clusters' admin API.
    pub admin: &'a dyn KafkaAdmin,
    /// Savepoints, for `restoreFrom`.
    pub savepoints: &'a Store<DeserializeGuard<Savepoint>>,
    /// The lag last measured.
    pub lag: &'a LagBook,
}

/// Why a pipeline restores from a Savepoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RestoreFor {
    /// `spec.restoreFrom` names it.
    Spec,
    /// A Backfill's hand-off names it (annotation `kappa.dev/handoff-savepoint`).
    Handoff,
}

/// The offsets Savepoint that `restoreFrom`, or else a Backfill's
/// hand-off, names and the pipeline has not yet restored from.
fn pending_restore(pipeline: &Pipeline) -> Option<(&str, RestoreFor)> {
    let status = pipeline.status.as_ref();
    let spec = pipeline
        .spec
        .restore_from
        .as_ref()
        .and_then(|r| r.savepoint.as_deref())
        .filter(|wanted| status.and_then(|s| s.restored_from.as_deref()) != Some(*wanted));
    if let Some(wanted) = spec {
        return Some((wanted, RestoreFor::Spec));
    }
    let handoff = pipeline.annotations().get(HANDOFF_ANNOTATION)?.as_str();
    (status.and_then(|s| s.handed_off_from.as_deref()) != Some(handoff))
        .then_some((handoff, RestoreFor::Handoff))
}

/// Applies the StatefulSet with `replicas`.
async fn apply(
    client: &Client,
    pipeline: &Pipeline,
    engine: &ConsumerEngine,
    replicas: i32,
) -> Result<StatefulSet, Error> {
    let namespace = pipeline
        .namespace()
        .ok_or(Error::MissingObjectField("metadata.namespace"))?;
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    apply_if_changed(&api, stateful_set(pipeline, engine, replicas)?).await
}

/// The pipeline's pods that still exist, terminating ones included (a
/// controller no longer counts those, but they may still read and commit).
async fn pods(client: &Client, pipeline: &Pipeline) -> Result<Vec<Pod>, Error> {
    let namespace = pipeline.namespace().unwrap_or_default();
    pods_of(client, &namespace, &pipeline.name_any()).await
}

/// Container restarts over `pods`.
fn restarts(pods: &[Pod]) -> i64 {
    pods.iter()
        .filter_map(|pod| pod.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .map(|container| i64::from(container.restart_count))
        .sum()
}

/// Restores the groups' offsets from Savepoint `name`: the StatefulSet is
/// scaled to zero, and once no pod of it is left the snapshot's offsets are
/// committed. Returns the outcome to report while that is not done yet.
async fn restore(
    deps: &ConsumerDeps<'_>,
    pipeline: &Pipeline,
    engine: &ConsumerEngine,
    (name, purpose): (&str, RestoreFor),
    status: &mut PipelineStatus,
) -> Result<Option<Outcome>, Error> {
    let waiting = |status: &mut PipelineStatus, ready: Wanted, requeue| {
        status.phase = Some(PipelinePhase::Restoring);
        Ok(Some(Outcome {
            conditions: vec![ready],
            fields: own_fields(serde_json::to_value(&*status)?),
            requeue,
        }))
    };
    let found = lookup(deps.savepoints, pipeline, name);
    let snapshot = found
        .as_deref()
        .and_then(|g| g.0.as_ref().ok())
        .and_then(|s| s.status.as_ref())
        .filter(|s| s.phase == Some(SavepointPhase::Completed));
    let Some(snapshot) = snapshot else {
        let ready = Wanted::new(
            READY,
            ConditionStatus::Unknown,
            Reason::RestoreSavepointNotReady,
            format!("waiting for Savepoint `{name}` to complete before restoring from it"),
        );
        return waiting(status, ready, Requeue::After(STOPPING_RECHECK));
    };
    apply(deps.client, pipeline, engine, 0).await?;
    let left = pods(deps.client, pipeline).await?.len();
    if left > 0 {
        let ready = Wanted::new(
            READY,
            ConditionStatus::Unknown,
            Reason::Phase(PipelinePhase::Restoring),
            format!("scaled to zero; waiting for {left} pod(s) to stop before committing the offsets of Savepoint `{name}`"),
        );
        return waiting(status, ready, Requeue::After(STOPPING_RECHECK));
    }
    let restored = async {
        let view = ReadView::of(deps.client, pipeline).await?;
        view.restore(deps.admin, pipeline, &snapshot.offsets).await
    }
    .await;
    if let Err(error) = restored {
        let ready = Wanted::new(
            READY,
            ConditionStatus::False,
            Reason::Offsets(error.reason()),
            format!("restoring the offsets of Savepoint `{name}`: {error}"),
        );
        return waiting(status, ready, Requeue::Backoff);
    }
    tracing::info!(savepoint = %name, ?purpose, "consumer groups moved to the savepoint's offsets");
    let event = match purpose {
        RestoreFor::Spec => {
            status.restored_from = Some(name.to_string());
            "Restored"
        }
        RestoreFor::Handoff => {
            status.handed_off_from = Some(name.to_string());
            "HandedOff"
        }
    };
    super::remember(status, pipeline, event, Some(name.to_string()));
    Ok(None)
}

/// The replica count `pod` was started with, as its first container was told.
fn told_replicas(pod: &Pod) -> Option<i32> {
    let container = pod.spec.as_ref()?.containers.first()?;
    let env = container
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == REPLICAS_ENV)?;
    env.value.as_deref()?.parse().ok()
}

/// Pods that split the partitions by another replica count than `replicas`
/// (or not at all: a Deployment's, from before pipelines ran as
/// StatefulSets). While one runs, pods of the new count would read some
/// partitions twice or miss some.
fn other_split(pods: &[Pod], replicas: i32) -> usize {
    pods.iter()
        .filter(|pod| told_replicas(pod) != Some(replicas))
        .count()
}

/// Scales the StatefulSet to zero and removes a Deployment left from before
/// pipelines ran as StatefulSets, so that `mismatched` pods stop before the
/// new replica count splits the partitions.
async fn reshard(
    deps: &ConsumerDeps<'_>,
    pipeline: &Pipeline,
    engine: &ConsumerEngine,
    mismatched: usize,
    mut status: PipelineStatus,
) -> Result<Outcome, Error> {
    let name = pipeline.name_any();
    let namespace = pipeline.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(deps.client.clone(), &namespace);
    if let Some(old) = deployments.get_opt(&name).await? {
        let ours = old
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == pipeline.metadata.uid.as_ref());
        if ours {
            deployments
                .delete(&name, &DeleteParams::background())
                .await?;
        }
    }
    apply(deps.client, pipeline, engine, 0).await?;
    status.phase = Some(PipelinePhase::Resharding);
    let ready = Wanted::new(
        READY,
        ConditionStatus::Unknown,
        Reason::Phase(PipelinePhase::Resharding),
        format!(
            "{mismatched} pod(s) read a share of the partitions for another replica count; waiting for them to stop before {} replica(s) split them",
            engine.replicas
        ),
    );
    Ok(Outcome {
        conditions: vec![ready],
        fields: own_fields(serde_json::to_value(&status)?),
        requeue: Requeue::After(STOPPING_RECHECK),
    })
}

/// Applies the StatefulSet (after a pending restore, or once the pods of
/// another replica count are gone) and reports how far it has rolled out
/// and how far behind its inputs it is.
pub async fn run(
    deps: &ConsumerDeps<'_>,
    pipeline: &Pipeline,
    engine: &ConsumerEngine,
) -> Result<Outcome, Error> {
    // A restore scales the app to zero and commits the snapshot's offsets
    // again: it must not run twice because this reconcile got a cached copy
    // from before the status write that recorded it (the StatefulSet it
    // scaled back up wakes the pipeline at once). Seen: the new pods were
    // deleted as they started.
    let current;
    let pipeline = match pending_restore(pipeline) {
        Some(_) => {
            let namespace = pipeline.namespace().unwrap_or_default();
            let api: Api<Pipeline> = Api::namespaced(deps.client.clone(), &namespace);
            current = api.get(&pipeline.name_any()).await?;
            &current
        }
        None => pipeline,
    };
    let mut pipeline_status = pipeline.status.clone().unwrap_or_default();
    if let Some(pending) = pending_restore(pipeline) {
        if let Some(waiting) =
            restore(deps, pipeline, engine, pending, &mut pipeline_status).await?
        {
            return Ok(waiting);
        }
    }
    let wanted = match pipeline.spec.state {
        JobState::Running => engine.replicas,
        JobState::Suspended => 0,
    };
    // One list serves both: applying only starts pods' deletion, so what
    // it finds before the apply is still there after it.
    let pods = pods(deps.client, pipeline).await?;
    let mismatched = other_split(&pods, engine.replicas);
    if wanted > 0 && mismatched > 0 {
        return reshard(deps, pipeline, engine, mismatched, pipeline_status).await;
    }
    let applied = apply(deps.client, pipeline, engine, wanted).await?;
    let name = pipeline.name_any();
    let status = applied.status.unwrap_or_default();
    let current = applied.metadata.generation == status.observed_generation;
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas;
    let stopping = match wanted {
        0 => pods.len(),
        _ => 0,
    };
    let rolled_out =
        current && ready == wanted && updated == wanted && total == wanted && stopping == 0;
    pipeline_status.job = Some(JobStatus {
        id: Some(name.clone()),
        state: Some(format!("{ready}/{wanted} ready")),
        restarts: Some(restarts(&pods)),
        ..JobStatus::default()
    });
    // Measured at most every MEASURE_EVERY; status shows it when due and
    // changed meaningfully (see lag_book).
    let key = (pipeline.namespace().unwrap_or_default(), name.clone());
    let now = Instant::now();
    let measured = deps
        .lag
        .reading(&key, now, async {
            let lag = async {
                let view = ReadView::of(deps.client, pipeline).await?;
                view.lag(deps.admin, pipeline).await
            }
            .await;
            lag.inspect_err(|error| {
                tracing::warn!(pipeline = %name, reason = error.reason(), %error, "lag unknown");
            })
            .ok()
        })
        .await;
    let shown = pipeline_status
        .total_lag_records
        .map(|_| pipeline_status.lag.clone());
    if deps.lag.show(&key, now, &shown) {
        pipeline_status.total_lag_records = measured
            .as_ref()
            .map(|lag| lag.iter().map(|l| l.records).sum());
        pipeline_status.lag = measured.unwrap_or_default();
    }
    let (phase, ready_condition, requeue) = match (pipeline.spec.state, rolled_out) {
        (JobState::Suspended, true) => (
            PipelinePhase::Suspended,
            Wanted::new(READY, ConditionStatus::True, Reason::Phase(PipelinePhase::Suspended), format!("StatefulSet {name} is scaled to zero; its state is its groups' committed offsets")),
            Requeue::After(MEASURE_EVERY),
        ),
        (JobState::Running, true) => (
            PipelinePhase::Running,
            Wanted::new(READY, ConditionStatus::True, Reason::ReplicasReady, format!("StatefulSet {name}: {ready}/{wanted} replicas ready")),
            Requeue::After(MEASURE_EVERY),
        ),
        (JobState::Suspended, false) if stopping > 0 => (
            PipelinePhase::Suspending,
            Wanted::new(READY, ConditionStatus::Unknown, Reason::PodsStopping, format!("StatefulSet {name} is scaled to zero; waiting for {stopping} pod(s) to stop")),
            Requeue::After(STOPPING_RECHECK),
        ),
        (_, false) => (
            PipelinePhase::Deploying,
            Wanted::new(READY, ConditionStatus::Unknown, Reason::RollingOut, format!("StatefulSet {name}: {ready}/{wanted} replicas ready, {updated} updated")),
            Requeue::After(ROLLING_RECHECK),
        ),
    };
    pipeline_status.phase = Some(phase);
    Ok(Outcome {
        conditions: vec![ready_condition],
        fields: own_fields(serde_json::to_value(&pipeline_status)?),
        requeue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pipeline(spec: serde_json::Value) -> Pipeline {
        let mut pipeline: Pipeline = serde_json::from_value(json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "Pipeline",
            "metadata": {"name": "totals", "namespace": "apps", "uid": "u-1"},
            "spec": spec,
        }))
        .expect("pipeline");
        pipeline.metadata.generation = Some(1);
        pipeline
    }

    #[test]
    fn restore_from_the_spec_comes_before_a_handoff_and_each_happens_once() {
        let mut pipeline = pipeline(json!({
            "clusterSet": "events", "inputs": [{"stream": "orders"}],
            "restoreFrom": {"savepoint": "snap"},
            "engine": {"type": "consumer", "consumer": {"template": {}}}
        }));
        pipeline
            .annotations_mut()
            .insert(HANDOFF_ANNOTATION.into(), "bf-handoff-1".into());
        assert_eq!(pending_restore(&pipeline), Some(("snap", RestoreFor::Spec)));
        let status = pipeline.status.get_or_insert_with(Default::default);
        status.restored_from = Some("snap".into());
        assert_eq!(
            pending_restore(&pipeline),
            Some(("bf-handoff-1", RestoreFor::Handoff))
        );
        let status = pipeline.status.get_or_insert_with(Default::default);
        status.handed_off_from = Some("bf-handoff-1".into());
        assert_eq!(pending_restore(&pipeline), None);
    }

    #[test]
    fn the_stateful_set_mounts_discovery_and_names_streams_groups_and_replicas() {
        let pipeline = pipeline(json!({
            "clusterSet": "events",
            "inputs": [{"stream": "orders"}, {"stream": "refunds", "consumerGroup": "r"}],
            "outputs": [{"stream": "totals"}],
            "restartNonce": 7,
            "engine": {"type": "consumer", "consumer": {"replicas": 2, "template": {"spec": {
                "containers": [{"name": "app", "image": "app:1",
                                "env": [{"name": "KAPPA_GROUP", "value": "mine"}]}]}}}}
        }));
        let engine = pipeline.spec.engine.consumer.clone().expect("engine");
        let made = stateful_set(&pipeline, &engine, 0).expect("stateful set");
        let spec = made.spec;
        assert_eq!(spec.replicas, Some(0));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let template = spec.template;
        let annotations = template.metadata.and_then(|m| m.annotations);
        assert_eq!(
            annotations.and_then(|a| a.get(RESTART_ANNOTATION).cloned()),
            Some("7".into())
        );
        let pod = template.spec.expect("pod");
        let volume = &pod.volumes.expect("volumes")[0];
        assert_eq!(
            volume.config_map.as_ref().map(|c| c.name.as_str()),
            Some("events-discovery")
        );
        let container = &pod.containers[0];
        let env: BTreeMap<&str, Option<&str>> = container
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.as_deref()))
            .collect();
        assert_eq!(env["KAPPA_INPUTS"], Some("orders=totals-orders,refunds=r"));
        assert_eq!(env["KAPPA_OUTPUTS"], Some("totals"));
        assert_eq!(env["KAPPA_GROUP"], Some("totals-orders"), "ours win");
        assert_eq!(env["KAPPA_DISCOVERY_DIR"], Some(DISCOVERY_DIR));
        assert_eq!(
            env[REPLICAS_ENV],
            Some("2"),
            "the engine's count, also while scaled to zero"
        );
        let pod_name = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "KAPPA_POD_NAME");
        let field = pod_name
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(field, Some("metadata.name"));
        assert!(!env.contains_key("KAPPA_CLUSTER_SET"));
        let mounts = container.volume_mounts.as_ref().expect("mounts");
        assert_eq!(mounts[0].mount_path, DISCOVERY_DIR);
        assert_eq!(made.metadata.owner_references.expect("owner")[0].uid, "u-1");
    }

    #[test]
    fn pods_told_another_replica_count_or_none_split_otherwise() {
        let pod = |env: serde_json::Value| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "totals-0"},
                "spec": {"containers": [{"name": "app", "env": env}]}
            }))
            .expect("pod")
        };
        let pods = [
            pod(json!([{"name": REPLICAS_ENV, "value": "2"}])),
            pod(json!([{"name": REPLICAS_ENV, "value": "3"}])),
            pod(json!([{"name": "KAPPA_GROUP", "value": "g"}])),
        ];
        assert_eq!(other_split(&pods, 2), 2);
        assert_eq!(other_split(&pods[..1], 2), 0);
        assert_eq!(other_split(&[], 3), 0);
    }
}
