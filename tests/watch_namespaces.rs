//! An operator told to watch two namespaces, with the shipped rules granted
//! in those two only (RoleBindings to its ClusterRole, as the chart's
//! `watchNamespaces` grants them): it reconciles both, leaves a third alone,
//! and never makes a call its grants refuse. Its own binary, so that no
//! other operator answers for the third namespace.

mod common;

use std::time::{Duration, Instant};

use common::objects::{kcs, valid_kcs_spec};
use common::{create, kappa_api, refusal_in, Operator, Testbed};

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_watching_two_namespaces_reconciles_them_and_nothing_else() {
    let testbed = Testbed::get();
    common::apply_manifests_without_webhook(testbed);
    let kubeconfig = common::service_account_kubeconfig(testbed);
    // The cluster-wide grant goes; the same rules come back in two namespaces.
    testbed.kubectl(&["delete", "clusterrolebinding", "kappa-operator"]);
    let mut watched = Vec::new();
    for name in ["team-a", "team-b"] {
        let ns = testbed.namespace(name).await;
        testbed.kubectl(&[
            "-n",
            &ns,
            "create",
            "rolebinding",
            "kappa-operator",
            "--clusterrole=kappa-operator",
            "--serviceaccount=kappa-system:kappa-operator",
        ]);
        watched.push(ns);
    }
    let unwatched = testbed.namespace("team-c").await;
    let mut args = vec!["--no-leader-election"];
    for ns in &watched {
        args.extend(["--namespace", ns.as_str()]);
    }
    let mut operator = Operator::start_as(testbed, &kubeconfig, "two-namespaces", &args);

    let client = testbed.client().await;
    for ns in watched.iter().chain([&unwatched]) {
        create(&client, ns, kcs(valid_kcs_spec()))
            .await
            .expect("set");
    }
    let started = Instant::now();
    for ns in &watched {
        let api = kappa_api(&client, ns, "KafkaClusterSet");
        loop {
            let set = api.get("events").await.expect("set");
            if set.data["status"]["observedGeneration"].as_i64() == set.metadata.generation {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{ns}: the set got no status: {}",
                set.data
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!(
        "both watched namespaces reconciled in {:?}",
        started.elapsed()
    );
    // Given the time the others took, and more, the third stays untouched.
    tokio::time::sleep(started.elapsed() + Duration::from_secs(5)).await;
    let left = kappa_api(&client, &unwatched, "KafkaClusterSet")
        .get("events")
        .await
        .expect("set");
    assert!(
        left.data["status"].is_null(),
        "an unwatched namespace got a status: {}",
        left.data["status"]
    );
    let log = std::fs::read_to_string(&operator.log).unwrap_or_default();
    assert_eq!(refusal_in(&log), None, "a call outside its grants: {log}");
    operator.assert_log_clean();
    assert!(operator.terminate(), "the operator stops cleanly");
}
