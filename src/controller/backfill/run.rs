//! The phases of a Backfill. Each reconcile acts on the phase its status
//! records and, when that phase's work is done, records the next one
//! without acting on it: the next reconcile does. So every phase is in the
//! status before anything of it happens, and an operator restarted at any
//! instant picks up where the status says.
//!
//! Pending: the Pipeline and its set are checked, the extra clusters named.
//! Provisioning: the set runs them (it reads them from this status); once
//! they and their topics are ready, the range is located on the source
//! cluster and the plan stored. Replaying: one Job per worker copies it.
//! Processing: a Pipeline derived from the live one reads the copy through
//! its own discovery view until it has consumed everything written.
//! TearingDown: the derived Pipeline goes, the clusters are kept for
//! `teardownAfter`, then released; once the set has retired them, the Jobs
//! and plan go and the run is Completed (or Failed, with the reason kept).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;

use super::metrics::record_metrics;
use super::reason::Reason;
use crate::api::backfill::{Backfill, BackfillPhase, BackfillStatus};
use crate::api::kafka_cluster_set::KafkaClusterSet;
use crate::api::pipeline::Pipeline;
use crate::conditions::{ConditionStatus, DEGRADED, PROGRESSING, READY};
use crate::controller::reconcile::Act;
use crate::controller::status::{own_fields, Outcome, Requeue, Wanted};
use crate::controller::{lookup, Shared};
use crate::error::Error;
use crate::kafka::KafkaAdmin;

/// How often a phase that waits on something outside Kubernetes looks again.
pub(crate) const RECHECK: Duration = Duration::from_secs(5);
/// Times the copy starts again on emptied topics when the extra clusters do
/// not hold exactly the range after the workers finished, before the run
/// fails.
pub(crate) const MAX_RERUNS: i32 = 3;
/// How often a range whose end has not been reached yet is looked at again.
pub(crate) const RANGE_RECHECK: Duration = Duration::from_secs(30);

/// What the Backfill controller reads and talks to.
pub struct BackfillDeps {
    /// Pipelines, to find the live one.
    pub pipelines: Store<DeserializeGuard<Pipeline>>,
    /// Sets, to find the clusters.
    pub sets: Store<DeserializeGuard<KafkaClusterSet>>,
    /// Kafka's admin API.
    pub admin: Arc<dyn KafkaAdmin>,
    /// The operator's own image, which replay workers run.
    pub image: String,
}

/// Acts on one Backfill.
pub struct RunBackfill<'c> {
    /// Shared controller parts.
    pub shared: &'c Shared,
    /// Stores, Kafka and the image.
    pub deps: &'c BackfillDeps,
}

impl Act<Backfill> for RunBackfill<'_> {
    fn act<'a>(self, backfill: &'a Backfill) -> BoxFuture<'a, Result<Outcome, Error>>
    where
        Self: 'a,
    {
        async move { self.run(backfill).await }.boxed()
    }
}

/// Where one reconcile leaves the run.
pub(crate) struct Step {
    pub(crate) status: BackfillStatus,
    reason: Reason,
    message: String,
    requeue: Requeue,
}

