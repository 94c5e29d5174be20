//! Two operator replicas against a real API server: one reconciles; when it
//! dies the other takes over within the lease duration; SIGTERM releases.

mod common;

use std::time::{Duration, Instant};

use common::{create, wait_for_ready, Operator, Testbed};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::json;

const LEASE: &str = "leader-test";
const LEASE_DURATION: Duration = Duration::from_secs(4);

fn replica(testbed: &Testbed, identity: &str) -> Operator {
    Operator::start(
        testbed,
        identity,
        &[
            "--lease-namespace",
            "kappa-system",
            "--lease-name",
            LEASE,
            "--lease-duration",
            "4s",
            "--renew-interval",
            "1s",
        ],
    )
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|lease| lease.spec?.holder_identity)
}

async fn wait_for_holder(
    leases: &Api<Lease>,
    accept: impl Fn(Option<&str>) -> bool,
    timeout: Duration,
) -> Option<String> {
    let started = Instant::now();
    loop {
        let current = holder(leases).await;
        if accept(current.as_deref()) {
            return current;
        }
        assert!(
            started.elapsed() < timeout,
            "lease holder still {current:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a Savepoint of a missing pipeline and waits for the leader's verdict on it.
async fn assert_reconciled(client: &kube::Client, ns: &str, name: &str) {
    let savepoint = json!({
        "apiVersion": "kappa.dev/v1alpha1", "kind": "Savepoint",
        "metadata": {"name": name}, "spec": {"pipelineRef": "missing"}
    });
    create(client, ns, savepoint).await.expect("savepoint");
    wait_for_ready(
        client,
        ns,
        "Savepoint",
        name,
        Duration::from_secs(10),
        |c| c.reason == "PipelineNotFound",
    )
    .await;
}

#[tokio::test]
async fn one_replica_leads_and_the_other_takes_over_when_it_dies() {
    let testbed = Testbed::get();
    let client = testbed.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kappa-system");
    let ns = testbed.namespace("leader").await;
    let mut replicas = [replica(testbed, "replica-a"), replica(testbed, "replica-b")];

    let leader = wait_for_holder(&leases, |h| h.is_some(), Duration::from_secs(30))
        .await
        .expect("a holder");
    assert_reconciled(&client, &ns, "first").await;

    let leader_index = replicas
        .iter()
        .position(|r| r.identity == leader)
        .expect("the holder is a replica");
    let standby_index = 1 - leader_index;
    assert_eq!(replicas[leader_index].metric("kappa_leader"), 1.0);
    assert_eq!(replicas[standby_index].metric("kappa_leader"), 0.0);
    assert_eq!(
        replicas[standby_index].metric("kappa_reconcile_total"),
        0.0,
        "the standby must not reconcile"
    );
    assert_eq!(
        replicas[standby_index]
            .http_get("/readyz")
            .map(|(status, _)| status),
        Some(200),
        "a standby is ready to take over"
    );

    // The leader dies without releasing the lease.
    replicas[leader_index].kill();
    let killed_at = Instant::now();
    let standby = replicas[standby_index].identity.clone();
    wait_for_holder(&leases, |h| h == Some(standby.as_str()), LEASE_DURATION * 3).await;
    assert_reconciled(&client, &ns, "second").await;
    let handover = killed_at.elapsed();
    println!(
        "handover after the leader was killed: {handover:?} (lease duration {LEASE_DURATION:?})"
    );
    assert!(replicas[standby_index].metric("kappa_reconcile_total") > 0.0);

    // SIGTERM: the new leader stops cleanly and releases the lease at once.
    assert!(
        replicas[standby_index].terminate(),
        "SIGTERM ends the operator with success"
    );
    let lease = leases.get(LEASE).await.expect("lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        None,
        "the lease is released on SIGTERM"
    );
    replicas[standby_index].assert_log_clean();
}
