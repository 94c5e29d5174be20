//! The backfill job: a Pipeline derived from the live one, reading the
//! replayed copy through the Backfill's own discovery view; and the
//! request that hands the live pipeline over to where the replay ended.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::objects;
use crate::api::backfill::Backfill;
use crate::api::pipeline::{JobState as PipelineState, Pipeline, PipelineSpec};
use crate::controller::common::snapshots;
use crate::discovery::{config_map_name, DiscoveryDocument, DOCUMENT_KEY};
use crate::error::Error;

/// Name of the Pipeline a Backfill derives from the live one.
pub fn derived_name(backfill: &Backfill) -> String {
    derived_name_of(&backfill.name_any())
}

/// The name of Backfill `name`'s job Pipeline.
pub fn derived_name_of(name: &str) -> String {
    format!("{name}-job")
}

pub(crate) fn view_name(backfill: &Backfill) -> String {
    format!("{}-discovery", backfill.name_any())
}

pub(crate) async fn live_document(
    api: &Api<ConfigMap>,
    set: &str,
) -> Result<Option<DiscoveryDocument>, Error> {
    let Some(map) = api.get_opt(&config_map_name(set)).await? else {
        return Ok(None);
    };
    Ok(map
        .data
        .as_ref()
        .and_then(|d| d.get(DOCUMENT_KEY))
        .and_then(|text| serde_json::from_str(text).ok()))
}

/// The backfill job: the live Pipeline's spec, running, with the backfill's
/// parallelism, its own consumer groups and the backfill's discovery view,
/// owned by the Backfill.
pub fn derive(backfill: &Backfill, live: &Pipeline) -> Pipeline {
    let mut spec: PipelineSpec = live.spec.clone();
    spec.state = PipelineState::Running;
    spec.restore_from = None;
    spec.savepoints = None;
    spec.slo = None;
    spec.discovery = Some(view_name(backfill));
    for input in &mut spec.inputs {
        let group = input
            .consumer_group
            .clone()
            .unwrap_or_else(|| format!("{}-{}", live.name_any(), input.stream));
        input.consumer_group = Some(format!("{group}-{}", backfill.name_any()));
    }
    if let Some(consumer) = spec.engine.consumer.as_mut() {
        consumer.replicas = backfill.spec.capacity.parallelism;
    }
    let mut pipeline = Pipeline::new(&derived_name(backfill), spec);
    pipeline.metadata = objects::owned_meta(backfill, derived_name(backfill));
    pipeline
}

/// Asks the live pipeline to restart from the hand-off Savepoint `savepoint`
/// (its annotation), or withdraws the request (`None`).
pub(crate) async fn request_handoff(
    pipelines: &Api<Pipeline>,
    live: &Pipeline,
    savepoint: Option<&str>,
) -> Result<(), Error> {
    let patch = serde_json::json!({"metadata": {"annotations": {snapshots::HANDOFF_ANNOTATION: savepoint}}});
    pipelines
        .patch(
            &live.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?;
    Ok(())
}
