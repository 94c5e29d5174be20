//! What happens to a Backfill: its spec and references are validated and the
//! verdict recorded; a change to its Pipeline or start Savepoint re-validates it.

pub mod validate;

use std::future::Future;
use std::sync::Arc;

use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::runtime::Controller;

use super::pipeline::referenced;
use super::{drive, lookup, referrers, verdict, watch, Ctx, Kind, Shared};
use crate::api::backfill::Backfill;
use crate::api::common::CommonStatus;
use crate::api::pipeline::Pipeline;
use crate::api::savepoint::Savepoint;
use crate::error::Error;
use validate::BackfillRefs;

impl Kind for Backfill {
    const CONTROLLER: &'static str = "backfill";
    fn common_status(&self) -> Option<&CommonStatus> {
        self.status.as_ref().map(|s| &s.common)
    }
}

/// Caches of the kinds a Backfill references.
pub struct Stores {
    pipelines: Store<DeserializeGuard<Pipeline>>,
    savepoints: Store<DeserializeGuard<Savepoint>>,
}

async fn reconcile(
    backfill: Arc<DeserializeGuard<Backfill>>,
    ctx: Arc<Ctx<Stores>>,
) -> Result<Action, Error> {
    verdict::reconcile(
        &ctx.shared,
        &backfill,
        |b| {
            let pipeline = lookup(&ctx.stores.pipelines, b, &b.spec.pipeline_ref);
            let savepoint = b
                .spec
                .start_state
                .savepoint
                .as_ref()
                .map(|name| lookup(&ctx.stores.savepoints, b, name));
            let refs = BackfillRefs {
                pipeline: referenced(&pipeline),
                start_savepoint: savepoint.as_ref().map(referenced),
            };
            validate::validate(&b.spec, &refs)
        },
        verdict::ValidateOnly,
    )
    .await
}

/// Runs the Backfill controller until `shutdown` completes.
pub async fn run(shared: Arc<Shared>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let (reader, stream) = watch::<Backfill>(&shared);
    let (pipelines, pipelines_stream) = watch::<Pipeline>(&shared);
    let (savepoints, savepoints_stream) = watch::<Savepoint>(&shared);
    let by_pipeline = reader.clone();
    let by_savepoint = reader.clone();
    let controller = Controller::for_stream(stream, reader)
        .watches_stream(pipelines_stream, move |pipeline| {
            referrers(&by_pipeline, &pipeline, |b: &Backfill, name| {
                b.spec.pipeline_ref == name
            })
        })
        .watches_stream(savepoints_stream, move |savepoint| {
            referrers(&by_savepoint, &savepoint, |b: &Backfill, name| {
                b.spec.start_state.savepoint.as_deref() == Some(name)
            })
        });
    let ctx = Arc::new(Ctx {
        shared,
        stores: Stores {
            pipelines,
            savepoints,
        },
    });
    drive(controller, ctx, reconcile, shutdown).await;
}
