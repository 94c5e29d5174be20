//! The operator in-cluster on the testbed's node: deploying it from
//! `manifests/`, its pods and leader, Tansu brokers as pods, and the sets and
//! pipelines the in-cluster tests share.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::json;

use super::Testbed;

/// Whether this test binary has applied `manifests/`; tests running at
/// once must not both create its objects.
static APPLIED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);

pub fn deploy_operator(testbed: &Testbed) {
    {
        let mut applied = APPLIED.lock().unwrap_or_else(|p| p.into_inner());
        if !*applied {
            testbed.kubectl(&[
                "apply",
                "-k",
                &super::repo().join("manifests").to_string_lossy(),
            ]);
            *applied = true;
        }
    }
    wait_for_rollout(testbed);
    wait_for_admission(testbed);
}

/// Waits until every replica of the operator runs the Deployment's latest
/// template and is ready.
pub fn wait_for_rollout(testbed: &Testbed) {
    let rollout = testbed.kubectl_output(&[
        "-n",
        "kappa-system",
        "rollout",
        "status",
        "deployment/kappa-operator",
        "--timeout=180s",
    ]);
    if !rollout.status.success() {
        let pods = testbed.kubectl_output(&["-n", "kappa-system", "describe", "pods"]);
        panic!(
            "the operator did not roll out: {}\n{}",
            String::from_utf8_lossy(&rollout.stderr),
            String::from_utf8_lossy(&pods.stdout)
        );
    }
}

