//! The Kubernetes objects of a Backfill's replay, built from the Backfill
//! and its plan alone: the plan's ConfigMap and one Job per worker (one Job
//! each rather than one indexed Job, so that API servers before 1.21, which
//! have no indexed Jobs, run them too). All are owned by the Backfill, so
//! deleting it deletes them.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::api::backfill::{Backfill, BackfillStatus};
use crate::api::savepoint::PartitionOffset;
use crate::client::CREDENTIALS_DIR;
use crate::controller::pod_security::restrict;
use crate::discovery::ClientSecurity;
use crate::replay::plan::ReplayPlan;

/// Key of the plan in its ConfigMap.
pub const PLAN_KEY: &str = "plan.json";
/// Where workers find the plan.
const PLAN_DIR: &str = "/etc/kappa/replay";
/// Label naming the Backfill on its objects.
pub const BACKFILL_LABEL: &str = "kappa.dev/backfill";
/// Failed pods a worker's Job replaces before it fails (and the Backfill
/// copies the range again): with the Job controller's backoff of 10 s
/// doubling, a worker that cannot go on is given up after about 2.5 min.
const WORKER_RETRIES: i32 = 4;
/// How long a worker pod being deleted may take to stop: it stops at
/// SIGTERM, and one still writing after its replacement started would write
/// records twice.
const WORKER_GRACE_SECONDS: i64 = 2;
/// How long a worker's Job may run, retries included, before Kubernetes
/// stops it (the Backfill then copies the range again, at most three times).
const WORKER_DEADLINE_SECONDS: i64 = 24 * 3600;
/// How long a finished worker's Job stays for its logs when the Backfill's
/// teardown did not remove it (Kubernetes 1.21+, or 1.20 with the
/// TTLAfterFinished feature gate; ignored elsewhere).
const WORKER_TTL_SECONDS: i32 = 24 * 3600;
/// The user the operator's image runs as (the chart's and `manifests/`'s
/// Deployment too); replay workers are the same binary.
const OPERATOR_UID: i64 = 65532;

/// What a worker asks of its node: the copy is network-bound; its memory is
/// bounded by the producer's queue (500,000 records) and one fetch (64 MiB).
fn worker_resources() -> ResourceRequirements {
    let quantity = |q: &str| Quantity(q.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), quantity("100m")),
            ("memory".to_string(), quantity("256Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), quantity("1Gi"))])),
        ..ResourceRequirements::default()
    }
}

/// Names of the extra clusters of `backfill`.
pub fn cluster_names(backfill: &Backfill) -> Vec<String> {
    (0..backfill.spec.capacity.clusters)
        .map(|n| format!("{}-{n}", backfill.name_any()))
        .collect()
}

/// Name of the ConfigMap holding the plan.
pub fn plan_name(backfill: &Backfill) -> String {
    format!("{}-replay-plan", backfill.name_any())
}

/// Name of the live pipeline's hand-off Savepoint: unique per Backfill
/// object, so that a Backfill created again under the same name hands off
/// anew.
pub fn handoff_name(backfill: &Backfill) -> String {
    let uid = backfill.uid().unwrap_or_default();
    format!(
        "{}-handoff-{}",
        backfill.name_any(),
        &uid[..uid.len().min(8)]
    )
}

/// Where the live pipeline's groups continue after the hand-off: the
/// replay's end on the source cluster, partition by partition.
pub fn handoff_offsets(status: &BackfillStatus) -> Vec<PartitionOffset> {
    status
        .replay
        .iter()
        .flat_map(|r| &r.handoff_offsets)
        .flat_map(|stream| {
            stream.offsets.iter().filter_map(|(partition, offset)| {
                Some(PartitionOffset {
                    cluster: stream.cluster.clone()?,
                    topic: stream.topic.clone(),
                    partition: partition.parse().ok()?,
                    offset: *offset,
                })
            })
        })
        .collect()
}

/// Name of worker `index`'s Job.
pub fn job_name(backfill: &Backfill, index: i32) -> String {
    format!("{}-replay-{index}", backfill.name_any())
}

/// The consumer group under which workers record progress on the backfill clusters.
pub fn progress_group(backfill: &Backfill) -> String {
    format!("kappa-replay-{}", backfill.name_any())
}

