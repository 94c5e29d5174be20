//! The routing client against real Tansu brokers and the real operator:
//! producers and a consumer follow the discovery document while the write
//! cluster flips back and forth; every record is read once and in per-key
//! order. The demo application; the document source's handling of bad
//! documents.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::kafka::wait_for_document;
use common::routing::{create_set, flip_while_writing, settled_on, ConsumerView};
use common::{kappa_api, Operator, Testbed};
use kappa_operator::client::producer::ProducerSettings;
use kappa_operator::client::{Credentials, Discovery, DiscoverySource, RoutedProducer};
use kube::api::{Patch, PatchParams};
use serde_json::json;

const FLIPS: usize = 10;

fn operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        Operator::start(
            Testbed::with_brokers(),
            "routing-tests",
            &["--no-leader-election"],
        )
    })
}

// A record read out of order here (about one run in five) was a consumer
// that read a cluster's records of a move back before its document had the
// end of that cluster's earlier segment: the epoch header holds it now
// (see `a_consumer_two_moves_behind_reads_in_order`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_survive_ten_flips_of_the_write_cluster() {
    let testbed = Testbed::with_brokers();
    operator();
    let client = testbed.client().await;
    let ns = testbed.namespace("routing-flips").await;
    create_set(&client, &ns, &testbed.brokers, "routing-orders").await;
    let run = flip_while_writing(
        &client,
        &ns,
        &testbed.brokers,
        "routing-orders",
        FLIPS,
        ConsumerView::Live,
    )
    .await;
    run.assert_clean(&format!("{FLIPS} moves"));

    // Green leaves the set (writes are on blue after an even number of
    // moves): once the consumer's positions are committed past its end the
    // operator retires it, and the consumer leaves it without a restart.
    let mut consumer = run.consumer;
    consumer.commit_all().await;
    let blue_only = json!({"spec": {"clusters": [
        {"name": "blue", "overrides": {"external": {"bootstrapServers": [&testbed.brokers[0]]}}}
    ]}});
    kappa_api(&client, &ns, "KafkaClusterSet")
        .patch("events", &PatchParams::default(), &Patch::Merge(&blue_only))
        .await
        .expect("green removed");
    wait_for_document(&client, &ns, "events", Duration::from_secs(60), |d| {
        d.clusters.iter().all(|c| c.name != "green")
    })
    .await;
    common::kafka::produce(&testbed.brokers[0], "routing-orders", 3).await;
    for _ in 0..3 {
        let record = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("read in time")
            .expect("a record");
        assert_eq!(record.cluster, "blue");
    }
    assert!(
        consumer
            .positions()
            .keys()
            .all(|(cluster, _)| cluster == "blue"),
        "{:?}",
        consumer.positions()
    );
    operator().assert_log_clean();
}

/// A consumer whose document is two moves behind (blue to green and back)
/// has read blue up to where the first move ended, and blue has records of
/// the move back beyond that: it must not read them before green's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_two_moves_behind_reads_in_order() {
    let testbed = Testbed::with_brokers();
    operator();
    let client = testbed.client().await;
    let ns = testbed.namespace("routing-late").await;
    create_set(&client, &ns, &testbed.brokers, "routing-late").await;
    let dir = tempfile::tempdir().expect("a directory");
    let run = flip_while_writing(
        &client,
        &ns,
        &testbed.brokers,
        "routing-late",
        2,
        ConsumerView::Late(dir.path().to_path_buf()),
    )
    .await;
    run.assert_clean("2 moves, read by a consumer that learns of them afterwards");
    operator().assert_log_clean();
}

/// Waits until `discovery` has refused `count` documents.
async fn refused(discovery: &Discovery, count: u64) {
    let started = Instant::now();
    while discovery.rejected() < count && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(discovery.rejected(), count);
}

#[tokio::test]
async fn a_bad_document_leaves_the_last_good_one_in_force() {
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("discovery.json");
    let good = |epoch: i64| {
        json!({
            "version": 1, "epoch": epoch, "namespace": "shop", "set": "events",
            "clusters": [{"name": "blue", "role": "primary", "state": "active",
                          "bootstrapServers": "127.0.0.1:1"}],
            "streams": [{"name": "orders", "write": {"cluster": "blue", "topic": "orders"},
                         "read": [{"cluster": "blue", "topic": "orders"}]}]
        })
        .to_string()
    };
    std::fs::write(&path, good(4)).expect("document written");
    let mut discovery = Discovery::follow(DiscoverySource::Directory(dir.path().to_path_buf()));
    assert_eq!(discovery.newer_than(0).await.expect("document").epoch, 4);

    // Half-written, then of an unknown version: both refused, epoch 4 stays.
    std::fs::write(&path, &good(5)[..40]).expect("half a document");
    refused(&discovery, 1).await;
    std::fs::write(&path, good(6).replace("\"version\":1", "\"version\":2")).expect("v2");
    refused(&discovery, 2).await;
    assert_eq!(discovery.current().expect("document").epoch, 4);
    // An older epoch is ignored; a newer one is taken.
    std::fs::write(&path, good(3)).expect("older");
    std::fs::write(&path, good(7)).expect("newer");
    assert_eq!(discovery.newer_than(4).await.expect("document").epoch, 7);

    // A stream the document does not name is a clear error.
    let settings = ProducerSettings {
        id: "lonely".into(),
        acknowledge_through: None,
        credentials: Credentials::default(),
        config: BTreeMap::new(),
    };
    let producer = RoutedProducer::start(discovery, settings)
        .await
        .expect("producer");
    let error = producer
        .send("refunds", b"k", b"0")
        .await
        .expect_err("unknown stream");
    assert_eq!(
        error.to_string(),
        "stream `refunds` is not in the discovery document"
    );
}

