//! What a reconcile writes in an object's status: the conditions a verdict
//! and an outcome call for, and the fields a kind records of its own.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::kstatus::kstatus_conditions;
use crate::api::common::CommonStatus;
use crate::conditions::{self, ConditionStatus, DEGRADED, READY};
use crate::error::Error;
use crate::validation::Verdict;

/// Reason of a Ready condition on a spec that passed validation.
const SPEC_VALID: &str = "SpecValid";

/// A condition a reconcile wants on the object, without its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Condition type.
    pub type_: &'static str,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// Reason a user or an alert can match on.
    pub reason: String,
    /// What happened, in words.
    pub message: String,
}

impl Wanted {
    /// A condition of `type_`.
    pub fn new(
        type_: &'static str,
        status: ConditionStatus,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// Whether this condition reports a problem: Ready False, or Degraded True.
    pub(super) fn is_problem(&self) -> bool {
        (self.type_ == READY && self.status == ConditionStatus::False)
            || (self.type_ == conditions::DEGRADED && self.status == ConditionStatus::True)
    }
}

/// What acting on a valid spec produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Conditions to set (Ready among them).
    pub conditions: Vec<Wanted>,
    /// Kind-specific status fields, written beside `observedGeneration` and `conditions`.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// When to look again without a change.
    pub requeue: Requeue,
}

/// When to reconcile an object again although nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Only on a change.
    OnChange,
    /// After a fixed time, to notice drift outside Kubernetes.
    After(std::time::Duration),
    /// After a growing delay: something outside failed and is retried.
    Backoff,
}

impl Outcome {
    /// The outcome of a kind this operator version validates but does not act on.
    pub fn validated_only(kind: &str) -> Self {
        Self {
            conditions: vec![Wanted::new(
                READY,
                ConditionStatus::Unknown,
                SPEC_VALID,
                format!("the spec is valid; this operator version validates {kind} objects and does not yet act on them"),
            )],
            fields: serde_json::Map::new(),
            requeue: Requeue::OnChange,
        }
    }
}

/// The conditions a verdict (and, for a valid spec, the outcome of acting
/// on it) calls for, from the status the object has now.
pub fn desired_status(
    current: Option<&CommonStatus>,
    generation: Option<i64>,
    verdict: &Verdict,
    outcome: &Outcome,
    now: Time,
) -> CommonStatus {
    let mut conditions = current.map(|c| c.conditions.clone()).unwrap_or_default();
    let wanted = match verdict.reason() {
        None => outcome.conditions.clone(),
        Some(reason) => vec![Wanted::new(
            READY,
            ConditionStatus::False,
            reason.as_str(),
            verdict.message(),
        )],
    };
    for want in wanted {
        upsert_wanted(&mut conditions, want, generation, now.clone());
    }
    for want in kstatus_conditions(&conditions) {
        upsert_wanted(&mut conditions, want, generation, now.clone());
    }
    CommonStatus {
        observed_generation: generation,
        conditions,
    }
}

fn upsert_wanted(
    conditions: &mut Vec<Condition>,
    want: Wanted,
    generation: Option<i64>,
    now: Time,
) {
    conditions::upsert(
        conditions,
        conditions::condition(
            want.type_,
            want.status,
            &want.reason,
            want.message,
            generation,
            now,
        ),
    );
}

/// Reason of the Degraded condition a successful reconcile sets after a
/// failed one, for kinds that do not report Degraded themselves.
const RECONCILED: &str = "Reconciled";

/// What a reconcile of an object with `current` conditions changes in them
/// when acting failed with `error`, or (`error` is `None`) succeeded with
/// `outcome`: a failure shows as Degraded with the error's category (set
/// once per category, so a message that differs every time does not write
/// status on every retry); a success clears a Degraded the kind does not
/// set itself.
pub(super) fn failure_condition(
    current: &[Condition],
    error: Option<&Error>,
    outcome: &Outcome,
) -> Option<Wanted> {
    let degraded = conditions::find(current, DEGRADED).filter(|c| conditions::holds(c));
    match error {
        Some(error) => {
            let reason = error.category();
            (degraded.map(|c| c.reason.as_str()) != Some(reason)).then(|| {
                Wanted::new(
                    DEGRADED,
                    ConditionStatus::True,
                    reason,
                    format!("acting on this object failed and is retried with backoff: {error}"),
                )
            })
        }
        None => {
            let own = outcome.conditions.iter().any(|c| c.type_ == DEGRADED);
            (degraded.is_some() && !own).then(|| {
                Wanted::new(
                    DEGRADED,
                    ConditionStatus::False,
                    RECONCILED,
                    "the last reconcile succeeded",
                )
            })
        }
    }
}

/// How a kind acts on a valid spec.
/// The fields of a status beside the common ones (conditions and
/// `observedGeneration`): what each kind records of its own.
pub fn own_fields(status: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match status {
        serde_json::Value::Object(map) => map
            .into_iter()
            .filter(|(key, _)| key != "conditions" && key != "observedGeneration")
            .collect(),
        _ => serde_json::Map::new(),
    }
}

