//! The operator killed in the middle of a session-mode upgrade: the next
//! one finishes it with the savepoint the first one triggered.

mod common;

use std::time::Duration;

use common::flink::{
    assert_upgraded_with, running_session_job, upgrade_until_savepoint_taken, Flink,
};
use common::{kappa_api, Operator, Testbed};

const WITHIN: Duration = Duration::from_secs(120);

#[tokio::test]
async fn an_upgrade_interrupted_by_a_crash_resumes_with_its_savepoint() {
    let testbed = Testbed::get();
    let flink = Flink::start(testbed);
    let mut first = Operator::start(testbed, "before-crash", &["--no-leader-election"]);
    let client = testbed.client().await;
    let ns = testbed.namespace("crash").await;
    running_session_job(&client, &ns, &flink, WITHIN).await;
    // Killed once the upgrade's savepoint trigger is recorded and Flink has
    // taken it.
    let (old_job, trigger) = upgrade_until_savepoint_taken(&client, &ns, &flink, WITHIN).await;
    first.kill();
    let killed_in = kappa_api(&client, &ns, "Pipeline")
        .get("job")
        .await
        .expect("pipeline")
        .data["status"]["transition"]
        .clone();
    println!("killed during the upgrade at {killed_in}");

    let second = Operator::start(testbed, "after-crash", &["--no-leader-election"]);
    assert_upgraded_with(testbed, &client, &ns, &flink, (&old_job, &trigger), WITHIN).await;
    second.assert_log_clean();
}