/// Metadata of an object the Backfill owns: labelled with its name, deleted with it.
pub fn owned_meta(backfill: &Backfill, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: backfill.namespace(),
        labels: Some(BTreeMap::from([
            (
                "app.kubernetes.io/managed-by".to_string(),
                "kappa-operator".to_string(),
            ),
            (BACKFILL_LABEL.to_string(), backfill.name_any()),
        ])),
        owner_references: backfill.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The plan's ConfigMap.
pub fn plan_config_map(
    backfill: &Backfill,
    plan: &ReplayPlan,
) -> Result<ConfigMap, serde_json::Error> {
    Ok(ConfigMap {
        metadata: owned_meta(backfill, plan_name(backfill)),
        data: Some(BTreeMap::from([(
            PLAN_KEY.to_string(),
            serde_json::to_string_pretty(plan)?,
        )])),
        ..ConfigMap::default()
    })
}

/// Worker `index`'s Job, running `image` (the operator's own), with the
/// Secrets a secured source names mounted where the worker reads them.
pub fn worker_job(
    backfill: &Backfill,
    index: i32,
    image: &str,
    source: Option<&ClientSecurity>,
) -> Job {
    let name = job_name(backfill, index);
    let secrets: Vec<&str> = source
        .map(|s| s.secrets().into_iter().collect())
        .unwrap_or_default();
    let mut mounts = vec![VolumeMount {
        name: "plan".into(),
        mount_path: PLAN_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: "plan".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: plan_name(backfill),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    for (n, secret) in secrets.iter().enumerate() {
        let volume = format!("credentials-{n}");
        mounts.push(VolumeMount {
            name: volume.clone(),
            mount_path: format!("{CREDENTIALS_DIR}/{secret}"),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: volume,
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_string()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    let labels = owned_meta(backfill, name.clone()).labels;
    let mut pod = PodSpec {
        restart_policy: Some("Never".into()),
        termination_grace_period_seconds: Some(WORKER_GRACE_SECONDS),
        security_context: Some(PodSecurityContext {
            run_as_user: Some(OPERATOR_UID),
            run_as_group: Some(OPERATOR_UID),
            ..PodSecurityContext::default()
        }),
        containers: vec![Container {
            name: "replay".into(),
            image: Some(image.to_string()),
            image_pull_policy: Some("IfNotPresent".into()),
            args: Some(vec![
                "replay".into(),
                "--plan".into(),
                format!("{PLAN_DIR}/{PLAN_KEY}"),
                "--worker".into(),
                index.to_string(),
            ]),
            resources: Some(worker_resources()),
            volume_mounts: Some(mounts),
            ..Container::default()
        }],
        volumes: Some(volumes),
        ..PodSpec::default()
    };
    restrict(&mut pod);
    Job {
        metadata: owned_meta(backfill, name),
        spec: Some(JobSpec {
            backoff_limit: Some(WORKER_RETRIES),
            completions: Some(1),
            parallelism: Some(1),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels,
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            active_deadline_seconds: Some(WORKER_DEADLINE_SECONDS),
            ttl_seconds_after_finished: Some(WORKER_TTL_SECONDS),
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// Where a worker's Job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Not finished.
    Running,
    /// Its pod succeeded.
    Succeeded,
    /// It gave up: the Job's own reason and message.
    Failed(String),
}

/// The state of `job`.
pub fn job_state(job: &Job) -> JobState {
    let status = job.status.clone().unwrap_or_default();
    if status.succeeded.unwrap_or(0) >= 1 {
        return JobState::Succeeded;
    }
    let failed = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Failed" && c.status == "True");
    match failed {
        Some(c) => JobState::Failed(format!(
            "{}: {}",
            c.reason.unwrap_or_default(),
            c.message.unwrap_or_default()
        )),
        None => JobState::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_worker_job_runs_the_operator_binary_on_its_share_of_the_mounted_plan() {
        let backfill: Backfill = serde_json::from_value(json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "Backfill",
            "metadata": {"name": "rerun", "namespace": "shop", "uid": "u-1"},
            "spec": {"pipelineRef": "p", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z",
                     "capacity": {"clusters": 2}}
        }))
        .expect("backfill");
        assert_eq!(cluster_names(&backfill), ["rerun-0", "rerun-1"]);
        let job = worker_job(&backfill, 1, "kappa-operator:0.1.0", None);
        assert_eq!(job.name_any(), "rerun-replay-1");
        assert_eq!(job.owner_references()[0].uid, "u-1");
        let spec = job.spec.expect("spec");
        assert_eq!(spec.active_deadline_seconds, Some(86_400));
        assert_eq!(spec.ttl_seconds_after_finished, Some(86_400));
        let pod = spec.template.spec.expect("pod");
        assert_eq!(pod.termination_grace_period_seconds, Some(2));
        // Restricted, as the operator's own image runs, with no token.
        let context = pod.security_context.clone().expect("pod context");
        assert_eq!(
            (context.run_as_user, context.run_as_non_root),
            (Some(65532), Some(true))
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        let resources = pod.containers[0].resources.clone().expect("resources");
        assert_eq!(
            resources.limits.expect("limits")["memory"],
            Quantity("1Gi".into())
        );
        let args = pod.containers[0].args.clone().expect("args");
        assert_eq!(
            args,
            [
                "replay",
                "--plan",
                "/etc/kappa/replay/plan.json",
                "--worker",
                "1"
            ]
        );
        let volume = &pod.volumes.expect("volumes")[0];
        assert_eq!(
            volume.config_map.as_ref().map(|c| c.name.as_str()),
            Some("rerun-replay-plan")
        );

        // A secured source: each Secret it names is mounted once where the
        // worker's credentials are read.
        let security = ClientSecurity {
            protocol: "SASL_SSL".into(),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_secret_name: Some("live-client".into()),
            ca_secret: Some(crate::discovery::SecretKey {
                name: "live-ca".into(),
                key: "ca.crt".into(),
            }),
        };
        let job = worker_job(&backfill, 0, "kappa-operator:0.1.0", Some(&security));
        let pod = job.spec.expect("spec").template.spec.expect("pod");
        let mounts: Vec<(String, String)> = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.clone(), m.mount_path.clone()))
            .collect();
        let secrets: Vec<(String, Option<String>)> = pod
            .volumes
            .iter()
            .flatten()
            .map(|v| {
                (
                    v.name.clone(),
                    v.secret.as_ref().and_then(|s| s.secret_name.clone()),
                )
            })
            .collect();
        assert_eq!(
            mounts[1..],
            [
                (
                    "credentials-0".to_string(),
                    format!("{CREDENTIALS_DIR}/live-ca")
                ),
                (
                    "credentials-1".to_string(),
                    format!("{CREDENTIALS_DIR}/live-client")
                ),
            ]
        );
        assert_eq!(
            secrets[1..],
            [
                ("credentials-0".to_string(), Some("live-ca".to_string())),
                ("credentials-1".to_string(), Some("live-client".to_string())),
            ]
        );
    }
}
