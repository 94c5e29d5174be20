//! A Flink pipeline in application mode: a Flink cluster of its own, in
//! Flink's standalone-Kubernetes layout. A JobManager Deployment runs
//! `standalone-job` with the job's class, its fixed id and the savepoint it
//! starts from; a TaskManager Deployment runs `taskmanager`; both read
//! `config.yaml` from a ConfigMap; a Service carries REST, RPC and blob.
//! Every deployment of the job rolls both Deployments (strategy Recreate).
//! The JobManager stays up once its job has stopped
//! (`execution.shutdown-on-application-finish: false`), so that a
//! stop-with-savepoint is followed through REST exactly as in session mode,
//! and savepoints can still be disposed through it while suspended.
//!
//! Images follow the `apache/flink` image's contract: `standalone-job` and
//! `taskmanager` as arguments, configuration in `/opt/flink/conf`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction, PodTemplateSpec,
    Probe, ResourceRequirements, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::consumer::mount_discovery;
use crate::api::common::Resources;
use crate::api::pipeline::{FlinkEngine, Pipeline};
use crate::controller::apply_if_changed;
use crate::controller::common::pipelines::{owner, PIPELINE_LABEL};
use crate::controller::pod_security::restrict;
use crate::controller::reconcile::FIELD_MANAGER;
use crate::error::Error;

/// The container of `podTemplate` that the Flink container is built on.
pub const MAIN_CONTAINER: &str = "flink-main-container";
/// Label telling the JobManager's pods from the TaskManagers'.
const COMPONENT_LABEL: &str = "kappa.dev/component";
/// Pod annotation: the deployment of the job the pod belongs to.
const DEPLOYMENT_ANNOTATION: &str = "kappa.dev/deployment";
const REST_PORT: i32 = 8081;
const RPC_PORT: i32 = 6123;
const BLOB_PORT: i32 = 6124;
const TASK_MANAGER_RPC_PORT: i32 = 6122;
/// Where Flink reads `config.yaml` in the image.
const CONF_DIR: &str = "/opt/flink/conf";
const CONF_VOLUME: &str = "flink-config";
/// Flink process sizes when `resources.memory` is unset.
const JOB_MANAGER_MEMORY: &str = "1024m";
const TASK_MANAGER_MEMORY: &str = "1280m";
/// The longest pipeline name whose Service name is a DNS label.
pub const MAX_NAME: usize = 63 - "-jobmanager".len();

/// Name of the JobManager Deployment and Service.
pub fn job_manager_name(pipeline: &str) -> String {
    format!("{pipeline}-jobmanager")
}

fn task_manager_name(pipeline: &str) -> String {
    format!("{pipeline}-taskmanager")
}

fn config_name(pipeline: &str) -> String {
    format!("{pipeline}-flink-config")
}

/// One deployment of the job, as the JobManager starts it.
pub struct Launch<'a> {
    /// The job id, chosen before the deployment.
    pub job_id: &'a str,
    /// Which deployment of the pipeline this is.
    pub deployment: i64,
    /// Savepoint or checkpoint the job starts from.
    pub restore: Option<&'a str>,
    /// False while suspended: no TaskManager runs.
    pub running: bool,
}

/// Flink's process size for a Kubernetes memory quantity, in mebibytes.
pub fn flink_memory(quantity: &str) -> Option<String> {
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(quantity.len());
    let (number, unit) = quantity.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let mebibytes = (number * factor / (1024.0 * 1024.0)).floor();
    (mebibytes >= 1.0).then(|| format!("{mebibytes}m"))
}

