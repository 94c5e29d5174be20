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

fn operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR
        .get_or_init(|| Operator::start(Testbed::get(), "flink-tests", &["--no-leader-election"]))
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
    let mut missing_state =
        session_pipeline("no-state", &engine(&flink.rest, &flink.job_jar, &["50"]));
    missing_state["spec"]["restoreFrom"] = json!({"path": "file:///nonexistent/savepoint-missing"});
    let cases = [
        (
            "no-jar",
            session_pipeline("no-jar", &engine(&flink.rest, &missing_jar, &[])),
            "JarUnavailable",
            "404",
        ),
        (
            "no-flink",
            session_pipeline(
                "no-flink",
                &engine("http://127.0.0.1:1", &flink.job_jar, &[]),
            ),
            "FlinkUnreachable",
            "127.0.0.1:1",
        ),
        (
            "fails",
            session_pipeline("fails", &engine(&flink.rest, &flink.job_jar, &["fail"])),
            "FlinkRefused",
            "asked to fail at start",
        ),
        (
            "no-state",
            missing_state,
            "FlinkRefused",
            "savepoint-missing",
        ),
    ];
    for (_, pipeline, _, _) in &cases {
        create(&client, &ns, pipeline.clone())
            .await
            .expect("pipeline");
    }
    for (name, _, reason, words) in cases {
        let ready = wait_for_ready(&client, &ns, "Pipeline", name, JOB_STARTS_WITHIN, |c| {
            c.reason == reason
        })
        .await;
        println!("{name}: {}", ready.message);
        assert!(ready.message.contains(words), "{name}: {}", ready.message);
        let job = status(&client, &ns, "Pipeline", name).await["job"].clone();
        assert_eq!(job["submitted"], false, "{name} was not taken: {job}");
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
