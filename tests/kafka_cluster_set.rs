//! KafkaClusterSets against real Tansu brokers (as `external` clusters) and
//! the real API server: topics checked through Kafka's admin API, the
//! discovery ConfigMap read back, refusals leaving everything untouched.

mod common;

use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::Duration;

use common::kafka::{
    self, commit_offsets, high_watermarks, produce, topic_on, wait_for_document, FollowingProducer,
    ProducerLease,
};
use common::{create, kappa_api, wait_for_ready, Operator, Testbed};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kappa_operator::discovery::DiscoveryDocument;
use kube::api::{Patch, PatchParams};
use kube::Client;
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(60);

fn operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        Operator::start(
            Testbed::with_brokers(),
            "kafka-cluster-set-tests",
            &["--no-leader-election"],
        )
    })
}

fn set(name: &str, clusters: serde_json::Value, write: &str) -> serde_json::Value {
    json!({
        "apiVersion": "kappa.dev/v1alpha1",
        "kind": "KafkaClusterSet",
        "metadata": {"name": name},
        "spec": {
            "template": {"provider": "external"},
            "clusters": clusters,
            "streams": [
                {"name": "orders", "partitions": 3, "retention": "1h"},
                {"name": "totals", "topic": "order-totals", "partitions": 2, "cleanupPolicy": "compact"}
            ],
            "routing": {"writeCluster": write}
        }
    })
}

fn external(name: &str, bootstrap: &str) -> serde_json::Value {
    json!({"name": name, "overrides": {"external": {"bootstrapServers": [bootstrap]}}})
}

async fn discovery(client: &Client, ns: &str, set: &str) -> DiscoveryDocument {
    kafka::discovery(client, ns, set)
        .await
        .expect("discovery ConfigMap exists")
}

async fn condition(client: &Client, ns: &str, name: &str, type_: &str) -> Option<Condition> {
    let object = kappa_api(client, ns, "KafkaClusterSet")
        .get(name)
        .await
        .ok()?;
    let conditions = object.data.get("status")?.get("conditions")?.clone();
    let conditions: Vec<Condition> = serde_json::from_value(conditions).ok()?;
    conditions.into_iter().find(|c| c.type_ == type_)
}

