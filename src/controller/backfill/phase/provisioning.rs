//! Provisioning: the set runs the extra clusters (it reads them from the
//! Backfill's status); once they are ready, the range is located on the
//! source cluster and the plan stored.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

use super::super::objects;
use super::super::progress::progress;
use super::super::run::{RunBackfill, Step, RANGE_RECHECK, RECHECK};
use super::replaying::stored_plan;
use crate::api::backfill::{Backfill, BackfillPhase, BackfillStatus, ReplayStatus, StreamOffsets};
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
            Err(message) => return Ok(Step::fail(status, "ReferenceGone", message)),
        };
        let clusters = match self.ready_clusters(backfill, &set, &status.clusters) {
            Ok(clusters) => clusters,
            Err(waiting) => {
                return Ok(Step::wait(
                    status,
                    "ClustersStarting",
                    format!("waiting for the extra clusters: {waiting}"),
                    Requeue::After(RECHECK),
                ))
            }
        };
        let set_status = set.status.clone().unwrap_or_default();
        let write = set_status
            .write_cluster
            .clone()
            .unwrap_or_else(|| set.spec.routing.write_cluster.clone());
        let Some(source) = set_status.clusters.iter().find(|c| c.name == write) else {
            return Ok(Step::wait(
                status,
                "SourceNotReady",
                format!("the write cluster `{write}` is not in the set's status yet"),
                Requeue::After(RECHECK),
            ));
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
                    why.reason(),
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
                            return Ok(Step::wait(status, "RangeOpen", format!("{error}: the replay starts once every partition has passed spec.to"), Requeue::After(RANGE_RECHECK)));
                        }
                        Err(LocateError::Kafka(error)) => {
                            return Ok(Step::wait(
                                status,
                                error.category(),
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
                            "Provisioning",
                            "the plan was stored meanwhile",
                            Requeue::After(Duration::from_millis(200)),
                        ));
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        };
        let mut next = status;
        let total = plan.total_records();
        next.replay = Some(ReplayStatus {
            plan: objects::plan_name(backfill),
            jobs: (0..plan.workers)
                .map(|i| objects::job_name(backfill, i))
                .collect(),
            records_total: total,
            handoff_offsets: plan
                .streams
                .iter()
                .map(|s| StreamOffsets {
                    cluster: Some(write.clone()),
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
        });
        next.progress = Some(progress(0, total, None, None));
        let message = format!(
            "replaying {total} record(s) from `{write}` with {} worker(s)",
            plan.workers
        );
        Ok(Step::advance(next, BackfillPhase::Replaying, message))
    }
}
