//! `kappa-operator replay` against real Tansu brokers: a source cluster with
//! batched history and two backfill clusters. Workers run as processes of
//! the real binary, as the replay Job runs them. Every run is counted
//! record by record against its plan: each record of the range exactly
//! once, nothing outside it, per destination partition in source order, and
//! where the routing puts it.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::kafka::committed;
use common::replay::{count, create_topic, plan, read_all, write_source, Count};
use common::{free_port, Testbed};
use kappa_operator::replay::bytes_group;
use kappa_operator::replay::plan::ReplayPlan;

const SOURCE_TOPIC: &str = "events";
const PARTITIONS: i32 = 4;
/// Records before, in and after the copied range.
const PARTS: [u64; 3] = [20_000, 300_000, 20_000];
const KEYS: u64 = 1_000;
const MULTIPLIER: i32 = 2;
const WORKERS: i32 = 2;
const FINISHES_WITHIN: Duration = Duration::from_secs(240);

/// A source broker holding the history and two backfill brokers, started
/// once for this test binary.
struct Brokers {
    testbed: &'static Testbed,
    source: String,
    /// The time range covering the middle part of the source.
    range: (i64, i64),
    destinations: Vec<String>,
}

fn brokers() -> &'static Brokers {
    static BROKERS: OnceLock<Brokers> = OnceLock::new();
    BROKERS.get_or_init(|| {
        let testbed = Testbed::get();
        let source = testbed.start_broker("replay-source", free_port());
        let destinations = (0..2)
            .map(|n| testbed.start_broker(&format!("replay-backfill-{n}"), free_port()))
            .collect();
        // rdkafka's admin futures complete on its own thread: no runtime needed.
        futures::executor::block_on(create_topic(&source, SOURCE_TOPIC, PARTITIONS));
        let range = write_source(&source, SOURCE_TOPIC, PARTS, KEYS);
        Brokers {
            testbed,
            source,
            range,
            destinations,
        }
    })
}

/// A plan for a fresh destination topic `topic`, created on both backfill clusters.
async fn fresh_plan(topic: &str) -> (ReplayPlan, PathBuf) {
    fresh_plan_into(topic, &brokers().destinations).await
}

/// Like [`fresh_plan`], into other backfill clusters.
async fn fresh_plan_into(topic: &str, destinations: &[String]) -> (ReplayPlan, PathBuf) {
    let brokers = brokers();
    let plan = plan(
        &brokers.source,
        SOURCE_TOPIC,
        topic,
        brokers.range,
        destinations,
        MULTIPLIER,
        WORKERS,
    )
    .await;
    let partitions = plan.layout(&plan.streams[0]).destination_partitions();
    for destination in destinations {
        create_topic(destination, topic, partitions).await;
    }
    let path = brokers
        .testbed
        .state
        .join(format!("replay-plan-{topic}.json"));
    std::fs::write(&path, serde_json::to_string(&plan).expect("plan as JSON"))
        .expect("plan written");
    (plan, path)
}

/// One worker process and the file its log goes to.
struct Worker {
    index: i32,
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(plan: &std::path::Path, index: i32, run: &str) -> Worker {
        Self::start_with(
            Command::new(env!("CARGO_BIN_EXE_kappa-operator")),
            plan,
            index,
            run,
        )
    }

    /// Starts the worker as the first process of a PID namespace of its
    /// own, as a container runs it: such a process ignores every signal it
    /// does not listen for.
    fn start_as_init(plan: &std::path::Path, index: i32, run: &str) -> Worker {
        let mut command = Command::new("unshare");
        command.args(["--pid", "--fork", env!("CARGO_BIN_EXE_kappa-operator")]);
        Self::start_with(command, plan, index, run)
    }

