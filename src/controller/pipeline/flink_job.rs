//! A Flink pipeline: in session mode the job is submitted to an existing
//! Flink cluster through its REST API; in application mode the operator
//! starts a Flink cluster for it (`application.rs`). Either way the job is
//! followed, savepointed and stopped through the same REST client. Its id is
//! chosen and recorded before it is submitted or launched, so a submission
//! retried after a crash is recognised by Flink as the same job and never
//! runs twice.

use std::time::Duration;

use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use sha2::{Digest, Sha256};

use super::application::{self, Launch, Observed};
use super::reason::Reason;
use crate::api::pipeline::{
    FlinkEngine, FlinkMode, JobState, JobStatus, Pipeline, PipelinePhase, PipelineStatus,
    RestoreFrom, Transition, UpgradeMode,
};
use crate::api::savepoint::{Savepoint, SavepointPhase};
use crate::conditions::{ConditionStatus, READY};
use crate::controller::status::{own_fields, Outcome, Requeue, Wanted};
use crate::controller::{finalizer, lookup};
use crate::error::Error;
use crate::flink::{
    flink_id, FlinkApi, FlinkError, FlinkJobState, JobOverview, Operation, Submission,
};

/// How often a running job's state is read again.
const FOLLOW_EVERY: Duration = Duration::from_secs(15);
/// How often a job that is starting is looked at.
const STARTING_RECHECK: Duration = Duration::from_secs(2);

/// What one reconcile of a Flink pipeline works with.
struct FlinkJob<'a> {
    client: &'a Client,
    savepoints: &'a Store<DeserializeGuard<Savepoint>>,
    flink_api: &'a dyn FlinkApi,
    pipeline: &'a Pipeline,
    flink: &'a FlinkEngine,
    url: String,
    /// The operator's own Flink cluster, in application mode.
    cluster: Option<Observed>,
    uid: String,
    status: PipelineStatus,
}

/// Deploys and follows one Flink pipeline, and carries out its upgrades,
/// suspension and resumption one persisted step at a time.
pub async fn run(
    client: &Client,
    flink_api: &dyn FlinkApi,
    savepoints: &Store<DeserializeGuard<Savepoint>>,
    pipeline: &Pipeline,
    flink: &FlinkEngine,
) -> Result<Outcome, Error> {
    let cluster = match flink.mode {
        FlinkMode::Application => Some(application::observe(client, pipeline).await?),
        FlinkMode::Session => None,
    };
    let url = match &cluster {
        Some(cluster) => cluster.url.clone(),
        None => flink.session_url.clone(),
    };
    let mut status = pipeline.status.clone().unwrap_or_default();
    if let (Some(job), Some(url)) = (status.job.as_mut(), &url) {
        job.rest_url = Some(url.clone());
    }
    let mut flink_job = FlinkJob {
        client,
        savepoints,
        flink_api,
        pipeline,
        flink,
        url: url.unwrap_or_default(),
        cluster,
        uid: pipeline
            .uid()
            .ok_or(Error::MissingObjectField("metadata.uid"))?,
        status,
    };
    let desired = engine_hash(flink, pipeline.spec.restart_nonce)?;
    let job = flink_job.status.job.clone().unwrap_or_default();
    let Some(id) = job.id.clone() else {
        return flink_job.new_job(&desired, None);
    };
    if !job.submitted {
        let restore = match &flink_job.status.transition {
            Some(transition) => transition.restore_from.clone(),
            None => match restore_path(pipeline, savepoints) {
                Ok(restore) => restore,
                Err(message) => {
                    let ready = Wanted::new(
                        READY,
                        ConditionStatus::False,
                        Reason::RestoreStateNotReady,
                        message,
                    );
                    return outcome(&flink_job.status, ready, Requeue::Backoff);
                }
            },
        };
        match flink_job.submit(&id, restore).await {
            Ok(()) => {}
            Err(Error::Flink(error)) => return refused(&flink_job.status, &error),
            Err(error) => return Err(error),
        }
    }
    let suspend = pipeline.spec.state == JobState::Suspended;
    let generation = pipeline.metadata.generation.unwrap_or_default();
    let transition = match flink_job.status.transition.take() {
        // Given up for flink_job spec: wait for another.
        Some(t) if t.error.is_some() && t.generation == generation => Some(t),
        Some(t) if t.error.is_some() => None,
        Some(t) => Some(t),
        None => {
            let deployed = job.spec_hash.as_deref() == Some(desired.as_str());
            if deployed && !suspend {
                None
            } else {
                let mode = if suspend {
                    UpgradeMode::Savepoint
                } else {
                    pipeline.spec.upgrade_mode
                };
                let deployment = job.deployment.unwrap_or(1);
                flink_job.status.transition = Some(Transition {
                    trigger_id: (mode == UpgradeMode::Savepoint).then(|| {
                        flink_id(&format!(
                            "{}/{deployment}/{desired}/{suspend}",
                            flink_job.uid
                        ))
                    }),
                    to_hash: desired,
                    generation,
                    mode,
                    suspend,
                    stopped: false,
                    restore_from: None,
                    error: None,
                });
                let phase = stopping_phase(suspend);
                flink_job.status.phase = Some(phase);
                let ready = Wanted::new(
                    READY,
                    ConditionStatus::Unknown,
                    Reason::Phase(phase),
                    format!("job {id} is being stopped ({} mode)", mode_name(mode)),
                );
                return outcome(
                    &flink_job.status,
                    ready,
                    Requeue::After(Duration::from_secs(1)),
                );
            }
        }
    };
    match transition {
        Some(transition) if transition.error.is_none() => {
            flink_job.step(&id, transition, suspend, &desired).await
        }
        Some(transition) => {
            let error = transition.error.clone().unwrap_or_default();
            flink_job.status.transition = Some(transition);
            flink_job.follow_job(&id, Some(error)).await
        }
        None => flink_job.follow_job(&id, None).await,
    }
}

