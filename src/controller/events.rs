//! Events that tell a user when a condition starts, changes or stops
//! reporting a problem.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as PostedEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::core::DeserializeGuard;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client, Resource, ResourceExt};

use super::status::as_wanted;
use super::{Kind, Shared};
use crate::api::common::CommonStatus;
use crate::conditions;

/// Longest Event note the Events API accepts.
pub const EVENT_NOTE_LIMIT: usize = 1024;

/// The component named as the reporter of every Event.
const REPORTING_CONTROLLER: &str = "kappa-operator";

/// Posts Events on the operator's objects, each as a new Event. It keeps
/// nothing: kube-runtime's `Recorder` kept every Event it posted for six
/// minutes to count repeats, some 27 MB at 10,000 objects whose conditions
/// had each said one thing once, and the operator posts an Event only when
/// what a condition says changes, so there are no repeats to count.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    /// This replica, as the Events name it: its lease identity, or the
    /// operator's name when it runs without leader election.
    instance: String,
}

impl Publisher {
    /// Posts through `client` as `instance`.
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Self {
            client,
            instance: instance.unwrap_or_else(|| REPORTING_CONTROLLER.to_string()),
        }
    }

    /// Posts `event` about `regarding`, in its namespace.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        Api::<PostedEvent>::namespaced(self.client.clone(), namespace)
            .create(
                &PostParams::default(),
                &posted(event, regarding, &self.instance, Timestamp::now()),
            )
            .await
            .map(drop)
    }
}

/// The Event object that says `event` about `regarding` at `now`, named
/// by the API server after the object.
fn posted(
    event: &Event,
    regarding: &ObjectReference,
    instance: &str,
    now: Timestamp,
) -> PostedEvent {
    PostedEvent {
        metadata: ObjectMeta {
            // The API server checks the prefix as a name that may end
            // in a dash (not a dot).
            generate_name: Some(format!(
                "{}-",
                regarding.name.as_deref().unwrap_or(REPORTING_CONTROLLER)
            )),
            namespace: regarding.namespace.clone(),
            ..ObjectMeta::default()
        },
        action: Some(event.action.clone()),
        reason: Some(event.reason.clone()),
        note: event.note.clone(),
        type_: Some(
            match event.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .to_string(),
        ),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding.clone()),
        related: event.secondary.clone(),
        reporting_controller: Some(REPORTING_CONTROLLER.to_string()),
        reporting_instance: Some(instance.to_string()),
        ..PostedEvent::default()
    }
}

/// Events for conditions that start, change or stop reporting a problem:
/// a Warning naming the problem, a Normal one when it is gone. Conditions
/// that report no problem before and after say nothing, so creating many
/// valid objects creates no Events.
pub(super) async fn publish_events<K: Kind>(
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
        if let Err(error) = shared.events.publish(&event, &guard.object_ref(&())).await {
            tracing::warn!(controller = K::CONTROLLER, name = guard.name_any(), %error, "could not publish an Event");
        }
    }
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

    #[test]
    fn an_event_names_its_object_reporter_and_time() {
        let regarding = ObjectReference {
            kind: Some("Pipeline".into()),
            name: Some("totals".into()),
            namespace: Some("team".into()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "JobFailed".into(),
            note: Some("the job failed".into()),
            action: "Ready".into(),
            secondary: None,
        };
        let now = Timestamp::from_second(1_800_000_000).expect("a time");
        let posted = posted(&event, &regarding, "kappa-operator-0", now);
        assert_eq!(posted.metadata.generate_name.as_deref(), Some("totals-"));
        assert_eq!(posted.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(posted.type_.as_deref(), Some("Warning"));
        assert_eq!(posted.reason.as_deref(), Some("JobFailed"));
        assert_eq!(posted.action.as_deref(), Some("Ready"));
        assert_eq!(posted.note.as_deref(), Some("the job failed"));
        assert_eq!(posted.regarding, Some(regarding));
        assert_eq!(posted.event_time, Some(MicroTime(now)));
        assert_eq!(
            posted.reporting_controller.as_deref(),
            Some("kappa-operator")
        );
        assert_eq!(
            posted.reporting_instance.as_deref(),
            Some("kappa-operator-0")
        );
    }

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let cut = truncate("é".repeat(1000), EVENT_NOTE_LIMIT);
        assert!(cut.len() <= EVENT_NOTE_LIMIT);
        assert!(cut.ends_with("..."));
    }
}
