//! `disposeOnDelete`: a finalizer keeps a Savepoint until Flink has deleted
//! its files (`/savepoint-disposal`).

use std::time::{Duration, Instant};

use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};

use crate::api::pipeline::Pipeline;
use crate::api::savepoint::{Savepoint, SavepointPhase};
use crate::controller::{finalizer, lookup};
use crate::error::Error;
use crate::flink::{FlinkApi, Operation};

/// The finalizer of Savepoints whose files go with them.
pub const FINALIZER: &str = "kappa.dev/dispose-savepoint";
/// How long one reconcile waits for Flink to finish a disposal.
const DISPOSAL_WAIT: Duration = Duration::from_secs(30);

/// Adds the finalizer to a Savepoint that asks for it, or disposes the files
/// of one being deleted and lets it go. `Some` when the reconcile is done.
pub async fn on_delete(
    api: &Api<Savepoint>,
    flink_api: &dyn FlinkApi,
    pipelines: &Store<DeserializeGuard<Pipeline>>,
    savepoint: &Savepoint,
) -> Result<Option<Action>, Error> {
    let held = finalizer::held(savepoint, FINALIZER);
    if savepoint.metadata.deletion_timestamp.is_none() {
        if savepoint.spec.dispose_on_delete && !held {
            finalizer::set(api, savepoint, FINALIZER, true).await?;
        }
        return Ok(None);
    }
    if !held {
        return Ok(Some(Action::await_change()));
    }
    if let Some(action) = finalizer::skip_cleanup(api, savepoint, FINALIZER).await? {
        return Ok(Some(action));
    }
    let status = savepoint.status.as_ref();
    let location = status
        .filter(|s| s.phase == Some(SavepointPhase::Completed))
        .and_then(|s| s.location.clone());
    let found = lookup(pipelines, savepoint, &savepoint.spec.pipeline_ref);
    let url = found
        .as_deref()
        .and_then(|guard| guard.0.as_ref().ok())
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.job.as_ref())
        .and_then(|j| j.rest_url.clone());
    match (location, url) {
        (Some(location), Some(url)) => {
            dispose(flink_api, &url, &location)
                .await
                .map_err(Error::Dispose)?;
            tracing::info!(savepoint = %savepoint.name_any(), %location, "savepoint files disposed");
        }
        (Some(location), None) => tracing::warn!(
            savepoint = %savepoint.name_any(), %location,
            "no Flink cluster of its pipeline to dispose the savepoint through; its files stay"
        ),
        (None, _) => {}
    }
    finalizer::set(api, savepoint, FINALIZER, false).await?;
    Ok(Some(Action::await_change()))
}

/// Has Flink delete the savepoint at `location`, waiting a while for it.
async fn dispose(flink_api: &dyn FlinkApi, url: &str, location: &str) -> Result<(), String> {
    let trigger = flink_api
        .dispose_savepoint(url, location)
        .await
        .map_err(|e| format!("disposing {location}: {e}"))?;
    let started = Instant::now();
    while started.elapsed() < DISPOSAL_WAIT {
        match flink_api.disposal_status(url, &trigger).await {
            Ok(Operation::Completed(_)) => return Ok(()),
            Ok(Operation::Failed(words)) => return Err(format!("disposing {location}: {words}")),
            Ok(Operation::InProgress) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(error) => return Err(format!("disposing {location}: {error}")),
        }
    }
    Err(format!(
        "disposing {location} took longer than {DISPOSAL_WAIT:?}"
    ))
}
