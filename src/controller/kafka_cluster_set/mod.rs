//! What happens to a KafkaClusterSet: its spec is validated and the verdict recorded.

pub mod validate;

use std::future::Future;
use std::sync::Arc;

use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::Controller;

use super::{drive, verdict, watch, Ctx, Kind, Shared};
use crate::api::common::CommonStatus;
use crate::api::kafka_cluster_set::KafkaClusterSet;
use crate::error::Error;

impl Kind for KafkaClusterSet {
    const CONTROLLER: &'static str = "kafkaclusterset";
    fn common_status(&self) -> Option<&CommonStatus> {
        self.status.as_ref().map(|s| &s.common)
    }
}

async fn reconcile(
    set: Arc<DeserializeGuard<KafkaClusterSet>>,
    ctx: Arc<Ctx<()>>,
) -> Result<Action, Error> {
    verdict::reconcile(&ctx.shared, &set, |set| validate::validate(&set.spec)).await
}

/// Runs the KafkaClusterSet controller until `shutdown` completes.
pub async fn run(shared: Arc<Shared>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let (reader, stream) = watch::<KafkaClusterSet>(&shared);
    let controller = Controller::for_stream(stream, reader);
    drive(
        controller,
        Arc::new(Ctx { shared, stores: () }),
        reconcile,
        shutdown,
    )
    .await;
}
