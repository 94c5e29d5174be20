//! Session-mode Flink pipelines and their savepoints against a real Flink
//! 2.3 session cluster and the testbed's job, with the operator on the host.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::flink::{
    completed_savepoint, on_disk, patch_spec, redeployed, running, upgraded_to_parallelism, Flink,
    JOB_STARTS_WITHIN,
};
use common::objects::{kcs, pipeline, savepoint, valid_kcs_spec};
use common::{create, kappa_api, status, wait_for_ready, Operator, Testbed};
use kube::Client;
use serde_json::{json, Value};

fn flink() -> &'static Flink {
    static FLINK: OnceLock<Flink> = OnceLock::new();
    FLINK.get_or_init(|| Flink::start(Testbed::get()))
}

/// The jar limits the operator runs with here.
const JAR_MAX_BYTES: u64 = 64 * 1024 * 1024;
const JAR_TIMEOUT_SECONDS: u64 = 20;

/// The namespace of the large-jar test, which has an operator of its own:
/// the shared one's work for the other tests, which run at the same time,
/// would count in the memory it measures.
const LARGE_JAR_NAMESPACE: &str = "large-jar";

/// `kappa-operator run` as `identity`, watching `namespaces` only, with the
/// jar limits of these tests.
fn start_operator(identity: &str, namespaces: &str) -> Operator {
    Operator::start(
        Testbed::get(),
        identity,
        &[
            "--no-leader-election",
            "--namespace",
            namespaces,
            "--jar-max-bytes",
            &JAR_MAX_BYTES.to_string(),
            "--jar-timeout",
            &format!("{JAR_TIMEOUT_SECONDS}s"),
        ],
    )
}

/// The operator every test but the large-jar one shares.
fn operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| start_operator("flink-tests", "session,refusals,lifecycle,periodic"))
}

/// A file of `bytes` zeros served beside the test job's jar.
fn served_jar(name: &str, bytes: u64) -> String {
    let file = std::fs::File::create(Testbed::get().state.join("flink/jars").join(name))
        .expect("jar file");
    file.set_len(bytes).expect("jar length");
    format!("{}/{name}", flink().jars)
}

/// A jar server that answers with headers and a few bytes, then nothing:
/// its address; it stops with the test process.
fn stalling_jar_server() -> String {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("a port");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut connection in listener.incoming().flatten() {
            use std::io::{Read, Write};
            let mut request = [0u8; 4096];
            let _ = connection.read(&mut request);
            let _ = connection.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/java-archive\r\nContent-Length: 1000000\r\n\r\nPK",
            );
            held.push(connection);
        }
    });
    let host = flink()
        .jars
        .trim_start_matches("http://")
        .split(':')
        .next()
        .expect("host")
        .to_string();
    format!("http://{host}:{port}/slow.jar")
}

/// A namespace with the set the pipelines name.
async fn namespace(name: &str) -> (Client, String) {
    let testbed = Testbed::get();
    let client = testbed.client().await;
    let ns = testbed.namespace(name).await;
    create(&client, &ns, kcs(valid_kcs_spec()))
        .await
        .expect("set created");
    (client, ns)
}

fn session_pipeline(name: &str, flink: &Value) -> Value {
    pipeline(
        name,
        json!({
            "clusterSet": "events",
            "inputs": [{"stream": "orders"}],
            "outputs": [{"stream": "totals"}],
            "engine": {"type": "flink", "flink": flink},
        }),
    )
}

fn engine(rest: &str, jar: &str, args: &[&str]) -> Value {
    json!({"mode": "session", "sessionUrl": rest, "jarUri": jar, "args": args})
}

