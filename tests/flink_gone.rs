//! A session-mode Pipeline whose Flink cluster is gone: its deletion cannot
//! cancel the job, says so as Stalled with an Event naming the way out, and
//! finishes once the user annotates it; then its namespace goes too.

mod common;

use std::time::{Duration, Instant};

use common::flink::{running_session_job, Flink, JOB_STARTS_WITHIN};
use common::{kappa_api, wait_for_status, Operator, Testbed};
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::Api;
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_pipeline_whose_flink_is_gone_is_deleted_after_the_annotation() {
    let testbed = Testbed::get();
    let flink = Flink::start(testbed);
    let _operator = Operator::start(testbed, "flink-gone", &["--no-leader-election"]);
    let client = testbed.client().await;
    let ns = testbed.namespace("flink-gone").await;
    running_session_job(&client, &ns, &flink, JOB_STARTS_WITHIN).await;

    // The session cluster goes away for good.
    for process in ["flink-jobmanager", "flink-taskmanager"] {
        let pid = std::fs::read_to_string(testbed.state.join(format!("pids/{process}.pid")))
            .expect("the process's pid");
        let killed = std::process::Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .expect("kill runs");
        assert!(killed.success(), "{process} killed");
    }

    let pipelines = kappa_api(&client, &ns, "Pipeline");
    pipelines
        .delete("job", &DeleteParams::default())
        .await
        .expect("deletion accepted");
    let status = wait_for_status(&client, &ns, "Pipeline", "job", WITHIN, |s| {
        s["conditions"].as_array().is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c["type"] == "Stalled" && c["status"] == "True" && c["reason"] == "CleanupFailing"
            })
        })
    })
    .await;
    let stalled = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Stalled"))
        .expect("Stalled");
    let message = stalled["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("kubectl annotate pipeline job kappa.dev/skip-cleanup=true"),
        "{message}"
    );
    // The Event is published right after the condition is written.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    loop {
        let listed = events.list(&ListParams::default()).await.expect("Events");
        if listed.items.iter().any(|e| {
            e.reason.as_deref() == Some("CleanupFailing") && e.type_.as_deref() == Some("Warning")
        }) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a Warning Event says why the deletion waits"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        pipelines.get_opt("job").await.expect("read").is_some(),
        "the finalizer holds the pipeline while its job cannot be cancelled"
    );

    let skip = json!({"metadata": {"annotations": {"kappa.dev/skip-cleanup": "true"}}});
    pipelines
        .patch("job", &PatchParams::default(), &Patch::Merge(&skip))
        .await
        .expect("annotated");
    let started = Instant::now();
    while pipelines.get_opt("job").await.expect("read").is_some() {
        assert!(
            started.elapsed() < WITHIN,
            "the annotated pipeline is deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("namespace deletion accepted");
    let started = Instant::now();
    while namespaces.get_opt(&ns).await.expect("read").is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the namespace deletion completes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
