//! The reconcile every kind shares: validate, act on a valid spec, write
//! the status when it changed, publish Events for problems that start or
//! end, and choose when to look again.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use super::events::publish_events;
use super::status::{as_wanted, desired_status, failure_condition, own_fields, Outcome, Requeue};
use super::{Kind, Shared};
use crate::api::common::CommonStatus;
use crate::conditions::{self, READY};
use crate::error::Error;
use crate::validation::{SpecProblem, Verdict};

/// The field manager of everything this operator writes.
pub const FIELD_MANAGER: &str = "kappa-operator";

/// When an object whose status could not be written, because it changed
/// since it was read, is looked at again if no change of it arrives first.
const READ_AGAIN: Duration = Duration::from_secs(1);

/// How a kind acts on a valid spec.
pub trait Act<K>: Send {
    /// Does the work the spec asks for and says how it went.
    fn act<'a>(self, object: &'a K) -> BoxFuture<'a, Result<Outcome, Error>>
    where
        Self: 'a;
}

/// Reconciles one object: validates it with `validate` (or reports why it
/// cannot be read), acts on a valid spec with `act`, writes status when it
/// changed, and publishes an Event when a condition starts or stops
/// reporting a problem.
pub async fn reconcile<K: Kind>(
    shared: &Shared,
    guard: &DeserializeGuard<K>,
    validate: impl FnOnce(&K) -> Vec<SpecProblem>,
    act: impl Act<K>,
) -> Result<Action, Error> {
    let started = Instant::now();
    shared
        .metrics
        .reconciles
        .with_label_values(&[K::CONTROLLER])
        .inc();
    let span = tracing::info_span!(
        "reconcile",
        controller = K::CONTROLLER,
        namespace = guard.namespace().unwrap_or_default(),
        name = guard.name_any()
    );
    let result = reconcile_inner(shared, guard, validate, act)
        .instrument(span)
        .await;
    shared
        .metrics
        .reconcile_duration
        .with_label_values(&[K::CONTROLLER])
        .observe(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        shared
            .metrics
            .reconcile_errors
            .with_label_values(&[K::CONTROLLER, error.category()])
            .inc();
    }
    result
}

async fn reconcile_inner<K: Kind>(
    shared: &Shared,
    guard: &DeserializeGuard<K>,
    validate: impl FnOnce(&K) -> Vec<SpecProblem>,
    act: impl Act<K>,
) -> Result<Action, Error> {
    let namespace = guard
        .namespace()
        .ok_or(Error::MissingObjectField("metadata.namespace"))?;
    let name = guard.name_any();
    let api: Api<DynamicObject> = Api::namespaced_with(
        shared.client.clone(),
        &namespace,
        &ApiResource::erase::<K>(&()),
    );
    if deleting(guard) {
        return Ok(Action::await_change());
    }
    let (verdict, current, current_fields) = match &guard.0 {
        Ok(object) => (
            Verdict::from_problems(validate(object)),
            object.common_status().cloned(),
            status_value(object)?,
        ),
        Err(_) => {
            let (verdict, current) = unreadable::<K>(&api, &name).await?;
            (verdict, current, None)
        }
    };
    let (mut outcome, failure) = match (&verdict, &guard.0) {
        (Verdict::Valid, Ok(object)) => match act.act(object).await {
            Ok(outcome) => (outcome, None),
            // A new leader's caches fill within seconds: not worth a status.
            Err(error @ Error::CacheNotReady(_)) => return Err(error),
            Err(error) => {
                let kept = Outcome {
                    conditions: Vec::new(),
                    fields: own_fields(current_fields.clone().unwrap_or_default()),
                    requeue: Requeue::Backoff,
                };
                (kept, Some(error))
            }
        },
        _ => (Outcome::validated_only(&K::kind(&())), None),
    };
    let conditions_now = current
        .as_ref()
        .map(|c| c.conditions.as_slice())
        .unwrap_or_default();
    if let Some(change) = failure_condition(conditions_now, failure.as_ref(), &outcome) {
        outcome.conditions.push(change);
    }
    let now = Time(Timestamp::now());
    let generation = guard.meta().generation;
    let common = desired_status(current.as_ref(), generation, &verdict, &outcome, now);
    let problems = common
        .conditions
        .iter()
        .filter(|c| as_wanted(c).is_problem())
        .map(|c| (c.type_.clone(), c.reason.clone()))
        .collect();
    shared
        .metrics
        .set_problems(K::CONTROLLER, &namespace, &name, &problems);
    let mut desired = serde_json::to_value(&common)?;
    // While the spec is invalid, the kind's own fields keep what they record
    // (created clusters, a migration under way) until the spec is fixed.
    let own = if verdict == Verdict::Valid {
        outcome.fields.clone()
    } else {
        own_fields(current_fields.clone().unwrap_or_default())
    };
    if let Some(map) = desired.as_object_mut() {
        map.extend(own);
    }
    if current_fields.as_ref() == Some(&desired) {
        return match failure {
            Some(error) => Err(error),
            None => Ok(next_action(shared, guard, outcome.requeue)),
        };
    }
    if let Some(reason) = verdict.reason() {
        shared
            .metrics
            .spec_problems
            .with_label_values(&[K::CONTROLLER, reason.as_str()])
            .inc();
    }
    // The status is written only over the version it was derived from: an
    // object changed since (by a user, or by this operator's previous write
    // that the cache has not caught up with) is read again, never
    // overwritten from a stale copy.
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"resourceVersion": guard.resource_version()},
        "status": desired,
    });
    let written = api
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(drop);
    match (StatusWrite::of(written), failure) {
        (StatusWrite::Stale, failure) => {
            tracing::debug!(
                generation,
                "the object changed since it was read; reading it again"
            );
            return match failure {
                Some(error) => Err(error),
                None => Ok(Action::requeue(READ_AGAIN)),
            };
        }
        (StatusWrite::Failed(unwritten), Some(error)) => {
            tracing::debug!(error = %unwritten, "the failure could not be recorded in status");
            return Err(error);
        }
        (StatusWrite::Failed(unwritten), None) => return Err(unwritten.into()),
        (StatusWrite::Done, Some(error)) => {
            publish_events(shared, guard, current.as_ref(), &common).await;
            return Err(error);
        }
        (StatusWrite::Done, None) => {}
    }
    shared
        .metrics
        .status_writes
        .with_label_values(&[K::CONTROLLER])
        .inc();
    let ready = conditions::find(&common.conditions, READY).map(|c| c.reason.as_str());
    tracing::info!(generation, reason = ready, "status updated");
    publish_events(shared, guard, current.as_ref(), &common).await;
    Ok(next_action(shared, guard, outcome.requeue))
}

