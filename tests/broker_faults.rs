//! A Kafka cluster of a set cut off in the middle of a migration away from
//! it: its broker frozen (SIGSTOP: connections stay open and nothing
//! answers, as when its traffic is dropped) while routed producers write
//! and a routed consumer reads. The migration waits with the set's Ready
//! condition naming the cluster, completes once the cluster answers again,
//! and the checker finds every record read once, in order.

mod common;

use std::time::Duration;

use common::kafka::{discovery, wait_for_document};
use common::routing::{create_set, move_write_cluster, settled_on, ConsumerView, Writing};
use common::{wait_for_ready, Operator, Testbed};

const TOPIC: &str = "cut-orders";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migration_away_from_a_cut_off_cluster_waits_for_it_and_loses_nothing() {
    let testbed = Testbed::with_brokers();
    let mut operator = Operator::start(testbed, "broker-faults", &["--no-leader-election"]);
    let client = testbed.client().await;
    let ns = testbed.namespace("broker-cut").await;
    create_set(&client, &ns, &testbed.brokers, TOPIC).await;
    let writing = Writing::start(&client, &ns, ConsumerView::Live).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    testbed.freeze_broker("tansu-1");
    move_write_cluster(&client, &ns, "green").await;
    let ready = wait_for_ready(
        &client,
        &ns,
        "KafkaClusterSet",
        "events",
        Duration::from_secs(60),
        |c| c.status == "False" && c.message.contains("`blue`"),
    )
    .await;
    println!("while blue is cut off: {}: {}", ready.reason, ready.message);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let waiting = discovery(&client, &ns, "events")
        .await
        .expect("the set's document");
    assert!(
        !settled_on(&waiting, "green"),
        "the migration waits for blue's end offsets: {waiting:?}"
    );

    testbed.thaw_broker("tansu-1");
    wait_for_document(&client, &ns, "events", Duration::from_secs(90), |d| {
        settled_on(d, "green")
    })
    .await;
    wait_for_ready(
        &client,
        &ns,
        "KafkaClusterSet",
        "events",
        Duration::from_secs(60),
        |c| c.status == "True",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let run = writing.finish(&client, &ns, &testbed.brokers, TOPIC).await;
    run.assert_clean("a migration away from a cut-off cluster");
    operator.assert_log_clean();
    assert!(operator.terminate(), "the operator stops cleanly");
}
