//! The operator killed at each step of a write-cluster migration: every run
//! converges to the same final discovery document, and no restart announces
//! an epoch twice.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::kafka::{high_watermarks, produce, wait_for_document, ProducerLease};
use common::{create, kappa_api, Operator, Testbed};
use kappa_operator::discovery::{DiscoveryDocument, ReadSegment};
use kube::api::{Patch, PatchParams};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// After the new write cluster is announced, before producers acknowledge.
    Announced,
    /// After producers acknowledged, before the end offsets are recorded.
    Acknowledged,
    /// After the migration completed.
    Completed,
}

fn operator(testbed: &Testbed, ns: &str, run: &str) -> Operator {
    Operator::start(testbed, run, &["--no-leader-election", "--namespace", ns])
}

/// One migration from blue to green with the operator killed at `kill`;
/// returns the final document and blue's high watermarks.
async fn migrate(kill: KillAt) -> (DiscoveryDocument, BTreeMap<String, i64>) {
    let testbed = Testbed::with_brokers();
    let client = testbed.client().await;
    let label = format!("{kill:?}").to_lowercase();
    let ns = testbed.namespace(&format!("crash-{label}")).await;
    let topic = format!("orders-{label}");
    let (blue, green) = (&testbed.brokers[0], &testbed.brokers[1]);
    let mut first = operator(testbed, &ns, &format!("{label}-first"));
    let set = json!({
        "apiVersion": "kappa.dev/v1alpha1",
        "kind": "KafkaClusterSet",
        "metadata": {"name": "events"},
        "spec": {
            "template": {"provider": "external"},
            "clusters": [
                {"name": "blue", "overrides": {"external": {"bootstrapServers": [blue]}}},
                {"name": "green", "overrides": {"external": {"bootstrapServers": [green]}}}
            ],
            "streams": [{"name": "orders", "topic": topic, "partitions": 2}],
            "routing": {"writeCluster": "blue"}
        }
    });
    create(&client, &ns, set).await.expect("set created");
    wait_for_document(&client, &ns, "events", WITHIN, |d| d.epoch == 1).await;
    let lease = ProducerLease::create(&client, &ns, "events", "producer-a").await;
    lease.acknowledge(1).await;
    produce(blue, &topic, 30).await;
    let patch = json!({"spec": {"routing": {"writeCluster": "green"}}});
    kappa_api(&client, &ns, "KafkaClusterSet")
        .patch("events", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("write cluster moved");
    wait_for_document(&client, &ns, "events", WITHIN, |d| d.epoch == 2).await;

    let second = match kill {
        KillAt::Announced => {
            first.kill();
            let second = operator(testbed, &ns, &format!("{label}-second"));
            tokio::time::sleep(Duration::from_secs(2)).await;
            let document = wait_for_document(&client, &ns, "events", WITHIN, |_| true).await;
            assert_eq!(document.epoch, 2, "a restart does not announce again");
            lease.acknowledge(2).await;
            second
        }
        KillAt::Acknowledged => {
            first.kill();
            lease.acknowledge(2).await;
            operator(testbed, &ns, &format!("{label}-second"))
        }
        KillAt::Completed => {
            lease.acknowledge(2).await;
            wait_for_document(&client, &ns, "events", WITHIN, |d| d.epoch == 3).await;
            first.kill();
            operator(testbed, &ns, &format!("{label}-second"))
        }
    };
    let document = wait_for_document(&client, &ns, "events", WITHIN, |d| d.epoch == 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = wait_for_document(&client, &ns, "events", WITHIN, |_| true).await;
    assert_eq!(
        settled, document,
        "the document stays put once the migration is done"
    );
    let mut second = second;
    second.assert_log_clean();
    second.kill();
    (document, high_watermarks(blue, &topic))
}

/// The document every run must end with, whatever the kill.
fn expected(run: &DiscoveryDocument, blue_ends: &BTreeMap<String, i64>) -> Vec<ReadSegment> {
    let topic = run.streams[0].write.topic.clone();
    vec![
        ReadSegment {
            cluster: "blue".into(),
            topic: topic.clone(),
            start_offsets: None,
            end_offsets: Some(blue_ends.clone()),
        },
        ReadSegment {
            cluster: "green".into(),
            topic,
            start_offsets: None,
            end_offsets: None,
        },
    ]
}

#[tokio::test]
async fn a_killed_operator_resumes_a_migration_at_every_step() {
    for kill in [KillAt::Announced, KillAt::Acknowledged, KillAt::Completed] {
        let (document, blue_ends) = migrate(kill).await;
        assert_eq!(blue_ends.values().sum::<i64>(), 30, "{kill:?}");
        assert_eq!(document.epoch, 3, "{kill:?}");
        assert_eq!(document.streams[0].write.cluster, "green", "{kill:?}");
        assert_eq!(
            document.streams[0].read,
            expected(&document, &blue_ends),
            "{kill:?}"
        );
    }
}
