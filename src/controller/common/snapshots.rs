//! The Savepoints the operator registers for a pipeline (rather than a user
//! asking for them): the labels that say why each was taken, the one a job
//! was stopped with, and the offsets a Backfill hands off at.

use kube::api::PostParams;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};

use super::pipelines::owner;
use crate::api::pipeline::Pipeline;
use crate::api::savepoint::{PartitionOffset, Savepoint, SavepointSpec, SavepointType};
use crate::controller::lookup;
use crate::error::Error;

/// Label naming the pipeline that took a periodic savepoint.
pub const PERIODIC_LABEL: &str = "kappa.dev/periodic-savepoint-of";
/// Label of a Savepoint an upgrade or suspension stopped the job with.
pub const STOP_LABEL: &str = "kappa.dev/stop-savepoint-of";
/// Label of a hand-off Savepoint: the pipeline a Backfill handed off to.
pub const HANDOFF_LABEL: &str = "kappa.dev/handoff-savepoint-of";
/// Annotation by which a Backfill asks a consumer pipeline to restart from
/// a hand-off Savepoint (the operator writes it; a spec is the user's).
pub const HANDOFF_ANNOTATION: &str = "kappa.dev/handoff-savepoint";

/// Creates Savepoint `name` of `pipeline`, owned by it and labelled
/// `label`; whether it was created (rather than already there).
pub async fn create_owned(
    api: &Api<Savepoint>,
    pipeline: &Pipeline,
    name: &str,
    label: &str,
    spec: SavepointSpec,
) -> Result<bool, Error> {
    let mut savepoint = Savepoint::new(name, spec);
    savepoint
        .labels_mut()
        .insert(label.to_string(), pipeline.name_any());
    savepoint.metadata.owner_references = Some(vec![owner(pipeline)?]);
    match api.create(&PostParams::default(), &savepoint).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Records the savepoint an upgrade or a suspension stopped job
/// `deployment` with as a Savepoint resource `<pipeline>-stop-<deployment>`
/// (owned by the pipeline, its files kept when it is deleted: a later
/// job may have been restored from them).
pub async fn record_stop(
    client: &Client,
    savepoints: &Store<DeserializeGuard<Savepoint>>,
    pipeline: &Pipeline,
    deployment: i64,
    location: &str,
) -> Result<(), Error> {
    let name = format!("{}-stop-{deployment}", pipeline.name_any());
    // A suspended pipeline passes here on every reconcile: create it once.
    if lookup(savepoints, pipeline, &name).is_some() {
        return Ok(());
    }
    let spec = SavepointSpec {
        path: Some(location.to_string()),
        ..registered(pipeline, SavepointType::Flink)
    };
    if create_owned(
        &savepoints_api(client, pipeline)?,
        pipeline,
        &name,
        STOP_LABEL,
        spec,
    )
    .await?
    {
        tracing::info!(savepoint = %name, %location, "the stopping savepoint is recorded");
    }
    Ok(())
}

/// Records where a consumer pipeline continues after a Backfill's hand-off
/// as an offsets Savepoint `name` registering `offsets` (owned by the
/// pipeline: the restart it is for goes on if the Backfill is deleted).
pub async fn record_handoff(
    client: &Client,
    pipeline: &Pipeline,
    name: &str,
    offsets: Vec<PartitionOffset>,
) -> Result<(), Error> {
    let spec = SavepointSpec {
        offsets,
        ..registered(pipeline, SavepointType::Offsets)
    };
    if create_owned(
        &savepoints_api(client, pipeline)?,
        pipeline,
        name,
        HANDOFF_LABEL,
        spec,
    )
    .await?
    {
        tracing::info!(savepoint = %name, "the hand-off offsets are recorded");
    }
    Ok(())
}

/// The Savepoints of `pipeline`'s namespace.
pub fn savepoints_api(client: &Client, pipeline: &Pipeline) -> Result<Api<Savepoint>, Error> {
    let namespace = pipeline
        .namespace()
        .ok_or(Error::MissingObjectField("metadata.namespace"))?;
    Ok(Api::namespaced(client.clone(), &namespace))
}

/// The spec of a Savepoint of `pipeline` that registers a snapshot taken
/// elsewhere (its files or offsets are kept when it is deleted).
fn registered(pipeline: &Pipeline, type_: SavepointType) -> SavepointSpec {
    SavepointSpec {
        pipeline_ref: pipeline.name_any(),
        type_,
        target_directory: None,
        path: None,
        offsets: Vec::new(),
        dispose_on_delete: false,
        backoff_limit: 0,
    }
}