impl Step {
    pub(crate) fn wait(
        status: BackfillStatus,
        reason: Reason,
        message: impl Into<String>,
        requeue: Requeue,
    ) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
            requeue,
        }
    }

    /// The run moves to `phase`; the next reconcile acts on it.
    pub(crate) fn advance(
        mut status: BackfillStatus,
        phase: BackfillPhase,
        message: impl Into<String>,
    ) -> Self {
        status.phase = Some(phase);
        status.phase_time = Some(now());
        Self::wait(
            status,
            Reason::Phase(phase),
            message,
            Requeue::After(Duration::from_millis(200)),
        )
    }

    /// The run cannot go on: it tears down what it created and ends Failed.
    pub(crate) fn fail(mut status: BackfillStatus, reason: Reason, message: String) -> Self {
        status.failure = Some(format!("{reason}: {message}"));
        Self::advance(status, BackfillPhase::TearingDown, message)
    }

    fn outcome(self) -> Result<Outcome, Error> {
        let phase = self.status.phase.unwrap_or(BackfillPhase::Pending);
        let mut conditions = vec![match phase {
            BackfillPhase::Completed => Wanted::new(
                READY,
                ConditionStatus::True,
                Reason::Phase(phase).as_str(),
                self.message.clone(),
            ),
            BackfillPhase::Failed => Wanted::new(
                READY,
                ConditionStatus::False,
                Reason::Phase(phase).as_str(),
                self.message.clone(),
            ),
            _ => Wanted::new(
                READY,
                ConditionStatus::Unknown,
                self.reason.as_str(),
                self.message.clone(),
            ),
        }];
        let settled = matches!(phase, BackfillPhase::Completed | BackfillPhase::Failed);
        conditions.push(if settled {
            Wanted::new(
                PROGRESSING,
                ConditionStatus::False,
                Reason::Phase(phase).as_str(),
                self.message.clone(),
            )
        } else {
            Wanted::new(
                PROGRESSING,
                ConditionStatus::True,
                self.reason.as_str(),
                self.message.clone(),
            )
        });
        conditions.push(match &self.status.failure {
            Some(failure) => Wanted::new(
                DEGRADED,
                ConditionStatus::True,
                Reason::RunFailed.as_str(),
                failure.clone(),
            ),
            None => Wanted::new(
                DEGRADED,
                ConditionStatus::False,
                Reason::NoFailure.as_str(),
                "nothing has failed",
            ),
        });
        Ok(Outcome {
            conditions,
            fields: own_fields(serde_json::to_value(&self.status)?),
            requeue: self.requeue,
        })
    }
}

pub(crate) fn now() -> Time {
    Time(Timestamp::now())
}

/// Seconds since `time`.
pub(crate) fn since(time: Option<&Time>) -> f64 {
    time.map_or(0.0, |t| {
        (Timestamp::now().as_millisecond() - t.0.as_millisecond()).max(0) as f64 / 1000.0
    })
}

impl RunBackfill<'_> {
    async fn run(&self, backfill: &Backfill) -> Result<Outcome, Error> {
        let status = backfill.status.clone().unwrap_or_default();
        let step = match status.phase.unwrap_or(BackfillPhase::Pending) {
            BackfillPhase::Pending => self.pending(backfill, status),
            BackfillPhase::Provisioning => self.provisioning(backfill, status).await?,
            BackfillPhase::Replaying => self.replaying(backfill, status).await?,
            BackfillPhase::Processing => self.processing(backfill, status).await?,
            BackfillPhase::HandingOff => self.handing_off(backfill, status).await?,
            BackfillPhase::TearingDown => self.tearing_down(backfill, status).await?,
            phase @ (BackfillPhase::Completed | BackfillPhase::Failed) => {
                let message = status.failure.clone().unwrap_or_else(|| {
                    format!(
                        "{}: the extra clusters, Jobs and plan are gone",
                        Reason::Phase(phase)
                    )
                });
                Step::wait(status, Reason::Phase(phase), message, Requeue::OnChange)
            }
        };
        record_metrics(&self.shared.metrics, backfill, &step.status);
        step.outcome()
    }

    pub(crate) fn pipeline(&self, backfill: &Backfill) -> Option<Pipeline> {
        let found = lookup(&self.deps.pipelines, backfill, &backfill.spec.pipeline_ref)?;
        found.0.as_ref().ok().cloned()
    }

    pub(crate) fn set(&self, backfill: &Backfill, name: &str) -> Option<KafkaClusterSet> {
        let found = lookup(&self.deps.sets, backfill, name)?;
        found.0.as_ref().ok().cloned()
    }

    /// The live Pipeline and the set `set_name` a run under way uses, or
    /// what is gone.
    pub(crate) fn references(
        &self,
        backfill: &Backfill,
        set_name: &str,
    ) -> Result<(Pipeline, KafkaClusterSet), String> {
        match (self.pipeline(backfill), self.set(backfill, set_name)) {
            (Some(pipeline), Some(set)) => Ok((pipeline, set)),
            _ => Err(format!(
                "Pipeline `{}` or KafkaClusterSet `{set_name}` is gone",
                backfill.spec.pipeline_ref
            )),
        }
    }
}
