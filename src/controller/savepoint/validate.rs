//! Rules for a Savepoint that its schema cannot express, including its pipeline.

use crate::api::pipeline::{EngineType, Pipeline};
use crate::api::savepoint::{SavepointSpec, SavepointType};
use crate::validation::{unchangeable, ProblemReason, Referenced, SpecProblem};

/// Every problem with the spec and its pipeline reference.
pub fn validate(spec: &SavepointSpec, pipeline: &Referenced<Pipeline>) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    if spec.path.is_some() && spec.target_directory.is_some() {
        problems.push(SpecProblem::invalid(
            "spec.targetDirectory",
            "`path` registers an existing savepoint; `targetDirectory` is only for taking a new one",
        ));
    }
    if spec.type_ == SavepointType::Offsets {
        for (field, set) in [
            ("spec.targetDirectory", spec.target_directory.is_some()),
            ("spec.path", spec.path.is_some()),
        ] {
            if set {
                problems.push(SpecProblem::invalid(
                    field,
                    "an offsets savepoint is kept in the Savepoint status, not in files",
                ));
            }
        }
    } else if !spec.offsets.is_empty() {
        problems.push(SpecProblem::invalid(
            "spec.offsets",
            "only an offsets savepoint registers offsets",
        ));
    }
    if let Some(pipeline) = pipeline.require(
        &mut problems,
        ProblemReason::PipelineNotFound,
        "spec.pipelineRef",
        "Pipeline",
        &spec.pipeline_ref,
    ) {
        let wanted = match pipeline.spec.engine.type_ {
            EngineType::Flink => SavepointType::Flink,
            EngineType::Consumer => SavepointType::Offsets,
        };
        if spec.type_ != wanted {
            problems.push(SpecProblem::invalid(
                "spec.type",
                format!(
                    "Pipeline `{}` runs a {:?} engine, whose savepoints are of type {wanted:?}",
                    spec.pipeline_ref, pipeline.spec.engine.type_
                ),
            ));
        }
    }
    problems
}

/// Changes from `old` to `new` that a Savepoint cannot take: what it
/// snapshots and where are fixed when it is created; only how it is
/// cleaned up (`disposeOnDelete`) and retried (`backoffLimit`) may change.
pub fn check_update(new: &SavepointSpec, old: &SavepointSpec) -> Vec<SpecProblem> {
    unchangeable(
        &[
            ("spec.pipelineRef", new.pipeline_ref != old.pipeline_ref),
            ("spec.type", new.type_ != old.type_),
            (
                "spec.targetDirectory",
                new.target_directory != old.target_directory,
            ),
            ("spec.path", new.path != old.path),
            ("spec.offsets", new.offsets != old.offsets),
        ],
        "cannot change after the Savepoint is created: create a new Savepoint instead",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn consumer_pipeline() -> Pipeline {
        serde_json::from_value(json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "Pipeline",
            "metadata": {"name": "counter"},
            "spec": {
                "clusterSet": "events", "inputs": [{"stream": "orders"}],
                "engine": {"type": "consumer", "consumer": {"template": {"spec": {"containers": [{"name": "app"}]}}}}
            }
        }))
        .expect("test pipeline deserializes")
    }

    #[test]
    fn the_type_must_fit_the_engine() {
        let pipeline = consumer_pipeline();
        let spec: SavepointSpec =
            serde_json::from_value(json!({"pipelineRef": "counter"})).expect("spec");
        let problems = validate(&spec, &Referenced::Found(&pipeline));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "spec.type");
        let spec: SavepointSpec =
            serde_json::from_value(json!({"pipelineRef": "counter", "type": "offsets"}))
                .expect("spec");
        assert_eq!(validate(&spec, &Referenced::Found(&pipeline)), vec![]);
    }

    #[test]
    fn offsets_savepoints_have_no_files_and_the_pipeline_must_exist() {
        let spec: SavepointSpec = serde_json::from_value(
            json!({"pipelineRef": "gone", "type": "offsets", "path": "/x", "targetDirectory": "/y"}),
        )
        .expect("spec");
        let problems = validate(&spec, &Referenced::Missing);
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.targetDirectory",
                "spec.targetDirectory",
                "spec.path",
                "spec.pipelineRef"
            ]
        );
        assert_eq!(problems[3].reason, ProblemReason::PipelineNotFound);
    }
}
