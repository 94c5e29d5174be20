//! What happens to a KafkaClusterSet: its spec is validated, then its
//! clusters are reached, its streams put on every cluster and its discovery
//! document published.

pub mod ephemeral;
pub mod migration;
pub mod publish;
mod reason;
pub mod retire;
pub mod sync;
pub mod validate;

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::ResourceExt;

use super::watches::Watches;
use super::{drive, reconcile, watch_metadata, Ctx, Kind, Shared};
use crate::api::common::CommonStatus;
use crate::api::kafka_cluster_set::KafkaClusterSet;
use crate::controller::common::provider::Providers;
use crate::discovery::acknowledgement::{CLIENT_LABEL, CLUSTER_SET_LABEL, PRODUCER};
use crate::error::Error;
use crate::shutdown::Shutdown;
use sync::{SetDeps, SyncSet};

impl Kind for KafkaClusterSet {
    const CONTROLLER: &'static str = "kafkaclusterset";
    fn common_status(&self) -> Option<&CommonStatus> {
        self.status.as_ref().map(|s| &s.common)
    }
}

async fn reconcile(
    set: Arc<DeserializeGuard<KafkaClusterSet>>,
    ctx: Arc<Ctx<SetDeps>>,
) -> Result<Action, Error> {
    let act = SyncSet {
        shared: &ctx.shared,
        deps: &ctx.stores,
    };
    reconcile::reconcile(&ctx.shared, &set, |set| validate::validate(&set.spec), act).await
}

/// Runs the KafkaClusterSet controller until `shutdown` completes.
pub fn run(
    shared: Arc<Shared>,
    watches: &mut Watches,
    shutdown: Shutdown,
) -> impl Future<Output = ()> {
    let (reader, stream) = watches.sets.subscribe(KafkaClusterSet::CONTROLLER);
    let (backfills, backfills_stream) = watches.backfills.subscribe(KafkaClusterSet::CONTROLLER);
    let managed =
        || watcher::Config::default().labels("app.kubernetes.io/managed-by=kappa-operator");
    // A producer acknowledging an epoch moves a migration on.
    let controller = Controller::for_shared_stream(stream, reader)
        .owns_stream(watch_metadata::<ConfigMap>(&shared, managed()))
        .owns_stream(watch_metadata::<StatefulSet>(&shared, managed()))
        // A Backfill taking or releasing clusters changes the set's members.
        .watches_shared_stream(backfills_stream, |backfill| {
            let backfill = backfill.0.as_ref().ok()?;
            let set = backfill.status.as_ref()?.cluster_set.clone()?;
            Some(ObjectRef::new(&set).within(&backfill.namespace()?))
        })
        .watches_stream(
            watch_metadata::<Lease>(
                &shared,
                watcher::Config::default().labels(&format!("{CLIENT_LABEL}={PRODUCER}")),
            ),
            |lease| {
                let set = lease.labels().get(CLUSTER_SET_LABEL)?.clone();
                Some(ObjectRef::new(&set).within(&lease.namespace()?))
            },
        );
    let deps = SetDeps {
        admin: shared.kafka.clone(),
        providers: Arc::new(Providers::new(shared.client.clone())),
        backfills,
    };
    drive(
        controller,
        Arc::new(Ctx {
            shared,
            stores: deps,
        }),
        reconcile,
        shutdown,
    )
}
