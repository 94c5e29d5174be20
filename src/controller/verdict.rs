//! Turns a validation verdict into status and Events: the part of every
//! reconcile that is the same for all kinds.

use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use super::{Kind, Shared};
use crate::api::common::CommonStatus;
use crate::conditions::{self, READY};
use crate::error::Error;
use crate::validation::{SpecProblem, Verdict};

/// The field manager of everything this operator writes.
pub const FIELD_MANAGER: &str = "kappa-operator";

/// Reason of a Ready condition on a spec that passed validation.
const SPEC_VALID: &str = "SpecValid";

/// Longest Event note the Events API accepts.
const EVENT_NOTE_LIMIT: usize = 1024;

/// The status a verdict calls for, from the status the object has now.
pub fn desired_status(
    kind: &str,
    current: Option<&CommonStatus>,
    generation: Option<i64>,
    verdict: &Verdict,
    now: Time,
) -> CommonStatus {
    let mut conditions = current.map(|c| c.conditions.clone()).unwrap_or_default();
    let ready = match verdict.reason() {
        None => conditions::condition(
            READY,
            "Unknown",
            SPEC_VALID,
            format!("the spec is valid; this operator version validates {kind} objects and does not yet act on them"),
            generation,
            now,
        ),
        Some(reason) => conditions::condition(READY, "False", reason.as_str(), verdict.message(), generation, now),
    };
    conditions::upsert(&mut conditions, ready);
    CommonStatus {
        observed_generation: generation,
        conditions,
    }
}

/// Reconciles one object: validates it with `validate` (or reports why it
/// cannot be read), writes status when it changed, and publishes an Event
/// when the Ready reason changes.
pub async fn reconcile<K: Kind>(
    shared: &Shared,
    guard: &DeserializeGuard<K>,
    validate: impl FnOnce(&K) -> Vec<SpecProblem>,
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
    let result = reconcile_inner(shared, guard, validate)
        .instrument(span)
        .await;
    shared
        .metrics
        .reconcile_duration
        .with_label_values(&[K::CONTROLLER])
        .observe(started.elapsed().as_secs_f64());
    match &result {
        Ok(_) => shared.reset_backoff(&guard.uid().unwrap_or_default()),
        Err(error) => shared
            .metrics
            .reconcile_errors
            .with_label_values(&[K::CONTROLLER, error.category()])
            .inc(),
    }
    result
}

async fn reconcile_inner<K: Kind>(
    shared: &Shared,
    guard: &DeserializeGuard<K>,
    validate: impl FnOnce(&K) -> Vec<SpecProblem>,
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
    let (verdict, current) = match &guard.0 {
        Ok(object) => (
            Verdict::from_problems(validate(object)),
            object.common_status().cloned(),
        ),
        Err(_) => unreadable::<K>(&api, &name).await?,
    };
    if deleting(guard) {
        return Ok(Action::await_change());
    }
    let now = Time(Timestamp::now());
    let generation = guard.meta().generation;
    let desired = desired_status(&K::kind(&()), current.as_ref(), generation, &verdict, now);
    if current.as_ref() == Some(&desired) {
        return Ok(Action::await_change());
    }
    if let Some(reason) = verdict.reason() {
        shared
            .metrics
            .spec_problems
            .with_label_values(&[K::CONTROLLER, reason.as_str()])
            .inc();
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": desired,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    shared
        .metrics
        .status_writes
        .with_label_values(&[K::CONTROLLER])
        .inc();
    tracing::info!(
        generation,
        reason = verdict.reason().map_or(SPEC_VALID, |r| r.as_str()),
        "status updated"
    );
    publish_event(shared, guard, current.as_ref(), &verdict).await;
    Ok(Action::await_change())
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

/// An Event when the Ready reason changes: a Warning naming the problem, or
/// a Normal one when a refused spec becomes valid. A first valid reconcile
/// says nothing, so creating many valid objects creates no Events.
async fn publish_event<K: Kind>(
    shared: &Shared,
    guard: &DeserializeGuard<K>,
    current: Option<&CommonStatus>,
    verdict: &Verdict,
) {
    let previous = current.and_then(|c| conditions::find(&c.conditions, READY));
    let previous_reason = previous.map(|c| c.reason.as_str());
    let event = match verdict.reason() {
        Some(reason) => Event {
            type_: EventType::Warning,
            reason: reason.as_str().to_string(),
            note: Some(truncate(verdict.message(), EVENT_NOTE_LIMIT)),
            action: "Validate".into(),
            secondary: None,
        },
        None if previous_reason.is_some_and(|r| r != SPEC_VALID) => Event {
            type_: EventType::Normal,
            reason: SPEC_VALID.into(),
            note: Some("the spec is valid again".into()),
            action: "Validate".into(),
            secondary: None,
        },
        None => return,
    };
    if previous_reason == Some(event.reason.as_str())
        && previous.map(|c| &c.message) == event.note.as_ref()
    {
        return;
    }
    if let Err(error) = shared
        .recorder
        .publish(&event, &guard.object_ref(&()))
        .await
    {
        tracing::warn!(controller = K::CONTROLLER, name = guard.name_any(), %error, "could not publish an Event");
    }
}

fn truncate(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit.saturating_sub(3);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::SpecProblem;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("valid timestamp"))
    }

    #[test]
    fn an_unchanged_verdict_gives_an_unchanged_status() {
        let verdict = Verdict::from_problems(vec![SpecProblem::invalid(
            "spec.to",
            "must be after spec.from",
        )]);
        let first = desired_status("Backfill", None, Some(1), &verdict, at(1));
        let again = desired_status("Backfill", Some(&first), Some(1), &verdict, at(99));
        assert_eq!(first, again);
        let ready = conditions::find(&first.conditions, READY).expect("ready condition");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSpec")
        );
        assert_eq!(ready.message, "spec.to: must be after spec.from");
    }

    #[test]
    fn a_fixed_spec_flips_ready_and_records_the_new_generation() {
        let verdict = Verdict::from_problems(vec![SpecProblem::invalid("spec.to", "bad")]);
        let refused = desired_status("Backfill", None, Some(1), &verdict, at(1));
        let fixed = desired_status("Backfill", Some(&refused), Some(2), &Verdict::Valid, at(5));
        let ready = conditions::find(&fixed.conditions, READY).expect("ready condition");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("Unknown", SPEC_VALID)
        );
        assert_eq!(ready.last_transition_time, at(5));
        assert_eq!(fixed.observed_generation, Some(2));
    }

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let cut = truncate("é".repeat(1000), EVENT_NOTE_LIMIT);
        assert!(cut.len() <= EVENT_NOTE_LIMIT);
        assert!(cut.ends_with("..."));
    }
}
