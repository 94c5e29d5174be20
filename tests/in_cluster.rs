//! The operator in-cluster on the testbed's real node, deployed from
//! `manifests/` under its own ServiceAccount: the node runs pods, Services and
//! DNS work from pods, `kubectl logs`/`exec` work, the validation tests pass
//! against the in-cluster operator, no call is refused, and killing the
//! leader pod while it reconciles converges. Applications of the routing
//! client follow the in-cluster operator's moves of the write cluster.

#[path = "in_cluster/admission.rs"]
mod admission;
#[path = "in_cluster/application_mode.rs"]
mod application_mode;
mod common;
#[path = "in_cluster/consumer_app.rs"]
mod consumer_app;

use std::time::{Duration, Instant};

use common::flink::patch_spec;
use common::gitops::Repository;
use common::node::{
    apply_manifest, assert_pods_logged_no_refusal, demo_aggregator, demo_consumer, deploy_operator,
    host_folder_volume, lease_holder, operator_pods, pod_cluster_set, run_consumer_pipeline,
    set_ready, tansu_pod, tansu_template, wait_for_rollout, wait_pod_ready,
};
use common::objects::{
    admission_cases, assert_examples_valid, assert_semantic_verdicts, kcs, pipeline, savepoint,
    valid_kcs_spec, valid_pipeline_spec, with,
};
use common::{create, kappa_api, Testbed};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::json;

/// A pod with a shell in the testbed's busybox image; returns its name.
fn shell_pod(testbed: &Testbed, ns: &str, name: &str, command: &str) {
    testbed.kubectl(&[
        "-n",
        ns,
        "run",
        name,
        "--image=kappa-busybox:1",
        "--image-pull-policy=Never",
        "--restart=Never",
        "--labels",
        &format!("app={name}"),
        "--command",
        "--",
        "sh",
        "-c",
        command,
    ]);
    wait_pod_ready(testbed, ns, name);
}

