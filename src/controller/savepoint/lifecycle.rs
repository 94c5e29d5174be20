//! The lifecycle every kind of Savepoint shares: final phases, failed
//! attempts counted against `backoffLimit`, the outcome to record.

use super::reason::Reason;
use crate::api::savepoint::{Savepoint, SavepointPhase, SavepointStatus};
use crate::conditions::{ConditionStatus, READY};
use crate::controller::status::{own_fields, Outcome, Requeue, Wanted};
use crate::error::Error;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The outcome of a savepoint that ended without a snapshot (Failed or
/// Abandoned): it stays so until it is deleted.
pub fn ended(status: &SavepointStatus) -> Option<Result<Outcome, Error>> {
    let reason = match status.phase? {
        SavepointPhase::Failed => Reason::SavepointFailed,
        SavepointPhase::Abandoned => Reason::SavepointAbandoned,
        _ => return None,
    };
    let error = status.error.clone().unwrap_or_default();
    Some(done(status, ConditionStatus::False, reason, error))
}

/// Counts a failed attempt: tried again until `backoffLimit` is used up.
pub fn failed_attempt(
    savepoint: &Savepoint,
    mut status: SavepointStatus,
    error: String,
) -> Result<Outcome, Error> {
    status.failures += 1;
    status.error = Some(error.clone());
    status.trigger_id = None;
    if status.failures > savepoint.spec.backoff_limit {
        status.phase = Some(SavepointPhase::Failed);
        status.completion_time = Some(Time(Timestamp::now()));
        return done(
            &status,
            ConditionStatus::False,
            Reason::SavepointFailed,
            error,
        );
    }
    status.phase = Some(SavepointPhase::Pending);
    let ready = Wanted::new(
        READY,
        ConditionStatus::False,
        Reason::SavepointRetrying,
        format!(
            "attempt {} of {} failed: {error}",
            status.failures,
            savepoint.spec.backoff_limit + 1
        ),
    );
    outcome(&status, ready, Requeue::Backoff)
}

/// A final phase: nothing more to do until the spec changes.
pub fn done(
    status: &SavepointStatus,
    ready: ConditionStatus,
    reason: Reason,
    message: String,
) -> Result<Outcome, Error> {
    outcome(
        status,
        Wanted::new(READY, ready, reason, message),
        Requeue::OnChange,
    )
}

pub fn outcome(
    status: &SavepointStatus,
    ready: Wanted,
    requeue: Requeue,
) -> Result<Outcome, Error> {
    Ok(Outcome {
        conditions: vec![ready],
        fields: own_fields(serde_json::to_value(status)?),
        requeue,
    })
}
