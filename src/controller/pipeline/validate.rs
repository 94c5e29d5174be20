//! Rules for a Pipeline that its schema cannot express, including its references.

use super::application::{flink_memory, MAX_NAME};
use crate::api::kafka_cluster_set::KafkaClusterSet;
use crate::api::pipeline::{EngineType, FlinkEngine, FlinkMode, PipelineSpec};
use crate::api::savepoint::{Savepoint, SavepointType};
use crate::controller::common::pipelines::MAX_CONSUMER_NAME;
use crate::slo::SloModel;
use crate::validation::{check_duration, ProblemReason, Referenced, SpecProblem};

/// Flink configuration keys naming a default savepoint directory.
const SAVEPOINT_DIR_KEYS: [&str; 2] = [
    "execution.checkpointing.savepoint-dir",
    "state.savepoints.dir",
];

/// The objects a Pipeline names.
pub struct PipelineRefs<'a> {
    /// `spec.clusterSet`.
    pub cluster_set: Referenced<'a, KafkaClusterSet>,
    /// `spec.restoreFrom.savepoint`, when set.
    pub restore_savepoint: Option<Referenced<'a, Savepoint>>,
}

/// Every problem with the spec and its references.
pub fn validate(name: &str, spec: &PipelineSpec, refs: &PipelineRefs) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    check_engine(name, spec, &mut problems);
    check_streams(spec, refs, &mut problems);
    check_restore(spec, refs, &mut problems);
    check_policies(spec, &mut problems);
    problems
}

fn check_engine(name: &str, spec: &PipelineSpec, problems: &mut Vec<SpecProblem>) {
    let engine = &spec.engine;
    match engine.type_ {
        EngineType::Flink => {
            if engine.consumer.is_some() {
                problems.push(SpecProblem::invalid(
                    "spec.engine.consumer",
                    "must be unset when spec.engine.type is flink",
                ));
            }
            let Some(flink) = &engine.flink else {
                problems.push(SpecProblem::invalid(
                    "spec.engine.flink",
                    "is required when spec.engine.type is flink",
                ));
                return;
            };
            match flink.mode {
                FlinkMode::Session => {
                    if flink.session_url.is_none() {
                        problems.push(SpecProblem::invalid(
                            "spec.engine.flink.sessionUrl",
                            "is required in session mode: the REST URL of the Flink cluster",
                        ));
                    }
                    if flink.jar_uri.starts_with("local://") {
                        problems.push(SpecProblem::invalid(
                            "spec.engine.flink.jarUri",
                            "a local:// jar exists only inside an application-mode image; use http(s):// in session mode",
                        ));
                    }
                }
                FlinkMode::Application => {
                    if flink.image.is_none() {
                        problems.push(SpecProblem::invalid(
                            "spec.engine.flink.image",
                            "is required in application mode",
                        ));
                    }
                    if flink.session_url.is_some() {
                        problems.push(SpecProblem::invalid(
                            "spec.engine.flink.sessionUrl",
                            "is used only in session mode",
                        ));
                    }
                    check_application(name, flink, problems);
                }
            }
        }
        EngineType::Consumer => {
            if engine.flink.is_some() {
                problems.push(SpecProblem::invalid(
                    "spec.engine.flink",
                    "must be unset when spec.engine.type is consumer",
                ));
            }
            let Some(consumer) = &engine.consumer else {
                problems.push(SpecProblem::invalid(
                    "spec.engine.consumer",
                    "is required when spec.engine.type is consumer",
                ));
                return;
            };
            let containers = consumer
                .template
                .spec
                .as_ref()
                .map_or(0, |s| s.containers.len());
            if containers == 0 {
                problems.push(SpecProblem::invalid(
                    "spec.engine.consumer.template.spec.containers",
                    "needs at least one container",
                ));
            }
            if name.len() > MAX_CONSUMER_NAME || name.contains('.') {
                problems.push(SpecProblem::invalid(
                    "metadata.name",
                    format!("names the StatefulSet that runs the app, whose pods' names are host names, so it must have no dot and at most {MAX_CONSUMER_NAME} characters"),
                ));
            }
        }
    }
}

