//! A consumer-engine pipeline running the demo application on the node.

use super::*;

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
