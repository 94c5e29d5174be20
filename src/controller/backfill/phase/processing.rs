//! Processing: a Pipeline derived from the live one reads the copy through
//! the Backfill's own discovery view until it has consumed everything
//! the workers wrote.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, ResourceExt};

use super::super::derived::{derive, live_document, view_name};
use super::super::objects;
use super::super::progress::progress;
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
            Err(message) => return Ok(Step::fail(status, "ReferenceGone", message)),
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
                "DiscoveryMissing",
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
        let mut done = true;
        let mut consumed = 0;
        for input in &derived.spec.inputs {
            let group = input.consumer_group.clone().unwrap_or_default();
            match self
                .committed(&set, &status.clusters, &group, &topics)
                .await
            {
                Ok(all) => {
                    let topic = written
                        .iter()
                        .find(|w| w.stream == input.stream)
                        .map(|w| w.topic.as_str());
                    let on: BTreeMap<String, BTreeMap<i32, i64>> = all
                        .into_iter()
                        .map(|(cluster, t)| {
                            let offsets = topic.and_then(|topic| t.get(topic));
                            (cluster, offsets.cloned().unwrap_or_default())
                        })
                        .collect();
                    consumed += on.values().flat_map(|p| p.values()).sum::<i64>();
                    let mine: Vec<StreamOffsets> = written
                        .iter()
                        .filter(|w| w.stream == input.stream)
                        .cloned()
                        .collect();
                    done &= view::consumed(&mine, &on);
                }
                Err(why) => {
                    return Ok(Step::wait(
                        status,
                        "ProgressUnreadable",
                        format!("backfill job running; progress unreadable: {why}"),
                        Requeue::After(RECHECK),
                    ))
                }
            }
        }
        let total: i64 = written.iter().flat_map(|w| w.offsets.values()).sum();
        let mut next = status;
        // The replay's figures stay; the job's lag, rate and ETA are added.
        let job = progress(consumed, total, next.phase_time.as_ref(), None);
        let mut shown = next.progress.clone().unwrap_or_default();
        shown.lag = Some((total - consumed).max(0));
        shown.rate = job.rate;
        shown.eta = job.eta;
        next.progress = Some(shown);
        if done {
            let message = format!("the backfill job consumed all {total} replayed record(s)");
            let then = match backfill.spec.completion {
                Completion::Handoff => BackfillPhase::HandingOff,
                Completion::OutputOnly => BackfillPhase::TearingDown,
            };
            return Ok(Step::advance(next, then, message));
        }
        Ok(Step::wait(
            next,
            "Processing",
            format!(
                "backfill job `{}` has consumed {consumed} of {total} record(s)",
                derived.name_any()
            ),
            Requeue::After(RECHECK),
        ))
    }
}
