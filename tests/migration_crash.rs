//! The operator killed at each step of a write-cluster migration: every run
//! converges to the same final discovery document, and no restart announces
//! an epoch twice.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::kafka::{
    announce_blue_to_green, high_watermarks, reads_after_blue_to_green, wait_for_document,
};
use common::{Operator, Testbed};
use kappa_operator::discovery::DiscoveryDocument;

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
    let mut first = operator(testbed, &ns, &format!("{label}-first"));
    let lease = announce_blue_to_green(testbed, &client, &ns, &topic, WITHIN).await;

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
    (document, high_watermarks(&testbed.brokers[0], &topic))
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
            reads_after_blue_to_green(&document.streams[0].write.topic, &blue_ends),
            "{kill:?}"
        );
    }
}
