//! Processing: a Pipeline derived from the live one reads the copy through
//! the Backfill's own discovery view until it has consumed everything
//! the workers wrote.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, ResourceExt};

use super::super::derived::{derive, live_document, view_name};
use super::super::objects;
use super::super::progress::progress;
use super::super::reason::Reason;
use super::super::run::{RunBackfill, Step, RECHECK};
use super::super::view;
use crate::api::backfill::{Backfill, BackfillPhase, BackfillStatus, Completion, StreamOffsets};
use crate::api::pipeline::Pipeline;
use crate::controller::apply_if_changed;
use crate::controller::status::Requeue;
use crate::discovery::DOCUMENT_KEY;
use crate::error::Error;

impl RunBackfill<'_> {
    pub(crate) async fn processing(
        &self,
        backfill: &Backfill,
        status: BackfillStatus,
    ) -> Result<Step, Error> {
        let set_name = status.cluster_set.clone().unwrap_or_default();
        let (live, set) = match self.references(backfill, &set_name) {
            Ok(found) => found,
            Err(message) => return Ok(Step::fail(status, Reason::ReferenceGone, message)),
        };
        let written = status
            .replay
            .as_ref()
            .map(|r| r.written.clone())
            .unwrap_or_default();
        let namespace = backfill.namespace().unwrap_or_default();
        let config_maps: Api<ConfigMap> = Api::namespaced(self.shared.client.clone(), &namespace);
        let Some(document) = live_document(&config_maps, &set_name).await? else {
            return Ok(Step::wait(
                status,
                Reason::DiscoveryMissing,
                format!("KafkaClusterSet `{set_name}` has not published its discovery document"),
                Requeue::After(RECHECK),
            ));
        };
        let inputs: Vec<String> = live.spec.inputs.iter().map(|i| i.stream.clone()).collect();
        let shown = view::view(&document, &inputs, &written);
        let view_map = ConfigMap {
            metadata: objects::owned_meta(backfill, view_name(backfill)),
            data: Some(BTreeMap::from([(
                DOCUMENT_KEY.to_string(),
                shown.to_json(),
            )])),
            ..ConfigMap::default()
        };
        apply_if_changed(&config_maps, view_map).await?;
        let derived = derive(backfill, &live);
        let pipelines: Api<Pipeline> = Api::namespaced(self.shared.client.clone(), &namespace);
        apply_if_changed(&pipelines, derived.clone()).await?;
        let topics: Vec<String> = written
            .iter()
            .map(|w| w.topic.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut committed = Committed::new();
        for input in &derived.spec.inputs {
            let group = input.consumer_group.clone().unwrap_or_default();
            let all = match self
                .extra(&set, &status.clusters)
                .committed(&group, &topics)
                .await
            {
                Ok(all) => all,
                Err(why) => {
                    return Ok(Step::wait(
                        status,
                        Reason::ProgressUnreadable,
                        format!("backfill job running; progress unreadable: {why}"),
                        Requeue::After(RECHECK),
                    ))
                }
            };
            let topic = written
                .iter()
                .find(|w| w.stream == input.stream)
                .map(|w| w.topic.as_str());
            let on: OnClusters = all
                .into_iter()
                .map(|(cluster, t)| {
                    let offsets = topic.and_then(|topic| t.get(topic));
                    (cluster, offsets.cloned().unwrap_or_default())
                })
                .collect();
            committed.insert(input.stream.clone(), on);
        }
        let read = decide(&written, &committed);
        let (consumed, total) = (read.consumed, read.total);
        let mut next = status;
        // The replay's figures stay; the job's lag, rate and ETA are added.
        let job = progress(consumed, total, next.phase_time.as_ref(), None);
        let mut shown = next.progress.clone().unwrap_or_default();
        shown.lag = Some((total - consumed).max(0));
        shown.rate = job.rate;
        shown.eta = job.eta;
        next.progress = Some(shown);
        if read.done {
            let message = format!("the backfill job consumed all {total} replayed record(s)");
            let then = match backfill.spec.completion {
                Completion::Handoff => BackfillPhase::HandingOff,
                Completion::OutputOnly => BackfillPhase::TearingDown,
            };
            return Ok(Step::advance(next, then, message));
        }
        Ok(Step::wait(
            next,
            Reason::Phase(BackfillPhase::Processing),
            format!(
                "backfill job `{}` has consumed {consumed} of {total} record(s)",
                derived.name_any()
            ),
            Requeue::After(RECHECK),
        ))
    }
}

