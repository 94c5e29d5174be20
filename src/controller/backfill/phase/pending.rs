//! Pending: the Pipeline and its set are checked and the extra clusters
//! named; nothing is created yet.

use kube::ResourceExt;

use super::super::objects;
use super::super::reason::Reason;
use super::super::run::{now, RunBackfill, Step};
use crate::api::backfill::{Backfill, BackfillPhase, BackfillStatus, StartStateType};
use crate::api::kafka_cluster_set::{KafkaClusterSet, Provider};
use crate::api::pipeline::{EngineType, Pipeline};
use crate::controller::status::Requeue;

impl RunBackfill<'_> {
    pub(crate) fn pending(&self, backfill: &Backfill, status: BackfillStatus) -> Step {
        let pipeline = self.pipeline(backfill);
        let set = pipeline
            .as_ref()
            .and_then(|p| self.set(backfill, &p.spec.cluster_set));
        let set_name = match decide(backfill, pipeline.as_ref(), set.as_ref()) {
            Ok(set_name) => set_name,
            Err((reason, message)) => {
                return Step::wait(status, reason, message, Requeue::OnChange)
            }
        };
        let mut next = status;
        next.cluster_set = Some(set_name.clone());
        next.clusters = objects::cluster_names(backfill);
        next.start_time = Some(now());
        let message = format!(
            "adding cluster(s) {} to KafkaClusterSet `{set_name}`",
            next.clusters.join(", ")
        );
        Step::advance(next, BackfillPhase::Provisioning, message)
    }
}

/// Whether a run can start with the live `pipeline` and its `set` as the
/// stores hold them: the set's name, or why it waits (a condition reason
/// and what the user can change).
fn decide(
    backfill: &Backfill,
    pipeline: Option<&Pipeline>,
    set: Option<&KafkaClusterSet>,
) -> Result<String, (Reason, String)> {
    let Some(pipeline) = pipeline else {
        let message = format!("Pipeline `{}` does not exist", backfill.spec.pipeline_ref);
        return Err((Reason::PipelineNotFound, message));
    };
    if pipeline.spec.engine.type_ != EngineType::Consumer {
        return Err((
            Reason::EngineNotSupported,
            format!("Pipeline `{}` runs on Flink; this operator version backfills consumer-engine pipelines only", pipeline.name_any()),
        ));
    }
    if backfill.spec.start_state.type_ == StartStateType::Savepoint {
        return Err((
            Reason::StartStateNotSupported,
            "spec.startState: a consumer pipeline's state is its committed offsets on the live cluster, which mean nothing on the extra clusters; start empty (type: empty)".into(),
        ));
    }
    let set_name = pipeline.spec.cluster_set.clone();
    let Some(set) = set else {
        return Err((
            Reason::ClusterSetNotFound,
            format!(
                "KafkaClusterSet `{set_name}` of Pipeline `{}` does not exist",
                pipeline.name_any()
            ),
        ));
    };
    if set.spec.template.provider != Provider::Builtin {
        return Err((
            Reason::CapacityUnavailable,
            format!("KafkaClusterSet `{set_name}` has an external template: extra clusters can only be run from a builtin template"),
        ));
    }
    Ok(set_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn backfill(start: &str) -> Backfill {
        serde_json::from_value(json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "Backfill",
            "metadata": {"name": "rerun", "namespace": "shop"},
            "spec": {"pipelineRef": "totals", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z",
                     "startState": {"type": start, "savepoint": "s"}}
        }))
        .expect("a backfill")
    }

    fn pipeline(engine: serde_json::Value) -> Pipeline {
        serde_json::from_value(json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "Pipeline", "metadata": {"name": "totals"},
            "spec": {"clusterSet": "events", "inputs": [{"stream": "orders"}], "engine": engine}
        }))
        .expect("a pipeline")
    }

    fn set(provider: &str) -> KafkaClusterSet {
        serde_json::from_value(json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "KafkaClusterSet", "metadata": {"name": "events"},
            "spec": {"template": {"provider": provider},
                     "clusters": [{"name": "live"}], "streams": [{"name": "orders"}],
                     "routing": {"writeCluster": "live"}}
        }))
        .expect("a set")
    }

    #[test]
    fn a_run_starts_only_on_a_consumer_pipeline_of_a_builtin_set_from_empty_state() {
        let consumer = pipeline(json!({"type": "consumer", "consumer": {"template": {}}}));
        let flink = pipeline(
            json!({"type": "flink", "flink": {"mode": "session", "sessionUrl": "http://flink:8081", "jarUri": "http://flink/job.jar"}}),
        );
        let (builtin, external) = (set("builtin"), set("external"));
        let (empty, savepoint) = (backfill("empty"), backfill("savepoint"));
        let cases = [
            (
                "no pipeline",
                &empty,
                None,
                Some(&builtin),
                Err(Reason::PipelineNotFound),
            ),
            (
                "a Flink pipeline",
                &empty,
                Some(&flink),
                Some(&builtin),
                Err(Reason::EngineNotSupported),
            ),
            (
                "from a savepoint",
                &savepoint,
                Some(&consumer),
                Some(&builtin),
                Err(Reason::StartStateNotSupported),
            ),
            (
                "no set",
                &empty,
                Some(&consumer),
                None,
                Err(Reason::ClusterSetNotFound),
            ),
            (
                "an external set",
                &empty,
                Some(&consumer),
                Some(&external),
                Err(Reason::CapacityUnavailable),
            ),
            (
                "all there",
                &empty,
                Some(&consumer),
                Some(&builtin),
                Ok("events"),
            ),
        ];
        for (case, backfill, pipeline, set, expected) in cases {
            let decided = decide(backfill, pipeline, set);
            assert_eq!(
                decided
                    .as_ref()
                    .map(String::as_str)
                    .map_err(|(reason, _)| *reason),
                expected,
                "{case}: {decided:?}"
            );
        }
    }
}