/// What an application-mode cluster needs: a Service name that is a DNS
/// label, slots for the job's parallelism, memory Flink can be given.
fn check_application(name: &str, flink: &FlinkEngine, problems: &mut Vec<SpecProblem>) {
    if name.len() > MAX_NAME || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        problems.push(SpecProblem::invalid(
            "metadata.name",
            format!("names the JobManager Service `{name}-jobmanager` in application mode, so it must start with a letter and have at most {MAX_NAME} characters"),
        ));
    }
    let slots = i64::from(flink.task_manager.replicas) * i64::from(flink.task_manager.task_slots);
    if slots < i64::from(flink.parallelism) {
        problems.push(SpecProblem::invalid(
            "spec.engine.flink.parallelism",
            format!(
                "is {} but the TaskManagers offer {slots} slots (taskManager.replicas × taskManager.taskSlots)",
                flink.parallelism
            ),
        ));
    }
    let memories = [
        ("spec.engine.flink.jobManager.memory", &flink.job_manager),
        (
            "spec.engine.flink.taskManager.resources.memory",
            &flink.task_manager.resources,
        ),
    ];
    for (field, resources) in memories {
        if let Some(memory) = &resources.memory {
            if flink_memory(memory).is_none() {
                problems.push(SpecProblem::invalid(
                    field,
                    format!("`{memory}` is not a memory size Flink can be given (at least 1Mi)"),
                ));
            }
        }
    }
}

fn check_streams(spec: &PipelineSpec, refs: &PipelineRefs, problems: &mut Vec<SpecProblem>) {
    for (i, output) in spec.outputs.iter().enumerate() {
        if spec
            .inputs
            .iter()
            .any(|input| input.stream == output.stream)
        {
            problems.push(SpecProblem::invalid(
                format!("spec.outputs[{i}].stream"),
                format!(
                    "`{}` is also an input: a pipeline reading its own output feeds back on itself",
                    output.stream
                ),
            ));
        }
    }
    let Some(set) = refs.cluster_set.require(
        problems,
        ProblemReason::KafkaClusterSetNotFound,
        "spec.clusterSet",
        "KafkaClusterSet",
        &spec.cluster_set,
    ) else {
        return;
    };
    let declared: Vec<&str> = set.spec.streams.iter().map(|s| s.name.as_str()).collect();
    let used = spec
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| (format!("spec.inputs[{i}].stream"), &input.stream))
        .chain(
            spec.outputs
                .iter()
                .enumerate()
                .map(|(i, output)| (format!("spec.outputs[{i}].stream"), &output.stream)),
        );
    for (field, stream) in used {
        if !declared.contains(&stream.as_str()) {
            problems.push(SpecProblem::invalid(
                field,
                format!(
                    "stream `{stream}` is not declared by KafkaClusterSet `{}` (declared: {})",
                    spec.cluster_set,
                    if declared.is_empty() {
                        "none".to_string()
                    } else {
                        declared.join(", ")
                    }
                ),
            ));
        }
    }
}

fn check_restore(spec: &PipelineSpec, refs: &PipelineRefs, problems: &mut Vec<SpecProblem>) {
    let Some(restore) = &spec.restore_from else {
        return;
    };
    match (&restore.savepoint, &restore.path) {
        (Some(_), Some(_)) | (None, None) => problems.push(SpecProblem::invalid(
            "spec.restoreFrom",
            "set exactly one of `savepoint` and `path`",
        )),
        (Some(name), None) => {
            let found = refs.restore_savepoint.as_ref().and_then(|r| {
                r.require(
                    problems,
                    ProblemReason::SavepointNotFound,
                    "spec.restoreFrom.savepoint",
                    "Savepoint",
                    name,
                )
            });
            let wanted = match spec.engine.type_ {
                EngineType::Flink => SavepointType::Flink,
                EngineType::Consumer => SavepointType::Offsets,
            };
            if let Some(savepoint) = found.filter(|s| s.spec.type_ != wanted) {
                problems.push(SpecProblem::invalid(
                    "spec.restoreFrom.savepoint",
                    format!(
                        "Savepoint `{name}` is of type {:?} but a {:?} engine restores from {wanted:?} savepoints",
                        savepoint.spec.type_, spec.engine.type_
                    ),
                ));
            }
        }
        (None, Some(_)) if spec.engine.type_ == EngineType::Consumer => {
            problems.push(SpecProblem::invalid(
                "spec.restoreFrom.path",
                "a consumer engine restores from an offsets Savepoint, not a path",
            ))
        }
        (None, Some(_)) => {}
    }
}

