//! A Flink pipeline in session mode: the job is submitted to an existing
//! Flink cluster through its REST API and followed there. Its id is chosen
//! and recorded before it is submitted, so a submission retried after a
//! crash is recognised by Flink as the same job and never runs twice.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::api::pipeline::{
    FlinkEngine, HistoryEntry, JobStatus, Pipeline, PipelineStatus, RestoreFrom,
};
use crate::api::savepoint::{Savepoint, SavepointPhase};
use crate::conditions::READY;
use crate::controller::lookup;
use crate::controller::verdict::{own_fields, Outcome, Requeue, Wanted};
use crate::error::Error;
use crate::flink::{job_id, FlinkApi, FlinkError, JobOverview, Submission};

/// How often a running job's state is read again.
const FOLLOW_EVERY: Duration = Duration::from_secs(15);
/// How often a job that is starting is looked at.
const STARTING_RECHECK: Duration = Duration::from_secs(2);
/// Deployments kept in the status history.
const HISTORY: usize = 10;

/// Deploys and follows one session-mode pipeline.
pub async fn run(
    flink_api: &dyn FlinkApi,
    savepoints: &Store<DeserializeGuard<Savepoint>>,
    pipeline: &Pipeline,
    flink: &FlinkEngine,
) -> Result<Outcome, Error> {
    let url = flink.session_url.clone().unwrap_or_default();
    let mut status = pipeline.status.clone().unwrap_or_default();
    let mut job = status.job.clone().unwrap_or_default();
    let Some(id) = job.id.clone() else {
        let uid = pipeline
            .uid()
            .ok_or(Error::MissingObjectField("metadata.uid"))?;
        let deployment = job.deployment.unwrap_or(0) + 1;
        let id = job_id(&format!("{uid}/{deployment}"));
        status.job = Some(JobStatus {
            id: Some(id.clone()),
            state: None,
            deployment: Some(deployment),
            submitted: false,
            spec_hash: Some(engine_hash(flink)?),
        });
        status.phase = Some("Deploying".into());
        let ready = Wanted::new(
            READY,
            "Unknown",
            "Deploying",
            format!("job {id} is being submitted to {url}"),
        );
        return outcome(&status, ready, Requeue::After(Duration::from_secs(1)));
    };
    if !job.submitted {
        let restore = match restore_path(pipeline, savepoints) {
            Ok(restore) => restore,
            Err(message) => {
                let ready = Wanted::new(READY, "False", "RestoreStateNotReady", message);
                return outcome(&status, ready, Requeue::Backoff);
            }
        };
        let submission = Submission {
            job_id: id.clone(),
            jar_uri: flink.jar_uri.clone(),
            entry_class: flink.entry_class.clone(),
            args: flink.args.clone(),
            parallelism: flink.parallelism,
            savepoint_path: restore.clone(),
            allow_non_restored_state: flink.allow_non_restored_state,
        };
        match flink_api.submit(&url, &submission).await {
            Ok(_) => {}
            Err(error) if error.is_duplicate_submission() => {}
            Err(error) => return refused(&status, &error),
        }
        job.submitted = true;
        status.restored_from.clone_from(&restore);
        status.history.insert(
            0,
            HistoryEntry {
                generation: pipeline.metadata.generation.unwrap_or_default(),
                event: "Deployed".into(),
                restored_from: restore,
                time: Time(Timestamp::now()),
            },
        );
        status.history.truncate(HISTORY);
    }
    let (phase, ready, requeue) = match flink_api.job(&url, &id).await {
        Ok(overview) => {
            job.state = Some(overview.state.clone());
            follow(flink_api, &url, &id, &overview).await
        }
        Err(error) => {
            status.job = Some(job);
            return refused(&status, &error);
        }
    };
    status.job = Some(job);
    status.phase = Some(phase.into());
    outcome(&status, ready, requeue)
}

/// Phase, Ready condition and next look for a job as Flink reports it.
async fn follow(
    flink_api: &dyn FlinkApi,
    url: &str,
    id: &str,
    overview: &JobOverview,
) -> (&'static str, Wanted, Requeue) {
    let state = overview.state.as_str();
    match state {
        "RUNNING" if overview.all_tasks_running => (
            "Running",
            Wanted::new(
                READY,
                "True",
                "JobRunning",
                format!("job {id} is RUNNING on {url}"),
            ),
            Requeue::After(FOLLOW_EVERY),
        ),
        "FAILED" | "FAILING" => {
            let why = match flink_api.failure(url, id).await {
                Ok(Some(words)) => words,
                Ok(None) => "Flink recorded no exception".into(),
                Err(error) => format!("its exceptions could not be read: {error}"),
            };
            (
                "Failed",
                Wanted::new(
                    READY,
                    "False",
                    "JobFailed",
                    format!("job {id} is {state} on {url}: {why}"),
                ),
                Requeue::After(FOLLOW_EVERY),
            )
        }
        "CANCELED" | "CANCELLING" | "FINISHED" | "SUSPENDED" => (
            "Stopped",
            Wanted::new(
                READY,
                "False",
                "JobStopped",
                format!("job {id} is {state} on {url}, stopped outside this Pipeline; change `restartNonce` to run it again"),
            ),
            Requeue::After(FOLLOW_EVERY),
        ),
        _ => (
            "Deploying",
            Wanted::new(
                READY,
                "Unknown",
                "JobStarting",
                format!("job {id} is {state} on {url}; its tasks are being deployed"),
            ),
            Requeue::After(STARTING_RECHECK),
        ),
    }
}

/// The state the first deployment starts from, or why it cannot start yet.
fn restore_path(
    pipeline: &Pipeline,
    savepoints: &Store<DeserializeGuard<Savepoint>>,
) -> Result<Option<String>, String> {
    let Some(RestoreFrom { savepoint, path }) = &pipeline.spec.restore_from else {
        return Ok(None);
    };
    if let Some(path) = path {
        return Ok(Some(path.clone()));
    }
    let Some(name) = savepoint else {
        return Ok(None);
    };
    let found = lookup(savepoints, pipeline, name);
    let status = found
        .as_deref()
        .and_then(|guard| guard.0.as_ref().ok())
        .and_then(|s| s.status.as_ref());
    match status {
        Some(status) if status.phase == Some(SavepointPhase::Completed) => status
            .location
            .clone()
            .map(Some)
            .ok_or_else(|| format!("Savepoint `{name}` is Completed but records no location")),
        _ => Err(format!(
            "the job starts from Savepoint `{name}`, which is not Completed yet"
        )),
    }
}

/// A hash of the engine settings a deployment runs with.
pub fn engine_hash(flink: &FlinkEngine) -> Result<String, Error> {
    let digest = Sha256::digest(serde_json::to_vec(flink)?);
    Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
}

fn refused(status: &PipelineStatus, error: &FlinkError) -> Result<Outcome, Error> {
    let ready = Wanted::new(READY, "False", error.reason(), error.to_string());
    outcome(status, ready, Requeue::Backoff)
}

fn outcome(status: &PipelineStatus, ready: Wanted, requeue: Requeue) -> Result<Outcome, Error> {
    Ok(Outcome {
        conditions: vec![ready],
        fields: own_fields(serde_json::to_value(status)?),
        requeue,
    })
}
