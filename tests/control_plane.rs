//! The control plane failing under the operator: with the operator
//! in-cluster (the shipped manifests, on a testbed with a node), the API
//! server restarted, and separately etcd restarted, in the middle of an
//! ordered write-cluster migration and of a Flink upgrade with savepoint;
//! and a watch that expires (its resourceVersion compacted away) while an
//! operator is cut off from the API server. Each run ends as an undisturbed
//! one does, with nothing orphaned and no change missed.

mod common;

use std::time::{Duration, Instant};

use common::flink::{
    assert_upgraded_with, running_session_job, upgrade_until_savepoint_taken, Flink,
};
use common::kafka::{
    announce_blue_to_green, blue_green_set, high_watermarks, partitions_on,
    reads_after_blue_to_green, wait_for_document,
};
use common::link::Link;
use common::node::{assert_pods_logged_no_error_but, deploy_operator, wait_for_rollout};
use common::{create, kappa_api, service_account_kubeconfig, Operator, Testbed};
use futures::{StreamExt, TryStreamExt};
use kube::api::{DynamicObject, Patch, PatchParams, WatchEvent, WatchParams};
use kube::Api;
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(90);

/// A Flink job starting, or an upgrade finishing, on the testbed's session cluster.
const FLINK_WITHIN: Duration = Duration::from_secs(240);

/// Where the Kubernetes client logs, as errors, the requests that failed
/// while the API server was away or starting (refused connections, 503,
/// 403 before its RBAC caches are filled): the operator retries them.
const OUTAGE: &str = "kube_client::client::builder";

/// The testbed with a node, running the operator as shipped: its replicas
/// elect a leader on a 15 s lease, so a leader that loses it during the
/// outage exits and is restarted by its Deployment (which
/// `tests/migration_crash.rs` covers at every step of a migration).
fn in_cluster() -> &'static Testbed {
    let testbed = Testbed::with_node();
    deploy_operator(testbed);
    testbed
}

/// One migration from blue to green with `service` restarted (down for
/// 5 s) after the new write cluster is announced, before producers
/// acknowledge it.
async fn migrate_through_restart(service: &str) {
    let testbed = in_cluster();
    let client = testbed.client().await;
    let ns = testbed.namespace(&format!("restart-{service}")).await;
    let topic = format!("orders-{service}");
    let lease = announce_blue_to_green(testbed, &client, &ns, &topic, WITHIN).await;

    testbed.restart(service, Duration::from_secs(5));
    let client = testbed.client().await;
    let announced = wait_for_document(&client, &ns, "events", WITHIN, |_| true).await;
    assert_eq!(announced.epoch, 2, "{service}: nothing announced twice");
    lease.acknowledge(2).await;
    let document = wait_for_document(&client, &ns, "events", WITHIN, |d| d.epoch == 3).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = wait_for_document(&client, &ns, "events", WITHIN, |_| true).await;
    assert_eq!(settled, document, "{service}: the document stays put");

    let blue_ends = high_watermarks(&testbed.brokers[0], &topic);
    assert_eq!(blue_ends.values().sum::<i64>(), 30, "{service}");
    assert_eq!(document.streams[0].write.cluster, "green", "{service}");
    assert_eq!(
        document.streams[0].read,
        reads_after_blue_to_green(&topic, &blue_ends),
        "{service}: the same document as an undisturbed migration"
    );
    assert_survived(testbed, &ns);
}

/// After a restart of the control plane: nothing in `ns` is orphaned, the
/// operator's Deployment is ready again, and its replicas logged no error
/// beyond the requests that failed during the outage.
fn assert_survived(testbed: &Testbed, ns: &str) {
    common::objects::assert_no_orphans(testbed, ns);
    wait_for_rollout(testbed);
    assert_pods_logged_no_error_but(testbed, &[OUTAGE]);
}

/// The tests take turns: restarts of one testbed must not overlap, and
/// faults on two testbeds at once are more than two cores keep in time.
static ONE_FAULT_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_migration_completes_through_an_api_server_restart() {
    let _turn = ONE_FAULT_AT_A_TIME.lock().await;
    migrate_through_restart("kube-apiserver").await;
}

#[tokio::test]
async fn a_migration_completes_through_an_etcd_restart() {
    let _turn = ONE_FAULT_AT_A_TIME.lock().await;
    migrate_through_restart("etcd").await;
}