/// A StatefulSet pod behind a headless Service has a DNS name of its own.
async fn assert_headless_pod_names_resolve(testbed: &Testbed, ns: &str) {
    apply_manifest(
        testbed,
        ns,
        "headless.yaml",
        r#"
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, selector: {app: db}, ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
        - {name: db, image: kappa-busybox:1, imagePullPolicy: Never, command: [sleep, "3600"]}
"#,
    );
    testbed.kubectl(&[
        "-n",
        ns,
        "rollout",
        "status",
        "statefulset/db",
        "--timeout=120s",
    ]);
    let pod_ip = testbed.jsonpath(ns, &["pod", "db-0"], "{.status.podIP}");
    let name = format!("db-0.db.{ns}.svc.cluster.local");
    let mut answer = String::new();
    for _ in 0..60 {
        let output = testbed.kubectl_output(&["-n", ns, "exec", "client", "--", "nslookup", &name]);
        answer = String::from_utf8_lossy(&output.stdout).into_owned();
        if answer.contains(pod_ip.trim()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{name} does not resolve to {pod_ip}: {answer}");
}

/// The testbed's Tansu image runs as a pod and answers the Kafka protocol
/// on its pod IP, which the host reaches over the node's bridge.
#[tokio::test]
async fn a_tansu_broker_pod_speaks_kafka() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::ClientConfig;

    let testbed = Testbed::with_node();
    let ns = testbed.namespace("tansu").await;
    let broker = tansu_pod(testbed, &ns, "broker");

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker)
        .create()
        .expect("admin client");
    let created = admin
        .create_topics(
            &[NewTopic::new("orders", 3, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("CreateTopics answers");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let metadata = admin
        .inner()
        .fetch_metadata(Some("orders"), Duration::from_secs(10))
        .expect("Metadata answers");
    let topic = &metadata.topics()[0];
    assert_eq!(topic.name(), "orders");
    assert_eq!(topic.partitions().len(), 3, "partitions the broker reports");
}

/// A builtin cluster: its StatefulSet, Services, ConfigMap and
/// PodDisruptionBudget on the real API server, its pod running the
/// apache/kafka contract (served by Tansu) on the node, the in-cluster
/// operator reaching it through the bootstrap Service's DNS name, and
/// garbage collection when the set goes.
#[tokio::test]
async fn a_builtin_cluster_runs_as_pods_and_goes_with_its_set() {
    let testbed = Testbed::with_node();
    deploy_operator(testbed);
    let client = testbed.client().await;
    let ns = testbed.namespace("builtin").await;
    let mut template = tansu_template("256Mi");
    template["builtin"]["config"] = json!({"log.retention.ms": "3600000"});
    // Each broker's log directory on a claim, deleted when its cluster retires.
    template["builtin"]["storage"] =
        json!({"size": "1Gi", "storageClass": "host-folder", "deleteClaims": true});
    for cluster in ["blue", "green"] {
        let folder = testbed.state.join(format!("{ns}-{cluster}-data"));
        host_folder_volume(testbed, &ns, &format!("data-events-{cluster}-0"), &folder);
    }
    let set = json!({
        "apiVersion": "kappa.dev/v1alpha1",
        "kind": "KafkaClusterSet",
        "metadata": {"name": "events"},
        "spec": {
            "template": template,
            "clusters": [{"name": "blue"}, {"name": "green", "role": "standby"}],
            "streams": [{"name": "orders", "partitions": 3}],
            "routing": {"writeCluster": "blue"}
        }
    });
    let created = create(&client, &ns, set).await.expect("set created");
    let uid = created.metadata.uid.clone().expect("uid");
    let ready = set_ready(&client, &ns, Duration::from_secs(180)).await;
    assert_eq!(ready.reason, "ClustersReady", "{}", ready.message);

    let get = |kind: &str, name: &str| -> serde_json::Value {
        let text = testbed.kubectl(&["-n", &ns, "get", kind, name, "-o", "json"]);
        serde_json::from_str(&text).expect("object JSON")
    };
    for (kind, name) in [
        ("statefulset", "events-blue"),
        ("service", "events-blue"),
        ("service", "events-blue-nodes"),
        ("configmap", "events-blue-config"),
        ("poddisruptionbudget", "events-blue"),
    ] {
        let object = get(kind, name);
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["uid"].as_str(), owner["controller"].as_bool()),
            (Some(uid.as_str()), Some(true)),
            "{kind}/{name} is owned by the set"
        );
        let labels = &object["metadata"]["labels"];
        assert_eq!(
            labels["app.kubernetes.io/managed-by"], "kappa-operator",
            "{kind}/{name}"
        );
        assert_eq!(
            (
                &labels["kappa.dev/cluster-set"],
                &labels["kappa.dev/cluster"]
            ),
            (&json!("events"), &json!("blue")),
            "{kind}/{name}"
        );
        assert!(
            labels.get("app.kubernetes.io/instance").is_none(),
            "{kind}/{name}: a label GitOps tools claim objects by"
        );
    }
    let stateful_set = get("statefulset", "events-blue");
    assert_eq!(stateful_set["spec"]["serviceName"], "events-blue-nodes");
    assert_eq!(stateful_set["status"]["readyReplicas"], 1);
    let container = &stateful_set["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(
        get("service", "events-blue-nodes")["spec"]["clusterIP"],
        "None"
    );
    let config = get("configmap", "events-blue-config");
    assert_eq!(config["data"]["KAFKA_LOG_RETENTION_MS"], "3600000");
    assert_eq!(config["data"]["KAFKA_PROCESS_ROLES"], "broker,controller");

    // The topic, as the broker behind the bootstrap Service reports it.
    let cluster_ip = get("service", "events-blue")["spec"]["clusterIP"]
        .as_str()
        .expect("cluster IP")
        .to_string();
    assert_eq!(
        common::kafka::partitions_on(&format!("{cluster_ip}:9092"), "orders"),
        Some(3)
    );
    let document = common::kafka::discovery(&client, &ns, "events")
        .await
        .expect("document");
    assert_eq!(
        document.clusters[0].bootstrap_servers,
        format!("events-blue.{ns}.svc.cluster.local:9092")
    );

    // Writes move to green (no producer holds a Lease, so nothing to wait
    // for), then blue leaves the spec: with no consumer group behind, it is
    // retired and its objects deleted while green's stay.
    let params = kube::api::PatchParams::default();
    let set_api = kappa_api(&client, &ns, "KafkaClusterSet");
    let move_writes = json!({"spec": {"routing": {"writeCluster": "green"}}});
    set_api
        .patch("events", &params, &kube::api::Patch::Merge(&move_writes))
        .await
        .expect("write cluster moved");
    common::kafka::wait_for_document(&client, &ns, "events", Duration::from_secs(120), |d| {
        d.streams[0].write.cluster == "green" && d.streams[0].read[0].end_offsets.is_some()
    })
    .await;
    let drop_blue = json!({"spec": {"clusters": [{"name": "green", "role": "standby"}]}});
    set_api
        .patch("events", &params, &kube::api::Patch::Merge(&drop_blue))
        .await
        .expect("blue removed");
    let objects_of = |cluster: &str| {
        testbed.kubectl(&[
            "-n",
            &ns,
            "get",
            "statefulsets,services,configmaps,persistentvolumeclaims",
            "-l",
            &format!("kappa.dev/cluster={cluster}"),
            "-o",
            "name",
        ])
    };
    let mut left = String::new();
    for _ in 0..180 {
        left = objects_of("blue");
        if left.trim().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !left.trim().is_empty() {
        let status = testbed.jsonpath(&ns, &["kcs", "events"], "{.status}");
        let pods = testbed.kubectl(&["-n", &ns, "get", "pods", "-o", "wide"]);
        panic!("blue's objects left behind: {left}\nset status: {status}\npods:\n{pods}");
    }
    let green = objects_of("green");
    assert!(green.contains("statefulset.apps/events-green"), "{green}");
    assert!(
        green.contains("persistentvolumeclaim/data-events-green-0"),
        "green's claim is kept: {green}"
    );
    let document = common::kafka::discovery(&client, &ns, "events")
        .await
        .expect("document");
    assert!(
        document.clusters.iter().all(|c| c.name != "blue"),
        "{document:?}"
    );

    // Deleting the set deletes what it owns.
    testbed.kubectl(&[
        "-n",
        &ns,
        "delete",
        "kafkaclusterset",
        "events",
        "--wait=true",
    ]);
    let mut left = String::new();
    for _ in 0..120 {
        left = testbed.kubectl(&[
            "-n",
            &ns,
            "get",
            "statefulsets,services,configmaps,poddisruptionbudgets",
            "-l",
            "kappa.dev/cluster-set=events",
            "-o",
            "name",
        ]);
        if left.trim().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(left.trim().is_empty(), "left behind: {left}");
    assert_pods_logged_no_refusal(testbed);
}

/// Producers and a consumer of the routing client follow ten moves of the
/// write cluster driven by the operator in-cluster (its migrations waiting
/// for the producers' Leases): every record read once, in per-key order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn applications_follow_the_in_cluster_operator_across_ten_moves() {
    let testbed = Testbed::with_node();
    deploy_operator(testbed);
    let client = testbed.client().await;
    let ns = testbed.namespace("routing").await;
    common::routing::create_set(&client, &ns, &testbed.brokers, "routing-orders").await;
    let run = common::routing::flip_while_writing(
        &client,
        &ns,
        &testbed.brokers,
        "routing-orders",
        10,
        common::routing::ConsumerView::Live,
    )
    .await;
    run.assert_clean("10 moves in-cluster");

    // The demo application's image reads the same records through the
    // discovery ConfigMap mounted into its pod.
    let version = env!("CARGO_PKG_VERSION");
    let records = run.written;
    apply_manifest(
        testbed,
        &ns,
        "demo.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: reader}}
spec:
  restartPolicy: Never
  containers:
    - name: reader
      image: kappa-demo:{version}
      imagePullPolicy: Never
      args: [consume, --discovery-dir, /etc/kappa/discovery, --stream, orders,
             --group, demo-pod, --records, "{records}"]
      volumeMounts: [{{name: discovery, mountPath: /etc/kappa/discovery}}]
  volumes:
    - name: discovery
      configMap: {{name: events-discovery}}
"#
        ),
    );
    let started = Instant::now();
    let mut phase = String::new();
    while started.elapsed() < Duration::from_secs(180) {
        phase = testbed.jsonpath(&ns, &["pod", "reader"], "{.status.phase}");
        if phase == "Succeeded" || phase == "Failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = testbed.kubectl(&["-n", &ns, "logs", "reader"]);
    assert_eq!(phase, "Succeeded", "the demo pod: {log}");
    let mut check = kappa_operator::client::check::Check::default();
    for line in log.lines() {
        let mut fields = line.split_whitespace();
        if let (Some(key), Some(Ok(number))) = (fields.next(), fields.next().map(str::parse)) {
            check.read(key, number);
        }
    }
    let report = check.report(&run.per_key);
    println!("the demo pod: {report}");
    assert!(report.clean() && report.read == records, "{report}");
    assert_pods_logged_no_refusal(testbed);
}

/// A GitOps loop as Argo CD and Flux run it: a repository of a set, a
/// consumer job, a Backfill handing history over to that job, a move of the
/// write cluster and a Savepoint, each a commit synced server-side. Once the
/// operator has carried every commit out, the repository and the cluster
/// agree: no diff, no generation moved, the operator owning only status and
/// finalizers (the hand-off annotation it put on the job is gone).
#[tokio::test]
async fn a_gitops_repository_goes_through_a_backfill_a_migration_and_a_savepoint_without_drift() {
    let testbed = Testbed::with_node();
    deploy_operator(testbed);
    let client = testbed.client().await;
    let ns = testbed.namespace("gitops").await;
    let brokers = [
        tansu_pod(testbed, &ns, "kafka-blue"),
        tansu_pod(testbed, &ns, "kafka-green"),
    ];
    let set = |write: &str| {
        let cluster = |name: &str, role: &str, broker: &str| {
            json!({"name": name, "role": role,
                   "overrides": {"provider": "external", "external": {"bootstrapServers": [broker]}}})
        };
        kcs(json!({
            "template": tansu_template("512Mi"),
            "clusters": [cluster("blue", "primary", &brokers[0]), cluster("green", "standby", &brokers[1])],
            "streams": [{"name": "orders", "partitions": 2}, {"name": "totals", "partitions": 2}],
            "routing": {"writeCluster": write}
        }))
    };
    let mut repository = Repository::new(testbed, &ns);
    repository
        .commit(&client, "kafkaclusterset", &[set("blue")])
        .await;
    set_ready(&client, &ns, Duration::from_secs(120)).await;
    repository
        .commit(
            &client,
            "pipeline",
            &[pipeline("totals", demo_aggregator("running"))],
        )
        .await;
    common::wait_for_ready(
        &client,
        &ns,
        "Pipeline",
        "totals",
        Duration::from_secs(180),
        |c| c.reason == "ReplicasReady",
    )
    .await;

    let (from, to) = common::replay::write_source(&brokers[0], "orders", [100, 1_000, 100], 10);
    let backfill = json!({
        "apiVersion": "kappa.dev/v1alpha1", "kind": "Backfill", "metadata": {"name": "history"},
        "spec": {"pipelineRef": "totals", "from": common::replay::rfc3339(from),
                 "to": common::replay::rfc3339(to),
                 "capacity": {"clusters": 1, "parallelism": 1},
                 "completion": "handoff", "teardownAfter": "0s"}
    });
    repository.commit(&client, "backfill", &[backfill]).await;
    let done = common::wait_for_status(
        &client,
        &ns,
        "Backfill",
        "history",
        Duration::from_secs(300),
        |s| s["phase"] == "Completed" || s["phase"] == "Failed",
    )
    .await;
    assert_eq!(done["phase"], "Completed", "the Backfill: {done}");
    common::wait_for_status(
        &client,
        &ns,
        "Pipeline",
        "totals",
        Duration::from_secs(120),
        |s| s["handedOffFrom"].is_string(),
    )
    .await;

    repository
        .commit(&client, "kafkaclusterset", &[set("green")])
        .await;
    common::wait_for_status(
        &client,
        &ns,
        "KafkaClusterSet",
        "events",
        Duration::from_secs(120),
        |s| {
            s["writeCluster"] == "green"
                && s["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Reconciling" && c["status"] == "False")
        },
    )
    .await;

    let snapshot = savepoint(
        "totals-after-move",
        json!({"pipelineRef": "totals", "type": "offsets"}),
    );
    repository.commit(&client, "savepoint", &[snapshot]).await;
    common::wait_for_status(
        &client,
        &ns,
        "Savepoint",
        "totals-after-move",
        Duration::from_secs(60),
        |s| s["phase"] == "Completed",
    )
    .await;

    repository.assert_no_drift(&client).await;
    let annotations = testbed.jsonpath(&ns, &["pipeline", "totals"], "{.metadata.annotations}");
    assert!(
        !annotations.contains("kappa.dev/"),
        "the operator left annotations on the job: {annotations}"
    );
}