#[tokio::test]
async fn a_session_job_runs_snapshots_and_restores_from_its_savepoint() {
    let flink = flink();
    let operator = operator();
    let (client, ns) = namespace("session").await;
    create(
        &client,
        &ns,
        session_pipeline("job", &engine(&flink.rest, &flink.job_jar, &["50"])),
    )
    .await
    .expect("pipeline");
    let job = running(&client, &ns, "job").await;
    assert_eq!(
        flink.api().job_state(&job).await,
        "RUNNING",
        "Flink runs job {job}"
    );
    let followed = status(&client, &ns, "Pipeline", "job").await["job"].clone();
    assert_eq!(followed["restarts"], 0, "Flink's numRestarts: {followed}");
    assert_eq!(followed["restUrl"], json!(flink.rest));

    let first = completed_savepoint(&client, &ns, "first", "job").await;
    let location = first["location"].as_str().expect("a location").to_string();
    assert!(
        on_disk(&location).join("_metadata").is_file(),
        "{location} holds a savepoint"
    );
    assert!(first["triggerId"].is_string() && first["completionTime"].is_string());

    // A target Flink cannot write: Failed with Flink's words, the job runs on.
    create(
        &client,
        &ns,
        savepoint(
            "unwritable",
            json!({"pipelineRef": "job", "targetDirectory": "file:///proc/kappa-savepoints", "backoffLimit": 0}),
        ),
    )
    .await
    .expect("savepoint");
    let failed = wait_for_ready(
        &client,
        &ns,
        "Savepoint",
        "unwritable",
        JOB_STARTS_WITHIN,
        |c| c.reason == "SavepointFailed",
    )
    .await;
    println!("failed savepoint: {}", failed.message);
    assert!(
        failed.message.contains("Exception"),
        "Flink's words: {}",
        failed.message
    );
    let unwritable = status(&client, &ns, "Savepoint", "unwritable").await;
    assert_eq!(unwritable["phase"], "Failed");
    assert_eq!(unwritable["failures"], 1);
    let labels = format!("{{namespace=\"{ns}\",pipeline=\"job\"}}");
    assert_eq!(
        operator.metric(&format!("kappa_savepoint_failures_total{labels}")),
        1.0
    );
    assert_eq!(
        flink.api().job_state(&job).await,
        "RUNNING",
        "the job runs on"
    );
    wait_for_ready(
        &client,
        &ns,
        "Pipeline",
        "job",
        Duration::from_secs(5),
        |c| c.reason == "JobRunning",
    )
    .await;

    // A second pipeline starts from the first savepoint: Flink says so.
    let mut restored = session_pipeline("restored", &engine(&flink.rest, &flink.job_jar, &["50"]));
    restored["spec"]["restoreFrom"] = json!({"savepoint": "first"});
    create(&client, &ns, restored).await.expect("pipeline");
    let second = running(&client, &ns, "restored").await;
    assert_ne!(second, job);
    let checkpoints = flink
        .api()
        .get(&format!("/jobs/{second}/checkpoints"))
        .await;
    assert_eq!(
        checkpoints["latest"]["restored"]["external_path"].as_str(),
        Some(location.as_str()),
        "Flink restored job {second} from the savepoint: {checkpoints}"
    );
    let pipeline_status = status(&client, &ns, "Pipeline", "restored").await;
    assert_eq!(
        pipeline_status["restoredFrom"].as_str(),
        Some(location.as_str())
    );
    assert_eq!(pipeline_status["history"][0]["event"], "Deployed");

    // Deleting a pipeline cancels its job on the session cluster.
    kappa_api(&client, &ns, "Pipeline")
        .delete("restored", &Default::default())
        .await
        .expect("pipeline deleted");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while kappa_api(&client, &ns, "Pipeline")
        .get_opt("restored")
        .await
        .expect("lookup")
        .is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the pipeline was not let go"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        flink.api().job_state(&second).await,
        "CANCELED",
        "its job is cancelled"
    );

    // A savepoint that exists already is registered without Flink.
    create(
        &client,
        &ns,
        savepoint(
            "registered",
            json!({"pipelineRef": "job", "path": location}),
        ),
    )
    .await
    .expect("savepoint");
    wait_for_ready(
        &client,
        &ns,
        "Savepoint",
        "registered",
        Duration::from_secs(30),
        |c| c.reason == "SavepointRegistered",
    )
    .await;
    operator.assert_log_clean();
}

