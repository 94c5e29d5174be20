//! Events that tell a user when a condition starts, changes or stops
//! reporting a problem.

use kube::core::DeserializeGuard;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use super::status::as_wanted;
use super::{Kind, Shared};
use crate::api::common::CommonStatus;
use crate::conditions;

/// Longest Event note the Events API accepts.
pub const EVENT_NOTE_LIMIT: usize = 1024;

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
        if let Err(error) = shared
            .recorder
            .publish(&event, &guard.object_ref(&()))
            .await
        {
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
    fn long_notes_are_cut_on_a_character_boundary() {
        let cut = truncate("é".repeat(1000), EVENT_NOTE_LIMIT);
        assert!(cut.len() <= EVENT_NOTE_LIMIT);
        assert!(cut.ends_with("..."));
    }
}
