//! Rules for a KafkaClusterSet that its schema cannot express.

use crate::api::kafka_cluster_set::{
    BuiltinCluster, CleanupPolicy, ClusterEntry, ClusterRole, ClusterSettings, KafkaClusterSetSpec,
    KafkaClusterSetStatus, Provider,
};
use crate::validation::{check_duration, duplicates, SpecProblem};

/// Topic configuration keys that have a typed field of their own.
const TYPED_TOPIC_KEYS: [(&str, &str); 3] = [
    ("cleanup.policy", "cleanupPolicy"),
    ("retention.ms", "retention"),
    ("remote.storage.enable", "tieredStorage"),
];

/// Topic-level configuration keys of Apache Kafka 4.1
/// (<https://kafka.apache.org/documentation/#topicconfigs>), less the ones
/// with a typed field of their own.
const TOPIC_CONFIG_KEYS: [&str; 30] = [
    "compression.gzip.level",
    "compression.lz4.level",
    "compression.type",
    "compression.zstd.level",
    "delete.retention.ms",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "follower.replication.throttled.replicas",
    "index.interval.bytes",
    "leader.replication.throttled.replicas",
    "local.retention.bytes",
    "local.retention.ms",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "preallocate",
    "remote.log.copy.disable",
    "remote.log.delete.on.disable",
    "retention.bytes",
    "segment.bytes",
    "segment.index.bytes",
    "segment.jitter.ms",
    "segment.ms",
    "unclean.leader.election.enable",
];

/// Broker configuration keys the operator sets itself for builtin clusters.
const MANAGED_BROKER_KEYS: [&str; 8] = [
    "node.id",
    "process.roles",
    "controller.quorum.voters",
    "controller.quorum.bootstrap.servers",
    "controller.listener.names",
    "listeners",
    "advertised.listeners",
    "log.dirs",
];

/// The provider and provider settings a cluster ends up with after its overrides.
pub struct EffectiveCluster<'a> {
    /// Who runs it.
    pub provider: Provider,
    /// Builtin settings in force, when builtin.
    pub builtin: Option<&'a BuiltinCluster>,
    /// Whether external settings are present.
    pub has_external: bool,
}

/// Merges a cluster's overrides onto the template.
pub fn effective_cluster<'a>(
    spec: &'a KafkaClusterSetSpec,
    cluster: &'a ClusterEntry,
) -> EffectiveCluster<'a> {
    let overrides = cluster.overrides.as_ref();
    let provider = overrides
        .and_then(|o| o.provider)
        .unwrap_or(spec.template.provider);
    let builtin = overrides
        .and_then(|o| o.builtin.as_ref())
        .or(spec.template.builtin.as_ref());
    let has_external =
        overrides.and_then(|o| o.external.as_ref()).is_some() || spec.template.external.is_some();
    EffectiveCluster {
        provider,
        builtin,
        has_external,
    }
}

/// Every problem with the spec.
pub fn validate(spec: &KafkaClusterSetSpec) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    problems.extend(duplicates(
        spec.clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("spec.clusters[{i}].name"), c.name.as_str())),
        "cluster name",
    ));
    problems.extend(duplicates(
        spec.streams
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("spec.streams[{i}].name"), s.name.as_str())),
        "stream name",
    ));
    problems.extend(duplicates(
        spec.streams.iter().enumerate().map(|(i, s)| {
            (
                format!("spec.streams[{i}].topic"),
                s.topic.as_deref().unwrap_or(&s.name),
            )
        }),
        "topic",
    ));
    check_routing(spec, &mut problems);
    for (i, cluster) in spec.clusters.iter().enumerate() {
        check_cluster(spec, i, cluster, &mut problems);
    }
    if let Some(builtin) = &spec.template.builtin {
        check_broker_config(builtin, "spec.template.builtin.config", &mut problems);
    }
    for (i, stream) in spec.streams.iter().enumerate() {
        let field = format!("spec.streams[{i}]");
        for key in stream.config.keys() {
            if let Some((_, typed)) = TYPED_TOPIC_KEYS.iter().find(|(k, _)| k == key) {
                problems.push(SpecProblem::invalid(
                    format!("{field}.config[{key}]"),
                    format!("set `{typed}` instead of the raw `{key}`"),
                ));
            } else if !TOPIC_CONFIG_KEYS.contains(&key.as_str()) {
                problems.push(SpecProblem::invalid(
                    format!("{field}.config[{key}]"),
                    format!("`{key}` is not a Kafka topic configuration key"),
                ));
            }
        }
        if stream.tiered_storage && stream.cleanup_policy != CleanupPolicy::Delete {
            problems.push(SpecProblem::invalid(
                format!("{field}.tieredStorage"),
                "tiered storage needs cleanupPolicy `delete`: Kafka does not tier compacted topics",
            ));
        }
        if let Some(retention) = &stream.retention {
            problems.extend(check_duration(&format!("{field}.retention"), retention));
        }
        for cluster in &spec.clusters {
            let effective = effective_cluster(spec, cluster);
            let nodes = match (effective.provider, effective.builtin) {
                (Provider::Builtin, Some(builtin)) => builtin.nodes,
                (Provider::Builtin, None) => BuiltinCluster::default().nodes,
                (Provider::External, _) => continue,
            };
            if stream.replication > nodes {
                problems.push(SpecProblem::invalid(
                    format!("{field}.replication"),
                    format!(
                        "replication {} exceeds the {nodes} node(s) of builtin cluster `{}`",
                        stream.replication, cluster.name
                    ),
                ));
            }
        }
    }
    problems
}

