//! Rules for a Backfill that its schema cannot express, including its references.

use super::derived::derived_name_of;
use crate::api::backfill::{BackfillPhase, BackfillSpec, BackfillStatus, StartStateType};
use crate::api::pipeline::Pipeline;
use crate::api::savepoint::Savepoint;
use crate::controller::common::pipelines::MAX_CONSUMER_NAME;
use crate::validation::{check_duration, unchangeable, ProblemReason, Referenced, SpecProblem};

/// The objects a Backfill names.
pub struct BackfillRefs<'a> {
    /// `spec.pipelineRef`.
    pub pipeline: Referenced<'a, Pipeline>,
    /// `spec.startState.savepoint`, when set.
    pub start_savepoint: Option<Referenced<'a, Savepoint>>,
}

/// Every problem with Backfill `name`'s spec and its references.
pub fn validate(name: &str, spec: &BackfillSpec, refs: &BackfillRefs) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    let job = derived_name_of(name);
    if job.len() > MAX_CONSUMER_NAME || name.contains('.') {
        problems.push(SpecProblem::invalid(
            "metadata.name",
            format!(
                "names the backfill job's Pipeline `{job}`, whose StatefulSet's pods' names are host names, so it must have no dot and at most {} characters",
                MAX_CONSUMER_NAME - (job.len() - name.len())
            ),
        ));
    }
    if spec.to.0 <= spec.from.0 {
        problems.push(SpecProblem::invalid(
            "spec.to",
            format!(
                "must be after spec.from ({} is not after {})",
                spec.to.0, spec.from.0
            ),
        ));
    }
    problems.extend(check_duration("spec.teardownAfter", &spec.teardown_after));
    refs.pipeline.require(
        &mut problems,
        ProblemReason::PipelineNotFound,
        "spec.pipelineRef",
        "Pipeline",
        &spec.pipeline_ref,
    );
    match (spec.start_state.type_, &spec.start_state.savepoint) {
        (StartStateType::Savepoint, None) => problems.push(SpecProblem::invalid(
            "spec.startState.savepoint",
            "is required when spec.startState.type is savepoint",
        )),
        (StartStateType::Empty, Some(_)) => problems.push(SpecProblem::invalid(
            "spec.startState.savepoint",
            "must be unset when spec.startState.type is empty",
        )),
        (StartStateType::Savepoint, Some(name)) => {
            let found = refs.start_savepoint.as_ref().and_then(|r| {
                r.require(
                    &mut problems,
                    ProblemReason::SavepointNotFound,
                    "spec.startState.savepoint",
                    "Savepoint",
                    name,
                )
            });
            if let Some(savepoint) = found.filter(|s| s.spec.pipeline_ref != spec.pipeline_ref) {
                problems.push(SpecProblem::invalid(
                    "spec.startState.savepoint",
                    format!(
                        "Savepoint `{name}` holds state of Pipeline `{}`, not of `{}`",
                        savepoint.spec.pipeline_ref, spec.pipeline_ref
                    ),
                ));
            }
        }
        (StartStateType::Empty, None) => {}
    }
    problems
}

/// Changes from `old` to `new` that a started run cannot take: its range,
/// capacity and pipeline are fixed in its replay plan and extra clusters
/// once it has left Pending.
pub fn check_update(
    new: &BackfillSpec,
    old: &BackfillSpec,
    status: Option<&BackfillStatus>,
) -> Vec<SpecProblem> {
    let phase = status
        .and_then(|s| s.phase)
        .unwrap_or(BackfillPhase::Pending);
    if phase == BackfillPhase::Pending {
        return Vec::new();
    }
    let why = format!(
        "cannot change once the run has started (it is {phase:?}): create a new Backfill instead"
    );
    unchangeable(
        &[
            ("spec.pipelineRef", new.pipeline_ref != old.pipeline_ref),
            ("spec.from", new.from != old.from),
            ("spec.to", new.to != old.to),
            ("spec.capacity", new.capacity != old.capacity),
        ],
        &why,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> BackfillSpec {
        serde_json::from_value(value).expect("test spec deserializes")
    }

    #[test]
    fn the_range_must_move_forward() {
        let s = spec(
            json!({"pipelineRef": "p", "from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}),
        );
        let refs = BackfillRefs {
            pipeline: Referenced::Missing,
            start_savepoint: None,
        };
        let problems = validate("b", &s, &refs);
        assert_eq!(problems[0].field, "spec.to");
        assert_eq!(problems[1].reason, ProblemReason::PipelineNotFound);
        let problems = validate(&"b".repeat(MAX_CONSUMER_NAME), &s, &refs);
        assert_eq!(problems[0].field, "metadata.name");
        assert!(problems[0].message.contains("at most 48 characters"));
    }

    #[test]
    fn the_start_savepoint_must_exist_and_belong_to_the_pipeline() {
        let other: Savepoint = serde_json::from_value(json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "Savepoint",
            "metadata": {"name": "sp"}, "spec": {"pipelineRef": "other"}
        }))
        .expect("savepoint");
        let s = spec(json!({
            "pipelineRef": "p", "from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z",
            "startState": {"type": "savepoint", "savepoint": "sp"}
        }));
        let refs = BackfillRefs {
            pipeline: Referenced::Unreadable,
            start_savepoint: Some(Referenced::Found(&other)),
        };
        let problems = validate("b", &s, &refs);
        assert_eq!(problems.len(), 2);
        assert!(problems[1].message.contains("Pipeline `other`"));
        let refs = BackfillRefs {
            pipeline: Referenced::Unreadable,
            start_savepoint: Some(Referenced::Missing),
        };
        assert_eq!(
            validate("b", &s, &refs)[1].reason,
            ProblemReason::SavepointNotFound
        );
    }
}