/// The Flink configuration of the pipeline's cluster: the layout's settings,
/// then the user's `flinkConfiguration` over them.
pub fn flink_config(pipeline: &Pipeline, flink: &FlinkEngine) -> BTreeMap<String, String> {
    let memory = |resources: &Resources, default: &str| {
        resources
            .memory
            .as_deref()
            .and_then(flink_memory)
            .unwrap_or_else(|| default.to_string())
    };
    let service = job_manager_name(&pipeline.name_any());
    let mut config: BTreeMap<String, String> = [
        ("jobmanager.rpc.address", service.clone()),
        ("jobmanager.rpc.port", RPC_PORT.to_string()),
        ("jobmanager.bind-host", "0.0.0.0".into()),
        ("rest.address", service),
        ("rest.port", REST_PORT.to_string()),
        ("rest.bind-address", "0.0.0.0".into()),
        ("blob.server.port", BLOB_PORT.to_string()),
        ("taskmanager.rpc.port", TASK_MANAGER_RPC_PORT.to_string()),
        ("taskmanager.bind-host", "0.0.0.0".into()),
        (
            "taskmanager.numberOfTaskSlots",
            flink.task_manager.task_slots.to_string(),
        ),
        ("parallelism.default", flink.parallelism.to_string()),
        (
            "jobmanager.memory.process.size",
            memory(&flink.job_manager, JOB_MANAGER_MEMORY),
        ),
        (
            "taskmanager.memory.process.size",
            memory(&flink.task_manager.resources, TASK_MANAGER_MEMORY),
        ),
        ("execution.shutdown-on-application-finish", "false".into()),
        (
            "execution.submit-failed-job-on-application-error",
            "true".into(),
        ),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect();
    config.extend(flink.flink_configuration.clone());
    config
}

fn labels(pipeline: &Pipeline, component: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (PIPELINE_LABEL.to_string(), pipeline.name_any()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "kappa-operator".to_string(),
        ),
    ]);
    if let Some(component) = component {
        labels.insert(COMPONENT_LABEL.to_string(), component.to_string());
    }
    labels
}

fn metadata(
    pipeline: &Pipeline,
    name: String,
    component: Option<&str>,
) -> Result<ObjectMeta, Error> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: pipeline.namespace(),
        labels: Some(labels(pipeline, component)),
        owner_references: Some(vec![owner(pipeline)?]),
        ..ObjectMeta::default()
    })
}

/// The ConfigMap holding `config.yaml` and the console logging setup.
pub fn config_map(pipeline: &Pipeline, flink: &FlinkEngine) -> Result<ConfigMap, Error> {
    // Each value is a YAML double-quoted scalar: JSON string syntax is one.
    let yaml: String = flink_config(pipeline, flink)
        .iter()
        .map(|(key, value)| Ok(format!("{key}: {}\n", serde_json::to_string(value)?)))
        .collect::<Result<_, serde_json::Error>>()?;
    let logging = "rootLogger.level = INFO\n\
        rootLogger.appenderRef.console.ref = ConsoleAppender\n\
        appender.console.name = ConsoleAppender\n\
        appender.console.type = CONSOLE\n\
        appender.console.layout.type = PatternLayout\n\
        appender.console.layout.pattern = %d{HH:mm:ss,SSS} %-5p %c{1} - %m%n\n";
    Ok(ConfigMap {
        metadata: metadata(pipeline, config_name(&pipeline.name_any()), None)?,
        data: Some(BTreeMap::from([
            ("config.yaml".to_string(), yaml),
            ("log4j-console.properties".to_string(), logging.to_string()),
        ])),
        ..ConfigMap::default()
    })
}