/// Waits until the API server's calls to the operator's webhook succeed: a
/// ready replica has written the CA bundle it serves with, and the API
/// server has read it.
fn wait_for_admission(testbed: &Testbed) {
    let object = super::objects::kcs(super::objects::valid_kcs_spec());
    let file = testbed.state.join("admission-probe.json");
    std::fs::write(&file, object.to_string()).expect("probe object");
    let path = file.to_string_lossy().into_owned();
    let started = std::time::Instant::now();
    loop {
        let probe =
            testbed.kubectl_output(&["-n", "default", "apply", "--dry-run=server", "-f", &path]);
        if probe.status.success() {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "admission does not answer: {}",
            String::from_utf8_lossy(&probe.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The operator's replicas that run and are not being deleted.
pub fn operator_pods(testbed: &Testbed) -> Vec<String> {
    testbed
        .kubectl(&[
            "-n",
            "kappa-system",
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=kappa-operator",
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ])
        .lines()
        .filter_map(|line| match line.split_whitespace().collect::<Vec<_>>()[..] {
            [name] => Some(name.to_string()),
            _ => None,
        })
        .collect()
}

/// The log of every replica `operator_pods` lists; a replica whose deletion
/// began after it was listed (its log can no longer be read) is left out.
fn operator_logs(testbed: &Testbed) -> Vec<(String, String)> {
    operator_pods(testbed)
        .into_iter()
        .filter_map(|pod| {
            let output = testbed.kubectl_output(&["-n", "kappa-system", "logs", &pod]);
            if output.status.success() {
                return Some((pod, String::from_utf8_lossy(&output.stdout).into_owned()));
            }
            assert!(
                !operator_pods(testbed).contains(&pod),
                "the log of running replica {pod} cannot be read: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            None
        })
        .collect()
}

pub fn assert_pods_logged_no_refusal(testbed: &Testbed) {
    for (pod, log) in operator_logs(testbed) {
        if let Some(found) = super::refusal_in(&log) {
            panic!("pod {pod} logged `{found}`:\n{log}");
        }
    }
}

/// Fails if a running replica of the operator logged an error, but for
/// lines that contain one of `expected`.
pub fn assert_pods_logged_no_error_but(testbed: &Testbed, expected: &[&str]) {
    for (pod, log) in operator_logs(testbed) {
        let bad = super::errors_in(&log, expected);
        assert!(
            bad.is_empty(),
            "pod {pod} logged errors:\n{}",
            bad.join("\n")
        );
    }
}

/// The holder the operator's leader lease names; a read that fails (an API
/// server slow under the tests' load) is tried again for up to 10 s.
pub async fn lease_holder(leases: &Api<Lease>) -> Option<String> {
    let started = std::time::Instant::now();
    loop {
        match leases.get_opt("kappa-operator-leader").await {
            Ok(lease) => return lease.and_then(|lease| lease.spec?.holder_identity),
            Err(error) if started.elapsed() > Duration::from_secs(10) => {
                println!("reading the leader lease: {error}");
                return None;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Applies YAML `manifest` (written under the testbed's state as `file`) in `ns`.
pub fn apply_manifest(testbed: &Testbed, ns: &str, file: &str, manifest: &str) {
    let path = testbed.state.join(file);
    std::fs::write(&path, manifest).expect("manifest written");
    testbed.kubectl(&["-n", ns, "apply", "-f", &path.to_string_lossy()]);
}

/// Starts a Tansu broker as pod `name` in `ns` (in-memory storage,
/// advertising its pod IP, which the host reaches over the node's bridge);
/// returns its `ip:port` once it is ready.
pub fn tansu_pod(testbed: &Testbed, ns: &str, name: &str) -> String {
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
    - name: broker
      image: kappa-tansu:0.6.0
      imagePullPolicy: Never
      env:
        - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
        - {{name: CLUSTER_ID, value: {name}}}
        - {{name: LISTENER_URL, value: "tcp://0.0.0.0:9092"}}
        - {{name: ADVERTISED_LISTENER_URL, value: "tcp://$(POD_IP):9092"}}
        - {{name: STORAGE_ENGINE, value: "memory://{name}/"}}
      ports: [{{containerPort: 9092}}]
      readinessProbe: {{tcpSocket: {{port: 9092}}, periodSeconds: 1}}
"#
    );
    apply_manifest(testbed, ns, &format!("{ns}-{name}.yaml"), &manifest);
    wait_pod_ready(testbed, ns, name);
    let ip = testbed.jsonpath(ns, &["pod", name], "{.status.podIP}");
    format!("{}:9092", ip.trim())
}

/// Starts the brokers `kafka-blue` and `kafka-green` as pods in `ns` and
/// creates the set of those two clusters with the stream `orders` on
/// `topic`, writing to `blue`; returns the brokers' addresses.
pub async fn pod_cluster_set(
    testbed: &Testbed,
    client: &kube::Client,
    ns: &str,
    topic: &str,
) -> [String; 2] {
    let brokers = [
        tansu_pod(testbed, ns, "kafka-blue"),
        tansu_pod(testbed, ns, "kafka-green"),
    ];
    super::routing::create_set(client, ns, &brokers, topic).await;
    brokers
}

/// Creates consumer-engine Pipeline `name` with `spec` in `ns` and waits
/// up to three minutes for its replicas to be ready.
pub async fn run_consumer_pipeline(
    client: &kube::Client,
    ns: &str,
    name: &str,
    spec: serde_json::Value,
) {
    super::create(client, ns, super::objects::pipeline(name, spec))
        .await
        .expect("pipeline");
    super::wait_for_ready(
        client,
        ns,
        "Pipeline",
        name,
        Duration::from_secs(180),
        |c| c.reason == "ReplicasReady",
    )
    .await;
}

/// A builtin template running the testbed's Tansu image, one node, with `memory`.
pub fn tansu_template(memory: &str) -> serde_json::Value {
    json!({"provider": "builtin", "builtin": {
        "image": "kappa-kafka-tansu:0.6.0", "version": "0.6.0", "nodes": 1,
        "storage": {"size": "1Gi", "ephemeral": true},
        "resources": {"memory": memory}
    }})
}

/// Waits for the set `events` to be Ready.
pub async fn set_ready(
    client: &kube::Client,
    ns: &str,
    within: Duration,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    super::wait_for_ready(client, ns, "KafkaClusterSet", "events", within, |c| {
        c.status == "True"
    })
    .await
}

/// The spec of a consumer-engine Pipeline running the demo app's `consume`
/// on the stream `orders` of the set `events`, in `state`.
pub fn demo_consumer(state: &str) -> serde_json::Value {
    demo_app(state, "consume")
}

/// The spec of Pipeline `totals` running `kappa-demo aggregate`: per-key
/// count and sum of `orders`, written to stream `totals`.
pub fn demo_aggregator(state: &str) -> serde_json::Value {
    let mut spec = demo_app(state, "aggregate");
    spec["outputs"] = json!([{"stream": "totals"}]);
    spec
}

fn demo_app(state: &str, mode: &str) -> serde_json::Value {
    let version = env!("CARGO_PKG_VERSION");
    json!({
        "clusterSet": "events", "state": state,
        "inputs": [{"stream": "orders", "consumerGroup": "totals-app"}],
        "engine": {"type": "consumer", "consumer": {"replicas": 1, "template": {"spec": {
            "containers": [{"name": "app", "image": format!("kappa-demo:{version}"),
                            "imagePullPolicy": "Never", "args": [mode]}]}}}}
    })
}

/// Waits up to two minutes for pod `name` in `ns` to be Ready.
pub fn wait_pod_ready(testbed: &Testbed, ns: &str, name: &str) {
    testbed.kubectl(&[
        "-n",
        ns,
        "wait",
        "--for=condition=Ready",
        &format!("pod/{name}"),
        "--timeout=120s",
    ]);
}

/// A hostPath PersistentVolume of the testbed's for folder `path` of the
/// host, bound to the claim `claim` in `ns` alone (storage class
/// `host-folder`, 1Gi), whoever creates that claim; the folder is writable
/// by every user.
pub fn host_folder_volume(testbed: &Testbed, ns: &str, claim: &str, path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).expect("host folder");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o1777))
        .expect("host folder writable");
    let manifest = format!(
        r#"
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {ns}-{claim}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: host-folder
  claimRef: {{namespace: {ns}, name: {claim}}}
  hostPath: {{path: {path}, type: Directory}}
"#,
        path = path.display()
    );
    apply_manifest(testbed, ns, &format!("{ns}-{claim}-volume.yaml"), &manifest);
}

/// A PersistentVolumeClaim `claim` in `ns` bound to folder `path` of the
/// host through [`host_folder_volume`], so that pods mount a folder the
/// test reads without a hostPath volume of their own.
pub fn host_folder_claim(testbed: &Testbed, ns: &str, claim: &str, path: &std::path::Path) {
    host_folder_volume(testbed, ns, claim, path);
    let manifest = format!(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {claim}}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: host-folder
  volumeName: {ns}-{claim}
  resources: {{requests: {{storage: 1Gi}}}}
"#
    );
    apply_manifest(testbed, ns, &format!("{ns}-{claim}.yaml"), &manifest);
}
