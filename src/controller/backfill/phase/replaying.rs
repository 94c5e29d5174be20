//! Replaying: one Job per worker copies the range into the extra clusters;
//! a finished copy is checked (exactly the range, nothing written by
//! anyone else) before it is used, and copied again on emptied topics when
//! it is not.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};

use super::super::derived::derived_name;
use super::super::objects::{self, JobState};
use super::super::progress::{progress, sum, with_bytes};
use super::super::reason::Reason;
use super::super::run::{RunBackfill, Step, MAX_RERUNS, RECHECK};
use crate::api::backfill::{Backfill, BackfillPhase, BackfillStatus, StreamOffsets};
use crate::controller::gone;
use crate::controller::status::Requeue;
use crate::error::Error;
use crate::replay::bytes_group;
use crate::replay::plan::ReplayPlan;

impl RunBackfill<'_> {
    pub(crate) async fn replaying(
        &self,
        backfill: &Backfill,
        status: BackfillStatus,
    ) -> Result<Step, Error> {
        let Some(replay) = status.replay.clone() else {
            return Ok(Step::fail(
                status,
                Reason::PlanLost,
                "the replay's plan is not recorded".into(),
            ));
        };
        let set_name = status.cluster_set.clone().unwrap_or_default();
        let Some(set) = self.set(backfill, &set_name) else {
            return Ok(Step::fail(
                status,
                Reason::ReferenceGone,
                format!("KafkaClusterSet `{set_name}` is gone"),
            ));
        };
        let namespace = backfill.namespace().unwrap_or_default();
        let jobs: Api<Job> = Api::namespaced(self.shared.client.clone(), &namespace);
        // One list of this Backfill's Jobs, not a read per worker.
        let selector = format!("{}={}", objects::BACKFILL_LABEL, backfill.name_any());
        let existing: BTreeMap<String, Job> = jobs
            .list(&ListParams::default().labels(&selector))
            .await?
            .into_iter()
            .map(|job| (job.name_any(), job))
            .collect();
        let mut states = Vec::new();
        // The plan is read only to start a missing worker: its topics must
        // be there, and a secured source's Secrets mounted.
        let mut stored: Option<ReplayPlan> = None;
        if replay.jobs.iter().any(|name| !existing.contains_key(name)) {
            let config_maps: Api<ConfigMap> =
                Api::namespaced(self.shared.client.clone(), &namespace);
            let plan = stored_plan(&config_maps.get(&replay.plan).await?)?;
            if let Err(why) = self
                .extra(&set, &status.clusters)
                .ensure_topics(&plan)
                .await
            {
                let message = format!("creating the topics the workers write: {why}");
                return Ok(Step::wait(
                    status,
                    Reason::TopicsMissing,
                    message,
                    Requeue::After(RECHECK),
                ));
            }
            stored = Some(plan);
        }
        for (index, name) in replay.jobs.iter().enumerate() {
            let job = match existing.get(name).cloned() {
                Some(job) => job,
                None => {
                    let security = stored.as_ref().and_then(|p| p.source_security.as_ref());
                    let desired =
                        objects::worker_job(backfill, index as i32, &self.deps.image, security);
                    match jobs.create(&PostParams::default(), &desired).await {
                        Ok(job) => job,
                        Err(kube::Error::Api(e)) if e.code == 409 => continue,
                        Err(error) => return Err(error.into()),
                    }
                }
            };
            states.push((name.clone(), objects::job_state(&job)));
        }
        // A worker that keeps failing (its Job gave up) may have met a
        // destination it cannot read or trust: the copy starts again too.
        let failed = states.iter().find_map(|(name, state)| match state {
            JobState::Failed(why) => Some(format!("replay Job `{name}` failed: {why}")),
            _ => None,
        });
        let topics: Vec<String> = replay
            .handoff_offsets
            .iter()
            .map(|s| s.topic.clone())
            .collect();
        let extra = self.extra(&set, &status.clusters);
        let committed = extra
            .committed(&objects::progress_group(backfill), &topics)
            .await;
        let bytes = extra
            .committed(&bytes_group(&objects::progress_group(backfill)), &topics)
            .await
            .ok()
            .map(|all| sum(&all))
            // Unreadable for a moment: the last figure stands.
            .or_else(|| status.progress.as_ref().and_then(|p| p.bytes_replayed));
        let mut next = status;
        let replayed = committed.as_ref().map_or(0, sum);
        let started = next.phase_time.clone();
        next.progress = Some(with_bytes(
            progress(replayed, replay.records_total, started.as_ref(), None),
            bytes,
            started.as_ref(),
        ));
        let finished = states.len() == replay.jobs.len()
            && states.iter().all(|(_, s)| *s != JobState::Running);
        // A finished copy is checked before it is used.
        let checked = match (committed, failed.clone()) {
            (Ok(all), Some(why)) if finished => Ok((all, Some((Reason::ReplayFailed, why)))),
            (Ok(all), None) if finished => extra
                .written_by_others(&all, &topics)
                .await
                .map(|foreign| {
                    let flaw = flaw(replayed, replay.records_total, &foreign).map(|(reason, what)| {
                        let total = replay.records_total;
                        let wrong = format!(
                            "the extra clusters hold {replayed} record(s) for a range of {total}: {what}"
                        );
                        (reason, wrong)
                    });
                    (all, flaw)
                }),
            (other, _) => other.map(|all| (all, None)),
        };
        match decide(finished, checked, replay.reruns) {
            Next::GiveUp((reason, wrong)) => {
                let message = format!("{wrong}, after {} fresh copies", replay.reruns);
                Ok(Step::fail(next, reason, message))
            }
            Next::CopyAgain((reason, wrong)) => {
                // Neither a record written twice nor one missing below the
                // last one copied can be mended in place: the copy starts
                // again on emptied topics. The workers have all finished (or
                // their Jobs gave up), so nothing writes them meanwhile.
                if let Err(why) = extra.empty_topics(&topics).await {
                    let message = format!("{wrong}; emptying them to copy again: {why}");
                    return Ok(Step::wait(next, reason, message, Requeue::After(RECHECK)));
                }
                for name in &replay.jobs {
                    gone(jobs.delete(name, &DeleteParams::background()).await)?;
                }
                if let Some(r) = next.replay.as_mut() {
                    r.reruns += 1;
                }
                let message = format!(
                    "{wrong}; their topics were emptied and the workers copy the range again"
                );
                Ok(Step::wait(next, reason, message, Requeue::After(RECHECK)))
            }
            Next::Use(all) => {
                let written = all
                    .iter()
                    .flat_map(|(cluster, topics)| {
                        replay.handoff_offsets.iter().map(move |s| StreamOffsets {
                            cluster: Some(cluster.clone()),
                            stream: s.stream.clone(),
                            topic: s.topic.clone(),
                            offsets: topics
                                .get(&s.topic)
                                .map(|p| p.iter().map(|(k, v)| (k.to_string(), *v)).collect())
                                .unwrap_or_default(),
                        })
                    })
                    .collect();
                if let Some(r) = next.replay.as_mut() {
                    r.written = written;
                }
                next.progress = Some(with_bytes(
                    progress(replayed, replay.records_total, None, Some(replayed)),
                    bytes,
                    started.as_ref(),
                ));
                let message = format!(
                    "replayed {replayed} record(s); starting the backfill job `{}`",
                    derived_name(backfill)
                );
                Ok(Step::advance(next, BackfillPhase::Processing, message))
            }
            Next::Unreadable(why) => Ok(Step::wait(
                next,
                Reason::ProgressUnreadable,
                format!("replay Jobs running; progress unreadable: {why}"),
                Requeue::After(RECHECK),
            )),
            Next::Copying => {
                let running = states
                    .iter()
                    .filter(|(_, s)| *s == JobState::Running)
                    .count();
                let mut message = format!(
                    "{replayed} of {} record(s) replayed; {running} worker(s) running",
                    replay.records_total
                );
                if let Some(why) = failed {
                    message.push_str(&format!(
                        "; {why}, so the range is copied again once the others are done"
                    ));
                }
                Ok(Step::wait(
                    next,
                    Reason::Phase(BackfillPhase::Replaying),
                    message,
                    Requeue::After(RECHECK),
                ))
            }
        }
    }
}