#[tokio::test]
async fn flink_and_jar_server_refusals_become_conditions_in_their_own_words() {
    let flink = flink();
    let operator = operator();
    let (client, ns) = namespace("refusals").await;
    let missing_jar = format!("{}/missing.jar", flink.jars);
    let too_large = served_jar("too-large.jar", JAR_MAX_BYTES + 1);
    let slow_jar = stalling_jar_server();
    let file_jar = "file:///etc/kappa/job.jar";
    let mut missing_state =
        session_pipeline("no-state", &engine(&flink.rest, &flink.job_jar, &["50"]));
    missing_state["spec"]["restoreFrom"] = json!({"path": "file:///nonexistent/savepoint-missing"});
    let cases = [
        (
            "no-jar",
            session_pipeline("no-jar", &engine(&flink.rest, &missing_jar, &[])),
            &["JarUnavailable"][..],
            "404",
        ),
        (
            "file-jar",
            session_pipeline("file-jar", &engine(&flink.rest, file_jar, &[])),
            &["JarRefused"][..],
            "the scheme file is not allowed; the operator fetches jars over http, https",
        ),
        (
            "too-large-jar",
            session_pipeline("too-large-jar", &engine(&flink.rest, &too_large, &[])),
            &["JarRefused"][..],
            "67108865 bytes or more, over the limit of 67108864 bytes",
        ),
        (
            "slow-jar",
            session_pipeline("slow-jar", &engine(&flink.rest, &slow_jar, &[])),
            &["JarUnavailable"][..],
            "the transfer took longer than 20 s",
        ),
        (
            "no-flink",
            session_pipeline(
                "no-flink",
                &engine("http://127.0.0.1:1", &flink.job_jar, &[]),
            ),
            &["FlinkUnreachable"][..],
            "127.0.0.1:1",
        ),
        (
            "fails",
            session_pipeline("fails", &engine(&flink.rest, &flink.job_jar, &["fail"])),
            &["FlinkRefused"][..],
            "asked to fail at start",
        ),
        (
            "no-state",
            missing_state,
            // Flink 2.3 refuses the run, or accepts it and fails the job as
            // its JobMaster starts, depending on which comes first.
            &["FlinkRefused", "JobFailed"][..],
            "savepoint-missing",
        ),
    ];
    for (_, pipeline, _, _) in &cases {
        create(&client, &ns, pipeline.clone())
            .await
            .expect("pipeline");
    }
    for (name, _, reasons, words) in cases {
        let ready = wait_for_ready(&client, &ns, "Pipeline", name, JOB_STARTS_WITHIN, |c| {
            reasons.contains(&c.reason.as_str())
        })
        .await;
        println!("{name}: {}: {}", ready.reason, ready.message);
        assert!(ready.message.contains(words), "{name}: {}", ready.message);
        if ready.reason != "JobFailed" {
            let job = status(&client, &ns, "Pipeline", name).await["job"].clone();
            assert_eq!(job["submitted"], false, "{name} was not taken: {job}");
        }
    }
    // A Savepoint of a pipeline without a running job waits and says why.
    create(
        &client,
        &ns,
        savepoint("early", json!({"pipelineRef": "fails"})),
    )
    .await
    .expect("savepoint");
    wait_for_ready(
        &client,
        &ns,
        "Savepoint",
        "early",
        Duration::from_secs(30),
        |c| c.reason == "PipelineNotRunning",
    )
    .await;
    operator.assert_log_clean();
}

/// A field of the operator's /proc status in KiB (`VmRSS`, `VmHWM`).
fn memory_kib(operator: &Operator, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", operator.pid()))
        .expect("operator's /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .and_then(|value| value.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc status"))
}

