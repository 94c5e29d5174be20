//! Taking a Flink savepoint for a Savepoint resource: trigger it on the
//! pipeline's running job, follow the trigger until Flink says where the
//! savepoint is or why it failed, and retry up to `backoffLimit` times. A
//! Savepoint with `path` registers a savepoint that already exists.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::lifecycle::{done, ended, failed_attempt, outcome};
use super::reason::Reason;
use crate::api::pipeline::{Pipeline, PipelinePhase};
use crate::api::savepoint::{Savepoint, SavepointPhase, SavepointStatus};
use crate::conditions::{ConditionStatus, READY};
use crate::controller::status::{Outcome, Requeue, Wanted};
use crate::error::Error;
use crate::flink::{flink_id, FlinkApi, Operation};
use crate::metrics::Metrics;

/// How often a savepoint in progress is looked at.
const IN_PROGRESS_RECHECK: Duration = Duration::from_secs(2);
/// How long Flink may take for a savepoint when the pipeline sets no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a savepoint waiting for its pipeline's job looks again.
const WAITING_RECHECK: Duration = Duration::from_secs(10);

/// Where the job to snapshot runs.
struct Target {
    url: String,
    job: String,
    directory: Option<String>,
    /// How long Flink may take before the attempt counts as failed.
    timeout: Duration,
}

/// Advances one Flink Savepoint by at most one step.
pub async fn take(
    flink_api: &dyn FlinkApi,
    metrics: &Metrics,
    savepoint: &Savepoint,
    pipeline: Option<&Pipeline>,
) -> Result<Outcome, Error> {
    let labels = [
        savepoint.metadata.namespace.clone().unwrap_or_default(),
        savepoint.spec.pipeline_ref.clone(),
    ];
    let mut status = savepoint.status.clone().unwrap_or_default();
    match status.phase {
        Some(SavepointPhase::Completed) => {
            let location = status.location.clone().unwrap_or_default();
            return match savepoint.spec.path {
                Some(_) => registered(&status, &location),
                None => done(
                    &status,
                    ConditionStatus::True,
                    Reason::SavepointCompleted,
                    format!("the savepoint is at {location}"),
                ),
            };
        }
        _ => {
            if let Some(ended) = ended(&status) {
                return ended;
            }
        }
    }
    if status.phase == Some(SavepointPhase::InProgress) && pipeline.is_none() {
        let error = format!(
            "Pipeline `{}` was deleted before the savepoint completed",
            savepoint.spec.pipeline_ref
        );
        status.phase = Some(SavepointPhase::Abandoned);
        status.completion_time = Some(Time(Timestamp::now()));
        status.error = Some(error.clone());
        return done(
            &status,
            ConditionStatus::False,
            Reason::SavepointAbandoned,
            error,
        );
    }
    if let Some(path) = &savepoint.spec.path {
        status.phase = Some(SavepointPhase::Completed);
        status.location = Some(path.clone());
        status.completion_time = Some(Time(Timestamp::now()));
        return registered(&status, path);
    }
    let target = match target(savepoint, pipeline) {
        Ok(target) => target,
        Err(message) => {
            status.phase = Some(SavepointPhase::Pending);
            let ready = Wanted::new(
                READY,
                ConditionStatus::False,
                Reason::PipelineNotRunning,
                message,
            );
            return outcome(&status, ready, Requeue::After(WAITING_RECHECK));
        }
    };
    if status.phase == Some(SavepointPhase::InProgress) {
        if let Some(trigger) = status.trigger_id.clone() {
            let outcome = follow(flink_api, &target, &trigger, savepoint, status).await?;
            observe(metrics, &labels, &outcome);
            return Ok(outcome);
        }
    }
    // The trigger id depends on the attempt alone: a trigger repeated after
    // a crash is the same savepoint to Flink.
    let uid = savepoint
        .metadata
        .uid
        .as_deref()
        .ok_or(Error::MissingObjectField("metadata.uid"))?;
    let trigger = flink_id(&format!("{uid}/{}", status.failures));
    match flink_api
        .trigger_savepoint(
            &target.url,
            &target.job,
            &trigger,
            target.directory.as_deref(),
            false,
        )
        .await
    {
        Ok(()) => {
            status.phase = Some(SavepointPhase::InProgress);
            status.trigger_id = Some(trigger.clone());
            status.trigger_time = Some(Time(Timestamp::now()));
            let ready = Wanted::new(
                READY,
                ConditionStatus::Unknown,
                Reason::SavepointInProgress,
                format!("Flink took trigger {trigger} for job {}", target.job),
            );
            outcome(&status, ready, Requeue::After(IN_PROGRESS_RECHECK))
        }
        Err(error) => {
            let outcome = failed_attempt(savepoint, status, error.to_string())?;
            observe(metrics, &labels, &outcome);
            Ok(outcome)
        }
    }
}