/// Runs `kappa-demo` with `args`; its stdout, after checking it succeeded.
fn demo(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kappa-demo"))
        .args(args)
        .output()
        .expect("kappa-demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "kappa-demo {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_demo_application_writes_reads_and_checks() {
    let testbed = Testbed::with_brokers();
    operator();
    let client = testbed.client().await;
    let ns = testbed.namespace("routing-demo").await;
    create_set(&client, &ns, &testbed.brokers, "demo-orders").await;
    let document = wait_for_document(&client, &ns, "events", Duration::from_secs(60), |d| {
        settled_on(d, "blue")
    })
    .await;
    // The ConfigMap as a pod would see it mounted.
    let mount = tempfile::tempdir().expect("a directory");
    std::fs::write(mount.path().join("discovery.json"), document.to_json()).expect("mounted");
    let dir = mount.path().to_string_lossy().into_owned();
    let common = ["--discovery-dir", dir.as_str(), "--stream", "orders"];
    let work = tempfile::tempdir().expect("a directory");
    let mut written = Vec::new();
    for id in ["a", "b"] {
        let args = [
            &common[..],
            &["--id", id, "--rounds", "20", "--no-acknowledge"],
        ]
        .concat();
        let path = work.path().join(format!("{id}.json"));
        std::fs::write(&path, demo(&[&["produce"], &args[..]].concat())).expect("written");
        written.push(path.to_string_lossy().into_owned());
    }
    let read = work.path().join("read.txt");
    let args = [&common[..], &["--group", "demo", "--records", "200"]].concat();
    std::fs::write(&read, demo(&[&["consume"], &args[..]].concat())).expect("read");
    let read = read.to_string_lossy().into_owned();
    let checked = demo(&[
        "check",
        "--written",
        &written[0],
        "--written",
        &written[1],
        "--read",
        &read,
    ]);
    assert_eq!(
        checked.trim(),
        "read 200, lost 0, duplicated 0, out of order 0"
    );
    // A consumer that missed a record fails the check.
    let partial = work.path().join("partial.txt");
    let text = std::fs::read_to_string(&read).expect("read");
    let rest: Vec<&str> = text.lines().skip(1).collect();
    std::fs::write(&partial, rest.join("\n")).expect("partial");
    let failed = std::process::Command::new(env!("CARGO_BIN_EXE_kappa-demo"))
        .args(["check", "--written", &written[0], "--written", &written[1]])
        .arg("--read")
        .arg(&partial)
        .output()
        .expect("kappa-demo runs");
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stdout).contains("lost 1,"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_does_not_hold_up_the_others() {
    let testbed = Testbed::with_brokers();
    operator();
    let client = testbed.client().await;
    let ns = testbed.namespace("routing-unreachable").await;
    create_set(&client, &ns, &testbed.brokers, "unreachable-orders").await;
    let mut document = wait_for_document(&client, &ns, "events", Duration::from_secs(60), |d| {
        settled_on(d, "blue")
    })
    .await;
    // A cluster nothing answers at: a drained (empty) segment of `orders`
    // and the write cluster of another stream.
    let mut dead = document.clusters[0].clone();
    dead.name = "dead".into();
    dead.bootstrap_servers = "127.0.0.1:1".into();
    document.clusters.push(dead);
    let mut audit = document.streams[0].clone();
    audit.name = "audit".into();
    audit.write.cluster = "dead".into();
    audit.read = Vec::new();
    let mut drained = document.streams[0].read[0].clone();
    drained.cluster = "dead".into();
    drained.end_offsets = Some((0..3).map(|p| (p.to_string(), 0)).collect());
    document.streams[0].read.insert(0, drained);
    document.streams.push(audit);
    let mount = tempfile::tempdir().expect("a directory");
    std::fs::write(mount.path().join("discovery.json"), document.to_json()).expect("mounted");
    let source = || Discovery::follow(DiscoverySource::Directory(mount.path().to_path_buf()));

    let settings = ProducerSettings {
        id: "partly".into(),
        acknowledge_through: None,
        credentials: Credentials::default(),
        config: BTreeMap::new(),
    };
    let producer = std::sync::Arc::new(
        RoutedProducer::start(source(), settings)
            .await
            .expect("producer"),
    );
    let stuck = {
        let producer = producer.clone();
        tokio::spawn(async move { producer.send("audit", b"k", b"0").await })
    };
    let mut consumer = kappa_operator::client::RoutedConsumer::start(
        source(),
        "orders",
        "unreachable",
        Credentials::default(),
    )
    .await
    .expect("consumer");
    let started = Instant::now();
    for number in 0..20u64 {
        producer
            .send("orders", b"k", number.to_string().as_bytes())
            .await
            .expect("orders keep flowing");
    }
    for number in 0..20u64 {
        let record = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("read in time")
            .expect("a record");
        assert_eq!(record.cluster, "blue");
        assert_eq!(record.payload, Some(number.to_string().into_bytes()));
    }
    assert!(
        !stuck.is_finished(),
        "the record for the unreachable cluster is still being retried"
    );
    println!(
        "20 records written and read in {:?} beside an unreachable cluster",
        started.elapsed()
    );
    stuck.abort();
}
