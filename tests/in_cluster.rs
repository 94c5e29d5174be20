//! The operator in-cluster on the testbed's real node, deployed from
//! `manifests/` under its own ServiceAccount: the node runs pods, Services and
//! DNS work from pods, `kubectl logs`/`exec` work, the validation tests pass
//! against the in-cluster operator, no call is refused, and killing the
//! leader pod while it reconciles converges. Applications of the routing
//! client follow the in-cluster operator's moves of the write cluster.

mod common;

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

/// How the API server reports a refusal of the operator's webhook.
const DENIED: &str = "admission webhook \"validate.kappa.dev\" denied the request";

/// `kubectl apply` of `object` in `ns` (a server-side dry run when
/// `dry_run`): its exit status and error output.
fn apply(testbed: &Testbed, ns: &str, object: &serde_json::Value, dry_run: bool) -> (bool, String) {
    let file = tempfile::Builder::new()
        .suffix(".json")
        .tempfile()
        .expect("object file");
    std::fs::write(file.path(), object.to_string()).expect("object written");
    let path = file.path().to_string_lossy().into_owned();
    let mut args = vec!["-n", ns, "apply", "-f", &path];
    if dry_run {
        args.push("--dry-run=server");
    }
    let output = testbed.kubectl_output(&args);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `object` is refused by the webhook with `field` named.
fn assert_refused(
    testbed: &Testbed,
    ns: &str,
    what: &str,
    object: &serde_json::Value,
    field: &str,
    dry_run: bool,
) {
    let (accepted, stderr) = apply(testbed, ns, object, dry_run);
    assert!(!accepted, "{what} (dry run: {dry_run}): accepted");
    assert!(
        stderr.contains(DENIED),
        "{what} (dry run: {dry_run}): not the webhook's refusal: {stderr}"
    );
    assert!(
        stderr.contains(field),
        "{what} (dry run: {dry_run}): {field} not named: {stderr}"
    );
}

/// Every admission case is refused at `kubectl apply` and at its
/// server-side dry run, naming the field.
fn assert_admission_refusals(testbed: &Testbed, ns: &str) {
    let cases = admission_cases();
    assert!(cases.len() >= 20, "{} cases", cases.len());
    for (what, object, field) in &cases {
        for dry_run in [true, false] {
            assert_refused(testbed, ns, what, object, field, dry_run);
        }
    }
    println!(
        "{} invalid objects refused at admission, with and without --dry-run=server",
        cases.len()
    );
}

/// Changes an existing object cannot take are refused against the stored
/// object: a recorded cluster's settings, fewer partitions, what a
/// Savepoint snapshots.
fn assert_update_refusals(testbed: &Testbed, ns: &str) {
    let streams = json!([{"name": "orders", "partitions": 6}, {"name": "totals"}]);
    let set = kcs(with(valid_kcs_spec(), "/streams", streams.clone()));
    assert!(apply(testbed, ns, &set, false).0, "the set is accepted");
    let started = Instant::now();
    while testbed
        .jsonpath(
            ns,
            &["kafkaclusterset", "events"],
            "{.status.clusters[0].specHash}",
        )
        .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the operator records cluster `blue`"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let moved = with(
        set.clone(),
        "/spec/template",
        json!({"provider": "external", "external": {"bootstrapServers": ["elsewhere:9092"]}}),
    );
    assert_refused(
        testbed,
        ns,
        "a recorded cluster's new servers",
        &moved,
        "spec.clusters[0]: the settings of cluster `blue` changed",
        false,
    );
    let fewer = with(set.clone(), "/spec/streams/0/partitions", json!(3));
    assert_refused(
        testbed,
        ns,
        "fewer partitions",
        &fewer,
        "spec.streams[0].partitions: cannot go down from 6 to 3",
        false,
    );
    let more = with(set, "/spec/streams/0/partitions", json!(8));
    assert!(
        apply(testbed, ns, &more, true).0,
        "more partitions are fine"
    );

    let taken = savepoint(
        "before-upgrade",
        json!({"pipelineRef": "job", "type": "flink", "targetDirectory": "s3://a"}),
    );
    assert!(
        apply(testbed, ns, &taken, false).0,
        "the savepoint is accepted"
    );
    let elsewhere = with(taken, "/spec/targetDirectory", json!("s3://b"));
    assert_refused(
        testbed,
        ns,
        "a savepoint moved",
        &elsewhere,
        "spec.targetDirectory: cannot change",
        false,
    );
}