/// The clusters of `spec` (index and name) whose settings differ from
/// the ones `status` recorded when they were created: clusters are
/// immutable, so such a change is never applied.
pub fn changed_clusters<'a>(
    spec: &'a KafkaClusterSetSpec,
    status: Option<&KafkaClusterSetStatus>,
) -> Vec<(usize, &'a str)> {
    let recorded = status.map(|s| s.clusters.as_slice()).unwrap_or_default();
    spec.clusters
        .iter()
        .enumerate()
        .filter(|(_, cluster)| {
            let hash = recorded
                .iter()
                .find(|c| c.name == cluster.name)
                .and_then(|c| c.spec_hash.as_deref());
            hash.is_some_and(|hash| hash != ClusterSettings::of(spec, cluster).hash())
        })
        .map(|(i, cluster)| (i, cluster.name.as_str()))
        .collect()
}

/// What a user must do about clusters whose settings changed.
pub const IMMUTABLE_HINT: &str = "clusters are immutable: restore its settings, or add a new cluster with the new settings and move spec.routing.writeCluster to it";

/// Changes from `old` to `new` that an existing set cannot take: a
/// cluster's settings (as recorded in `status`) and fewer partitions for
/// a stream, which Kafka cannot remove.
pub fn check_update(
    new: &KafkaClusterSetSpec,
    old: &KafkaClusterSetSpec,
    status: Option<&KafkaClusterSetStatus>,
) -> Vec<SpecProblem> {
    let mut problems: Vec<SpecProblem> = changed_clusters(new, status)
        .into_iter()
        .map(|(i, name)| {
            SpecProblem::invalid(
                format!("spec.clusters[{i}]"),
                format!("the settings of cluster `{name}` changed after it was created; {IMMUTABLE_HINT}"),
            )
        })
        .collect();
    for (i, stream) in new.streams.iter().enumerate() {
        let before = old.streams.iter().find(|s| s.name == stream.name);
        if let Some(before) = before.filter(|b| b.partitions > stream.partitions) {
            problems.push(SpecProblem::invalid(
                format!("spec.streams[{i}].partitions"),
                format!(
                    "cannot go down from {} to {}: Kafka cannot remove partitions; declare a new stream instead",
                    before.partitions, stream.partitions
                ),
            ));
        }
    }
    problems
}

