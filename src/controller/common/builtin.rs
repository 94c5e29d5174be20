//! The objects of a `builtin` cluster: Apache Kafka in KRaft mode with
//! combined controller+broker nodes, as a StatefulSet behind a headless
//! Service (one DNS name per node) and a bootstrap Service, its settings in
//! a ConfigMap, and a PodDisruptionBudget. Pure functions of the set and
//! the cluster: the reconciler applies what they return.
//!
//! The pods follow the configuration contract of the official
//! `apache/kafka` image: every `KAFKA_*` environment variable becomes a
//! broker property (`KAFKA_LOG_DIRS` -> `log.dirs`), `CLUSTER_ID` formats
//! the storage, and `/etc/kafka/docker/run` starts the server.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource,
    EnvVar, EnvVarSource, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Service,
    ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::api::kafka_cluster_set::{BuiltinCluster, KafkaClusterSet};
use crate::controller::pod_security::restrict;

/// Port of the client listener.
pub const CLIENT_PORT: i32 = 9092;
/// Port of the KRaft controller listener.
pub const CONTROLLER_PORT: i32 = 9093;
/// Where each node keeps its log directory.
const DATA_DIR: &str = "/var/lib/kafka/data";
/// The user the `apache/kafka` image runs as.
const KAFKA_UID: i64 = 1000;

/// Names and labels of one builtin cluster's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// StatefulSet, bootstrap Service and PodDisruptionBudget.
    pub base: String,
    /// Headless Service giving each node a DNS name.
    pub headless: String,
    /// ConfigMap of broker settings.
    pub config: String,
    /// Namespace.
    pub namespace: String,
}

impl Names {
    /// The names of cluster `cluster` of `set`.
    pub fn of(set: &KafkaClusterSet, cluster: &str) -> Self {
        let base = format!("{}-{cluster}", set.name_any());
        Self {
            headless: format!("{base}-nodes"),
            config: format!("{base}-config"),
            namespace: set.namespace().unwrap_or_default(),
            base,
        }
    }

    /// The bootstrap address clients use.
    pub fn bootstrap(&self) -> String {
        format!(
            "{}.{}.svc.cluster.local:{CLIENT_PORT}",
            self.base, self.namespace
        )
    }

    /// The DNS name of node `ordinal`.
    fn node_host(&self, ordinal: i32) -> String {
        format!(
            "{}-{ordinal}.{}.{}.svc.cluster.local",
            self.base, self.headless, self.namespace
        )
    }
}

/// Label naming the set on every object of its builtin clusters.
pub const SET_LABEL: &str = "kappa.dev/cluster-set";
/// Label naming the cluster on every object of a builtin cluster.
pub const CLUSTER_LABEL: &str = "kappa.dev/cluster";

/// Standard labels of every object of a cluster. No
/// `app.kubernetes.io/instance`: GitOps tools claim objects by it (Argo
/// CD tracks its applications' objects with it), and the operator's
/// children are not theirs. Its own selection is by [`SET_LABEL`] and
/// [`CLUSTER_LABEL`].
pub fn labels(set: &KafkaClusterSet, cluster: &str, version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "kafka".into()),
        ("app.kubernetes.io/component".into(), "broker".into()),
        ("app.kubernetes.io/part-of".into(), set.name_any()),
        ("app.kubernetes.io/version".into(), version.into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "kappa-operator".into(),
        ),
        (SET_LABEL.into(), set.name_any()),
        (CLUSTER_LABEL.into(), cluster.into()),
    ])
}

/// The labels that select a cluster's pods and claims. A cluster created
/// by an earlier version keeps the selector it was created with
/// (`app.kubernetes.io/name` and `app.kubernetes.io/instance`): its
/// objects are applied once, when created, and clusters are replaced,
/// not changed.
pub fn selector(set: &KafkaClusterSet, cluster: &str) -> BTreeMap<String, String> {
    labels(set, cluster, "")
        .into_iter()
        .filter(|(k, _)| k == "app.kubernetes.io/name" || k == SET_LABEL || k == CLUSTER_LABEL)
        .collect()
}

