//! The consumer engine: the pipeline's pod template run as a Deployment,
//! with the discovery ConfigMap of its set mounted and its streams and
//! consumer groups in the environment, so that an application using the
//! routing client (`docs/client.md`) needs no other configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, EnvVar, EnvVarSource, ObjectFieldSelector, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::pipeline::{ConsumerEngine, JobState, JobStatus, Pipeline, PipelineSpec};
use crate::conditions::READY;
use crate::controller::verdict::{own_fields, Outcome, Requeue, Wanted, FIELD_MANAGER};
use crate::discovery::config_map_name;
use crate::error::Error;

/// Where the discovery ConfigMap is mounted in every container.
pub const DISCOVERY_DIR: &str = "/etc/kappa/discovery";
/// The volume that mounts it.
const DISCOVERY_VOLUME: &str = "kappa-discovery";
/// Label naming the pipeline a Deployment runs.
pub const PIPELINE_LABEL: &str = "kappa.dev/pipeline";
/// How often a Deployment that is rolling out is looked at (its changes also wake the pipeline).
const ROLLING_RECHECK: Duration = Duration::from_secs(10);

/// The consumer group of each input, `<pipeline>-<stream>` unless set.
pub fn groups(name: &str, spec: &PipelineSpec) -> Vec<(String, String)> {
    spec.inputs
        .iter()
        .map(|input| {
            let group = input
                .consumer_group
                .clone()
                .unwrap_or_else(|| format!("{name}-{}", input.stream));
            (input.stream.clone(), group)
        })
        .collect()
}

/// The environment every container gets.
fn environment(pipeline: &Pipeline) -> Vec<EnvVar> {
    let name = pipeline.name_any();
    let spec = &pipeline.spec;
    let groups = groups(&name, spec);
    let value = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    };
    let mut env = vec![
        value("KAPPA_DISCOVERY_DIR", DISCOVERY_DIR.into()),
        EnvVar {
            name: "KAPPA_NAMESPACE".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.namespace".into(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        },
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

/// The Deployment that runs `pipeline` with `engine`.
pub fn deployment(pipeline: &Pipeline, engine: &ConsumerEngine) -> Result<Deployment, Error> {
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
    let pod = template.spec.get_or_insert_with(Default::default);
    pod.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: DISCOVERY_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map_name(&pipeline.spec.cluster_set),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    });
    let env = environment(pipeline);
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
        let own = container.env.get_or_insert_with(Vec::new);
        own.retain(|e| !env.iter().any(|ours| ours.name == e.name));
        own.extend(env.iter().cloned());
    }
    let replicas = match pipeline.spec.state {
        JobState::Running => engine.replicas,
        JobState::Suspended => 0,
    };
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: pipeline.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner(pipeline)?]),
            ..ObjectMeta::default()
        },
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([(PIPELINE_LABEL.to_string(), name)])),
                ..LabelSelector::default()
            },
            template,
            ..DeploymentSpec::default()
        },
        status: None,
    })
}

fn owner(pipeline: &Pipeline) -> Result<OwnerReference, Error> {
    Ok(OwnerReference {
        api_version: Pipeline::api_version(&()).into_owned(),
        kind: Pipeline::kind(&()).into_owned(),
        name: pipeline.name_any(),
        uid: pipeline
            .uid()
            .ok_or(Error::MissingObjectField("metadata.uid"))?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// Applies the Deployment and reports how far it has rolled out.
pub async fn run(
    client: &Client,
    pipeline: &Pipeline,
    engine: &ConsumerEngine,
) -> Result<Outcome, Error> {
    let desired = deployment(pipeline, engine)?;
    let namespace = pipeline
        .namespace()
        .ok_or(Error::MissingObjectField("metadata.namespace"))?;
    let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let name = pipeline.name_any();
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await?;
    let wanted = desired.spec.replicas.unwrap_or(0);
    let status = applied.status.unwrap_or_default();
    let current = applied.metadata.generation == status.observed_generation;
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let rolled_out = current && ready == wanted && updated == wanted && total == wanted;
    let mut pipeline_status = pipeline.status.clone().unwrap_or_default();
    pipeline_status.job = Some(JobStatus {
        id: Some(name.clone()),
        state: Some(format!("{ready}/{wanted} ready")),
        ..JobStatus::default()
    });
    let (phase, ready_condition, requeue) = match (pipeline.spec.state, rolled_out) {
        (JobState::Suspended, true) => (
            "Suspended",
            Wanted::new(READY, "True", "Suspended", format!("Deployment {name} is scaled to zero; its state is its groups' committed offsets")),
            Requeue::OnChange,
        ),
        (JobState::Running, true) => (
            "Running",
            Wanted::new(READY, "True", "ReplicasReady", format!("Deployment {name}: {ready}/{wanted} replicas ready")),
            Requeue::OnChange,
        ),
        (_, false) => (
            "Deploying",
            Wanted::new(READY, "Unknown", "RollingOut", format!("Deployment {name}: {ready}/{wanted} replicas ready, {updated} updated")),
            Requeue::After(ROLLING_RECHECK),
        ),
    };
    pipeline_status.phase = Some(phase.into());
    Ok(Outcome {
        conditions: vec![ready_condition],
        fields: own_fields(serde_json::to_value(&pipeline_status)?),
        requeue,
    })
}