/// Committed offsets on each extra cluster: cluster -> partition -> offset.
type OnClusters = BTreeMap<String, BTreeMap<i32, i64>>;
/// Per input stream, the committed offsets on the topic written for it.
type Committed = BTreeMap<String, OnClusters>;

/// How far the backfill job has read the copy.
#[derive(Debug, PartialEq)]
struct Read {
    /// Records it has committed past, on every extra cluster.
    consumed: i64,
    /// Records the workers wrote.
    total: i64,
    /// Whether it has committed past everything written for its streams.
    done: bool,
}

/// What the job's committed offsets (per input stream: cluster ->
/// partition -> offset, on the topic written for that stream) say of the
/// records the workers `written`.
fn decide(written: &[StreamOffsets], committed: &BTreeMap<String, OnClusters>) -> Read {
    let done = committed.iter().all(|(stream, on)| {
        let mine: Vec<StreamOffsets> = written
            .iter()
            .filter(|w| &w.stream == stream)
            .cloned()
            .collect();
        view::consumed(&mine, on)
    });
    Read {
        consumed: committed
            .values()
            .flat_map(|on| on.values().flat_map(|p| p.values()))
            .sum(),
        total: written.iter().flat_map(|w| w.offsets.values()).sum(),
        done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(stream: &str, cluster: &str, ends: &[(&str, i64)]) -> StreamOffsets {
        StreamOffsets {
            cluster: Some(cluster.into()),
            stream: stream.into(),
            topic: format!("{stream}-copy"),
            offsets: ends.iter().map(|(p, end)| (p.to_string(), *end)).collect(),
        }
    }

    fn at(stream: &str, cluster: &str, offsets: &[(i32, i64)]) -> (String, OnClusters) {
        (
            stream.into(),
            BTreeMap::from([(cluster.into(), offsets.iter().copied().collect())]),
        )
    }

    #[test]
    fn the_job_is_done_once_it_committed_past_every_written_record_of_its_streams() {
        let copy = vec![
            written("orders", "extra-0", &[("0", 10), ("1", 5)]),
            written("payments", "extra-1", &[("0", 4), ("1", 0)]),
        ];
        let cases: Vec<(&str, Committed, Read)> = vec![
            (
                "nothing committed yet",
                Committed::from([at("orders", "extra-0", &[]), at("payments", "extra-1", &[])]),
                Read {
                    consumed: 0,
                    total: 19,
                    done: false,
                },
            ),
            (
                "one stream read, the other behind",
                Committed::from([
                    at("orders", "extra-0", &[(0, 10), (1, 5)]),
                    at("payments", "extra-1", &[(0, 3)]),
                ]),
                Read {
                    consumed: 18,
                    total: 19,
                    done: false,
                },
            ),
            (
                "every record read; an empty partition needs no commit",
                Committed::from([
                    at("orders", "extra-0", &[(0, 10), (1, 5)]),
                    at("payments", "extra-1", &[(0, 4)]),
                ]),
                Read {
                    consumed: 19,
                    total: 19,
                    done: true,
                },
            ),
            (
                "offsets on another cluster than the one written do not count as read",
                Committed::from([
                    at("orders", "extra-1", &[(0, 10), (1, 5)]),
                    at("payments", "extra-1", &[(0, 4)]),
                ]),
                Read {
                    consumed: 19,
                    total: 19,
                    done: false,
                },
            ),
            (
                "a stream nothing was written for is read at once",
                Committed::from([
                    at("orders", "extra-0", &[(0, 10), (1, 5)]),
                    at("payments", "extra-1", &[(0, 4)]),
                    at("refunds", "extra-0", &[]),
                ]),
                Read {
                    consumed: 19,
                    total: 19,
                    done: true,
                },
            ),
        ];
        for (case, committed, expected) in cases {
            assert_eq!(decide(&copy, &committed), expected, "{case}");
        }
    }
}
