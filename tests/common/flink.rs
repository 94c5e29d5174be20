//! A real Flink 2.3 session cluster beside the testbed (`e2e/testbed/flink`),
//! and what Flink itself says about a job.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{repo, Testbed};

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

    /// `GET path` on the JobManager, as JSON.
    pub async fn get(&self, path: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.rest))
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
}
