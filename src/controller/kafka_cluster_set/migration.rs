//! Moving the write cluster without losing, duplicating or reordering a
//! record: announce the new write cluster, wait until every live producer
//! has acknowledged that epoch, then record the old cluster's end offsets
//! (its high watermarks, or past the last record a producer reported
//! delivered there when that is further) as a drained segment. Every step is a function of the set's status, so a
//! restarted operator picks up where the last one stopped.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::publish::last_end;
use crate::api::kafka_cluster_set::{
    DrainedSegment, KafkaClusterSet, KafkaClusterSetStatus, MigrationStatus,
};
use crate::controller::common::provider::Endpoint;
use crate::controller::Shared;
use crate::discovery::acknowledgement::{acknowledgements, producer_selector, written_ends};
use crate::error::Error;
use crate::kafka::topic::desired_topic;
use crate::kafka::{KafkaAdmin, KafkaError};

/// How often a migration waiting for producers looks again when no Lease changes.
const WAITING_RECHECK: Duration = Duration::from_secs(10);

/// Where a migration stands after this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No migration.
    Settled,
    /// The new write cluster was announced in this reconcile.
    Announced,
    /// Live producers have not acknowledged yet; look again after the delay.
    AwaitingProducers(Duration),
    /// The old cluster's end offsets could not be read.
    Blocked(KafkaError),
    /// The old cluster's end offsets were recorded; the move is complete.
    Completed,
}

/// Advances the routing state in `next` (a copy of the status being built)
/// by at most one step.
pub async fn advance(
    shared: &Shared,
    admin: &dyn KafkaAdmin,
    set: &KafkaClusterSet,
    endpoints: &BTreeMap<String, Endpoint>,
    next: &mut KafkaClusterSetStatus,
) -> Result<Step, Error> {
    let wanted = &set.spec.routing.write_cluster;
    let settled = next
        .write_cluster
        .get_or_insert_with(|| wanted.clone())
        .clone();
    let Some(migration) = next.migration.clone() else {
        if settled == *wanted || !endpoints.contains_key(wanted) {
            return Ok(Step::Settled);
        }
        // The epoch is filled in once the announcing document is built.
        next.migration = Some(MigrationStatus {
            from: settled,
            to: wanted.clone(),
            epoch: 0,
            waiting_for: Vec::new(),
        });
        return Ok(Step::Announced);
    };
    if migration.epoch == 0 {
        // Not published yet (the new write cluster had no endpoint): announce again.
        return Ok(Step::Announced);
    }
    let namespace = set.namespace().unwrap_or_default();
    let leases: Api<Lease> = Api::namespaced(shared.client.clone(), &namespace);
    let listed = leases
        .list(&ListParams::default().labels(&producer_selector(&set.name_any())))
        .await?;
    let acks = acknowledgements(&listed.items, migration.epoch, Timestamp::now());
    if !acks.pending.is_empty() {
        if let Some(current) = next.migration.as_mut() {
            current.waiting_for = acks.pending;
        }
        let recheck = acks
            .recheck_in
            .map_or(WAITING_RECHECK, |d| d.min(WAITING_RECHECK))
            .max(Duration::from_secs(1));
        return Ok(Step::AwaitingProducers(recheck));
    }
    let Some(endpoint) = endpoints.get(&migration.from) else {
        return Ok(Step::Blocked(KafkaError::Unreachable {
            bootstrap: migration.from.clone(),
            message: "the cluster has no endpoint".into(),
        }));
    };
    let mut segments = Vec::new();
    for stream in &set.spec.streams {
        let topic = desired_topic(stream).name;
        let mut ends = match admin.end_offsets(&endpoint.connection, &topic).await {
            Ok(ends) => ends,
            Err(error) => return Ok(Step::Blocked(error)),
        };
        for (partition, written) in written_ends(&listed.items, &migration.from, &topic) {
            if let Some(end) = ends.get_mut(&partition) {
                *end = (*end).max(written);
            }
        }
        segments.push(DrainedSegment {
            cluster: migration.from.clone(),
            stream: stream.name.clone(),
            topic,
            start_offsets: last_end(next, &migration.from, &stream.name)
                .cloned()
                .unwrap_or_default(),
            end_offsets: ends
                .into_iter()
                .map(|(partition, offset)| (partition.to_string(), offset))
                .collect(),
        });
    }
    next.drained_segments.extend(segments);
    next.write_cluster = Some(migration.to);
    next.migration = None;
    Ok(Step::Completed)
}
