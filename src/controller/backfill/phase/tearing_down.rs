//! TearingDown: the derived Pipeline goes, the clusters are kept for
//! `teardownAfter`, then released; once the set has retired them, the Jobs
//! and plan go and the run is Completed (or Failed, with the reason kept).

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};

use super::super::derived::{derived_name, view_name};
use super::super::objects;
use super::super::reason::Reason;
use super::super::run::{now, since, RunBackfill, Step, RECHECK};
use crate::api::backfill::{Backfill, BackfillPhase, BackfillStatus};
use crate::api::pipeline::Pipeline;
use crate::controller::common::pipelines;
use crate::controller::gone;
use crate::controller::status::Requeue;
use crate::error::Error;

impl RunBackfill<'_> {
    pub(crate) async fn tearing_down(
        &self,
        backfill: &Backfill,
        status: BackfillStatus,
    ) -> Result<Step, Error> {
        let namespace = backfill.namespace().unwrap_or_default();
        let params = DeleteParams::background();
        let pipelines: Api<Pipeline> = Api::namespaced(self.shared.client.clone(), &namespace);
        let job = derived_name(backfill);
        // The derived job stops first, pods and all: they read the extra
        // clusters and may still write output. Its pods outlive the
        // Pipeline while the garbage collector removes its StatefulSet.
        let stopping = match gone(pipelines.delete(&job, &params).await)? {
            false => Some(format!("stopping the backfill job `{job}`")),
            true => match pipelines::pods_of(&self.shared.client, &namespace, &job)
                .await?
                .len()
            {
                0 => None,
                left => Some(format!(
                    "waiting for the {left} pod(s) of the backfill job `{job}` to stop"
                )),
            },
        };
        if let Some(message) = stopping {
            return Ok(Step::wait(
                status,
                Reason::Phase(BackfillPhase::TearingDown),
                message,
                Requeue::After(RECHECK),
            ));
        }
        let keep = backfill.spec.teardown_after.ok().unwrap_or_default();
        let kept = since(status.phase_time.as_ref());
        let set_name = status.cluster_set.clone().unwrap_or_default();
        let lingering: Vec<String> = self
            .set(backfill, &set_name)
            .and_then(|s| s.status)
            .map(|s| {
                s.clusters
                    .into_iter()
                    .filter(|c| c.owner.as_deref() == Some(&backfill.name_any()))
                    .map(|c| c.name)
                    .collect()
            })
            .unwrap_or_default();
        let mut next = status;
        match decide(!next.clusters.is_empty(), kept, keep, lingering) {
            Next::Keep(left) => {
                let message = format!(
                    "keeping the extra clusters for spec.teardownAfter ({})",
                    backfill.spec.teardown_after
                );
                return Ok(Step::wait(
                    next,
                    Reason::Phase(BackfillPhase::TearingDown),
                    message,
                    Requeue::After(left),
                ));
            }
            Next::Release => {
                // Released: the set no longer counts them as members and retires them.
                let released = std::mem::take(&mut next.clusters).join(", ");
                let message =
                    format!("released cluster(s) {released}; waiting for the set to retire them");
                return Ok(Step::wait(
                    next,
                    Reason::Phase(BackfillPhase::TearingDown),
                    message,
                    Requeue::After(RECHECK),
                ));
            }
            Next::AwaitRetirement(lingering) => {
                let message = format!(
                    "waiting for KafkaClusterSet `{set_name}` to retire {}",
                    lingering.join(", ")
                );
                return Ok(Step::wait(
                    next,
                    Reason::Phase(BackfillPhase::TearingDown),
                    message,
                    Requeue::After(RECHECK),
                ));
            }
            Next::Finish => {}
        }
        let jobs: Api<Job> = Api::namespaced(self.shared.client.clone(), &namespace);
        let config_maps: Api<ConfigMap> = Api::namespaced(self.shared.client.clone(), &namespace);
        let job_names = next
            .replay
            .as_ref()
            .map(|r| r.jobs.clone())
            .unwrap_or_default();
        for name in &job_names {
            gone(jobs.delete(name, &params).await)?;
        }
        gone(
            config_maps
                .delete(&objects::plan_name(backfill), &params)
                .await,
        )?;
        gone(config_maps.delete(&view_name(backfill), &params).await)?;
        next.completion_time = Some(now());
        let (phase, message) = match &next.failure {
            Some(failure) => (BackfillPhase::Failed, failure.clone()),
            None => (BackfillPhase::Completed, "the backfill job consumed the replayed range; extra clusters, Jobs and plan removed".to_string()),
        };
        Ok(Step::advance(next, phase, message))
    }
}

/// What TearingDown does once the backfill job has stopped.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Keep the extra clusters for this much longer.
    Keep(Duration),
    /// Release them: the set retires clusters no run claims.
    Release,
    /// Wait for the set to retire these clusters.
    AwaitRetirement(Vec<String>),
    /// The clusters are gone: remove the Jobs and plan, and end the run.
    Finish,
}

/// Decides from whether the run still `claims` its clusters, how long
/// (seconds) they have been `kept` since the job stopped, how long to
/// `keep` them, and the clusters of this run the set still holds.
fn decide(claims: bool, kept: f64, keep: Duration, lingering: Vec<String>) -> Next {
    if claims && kept < keep.as_secs_f64() {
        let left = Duration::from_secs_f64(keep.as_secs_f64() - kept);
        Next::Keep(left.max(Duration::from_secs(1)))
    } else if claims {
        Next::Release
    } else if !lingering.is_empty() {
        Next::AwaitRetirement(lingering)
    } else {
        Next::Finish
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_are_kept_then_released_then_awaited_before_the_run_ends() {
        let hour = Duration::from_secs(3600);
        let lingering = || vec!["rerun-0".to_string()];
        let cases = [
            (
                "kept for teardownAfter",
                true,
                600.0,
                hour,
                vec![],
                Next::Keep(Duration::from_secs(3000)),
            ),
            (
                "the last second rounds up",
                true,
                3599.5,
                hour,
                vec![],
                Next::Keep(Duration::from_secs(1)),
            ),
            (
                "teardownAfter passed",
                true,
                3600.0,
                hour,
                lingering(),
                Next::Release,
            ),
            (
                "no teardownAfter",
                true,
                0.0,
                Duration::ZERO,
                vec![],
                Next::Release,
            ),
            (
                "released, the set still holds one",
                false,
                0.0,
                hour,
                lingering(),
                Next::AwaitRetirement(lingering()),
            ),
            (
                "released and retired",
                false,
                0.0,
                hour,
                vec![],
                Next::Finish,
            ),
        ];
        for (case, claims, kept, keep, held, expected) in cases {
            assert_eq!(decide(claims, kept, keep, held), expected, "{case}");
        }
    }
}
