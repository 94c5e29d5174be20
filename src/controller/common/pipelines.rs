//! What names and finds a pipeline's objects, for every kind that touches
//! them: the label on its workloads, its consumer groups, the longest name
//! a consumer pipeline may have, its pods and the owner reference of what it
//! owns.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ListParams;
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::pipeline::{Pipeline, PipelineSpec};
use crate::error::Error;

/// Label naming the pipeline a StatefulSet or Deployment runs.
pub const PIPELINE_LABEL: &str = "kappa.dev/pipeline";
/// The longest name of a consumer pipeline: its StatefulSet labels each
/// revision `<name>-<10 characters>`, and a label value has at most 63.
pub const MAX_CONSUMER_NAME: usize = 63 - 11;

/// The consumer group of each input, `<pipeline>-<stream>` unless set.
pub fn groups(name: &str, spec: &PipelineSpec) -> Vec<(String, String)> {
    spec.inputs
        .iter()
        .map(|input| {
            let group = input
                .consumer_group
                .clone()
                .unwrap_or_else(|| format!("{name}-{}", input.stream));
            (input.stream.clone(), group)
        })
        .collect()
}

/// The pods of Pipeline `name` in `namespace` that still exist, terminating
/// ones included, also once the Pipeline itself is gone.
pub async fn pods_of(client: &Client, namespace: &str, name: &str) -> Result<Vec<Pod>, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{PIPELINE_LABEL}={name}");
    Ok(pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

/// The owner reference that makes `pipeline` the controller of an object.
pub fn owner(pipeline: &Pipeline) -> Result<OwnerReference, Error> {
    Ok(OwnerReference {
        api_version: Pipeline::api_version(&()).into_owned(),
        kind: Pipeline::kind(&()).into_owned(),
        name: pipeline.name_any(),
        uid: pipeline
            .uid()
            .ok_or(Error::MissingObjectField("metadata.uid"))?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}