/// With one of the two replicas deleted, every admission call is still
/// answered by the webhook until a new replica is ready.
fn assert_admission_survives_a_replica_leaving(testbed: &Testbed, ns: &str) {
    let pods = operator_pods(testbed);
    let (what, object, field) = admission_cases().remove(0);
    testbed.kubectl(&[
        "-n",
        "kappa-system",
        "delete",
        "pod",
        &pods[0],
        "--wait=false",
    ]);
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_secs(20) {
        assert_refused(testbed, ns, what, &object, field, true);
        answered += 1;
    }
    wait_for_rollout(testbed);
    assert_refused(testbed, ns, what, &object, field, true);
    println!(
        "admission answered {answered} calls in the 20 s after replica {} was deleted",
        pods[0]
    );
}

#[tokio::test]
async fn the_operator_runs_in_cluster_and_survives_losing_its_leader() {
    let testbed = Testbed::with_node();
    let client = testbed.client().await;

    // Pods, a Service, cluster DNS, kubectl exec.
    let ns = testbed.namespace("node").await;
    shell_pod(
        testbed,
        &ns,
        "web",
        "echo served-by-web > /tmp/index.html && httpd -f -p 8080 -h /tmp",
    );
    testbed.kubectl(&[
        "-n",
        &ns,
        "expose",
        "pod",
        "web",
        "--port=80",
        "--target-port=8080",
    ]);
    shell_pod(testbed, &ns, "client", "sleep 3600");
    let url = format!("http://web.{ns}.svc.cluster.local/index.html");
    let mut fetched = String::new();
    for _ in 0..60 {
        let output =
            testbed.kubectl_output(&["-n", &ns, "exec", "client", "--", "wget", "-qO-", &url]);
        fetched = String::from_utf8_lossy(&output.stdout).into_owned();
        if fetched.contains("served-by-web") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        fetched.contains("served-by-web"),
        "a pod reaches a Service by its DNS name: {fetched:?}"
    );
    assert_headless_pod_names_resolve(testbed, &ns).await;

    // The operator from manifests/, under its ServiceAccount and shipped RBAC.
    deploy_operator(testbed);
    assert_eq!(operator_pods(testbed).len(), 2, "two replicas run");
    let examples = testbed.namespace("in-cluster-examples").await;
    assert_examples_valid(&client, &examples).await;
    let admission = testbed.namespace("admission").await;
    assert_admission_refusals(testbed, &admission);
    assert_update_refusals(testbed, &admission);
    assert_admission_survives_a_replica_leaving(testbed, &admission);
    // Without the webhook, the reconcile's validation is the backstop: the
    // same objects are accepted and their conditions say what is wrong.
    testbed.kubectl(&["delete", "validatingwebhookconfiguration", "kappa-operator"]);
    let semantic = testbed.namespace("in-cluster").await;
    assert_semantic_verdicts(testbed, &client, &semantic).await;
    assert_pods_logged_no_refusal(testbed);

    // Kill the leader pod while it reconciles a burst of new objects.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kappa-system");
    let leader = lease_holder(&leases)
        .await
        .expect("a leader holds the lease");
    let burst = testbed.namespace("burst").await;
    let count = 100;
    for i in 0..count {
        create(
            &client,
            &burst,
            pipeline(&format!("job-{i}"), valid_pipeline_spec()),
        )
        .await
        .expect("pipeline");
        if i == count / 4 {
            testbed.kubectl(&[
                "-n",
                "kappa-system",
                "delete",
                "pod",
                &leader,
                "--grace-period=0",
                "--force",
                "--wait=false",
            ]);
        }
    }
    let killed_at = Instant::now();
    let api = kappa_api(&client, &burst, "Pipeline");
    let mut missing = count;
    while killed_at.elapsed() < Duration::from_secs(90) {
        let list = api.list(&Default::default()).await.expect("pipelines");
        missing = list
            .items
            .iter()
            .filter(|p| p.data["status"]["observedGeneration"] != json!(p.metadata.generation))
            .count();
        if missing == 0 && list.items.len() == count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        missing, 0,
        "every pipeline got its status after the leader was killed"
    );
    println!(
        "all {count} pipelines converged {:?} after the leader pod was killed",
        killed_at.elapsed()
    );
    let new_leader = lease_holder(&leases).await.expect("a new leader");
    assert_ne!(new_leader, leader, "another replica took over");
    // The killed leader's replacement starts while the webhook's
    // configuration is gone: it serves its certificate all the same and
    // becomes ready.
    wait_for_rollout(testbed);
    assert_pods_logged_no_refusal(testbed);
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

/// A consumer-engine pipeline runs the demo application as a StatefulSet of
/// two pods that find their set's discovery document, stream, group and
/// share of the partitions without any configuration of their own (each
/// reads only its own partitions, and together they read every record
/// once); suspended, it scales to zero; down to one replica, the two pods
/// stop before the one that reads everything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_pipeline_runs_its_app_with_the_streams_in_its_environment() {
    use kappa_operator::client::producer::ProducerSettings;
    use kappa_operator::client::{Credentials, RoutedProducer};

    let testbed = Testbed::with_node();
    deploy_operator(testbed);
    let client = testbed.client().await;
    let ns = testbed.namespace("engine").await;
    let brokers = pod_cluster_set(testbed, &client, &ns, "engine-orders").await;
    let producer = RoutedProducer::start(
        common::routing::from_api(&client, &ns),
        ProducerSettings {
            id: "engine-test".into(),
            acknowledge_through: Some(client.clone()),
            credentials: Credentials::default(),
            config: Default::default(),
        },
    )
    .await
    .expect("producer");
    let mut written = std::collections::BTreeMap::new();
    for round in 0..10u64 {
        for key in KEYS {
            producer
                .send("orders", key.as_bytes(), round.to_string().as_bytes())
                .await
                .expect("delivered");
            written.insert(key.to_string(), round + 1);
        }
    }

    let mut spec = demo_consumer("running");
    spec["engine"]["consumer"]["replicas"] = json!(REPLICAS);
    run_consumer_pipeline(&client, &ns, "totals", spec).await;
    let logs = app_logs(testbed, &ns, 30).await;
    let mut check = kappa_operator::client::check::Check::default();
    for (ordinal, log) in logs.iter().enumerate() {
        let others: Vec<&str> = log
            .lines()
            .filter(|line| read_partition(line).is_some_and(|p| p % REPLICAS != ordinal as i32))
            .collect();
        assert!(
            others.is_empty(),
            "totals-{ordinal} read another's partitions: {others:?}"
        );
        for (key, number) in numbered_lines(log) {
            check.read(&key, number);
        }
    }
    let report = check.report(&written);
    println!("the consumer engine's app: {report}");
    assert!(report.clean() && report.read == 30, "{report}\n{logs:?}");
    let env = testbed.jsonpath(
        &ns,
        &["statefulset", "totals"],
        "{.spec.template.spec.containers[0].env[*].name}",
    );
    assert!(
        [
            "KAPPA_GROUP",
            "KAPPA_DISCOVERY_DIR",
            "KAPPA_POD_NAME",
            "KAPPA_REPLICAS"
        ]
        .iter()
        .all(|name| env.contains(name)),
        "{env}"
    );

    // An offsets Savepoint is the group's committed offsets, as the broker
    // itself reports them.
    let (blue, group, topic) = (brokers[0].as_str(), "totals-app", "engine-orders");
    let started = Instant::now();
    while common::kafka::lag(blue, group, topic) != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the app commits what it read"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let at_30 = common::kafka::committed(blue, group, topic);
    let snapshot = common::objects::savepoint(
        "totals-at-30",
        json!({"pipelineRef": "totals", "type": "offsets"}),
    );
    create(&client, &ns, snapshot).await.expect("savepoint");
    let taken = common::wait_for_status(
        &client,
        &ns,
        "Savepoint",
        "totals-at-30",
        Duration::from_secs(60),
        |s| s["phase"] == "Completed",
    )
    .await;
    let recorded: std::collections::BTreeMap<i32, i64> = taken["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .map(|o| {
            assert_eq!(
                (o["cluster"].as_str(), o["topic"].as_str()),
                (Some("blue"), Some(topic))
            );
            (
                o["partition"].as_i64().expect("partition") as i32,
                o["offset"].as_i64().expect("offset"),
            )
        })
        .collect();
    assert_eq!(recorded, at_30, "the snapshot is the committed offsets");

    set_state(&client, &ns, "suspended").await;
    common::wait_for_ready(
        &client,
        &ns,
        "Pipeline",
        "totals",
        Duration::from_secs(60),
        |c| c.reason == "Suspended",
    )
    .await;
    let replicas = testbed.jsonpath(&ns, &["statefulset", "totals"], "{.spec.replicas}");
    assert_eq!(replicas, "0");

    // Fifteen records written while it is suspended are its lag.
    let written_at = Instant::now();
    for round in 10..15u64 {
        for key in KEYS {
            producer
                .send("orders", key.as_bytes(), round.to_string().as_bytes())
                .await
                .expect("delivered");
        }
    }
    producer.close().await.expect("closed");
    println!(
        "after fifteen more: high watermarks {:?}, committed {:?}",
        common::kafka::high_watermarks(blue, topic),
        common::kafka::committed(blue, group, topic)
    );
    let status = common::wait_for_status(
        &client,
        &ns,
        "Pipeline",
        "totals",
        Duration::from_secs(60),
        |s| s["totalLagRecords"] == 15 && s["lag"][0]["seconds"].as_f64() >= Some(3.0),
    )
    .await;
    let computed = common::kafka::lag(blue, group, topic);
    println!("lag reported {} and computed {computed}", status["lag"]);
    assert_eq!(computed, 15);
    assert_eq!(status["lag"][0]["records"], 15);
    // The oldest unread record is one of the fifteen: no older than they are.
    let seconds = status["lag"][0]["seconds"].as_f64().unwrap_or_default();
    assert!(
        seconds <= written_at.elapsed().as_secs_f64().ceil(),
        "{seconds} s behind, written {:?} ago",
        written_at.elapsed()
    );

    // Resumed, it reads them and its lag goes to zero.
    set_state(&client, &ns, "running").await;
    common::wait_for_status(
        &client,
        &ns,
        "Pipeline",
        "totals",
        Duration::from_secs(90),
        |s| s["totalLagRecords"] == 0 && s["lag"][0]["seconds"] == 0.0 && s["phase"] == "Running",
    )
    .await;
    assert_eq!(common::kafka::lag(blue, group, topic), 0);

    // Restoring the snapshot moves the group back: the next pods read the
    // fifteen records again, and only those.
    let restore = json!({"restoreFrom": {"savepoint": "totals-at-30"}});
    patch_spec(&client, &ns, "totals", restore).await;
    let status = common::wait_for_status(
        &client,
        &ns,
        "Pipeline",
        "totals",
        Duration::from_secs(120),
        |s| s["restoredFrom"] == "totals-at-30" && s["phase"] == "Running",
    )
    .await;
    assert_eq!(status["history"][0]["event"], "Restored");
    let logs = app_logs(testbed, &ns, 15).await;
    let mut reread: Vec<(String, u64)> = logs.iter().flat_map(|log| numbered_lines(log)).collect();
    reread.sort();
    let expected: Vec<(String, u64)> = KEYS
        .iter()
        .flat_map(|key| (10..15u64).map(move |n| (key.to_string(), n)))
        .collect();
    assert_eq!(reread, expected, "{logs:?}");

    // One replica fewer: the two pods that split the partitions in two stop
    // before one pod reads them all.
    let one = json!({"engine": {"consumer": {"replicas": 1}}});
    patch_spec(&client, &ns, "totals", one).await;
    common::wait_for_status(
        &client,
        &ns,
        "Pipeline",
        "totals",
        Duration::from_secs(60),
        |s| s["phase"] == "Resharding",
    )
    .await;
    common::wait_for_ready(
        &client,
        &ns,
        "Pipeline",
        "totals",
        Duration::from_secs(120),
        |c| c.reason == "ReplicasReady",
    )
    .await;
    let told = testbed.jsonpath(
        &ns,
        &["pods", "-l", "kappa.dev/pipeline=totals"],
        "{.items[*].spec.containers[0].env[?(@.name==\"KAPPA_REPLICAS\")].value}",
    );
    assert_eq!(told.trim(), "1", "the pods left and what they were told");
    assert_pods_logged_no_refusal(testbed);
}