fn meta(set: &KafkaClusterSet, cluster: &str, builtin: &BuiltinCluster, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: set.namespace(),
        labels: Some(labels(set, cluster, &builtin.version)),
        owner_references: set.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// A KRaft cluster id (22 characters of URL-safe base64, as `kafka-storage
/// random-uuid` prints) that stays the same for the life of the cluster.
pub fn cluster_id(set: &KafkaClusterSet, cluster: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let seed = format!("{}/{cluster}", set.uid().unwrap_or_else(|| set.name_any()));
    let digest = Sha256::digest(seed.as_bytes());
    let mut bits: u128 = u128::from_be_bytes(digest[..16].try_into().unwrap_or([0; 16]));
    let mut id = String::with_capacity(22);
    for _ in 0..22 {
        id.push(char::from(ALPHABET[(bits & 63) as usize]));
        bits >>= 6;
    }
    id
}

/// Kafka's property name as an `apache/kafka` environment variable:
/// `log.retention.ms` -> `KAFKA_LOG_RETENTION_MS` (`_` doubles, `-` triples).
pub fn property_env(key: &str) -> String {
    let mut name = String::from("KAFKA_");
    for c in key.chars() {
        match c {
            '.' => name.push('_'),
            '_' => name.push_str("__"),
            '-' => name.push_str("___"),
            other => name.push(other.to_ascii_uppercase()),
        }
    }
    name
}

/// The broker settings shared by every node, as environment variables.
pub fn settings(
    names: &Names,
    builtin: &BuiltinCluster,
    cluster_id: &str,
) -> BTreeMap<String, String> {
    let voters = (0..builtin.nodes)
        .map(|i| format!("{i}@{}:{CONTROLLER_PORT}", names.node_host(i)))
        .collect::<Vec<_>>()
        .join(",");
    let replication = builtin.nodes.min(3).to_string();
    let min_isr = builtin.nodes.min(2).to_string();
    let mut env: BTreeMap<String, String> = [
        ("CLUSTER_ID", cluster_id.to_string()),
        ("KAFKA_PROCESS_ROLES", "broker,controller".into()),
        (
            "KAFKA_LISTENERS",
            format!("PLAINTEXT://:{CLIENT_PORT},CONTROLLER://:{CONTROLLER_PORT}"),
        ),
        ("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER".into()),
        (
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT".into(),
        ),
        ("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT".into()),
        ("KAFKA_CONTROLLER_QUORUM_VOTERS", voters),
        ("KAFKA_LOG_DIRS", DATA_DIR.into()),
        (
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
            replication.clone(),
        ),
        (
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
            replication,
        ),
        ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", min_isr),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (key, value) in &builtin.config {
        env.insert(property_env(key), value.clone());
    }
    env
}

/// The ConfigMap of shared broker settings.
pub fn config_map(set: &KafkaClusterSet, cluster: &str, builtin: &BuiltinCluster) -> ConfigMap {
    let names = Names::of(set, cluster);
    ConfigMap {
        metadata: meta(set, cluster, builtin, &names.config),
        data: Some(settings(&names, builtin, &cluster_id(set, cluster))),
        ..ConfigMap::default()
    }
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        // Server-side apply needs the list key spelled out (before 1.21).
        protocol: Some("TCP".into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        ..ServicePort::default()
    }
}

/// The headless Service: a DNS name per node, published before the node is
/// ready so that the controller quorum can form.
pub fn headless_service(set: &KafkaClusterSet, cluster: &str, builtin: &BuiltinCluster) -> Service {
    let names = Names::of(set, cluster);
    Service {
        metadata: meta(set, cluster, builtin, &names.headless),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(set, cluster)),
            ports: Some(vec![
                service_port("client", CLIENT_PORT),
                service_port("controller", CONTROLLER_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The bootstrap Service clients connect to first.
pub fn bootstrap_service(
    set: &KafkaClusterSet,
    cluster: &str,
    builtin: &BuiltinCluster,
) -> Service {
    let names = Names::of(set, cluster);
    Service {
        metadata: meta(set, cluster, builtin, &names.base),
        spec: Some(ServiceSpec {
            selector: Some(selector(set, cluster)),
            ports: Some(vec![service_port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The PodDisruptionBudget (as JSON: its API version depends on the server).
pub fn disruption_budget(
    set: &KafkaClusterSet,
    cluster: &str,
    builtin: &BuiltinCluster,
) -> serde_json::Value {
    let names = Names::of(set, cluster);
    serde_json::json!({
        "metadata": meta(set, cluster, builtin, &names.base),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(set, cluster)}
        }
    })
}

/// The StatefulSet of the cluster's nodes.
pub fn stateful_set(set: &KafkaClusterSet, cluster: &str, builtin: &BuiltinCluster) -> StatefulSet {
    let names = Names::of(set, cluster);
    let quantity = |q: &Option<String>| q.clone().map(Quantity);
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if let Some(cpu) = quantity(&builtin.resources.cpu) {
        requests.insert("cpu".to_string(), cpu);
    }
    if let Some(memory) = quantity(&builtin.resources.memory) {
        requests.insert("memory".to_string(), memory.clone());
        limits.insert("memory".to_string(), memory);
    }
    let advertised = format!(
        "PLAINTEXT://$(POD_NAME).{}.{}.svc.cluster.local:{CLIENT_PORT}",
        names.headless, names.namespace
    );
    let container = Container {
        name: "kafka".into(),
        image: Some(builtin.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        // The node id is the pod's ordinal, known only inside the pod.
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            "export KAFKA_NODE_ID=\"${POD_NAME##*-}\"; exec /etc/kafka/docker/run".into(),
        ]),
        env: Some(vec![
            EnvVar {
                name: "POD_NAME".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        ..ObjectFieldSelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
            EnvVar {
                name: "KAFKA_ADVERTISED_LISTENERS".into(),
                value: Some(advertised),
                ..EnvVar::default()
            },
        ]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: names.config.clone(),
                ..ConfigMapEnvSource::default()
            }),
            ..EnvFromSource::default()
        }]),
        ports: Some(vec![
            ContainerPort {
                name: Some("client".into()),
                container_port: CLIENT_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("controller".into()),
                container_port: CONTROLLER_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(CLIENT_PORT),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        resources: Some(ResourceRequirements {
            requests: (!requests.is_empty()).then_some(requests),
            limits: (!limits.is_empty()).then_some(limits),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: DATA_DIR.into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let size = Quantity(builtin.storage.size.clone());
    let (volumes, claims) = if builtin.storage.ephemeral {
        let volume = Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(size),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        };
        (Some(vec![volume]), None)
    } else {
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                labels: Some(selector(set, cluster)),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: builtin.storage.storage_class.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".to_string(), size)])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        };
        (None, Some(vec![claim]))
    };
    let mut pod = PodSpec {
        containers: vec![container],
        volumes,
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(KAFKA_UID),
            run_as_group: Some(KAFKA_UID),
            fs_group: Some(KAFKA_UID),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    };
    restrict(&mut pod);
    StatefulSet {
        metadata: meta(set, cluster, builtin, &names.base),
        spec: StatefulSetSpec {
            replicas: Some(builtin.nodes),
            service_name: Some(names.headless.clone()),
            // Every node must be up for the quorum to form: start them together.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector(set, cluster)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(set, cluster, &builtin.version)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            volume_claim_templates: claims,
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set() -> KafkaClusterSet {
        serde_json::from_value(json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "KafkaClusterSet",
            "metadata": {"name": "events", "namespace": "shop", "uid": "u-1"},
            "spec": {"template": {"builtin": {"nodes": 3, "config": {"log.retention.ms": "1000", "num_io-threads": "4"}}},
                     "clusters": [{"name": "blue"}], "routing": {"writeCluster": "blue"}}
        }))
        .expect("set")
    }

    #[test]
    fn the_quorum_names_every_node_by_its_headless_dns_name() {
        let set = set();
        let builtin = set.spec.template.builtin.clone().expect("builtin");
        let env = settings(&Names::of(&set, "blue"), &builtin, "id");
        assert_eq!(
            env["KAFKA_CONTROLLER_QUORUM_VOTERS"],
            "0@events-blue-0.events-blue-nodes.shop.svc.cluster.local:9093,\
             1@events-blue-1.events-blue-nodes.shop.svc.cluster.local:9093,\
             2@events-blue-2.events-blue-nodes.shop.svc.cluster.local:9093"
        );
        assert_eq!(env["KAFKA_LOG_RETENTION_MS"], "1000");
        assert_eq!(env["KAFKA_NUM__IO___THREADS"], "4");
        assert_eq!(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"], "3");
    }

    #[test]
    fn the_cluster_id_is_stable_and_shaped_like_kafkas() {
        let id = cluster_id(&set(), "blue");
        assert_eq!(id.len(), 22);
        assert_eq!(id, cluster_id(&set(), "blue"));
        assert_ne!(id, cluster_id(&set(), "green"));
    }

    #[test]
    fn storage_is_a_claim_unless_ephemeral() {
        let set = set();
        let mut builtin = set.spec.template.builtin.clone().expect("builtin");
        let claims = stateful_set(&set, "blue", &builtin)
            .spec
            .volume_claim_templates
            .expect("claims");
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        builtin.storage.ephemeral = true;
        let spec = stateful_set(&set, "blue", &builtin).spec;
        assert!(spec.volume_claim_templates.is_none());
        let volumes = spec.template.spec.and_then(|p| p.volumes).expect("volumes");
        assert!(volumes[0].empty_dir.is_some());
    }
}