/// Why a copy cannot be used: a condition reason and what is wrong.
type Flaw = (Reason, String);

/// What the replaying phase does once it has read its workers and their copy.
#[derive(Debug, PartialEq, Eq)]
enum Next<T> {
    /// Workers still run.
    Copying,
    /// The workers' progress could not be read.
    Unreadable(String),
    /// The finished copy is flawed: its topics are emptied and it is copied again.
    CopyAgain(Flaw),
    /// Still flawed after every fresh copy allowed: the run fails.
    GiveUp(Flaw),
    /// The finished copy is sound (`T`, what the workers committed): it is processed.
    Use(T),
}

/// Decides from whether every worker `finished`, the `copy` as read (what
/// the workers committed and, once they finished, what is wrong with it;
/// or why it could not be read) and how many fresh copies were made.
fn decide<T>(finished: bool, copy: Result<(T, Option<Flaw>), String>, reruns: i32) -> Next<T> {
    match copy {
        Err(why) => Next::Unreadable(why),
        Ok(_) if !finished => Next::Copying,
        Ok((_, Some(flaw))) if reruns >= MAX_RERUNS => Next::GiveUp(flaw),
        Ok((_, Some(flaw))) => Next::CopyAgain(flaw),
        Ok((all, None)) => Next::Use(all),
    }
}