/// A session-mode upgrade with savepoint, with `service` restarted (down
/// for 5 s) once Flink has taken the savepoint trigger: the new job starts
/// from that savepoint, and no second one is taken.
async fn upgrade_through_restart(flink: &Flink, service: &str) {
    let testbed = in_cluster();
    let client = testbed.client().await;
    let ns = testbed.namespace(&format!("upgrade-{service}")).await;
    running_session_job(&client, &ns, flink, FLINK_WITHIN).await;
    let (old_job, trigger) = upgrade_until_savepoint_taken(&client, &ns, flink, WITHIN).await;

    testbed.restart(service, Duration::from_secs(5));
    let client = testbed.client().await;
    assert_upgraded_with(
        testbed,
        &client,
        &ns,
        flink,
        (&old_job, &trigger),
        FLINK_WITHIN,
    )
    .await;
    assert_survived(testbed, &ns);
}

#[tokio::test]
async fn a_flink_upgrade_completes_through_api_server_and_etcd_restarts() {
    let _turn = ONE_FAULT_AT_A_TIME.lock().await;
    let flink = Flink::start(in_cluster());
    for service in ["kube-apiserver", "etcd"] {
        upgrade_through_restart(&flink, service).await;
    }
}

/// Whether a watch of `api` from `version` is refused as expired (410 Gone).
async fn expired(api: &Api<DynamicObject>, version: &str) -> bool {
    let params = WatchParams::default().timeout(1);
    let Ok(stream) = api.watch(&params, version).await else {
        return false;
    };
    let events: Vec<WatchEvent<DynamicObject>> =
        stream.take(10).try_collect().await.unwrap_or_default();
    events
        .iter()
        .any(|event| matches!(event, WatchEvent::Error(error) if error.code == 410))
}

#[tokio::test]
async fn a_change_made_while_the_watch_was_gone_is_reconciled_after_it_expired() {
    let _turn = ONE_FAULT_AT_A_TIME.lock().await;
    let testbed = Testbed::with_faults();
    let client = testbed.client().await;
    let ns = testbed.namespace("watch-expiry").await;
    let link = Link::to(testbed.api_address());
    let kubeconfig = testbed.kubeconfig_through(&service_account_kubeconfig(testbed), &link);
    let mut operator = Operator::start_as(
        testbed,
        &kubeconfig,
        &ns,
        &["--no-leader-election", "--namespace", &ns],
    );
    create(
        &client,
        &ns,
        blue_green_set(testbed, "expiry-orders", "blue"),
    )
    .await
    .expect("set created");
    wait_for_document(&client, &ns, "events", WITHIN, |d| d.epoch == 1).await;
    let sets = kappa_api(&client, &ns, "KafkaClusterSet");
    let seen = settled_version(&sets).await;

    link.cut();
    let added = json!({"spec": {"streams": [
        {"name": "orders", "topic": "expiry-orders", "partitions": 2},
        {"name": "refunds", "topic": "expiry-refunds", "partitions": 3}
    ]}});
    sets.patch("events", &PatchParams::default(), &Patch::Merge(&added))
        .await
        .expect("stream added");
    let deadline = Instant::now() + WITHIN;
    while !expired(&sets, &seen).await {
        assert!(
            Instant::now() < deadline,
            "resourceVersion {seen} was not compacted within {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    link.restore();

    let deadline = Instant::now() + WITHIN;
    while partitions_on(&testbed.brokers[0], "expiry-refunds") != Some(3) {
        assert!(
            Instant::now() < deadline,
            "the stream added while the operator's watch was gone was not created"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let document = wait_for_document(&client, &ns, "events", WITHIN, |d| {
        d.streams.iter().any(|s| s.name == "refunds")
    })
    .await;
    assert!(
        document.streams.iter().all(|s| s.write.cluster == "blue"),
        "adding a stream moves no write cluster: {document:?}"
    );
    operator.assert_log_clean_but(&[OUTAGE]);
    assert!(operator.terminate(), "the operator stops cleanly");
}

/// The set's resourceVersion once the operator has stopped writing to it
/// (the same for 2 s); fails after [`WITHIN`].
async fn settled_version(sets: &Api<DynamicObject>) -> String {
    let mut last = String::new();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < WITHIN,
            "the operator kept writing the set for {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = sets
            .get("events")
            .await
            .expect("set")
            .metadata
            .resource_version
            .unwrap_or_default();
        if now == last {
            return now;
        }
        last = now;
    }
}