/// The JobManager's Service: REST, RPC and blob.
pub fn service(pipeline: &Pipeline) -> Result<Service, Error> {
    let name = pipeline.name_any();
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        // Server-side apply keys ports by port and protocol.
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    Ok(Service {
        metadata: metadata(pipeline, job_manager_name(&name), Some("jobmanager"))?,
        spec: Some(ServiceSpec {
            selector: Some(labels(pipeline, Some("jobmanager"))),
            ports: Some(vec![
                port("rest", REST_PORT),
                port("rpc", RPC_PORT),
                port("blob", BLOB_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// The JobManager's arguments: the job, its id and the state it starts from,
/// then the job's own arguments.
fn job_manager_args(flink: &FlinkEngine, launch: &Launch) -> Vec<String> {
    // `--jars` takes several values: an option after it ends the list.
    let mut args = vec![
        "standalone-job".to_string(),
        "--jars".into(),
        flink.jar_uri.clone(),
    ];
    if let Some(class) = &flink.entry_class {
        args.extend(["--job-classname".into(), class.clone()]);
    }
    args.extend(["--job-id".into(), launch.job_id.to_string()]);
    if let Some(restore) = launch.restore {
        args.extend(["--fromSavepoint".into(), restore.to_string()]);
        if flink.allow_non_restored_state {
            args.push("--allowNonRestoredState".into());
        }
    }
    args.extend(flink.args.iter().cloned());
    args
}

fn requirements(resources: &Resources) -> Option<ResourceRequirements> {
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if let Some(cpu) = &resources.cpu {
        requests.insert("cpu".to_string(), Quantity(cpu.clone()));
    }
    if let Some(memory) = &resources.memory {
        requests.insert("memory".to_string(), Quantity(memory.clone()));
        limits.insert("memory".to_string(), Quantity(memory.clone()));
    }
    (!requests.is_empty()).then(|| ResourceRequirements {
        requests: Some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..ResourceRequirements::default()
    })
}

/// A pod of the cluster: `podTemplate` with the Flink container built on its
/// `flink-main-container`, the configuration and the discovery map mounted.
fn pod(
    pipeline: &Pipeline,
    flink: &FlinkEngine,
    component: &str,
    launch: &Launch,
    build: impl FnOnce(&mut Container),
) -> PodTemplateSpec {
    let mut template = flink.pod_template.as_deref().cloned().unwrap_or_default();
    let metadata = template.metadata.get_or_insert_with(ObjectMeta::default);
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(labels(pipeline, Some(component)));
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(DEPLOYMENT_ANNOTATION.into(), launch.deployment.to_string());
    let spec = template.spec.get_or_insert_with(Default::default);
    let mut container = spec
        .containers
        .iter()
        .position(|c| c.name == MAIN_CONTAINER)
        .map(|at| spec.containers.remove(at))
        .unwrap_or_default();
    container.name = MAIN_CONTAINER.into();
    container.image.clone_from(&flink.image);
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(VolumeMount {
            name: CONF_VOLUME.into(),
            mount_path: CONF_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    build(&mut container);
    spec.containers.insert(0, container);
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: CONF_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_name(&pipeline.name_any()),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    });
    mount_discovery(pipeline, spec);
    restrict(spec);
    template
}

fn ports(ports: &[(&str, i32)]) -> Option<Vec<ContainerPort>> {
    Some(
        ports
            .iter()
            .map(|(name, port)| ContainerPort {
                name: Some((*name).into()),
                container_port: *port,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            })
            .collect(),
    )
}

fn deployment(
    pipeline: &Pipeline,
    name: String,
    component: &str,
    replicas: i32,
    template: PodTemplateSpec,
) -> Result<Deployment, Error> {
    Ok(Deployment {
        metadata: metadata(pipeline, name, Some(component))?,
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels(pipeline, Some(component))),
                ..LabelSelector::default()
            },
            // Two JobManagers of one pipeline never run at once.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..DeploymentStrategy::default()
            }),
            template,
            ..DeploymentSpec::default()
        },
        status: None,
    })
}

/// The JobManager Deployment for `launch`.
pub fn job_manager(
    pipeline: &Pipeline,
    flink: &FlinkEngine,
    launch: &Launch,
) -> Result<Deployment, Error> {
    let template = pod(pipeline, flink, "jobmanager", launch, |container| {
        container.args = Some(job_manager_args(flink, launch));
        container.ports = ports(&[("rest", REST_PORT), ("rpc", RPC_PORT), ("blob", BLOB_PORT)]);
        container.readiness_probe = Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/config".into()),
                port: IntOrString::Int(REST_PORT),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(2),
            ..Probe::default()
        });
        if let Some(resources) = requirements(&flink.job_manager) {
            container.resources = Some(resources);
        }
    });
    let name = job_manager_name(&pipeline.name_any());
    deployment(pipeline, name, "jobmanager", 1, template)
}

/// The TaskManager Deployment for `launch`.
pub fn task_managers(
    pipeline: &Pipeline,
    flink: &FlinkEngine,
    launch: &Launch,
) -> Result<Deployment, Error> {
    let template = pod(pipeline, flink, "taskmanager", launch, |container| {
        container.args = Some(vec!["taskmanager".into()]);
        container.ports = ports(&[("rpc", TASK_MANAGER_RPC_PORT)]);
        if let Some(resources) = requirements(&flink.task_manager.resources) {
            container.resources = Some(resources);
        }
    });
    let replicas = if launch.running {
        flink.task_manager.replicas
    } else {
        0
    };
    let name = task_manager_name(&pipeline.name_any());
    deployment(pipeline, name, "taskmanager", replicas, template)
}

/// Applies the cluster for `launch` (each object only when it changed).
pub async fn apply(
    client: &Client,
    pipeline: &Pipeline,
    flink: &FlinkEngine,
    launch: &Launch<'_>,
) -> Result<(), Error> {
    let namespace = pipeline
        .namespace()
        .ok_or(Error::MissingObjectField("metadata.namespace"))?;
    apply_if_changed(
        &Api::namespaced(client.clone(), &namespace),
        config_map(pipeline, flink)?,
    )
    .await?;
    apply_if_changed(
        &Api::namespaced(client.clone(), &namespace),
        service(pipeline)?,
    )
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    apply_if_changed(&deployments, job_manager(pipeline, flink, launch)?).await?;
    apply_if_changed(&deployments, task_managers(pipeline, flink, launch)?).await?;
    Ok(())
}

/// Scales the TaskManagers to zero (a suspended job), touching nothing else:
/// the JobManager keeps the arguments of the deployment it ran.
pub async fn stop_task_managers(client: &Client, pipeline: &Pipeline) -> Result<(), Error> {
    let namespace = pipeline
        .namespace()
        .ok_or(Error::MissingObjectField("metadata.namespace"))?;
    let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let name = task_manager_name(&pipeline.name_any());
    let scaled = api.get_opt(&name).await?.and_then(|d| d.spec.replicas);
    if scaled.is_some_and(|replicas| replicas != 0) {
        let zero = Patch::Merge(serde_json::json!({"spec": {"replicas": 0}}));
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch(&name, &params, &zero).await?;
    }
    Ok(())
}

/// What the API server shows of an application-mode pipeline's cluster.
pub struct Observed {
    /// REST URL through the JobManager Service's cluster IP, once it has one.
    pub url: Option<String>,
    /// Whether the JobManager Deployment exists.
    pub deployed: bool,
    /// Whether its current pod is ready (serves REST).
    pub ready: bool,
}

/// Reads the JobManager's Service and Deployment.
pub async fn observe(client: &Client, pipeline: &Pipeline) -> Result<Observed, Error> {
    let namespace = pipeline
        .namespace()
        .ok_or(Error::MissingObjectField("metadata.namespace"))?;
    let name = job_manager_name(&pipeline.name_any());
    let service = Api::<Service>::namespaced(client.clone(), &namespace)
        .get_opt(&name)
        .await?;
    let url = service
        .and_then(|s| s.spec)
        .and_then(|s| s.cluster_ip)
        .filter(|ip| !ip.is_empty() && ip != "None")
        .map(|ip| format!("http://{ip}:{REST_PORT}"));
    let deployment = Api::<Deployment>::namespaced(client.clone(), &namespace)
        .get_opt(&name)
        .await?;
    let ready = deployment.as_ref().is_some_and(|d| {
        let status = d.status.clone().unwrap_or_default();
        d.metadata.generation == status.observed_generation
            && status.updated_replicas == Some(1)
            && status.ready_replicas == Some(1)
            && status.replicas == Some(1)
    });
    Ok(Observed {
        url,
        deployed: deployment.is_some(),
        ready,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pipeline::PipelineSpec;

    fn pipeline(flink: serde_json::Value) -> (Pipeline, FlinkEngine) {
        let spec: PipelineSpec = serde_json::from_value(serde_json::json!({
            "clusterSet": "events",
            "inputs": [{"stream": "orders"}],
            "engine": {"type": "flink", "flink": flink},
        }))
        .expect("a valid spec");
        let mut pipeline = Pipeline::new("totals", spec);
        pipeline.metadata.namespace = Some("team".into());
        pipeline.metadata.uid = Some("uid-1".into());
        let flink = *pipeline.spec.engine.flink.clone().expect("flink");
        (pipeline, flink)
    }

    #[test]
    fn memory_quantities_become_flink_sizes() {
        assert_eq!(flink_memory("2Gi").as_deref(), Some("2048m"));
        assert_eq!(flink_memory("1536Mi").as_deref(), Some("1536m"));
        assert_eq!(flink_memory("1G").as_deref(), Some("953m"));
        assert_eq!(flink_memory("100"), None);
        assert_eq!(flink_memory("2Xi"), None);
    }

    #[test]
    fn the_job_manager_starts_the_job_with_its_id_and_state() {
        let (pipeline, flink) = pipeline(serde_json::json!({
            "image": "flink:2.3",
            "jarUri": "local:///opt/flink/usrlib/job.jar",
            "entryClass": "com.example.Job",
            "args": ["--rate", "5"],
            "allowNonRestoredState": true,
            "podTemplate": {"spec": {
                "containers": [
                    {"name": "flink-main-container", "imagePullPolicy": "Never",
                     "volumeMounts": [{"name": "state", "mountPath": "/state"}]},
                    {"name": "sidecar", "image": "busybox"}
                ],
                "volumes": [{"name": "state", "hostPath": {"path": "/srv/state"}}]
            }}
        }));
        let launch = Launch {
            job_id: "00000000000000000000000000000001",
            deployment: 3,
            restore: Some("file:///state/savepoint-1"),
            running: true,
        };
        let deployment = job_manager(&pipeline, &flink, &launch).expect("built");
        let template = deployment.spec.template;
        let annotations = template.metadata.expect("metadata").annotations;
        assert_eq!(
            annotations.expect("annotations")[DEPLOYMENT_ANNOTATION],
            "3"
        );
        let pod = template.spec.expect("pod");
        let main = &pod.containers[0];
        assert_eq!(main.name, MAIN_CONTAINER);
        assert_eq!(main.image.as_deref(), Some("flink:2.3"));
        assert_eq!(main.image_pull_policy.as_deref(), Some("Never"));
        assert_eq!(
            main.args.clone().expect("args"),
            [
                "standalone-job",
                "--jars",
                "local:///opt/flink/usrlib/job.jar",
                "--job-classname",
                "com.example.Job",
                "--job-id",
                "00000000000000000000000000000001",
                "--fromSavepoint",
                "file:///state/savepoint-1",
                "--allowNonRestoredState",
                "--rate",
                "5"
            ]
        );
        let mounts: Vec<_> = main
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(
            mounts,
            ["/state", CONF_DIR, super::super::consumer::DISCOVERY_DIR]
        );
        assert_eq!(pod.containers[1].name, "sidecar");
        let volumes: Vec<_> = pod
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(volumes, ["state", CONF_VOLUME, "kappa-discovery"]);
    }

    #[test]
    fn suspended_clusters_keep_the_job_manager_and_no_task_manager() {
        let (pipeline, flink) = pipeline(serde_json::json!({
            "image": "flink:2.3",
            "jarUri": "local:///opt/flink/usrlib/job.jar",
            "taskManager": {"replicas": 3},
        }));
        let mut launch = Launch {
            job_id: "00000000000000000000000000000001",
            deployment: 1,
            restore: None,
            running: true,
        };
        let replicas = |launch: &Launch| {
            let tm = task_managers(&pipeline, &flink, launch).expect("built");
            tm.spec.replicas
        };
        assert_eq!(replicas(&launch), Some(3));
        launch.running = false;
        assert_eq!(replicas(&launch), Some(0));
        let jm = job_manager(&pipeline, &flink, &launch).expect("built");
        assert_eq!(jm.spec.replicas, Some(1));
    }

    #[test]
    fn user_configuration_wins_over_the_layout() {
        let (pipeline, flink) = pipeline(serde_json::json!({
            "image": "flink:2.3",
            "jarUri": "local:///opt/flink/usrlib/job.jar",
            "parallelism": 4,
            "jobManager": {"memory": "2Gi"},
            "flinkConfiguration": {"parallelism.default": "2", "state.savepoints.dir": "file:///s"},
        }));
        let config = flink_config(&pipeline, &flink);
        assert_eq!(config["parallelism.default"], "2");
        assert_eq!(config["jobmanager.memory.process.size"], "2048m");
        assert_eq!(
            config["taskmanager.memory.process.size"],
            TASK_MANAGER_MEMORY
        );
        assert_eq!(config["jobmanager.rpc.address"], "totals-jobmanager");
        let map = config_map(&pipeline, &flink).expect("built");
        let yaml = &map.data.expect("data")["config.yaml"];
        assert!(
            yaml.contains("state.savepoints.dir: \"file:///s\"\n"),
            "{yaml}"
        );
    }
}
