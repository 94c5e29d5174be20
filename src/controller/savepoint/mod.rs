//! What happens to a Savepoint: its spec and pipeline are validated and the
//! verdict recorded; a change to its Pipeline re-validates it. A valid Flink
//! Savepoint is taken on its pipeline's running job; an offsets Savepoint
//! records its consumer pipeline's committed offsets.

pub mod dispose;
pub mod flink;
pub mod lifecycle;
pub mod offsets;
pub mod reason;
pub mod validate;

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::runtime::Controller;
use kube::{Api, ResourceExt};

use super::pipeline::referenced;
use super::reconcile::Act;
use super::status::Outcome;
use super::watches::Watches;
use super::{drive, finalizer, lookup, reconcile, referrers, Ctx, Kind, Shared};
use crate::api::common::CommonStatus;
use crate::api::pipeline::Pipeline;
use crate::api::savepoint::{Savepoint, SavepointType};
use crate::error::Error;
use crate::flink::FlinkApi;
use crate::kafka::KafkaAdmin;
use crate::shutdown::Shutdown;

impl Kind for Savepoint {
    const CONTROLLER: &'static str = "savepoint";
    fn common_status(&self) -> Option<&CommonStatus> {
        self.status.as_ref().map(|s| &s.common)
    }
}

/// The pipelines Savepoints belong to, and the engine that takes them.
pub struct Stores {
    pipelines: Store<DeserializeGuard<Pipeline>>,
    flink: Arc<dyn FlinkApi>,
    admin: Arc<dyn KafkaAdmin>,
}

/// Acts on one valid Savepoint.
struct TakeSavepoint<'c> {
    shared: &'c Shared,
    stores: &'c Stores,
}

impl Act<Savepoint> for TakeSavepoint<'_> {
    fn act<'a>(self, savepoint: &'a Savepoint) -> BoxFuture<'a, Result<Outcome, Error>>
    where
        Self: 'a,
    {
        async move {
            let found = lookup(
                &self.stores.pipelines,
                savepoint,
                &savepoint.spec.pipeline_ref,
            );
            let pipeline = found.as_deref().and_then(|guard| guard.0.as_ref().ok());
            match savepoint.spec.type_ {
                SavepointType::Flink => {
                    let metrics = &self.shared.metrics;
                    flink::take(&*self.stores.flink, metrics, savepoint, pipeline).await
                }
                SavepointType::Offsets => {
                    let (client, admin) = (&self.shared.client, &*self.stores.admin);
                    offsets::take(client, admin, savepoint, pipeline).await
                }
            }
        }
        .boxed()
    }
}

async fn reconcile(
    savepoint: Arc<DeserializeGuard<Savepoint>>,
    ctx: Arc<Ctx<Stores>>,
) -> Result<Action, Error> {
    if let Ok(snapshot) = &savepoint.0 {
        let namespace = snapshot
            .namespace()
            .ok_or(Error::MissingObjectField("metadata.namespace"))?;
        let api: Api<Savepoint> = Api::namespaced(ctx.shared.client.clone(), &namespace);
        let stores = &ctx.stores;
        let step = dispose::on_delete(&api, &*stores.flink, &stores.pipelines, snapshot).await;
        let step = finalizer::reported(&ctx.shared, &api, snapshot, dispose::FINALIZER, step);
        if let Some(action) = step.await? {
            return Ok(action);
        }
    }
    reconcile::reconcile(
        &ctx.shared,
        &savepoint,
        |s| {
            let pipeline = lookup(&ctx.stores.pipelines, s, &s.spec.pipeline_ref);
            validate::validate(&s.spec, &referenced(&pipeline))
        },
        TakeSavepoint {
            shared: &ctx.shared,
            stores: &ctx.stores,
        },
    )
    .await
}

/// Runs the Savepoint controller until `shutdown` completes.
pub fn run(
    shared: Arc<Shared>,
    watches: &mut Watches,
    shutdown: Shutdown,
) -> impl Future<Output = ()> {
    let (reader, stream) = watches.savepoints.subscribe(Savepoint::CONTROLLER);
    let (pipelines, pipelines_stream) = watches.pipelines.subscribe(Savepoint::CONTROLLER);
    let by_pipeline = reader.clone();
    let controller = Controller::for_shared_stream(stream, reader).watches_shared_stream(
        pipelines_stream,
        move |pipeline| {
            referrers(&by_pipeline, &*pipeline, |s: &Savepoint, name| {
                s.spec.pipeline_ref == name
            })
        },
    );
    let flink = shared.flink.clone();
    let admin = shared.kafka.clone();
    let ctx = Arc::new(Ctx {
        shared,
        stores: Stores {
            pipelines,
            flink,
            admin,
        },
    });
    drive(controller, ctx, reconcile, shutdown)
}
