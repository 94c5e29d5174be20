//! The `Reconciling` and `Stalled` conditions that kstatus (Flux, `kubectl
//! wait`, Argo CD's health checks) reads beside `Ready`, derived from the
//! conditions a reconcile wrote. Both follow kstatus' abnormal-true
//! convention: `True` means not done. `Stalled` is `True` when nothing moves
//! until the user changes something (a refused spec, an immutable change, a
//! run that failed for good); `Reconciling` is `True` while the object is on
//! its way (not Ready, or `Progressing`) and not stalled.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::status::Wanted;
use crate::conditions::{
    self, ConditionStatus, DEGRADED, PROGRESSING, READY, RECONCILING, STALLED,
};

/// Reasons of a `Ready` condition that is not `True`, or of a
/// `Degraded=True` one, after which the operator cannot go on without a
/// change to the spec: the refusals of the spec (including references to
/// objects that do not exist), what this version does not do, changes the
/// operator refuses to make, and runs that failed for good.
const NEEDS_USER: &[&str] = &[
    "InvalidSpec",
    "KafkaClusterSetNotFound",
    "PipelineNotFound",
    "SavepointNotFound",
    "ReferencedObjectInvalid",
    "ImmutableClusterChanged",
    "PartitionDecreaseRefused",
    "ReplicationImpossible",
    "EngineNotSupported",
    "StartStateNotSupported",
    "Failed",
    "RunFailed",
];

/// `Reconciling` and `Stalled` for an object whose other conditions are
/// `conditions`.
pub fn kstatus_conditions(conditions: &[Condition]) -> [Wanted; 2] {
    let stuck = conditions.iter().find(|c| {
        let problem = (c.type_ == READY && !conditions::holds(c))
            || (c.type_ == DEGRADED && conditions::holds(c));
        problem && NEEDS_USER.contains(&c.reason.as_str())
    });
    if let Some(stuck) = stuck {
        return [
            Wanted::new(
                RECONCILING,
                ConditionStatus::False,
                "Stalled",
                "nothing moves until the spec changes (see Stalled)",
            ),
            Wanted::new(
                STALLED,
                ConditionStatus::True,
                stuck.reason.clone(),
                stuck.message.clone(),
            ),
        ];
    }
    let not_stalled = Wanted::new(
        STALLED,
        ConditionStatus::False,
        "NotStalled",
        "nothing waits for a change from the user",
    );
    let progressing = conditions::find(conditions, PROGRESSING).filter(|c| conditions::holds(c));
    let ready = conditions::find(conditions, READY);
    let on_the_way = progressing.or(ready.filter(|c| !conditions::holds(c)));
    let reconciling = match (on_the_way, ready) {
        (Some(step), _) => Wanted::new(
            RECONCILING,
            ConditionStatus::True,
            step.reason.clone(),
            step.message.clone(),
        ),
        (None, Some(_)) => Wanted::new(
            RECONCILING,
            ConditionStatus::False,
            "Reconciled",
            "the object is as its spec asks",
        ),
        (None, None) => Wanted::new(
            RECONCILING,
            ConditionStatus::True,
            "NotObserved",
            "the operator has not acted on this object yet",
        ),
    };
    [reconciling, not_stalled]
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn condition(type_: &str, status: ConditionStatus, reason: &str) -> Condition {
        conditions::condition(
            type_,
            status,
            reason,
            format!("{reason} in words"),
            Some(1),
            Time(Timestamp::UNIX_EPOCH),
        )
    }

    /// (Reconciling, Stalled) statuses and reasons for `conditions`.
    fn concluded(conditions: &[Condition]) -> [(ConditionStatus, String); 2] {
        kstatus_conditions(conditions).map(|w| (w.status, w.reason))
    }

    /// A case: its name, the conditions, and (status, reason) of
    /// Reconciling and Stalled.
    type Case = (
        &'static str,
        Vec<Condition>,
        [(ConditionStatus, &'static str); 2],
    );

    #[test]
    fn what_kstatus_concludes_per_case() {
        let cases: &[Case] = &[
            (
                "ready",
                vec![condition(READY, ConditionStatus::True, "ReplicasReady")],
                [
                    (ConditionStatus::False, "Reconciled"),
                    (ConditionStatus::False, "NotStalled"),
                ],
            ),
            (
                "suspended",
                vec![condition(READY, ConditionStatus::True, "Suspended")],
                [
                    (ConditionStatus::False, "Reconciled"),
                    (ConditionStatus::False, "NotStalled"),
                ],
            ),
            (
                "invalid",
                vec![condition(READY, ConditionStatus::False, "InvalidSpec")],
                [
                    (ConditionStatus::False, "Stalled"),
                    (ConditionStatus::True, "InvalidSpec"),
                ],
            ),
            (
                "missing reference",
                vec![condition(READY, ConditionStatus::False, "PipelineNotFound")],
                [
                    (ConditionStatus::False, "Stalled"),
                    (ConditionStatus::True, "PipelineNotFound"),
                ],
            ),
            (
                "immutable change",
                vec![
                    condition(READY, ConditionStatus::True, "ClustersReady"),
                    condition(DEGRADED, ConditionStatus::True, "ImmutableClusterChanged"),
                ],
                [
                    (ConditionStatus::False, "Stalled"),
                    (ConditionStatus::True, "ImmutableClusterChanged"),
                ],
            ),
            (
                "failed backfill",
                vec![
                    condition(READY, ConditionStatus::False, "Failed"),
                    condition(DEGRADED, ConditionStatus::True, "RunFailed"),
                ],
                [
                    (ConditionStatus::False, "Stalled"),
                    (ConditionStatus::True, "Failed"),
                ],
            ),
            (
                "starting",
                vec![condition(READY, ConditionStatus::Unknown, "JobStarting")],
                [
                    (ConditionStatus::True, "JobStarting"),
                    (ConditionStatus::False, "NotStalled"),
                ],
            ),
            (
                "retrying",
                vec![condition(
                    READY,
                    ConditionStatus::False,
                    "ClusterUnreachable",
                )],
                [
                    (ConditionStatus::True, "ClusterUnreachable"),
                    (ConditionStatus::False, "NotStalled"),
                ],
            ),
            (
                "moving",
                vec![
                    condition(READY, ConditionStatus::True, "ClustersReady"),
                    condition(PROGRESSING, ConditionStatus::True, "AwaitingProducers"),
                ],
                [
                    (ConditionStatus::True, "AwaitingProducers"),
                    (ConditionStatus::False, "NotStalled"),
                ],
            ),
            (
                "transient failure",
                vec![
                    condition(READY, ConditionStatus::True, "ClustersReady"),
                    condition(DEGRADED, ConditionStatus::True, "KubeApiError"),
                ],
                [
                    (ConditionStatus::False, "Reconciled"),
                    (ConditionStatus::False, "NotStalled"),
                ],
            ),
            (
                "new",
                vec![],
                [
                    (ConditionStatus::True, "NotObserved"),
                    (ConditionStatus::False, "NotStalled"),
                ],
            ),
        ];
        for (case, conditions, expected) in cases {
            let expected = expected.map(|(status, reason)| (status, reason.to_string()));
            assert_eq!(concluded(conditions), expected, "{case}");
        }
    }
}
