//! Provisioning: the set runs the extra clusters (it reads them from the
//! Backfill's status); once they are ready, the range is located on the
//! source cluster and the plan stored.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

use super::super::objects;
use super::super::progress::progress;
use super::super::reason::Reason;
use super::super::run::{RunBackfill, Step, RANGE_RECHECK, RECHECK};
use super::replaying::stored_plan;
use crate::api::backfill::{Backfill, BackfillPhase, BackfillStatus, ReplayStatus, StreamOffsets};
use crate::api::kafka_cluster_set::ClusterStatus;
use crate::controller::common::provider::{ClusterProvider, ProviderError, Providers};
use crate::controller::status::Requeue;
use crate::error::Error;
use crate::replay::plan::{locate, LocateError, ReplayPlan};

impl RunBackfill<'_> {
    pub(crate) async fn provisioning(
        &self,
        backfill: &Backfill,
        status: BackfillStatus,
    ) -> Result<Step, Error> {
        let set_name = status.cluster_set.clone().unwrap_or_default();
        let (pipeline, set) = match self.references(backfill, &set_name) {
            Ok(found) => found,
            Err(message) => return Ok(Step::fail(status, Reason::ReferenceGone, message)),
        };
        let set_status = set.status.clone().unwrap_or_default();
        let write = set_status
            .write_cluster
            .clone()
            .unwrap_or_else(|| set.spec.routing.write_cluster.clone());
        let ready = self.extra(&set, &status.clusters).ready(backfill);
        let (clusters, source) = match decide(ready, &write, &set_status.clusters) {
            Next::Wait(reason, message) => {
                return Ok(Step::wait(status, reason, message, Requeue::After(RECHECK)))
            }
            Next::Locate { clusters, source } => (clusters, source),
        };
        // Reached as the set reaches it: a secured source's Secrets are
        // read for the operator's calls and named for the workers.
        let reached = match &source.settings {
            Some(settings) => {
                Providers::new(self.shared.client.clone())
                    .reach(&set, &write, settings)
                    .await
            }
            None => Err(ProviderError::Starting(
                "its settings are not recorded yet".into(),
            )),
        };
        let endpoint = match reached {
            Ok(endpoint) => endpoint,
            Err(why) => {
                return Ok(Step::wait(
                    status,
                    Reason::Cluster(why.reason()),
                    format!("the write cluster `{write}` cannot be reached yet: {why}"),
                    Requeue::After(RECHECK),
                ))
            }
        };
        let api: Api<ConfigMap> = Api::namespaced(
            self.shared.client.clone(),
            &backfill.namespace().unwrap_or_default(),
        );
        let plan = match api.get_opt(&objects::plan_name(backfill)).await? {
            // A plan stored by an earlier reconcile stays the plan.
            Some(stored) => stored_plan(&stored)?,
            None => {
                let connection = &endpoint.connection;
                let range = (
                    backfill.spec.from.0.as_millisecond(),
                    backfill.spec.to.0.as_millisecond(),
                );
                let mut streams = Vec::new();
                for input in &pipeline.spec.inputs {
                    let topic = source
                        .streams
                        .iter()
                        .find(|s| s.stream == input.stream)
                        .map_or_else(|| input.stream.clone(), |s| s.topic.clone());
                    match locate(
                        self.deps.admin.as_ref(),
                        connection,
                        (&input.stream, &topic, &topic),
                        range,
                    )
                    .await
                    {
                        Ok(stream) => streams.push(stream),
                        Err(error @ LocateError::Open { .. }) => {
                            return Ok(Step::wait(status, Reason::RangeOpen, format!("{error}: the replay starts once every partition has passed spec.to"), Requeue::After(RANGE_RECHECK)));
                        }
                        Err(LocateError::Kafka(error)) => {
                            return Ok(Step::wait(
                                status,
                                Reason::Cluster(error.category()),
                                format!("locating the range on `{write}`: {error}"),
                                Requeue::Backoff,
                            ));
                        }
                    }
                }
                let plan = ReplayPlan {
                    source: connection.bootstrap_servers.clone(),
                    source_security: endpoint.security.clone(),
                    destinations: clusters
                        .iter()
                        .filter_map(|c| c.bootstrap_servers.clone())
                        .collect(),
                    multiplier: backfill.spec.capacity.partition_multiplier,
                    workers: backfill.spec.capacity.parallelism,
                    progress_group: objects::progress_group(backfill),
                    streams,
                };
                let config_map = objects::plan_config_map(backfill, &plan)?;
                match api.create(&PostParams::default(), &config_map).await {
                    Ok(_) => plan,
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        return Ok(Step::wait(
                            status,
                            Reason::Phase(BackfillPhase::Provisioning),
                            "the plan was stored meanwhile",
                            Requeue::After(Duration::from_millis(200)),
                        ));
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        };
        let mut next = status;
        let replay = replay_status(backfill, &plan, &write);
        let total = replay.records_total;
        next.replay = Some(replay);
        next.progress = Some(progress(0, total, None, None));
        let message = format!(
            "replaying {total} record(s) from `{write}` with {} worker(s)",
            plan.workers
        );
        Ok(Step::advance(next, BackfillPhase::Replaying, message))
    }
}

/// The extra clusters once all are ready, or what they wait for.
type Ready<'s> = Result<Vec<&'s ClusterStatus>, String>;

/// What provisioning does next, from what the set's status shows.
#[derive(Debug, PartialEq)]
enum Next<'s> {
    /// Something to wait for: the reason and what.
    Wait(Reason, String),
    /// Every extra cluster is ready: the range is located on `source`.
    Locate {
        clusters: Vec<&'s ClusterStatus>,
        source: &'s ClusterStatus,
    },
}