fn check_routing(spec: &KafkaClusterSetSpec, problems: &mut Vec<SpecProblem>) {
    let write = &spec.routing.write_cluster;
    match spec.clusters.iter().find(|c| &c.name == write) {
        None => problems.push(SpecProblem::invalid(
            "spec.routing.writeCluster",
            format!(
                "`{write}` is not one of the set's clusters ({})",
                spec.clusters
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        Some(cluster) if cluster.role == ClusterRole::Backfill => {
            problems.push(SpecProblem::invalid(
                "spec.routing.writeCluster",
                format!("`{write}` has role backfill, which never takes live writes"),
            ))
        }
        Some(_) => {}
    }
}

fn check_cluster(
    spec: &KafkaClusterSetSpec,
    i: usize,
    cluster: &ClusterEntry,
    problems: &mut Vec<SpecProblem>,
) {
    let field = format!("spec.clusters[{i}]");
    let effective = effective_cluster(spec, cluster);
    let overrides = cluster.overrides.as_ref();
    match effective.provider {
        Provider::External if !effective.has_external => problems.push(SpecProblem::invalid(
            format!("{field}.overrides.external"),
            format!(
                "cluster `{}` uses the external provider but neither the template nor its overrides set `external.bootstrapServers`",
                cluster.name
            ),
        )),
        Provider::Builtin if overrides.and_then(|o| o.external.as_ref()).is_some() => {
            problems.push(SpecProblem::invalid(
                format!("{field}.overrides.external"),
                format!("cluster `{}` uses the builtin provider, so external settings would be ignored", cluster.name),
            ))
        }
        Provider::External if overrides.and_then(|o| o.builtin.as_ref()).is_some() => {
            problems.push(SpecProblem::invalid(
                format!("{field}.overrides.builtin"),
                format!("cluster `{}` uses the external provider, so builtin settings would be ignored", cluster.name),
            ))
        }
        _ => {}
    }
    if let Some(builtin) = overrides.and_then(|o| o.builtin.as_ref()) {
        check_broker_config(
            builtin,
            &format!("{field}.overrides.builtin.config"),
            problems,
        );
    }
}

fn check_broker_config(builtin: &BuiltinCluster, field: &str, problems: &mut Vec<SpecProblem>) {
    for key in MANAGED_BROKER_KEYS {
        if builtin.config.contains_key(key) {
            problems.push(SpecProblem::invalid(
                format!("{field}[{key}]"),
                "this key is set by the operator for every node",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> KafkaClusterSetSpec {
        serde_json::from_value(value).expect("test spec deserializes")
    }

    fn fields(problems: &[SpecProblem]) -> Vec<&str> {
        problems.iter().map(|p| p.field.as_str()).collect()
    }

    #[test]
    fn a_plain_external_set_is_valid() {
        let s = spec(json!({
            "template": {"provider": "external", "external": {"bootstrapServers": ["k:9092"]}},
            "clusters": [{"name": "blue"}, {"name": "green", "role": "standby"}],
            "streams": [{"name": "orders"}],
            "routing": {"writeCluster": "blue"}
        }));
        assert_eq!(validate(&s), vec![]);
    }

    #[test]
    fn routing_must_name_a_live_cluster() {
        let s = spec(json!({
            "template": {"provider": "external", "external": {"bootstrapServers": ["k:9092"]}},
            "clusters": [{"name": "blue"}, {"name": "extra", "role": "backfill"}],
            "routing": {"writeCluster": "red"}
        }));
        assert_eq!(fields(&validate(&s)), ["spec.routing.writeCluster"]);
        let s = spec(json!({
            "template": {"provider": "external", "external": {"bootstrapServers": ["k:9092"]}},
            "clusters": [{"name": "blue"}, {"name": "extra", "role": "backfill"}],
            "routing": {"writeCluster": "extra"}
        }));
        assert!(validate(&s)[0].message.contains("backfill"));
    }

    #[test]
    fn streams_sharing_a_topic_and_raw_typed_keys_are_refused() {
        let s = spec(json!({
            "template": {"provider": "external", "external": {"bootstrapServers": ["k:9092"]}},
            "clusters": [{"name": "blue"}],
            "streams": [
                {"name": "a", "topic": "t"},
                {"name": "b", "topic": "t", "config": {"cleanup.policy": "compact"}},
                {"name": "c", "cleanupPolicy": "compact", "tieredStorage": true},
                {"name": "d", "config": {"max.message.bytes": "1048576", "retention.msec": "1"}}
            ],
            "routing": {"writeCluster": "blue"}
        }));
        assert_eq!(
            fields(&validate(&s)),
            [
                "spec.streams[1].topic",
                "spec.streams[1].config[cleanup.policy]",
                "spec.streams[2].tieredStorage",
                "spec.streams[3].config[retention.msec]"
            ]
        );
    }

    #[test]
    fn replication_beyond_builtin_nodes_and_missing_external_settings_are_refused() {
        let s = spec(json!({
            "template": {"builtin": {"nodes": 1, "config": {"log.dirs": "/x"}}},
            "clusters": [{"name": "blue"}, {"name": "ext", "overrides": {"provider": "external"}}],
            "streams": [{"name": "a", "replication": 3}],
            "routing": {"writeCluster": "blue"}
        }));
        assert_eq!(
            fields(&validate(&s)),
            [
                "spec.clusters[1].overrides.external",
                "spec.template.builtin.config[log.dirs]",
                "spec.streams[0].replication"
            ]
        );
    }
}
