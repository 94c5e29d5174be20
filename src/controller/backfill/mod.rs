//! What happens to a Backfill: its spec and references are validated, then
//! its run goes through its phases ([`run`]); a change to its Pipeline, start
//! Savepoint, set or replay Jobs wakes it.

mod derived;
mod extra;
mod metrics;
pub mod objects;
mod phase;
mod progress;
mod reason;
pub mod run;
pub mod validate;
pub mod view;

use std::future::Future;
use std::sync::Arc;

use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::runtime::Controller;

use super::pipeline::referenced;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::watcher;
use kube::ResourceExt;

use super::watches::Watches;
use super::{cache_ready, drive, lookup, reconcile, referrers, watch_metadata, Ctx, Kind, Shared};
use crate::api::backfill::Backfill;
use crate::api::common::CommonStatus;
use crate::api::savepoint::Savepoint;
use crate::error::Error;
use crate::metrics::{Metrics, Present};
use crate::shutdown::Shutdown;
use run::{BackfillDeps, RunBackfill};
use validate::BackfillRefs;

impl Kind for Backfill {
    const CONTROLLER: &'static str = "backfill";
    fn common_status(&self) -> Option<&CommonStatus> {
        self.status.as_ref().map(|s| &s.common)
    }
    fn forget_metrics(metrics: &Metrics, present: &Present) {
        metrics::forget_metrics(metrics, present);
    }
}

/// Caches of the kinds a Backfill references, and what it acts with.
pub struct Stores {
    savepoints: Store<DeserializeGuard<Savepoint>>,
    deps: BackfillDeps,
}

/// The image replay workers run when `KAPPA_OPERATOR_IMAGE` does not name one:
/// this operator's own, as the shipped manifests install it.
fn operator_image() -> String {
    std::env::var("KAPPA_OPERATOR_IMAGE")
        .ok()
        .filter(|image| !image.is_empty())
        .unwrap_or_else(|| format!("kappa-operator:{}", env!("CARGO_PKG_VERSION")))
}

async fn reconcile(
    backfill: Arc<DeserializeGuard<Backfill>>,
    ctx: Arc<Ctx<Stores>>,
) -> Result<Action, Error> {
    // A reference missing from a cache that is still filling (a new leader
    // starting) must not fail a run.
    cache_ready(&ctx.stores.deps.pipelines, "Pipelines").await?;
    cache_ready(&ctx.stores.deps.sets, "KafkaClusterSets").await?;
    cache_ready(&ctx.stores.savepoints, "Savepoints").await?;
    let act = RunBackfill {
        shared: &ctx.shared,
        deps: &ctx.stores.deps,
    };
    reconcile::reconcile(
        &ctx.shared,
        &backfill,
        |b| {
            let pipeline = lookup(&ctx.stores.deps.pipelines, b, &b.spec.pipeline_ref);
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
            validate::validate(&b.name_any(), &b.spec, &refs)
        },
        act,
    )
    .await
}

/// Runs the Backfill controller until `shutdown` completes.
pub fn run(
    shared: Arc<Shared>,
    watches: &mut Watches,
    shutdown: Shutdown,
) -> impl Future<Output = ()> {
    let (reader, stream) = watches.backfills.subscribe(Backfill::CONTROLLER);
    let (pipelines, pipelines_stream) = watches.pipelines.subscribe(Backfill::CONTROLLER);
    let (savepoints, savepoints_stream) = watches.savepoints.subscribe(Backfill::CONTROLLER);
    let (sets, sets_stream) = watches.sets.subscribe(Backfill::CONTROLLER);
    let by_pipeline = reader.clone();
    let by_savepoint = reader.clone();
    let by_set = reader.clone();
    let controller = Controller::for_shared_stream(stream, reader)
        .owns_stream(watch_metadata::<Job>(
            &shared,
            watcher::Config::default().labels("app.kubernetes.io/managed-by=kappa-operator"),
        ))
        .watches_shared_stream(pipelines_stream, move |pipeline| {
            referrers(&by_pipeline, &*pipeline, |b: &Backfill, name| {
                b.spec.pipeline_ref == name
            })
        })
        .watches_shared_stream(savepoints_stream, move |savepoint| {
            referrers(&by_savepoint, &*savepoint, |b: &Backfill, name| {
                b.spec.start_state.savepoint.as_deref() == Some(name)
            })
        })
        // The set running a Backfill's clusters says when they are ready or retired.
        .watches_shared_stream(sets_stream, move |set| {
            referrers(&by_set, &*set, |b: &Backfill, name| {
                b.status.as_ref().and_then(|s| s.cluster_set.as_deref()) == Some(name)
            })
        });
    let admin = shared.kafka.clone();
    let ctx = Arc::new(Ctx {
        shared,
        stores: Stores {
            savepoints,
            deps: BackfillDeps {
                pipelines,
                sets,
                admin,
                image: operator_image(),
            },
        },
    });
    drive(controller, ctx, reconcile, shutdown)
}
