//! The operator killed in the middle of a session-mode upgrade: the next
//! one finishes it with the savepoint the first one triggered.

mod common;

use std::time::{Duration, Instant};

use common::flink::{running_session_job, Flink};
use common::{kappa_api, Operator, Testbed};
use kube::api::{Patch, PatchParams};
use serde_json::{json, Value};

const WITHIN: Duration = Duration::from_secs(120);

#[tokio::test]
async fn an_upgrade_interrupted_by_a_crash_resumes_with_its_savepoint() {
    let testbed = Testbed::get();
    let flink = Flink::start(testbed);
    let mut first = Operator::start(testbed, "before-crash", &["--no-leader-election"]);
    let client = testbed.client().await;
    let ns = testbed.namespace("crash").await;
    running_session_job(&client, &ns, &flink, WITHIN).await;
    let api = kappa_api(&client, &ns, "Pipeline");
    let status = |object: kube::api::DynamicObject| object.data["status"].clone();
    let old_job = status(api.get("job").await.expect("pipeline"))["job"]["id"]
        .as_str()
        .expect("a job id")
        .to_string();

    let upgrade = json!({"spec": {"engine": {"flink": {"parallelism": 2}}}});
    api.patch("job", &PatchParams::default(), &Patch::Merge(&upgrade))
        .await
        .expect("upgraded");
    // Killed once the upgrade's savepoint trigger is recorded...
    let started = Instant::now();
    let trigger = loop {
        let now = status(api.get("job").await.expect("pipeline"));
        if let Some(trigger) = now["transition"]["triggerId"].as_str() {
            break trigger.to_string();
        }
        assert!(started.elapsed() < WITHIN, "no upgrade started: {now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // ... and Flink has taken the trigger.
    while flink
        .api()
        .get(&format!("/jobs/{old_job}/savepoints/{trigger}"))
        .await["status"]
        .is_null()
    {
        assert!(
            started.elapsed() < WITHIN,
            "Flink never took trigger {trigger}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    let killed_in: Value = status(api.get("job").await.expect("pipeline"))["transition"].clone();
    println!("killed during the upgrade at {killed_in}");

    let second = Operator::start(testbed, "after-crash", &["--no-leader-election"]);
    let started = Instant::now();
    let new_job = loop {
        let now = status(api.get("job").await.expect("pipeline"));
        let job = now["job"]["id"].as_str().unwrap_or_default().to_string();
        if job != old_job
            && now["history"][0]["event"] == "Upgraded"
            && now["job"]["state"] == "RUNNING"
        {
            break job;
        }
        assert!(
            started.elapsed() < WITHIN,
            "the upgrade did not finish: {now}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The savepoint the first operator triggered is the one the new job started from.
    let taken = flink
        .api()
        .get(&format!("/jobs/{old_job}/savepoints/{trigger}"))
        .await;
    let location = taken["operation"]["location"]
        .as_str()
        .expect("the savepoint completed");
    let restored = flink
        .api()
        .get(&format!("/jobs/{new_job}/checkpoints"))
        .await;
    assert_eq!(
        restored["latest"]["restored"]["external_path"].as_str(),
        Some(location),
        "restored from the savepoint triggered before the crash: {restored}"
    );
    let savepoints = std::fs::read_dir(testbed.state.join("flink/state/savepoints"))
        .expect("the savepoint folder")
        .filter(|entry| {
            entry.as_ref().is_ok_and(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("savepoint-{}", &old_job[..6]))
            })
        })
        .count();
    assert_eq!(
        savepoints, 1,
        "one savepoint of the old job, not one per operator"
    );
    second.assert_log_clean();
}