/// A 48 MiB jar goes from the jar server to Flink's upload while the
/// operator's peak memory grows by far less than the jar (it was held whole
/// before: twice its size at the upload). Flink then refuses to run a file
/// of zeros, which is how the test knows the upload was complete.
#[tokio::test]
async fn a_large_jar_reaches_flink_without_being_held_in_the_operators_memory() {
    const JAR_BYTES: u64 = 48 * 1024 * 1024;
    let flink = flink();
    let operator = &start_operator("flink-large-jar", LARGE_JAR_NAMESPACE);
    let (client, ns) = namespace(LARGE_JAR_NAMESPACE).await;
    // Measured from when the operator has done its first work (the set).
    wait_for_ready(
        &client,
        &ns,
        "KafkaClusterSet",
        "events",
        Duration::from_secs(60),
        |_| true,
    )
    .await;
    let jar = served_jar("large.jar", JAR_BYTES);
    // Resets the peak resident set size to the current one (proc(5), clear_refs).
    std::fs::write(format!("/proc/{}/clear_refs", operator.pid()), "5").expect("clear_refs");
    let before = memory_kib(operator, "VmRSS");
    create(
        &client,
        &ns,
        session_pipeline("large", &engine(&flink.rest, &jar, &[])),
    )
    .await
    .expect("pipeline");
    let ready = wait_for_ready(&client, &ns, "Pipeline", "large", JOB_STARTS_WITHIN, |c| {
        c.reason == "FlinkRefused"
    })
    .await;
    let peak = memory_kib(operator, "VmHWM");
    let grown = peak.saturating_sub(before);
    println!(
        "a {} MiB jar: peak RSS {before} KiB before, {peak} KiB during ({grown} KiB more); Flink: {}",
        JAR_BYTES >> 20,
        ready.message
    );
    assert!(
        grown < JAR_BYTES / 1024 / 2,
        "the operator's peak memory grew by {grown} KiB for a {JAR_BYTES}-byte jar"
    );
    operator.assert_log_clean();
}

#[tokio::test]
async fn upgrades_suspension_and_last_state_carry_the_job_state() {
    let flink = flink();
    let operator = operator();
    let (client, ns) = namespace("lifecycle").await;
    create(
        &client,
        &ns,
        session_pipeline("job", &engine(&flink.rest, &flink.job_jar, &["50"])),
    )
    .await
    .expect("pipeline");
    let first = running(&client, &ns, "job").await;

    // A parallelism change with upgradeMode savepoint: stop with a savepoint, restore from it.
    let second = upgraded_to_parallelism(&client, &ns, "job", &first, 2).await;
    let recorded = status(&client, &ns, "Pipeline", "job").await["restoredFrom"].clone();
    let (path, savepoint) = flink.api().restored_from(&second).await;
    println!("upgraded {first} -> {second} from {path:?}");
    assert_eq!(Some(json!(path.clone())), Some(recorded));
    assert_eq!(savepoint, Some(true), "restored from a savepoint");
    assert!(on_disk(path.as_deref().expect("a path"))
        .join("_metadata")
        .is_file());
    assert_eq!(
        flink.api().job_state(&first).await,
        "FINISHED",
        "stopped with a savepoint"
    );
    assert_eq!(
        flink.api().get(&format!("/jobs/{second}")).await["vertices"][0]["parallelism"],
        2
    );
    // The savepoint the upgrade stopped the job with is a Savepoint resource.
    let stop = wait_for_ready(
        &client,
        &ns,
        "Savepoint",
        "job-stop-1",
        JOB_STARTS_WITHIN,
        |c| c.reason == "SavepointRegistered",
    )
    .await;
    println!("{}", stop.message);
    let stop = status(&client, &ns, "Savepoint", "job-stop-1").await;
    assert_eq!(Some(stop["location"].as_str()), Some(path.as_deref()));

    // Suspend: stopped with a savepoint; resume: restored from that savepoint.
    patch_spec(&client, &ns, "job", json!({"state": "suspended"})).await;
    let suspended = wait_for_ready(&client, &ns, "Pipeline", "job", JOB_STARTS_WITHIN, |c| {
        c.reason == "Suspended"
    })
    .await;
    println!("suspended: {}", suspended.message);
    assert_eq!(flink.api().job_state(&second).await, "FINISHED");
    let kept = status(&client, &ns, "Pipeline", "job").await["transition"]["restoreFrom"].clone();
    patch_spec(&client, &ns, "job", json!({"state": "running"})).await;
    let third = redeployed(&client, &ns, "job", &second, "Resumed").await;
    let (path, savepoint) = flink.api().restored_from(&third).await;
    assert_eq!(
        Some(json!(path)),
        Some(kept),
        "resumed from the suspension's savepoint"
    );
    assert_eq!(savepoint, Some(true));

    // last-state: the latest checkpoint, taken over by the restarted job.
    flink.api().checkpointed(&third).await;
    patch_spec(
        &client,
        &ns,
        "job",
        json!({"upgradeMode": "last-state", "restartNonce": 1}),
    )
    .await;
    let fourth = redeployed(&client, &ns, "job", &third, "Upgraded").await;
    let (path, _) = flink.api().restored_from(&fourth).await;
    println!("last-state {third} -> {fourth} from {path:?}");
    // Flink calls any state given at submission a savepoint; the path says it is a checkpoint.
    let checkpoint = format!("/checkpoints/{third}/chk-");
    assert!(
        path.as_deref().is_some_and(|p| p.contains(&checkpoint)),
        "a checkpoint of {third}: {path:?}"
    );
    assert_eq!(flink.api().job_state(&third).await, "CANCELED");

    // A savepoint Flink cannot write stops the upgrade; the job runs on.
    patch_spec(
        &client,
        &ns,
        "job",
        json!({"upgradeMode": "savepoint", "restartNonce": 2, "savepoints": {"targetDirectory": "file:///proc/kappa-savepoints"}}),
    )
    .await;
    let failed = wait_for_ready(&client, &ns, "Pipeline", "job", JOB_STARTS_WITHIN, |c| {
        c.reason == "UpgradeFailed"
    })
    .await;
    println!("failed upgrade: {}", failed.message);
    assert!(
        failed.message.contains("Exception"),
        "Flink's words: {}",
        failed.message
    );
    assert_eq!(
        flink.api().job_state(&fourth).await,
        "RUNNING",
        "the job runs on"
    );
    assert_eq!(
        status(&client, &ns, "Pipeline", "job").await["job"]["id"],
        json!(fourth)
    );
    operator.assert_log_clean();
}