/// Why a finished copy of `total` records cannot be used, if it cannot: the
/// workers recorded `replayed` records, and `foreign` partitions hold
/// records after theirs. A condition reason and what is wrong.
pub(crate) fn flaw(replayed: i64, total: i64, foreign: &[String]) -> Option<(Reason, String)> {
    if !foreign.is_empty() {
        let shown = foreign.iter().take(3).cloned().collect::<Vec<_>>();
        let what = format!(
            "{} partition(s) hold records after the last one copied, e.g. {}",
            foreign.len(),
            shown.join(", ")
        );
        Some((Reason::ReplayDuplicated, what))
    } else if replayed > total {
        let what = "records were written more than once".to_string();
        Some((Reason::ReplayDuplicated, what))
    } else if replayed < total {
        let what = "records are missing (a broker lost them)".to_string();
        Some((Reason::ReplayIncomplete, what))
    } else {
        None
    }
}

pub(crate) fn stored_plan(config_map: &ConfigMap) -> Result<ReplayPlan, Error> {
    let text = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(objects::PLAN_KEY))
        .ok_or(Error::MissingObjectField("data.plan.json"))?;
    Ok(serde_json::from_str(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A case: its name, whether every worker finished, the copy as read,
    /// the fresh copies made so far, and what follows.
    type Case = (
        &'static str,
        bool,
        Result<((), Option<Flaw>), String>,
        i32,
        Next<()>,
    );

    #[test]
    fn what_follows_a_read_of_the_copy() {
        let flawed = || (Reason::ReplayDuplicated, "twice".to_string());
        let cases: [Case; 7] = [
            ("workers running", false, Ok(((), None)), 0, Next::Copying),
            (
                "workers running, a flaw is not judged yet",
                false,
                Ok(((), Some(flawed()))),
                0,
                Next::Copying,
            ),
            (
                "unreadable while running",
                false,
                Err("no broker".into()),
                0,
                Next::Unreadable("no broker".into()),
            ),
            (
                "unreadable once finished",
                true,
                Err("no broker".into()),
                0,
                Next::Unreadable("no broker".into()),
            ),
            ("finished and sound", true, Ok(((), None)), 2, Next::Use(())),
            (
                "finished and flawed",
                true,
                Ok(((), Some(flawed()))),
                MAX_RERUNS - 1,
                Next::CopyAgain(flawed()),
            ),
            (
                "flawed after every fresh copy",
                true,
                Ok(((), Some(flawed()))),
                MAX_RERUNS,
                Next::GiveUp(flawed()),
            ),
        ];
        for (case, finished, copy, reruns, expected) in cases {
            assert_eq!(decide(finished, copy, reruns), expected, "{case}");
        }
    }

    #[test]
    fn a_copy_is_used_only_when_it_holds_exactly_the_range_and_nothing_else() {
        assert_eq!(flaw(1000, 1000, &[]), None);
        let (reason, what) = flaw(999, 1000, &[]).expect("missing");
        assert_eq!(reason, Reason::ReplayIncomplete);
        assert!(what.contains("missing"), "{what}");
        assert_eq!(
            flaw(1001, 1000, &[]).map(|f| f.0),
            Some(Reason::ReplayDuplicated)
        );
        // The workers' count can be right while another writer added records.
        let foreign: Vec<String> = (0..5).map(|p| format!("b-0/orders/{p}")).collect();
        let (reason, what) = flaw(1000, 1000, &foreign).expect("foreign");
        assert_eq!(reason, Reason::ReplayDuplicated);
        assert!(what.starts_with("5 partition(s)"), "{what}");
        assert!(
            what.contains("b-0/orders/2") && !what.contains("b-0/orders/3"),
            "{what}"
        );
    }
}
