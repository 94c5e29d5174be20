//! A Backfill end to end on the testbed's real node, with the operator
//! in-cluster: extra builtin clusters as pods, replay workers as Job pods,
//! the derived job running the demo app; faults injected while it runs. Its
//! own test binary (and node testbed), because it kills the operator's
//! leader pod, which other in-cluster tests would feel.

mod common;

use std::time::{Duration, Instant};

use common::node::{
    assert_pods_logged_no_refusal, demo_consumer, deploy_operator, lease_holder, set_ready,
    tansu_pod, tansu_template,
};
use common::objects::pipeline;
use common::{create, Testbed};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::json;

/// The phases a Backfill went through, polled until it settles.
async fn follow_backfill(
    client: &kube::Client,
    ns: &str,
    name: &str,
    within: Duration,
) -> (Vec<String>, serde_json::Value) {
    let started = Instant::now();
    let mut phases: Vec<String> = Vec::new();
    loop {
        let status = common::status(client, ns, "Backfill", name).await;
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
                return (phases, status);
            }
        }
        assert!(
            started.elapsed() < within,
            "backfill {name} did not settle; phases {phases:?}, status {status}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Time (ms) as RFC 3339.
fn rfc3339(ms: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .expect("a time")
        .to_string()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backfill_of_a_million_records_survives_faults_and_leaves_nothing_behind() {
    let testbed = Testbed::with_node();
    deploy_operator(testbed);
    let client = testbed.client().await;
    let ns = testbed.namespace("backfill").await;
    // The live cluster is a broker the test reaches; the extra clusters are
    // builtin ones the operator runs from the template.
    let live = tansu_pod(testbed, &ns, "kafka-live");
    let set = json!({
        "apiVersion": "kappa.dev/v1alpha1", "kind": "KafkaClusterSet", "metadata": {"name": "events"},
        "spec": {
            "template": tansu_template("1Gi"),
            "clusters": [{"name": "live", "overrides": {"provider": "external", "external": {"bootstrapServers": [live]}}}],
            "streams": [{"name": "orders", "partitions": 4}],
            "routing": {"writeCluster": "live"}
        }
    });
    create(&client, &ns, set).await.expect("set created");
    set_ready(&client, &ns, Duration::from_secs(120)).await;
    const RANGE: u64 = 1_000_000;
    let (from, to) = common::replay::write_source(&live, "orders", [20_000, RANGE, 20_000], 1_000);

    create(&client, &ns, pipeline("totals", demo_consumer("suspended")))
        .await
        .expect("pipeline");
    let backfill = |name: &str| {
        json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "Backfill", "metadata": {"name": name},
            "spec": {"pipelineRef": "totals", "from": rfc3339(from), "to": rfc3339(to),
                     "capacity": {"clusters": 2, "partitionMultiplier": 2, "parallelism": 2},
                     "completion": "outputOnly", "teardownAfter": "0s"}
        })
    };

    // Deleted while replaying: everything it created goes.
    create(&client, &ns, backfill("dropped"))
        .await
        .expect("backfill");
    let started = Instant::now();
    while !testbed
        .kubectl(&["-n", &ns, "get", "jobs", "-o", "name"])
        .contains("dropped-replay")
    {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no replay Job; phase {}",
            phase_of(&client, &ns, "dropped").await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    testbed.kubectl(&["-n", &ns, "delete", "backfill", "dropped", "--wait=false"]);
    let started = Instant::now();
    loop {
        let left = leftovers(testbed, &client, &ns, "dropped").await;
        if left.is_empty() {
            println!(
                "a Backfill deleted while replaying left nothing after {:.1}s",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "left behind by a deleted Backfill: {left:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // A full run while the operator's leader pod is killed at every phase
    // boundary and every 20 s, a
    // replay worker's pod is killed mid-copy and an extra cluster's broker
    // pod restarts mid-replay (it comes back empty).
    create(&client, &ns, backfill("rerun"))
        .await
        .expect("backfill");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let faults = {
        let (client, ns, stop) = (client.clone(), ns.clone(), stop.clone());
        tokio::spawn(async move {
            let leases: Api<Lease> = Api::namespaced(client.clone(), "kappa-system");
            let (mut leaders, mut worker, mut broker) = (0, false, false);
            let mut last_kill = Instant::now();
            let mut last_phase = String::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // At every phase boundary, and every 20 s between them.
                let phase = phase_of(&client, &ns, "rerun").await;
                let boundary = !phase.is_empty() && phase != last_phase;
                last_phase = phase;
                if boundary || last_kill.elapsed() >= Duration::from_secs(20) {
                    if let Some(leader) = lease_holder(&leases).await {
                        leaders += kill_pods(testbed, "kappa-system", &[&leader]);
                    }
                    last_kill = Instant::now();
                }
                if last_phase == "Replaying" && !(worker && broker) {
                    let running = testbed.kubectl(&[
                        "-n",
                        &ns,
                        "get",
                        "pods",
                        "-l",
                        "job-name=rerun-replay-0",
                        "--field-selector=status.phase=Running",
                        "-o",
                        "name",
                    ]);
                    if !running.trim().is_empty() {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        worker = kill_pods(testbed, &ns, &["-l", "job-name=rerun-replay-0"]) > 0;
                        broker = kill_pods(testbed, &ns, &["events-rerun-1-0"]) > 0;
                        println!("killed replay worker 0: {worker}; restarted broker events-rerun-1-0: {broker}");
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            (leaders, worker, broker)
        })
    };
    let (phases, status) = follow_backfill(&client, &ns, "rerun", Duration::from_secs(1200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (leaders, worker, broker) = faults.await.expect("fault task");
    println!(
        "faults: {leaders} leader pod(s) killed, replay worker killed: {worker}, broker restarted: {broker}; workers rerun {} time(s); progress {}",
        status["replay"]["reruns"], status["progress"]
    );
    assert!(worker && broker, "the faults did not land while replaying");
    // Phases come in order; a short one may pass between two polls.
    let order = [
        "Provisioning",
        "Replaying",
        "Processing",
        "TearingDown",
        "Completed",
    ];
    let positions: Vec<usize> = phases
        .iter()
        .map(|p| {
            order
                .iter()
                .position(|o| o == p)
                .expect("a phase of a successful run")
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{phases:?}");
    for seen in ["Replaying", "Processing", "Completed"] {
        assert!(
            phases.iter().any(|p| p == seen),
            "{seen} not seen: {phases:?}"
        );
    }
    let replay = &status["replay"];
    assert_eq!(replay["recordsTotal"], RANGE, "{status}");
    assert_eq!(status["progress"]["recordsReplayed"], RANGE, "{status}");
    // What the extra clusters held at the end of the replay, partition by
    // partition (fresh topics, so their next offsets are their record
    // counts): every record of the range once.
    let written: i64 = replay["written"]
        .as_array()
        .expect("written offsets")
        .iter()
        .flat_map(|w| {
            w["offsets"]
                .as_object()
                .expect("offsets")
                .values()
                .map(|v| v.as_i64().expect("offset"))
        })
        .sum();
    assert_eq!(written, RANGE as i64, "{status}");
    // The hand-off offsets are where the range ends on the live cluster: the
    // first record of the third part on every partition.
    let handoff: i64 = replay["handoffOffsets"][0]["offsets"]
        .as_object()
        .expect("hand-off offsets")
        .values()
        .map(|v| v.as_i64().expect("offset"))
        .sum();
    assert_eq!(handoff, (20_000 + RANGE) as i64, "{status}");
    assert_eq!(
        status["clusters"],
        serde_json::Value::Null,
        "released: {status}"
    );
    let left = leftovers(testbed, &client, &ns, "rerun").await;
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_pods_logged_no_refusal(testbed);
}
