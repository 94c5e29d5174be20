//! Session-mode Flink pipelines and their savepoints against a real Flink
//! 2.3 session cluster and the testbed's job, with the operator on the host.

mod common;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use common::flink::Flink;
use common::objects::{kcs, pipeline, savepoint, valid_kcs_spec};
use common::{create, kappa_api, wait_for_ready, Operator, Testbed};
use kube::Client;
use serde_json::{json, Value};

/// Starting a job (a JVM class loading the table planner) takes a while on two cores.
const JOB_STARTS_WITHIN: Duration = Duration::from_secs(120);

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

async fn status(client: &Client, ns: &str, kind: &str, name: &str) -> Value {
    let object = kappa_api(client, ns, kind).get(name).await.expect("object");
    object.data["status"].clone()
}

/// Waits until the pipeline's job runs; its id.
async fn running(client: &Client, ns: &str, name: &str) -> String {
    wait_for_ready(client, ns, "Pipeline", name, JOB_STARTS_WITHIN, |c| {
        c.reason == "JobRunning"
    })
    .await;
    status(client, ns, "Pipeline", name).await["job"]["id"]
        .as_str()
        .expect("a job id")
        .to_string()
}

/// The directory a `file:` location names.
fn on_disk(location: &str) -> &Path {
    Path::new(
        location
            .trim_start_matches("file:")
            .trim_start_matches("//"),
    )
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
        flink.job_state(&job).await,
        "RUNNING",
        "Flink runs job {job}"
    );

    create(
        &client,
        &ns,
        savepoint("first", json!({"pipelineRef": "job"})),
    )
    .await
    .expect("savepoint");
    let ready = wait_for_ready(&client, &ns, "Savepoint", "first", JOB_STARTS_WITHIN, |c| {
        c.reason == "SavepointCompleted"
    })
    .await;
    let first = status(&client, &ns, "Savepoint", "first").await;
    let location = first["location"].as_str().expect("a location").to_string();
    assert!(
        on_disk(&location).join("_metadata").is_file(),
        "{location} holds a savepoint ({})",
        ready.message
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
    assert_eq!(flink.job_state(&job).await, "RUNNING", "the job runs on");
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
    let checkpoints = flink.get(&format!("/jobs/{second}/checkpoints")).await;
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
    let cases = [
        (
            "no-jar",
            engine(&flink.rest, &missing_jar, &[]),
            "JarUnavailable",
            "404",
        ),
        (
            "no-flink",
            engine("http://127.0.0.1:1", &flink.job_jar, &[]),
            "FlinkUnreachable",
            "127.0.0.1:1",
        ),
        (
            "fails",
            engine(&flink.rest, &flink.job_jar, &["fail"]),
            "FlinkRefused",
            "asked to fail at start",
        ),
    ];
    for (name, flink_engine, _, _) in &cases {
        create(&client, &ns, session_pipeline(name, flink_engine))
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
