//! Standard conditions, kept stable across reconciles.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The `Ready` condition type.
pub const READY: &str = "Ready";
/// The `Degraded` condition type: something needs a person's attention.
pub const DEGRADED: &str = "Degraded";
/// The `Progressing` condition type: the object is moving towards its spec.
pub const PROGRESSING: &str = "Progressing";
/// The `Reconciling` condition type (kstatus): `True` while the object is
/// on its way to its spec.
pub const RECONCILING: &str = "Reconciling";
/// The `Stalled` condition type (kstatus): `True` when nothing moves until
/// the spec changes.
pub const STALLED: &str = "Stalled";

/// The status of a condition: the three values the API allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known (yet).
    Unknown,
}

impl ConditionStatus {
    /// The value as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }

    /// The status of a stored condition; anything but `True` or `False`
    /// reads as `Unknown`.
    pub fn of(condition: &Condition) -> Self {
        match condition.status.as_str() {
            "True" => Self::True,
            "False" => Self::False,
            _ => Self::Unknown,
        }
    }
}

/// Whether `condition` holds (its status is `True`).
pub fn holds(condition: &Condition) -> bool {
    ConditionStatus::of(condition) == ConditionStatus::True
}

/// Sets `new` in `conditions`, replacing the condition of the same type. The
/// `lastTransitionTime` of the existing one is kept unless the status flips,
/// so a reconcile that changes nothing writes nothing.
pub fn upsert(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = new;
        }
        None => conditions.push(new),
    }
}

/// The condition of type `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// A condition stamped with `now` as its transition time.
pub fn condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.as_str().to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("valid timestamp"))
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conditions = vec![];
        upsert(
            &mut conditions,
            condition(
                READY,
                ConditionStatus::False,
                "InvalidSpec",
                "a".into(),
                Some(1),
                at(10),
            ),
        );
        upsert(
            &mut conditions,
            condition(
                READY,
                ConditionStatus::False,
                "InvalidSpec",
                "b".into(),
                Some(2),
                at(20),
            ),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].message, "b");
        upsert(
            &mut conditions,
            condition(
                READY,
                ConditionStatus::Unknown,
                "SpecValid",
                "c".into(),
                Some(3),
                at(30),
            ),
        );
        assert_eq!(conditions[0].last_transition_time, at(30));
        assert_eq!(
            find(&conditions, READY).map(|c| c.reason.as_str()),
            Some("SpecValid")
        );
    }
}