/// A stored condition seen as a wanted one, to tell problems from the rest.
pub(super) fn as_wanted(condition: &Condition) -> Wanted {
    let type_ = if condition.type_ == READY {
        READY
    } else if condition.type_ == conditions::DEGRADED {
        conditions::DEGRADED
    } else {
        ""
    };
    Wanted::new(
        type_,
        ConditionStatus::of(condition),
        condition.reason.clone(),
        condition.message.clone(),
    )
}

/// `Display` and the conversion into a condition's reason (`String`) for a
/// kind's enum of reasons, both spelled by its `as_str`, and a test that the
/// user guide `$guide` has a row for each of its `ALL`.
macro_rules! condition_reason {
    ($reason:ty, $guide:literal) => {
        impl std::fmt::Display for $reason {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl From<$reason> for String {
            fn from(reason: $reason) -> Self {
                reason.as_str().to_string()
            }
        }

        #[cfg(test)]
        #[test]
        fn every_reason_is_documented_for_users() {
            $crate::controller::status::assert_documented(
                <$reason>::ALL.iter().map(|r| r.as_str()),
                $guide,
            );
        }
    };
}
pub(crate) use condition_reason;

/// Fails naming each of `reasons` that the user guide at `path` has no
/// table row for: a row starting with the reason in backquotes.
#[cfg(test)]
pub(crate) fn assert_documented<'a>(reasons: impl IntoIterator<Item = &'a str>, path: &str) {
    let guide = match path {
        "docs/backfill.md" => include_str!("../../docs/backfill.md"),
        "docs/discovery.md" => include_str!("../../docs/discovery.md"),
        "docs/pipelines.md" => include_str!("../../docs/pipelines.md"),
        other => panic!("no user guide {other} to look in"),
    };
    let missing: Vec<&str> = reasons
        .into_iter()
        .filter(|reason| !guide.contains(&format!("| `{reason}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "{path}'s table of reasons lacks {missing:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::SpecProblem;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("valid timestamp"))
    }

    #[test]
    fn a_failure_shows_as_degraded_once_per_category_and_a_success_clears_it() {
        let success = Outcome::validated_only("Pipeline");
        let error = Error::MissingObjectField("metadata.namespace");
        let shown = failure_condition(&[], Some(&error), &success).expect("a condition");
        assert_eq!(
            (shown.type_, shown.status, shown.reason.as_str()),
            (DEGRADED, ConditionStatus::True, error.category())
        );
        let degraded = conditions::condition(
            DEGRADED,
            ConditionStatus::True,
            &shown.reason,
            shown.message,
            Some(1),
            at(1),
        );
        let current = [degraded];
        assert_eq!(failure_condition(&current, Some(&error), &success), None);
        let cleared = failure_condition(&current, None, &success).expect("cleared");
        assert_eq!(
            (cleared.status, cleared.reason.as_str()),
            (ConditionStatus::False, RECONCILED)
        );
        let mut reports = success.clone();
        reports.conditions.push(Wanted::new(
            DEGRADED,
            ConditionStatus::False,
            "NoFailure",
            "fine",
        ));
        assert_eq!(failure_condition(&current, None, &reports), None);
        assert_eq!(failure_condition(&[], None, &success), None);
    }

    #[test]
    fn an_unchanged_verdict_gives_an_unchanged_status() {
        let verdict = Verdict::from_problems(vec![SpecProblem::invalid(
            "spec.to",
            "must be after spec.from",
        )]);
        let outcome = Outcome::validated_only("Backfill");
        let first = desired_status(None, Some(1), &verdict, &outcome, at(1));
        let again = desired_status(Some(&first), Some(1), &verdict, &outcome, at(99));
        assert_eq!(first, again);
        let ready = conditions::find(&first.conditions, READY).expect("ready condition");
        assert_eq!(
            (ConditionStatus::of(ready), ready.reason.as_str()),
            (ConditionStatus::False, "InvalidSpec")
        );
        assert_eq!(ready.message, "spec.to: must be after spec.from");
    }

    #[test]
    fn a_fixed_spec_flips_ready_and_records_the_new_generation() {
        let verdict = Verdict::from_problems(vec![SpecProblem::invalid("spec.to", "bad")]);
        let outcome = Outcome::validated_only("Backfill");
        let refused = desired_status(None, Some(1), &verdict, &outcome, at(1));
        let fixed = desired_status(Some(&refused), Some(2), &Verdict::Valid, &outcome, at(5));
        let ready = conditions::find(&fixed.conditions, READY).expect("ready condition");
        assert_eq!(
            (ConditionStatus::of(ready), ready.reason.as_str()),
            (ConditionStatus::Unknown, SPEC_VALID)
        );
        assert_eq!(ready.last_transition_time, at(5));
        assert_eq!(fixed.observed_generation, Some(2));
    }
}
