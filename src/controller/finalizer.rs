//! Adding and removing this operator's finalizers, for objects whose
//! deletion must clean up something outside Kubernetes.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::Kind;
use crate::error::Error;

/// Whether `object` carries `finalizer`.
pub fn held<K: Resource>(object: &K, finalizer: &str) -> bool {
    object.finalizers().iter().any(|f| f == finalizer)
}

/// Adds `finalizer` to `object` when `hold`, else removes it. The patch
/// carries the resource version, so a concurrent change is not overwritten.
pub async fn set<K: Kind>(
    api: &Api<K>,
    object: &K,
    finalizer: &str,
    hold: bool,
) -> Result<(), Error> {
    let mut finalizers: Vec<String> = object
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    if hold {
        finalizers.push(finalizer.to_string());
    }
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": object.resource_version(),
    }});
    api.patch(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}
