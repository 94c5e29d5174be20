//! Adding and removing this operator's finalizers, for objects whose
//! deletion must clean up something outside Kubernetes; and the way out
//! when that clean-up cannot succeed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::events::{truncate, EVENT_NOTE_LIMIT};
use super::reconcile::FIELD_MANAGER;
use super::{Kind, Shared};
use crate::conditions::{self, ConditionStatus, STALLED};
use crate::error::Error;

/// The annotation that lets an object being deleted go without the
/// clean-up its finalizer waits for, when that clean-up cannot succeed (a
/// job to cancel on a Flink cluster that is gone):
/// `kubectl annotate KIND NAME kappa.dev/skip-cleanup=true`.
pub const SKIP_CLEANUP_ANNOTATION: &str = "kappa.dev/skip-cleanup";

/// The Stalled reason of an object whose deletion waits for a clean-up
/// that fails.
const CLEANUP_FAILING: &str = "CleanupFailing";

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

/// For an object being deleted whose user asked to skip the clean-up
/// ([`SKIP_CLEANUP_ANNOTATION`]): removes `finalizer` without it and says
/// so. `None` when the object does not ask.
pub async fn skip_cleanup<K: Kind>(
    api: &Api<K>,
    object: &K,
    finalizer: &str,
) -> Result<Option<Action>, Error> {
    let asked = object
        .annotations()
        .get(SKIP_CLEANUP_ANNOTATION)
        .is_some_and(|v| v == "true");
    if !asked {
        return Ok(None);
    }
    tracing::warn!(
        name = object.name_any(),
        finalizer,
        "deleted without its clean-up, as its {SKIP_CLEANUP_ANNOTATION} annotation asks"
    );
    set(api, object, finalizer, false).await?;
    Ok(Some(Action::await_change()))
}

/// Passes on what the deletion step `step` of `object` came to; when it
/// failed on an object being deleted, first records `Stalled=True`
/// (CleanupFailing) with the error and how to skip the clean-up, and
/// publishes a Warning Event, once per failure message.
pub async fn reported<K: Kind>(
    shared: &Shared,
    api: &Api<K>,
    object: &K,
    finalizer: &str,
    step: Result<Option<Action>, Error>,
) -> Result<Option<Action>, Error> {
    let Err(error) = &step else {
        return step;
    };
    if object.meta().deletion_timestamp.is_none() {
        return step;
    }
    let message = format!(
        "deleting waits for the clean-up of finalizer {finalizer}, which fails and is retried: {error}; to delete without it: kubectl annotate {} {} {SKIP_CLEANUP_ANNOTATION}=true",
        K::kind(&()).to_lowercase(),
        object.name_any()
    );
    let mut conditions = object
        .common_status()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let known = conditions::find(&conditions, STALLED)
        .is_some_and(|c| c.reason == CLEANUP_FAILING && c.message == message);
    if known {
        return step;
    }
    conditions::upsert(
        &mut conditions,
        conditions::condition(
            STALLED,
            ConditionStatus::True,
            CLEANUP_FAILING,
            message.clone(),
            object.meta().generation,
            Time(Timestamp::now()),
        ),
    );
    let patch = json!({"status": {"conditions": conditions}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    if let Err(unwritten) = api
        .patch_status(&object.name_any(), &params, &Patch::Merge(&patch))
        .await
    {
        tracing::debug!(error = %unwritten, "the failing clean-up could not be recorded in status");
    }
    let event = Event {
        type_: EventType::Warning,
        reason: CLEANUP_FAILING.to_string(),
        note: Some(truncate(message, EVENT_NOTE_LIMIT)),
        action: "Delete".to_string(),
        secondary: None,
    };
    if let Err(unpublished) = shared.events.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(name = object.name_any(), error = %unpublished, "could not publish an Event");
    }
    step
}
