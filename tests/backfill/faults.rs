//! The faults a Backfill's run is put through: its leader killed at every
//! phase boundary and at random, a replay worker and a broker killed
//! mid-copy, the control plane restarted mid-replay.

use super::*;

/// Kills the operator's leader pod at every phase boundary of Backfill
/// `name` (each phase change its watch delivers: the operator records a
/// phase before acting on it) and at random instants 0.5-3 s apart, a
/// replay worker's pod mid-copy, and restarts an extra cluster's broker pod
/// mid-replay (it comes back empty), until the Backfill settles. Returns
/// the phase changes seen, the leaders killed at boundaries and at random
/// instants, and whether the worker and the broker faults landed.
pub(super) async fn inject_faults(
    testbed: &'static Testbed,
    client: kube::Client,
    ns: String,
    name: String,
) -> Faults {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kappa-system");
    let backfills: Api<Backfill> = Api::namespaced(client.clone(), &ns);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut changes = watcher::watcher(backfills, config)
        .default_backoff()
        .boxed();
    let mut faults = Faults::default();
    let pause = || Duration::from_millis(rand::rng().random_range(500..3_000));
    let mut next_kill = tokio::time::Instant::now() + pause();
    let mut phase = None;
    loop {
        let boundary = tokio::select! {
            event = changes.next() => {
                let backfill = match event.expect("the Backfill's watch ends only when dropped") {
                    Ok(Event::Apply(backfill) | Event::InitApply(backfill)) => backfill,
                    Ok(_) => continue,
                    Err(error) => {
                        println!("watching {name}: {error}");
                        continue;
                    }
                };
                let now = backfill.status.and_then(|s| s.phase);
                if matches!(now, Some(BackfillPhase::Completed | BackfillPhase::Failed)) {
                    return faults;
                }
                if now == phase {
                    continue;
                }
                phase = now;
                faults.transitions += 1;
                true
            }
            _ = tokio::time::sleep_until(next_kill) => false,
            // Looks for a running worker while replaying.
            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                if phase == Some(BackfillPhase::Replaying) && !(faults.worker && faults.broker) {
                    kill_worker_and_broker(testbed, &ns, &name, &mut faults).await;
                }
                continue;
            }
        };
        // The lease may still name a leader killed before: a random kill
        // counts once; at a boundary that leader is gone either way. A
        // lease that names no one (a killed leader released it on its way
        // out, and no other has taken it yet) leaves no leader to kill: the
        // boundary counts, the random instant does not.
        let killed = match lease_holder(&leases).await {
            Some(leader) => kill_pods(testbed, "kappa-system", &[&leader]),
            None => 0,
        };
        if boundary {
            faults.at_boundaries += 1;
        } else {
            faults.at_random += killed;
        }
        if !boundary {
            next_kill = tokio::time::Instant::now() + pause();
        }
    }
}

/// What [`inject_faults`] did.
#[derive(Debug, Default)]
pub(super) struct Faults {
    /// Phase changes seen before the Backfill settled.
    pub(super) transitions: usize,
    /// Phase changes at which the lease's leader was killed (or was gone).
    pub(super) at_boundaries: usize,
    /// Leader pods killed at random instants.
    pub(super) at_random: usize,
    /// Whether a replay worker's pod was killed mid-copy.
    pub(super) worker: bool,
    /// Whether an extra cluster's broker pod was restarted mid-replay.
    pub(super) broker: bool,
}

/// Whether a pod of replay worker 0 of Backfill `name` runs (no when the
/// API server does not answer).
fn worker_running(testbed: &Testbed, ns: &str, name: &str) -> bool {
    let running = testbed.kubectl_output(&[
        "-n",
        ns,
        "get",
        "pods",
        "-l",
        &format!("job-name={name}-replay-0"),
        "--field-selector=status.phase=Running",
        "-o",
        "name",
    ]);
    !String::from_utf8_lossy(&running.stdout).trim().is_empty()
}

/// Once replay worker 0 of Backfill `name` runs, kills its pod and restarts
/// the broker pod of the Backfill's second extra cluster.
async fn kill_worker_and_broker(testbed: &Testbed, ns: &str, name: &str, faults: &mut Faults) {
    let job = format!("job-name={name}-replay-0");
    if !worker_running(testbed, ns, name) {
        return;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    faults.worker = kill_pods(testbed, ns, &["-l", &job]) > 0;
    faults.broker = kill_pods(testbed, ns, &[&format!("events-{name}-1-0")]) > 0;
    println!(
        "killed replay worker 0: {}; restarted broker events-{name}-1-0: {}",
        faults.worker, faults.broker
    );
}

/// Once replay worker 0 of Backfill `name` has run for 2 s, restarts
/// `service` of the control plane (down for 5 s); whether it did before
/// the Backfill left Replaying.
pub(super) async fn restart_mid_replay(
    testbed: &'static Testbed,
    ns: &str,
    name: &str,
    service: &'static str,
) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(600) {
        if worker_running(testbed, ns, name) {
            tokio::time::sleep(Duration::from_secs(2)).await;
            tokio::task::spawn_blocking(move || testbed.restart(service, Duration::from_secs(5)))
                .await
                .expect("restarted");
            println!("{name}: {service} restarted while replay worker 0 ran");
            return true;
        }
        let phase = testbed.kubectl_output(&[
            "-n",
            ns,
            "get",
            "backfill",
            name,
            "-o",
            "jsonpath={.status.phase}",
        ]);
        let phase = String::from_utf8_lossy(&phase.stdout).to_string();
        if !matches!(
            phase.as_str(),
            "" | "Pending" | "Provisioning" | "Replaying"
        ) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    false
}