async fn wait_for_condition(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    reason: &str,
) -> Condition {
    let started = std::time::Instant::now();
    let mut last = None;
    while started.elapsed() < WITHIN {
        last = condition(client, ns, name, type_).await;
        if let Some(found) = last.as_ref().filter(|c| c.reason == reason) {
            return found.clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{type_} of {ns}/{name} did not become {reason}; last: {last:?}");
}

async fn merge(client: &Client, ns: &str, name: &str, patch: serde_json::Value) {
    kappa_api(client, ns, "KafkaClusterSet")
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("set patched");
}

#[tokio::test]
async fn streams_reach_every_cluster_and_the_discovery_map_follows_the_spec() {
    let testbed = Testbed::with_brokers();
    operator();
    let client = testbed.client().await;
    let ns = testbed.namespace("kcs-streams").await;
    let (blue, green) = (&testbed.brokers[0], &testbed.brokers[1]);
    let clusters = json!([external("blue", blue), external("green", green)]);
    create(&client, &ns, set("events", clusters, "blue"))
        .await
        .expect("set created");
    let ready = wait_for_ready(&client, &ns, "KafkaClusterSet", "events", WITHIN, |c| {
        c.status == "True"
    })
    .await;
    assert_eq!(ready.reason, "ClustersReady", "{}", ready.message);

    // Each stream's topic on each broker, as the broker reports it.
    for bootstrap in [blue, green] {
        let (partitions, config) = topic_on(bootstrap, "orders").await.expect("orders exists");
        assert_eq!(partitions, 3, "orders on {bootstrap}");
        assert_eq!(
            config.get("retention.ms").map(String::as_str),
            Some("3600000")
        );
        let (partitions, config) = topic_on(bootstrap, "order-totals")
            .await
            .expect("order-totals exists");
        assert_eq!(partitions, 2, "order-totals on {bootstrap}");
        assert_eq!(
            config.get("cleanup.policy").map(String::as_str),
            Some("compact")
        );
    }

    // The discovery document: both clusters, writes and reads on blue.
    let document = discovery(&client, &ns, "events").await;
    assert_eq!((document.version, document.epoch), (1, 1));
    assert_eq!(
        (document.namespace.as_str(), document.set.as_str()),
        (ns.as_str(), "events")
    );
    let addresses: Vec<_> = document
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.bootstrap_servers.as_str()))
        .collect();
    assert_eq!(
        addresses,
        [("blue", blue.as_str()), ("green", green.as_str())]
    );
    let totals = document
        .streams
        .iter()
        .find(|s| s.name == "totals")
        .expect("totals routed");
    assert_eq!(
        (totals.write.cluster.as_str(), totals.write.topic.as_str()),
        ("blue", "order-totals")
    );
    assert_eq!(totals.read.len(), 1);

    // A change that does not touch routing leaves the epoch alone.
    merge(
        &client,
        &ns,
        "events",
        json!({"metadata": {"labels": {"team": "shop"}}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(discovery(&client, &ns, "events").await.epoch, 1);

    // Moving the write cluster while a producer writes: announced first,
    // blue's end offsets recorded only once the producer has acknowledged.
    let producer = FollowingProducer::start(&client, &ns, "events", "orders", "producer-a").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    merge(
        &client,
        &ns,
        "events",
        json!({"spec": {"routing": {"writeCluster": "green"}}}),
    )
    .await;
    let settled = wait_for_document(&client, &ns, "events", WITHIN, |d| d.epoch == 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let followed = producer.stop().await;
    let written = followed.written;
    // The producer acted on the announcement before blue was drained.
    let announced = followed
        .documents
        .iter()
        .find(|d| d.epoch == 2)
        .expect("the producer saw the announcement");
    let orders = announced
        .streams
        .iter()
        .find(|s| s.name == "orders")
        .expect("orders");
    assert_eq!(orders.write.cluster, "green");
    let segments: Vec<_> = orders
        .read
        .iter()
        .map(|r| (r.cluster.as_str(), r.end_offsets.is_some()))
        .collect();
    assert_eq!(
        segments,
        [("blue", false), ("green", false)],
        "blue is read until drained, then green"
    );
    let orders = settled
        .streams
        .iter()
        .find(|s| s.name == "orders")
        .expect("orders");
    let drained = orders.read[0]
        .end_offsets
        .clone()
        .expect("blue's end offsets");
    assert_eq!(
        (
            orders.read[0].cluster.as_str(),
            orders.read[1].cluster.as_str()
        ),
        ("blue", "green")
    );
    assert_eq!(
        drained,
        high_watermarks(blue, "orders"),
        "recorded end offsets are blue's final high watermarks"
    );
    let on_blue: i64 = drained.values().sum();
    let on_green: i64 = high_watermarks(green, "orders").values().sum();
    assert_eq!(
        on_blue as u64, written["blue"],
        "every record written to blue is inside its segment"
    );
    assert_eq!(
        on_green as u64, written["green"],
        "and the rest are on green"
    );
    let progressing = condition(&client, &ns, "events", "Progressing")
        .await
        .expect("Progressing");
    assert_eq!(
        (progressing.status.as_str(), progressing.message.as_str()),
        ("False", "producers write to `green`")
    );

    // Fewer partitions than a topic has: refused, nothing changed.
    let with_orders_partitions = |partitions: i32| {
        let mut streams = set("x", json!([]), "x")["spec"]["streams"].clone();
        streams[0]["partitions"] = json!(partitions);
        json!({"spec": {"streams": streams}})
    };
    merge(&client, &ns, "events", with_orders_partitions(2)).await;
    let degraded = wait_for_condition(
        &client,
        &ns,
        "events",
        "Degraded",
        "PartitionDecreaseRefused",
    )
    .await;
    assert!(
        degraded.message.contains("spec.streams[0].partitions"),
        "{}",
        degraded.message
    );
    assert_eq!(topic_on(blue, "orders").await.expect("orders").0, 3);
    assert_eq!(discovery(&client, &ns, "events").await.epoch, 3);
    merge(&client, &ns, "events", with_orders_partitions(3)).await;
    wait_for_condition(&client, &ns, "events", "Degraded", "AsDeclared").await;

    // A configuration change reaches every cluster's topic.
    let mut longer = with_orders_partitions(3);
    longer["spec"]["streams"][0]["retention"] = json!("2h");
    merge(&client, &ns, "events", longer).await;
    for bootstrap in [blue, green] {
        let mut retention = None;
        for _ in 0..100 {
            let (_, config) = topic_on(bootstrap, "orders").await.expect("orders");
            retention = config.get("retention.ms").cloned();
            if retention.as_deref() == Some("7200000") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            retention.as_deref(),
            Some("7200000"),
            "retention on {bootstrap}"
        );
    }

    // An edit to a created cluster: refused, the map keeps the old address.
    let moved = json!([external("blue", green), external("green", green)]);
    merge(&client, &ns, "events", json!({"spec": {"clusters": moved}})).await;
    let degraded = wait_for_condition(
        &client,
        &ns,
        "events",
        "Degraded",
        "ImmutableClusterChanged",
    )
    .await;
    assert!(degraded.message.contains("`blue`"), "{}", degraded.message);
    let document = discovery(&client, &ns, "events").await;
    assert_eq!(document.epoch, 3);
    assert_eq!(document.clusters[0].bootstrap_servers, *blue);
    operator().assert_log_clean();
}

#[tokio::test]
async fn an_unreachable_cluster_degrades_the_set_until_its_broker_appears() {
    let testbed = Testbed::with_brokers();
    operator();
    let client = testbed.client().await;
    let ns = testbed.namespace("kcs-unreachable").await;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let late = format!("127.0.0.1:{port}");
    let clusters = json!([external("late", &late)]);
    create(&client, &ns, set("late", clusters, "late"))
        .await
        .expect("set created");
    let degraded = wait_for_condition(&client, &ns, "late", "Degraded", "ClusterUnreachable").await;
    assert!(degraded.message.contains(&late), "{}", degraded.message);
    let ready = condition(&client, &ns, "late", "Ready")
        .await
        .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ClusterUnreachable")
    );

    let started = testbed.start_broker("late", port);
    assert_eq!(started, late);
    let ready = wait_for_ready(&client, &ns, "KafkaClusterSet", "late", WITHIN, |c| {
        c.status == "True"
    })
    .await;
    assert_eq!(ready.reason, "ClustersReady");
    assert_eq!(topic_on(&late, "orders").await.expect("orders").0, 3);
    assert!(
        operator().metric(
            "kappa_kafka_admin_errors_total{operation=\"describe\",reason=\"ClusterUnreachable\"}"
        ) >= 1.0,
        "admin errors are counted"
    );
}

#[tokio::test]
async fn a_removed_cluster_stays_readable_until_its_readers_are_past_its_end() {
    let testbed = Testbed::with_brokers();
    operator();
    let client = testbed.client().await;
    let ns = testbed.namespace("kcs-retire").await;
    let (blue, green) = (&testbed.brokers[0], &testbed.brokers[1]);
    let mut spec = set(
        "retire",
        json!([external("blue", blue), external("green", green)]),
        "blue",
    );
    spec["spec"]["streams"] =
        json!([{"name": "orders", "topic": "retire-orders", "partitions": 2}]);
    create(&client, &ns, spec).await.expect("set created");
    wait_for_document(&client, &ns, "retire", WITHIN, |d| d.epoch == 1).await;
    let lease = ProducerLease::create(&client, &ns, "retire", "producer-r").await;
    lease.acknowledge(1).await;
    produce(blue, "retire-orders", 20).await;

    // Writes move to green; blue's segment is recorded.
    merge(
        &client,
        &ns,
        "retire",
        json!({"spec": {"routing": {"writeCluster": "green"}}}),
    )
    .await;
    wait_for_document(&client, &ns, "retire", WITHIN, |d| d.epoch == 2).await;
    lease.acknowledge(2).await;
    wait_for_document(&client, &ns, "retire", WITHIN, |d| d.epoch == 3).await;
    let ends = high_watermarks(blue, "retire-orders");
    let mut behind = ends.clone();
    if let Some(first) = behind.values_mut().find(|end| **end > 0) {
        *first -= 1;
    }
    commit_offsets(blue, "readers", "retire-orders", &behind);

    // Blue leaves the spec: still readable while a group is behind.
    merge(
        &client,
        &ns,
        "retire",
        json!({"spec": {"clusters": [external("green", green)]}}),
    )
    .await;
    let waiting =
        wait_for_condition(&client, &ns, "retire", "Progressing", "RetiringCluster").await;
    assert!(waiting.message.contains("readers"), "{}", waiting.message);
    let draining = discovery(&client, &ns, "retire").await;
    let blue_entry = draining
        .clusters
        .iter()
        .find(|c| c.name == "blue")
        .expect("blue still listed");
    assert_eq!(
        blue_entry.state,
        kappa_operator::discovery::ClusterState::Draining
    );
    assert_eq!(
        draining.streams[0].read[0].end_offsets.as_ref(),
        Some(&ends)
    );

    // The group reaches the end: blue leaves the document and the status.
    commit_offsets(blue, "readers", "retire-orders", &ends);
    let retired = wait_for_document(&client, &ns, "retire", WITHIN, |d| {
        d.clusters.iter().all(|c| c.name != "blue")
    })
    .await;
    let segments: Vec<_> = retired.streams[0]
        .read
        .iter()
        .map(|r| r.cluster.as_str())
        .collect();
    assert_eq!(segments, ["green"]);
    assert!(retired.epoch > draining.epoch);
    // The status is written right after the document, in the same reconcile.
    let started = std::time::Instant::now();
    let mut recorded = Vec::new();
    while started.elapsed() < WITHIN {
        let object = kappa_api(&client, &ns, "KafkaClusterSet")
            .get("retire")
            .await
            .expect("set");
        recorded = object.data["status"]["clusters"]
            .as_array()
            .expect("clusters")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_string())
            .collect();
        if recorded == ["green"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(recorded, ["green"]);
}

#[tokio::test]
async fn bad_streams_are_refused_before_any_topic_is_created() {
    let testbed = Testbed::with_brokers();
    operator();
    let client = testbed.client().await;
    let ns = testbed.namespace("kcs-refusals").await;
    let brokers = &testbed.brokers;
    let mut object = set(
        "refused",
        json!([
            external("blue", &brokers[0]),
            external("green", &brokers[1])
        ]),
        "blue",
    );
    let fine = json!({"name": "fine", "topic": "refusals-fine", "partitions": 1});
    let wide = json!({"name": "wide", "topic": "refusals-wide", "partitions": 1, "replication": 3});
    object["spec"]["streams"] = json!([fine, wide]);
    create(&client, &ns, object).await.expect("set created");
    // The brokers have one node each: the replication is impossible, and the
    // valid stream beside it is not created either.
    let refused =
        wait_for_condition(&client, &ns, "refused", "Degraded", "ReplicationImpossible").await;
    assert!(
        refused.message.contains("spec.streams[1].replication"),
        "{}",
        refused.message
    );
    for broker in brokers {
        for topic in ["refusals-fine", "refusals-wide"] {
            assert!(
                topic_on(broker, topic).await.is_none(),
                "{topic} on {broker}"
            );
        }
    }

    // An unknown configuration key: refused by field before Kafka is asked.
    let typo = json!({"name": "wide", "topic": "refusals-wide", "partitions": 1,
        "config": {"retention.msec": "1000"}});
    merge(
        &client,
        &ns,
        "refused",
        json!({"spec": {"streams": [fine, typo]}}),
    )
    .await;
    let invalid = wait_for_condition(&client, &ns, "refused", "Ready", "InvalidSpec").await;
    assert!(
        invalid
            .message
            .contains("spec.streams[1].config[retention.msec]"),
        "{}",
        invalid.message
    );
    for broker in brokers {
        assert!(topic_on(broker, "refusals-fine").await.is_none());
    }
    // What the status records of the clusters outlives the invalid spec.
    let status = kappa_api(&client, &ns, "KafkaClusterSet")
        .get("refused")
        .await
        .expect("set")
        .data["status"]
        .clone();
    let recorded: Vec<_> = status["clusters"]
        .as_array()
        .expect("clusters recorded")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(recorded, ["blue", "green"], "{status}");

    // Fixed: both topics appear on both brokers.
    let fixed = json!({"name": "wide", "topic": "refusals-wide", "partitions": 1});
    merge(
        &client,
        &ns,
        "refused",
        json!({"spec": {"streams": [fine, fixed]}}),
    )
    .await;
    wait_for_condition(&client, &ns, "refused", "Ready", "ClustersReady").await;
    for broker in brokers {
        for topic in ["refusals-fine", "refusals-wide"] {
            assert!(
                topic_on(broker, topic).await.is_some(),
                "{topic} on {broker}"
            );
        }
    }
    operator().assert_log_clean();
}
