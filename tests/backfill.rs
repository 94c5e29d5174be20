//! Backfills end to end on the testbed's real node, with the operator
//! in-cluster: extra builtin clusters as pods, replay workers as Job pods,
//! the derived job running the demo app's per-key aggregation, whose output
//! is compared with totals computed from the source; faults injected while
//! one runs (the operator's leader, a replay worker, a broker, the API
//! server, etcd). Its own test binary (and node testbed), because it kills
//! the operator's leader pod and restarts the control plane, which other
//! in-cluster tests would feel.

mod common;
#[path = "backfill/faults.rs"]
mod faults;
#[path = "backfill/foreign.rs"]
mod foreign;

use std::time::{Duration, Instant};

use common::node::{
    assert_pods_logged_no_refusal, demo_aggregator, deploy_operator, lease_holder, set_ready,
    tansu_pod, tansu_template,
};
use common::objects::pipeline;
use common::replay::{added, aggregated, reference, rfc3339, Totals};
use common::{create, kappa_api, Testbed};
use faults::{inject_faults, restart_mid_replay};
use foreign::write_foreign_records;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kappa_operator::api::backfill::{Backfill, BackfillPhase};
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use rand::Rng;
use serde_json::json;

/// The phases a Backfill went through, polled until it settles.
async fn follow_backfill(
    client: &kube::Client,
    ns: &str,
    name: &str,
    within: Duration,
) -> (Vec<String>, serde_json::Value, bool) {
    let started = Instant::now();
    let mut phases: Vec<String> = Vec::new();
    let mut unread = false;
    let backfills = kappa_api(client, ns, "Backfill");
    loop {
        // The API server may be restarting: asked again.
        let status = match backfills.get(name).await {
            Ok(object) => object.data["status"].clone(),
            Err(_) => {
                unread = true;
                serde_json::Value::Null
            }
        };
        if let Some(phase) = status["phase"].as_str() {
            if phases.last().map(String::as_str) != Some(phase) {
                println!(
                    "{:>6.1}s backfill {name}: {phase} ({})",
                    started.elapsed().as_secs_f64(),
                    status["conditions"]
                );
                phases.push(phase.to_string());
            }
            if phase == "Completed" || phase == "Failed" {
                return (phases, status, unread);
            }
        }
        assert!(
            started.elapsed() < within,
            "backfill {name} did not settle; phases {phases:?}, status {status}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// What a Backfill named `name` created that is still there: its clusters in
/// the set's status, and Jobs, StatefulSets, Pipelines and ConfigMaps by name.
async fn leftovers(testbed: &Testbed, client: &kube::Client, ns: &str, name: &str) -> Vec<String> {
    let set = common::status(client, ns, "KafkaClusterSet", "events").await;
    let mut left: Vec<String> = set["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["owner"] == name)
        .map(|c| format!("cluster {}", c["name"]))
        .collect();
    for kind in ["jobs", "statefulsets", "pipelines", "configmaps"] {
        let names = testbed.kubectl(&["-n", ns, "get", kind, "-o", "name"]);
        left.extend(
            names
                .lines()
                .filter(|l| l.contains(&format!("{name}-")))
                .map(String::from),
        );
    }
    left
}

/// Force-deletes pods matching `selector` (a name or `-l` selector); how many went.
fn kill_pods(testbed: &Testbed, ns: &str, selector: &[&str]) -> usize {
    let mut args = vec![
        "-n",
        ns,
        "delete",
        "pod",
        "--grace-period=0",
        "--force",
        "--ignore-not-found",
    ];
    args.extend_from_slice(selector);
    let output = testbed.kubectl_output(&args);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.contains("deleted"))
        .count()
}

/// The phase a Backfill's status records.
async fn phase_of(client: &kube::Client, ns: &str, name: &str) -> String {
    let status = common::status(client, ns, "Backfill", name).await;
    status["phase"].as_str().unwrap_or_default().to_string()
}

/// Shortens the operator's leader lease to 4 s (renewed every second), so
/// that a killed leader is replaced within seconds and a run can take many
/// kills.
async fn shorten_lease(testbed: &Testbed, client: &kube::Client) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kappa-system");
    let deployment = deployments
        .get("kappa-operator")
        .await
        .expect("the operator");
    let mut containers = deployment
        .spec
        .template
        .spec
        .map(|s| s.containers)
        .unwrap_or_default();
    for container in &mut containers {
        for arg in container.args.iter_mut().flatten() {
            if arg.starts_with("--lease-duration=") {
                *arg = "--lease-duration=4s".into();
            } else if arg.starts_with("--renew-interval=") {
                *arg = "--renew-interval=1s".into();
            }
        }
    }
    let patch = json!({"spec": {"template": {"spec": {"containers": containers}}}});
    deployments
        .patch(
            "kappa-operator",
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
        .expect("lease shortened");
    deploy_operator(testbed);
}

/// What went wrong between `expected` and `found` totals, for a message.
fn differences(expected: &Totals, found: &Totals) -> String {
    let keys: std::collections::BTreeSet<&Vec<u8>> = expected.keys().chain(found.keys()).collect();
    let wrong: Vec<String> = keys
        .into_iter()
        .filter(|k| expected.get(*k) != found.get(*k))
        .map(|k| {
            format!(
                "{}: expected {:?}, found {:?}",
                String::from_utf8_lossy(k),
                expected.get(k),
                found.get(k)
            )
        })
        .collect();
    format!(
        "{} of {} keys differ, e.g. {:?}",
        wrong.len(),
        expected.len(),
        &wrong[..wrong.len().min(5)]
    )
}

/// The source, the range and what the job's output must add for it.
struct Source<'a> {
    bootstrap: &'a str,
    range: (i64, i64),
    records: u64,
    reference: Totals,
    /// Key and value bytes of the range's records.
    bytes: i64,
}

fn backfill(name: &str, source: &Source, completion: &str) -> serde_json::Value {
    json!({
        "apiVersion": "kappa.dev/v1alpha1", "kind": "Backfill", "metadata": {"name": name},
        "spec": {"pipelineRef": "totals", "from": rfc3339(source.range.0), "to": rfc3339(source.range.1),
                 "capacity": {"clusters": 2, "partitionMultiplier": 2, "parallelism": 2},
                 "completion": completion, "teardownAfter": "0s"}
    })
}

/// Follows Backfill `name` (created with the job's output at `before`) to
/// Completed and checks what a successful run must leave: phases in order,
/// every record of the range replayed once, the job's output adding exactly
/// the reference, nothing of it left. Returns its status.
async fn check_run(
    testbed: &Testbed,
    client: &kube::Client,
    ns: &str,
    name: &str,
    (source, before): (&Source<'_>, &Totals),
) -> serde_json::Value {
    let (phases, status, unread) =
        follow_backfill(client, ns, name, Duration::from_secs(1200)).await;
    // Phases come in order; a short one may pass between two polls.
    let order = [
        "Provisioning",
        "Replaying",
        "Processing",
        "HandingOff",
        "TearingDown",
        "Completed",
    ];
    let positions: Vec<usize> = phases
        .iter()
        .map(|p| {
            order
                .iter()
                .position(|o| o == p)
                .unwrap_or_else(|| panic!("{p} in a successful run: {status}"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{phases:?}");
    // While the API server restarts, a short Processing phase can pass
    // unread; the job's output, checked below against the reference,
    // shows it ran.
    let expected: &[&str] = if unread {
        &["Replaying", "Completed"]
    } else {
        &["Replaying", "Processing", "Completed"]
    };
    for seen in expected {
        assert!(
            phases.iter().any(|p| p == seen),
            "{seen} not seen: {phases:?}"
        );
    }
    let replay = &status["replay"];
    assert_eq!(replay["recordsTotal"], source.records, "{status}");
    assert_eq!(
        status["progress"]["recordsReplayed"], source.records,
        "{status}"
    );
    assert_eq!(
        status["progress"]["bytesReplayed"], source.bytes,
        "the workers' byte count: {status}"
    );
    // What the extra clusters held at the end of the replay, partition by
    // partition (fresh topics, so their next offsets are their record
    // counts): every record of the range once.
    let sum_offsets = |list: &serde_json::Value| -> i64 {
        list.as_array()
            .expect("offsets per stream")
            .iter()
            .flat_map(|w| {
                w["offsets"]
                    .as_object()
                    .expect("offsets")
                    .values()
                    .map(|v| v.as_i64().expect("offset"))
            })
            .sum()
    };
    assert_eq!(
        sum_offsets(&replay["written"]),
        source.records as i64,
        "{status}"
    );
    // The hand-off offsets are where the range ends on the live cluster: the
    // first record of the third part on every partition.
    assert_eq!(
        sum_offsets(&replay["handoffOffsets"]),
        (20_000 + source.records) as i64,
        "{status}"
    );
    assert_eq!(
        status["clusters"],
        serde_json::Value::Null,
        "released: {status}"
    );
    let left = leftovers(testbed, client, ns, name).await;
    assert!(left.is_empty(), "left behind: {left:?}");
    let output = added(before, &aggregated(source.bootstrap, "totals"));
    assert!(
        output == source.reference,
        "{name}: the job's output is not the reference: {}",
        differences(&source.reference, &output)
    );
    println!(
        "{name}: output equals the reference ({} keys, {} records)",
        output.len(),
        output.values().map(|(count, _)| count).sum::<u64>()
    );
    status
}

/// Creates Backfill `name`, deletes it once `kind` lists `object` (one of
/// the things it creates in the phase it is to be deleted in), and waits
/// until nothing of it is left, pods included.
async fn delete_midway(
    testbed: &Testbed,
    client: &kube::Client,
    ns: &str,
    source: &Source<'_>,
    (name, kind, object): (&str, &str, &str),
) {
    create(client, ns, backfill(name, source, "outputOnly"))
        .await
        .expect("backfill");
    let started = Instant::now();
    while !testbed
        .kubectl(&["-n", ns, "get", kind, "-o", "name"])
        .contains(object)
    {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no {object}; phase {}",
            phase_of(client, ns, name).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let phase = phase_of(client, ns, name).await;
    testbed.kubectl(&["-n", ns, "delete", "backfill", name, "--wait=false"]);
    let started = Instant::now();
    loop {
        // Its pods too: a job pod still stopping could still write output.
        let mut left = leftovers(testbed, client, ns, name).await;
        let pods = testbed.kubectl(&["-n", ns, "get", "pods", "-o", "name"]);
        left.extend(
            pods.lines()
                .filter(|l| l.contains(&format!("{name}-")))
                .map(String::from),
        );
        if left.is_empty() {
            println!(
                "a Backfill deleted while {phase} left nothing after {:.1}s",
                started.elapsed().as_secs_f64()
            );
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "left behind by a Backfill deleted while {phase}: {left:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfills_of_a_million_records_reach_the_reference_through_faults_and_leave_nothing() {
    let testbed = Testbed::with_node();
    deploy_operator(testbed);
    let client = testbed.client().await;
    shorten_lease(testbed, &client).await;
    let ns = testbed.namespace("backfill").await;
    // The live cluster is a broker the test reaches; the extra clusters are
    // builtin ones the operator runs from the template.
    let live = tansu_pod(testbed, &ns, "kafka-live");
    let set = json!({
        "apiVersion": "kappa.dev/v1alpha1", "kind": "KafkaClusterSet", "metadata": {"name": "events"},
        "spec": {
            "template": tansu_template("1Gi"),
            "clusters": [{"name": "live", "overrides": {"provider": "external", "external": {"bootstrapServers": [live]}}}],
            "streams": [{"name": "orders", "partitions": 4}, {"name": "totals", "partitions": 4}],
            "routing": {"writeCluster": "live"}
        }
    });
    create(&client, &ns, set).await.expect("set created");
    set_ready(&client, &ns, Duration::from_secs(120)).await;
    const RANGE: u64 = 1_000_000;
    let range = common::replay::write_source(&live, "orders", [20_000, RANGE, 20_000], 1_000);
    let (totals, bytes) = reference(&live, "orders", range);
    let source = Source {
        bootstrap: &live,
        range,
        records: RANGE,
        reference: totals,
        bytes,
    };
    assert_eq!(
        source
            .reference
            .values()
            .map(|(count, _)| count)
            .sum::<u64>(),
        RANGE,
        "records stamped within the range"
    );
    // The live job, suspended: the output holds only what backfills add.
    create(
        &client,
        &ns,
        pipeline("totals", demo_aggregator("suspended")),
    )
    .await
    .expect("pipeline");

    // Deleted while replaying, and while its job runs: everything it
    // created goes.
    delete_midway(
        testbed,
        &client,
        &ns,
        &source,
        ("dropped", "jobs", "dropped-replay-0"),
    )
    .await;
    delete_midway(
        testbed,
        &client,
        &ns,
        &source,
        ("quit", "pods", "quit-job-0"),
    )
    .await;

    // A run without faults.
    let before = aggregated(&live, "totals");
    create(&client, &ns, backfill("clean", &source, "outputOnly"))
        .await
        .expect("backfill");
    check_run(testbed, &client, &ns, "clean", (&source, &before)).await;

    // A run whose extra cluster gets records the workers did not write, as
    // from a writer that outlived its pod: the copy starts again on emptied
    // topics and the output is still the reference.
    let before = aggregated(&live, "totals");
    create(&client, &ns, backfill("doubled", &source, "outputOnly"))
        .await
        .expect("backfill");
    let written = tokio::spawn({
        let (client, ns) = (client.clone(), ns.clone());
        async move { write_foreign_records(testbed, &client, &ns, "doubled").await }
    });
    let status = check_run(testbed, &client, &ns, "doubled", (&source, &before)).await;
    let kept = written.await.expect("foreign records written");
    let copies = status["replay"]["reruns"].as_i64().unwrap_or(0);
    println!("doubled: records written by another producer mid-replay; the range was copied again {copies} time(s)");
    if kept {
        assert!(copies >= 1, "the foreign records went unnoticed: {status}");
    } else {
        println!("doubled: the broker holding the foreign records restarted before the copy was checked, taking them with it; only the output was checked");
    }

    // The control plane restarted while replay workers copy: the API server,
    // then etcd, each down for 5 s. The operator's leader loses its 4 s
    // lease and exits, its pod is restarted, and each run still reaches the
    // reference and leaves nothing.
    for service in ["kube-apiserver", "etcd"] {
        let name = format!("restart-{}", service.trim_start_matches("kube-"));
        let before = aggregated(&live, "totals");
        create(&client, &ns, backfill(&name, &source, "outputOnly"))
            .await
            .expect("backfill");
        let restarted = tokio::spawn({
            let (ns, name) = (ns.clone(), name.clone());
            async move { restart_mid_replay(testbed, &ns, &name, service).await }
        });
        check_run(testbed, &client, &ns, &name, (&source, &before)).await;
        assert!(
            restarted.await.expect("restart task"),
            "{name}: {service} was not restarted while replaying"
        );
    }

    // The same run with faults, three times, the last one handing off to
    // the live job.
    let (mut at_boundaries, mut at_random) = (0, 0);
    let mut before_handoff = Totals::new();
    for (name, completion) in [
        ("faults-1", "outputOnly"),
        ("faults-2", "outputOnly"),
        ("handoff", "handoff"),
    ] {
        let before = aggregated(&live, "totals");
        if completion == "handoff" {
            before_handoff = before.clone();
        }
        create(&client, &ns, backfill(name, &source, completion))
            .await
            .expect("backfill");
        let faults = tokio::spawn(inject_faults(
            testbed,
            client.clone(),
            ns.clone(),
            name.into(),
        ));
        let status = check_run(testbed, &client, &ns, name, (&source, &before)).await;
        let faults = faults.await.expect("fault task");
        println!(
            "{name}: leader pod killed at {} of {} phase changes and at {} random instants, replay worker killed: {}, broker restarted: {}; progress {}",
            faults.at_boundaries, faults.transitions, faults.at_random, faults.worker, faults.broker, status["progress"]
        );
        assert!(
            faults.worker && faults.broker,
            "{name}: the faults did not land while replaying"
        );
        // Phases: Provisioning, Replaying, Processing, (HandingOff,)
        // TearingDown before Completed, each killed at as it began.
        assert!(
            faults.at_boundaries >= 4 && faults.at_boundaries == faults.transitions,
            "{name}: {faults:?}"
        );
        at_boundaries += faults.at_boundaries;
        at_random += faults.at_random;
    }
    println!(
        "leader pod killed at {at_boundaries} phase boundaries and {at_random} random instants"
    );
    assert!(at_random >= 20, "only {at_random} kills at random instants");
    // The live job, handed off to, continues where the range ended: once
    // running, the output holds the range and everything after it, each
    // record counted once.
    let live_status = common::status(&client, &ns, "Pipeline", "totals").await;
    let handed_off = live_status["handedOffFrom"].as_str().unwrap_or_default();
    assert!(handed_off.starts_with("handoff-handoff-"), "{live_status}");
    let stored = kappa_api(&client, &ns, "Pipeline")
        .get("totals")
        .await
        .expect("live pipeline");
    assert!(
        !stored
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("kappa.dev/handoff-savepoint"),
        "the hand-off request is removed from the live pipeline once done"
    );
    testbed.kubectl(&[
        "-n",
        &ns,
        "patch",
        "pipeline",
        "totals",
        "--type=merge",
        "-p",
        r#"{"spec":{"state":"running"}}"#,
    ]);
    let (onward, _) = reference(&live, "orders", (range.0, i64::MAX));
    let started = Instant::now();
    loop {
        let output = added(&before_handoff, &aggregated(&live, "totals"));
        if output == onward {
            println!(
                "the live job continued from the hand-off: output equals the reference from the range on ({} records) after {:.1}s",
                onward.values().map(|(count, _)| count).sum::<u64>(),
                started.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the live job's output after the hand-off is not the reference: {}",
            differences(&onward, &output)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_pods_logged_no_refusal(testbed);
}