impl FlinkJob<'_> {
    /// Chooses and records the next job's id, to be submitted by the next reconcile.
    fn new_job(&mut self, hash: &str, previous: Option<i64>) -> Result<Outcome, Error> {
        let deployment = previous.unwrap_or(0) + 1;
        let id = flink_id(&format!("{}/{deployment}", self.uid));
        self.status.job = Some(JobStatus {
            id: Some(id.clone()),
            state: None,
            deployment: Some(deployment),
            submitted: false,
            spec_hash: Some(hash.to_string()),
            restarts: None,
            rest_url: (!self.url.is_empty()).then(|| self.url.clone()),
        });
        self.status.phase = Some(PipelinePhase::Deploying);
        let message = match self.cluster {
            Some(_) => format!("job {id} is being launched on a Flink cluster of its own"),
            None => format!("job {id} is being submitted to {}", self.url),
        };
        let ready = Wanted::new(
            READY,
            ConditionStatus::Unknown,
            Reason::Phase(PipelinePhase::Deploying),
            message,
        );
        outcome(&self.status, ready, Requeue::After(Duration::from_secs(1)))
    }

    /// Submits the recorded job, or launches its cluster in application
    /// mode; a job Flink already has counts as submitted.
    async fn submit(&mut self, id: &str, restore: Option<String>) -> Result<(), Error> {
        let flink = self.flink;
        if self.cluster.is_some() {
            self.launch(id, restore.as_deref(), true).await?;
            // What was just applied, rather than what was there before.
            let observed = application::observe(self.client, self.pipeline).await?;
            self.url = observed.url.clone().unwrap_or_default();
            self.cluster = Some(observed);
        } else {
            let submission = Submission {
                job_id: id.to_string(),
                jar_uri: flink.jar_uri.clone(),
                entry_class: flink.entry_class.clone(),
                args: flink.args.clone(),
                parallelism: flink.parallelism,
                savepoint_path: restore.clone(),
                allow_non_restored_state: flink.allow_non_restored_state,
            };
            match self.flink_api.submit(&self.url, &submission).await {
                Ok(_) => {}
                Err(error) if error.is_duplicate_submission() => {}
                Err(error) => return Err(error.into()),
            }
        }
        let event = match self.status.transition.take() {
            None => "Deployed",
            Some(t) if t.suspend => "Resumed",
            Some(_) => "Upgraded",
        };
        if let Some(job) = self.status.job.as_mut() {
            job.submitted = true;
            job.rest_url = (!self.url.is_empty()).then(|| self.url.clone());
        }
        self.status.restored_from.clone_from(&restore);
        super::remember(&mut self.status, self.pipeline, event, restore);
        Ok(())
    }

    /// One step of a transition: stop the old job the way its mode says,
    /// then deploy the new one from the state it left, or stay suspended.
    async fn step(
        &mut self,
        id: &str,
        mut transition: Transition,
        suspend: bool,
        desired: &str,
    ) -> Result<Outcome, Error> {
        if transition.stopped {
            if let (UpgradeMode::Savepoint, Some(location)) =
                (transition.mode, &transition.restore_from)
            {
                let deployment = self.status.job.as_ref().and_then(|j| j.deployment);
                let deployment = deployment.unwrap_or_default();
                let (client, savepoints) = (self.client, self.savepoints);
                crate::controller::common::snapshots::record_stop(
                    client,
                    savepoints,
                    self.pipeline,
                    deployment,
                    location,
                )
                .await?;
            }
            if suspend {
                self.status.transition = Some(transition);
                return self.suspended().await;
            }
            // An upgrade deploys what it was started for; a resumption
            // deploys the spec as it is now.
            let hash = if transition.suspend {
                desired.to_string()
            } else {
                transition.to_hash.clone()
            };
            let previous = self.status.job.as_ref().and_then(|j| j.deployment);
            self.status.transition = Some(transition);
            return self.new_job(&hash, previous);
        }
        let stopping = match transition.mode {
            UpgradeMode::Savepoint => self.stop_with_savepoint(id, &mut transition).await,
            UpgradeMode::Stateless => self.cancel(id).await,
            UpgradeMode::LastState if transition.restore_from.is_none() => {
                match self.flink_api.checkpoints(&self.url, id).await {
                    Ok(checkpoints) => match checkpoints.latest {
                        Some(latest) => {
                            transition.restore_from = Some(latest);
                            Ok(false)
                        }
                        None => Err("the job has no completed checkpoint or savepoint to go on from; use upgradeMode savepoint or stateless".to_string()),
                    },
                    Err(error) => Err(error.to_string()),
                }
            }
            UpgradeMode::LastState => self.cancel(id).await,
        };
        let waiting = match stopping {
            Ok(stopped) => {
                transition.stopped = stopped;
                Requeue::After(if stopped {
                    Duration::from_secs(1)
                } else {
                    STARTING_RECHECK
                })
            }
            Err(error) => {
                transition.error = Some(error.clone());
                self.status.transition = Some(transition);
                return self.follow_job(id, Some(error)).await;
            }
        };
        let phase = stopping_phase(suspend);
        let message = match &transition.restore_from {
            Some(state) => format!("job {id} is stopping; the next job starts from {state}"),
            None => format!("job {id} is stopping ({} mode)", mode_name(transition.mode)),
        };
        self.status.transition = Some(transition);
        self.status.phase = Some(phase);
        outcome(
            &self.status,
            Wanted::new(
                READY,
                ConditionStatus::Unknown,
                Reason::Phase(phase),
                message,
            ),
            waiting,
        )
    }

    /// Stops the job with a savepoint under the recorded trigger id; whether it is done.
    async fn stop_with_savepoint(
        &self,
        id: &str,
        transition: &mut Transition,
    ) -> Result<bool, String> {
        let trigger = transition.trigger_id.clone().unwrap_or_default();
        let directory = self
            .pipeline
            .spec
            .savepoints
            .as_ref()
            .and_then(|p| p.target_directory.as_deref());
        self.flink_api
            .trigger_savepoint(&self.url, id, &trigger, directory, true)
            .await
            .map_err(|e| format!("stopping job {id} with a savepoint failed: {e}"))?;
        match self
            .flink_api
            .savepoint_status(&self.url, id, &trigger)
            .await
        {
            Ok(Operation::InProgress) => Ok(false),
            Ok(Operation::Completed(location)) => {
                transition.restore_from = location;
                // The savepoint completes before the job's tasks finish.
                self.stopped(id).await
            }
            Ok(Operation::Failed(words)) => Err(format!(
                "the savepoint to stop job {id} with failed, so the job was not stopped: {words}"
            )),
            Err(error) => Err(format!(
                "the savepoint of job {id} could not be followed: {error}"
            )),
        }
    }

    /// Whether the job has reached a final state.
    async fn stopped(&self, id: &str) -> Result<bool, String> {
        match self.flink_api.job(&self.url, id).await {
            Ok(job) => Ok(job.state.has_ended()),
            Err(FlinkError::JobNotFound(_)) => Ok(true),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Cancels the job; whether it has stopped.
    async fn cancel(&self, id: &str) -> Result<bool, String> {
        match self.flink_api.job(&self.url, id).await {
            Ok(job) if job.state.has_ended() => Ok(true),
            Err(FlinkError::JobNotFound(_)) => Ok(true),
            Ok(job) if job.state == FlinkJobState::Cancelling => Ok(false),
            Ok(_) => self
                .flink_api
                .cancel(&self.url, id)
                .await
                .map(|()| false)
                .map_err(|e| format!("cancelling job {id} failed: {e}")),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Applies the application-mode cluster that runs job `id` from `restore`.
    async fn launch(&self, id: &str, restore: Option<&str>, running: bool) -> Result<(), Error> {
        let deployment = self.status.job.as_ref().and_then(|j| j.deployment);
        let launch = Launch {
            job_id: id,
            deployment: deployment.unwrap_or(1),
            restore,
            running,
        };
        application::apply(self.client, self.pipeline, self.flink, &launch).await
    }

    async fn suspended(&mut self) -> Result<Outcome, Error> {
        if self.cluster.is_some() {
            // The JobManager stays, so that savepoints can still be disposed through it.
            application::stop_task_managers(self.client, self.pipeline).await?;
        }
        self.status.phase = Some(PipelinePhase::Suspended);
        let state = self
            .status
            .transition
            .as_ref()
            .and_then(|t| t.restore_from.clone())
            .unwrap_or_default();
        if let Some(job) = self.status.job.as_mut() {
            job.state = Some(FlinkJobState::Finished.to_string());
        }
        let ready = Wanted::new(
            READY,
            ConditionStatus::True,
            Reason::Phase(PipelinePhase::Suspended),
            format!("the job is stopped; it resumes from {state} when `state` is running"),
        );
        outcome(&self.status, ready, Requeue::OnChange)
    }

    /// Reads the job's state and reports it, with the reason a transition stopped if one did.
    async fn follow_job(
        &mut self,
        id: &str,
        stopped_change: Option<String>,
    ) -> Result<Outcome, Error> {
        if let Some(cluster) = &self.cluster {
            if !cluster.deployed || cluster.url.is_none() {
                // Its objects were deleted: the same deployment is launched again.
                let restore = self.status.restored_from.clone();
                self.launch(id, restore.as_deref(), true).await?;
                return self.starting(id, "its Flink cluster is being created again");
            }
            if !cluster.ready {
                return self.starting(id, "its JobManager pod is starting");
            }
        }
        let (phase, mut ready, requeue) = match self.flink_api.job(&self.url, id).await {
            Ok(overview) => {
                let restarts = match self.flink_api.restarts(&self.url, id).await {
                    Ok(restarts) => restarts,
                    Err(error) => {
                        tracing::debug!(job = %id, %error, "restarts unknown");
                        None
                    }
                };
                if let Some(job) = self.status.job.as_mut() {
                    job.state = Some(overview.state.to_string());
                    job.restarts = restarts.or(job.restarts);
                }
                follow(self.flink_api, &self.url, id, &overview).await
            }
            Err(FlinkError::JobNotFound(_)) if self.cluster.is_some() => {
                return self.starting(id, "its JobManager is starting the application");
            }
            // A JobManager just ready may not be behind its Service yet.
            Err(error @ FlinkError::Unreachable { .. }) if self.cluster.is_some() => {
                self.status.phase = Some(PipelinePhase::Deploying);
                let why = format!("job {id}: its JobManager Service does not answer yet: {error}");
                let ready = Wanted::new(READY, ConditionStatus::Unknown, Reason::JobStarting, why);
                return outcome(&self.status, ready, Requeue::Backoff);
            }
            Err(error) => return refused(&self.status, &error),
        };
        if let Some(error) = stopped_change {
            ready = Wanted::new(
                READY,
                ConditionStatus::False,
                Reason::UpgradeFailed,
                format!("{error}; {}", ready.message),
            );
        }
        self.status.phase = Some(phase);
        outcome(&self.status, ready, requeue)
    }

    /// Reports an application-mode job whose cluster is not serving it yet.
    fn starting(&mut self, id: &str, why: &str) -> Result<Outcome, Error> {
        self.status.phase = Some(PipelinePhase::Deploying);
        let ready = Wanted::new(
            READY,
            ConditionStatus::Unknown,
            Reason::JobStarting,
            format!("job {id}: {why}"),
        );
        outcome(&self.status, ready, Requeue::After(STARTING_RECHECK))
    }
}

fn mode_name(mode: UpgradeMode) -> &'static str {
    match mode {
        UpgradeMode::Stateless => "stateless",
        UpgradeMode::Savepoint => "savepoint",
        UpgradeMode::LastState => "last-state",
    }
}

/// Phase, Ready condition and next look for a job as Flink reports it.
async fn follow(
    flink_api: &dyn FlinkApi,
    url: &str,
    id: &str,
    overview: &JobOverview,
) -> (PipelinePhase, Wanted, Requeue) {
    let state = &overview.state;
    match state {
        FlinkJobState::Running if overview.all_tasks_running => (
            PipelinePhase::Running,
            Wanted::new(
                READY,
                ConditionStatus::True,
                Reason::JobRunning,
                format!("job {id} is RUNNING on {url}"),
            ),
            Requeue::After(FOLLOW_EVERY),
        ),
        FlinkJobState::Failed | FlinkJobState::Failing => {
            let why = match flink_api.failure(url, id).await {
                Ok(Some(words)) => words,
                Ok(None) => "Flink recorded no exception".into(),
                Err(error) => format!("its exceptions could not be read: {error}"),
            };
            (
                PipelinePhase::Failed,
                Wanted::new(
                    READY,
                    ConditionStatus::False,
                    Reason::JobFailed,
                    format!("job {id} is {state} on {url}: {why}"),
                ),
                Requeue::After(FOLLOW_EVERY),
            )
        }
        FlinkJobState::Canceled
        | FlinkJobState::Cancelling
        | FlinkJobState::Finished
        | FlinkJobState::Suspended => (
            PipelinePhase::Stopped,
            Wanted::new(
                READY,
                ConditionStatus::False,
                Reason::JobStopped,
                format!("job {id} is {state} on {url}, stopped outside this Pipeline; change `restartNonce` to run it again"),
            ),
            Requeue::After(FOLLOW_EVERY),
        ),
        _ => (
            PipelinePhase::Deploying,
            Wanted::new(
                READY,
                ConditionStatus::Unknown,
                Reason::JobStarting,
                format!(
                    "job {id} is {state} on {url}; its tasks are being deployed: {}",
                    overview.tasks_words()
                ),
            ),
            Requeue::After(STARTING_RECHECK),
        ),
    }
}

/// The phase of a job being stopped: to be suspended, or to start again.
fn stopping_phase(suspend: bool) -> PipelinePhase {
    if suspend {
        PipelinePhase::Suspending
    } else {
        PipelinePhase::Upgrading
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

/// A hash of the engine settings a deployment runs with, and the restart nonce.
pub fn engine_hash(flink: &FlinkEngine, restart_nonce: Option<i64>) -> Result<String, Error> {
    let digest = Sha256::digest(serde_json::to_vec(&(flink, restart_nonce))?);
    Ok(crate::discovery::hex(&digest[..8]))
}

fn refused(status: &PipelineStatus, error: &FlinkError) -> Result<Outcome, Error> {
    let ready = Wanted::new(
        READY,
        ConditionStatus::False,
        Reason::Flink(error.reason()),
        error.to_string(),
    );
    outcome(status, ready, Requeue::Backoff)
}

fn outcome(status: &PipelineStatus, ready: Wanted, requeue: Requeue) -> Result<Outcome, Error> {
    Ok(Outcome {
        conditions: vec![ready],
        fields: own_fields(serde_json::to_value(status)?),
        requeue,
    })
}

/// The finalizer of session-mode pipelines: their job runs on a cluster
/// the operator does not own, so it is cancelled before the pipeline goes.
pub const FINALIZER: &str = "kappa.dev/cancel-session-job";

/// Holds a session-mode pipeline until its job is cancelled. `Some` when the
/// reconcile is done.
pub async fn on_delete(
    api: &Api<Pipeline>,
    flink_api: &dyn FlinkApi,
    pipeline: &Pipeline,
) -> Result<Option<Action>, Error> {
    let session = pipeline
        .spec
        .engine
        .flink
        .as_ref()
        .filter(|f| f.mode == FlinkMode::Session);
    let held = finalizer::held(pipeline, FINALIZER);
    if pipeline.metadata.deletion_timestamp.is_none() {
        if session.is_some() && !held {
            finalizer::set(api, pipeline, FINALIZER, true).await?;
        }
        return Ok(None);
    }
    if !held {
        return Ok(Some(Action::await_change()));
    }
    if let Some(action) = finalizer::skip_cleanup(api, pipeline, FINALIZER).await? {
        return Ok(Some(action));
    }
    let job = pipeline
        .status
        .as_ref()
        .and_then(|s| s.job.as_ref())
        .filter(|j| j.submitted)
        .and_then(|j| j.id.clone());
    if let (Some(flink), Some(job)) = (session, job) {
        let url = flink.session_url.clone().unwrap_or_default();
        let state = match flink_api.job(&url, &job).await {
            Ok(overview) => Some(overview.state),
            Err(FlinkError::JobNotFound(_)) => None,
            Err(error) => return Err(Error::Flink(error)),
        };
        if let Some(state) = state.filter(|state| !state.has_ended()) {
            if state != FlinkJobState::Cancelling {
                flink_api.cancel(&url, &job).await?;
                tracing::info!(%job, %url, "cancelling the job of a deleted pipeline");
            }
            return Ok(Some(Action::requeue(Duration::from_secs(1))));
        }
    }
    finalizer::set(api, pipeline, FINALIZER, false).await?;
    Ok(Some(Action::await_change()))
}
