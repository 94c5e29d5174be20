//! Streams as Kafka topics: the topic a stream asks for, and what to do
//! about the topic a cluster has.

use std::collections::BTreeMap;

use super::{DesiredTopic, ObservedTopic};
use crate::api::kafka_cluster_set::{CleanupPolicy, StreamSpec};
use crate::duration::SpecDuration;

/// The topic of a stream on every cluster: its name, size and configuration
/// (the typed fields turned into Kafka's keys, then the raw `config`).
pub fn desired_topic(stream: &StreamSpec) -> DesiredTopic {
    let mut config = BTreeMap::new();
    let policy = match stream.cleanup_policy {
        CleanupPolicy::Delete => "delete",
        CleanupPolicy::Compact => "compact",
        CleanupPolicy::CompactDelete => "compact,delete",
    };
    config.insert("cleanup.policy".to_string(), policy.to_string());
    if let Some(retention) = stream.retention.as_ref().and_then(SpecDuration::ok) {
        config.insert(
            "retention.ms".to_string(),
            retention.as_millis().to_string(),
        );
    }
    if stream.tiered_storage {
        config.insert("remote.storage.enable".to_string(), "true".to_string());
    }
    config.extend(stream.config.clone());
    DesiredTopic {
        name: stream.topic.clone().unwrap_or_else(|| stream.name.clone()),
        partitions: stream.partitions,
        replication: stream.replication,
        config,
    }
}

/// What a cluster's topic needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPlan {
    /// It does not exist: create it.
    Create,
    /// It has fewer partitions than declared: add partitions.
    Grow {
        /// Partitions now.
        from: i32,
    },
    /// It has more partitions than declared; Kafka cannot remove partitions.
    RefuseShrink {
        /// Partitions now.
        actual: i32,
    },
    /// Nothing to do.
    UpToDate,
}

/// Compares the declared topic with the one the cluster reports.
pub fn plan(desired: &DesiredTopic, observed: Option<&ObservedTopic>) -> TopicPlan {
    match observed {
        None => TopicPlan::Create,
        Some(topic) if topic.partitions < desired.partitions => TopicPlan::Grow {
            from: topic.partitions,
        },
        Some(topic) if topic.partitions > desired.partitions => TopicPlan::RefuseShrink {
            actual: topic.partitions,
        },
        Some(_) => TopicPlan::UpToDate,
    }
}

/// Declared configuration entries the cluster reports with another value or
/// not at all: what to set. Entries the spec does not name are left alone.
pub fn config_drift(desired: &DesiredTopic, observed: &ObservedTopic) -> Vec<(String, String)> {
    desired
        .config
        .iter()
        .filter(|(key, value)| observed.config.get(*key) != Some(*value))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(json: serde_json::Value) -> StreamSpec {
        serde_json::from_value(json).expect("stream spec")
    }

    #[test]
    fn typed_fields_become_kafka_keys_and_the_name_defaults_to_the_stream() {
        let topic = desired_topic(&stream(serde_json::json!({
            "name": "orders", "partitions": 3, "retention": "7d",
            "cleanupPolicy": "compact,delete", "config": {"max.message.bytes": "1048576"}
        })));
        assert_eq!(topic.name, "orders");
        assert_eq!(topic.partitions, 3);
        assert_eq!(topic.config["cleanup.policy"], "compact,delete");
        assert_eq!(topic.config["retention.ms"], "604800000");
        assert_eq!(topic.config["max.message.bytes"], "1048576");
        assert!(!topic.config.contains_key("remote.storage.enable"));
    }

    #[test]
    fn partitions_only_grow() {
        let desired = desired_topic(&stream(serde_json::json!({"name": "s", "partitions": 4})));
        let with = |partitions| ObservedTopic {
            partitions,
            config: BTreeMap::new(),
        };
        assert_eq!(plan(&desired, None), TopicPlan::Create);
        assert_eq!(plan(&desired, Some(&with(2))), TopicPlan::Grow { from: 2 });
        assert_eq!(
            plan(&desired, Some(&with(6))),
            TopicPlan::RefuseShrink { actual: 6 }
        );
        assert_eq!(plan(&desired, Some(&with(4))), TopicPlan::UpToDate);
    }

    #[test]
    fn drift_lists_declared_entries_the_cluster_lacks() {
        let desired = desired_topic(&stream(serde_json::json!({"name": "s", "retention": "1h"})));
        let observed = ObservedTopic {
            partitions: 6,
            config: BTreeMap::from([("cleanup.policy".to_string(), "delete".to_string())]),
        };
        assert_eq!(
            config_drift(&desired, &observed),
            [("retention.ms".to_string(), "3600000".to_string())]
        );
    }
}