/// Counts a failed attempt, or the duration of a completed savepoint.
fn observe(metrics: &Metrics, labels: &[String; 2], outcome: &Outcome) {
    let Ok(status) = serde_json::from_value::<SavepointStatus>(serde_json::Value::Object(
        outcome.fields.clone(),
    )) else {
        return;
    };
    let labels = [labels[0].as_str(), labels[1].as_str()];
    match status.phase {
        Some(SavepointPhase::Completed) => {
            if let (Some(triggered), Some(completed)) =
                (&status.trigger_time, &status.completion_time)
            {
                let took = completed.0.duration_since(triggered.0).as_secs_f64();
                metrics
                    .savepoint_duration
                    .with_label_values(&labels)
                    .observe(took);
            }
        }
        _ if status.error.is_some() && status.trigger_id.is_none() => {
            metrics.savepoint_failures.with_label_values(&labels).inc();
        }
        _ => {}
    }
}

/// Reads where a triggered savepoint stands.
async fn follow(
    flink_api: &dyn FlinkApi,
    target: &Target,
    trigger: &str,
    savepoint: &Savepoint,
    mut status: SavepointStatus,
) -> Result<Outcome, Error> {
    match flink_api
        .savepoint_status(&target.url, &target.job, trigger)
        .await
    {
        Ok(Operation::InProgress) => {
            let waited = status
                .trigger_time
                .as_ref()
                .map(|t| Timestamp::now().duration_since(t.0).unsigned_abs())
                .unwrap_or_default();
            if waited > target.timeout {
                let error = format!(
                    "Flink had not completed savepoint trigger {trigger} after {}s (the pipeline's savepoint timeout)",
                    waited.as_secs()
                );
                return failed_attempt(savepoint, status, error);
            }
            let ready = Wanted::new(
                READY,
                ConditionStatus::Unknown,
                Reason::SavepointInProgress,
                format!(
                    "Flink is taking the savepoint of job {} (trigger {trigger})",
                    target.job
                ),
            );
            outcome(&status, ready, Requeue::After(IN_PROGRESS_RECHECK))
        }
        Ok(Operation::Completed(location)) => {
            status.phase = Some(SavepointPhase::Completed);
            status.location.clone_from(&location);
            status.completion_time = Some(Time(Timestamp::now()));
            status.error = None;
            let location = location.unwrap_or_default();
            done(
                &status,
                ConditionStatus::True,
                Reason::SavepointCompleted,
                format!("the savepoint is at {location}"),
            )
        }
        Ok(Operation::Failed(words)) => failed_attempt(savepoint, status, words),
        Err(error) => {
            let ready = Wanted::new(
                READY,
                ConditionStatus::Unknown,
                error.reason(),
                error.to_string(),
            );
            outcome(&status, ready, Requeue::Backoff)
        }
    }
}

/// The running job to snapshot, or why there is none.
fn target(savepoint: &Savepoint, pipeline: Option<&Pipeline>) -> Result<Target, String> {
    let name = &savepoint.spec.pipeline_ref;
    let pipeline = pipeline.ok_or_else(|| format!("Pipeline `{name}` is not there"))?;
    if pipeline.spec.engine.flink.is_none() {
        return Err(format!("Pipeline `{name}` is not a Flink job"));
    }
    let (job, url) = pipeline
        .status
        .as_ref()
        .filter(|s| s.phase == Some(PipelinePhase::Running))
        .and_then(|s| s.job.as_ref())
        .filter(|j| j.submitted)
        .and_then(|j| j.id.clone().zip(j.rest_url.clone()))
        .ok_or_else(|| format!("Pipeline `{name}` has no running job yet"))?;
    let directory = savepoint.spec.target_directory.clone().or_else(|| {
        pipeline
            .spec
            .savepoints
            .as_ref()
            .and_then(|p| p.target_directory.clone())
    });
    let timeout = pipeline
        .spec
        .savepoints
        .as_ref()
        .and_then(|p| p.timeout.ok())
        .unwrap_or(DEFAULT_TIMEOUT);
    Ok(Target {
        url,
        job,
        directory,
        timeout,
    })
}

fn registered(status: &SavepointStatus, path: &str) -> Result<Outcome, Error> {
    done(
        status,
        ConditionStatus::True,
        Reason::SavepointRegistered,
        format!("an existing savepoint at {path}"),
    )
}
