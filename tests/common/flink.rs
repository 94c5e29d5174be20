//! A real Flink 2.3 session cluster beside the testbed (`e2e/testbed/flink`),
//! what Flink itself says about a job, and waiting for a Flink pipeline.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use serde_json::{json, Value};

use super::objects::savepoint;
use super::{create, kappa_api, repo, status, wait_for_ready, Testbed};

/// Starting a job (a JVM class loading the table planner) takes a while on two cores.
pub const JOB_STARTS_WITHIN: Duration = Duration::from_secs(240);

/// The session cluster and the test job.
pub struct Flink {
    /// REST endpoint of the JobManager.
    pub rest: String,
    /// The test job's jar, over http.
    pub job_jar: String,
    /// The folder the jar is served from.
    pub jars: String,
}

impl Flink {
    /// Starts the session cluster for `testbed` (once per testbed).
    pub fn start(testbed: &Testbed) -> Flink {
        let output = Command::new(repo().join("e2e/testbed/flink"))
            .env("KAPPA_TESTBED_STATE", &testbed.state)
            .stderr(Stdio::inherit())
            .output()
            .expect("e2e/testbed/flink runs");
        assert!(
            output.status.success(),
            "the Flink session cluster did not start"
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let value = |name: &str| {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("e2e/testbed/flink prints {name}"))
                .to_string()
        };
        Flink {
            rest: value("FLINK_REST_URL"),
            job_jar: value("FLINK_JOB_URL"),
            jars: value("FLINK_JARS_URL"),
        }
    }

    /// Its REST API.
    pub fn api(&self) -> FlinkRest {
        FlinkRest {
            url: self.rest.clone(),
        }
    }
}

/// The REST API of a JobManager.
pub struct FlinkRest {
    /// Its URL.
    pub url: String,
}

impl FlinkRest {
    /// `GET path` on the JobManager, as JSON.
    pub async fn get(&self, path: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("Flink answers")
            .json()
            .await
            .expect("Flink answers JSON")
    }