    fn start_with(mut command: Command, plan: &std::path::Path, index: i32, run: &str) -> Worker {
        let log = plan.with_extension(format!("worker-{index}-{run}.log"));
        let child = command
            .args([
                "replay",
                "--plan",
                &plan.to_string_lossy(),
                "--worker",
                &index.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("worker starts");
        Worker { index, child, log }
    }

    /// Waits for the worker to exit; whether it succeeded. A failed
    /// worker's log goes to the test's output.
    fn wait(&mut self) -> bool {
        let deadline = Instant::now() + FINISHES_WITHIN;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("worker status") {
                if !status.success() {
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    eprintln!("worker {} failed:\n{log}", self.index);
                }
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!(
            "worker {} did not finish within {FINISHES_WITHIN:?}",
            self.index
        );
    }

    /// The `copied` or `skipped` field of the worker's last log line that has one.
    fn last(&self, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().rev().find_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            value[field].as_u64()
        })
    }

    /// Waits until the worker reports having copied something, while it still runs.
    fn wait_for_progress(&mut self) {
        let deadline = Instant::now() + FINISHES_WITHIN;
        while self.last("copied").unwrap_or(0) == 0 {
            assert!(
                Instant::now() < deadline,
                "worker {} reported no progress",
                self.index
            );
            assert!(
                self.child.try_wait().expect("worker status").is_none(),
                "worker {} exited before the fault: the fault would test nothing",
                self.index
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM to the worker started by [`Worker::start_as_init`]
    /// (the child of `unshare`) and returns its exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        assert!(
            self.child.try_wait().expect("worker status").is_none(),
            "worker {} already exited: SIGTERM would test nothing",
            self.index
        );
        let children = format!("/proc/{0}/task/{0}/children", self.child.id());
        let init = std::fs::read_to_string(&children).expect("the worker under unshare");
        let init = init
            .split_whitespace()
            .next()
            .expect("unshare runs the worker");
        let sent = Command::new("kill")
            .args(["-TERM", init])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM not sent to {init}");
        self.child.wait().expect("worker status")
    }

    fn kill(&mut self) {
        assert!(
            self.child.try_wait().expect("worker status").is_none(),
            "worker {} already exited: the kill would test nothing",
            self.index
        );
        self.child.kill().expect("worker killed");
        let _ = self.child.wait();
    }
}

fn perfect(plan: &ReplayPlan) -> Count {
    Count {
        once: plan.total_records() as u64,
        ..Count::default()
    }
}

/// Checks that the copy holds the range exactly once and that the workers
/// recorded its bytes.
fn check(plan: &ReplayPlan, topic: &str) {
    let copied = read_all(&plan.destinations, topic, &format!("{topic}-check"));
    let counted = count(plan, &copied);
    eprintln!("{topic}: {counted:?}");
    assert_eq!(counted, perfect(plan));
    let bytes: i64 = copied.iter().map(|c| c.bytes).sum();
    let group = bytes_group(&plan.progress_group);
    let recorded: i64 = plan
        .destinations
        .iter()
        .map(|d| committed(d, &group, topic).values().sum::<i64>())
        .sum();
    assert_eq!(recorded, bytes, "bytes recorded under {group}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_copy_the_range_exactly_once_into_two_clusters() {
    let (plan, path) = fresh_plan("events-clean").await;
    assert_eq!(plan.total_records() as u64, PARTS[1], "{plan:?}");
    let mut workers: Vec<Worker> = (0..WORKERS)
        .map(|i| Worker::start(&path, i, "first"))
        .collect();
    for worker in &mut workers {
        assert!(worker.wait(), "worker {} failed", worker.index);
    }
    let copied: u64 = workers.iter().filter_map(|w| w.last("copied")).sum();
    assert_eq!(copied, plan.total_records() as u64);
    check(&plan, "events-clean");

    // Run again over the finished copy: everything is found, nothing written.
    let mut again = Worker::start(&path, 0, "again");
    assert!(again.wait());
    assert_eq!(again.last("copied"), Some(0));
    assert!(again.last("skipped").unwrap_or(0) > 0);
    check(&plan, "events-clean");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_copy_resumes_without_duplicates_or_gaps() {
    let (plan, path) = fresh_plan("events-killed").await;
    let mut first = Worker::start(&path, 0, "first");
    let mut other = Worker::start(&path, 1, "first");
    first.wait_for_progress();
    first.kill();
    let before = first.last("copied").unwrap_or(0);
    let mut resumed = Worker::start(&path, 0, "resumed");
    assert!(resumed.wait(), "resumed worker failed");
    assert!(other.wait(), "worker 1 failed");
    let skipped = resumed.last("skipped").unwrap_or(0);
    eprintln!("killed after reporting {before} copied; the resumed worker skipped {skipped}");
    assert!(
        skipped >= before,
        "the resumed worker skipped {skipped}, {before} were written"
    );
    check(&plan, "events-killed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_broker_restarted_mid_copy_is_written_again() {
    // Backfill cluster 1 is this test's own broker: the other tests go on
    // using theirs while it restarts.
    let brokers = brokers();
    let (name, port) = ("replay-backfill-restarted", free_port());
    let restarted = brokers.testbed.start_broker(name, port);
    let destinations = [brokers.destinations[0].clone(), restarted.clone()];
    let topic = "events-restarted";
    let (plan, path) = fresh_plan_into(topic, &destinations).await;
    // Worker 1 copies the odd source partitions, which go to backfill cluster 1.
    let mut worker = Worker::start(&path, 1, "first");
    worker.wait_for_progress();
    brokers.testbed.stop_broker(name);
    brokers.testbed.start_broker(name, port);
    let partitions = plan.layout(&plan.streams[0]).destination_partitions();
    create_topic(&restarted, topic, partitions).await;
    // The broker came back empty: the worker notices and fails, and the
    // Job's next pod (here: the next process) writes everything again.
    let mut runs = 1;
    while !worker.wait() {
        assert!(runs < 5, "worker 1 failed {runs} times");
        runs += 1;
        worker = Worker::start(&path, 1, &format!("retry-{runs}"));
    }
    assert!(
        runs > 1,
        "the worker did not notice the broker losing its records"
    );
    let mut other = Worker::start(&path, 0, "first");
    assert!(other.wait());
    check(&plan, topic);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_stops_at_sigterm_as_its_containers_first_process_and_resumes() {
    // A force-deleted worker pod gets SIGTERM once its replacement may
    // already run: it must stop writing then, not when its share is done.
    let topic = "events-terminated";
    let (plan, path) = fresh_plan(topic).await;
    let mut first = Worker::start_as_init(&path, 0, "first");
    first.wait_for_progress();
    let status = first.terminate();
    assert_eq!(
        status.code(),
        Some(143),
        "the worker did not stop at SIGTERM: {status}"
    );
    for index in 0..WORKERS {
        let mut worker = Worker::start(&path, index, "after-sigterm");
        assert!(worker.wait(), "worker {index} failed after SIGTERM");
    }
    check(&plan, topic);
}