#[tokio::test]
async fn periodic_savepoints_are_kept_by_count_and_the_rest_disposed() {
    let flink = flink();
    let operator = operator();
    let (client, ns) = namespace("periodic").await;
    let mut periodic = session_pipeline("job", &engine(&flink.rest, &flink.job_jar, &["50"]));
    let directory = format!(
        "file://{}/flink/state/periodic",
        Testbed::get().state.display()
    );
    periodic["spec"]["savepoints"] =
        json!({"interval": "4s", "targetDirectory": directory, "retention": {"maxCount": 2}});
    create(&client, &ns, periodic).await.expect("pipeline");
    running(&client, &ns, "job").await;

    let api = kappa_api(&client, &ns, "Savepoint");
    let mut seen: std::collections::BTreeMap<String, String> = Default::default();
    let started = std::time::Instant::now();
    let present = loop {
        let list = api.list(&Default::default()).await.expect("savepoints");
        for savepoint in &list.items {
            let status = &savepoint.data["status"];
            if let Some(location) = status["location"].as_str() {
                let name = savepoint.metadata.name.clone().expect("a name");
                assert!(
                    name.starts_with("job-"),
                    "named after the pipeline and time: {name}"
                );
                seen.insert(name, location.to_string());
            }
        }
        let present: Vec<String> = list
            .items
            .iter()
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        if seen.len() >= 4 && present.len() <= 2 {
            break present;
        }
        assert!(
            started.elapsed() < JOB_STARTS_WITHIN,
            "seen {seen:?}, present {present:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("periodic savepoints taken: {seen:?}; kept: {present:?}");
    let labels = format!("{{namespace=\"{ns}\",pipeline=\"job\"}}");
    assert!(operator.metric(&format!("kappa_savepoint_duration_seconds_count{labels}")) >= 4.0);
    assert_eq!(
        operator.metric(&format!("kappa_pipeline_running{labels}")),
        1.0
    );
    let newest = operator.metric(&format!(
        "kappa_pipeline_last_savepoint_timestamp_seconds{labels}"
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs_f64();
    assert!(
        now - newest < 60.0,
        "the newest savepoint is recent: {newest}"
    );
    // Deleted ones are gone from the API once Flink has disposed of their files.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for (name, location) in &seen {
        if present.contains(name) {
            continue;
        }
        while api.get_opt(name).await.expect("lookup").is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} was not let go"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            !on_disk(location).exists(),
            "{name}'s files at {location} are disposed"
        );
    }
    for name in &present {
        if let Some(location) = seen.get(name) {
            assert!(
                on_disk(location).join("_metadata").is_file(),
                "{name} is kept on disk"
            );
        }
    }
    operator.assert_log_clean();
}