/// What the answer to a status write means for the reconcile.
#[derive(Debug)]
enum StatusWrite {
    /// Recorded.
    Done,
    /// Not recorded: the object changed since this reconcile read it, and
    /// what it derived may no longer hold. It is read again.
    Stale,
    /// Not recorded for another reason.
    Failed(kube::Error),
}

impl StatusWrite {
    fn of(answer: Result<(), kube::Error>) -> Self {
        match answer {
            Ok(()) => Self::Done,
            Err(kube::Error::Api(status)) if status.code == 409 => Self::Stale,
            Err(error) => Self::Failed(error),
        }
    }
}

/// The action after a reconcile that finished; only then does the error
/// backoff start over, unless the outcome itself asks to back off.
fn next_action<K: Kind>(shared: &Shared, guard: &DeserializeGuard<K>, requeue: Requeue) -> Action {
    let uid = guard.uid().unwrap_or_default();
    match requeue {
        Requeue::Backoff => return Action::requeue(shared.next_backoff(&uid)),
        Requeue::OnChange | Requeue::After(_) => shared.reset_backoff(&uid),
    }
    match requeue {
        Requeue::After(delay) => Action::requeue(delay),
        Requeue::OnChange | Requeue::Backoff => Action::await_change(),
    }
}

/// The object's status as JSON, for comparison with the desired one.
fn status_value<K: Kind>(object: &K) -> Result<Option<serde_json::Value>, Error> {
    Ok(serde_json::to_value(object)?.get("status").cloned())
}

fn deleting<K: Resource>(object: &K) -> bool {
    object.meta().deletion_timestamp.is_some()
}

/// The verdict on an object that the API server accepted but that does not
/// read as its kind (possible where the schema keeps unknown fields, such as
/// a consumer's pod template): names the offending field.
async fn unreadable<K: Kind>(
    api: &Api<DynamicObject>,
    name: &str,
) -> Result<(Verdict, Option<CommonStatus>), Error> {
    let raw = serde_json::to_value(api.get(name).await?)?;
    let current = raw
        .get("status")
        .and_then(|status| serde_json::from_value::<CommonStatus>(status.clone()).ok());
    let problem = match serde_path_to_error::deserialize::<_, K>(raw) {
        Ok(_) => SpecProblem::invalid(
            "spec",
            "the object changed while it was read; it will be read again",
        ),
        Err(error) => SpecProblem::invalid(error.path().to_string(), error.inner().to_string()),
    };
    Ok((Verdict::from_problems(vec![problem]), current))
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn refused(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(
            Status {
                code,
                reason: reason.into(),
                ..Status::default()
            }
            .boxed(),
        )
    }

    #[test]
    fn a_conflict_means_read_again_and_anything_else_refused_is_a_failure() {
        assert!(matches!(StatusWrite::of(Ok(())), StatusWrite::Done));
        assert!(matches!(
            StatusWrite::of(Err(refused(409, "Conflict"))),
            StatusWrite::Stale
        ));
        for (code, reason) in [(422, "Invalid"), (403, "Forbidden"), (500, "InternalError")] {
            assert!(
                matches!(
                    StatusWrite::of(Err(refused(code, reason))),
                    StatusWrite::Failed(_)
                ),
                "{code} {reason}"
            );
        }
    }
}