fn check_policies(spec: &PipelineSpec, problems: &mut Vec<SpecProblem>) {
    if let Some(policy) = &spec.savepoints {
        if let Some(interval) = &policy.interval {
            problems.extend(check_duration("spec.savepoints.interval", interval));
        }
        problems.extend(check_duration("spec.savepoints.timeout", &policy.timeout));
        if let Some(max_age) = &policy.retention.max_age {
            problems.extend(check_duration("spec.savepoints.retention.maxAge", max_age));
        }
        match spec.engine.type_ {
            EngineType::Consumer if policy.target_directory.is_some() => problems.push(SpecProblem::invalid(
                "spec.savepoints.targetDirectory",
                "a consumer engine's savepoints are offsets kept in the Savepoint status, not files",
            )),
            EngineType::Flink if policy.interval.is_some() && policy.target_directory.is_none() => {
                let configured = spec.engine.flink.as_ref().is_some_and(|f| {
                    SAVEPOINT_DIR_KEYS
                        .iter()
                        .any(|key| f.flink_configuration.contains_key(*key))
                });
                if !configured {
                    problems.push(SpecProblem::invalid(
                        "spec.savepoints.targetDirectory",
                        "periodic savepoints need a directory: set it here or execution.checkpointing.savepoint-dir in flinkConfiguration",
                    ));
                }
            }
            _ => {}
        }
    }
    if let Some(Err(refused)) = spec.slo.as_ref().map(SloModel::from_spec) {
        problems.extend(refused);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> PipelineSpec {
        serde_json::from_value(value).expect("test spec deserializes")
    }

    fn set(streams: &[&str]) -> KafkaClusterSet {
        serde_json::from_value(json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "KafkaClusterSet",
            "metadata": {"name": "events"},
            "spec": {
                "template": {"provider": "external", "external": {"bootstrapServers": ["k:9092"]}},
                "clusters": [{"name": "blue"}],
                "streams": streams.iter().map(|s| json!({"name": s})).collect::<Vec<_>>(),
                "routing": {"writeCluster": "blue"}
            }
        }))
        .expect("test set deserializes")
    }

    fn flink_session(extra: serde_json::Value) -> PipelineSpec {
        let mut value = json!({
            "clusterSet": "events",
            "inputs": [{"stream": "orders"}],
            "outputs": [{"stream": "totals"}],
            "engine": {"type": "flink", "flink": {"mode": "session", "sessionUrl": "http://flink:8081", "jarUri": "https://x/job.jar"}}
        });
        if let (Some(base), Some(more)) = (value.as_object_mut(), extra.as_object()) {
            base.extend(more.clone());
        }
        spec(value)
    }

    #[test]
    fn a_session_job_over_declared_streams_is_valid() {
        let set = set(&["orders", "totals"]);
        let refs = PipelineRefs {
            cluster_set: Referenced::Found(&set),
            restore_savepoint: None,
        };
        assert_eq!(validate("p", &flink_session(json!({})), &refs), vec![]);
    }

    #[test]
    fn undeclared_streams_and_a_missing_set_are_named() {
        let set = set(&["orders"]);
        let refs = PipelineRefs {
            cluster_set: Referenced::Found(&set),
            restore_savepoint: None,
        };
        let problems = validate("p", &flink_session(json!({})), &refs);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "spec.outputs[0].stream");
        assert!(problems[0].message.contains("declared: orders"));

        let refs = PipelineRefs {
            cluster_set: Referenced::Missing,
            restore_savepoint: None,
        };
        let problems = validate("p", &flink_session(json!({})), &refs);
        assert_eq!(problems[0].reason, ProblemReason::KafkaClusterSetNotFound);
    }

    #[test]
    fn engine_sections_must_match_the_engine_type() {
        let refs = PipelineRefs {
            cluster_set: Referenced::Unreadable,
            restore_savepoint: None,
        };
        let s = spec(json!({
            "clusterSet": "events", "inputs": [{"stream": "orders"}],
            "engine": {"type": "consumer"}
        }));
        let problems = validate("p", &s, &refs);
        assert_eq!(problems[0].field, "spec.engine.consumer");
        assert_eq!(problems[1].reason, ProblemReason::ReferencedObjectInvalid);
    }

    #[test]
    fn a_consumer_pipelines_name_must_name_its_stateful_sets_pods() {
        let set = set(&["orders"]);
        let refs = PipelineRefs {
            cluster_set: Referenced::Found(&set),
            restore_savepoint: None,
        };
        let s = spec(json!({
            "clusterSet": "events", "inputs": [{"stream": "orders"}],
            "engine": {"type": "consumer", "consumer": {"template": {"spec": {
                "containers": [{"name": "app", "image": "app:1"}]}}}}
        }));
        let longest = "p".repeat(MAX_CONSUMER_NAME);
        assert_eq!(validate(&longest, &s, &refs), vec![]);
        for name in [format!("{longest}p"), "order.totals".to_string()] {
            let problems = validate(&name, &s, &refs);
            let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
            assert_eq!(fields, ["metadata.name"], "{name}");
        }
    }

    #[test]
    fn restore_needs_exactly_one_source_and_periodic_savepoints_a_directory() {
        let set = set(&["orders", "totals"]);
        let refs = PipelineRefs {
            cluster_set: Referenced::Found(&set),
            restore_savepoint: None,
        };
        let s = flink_session(json!({
            "restoreFrom": {},
            "savepoints": {"interval": "10m"}
        }));
        let problems = validate("p", &s, &refs);
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.restoreFrom", "spec.savepoints.targetDirectory"]
        );
    }
}
