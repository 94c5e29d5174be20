//! Records written into a Backfill's extra cluster by a writer other than
//! its replay workers, as from a writer that outlived its pod: the copy must
//! notice them and start again on emptied topics.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};

use super::*;

/// Writes 200 records into partition 0 of `orders` on the first extra
/// cluster of Backfill `name` from inside that cluster's broker pod (with
/// Tansu's own `cat produce`, one batch), as a writer other than the
/// workers, before any worker writes: the node is cordoned as soon as the
/// extra clusters' brokers are placed (seen through the API, not kubectl,
/// so that a loaded machine does not let the worker pods be placed first),
/// so the worker pods stay Pending until the records are in; the Backfill
/// creates the destination topics before the worker Jobs, so the write
/// waits for the first Job. (Tansu's `perf produce` was used here first:
/// it exits 0 also when nothing was written.)
/// The records are read back before the workers may start. Returns whether
/// the broker kept them until the copy was checked (same pod, no restart,
/// the records still readable at the start of the partition): its records
/// live in memory, so a broker that restarted loses them, and there is then
/// nothing foreign to find.
pub(super) async fn write_foreign_records(
    testbed: &Testbed,
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> bool {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let placed = |pod: Option<Pod>| pod.and_then(|p| p.spec?.node_name);
    let brokers = [format!("events-{name}-0-0"), format!("events-{name}-1-0")];
    let started = Instant::now();
    let mut node = None;
    while node.is_none() {
        let mut nodes = Vec::new();
        for broker in &brokers {
            nodes.push(placed(pods.get_opt(broker).await.expect("broker pod")));
        }
        if nodes.iter().all(Option::is_some) {
            node = nodes.remove(0);
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{name}: the extra clusters' brokers were not placed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let node = node.expect("placed");
    let nodes: Api<Node> = Api::all(client.clone());
    let cordon = |unschedulable: bool| {
        let patch = json!({"spec": {"unschedulable": unschedulable}});
        let nodes = nodes.clone();
        let node = node.clone();
        async move {
            nodes
                .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("node (un)cordoned");
        }
    };
    cordon(true).await;
    let early: Vec<String> = pods
        .list(&Default::default())
        .await
        .expect("pods")
        .into_iter()
        .filter(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(&format!("{name}-replay-")))
        })
        .filter_map(|p| {
            p.spec?
                .node_name
                .map(|_| p.metadata.name.unwrap_or_default())
        })
        .collect();
    assert!(
        early.is_empty(),
        "{name}: replay workers {early:?} were placed before the node was cordoned; the foreign records could not come first"
    );
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let job = format!("{name}-replay-0");
    while jobs.get_opt(&job).await.expect("replay Job").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{name}: the first replay Job did not appear"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let produce = r#"i=0; while [ $i -lt 200 ]; do i=$((i + 1)); echo "{\"key\": \"foreign-$i\", \"value\": \"$i\"}"; done | /usr/local/bin/tansu cat produce orders --partition 0 --broker tcp://localhost:9092 -"#;
    let output =
        testbed.kubectl_output(&["-n", ns, "exec", &brokers[0], "--", "sh", "-c", produce]);
    assert!(
        output.status.success(),
        "tansu cat produce in {}: {}",
        brokers[0],
        String::from_utf8_lossy(&output.stderr)
    );
    // Read back while the workers still wait (a produce that reports
    // success for nothing written must not pass for a write).
    assert_eq!(
        foreign_held(testbed, ns, &brokers[0]),
        Some(200),
        "{name}: the 200 foreign records are not readable in {} after their write",
        brokers[0]
    );
    cordon(false).await;
    // The broker's life after the write, until the copy has been checked.
    let life = |pod: &Pod| {
        let restarts = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|all| all.iter().map(|c| c.restart_count).sum::<i32>());
        (pod.metadata.uid.clone(), restarts)
    };
    let written = life(&pods.get(&brokers[0]).await.expect("broker pod"));
    loop {
        // One read of the Backfill per round: its phase, and whether it
        // copied again.
        let status = common::status(client, ns, "Backfill", name).await;
        if status["phase"] != "Replaying" {
            return true;
        }
        match pods.get_opt(&brokers[0]).await.expect("broker pod") {
            Some(pod) if life(&pod) == written => {}
            other => {
                println!(
                    "{name}: broker {} restarted or went away after the write: {:?}",
                    brokers[0],
                    other.map(|p| life(&p))
                );
                return false;
            }
        }
        // Only a copy made again empties the topic; before the workers
        // finish, the records can only go with the broker's memory.
        let copies = status["replay"]["reruns"].as_i64().unwrap_or(0);
        if copies == 0 && foreign_held(testbed, ns, &brokers[0]) == Some(0) {
            println!(
                "{name}: broker {} no longer holds the foreign records, with no restart recorded",
                brokers[0]
            );
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
}

/// How many of the distinct foreign records partition 0 of `orders` starts
/// with on `broker` (read from inside its pod); `None` when it could not be
/// asked (the exec failed).
fn foreign_held(testbed: &Testbed, ns: &str, broker: &str) -> Option<usize> {
    let consume = r#"timeout 10 /usr/local/bin/tansu cat consume orders --partition 0 --max-wait-time-ms 200 --broker tcp://localhost:9092 | grep -o '"foreign-[0-9]*"' | sort -u | wc -l"#;
    let output = testbed.kubectl_output(&["-n", ns, "exec", broker, "--", "sh", "-c", consume]);
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}