/// How long the status-write test watches, and the interval at which
/// `status.lag` may change at most (`docs/pipelines.md`).
const WATCHED: Duration = Duration::from_secs(120);
const SHOWN_EVERY: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_consumer_pipelines_status_is_written_once_an_interval_at_most() {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{WatchEvent, WatchParams};

    let testbed = Testbed::with_node();
    deploy_operator(testbed);
    let client = testbed.client().await;
    let ns = testbed.namespace("writes").await;
    let brokers = pod_cluster_set(testbed, &client, &ns, "writes-orders").await;
    // An app that reads nothing: its lag grows with every record written,
    // and the age of its oldest unread record with every second. Its image
    // runs as root, so the template names a user (pods run as non-root).
    let mut spec = demo_consumer("running");
    spec["engine"]["consumer"]["template"]["spec"] = json!({
        "securityContext": {"runAsUser": 65532},
        "containers": [{"name": "app", "image": "kappa-busybox:1", "imagePullPolicy": "Never",
                        "command": ["sleep", "3600"]}]
    });
    run_consumer_pipeline(&client, &ns, "idle", spec).await;

    let pipelines = kappa_api(&client, &ns, "Pipeline");
    let from = pipelines.get("idle").await.expect("pipeline");
    let version = from
        .metadata
        .resource_version
        .clone()
        .expect("resourceVersion");
    let writer = tokio::spawn({
        let bootstrap = brokers[0].clone();
        async move {
            let started = Instant::now();
            while started.elapsed() < WATCHED {
                common::kafka::produce(&bootstrap, "writes-orders", 20).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    let params = WatchParams::default()
        .fields("metadata.name=idle")
        .timeout(WATCHED.as_secs() as u32 + 30);
    let mut events = pipelines
        .watch(&params, &version)
        .await
        .expect("watch")
        .boxed();
    let started = Instant::now();
    let mut last = from.data["status"].clone();
    let mut writes = Vec::new();
    while let Ok(Ok(Some(event))) =
        tokio::time::timeout(WATCHED.saturating_sub(started.elapsed()), events.try_next()).await
    {
        if let WatchEvent::Modified(object) = event {
            if object.data["status"] != last {
                last = object.data["status"].clone();
                writes.push((started.elapsed(), last["lag"].clone()));
            }
        }
    }
    assert!(
        started.elapsed() + Duration::from_secs(1) >= WATCHED,
        "the watch ended after {:?}",
        started.elapsed()
    );
    writer.await.expect("writer");
    for (at, lag) in &writes {
        println!("status written at {:>5.1} s: lag {lag}", at.as_secs_f64());
    }
    let most = (WATCHED.as_secs() / SHOWN_EVERY.as_secs()) as usize + 1;
    assert!(
        writes.len() <= most,
        "{} status writes in {WATCHED:?}, at most {most} expected",
        writes.len()
    );
    assert!(
        writes.len() >= 2,
        "status showed the growing lag {} time(s) in {WATCHED:?}",
        writes.len()
    );
}

/// Sets the pipeline `totals` running or suspended.
async fn set_state(client: &kube::Client, ns: &str, state: &str) {
    patch_spec(client, ns, "totals", json!({ "state": state })).await;
}

/// Replicas of the consumer pipeline `totals`.
const REPLICAS: i32 = 2;

/// The keys written to `orders`, which has three partitions: the default
/// partitioner (CRC32 of the key) puts them into partitions 0, 2 and 1, so
/// that both replicas have records to read.
const KEYS: [&str; 3] = ["a", "b", "g"];

/// The logs of the current pods of StatefulSet `totals`, by ordinal, once
/// they hold `lines` records together (or after a minute).
async fn app_logs(testbed: &Testbed, ns: &str, lines: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let logs: Vec<String> = (0..REPLICAS)
            .map(|ordinal| {
                let pod = format!("pod/totals-{ordinal}");
                let output = testbed.kubectl_output(&["-n", ns, "logs", &pod]);
                String::from_utf8_lossy(&output.stdout).into_owned()
            })
            .collect();
        let read: usize = logs.iter().map(|log| numbered_lines(log).len()).sum();
        if read >= lines || started.elapsed() > Duration::from_secs(60) {
            return logs;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The partition a line of the demo consumer names (`key number cluster
/// partition offset`).
fn read_partition(line: &str) -> Option<i32> {
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The `key number` lines the demo consumer prints.
fn numbered_lines(log: &str) -> Vec<(String, u64)> {
    log.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?.to_string(), fields.next()?.parse().ok()?))
        })
        .collect()
}

/// An application-mode Flink pipeline: the operator starts a JobManager and
/// a TaskManager from the testbed's Flink image on the node, and the job is
/// snapshotted, upgraded from its savepoint, suspended and resumed through
/// the JobManager Service, as in session mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_application_mode_job_runs_on_the_node_and_upgrades_from_its_savepoint() {
    use common::flink::{
        completed_savepoint, on_disk, redeployed, running, upgraded_to_parallelism, FlinkRest,
        JOB_STARTS_WITHIN,
    };
    use common::objects::{kcs, valid_kcs_spec};
    use common::{status, wait_for_ready};

    let testbed = Testbed::with_node();
    deploy_operator(testbed);
    let client = testbed.client().await;
    let ns = testbed.namespace("application").await;
    create(&client, &ns, kcs(valid_kcs_spec()))
        .await
        .expect("set created");
    // Savepoints and checkpoints go to a host folder the pods mount through
    // a claim (a hostPath volume of their own would break the restricted
    // Pod Security Standard, which e2e/checks/restricted-pods enforces).
    let state = testbed.state.join("flink-application");
    common::node::host_folder_claim(testbed, &ns, "flink-state", &state);
    let on_host = |location: &str| {
        let inside = on_disk(location)
            .strip_prefix("/flink-state")
            .expect("under /flink-state");
        state.join(inside)
    };
    let flink = json!({
        "mode": "application",
        "image": "kappa-flink:2.3.0",
        "jarUri": "local:///opt/flink/usrlib/keyed-count.jar",
        "args": ["50"],
        "taskManager": {"replicas": 1, "taskSlots": 2},
        "flinkConfiguration": {
            "state.savepoints.dir": "file:///flink-state/savepoints",
            "state.checkpoints.dir": "file:///flink-state/checkpoints",
            "execution.checkpointing.interval": "5s",
        },
        "podTemplate": {"spec": {
            "containers": [{"name": "flink-main-container", "imagePullPolicy": "Never",
                            "volumeMounts": [{"name": "state", "mountPath": "/flink-state"}]}],
            "volumes": [{"name": "state", "persistentVolumeClaim": {"claimName": "flink-state"}}]
        }}
    });
    let spec = json!({
        "clusterSet": "events",
        "inputs": [{"stream": "orders"}],
        "outputs": [{"stream": "totals"}],
        "engine": {"type": "flink", "flink": flink},
    });
    create(&client, &ns, pipeline("job", spec))
        .await
        .expect("pipeline");
    let first = running(&client, &ns, "job").await;
    let rest = status(&client, &ns, "Pipeline", "job").await["job"]["restUrl"]
        .as_str()
        .expect("the JobManager Service's URL")
        .to_string();
    let flink = FlinkRest { url: rest };
    assert_eq!(
        flink.job_state(&first).await,
        "RUNNING",
        "Flink runs {first}"
    );
    let components = testbed.jsonpath(
        &ns,
        &["pods", "-l", "kappa.dev/pipeline=job"],
        "{.items[*].metadata.labels.kappa\\.dev/component}",
    );
    assert!(
        components.contains("jobmanager") && components.contains("taskmanager"),
        "{components}"
    );

    // A Savepoint resource, written through the JobManager Service.
    let snapshot = completed_savepoint(&client, &ns, "first", "job").await;
    let location = snapshot["location"]
        .as_str()
        .expect("a location")
        .to_string();
    assert!(on_host(&location).join("_metadata").is_file(), "{location}");

    // A parallelism change: the JobManager is started again with
    // --fromSavepoint, and Flink says the new job was restored from it.
    let second = upgraded_to_parallelism(&client, &ns, "job", &first, 2).await;
    let (path, is_savepoint) = flink.restored_from(&second).await;
    println!("application job upgraded {first} -> {second} from {path:?}");
    let recorded = status(&client, &ns, "Pipeline", "job").await["restoredFrom"].clone();
    assert_eq!(Some(json!(path.clone())), Some(recorded));
    assert_eq!(is_savepoint, Some(true));
    assert!(on_host(path.as_deref().expect("a path"))
        .join("_metadata")
        .is_file());
    assert_eq!(
        flink.get(&format!("/jobs/{second}")).await["vertices"][0]["parallelism"],
        2
    );
    let args = testbed.jsonpath(
        &ns,
        &["deployment", "job-jobmanager"],
        "{.spec.template.spec.containers[0].args}",
    );
    assert!(
        args.contains(&second) && args.contains("--fromSavepoint"),
        "{args}"
    );

    // Suspended: no TaskManager, the JobManager kept; resumed from the savepoint.
    patch_spec(&client, &ns, "job", json!({"state": "suspended"})).await;
    wait_for_ready(&client, &ns, "Pipeline", "job", JOB_STARTS_WITHIN, |c| {
        c.reason == "Suspended"
    })
    .await;
    let task_managers =
        testbed.jsonpath(&ns, &["deployment", "job-taskmanager"], "{.spec.replicas}");
    assert_eq!(task_managers, "0");
    assert_eq!(flink.job_state(&second).await, "FINISHED");
    let kept = status(&client, &ns, "Pipeline", "job").await["transition"]["restoreFrom"].clone();
    patch_spec(&client, &ns, "job", json!({"state": "running"})).await;
    let third = redeployed(&client, &ns, "job", &second, "Resumed").await;
    let (path, _) = flink.restored_from(&third).await;
    assert_eq!(
        Some(json!(path)),
        Some(kept),
        "resumed from the suspension's savepoint"
    );

    // Deleting the pipeline takes its Flink cluster with it.
    kappa_api(&client, &ns, "Pipeline")
        .delete("job", &Default::default())
        .await
        .expect("pipeline deleted");
    let started = Instant::now();
    loop {
        let left = testbed.kubectl(&[
            "-n",
            &ns,
            "get",
            "deployments,services,configmaps",
            "-l",
            "kappa.dev/pipeline=job",
            "-o",
            "name",
        ]);
        if left.trim().is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "left behind: {left}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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
