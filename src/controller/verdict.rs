//! Turns a validation verdict into status and Events: the part of every
//! reconcile that is the same for all kinds.

use std::time::Instant;

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use super::kstatus::kstatus_conditions;
use super::{Kind, Shared};
use crate::api::common::CommonStatus;
use crate::conditions::{self, DEGRADED, READY};
use crate::error::Error;
use crate::validation::{SpecProblem, Verdict};

/// The field manager of everything this operator writes.
pub const FIELD_MANAGER: &str = "kappa-operator";

/// Reason of a Ready condition on a spec that passed validation.
const SPEC_VALID: &str = "SpecValid";

/// Longest Event note the Events API accepts.
pub const EVENT_NOTE_LIMIT: usize = 1024;

/// A condition a reconcile wants on the object, without its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Condition type.
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// Reason a user or an alert can match on.
    pub reason: String,
    /// What happened, in words.
    pub message: String,
}

impl Wanted {
    /// A condition of `type_`.
    pub fn new(
        type_: &'static str,
        status: &'static str,
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
    fn is_problem(&self) -> bool {
        (self.type_ == READY && self.status == "False")
            || (self.type_ == conditions::DEGRADED && self.status == "True")
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
                "Unknown",
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
            "False",
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
fn failure_condition(
    current: &[Condition],
    error: Option<&Error>,
    outcome: &Outcome,
) -> Option<Wanted> {
    let degraded = conditions::find(current, DEGRADED).filter(|c| c.status == "True");
    match error {
        Some(error) => {
            let reason = error.category();
            (degraded.map(|c| c.reason.as_str()) != Some(reason)).then(|| {
                Wanted::new(
                    DEGRADED,
                    "True",
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
                    "False",
                    RECONCILED,
                    "the last reconcile succeeded",
                )
            })
        }
    }
}

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
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": desired,
    });
    let written = api
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await;
    if let Some(error) = failure {
        if let Err(unwritten) = written {
            tracing::debug!(error = %unwritten, "the failure could not be recorded in status");
        } else {
            publish_events(shared, guard, current.as_ref(), &common).await;
        }
        return Err(error);
    }
    written?;
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

/// Events for conditions that start, change or stop reporting a problem:
/// a Warning naming the problem, a Normal one when it is gone. Conditions
/// that report no problem before and after say nothing, so creating many
/// valid objects creates no Events.
async fn publish_events<K: Kind>(
    shared: &Shared,
    guard: &DeserializeGuard<K>,
    current: Option<&CommonStatus>,
    desired: &CommonStatus,
) {
    for condition in &desired.conditions {
        let now = as_wanted(condition);
        let before = current
            .and_then(|c| conditions::find(&c.conditions, &condition.type_))
            .map(as_wanted);
        let event = match &before {
            _ if now.is_problem() => {
                if before
                    .as_ref()
                    .is_some_and(|b| b.reason == now.reason && b.message == now.message)
                {
                    continue;
                }
                Event {
                    type_: EventType::Warning,
                    reason: now.reason.clone(),
                    note: Some(truncate(now.message.clone(), EVENT_NOTE_LIMIT)),
                    action: condition.type_.clone(),
                    secondary: None,
                }
            }
            Some(b) if b.is_problem() => Event {
                type_: EventType::Normal,
                reason: now.reason.clone(),
                note: Some(truncate(
                    format!("{} is resolved: {}", b.reason, now.message),
                    EVENT_NOTE_LIMIT,
                )),
                action: condition.type_.clone(),
                secondary: None,
            },
            _ => continue,
        };
        if let Err(error) = shared
            .recorder
            .publish(&event, &guard.object_ref(&()))
            .await
        {
            tracing::warn!(controller = K::CONTROLLER, name = guard.name_any(), %error, "could not publish an Event");
        }
    }
}

/// A stored condition seen as a wanted one, to tell problems from the rest.
fn as_wanted(condition: &Condition) -> Wanted {
    let type_ = if condition.type_ == READY {
        READY
    } else if condition.type_ == conditions::DEGRADED {
        conditions::DEGRADED
    } else {
        ""
    };
    let status = match condition.status.as_str() {
        "True" => "True",
        "False" => "False",
        _ => "Unknown",
    };
    Wanted::new(
        type_,
        status,
        condition.reason.clone(),
        condition.message.clone(),
    )
}

/// `text` cut to at most `limit` bytes, ending in `...` when cut.
pub fn truncate(mut text: String, limit: usize) -> String {
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
    fn a_failure_shows_as_degraded_once_per_category_and_a_success_clears_it() {
        let success = Outcome::validated_only("Pipeline");
        let error = Error::MissingObjectField("metadata.namespace");
        let shown = failure_condition(&[], Some(&error), &success).expect("a condition");
        assert_eq!(
            (shown.type_, shown.status, shown.reason.as_str()),
            (DEGRADED, "True", error.category())
        );
        let degraded = conditions::condition(
            DEGRADED,
            "True",
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
            ("False", RECONCILED)
        );
        let mut reports = success.clone();
        reports
            .conditions
            .push(Wanted::new(DEGRADED, "False", "NoFailure", "fine"));
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
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSpec")
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
