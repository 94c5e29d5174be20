//! What happens to a Savepoint: its spec and pipeline are validated and the
//! verdict recorded; a change to its Pipeline re-validates it.

pub mod validate;

use std::future::Future;
use std::sync::Arc;

use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::runtime::Controller;

use super::pipeline::referenced;
use super::{drive, lookup, referrers, verdict, watch, Ctx, Kind, Shared};
use crate::api::common::CommonStatus;
use crate::api::pipeline::Pipeline;
use crate::api::savepoint::Savepoint;
use crate::error::Error;

impl Kind for Savepoint {
    const CONTROLLER: &'static str = "savepoint";
    fn common_status(&self) -> Option<&CommonStatus> {
        self.status.as_ref().map(|s| &s.common)
    }
}

async fn reconcile(
    savepoint: Arc<DeserializeGuard<Savepoint>>,
    ctx: Arc<Ctx<Store<DeserializeGuard<Pipeline>>>>,
) -> Result<Action, Error> {
    verdict::reconcile(
        &ctx.shared,
        &savepoint,
        |s| {
            let pipeline = lookup(&ctx.stores, s, &s.spec.pipeline_ref);
            validate::validate(&s.spec, &referenced(&pipeline))
        },
        verdict::ValidateOnly,
    )
    .await
}

/// Runs the Savepoint controller until `shutdown` completes.
pub async fn run(shared: Arc<Shared>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let (reader, stream) = watch::<Savepoint>(&shared);
    let (pipelines, pipelines_stream) = watch::<Pipeline>(&shared);
    let by_pipeline = reader.clone();
    let controller =
        Controller::for_stream(stream, reader).watches_stream(pipelines_stream, move |pipeline| {
            referrers(&by_pipeline, &pipeline, |s: &Savepoint, name| {
                s.spec.pipeline_ref == name
            })
        });
    let ctx = Arc::new(Ctx {
        shared,
        stores: pipelines,
    });
    drive(controller, ctx, reconcile, shutdown).await;
}
