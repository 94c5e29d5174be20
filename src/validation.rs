//! What is wrong with a spec, in terms a user can act on.

use std::collections::BTreeSet;
use std::fmt;

use crate::duration::SpecDuration;

/// The condition reason a problem is reported under. These strings are an
/// API: users and alerts match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProblemReason {
    /// The spec breaks a rule the schema cannot express.
    InvalidSpec,
    /// A referenced KafkaClusterSet does not exist.
    KafkaClusterSetNotFound,
    /// A referenced Pipeline does not exist.
    PipelineNotFound,
    /// A referenced Savepoint does not exist.
    SavepointNotFound,
    /// A referenced object exists but its own spec cannot be read.
    ReferencedObjectInvalid,
}

impl ProblemReason {
    /// The reason string used in conditions, Events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidSpec => "InvalidSpec",
            Self::KafkaClusterSetNotFound => "KafkaClusterSetNotFound",
            Self::PipelineNotFound => "PipelineNotFound",
            Self::SavepointNotFound => "SavepointNotFound",
            Self::ReferencedObjectInvalid => "ReferencedObjectInvalid",
        }
    }
}

/// One problem with a spec: which field, and which rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// Condition reason.
    pub reason: ProblemReason,
    /// JSON path of the field, e.g. `spec.inputs[1].stream`.
    pub field: String,
    /// The rule, in words.
    pub message: String,
}

impl SpecProblem {
    /// A spec rule broken by `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: ProblemReason::InvalidSpec,
            field: field.into(),
            message: message.into(),
        }
    }

    /// An object named by `field` that does not exist.
    pub fn not_found(
        reason: ProblemReason,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            reason,
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// What a reference to another object resolved to.
#[derive(Debug)]
pub enum Referenced<'a, K> {
    /// The object exists and reads as its kind.
    Found(&'a K),
    /// No object of that name in the namespace.
    Missing,
    /// The object exists but does not read as its kind.
    Unreadable,
    /// Not looked up: admission judges an object by what it says itself,
    /// and the reconcile checks its references.
    Unchecked,
}

impl<'a, K> Referenced<'a, K> {
    /// The object when found; otherwise pushes the matching problem onto `problems`.
    pub fn require(
        &self,
        problems: &mut Vec<SpecProblem>,
        missing: ProblemReason,
        field: &str,
        kind: &str,
        name: &str,
    ) -> Option<&'a K> {
        match self {
            Self::Found(object) => Some(object),
            Self::Missing => {
                problems.push(SpecProblem::not_found(
                    missing,
                    field,
                    format!("{kind} `{name}` does not exist in this namespace"),
                ));
                None
            }
            Self::Unreadable => {
                problems.push(SpecProblem::not_found(
                    ProblemReason::ReferencedObjectInvalid,
                    field,
                    format!("{kind} `{name}` exists but its spec cannot be read; see its Ready condition"),
                ));
                None
            }
            Self::Unchecked => None,
        }
    }
}

/// What validation concluded about a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing wrong.
    Valid,
    /// At least one problem; the reason is the first problem's.
    Invalid(Vec<SpecProblem>),
}

impl Verdict {
    /// A verdict from a list of problems, none meaning valid. Spec errors come
    /// before missing references: a user fixes the spec first.
    pub fn from_problems(mut problems: Vec<SpecProblem>) -> Self {
        if problems.is_empty() {
            return Self::Valid;
        }
        problems.sort_by_key(|p| p.reason);
        Self::Invalid(problems)
    }

    /// The condition reason, `None` when valid.
    pub fn reason(&self) -> Option<ProblemReason> {
        match self {
            Self::Valid => None,
            Self::Invalid(problems) => problems.first().map(|p| p.reason),
        }
    }

    /// All problems in one line, as a condition message.
    pub fn message(&self) -> String {
        match self {
            Self::Valid => String::new(),
            Self::Invalid(problems) => problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

/// Problems for the fields of `changes` (field, whether the update changed
/// it) that did change, each refused with `why`.
pub fn unchangeable(changes: &[(&str, bool)], why: &str) -> Vec<SpecProblem> {
    changes
        .iter()
        .filter(|(_, changed)| *changed)
        .map(|(field, _)| SpecProblem::invalid(*field, why))
        .collect()
}

/// Problems for every value of `names` seen before, e.g. two streams with one topic.
pub fn duplicates<'a>(
    names: impl IntoIterator<Item = (String, &'a str)>,
    what: &str,
) -> Vec<SpecProblem> {
    let mut seen = BTreeSet::new();
    names
        .into_iter()
        .filter(|(_, name)| !seen.insert(*name))
        .map(|(field, name)| {
            SpecProblem::invalid(field, format!("{what} `{name}` appears more than once"))
        })
        .collect()
}

/// A problem when a duration field cannot be read (the schema pattern lets
/// through only well-formed strings, but an overflow can still slip by).
pub fn check_duration(field: &str, value: &SpecDuration) -> Option<SpecProblem> {
    value
        .get()
        .err()
        .map(|e| SpecProblem::invalid(field, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_errors_are_reported_before_missing_references() {
        let verdict = Verdict::from_problems(vec![
            SpecProblem::not_found(
                ProblemReason::PipelineNotFound,
                "spec.pipelineRef",
                "no Pipeline `p`",
            ),
            SpecProblem::invalid("spec.to", "must be after spec.from"),
        ]);
        assert_eq!(verdict.reason(), Some(ProblemReason::InvalidSpec));
        assert_eq!(
            verdict.message(),
            "spec.to: must be after spec.from; spec.pipelineRef: no Pipeline `p`"
        );
        assert_eq!(Verdict::from_problems(vec![]), Verdict::Valid);
    }

    #[test]
    fn duplicates_name_the_second_occurrence() {
        let problems = duplicates(
            [
                ("a[0]".to_string(), "x"),
                ("a[1]".to_string(), "y"),
                ("a[2]".to_string(), "x"),
            ],
            "topic",
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "a[2]");
    }
}
