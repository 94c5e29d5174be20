//! The webhook's refusals against the in-cluster operator, and losing its leader.

use super::*;

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