    /// The job's state as Flink reports it.
    pub async fn job_state(&self, job: &str) -> String {
        self.get(&format!("/jobs/{job}")).await["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    /// Where Flink says the job was restored from, and whether that is a savepoint.
    pub async fn restored_from(&self, job: &str) -> (Option<String>, Option<bool>) {
        let restored =
            self.get(&format!("/jobs/{job}/checkpoints")).await["latest"]["restored"].clone();
        (
            restored["external_path"].as_str().map(String::from),
            restored["is_savepoint"].as_bool(),
        )
    }

    /// Waits until Flink has completed a checkpoint of `job`.
    pub async fn checkpointed(&self, job: &str) {
        for _ in 0..300 {
            let counts = self.get(&format!("/jobs/{job}/checkpoints")).await["counts"].clone();
            if counts["completed"].as_i64().unwrap_or(0) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("job {job} completed no checkpoint within a minute");
    }
}

/// Waits until the pipeline's job runs; its id.
pub async fn running(client: &Client, ns: &str, name: &str) -> String {
    wait_for_ready(client, ns, "Pipeline", name, JOB_STARTS_WITHIN, |c| {
        c.reason == "JobRunning"
    })
    .await;
    status(client, ns, "Pipeline", name).await["job"]["id"]
        .as_str()
        .expect("a job id")
        .to_string()
}

/// Creates Savepoint `name` of pipeline `of` and waits until it is
/// Completed; its status.
pub async fn completed_savepoint(client: &Client, ns: &str, name: &str, of: &str) -> Value {
    create(client, ns, savepoint(name, json!({"pipelineRef": of})))
        .await
        .expect("savepoint");
    wait_for_ready(client, ns, "Savepoint", name, JOB_STARTS_WITHIN, |c| {
        c.reason == "SavepointCompleted"
    })
    .await;
    status(client, ns, "Savepoint", name).await
}

/// The directory a `file:` location names.
pub fn on_disk(location: &str) -> &Path {
    Path::new(
        location
            .trim_start_matches("file:")
            .trim_start_matches("//"),
    )
}

/// Patches the pipeline's spec with `patch` (a merge patch).
pub async fn patch_spec(client: &Client, ns: &str, name: &str, patch: Value) {
    kappa_api(client, ns, "Pipeline")
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&json!({ "spec": patch })),
        )
        .await
        .expect("pipeline patched");
}

/// Changes the pipeline's parallelism and waits until the job that `old`
/// was upgraded to runs; its id.
pub async fn upgraded_to_parallelism(
    client: &Client,
    ns: &str,
    name: &str,
    old: &str,
    parallelism: i32,
) -> String {
    let engine = json!({"engine": {"flink": {"parallelism": parallelism}}});
    patch_spec(client, ns, name, engine).await;
    redeployed(client, ns, name, old, "Upgraded").await
}

/// Waits until the pipeline runs a job newer than `old` after `event`; its id.
pub async fn redeployed(client: &Client, ns: &str, name: &str, old: &str, event: &str) -> String {
    let deadline = std::time::Instant::now() + JOB_STARTS_WITHIN;
    loop {
        let status = status(client, ns, "Pipeline", name).await;
        let job = status["job"]["id"].as_str().unwrap_or_default().to_string();
        let ready = status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .map(|c| c["reason"].clone());
        if job != old
            && status["history"][0]["event"] == event
            && ready == Some(json!("JobRunning"))
        {
            return job;
        }
        if std::time::Instant::now() >= deadline {
            let pods = pods_words(client, ns).await;
            panic!("{name} not {event} within {JOB_STARTS_WITHIN:?}: {status}\npods: {pods}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each pod of `ns` with its phase and its containers' states, for a
/// failure's message: why a job's tasks found no TaskManager.
async fn pods_words(client: &Client, ns: &str) -> String {
    let pods = kube::Api::<Pod>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await;
    let Ok(pods) = pods else {
        return format!("not listed: {pods:?}");
    };
    let words: Vec<String> = pods
        .items
        .iter()
        .map(|pod| {
            let status = pod.status.clone().unwrap_or_default();
            let containers: Vec<String> = status
                .container_statuses
                .unwrap_or_default()
                .iter()
                .map(|c| {
                    format!(
                        "{} ready={} restarts={} {:?}",
                        c.name, c.ready, c.restart_count, c.state
                    )
                })
                .collect();
            format!(
                "{} {} [{}]",
                pod.metadata.name.clone().unwrap_or_default(),
                status.phase.unwrap_or_default(),
                containers.join("; ")
            )
        })
        .collect();
    words.join("\n")
}

/// In `ns`: the set the tests' pipelines name and the session-mode Pipeline
/// `job` of the test job (50 events a second) on `flink`; returns once
/// Flink runs it, within `within`.
pub async fn running_session_job(client: &Client, ns: &str, flink: &Flink, within: Duration) {
    create(
        client,
        ns,
        super::objects::kcs(super::objects::valid_kcs_spec()),
    )
    .await
    .expect("set");
    let engine = json!({"mode": "session", "sessionUrl": flink.rest, "jarUri": flink.job_jar, "args": ["50"]});
    create(
        client,
        ns,
        super::objects::pipeline(
            "job",
            json!({"clusterSet": "events", "inputs": [{"stream": "orders"}],
                   "outputs": [{"stream": "totals"}], "engine": {"type": "flink", "flink": engine}}),
        ),
    )
    .await
    .expect("pipeline");
    wait_for_ready(client, ns, "Pipeline", "job", within, |c| {
        c.reason == "JobRunning"
    })
    .await;
}

/// Starts a session-mode upgrade of pipeline `job` in `ns` (made by
/// [`running_session_job`]: parallelism 1 to 2) and returns once its
/// savepoint trigger is recorded in the status and Flink has taken it: the
/// old job's id and the trigger.
pub async fn upgrade_until_savepoint_taken(
    client: &Client,
    ns: &str,
    flink: &Flink,
    within: Duration,
) -> (String, String) {
    let api = kappa_api(client, ns, "Pipeline");
    let status = || async { api.get("job").await.expect("pipeline").data["status"].clone() };
    let old_job = status().await["job"]["id"]
        .as_str()
        .expect("a job id")
        .to_string();
    patch_spec(
        client,
        ns,
        "job",
        json!({"engine": {"flink": {"parallelism": 2}}}),
    )
    .await;
    let started = std::time::Instant::now();
    let trigger = loop {
        let now = status().await;
        if let Some(trigger) = now["transition"]["triggerId"].as_str() {
            break trigger.to_string();
        }
        assert!(started.elapsed() < within, "no upgrade started: {now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    while flink
        .api()
        .get(&format!("/jobs/{old_job}/savepoints/{trigger}"))
        .await["status"]
        .is_null()
    {
        assert!(
            started.elapsed() < within,
            "Flink never took trigger {trigger}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (old_job, trigger)
}

/// Waits until the upgrade [`upgrade_until_savepoint_taken`] started has
/// finished, and checks that the new job started from the savepoint of
/// `trigger` and that the old job has that one savepoint only (none taken
/// twice by an operator that lost track of the first).
pub async fn assert_upgraded_with(
    testbed: &Testbed,
    client: &Client,
    ns: &str,
    flink: &Flink,
    (old_job, trigger): (&str, &str),
    within: Duration,
) {
    let api = kappa_api(client, ns, "Pipeline");
    let started = std::time::Instant::now();
    let new_job = loop {
        let now = api.get("job").await.expect("pipeline").data["status"].clone();
        let job = now["job"]["id"].as_str().unwrap_or_default().to_string();
        if job != old_job
            && now["history"][0]["event"] == "Upgraded"
            && now["job"]["state"] == "RUNNING"
        {
            break job;
        }
        assert!(
            started.elapsed() < within,
            "the upgrade did not finish: {now}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let taken = flink
        .api()
        .get(&format!("/jobs/{old_job}/savepoints/{trigger}"))
        .await;
    let location = taken["operation"]["location"]
        .as_str()
        .expect("the savepoint completed");
    let (restored, is_savepoint) = flink.api().restored_from(&new_job).await;
    assert_eq!(
        (restored.as_deref(), is_savepoint),
        (Some(location), Some(true)),
        "restored from the savepoint of trigger {trigger}"
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
    assert_eq!(savepoints, 1, "one savepoint of the old job");
}
