//! The `Reconciling` and `Stalled` conditions that kstatus (Flux, `kubectl
//! wait`, Argo CD's health checks) reads beside `Ready`, derived from the
//! conditions a reconcile wrote. Both follow kstatus' abnormal-true
//! convention: `True` means not done. `Stalled` is `True` when nothing moves
//! until the user changes something (a refused spec, an immutable change, a
//! run that failed for good); `Reconciling` is `True` while the object is on
//! its way (not Ready, or `Progressing`) and not stalled.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::verdict::Wanted;
use crate::conditions::{self, DEGRADED, PROGRESSING, READY, RECONCILING, STALLED};

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
        let problem =
            (c.type_ == READY && c.status != "True") || (c.type_ == DEGRADED && c.status == "True");
        problem && NEEDS_USER.contains(&c.reason.as_str())
    });
    if let Some(stuck) = stuck {
        return [
            Wanted::new(
                RECONCILING,
                "False",
                "Stalled",
                "nothing moves until the spec changes (see Stalled)",
            ),
            Wanted::new(STALLED, "True", stuck.reason.clone(), stuck.message.clone()),
        ];
    }
    let not_stalled = Wanted::new(
        STALLED,
        "False",
        "NotStalled",
        "nothing waits for a change from the user",
    );
    let progressing = conditions::find(conditions, PROGRESSING).filter(|c| c.status == "True");
    let ready = conditions::find(conditions, READY);
    let on_the_way = progressing.or(ready.filter(|c| c.status != "True"));
    let reconciling = match (on_the_way, ready) {
        (Some(step), _) => Wanted::new(
            RECONCILING,
            "True",
            step.reason.clone(),
            step.message.clone(),
        ),
        (None, Some(_)) => Wanted::new(
            RECONCILING,
            "False",
            "Reconciled",
            "the object is as its spec asks",
        ),
        (None, None) => Wanted::new(
            RECONCILING,
            "True",
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

    fn condition(type_: &str, status: &str, reason: &str) -> Condition {
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
    fn concluded(conditions: &[Condition]) -> [(&'static str, String); 2] {
        kstatus_conditions(conditions).map(|w| (w.status, w.reason))
    }

    /// A case: its name, the conditions, and (status, reason) of
    /// Reconciling and Stalled.
    type Case = (
        &'static str,
        Vec<Condition>,
        [(&'static str, &'static str); 2],
    );

    #[test]
    fn what_kstatus_concludes_per_case() {
        let cases: &[Case] = &[
            (
                "ready",
                vec![condition(READY, "True", "ReplicasReady")],
                [("False", "Reconciled"), ("False", "NotStalled")],
            ),
            (
                "suspended",
                vec![condition(READY, "True", "Suspended")],
                [("False", "Reconciled"), ("False", "NotStalled")],
            ),
            (
                "invalid",
                vec![condition(READY, "False", "InvalidSpec")],
                [("False", "Stalled"), ("True", "InvalidSpec")],
            ),
            (
                "missing reference",
                vec![condition(READY, "False", "PipelineNotFound")],
                [("False", "Stalled"), ("True", "PipelineNotFound")],
            ),
            (
                "immutable change",
                vec![
                    condition(READY, "True", "ClustersReady"),
                    condition(DEGRADED, "True", "ImmutableClusterChanged"),
                ],
                [("False", "Stalled"), ("True", "ImmutableClusterChanged")],
            ),
            (
                "failed backfill",
                vec![
                    condition(READY, "False", "Failed"),
                    condition(DEGRADED, "True", "RunFailed"),
                ],
                [("False", "Stalled"), ("True", "Failed")],
            ),
            (
                "starting",
                vec![condition(READY, "Unknown", "JobStarting")],
                [("True", "JobStarting"), ("False", "NotStalled")],
            ),
            (
                "retrying",
                vec![condition(READY, "False", "ClusterUnreachable")],
                [("True", "ClusterUnreachable"), ("False", "NotStalled")],
            ),
            (
                "moving",
                vec![
                    condition(READY, "True", "ClustersReady"),
                    condition(PROGRESSING, "True", "AwaitingProducers"),
                ],
                [("True", "AwaitingProducers"), ("False", "NotStalled")],
            ),
            (
                "transient failure",
                vec![
                    condition(READY, "True", "ClustersReady"),
                    condition(DEGRADED, "True", "KubeApiError"),
                ],
                [("False", "Reconciled"), ("False", "NotStalled")],
            ),
            (
                "new",
                vec![],
                [("True", "NotObserved"), ("False", "NotStalled")],
            ),
        ];
        for (case, conditions, expected) in cases {
            let expected = expected.map(|(status, reason)| (status, reason.to_string()));
            assert_eq!(concluded(conditions), expected, "{case}");
        }
    }
}