/// `ready`: the extra clusters once all are ready, or what they wait for;
/// `recorded`: the set's clusters, among which the write cluster `write`.
fn decide<'s>(ready: Ready<'s>, write: &str, recorded: &'s [ClusterStatus]) -> Next<'s> {
    match (ready, recorded.iter().find(|c| c.name == write)) {
        (Err(waiting), _) => Next::Wait(
            Reason::ClustersStarting,
            format!("waiting for the extra clusters: {waiting}"),
        ),
        (Ok(_), None) => Next::Wait(
            Reason::SourceNotReady,
            format!("the write cluster `{write}` is not in the set's status yet"),
        ),
        (Ok(clusters), Some(source)) => Next::Locate { clusters, source },
    }
}

/// The replay of `plan` as the status records it: its workers' Jobs, the
/// records to copy and, per stream, the source offsets the live job is
/// handed at the end (the range's ends on the write cluster `write`).
fn replay_status(backfill: &Backfill, plan: &ReplayPlan, write: &str) -> ReplayStatus {
    ReplayStatus {
        plan: objects::plan_name(backfill),
        jobs: (0..plan.workers)
            .map(|i| objects::job_name(backfill, i))
            .collect(),
        records_total: plan.total_records(),
        handoff_offsets: plan
            .streams
            .iter()
            .map(|s| StreamOffsets {
                cluster: Some(write.to_string()),
                stream: s.stream.clone(),
                topic: s.source_topic.clone(),
                offsets: s
                    .partitions
                    .iter()
                    .map(|r| (r.partition.to_string(), r.end))
                    .collect(),
            })
            .collect(),
        written: Vec::new(),
        reruns: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kafka_cluster_set::ClusterPhase;
    use crate::replay::plan::{PartitionRange, StreamRange};

    fn cluster(name: &str) -> ClusterStatus {
        ClusterStatus {
            name: name.into(),
            phase: Some(ClusterPhase::Ready),
            ..ClusterStatus::default()
        }
    }

    #[test]
    fn the_range_is_located_once_the_extra_clusters_are_ready_and_the_source_is_known() {
        let recorded = [cluster("blue"), cluster("bf-0")];
        let extra = vec![&recorded[1]];
        let cases: Vec<(&str, Ready, &str, Next)> = vec![
            (
                "an extra cluster still starting",
                Err("`bf-0` is Starting".into()),
                "blue",
                Next::Wait(
                    Reason::ClustersStarting,
                    "waiting for the extra clusters: `bf-0` is Starting".into(),
                ),
            ),
            (
                "the write cluster not recorded yet",
                Ok(extra.clone()),
                "green",
                Next::Wait(
                    Reason::SourceNotReady,
                    "the write cluster `green` is not in the set's status yet".into(),
                ),
            ),
            (
                "the clusters wait first, whatever the source",
                Err("`bf-0` is not in the set's status yet".into()),
                "green",
                Next::Wait(
                    Reason::ClustersStarting,
                    "waiting for the extra clusters: `bf-0` is not in the set's status yet".into(),
                ),
            ),
            (
                "ready, and the source known",
                Ok(extra.clone()),
                "blue",
                Next::Locate {
                    clusters: extra.clone(),
                    source: &recorded[0],
                },
            ),
        ];
        for (case, ready, write, expected) in cases {
            assert_eq!(decide(ready, write, &recorded), expected, "{case}");
        }
    }

    #[test]
    fn the_handoff_offsets_are_the_ends_of_the_range_on_the_write_cluster() {
        let backfill = Backfill::new(
            "reprocess",
            serde_json::from_value(serde_json::json!({
                "pipelineRef": "orders",
                "from": "2026-01-01T00:00:00Z",
                "to": "2026-01-02T00:00:00Z",
            }))
            .unwrap(),
        );
        let plan = ReplayPlan {
            source: "blue:9092".into(),
            source_security: None,
            destinations: vec!["bf-0:9092".into()],
            multiplier: 1,
            workers: 2,
            progress_group: "progress".into(),
            streams: vec![StreamRange {
                stream: "orders".into(),
                source_topic: "orders-v1".into(),
                destination_topic: "orders-v1".into(),
                source_partitions: 2,
                partitions: vec![
                    PartitionRange {
                        partition: 0,
                        start: 5,
                        end: 15,
                    },
                    PartitionRange {
                        partition: 1,
                        start: 0,
                        end: 7,
                    },
                ],
            }],
        };
        let replay = replay_status(&backfill, &plan, "blue");
        assert_eq!(replay.records_total, 17);
        assert_eq!(
            replay.jobs,
            [
                objects::job_name(&backfill, 0),
                objects::job_name(&backfill, 1)
            ]
        );
        assert_eq!(replay.plan, objects::plan_name(&backfill));
        assert_eq!(
            replay.handoff_offsets,
            [StreamOffsets {
                cluster: Some("blue".into()),
                stream: "orders".into(),
                topic: "orders-v1".into(),
                offsets: [("0".to_string(), 15), ("1".to_string(), 7)].into(),
            }]
        );
        assert!(replay.written.is_empty());
        assert_eq!(replay.reruns, 0);
    }
}
