//! Acting on a valid KafkaClusterSet: refuse edits to recorded clusters,
//! reach every cluster, put every stream's topic on it, publish the
//! discovery document, and say how it went.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{join_all, BoxFuture};
use futures::FutureExt;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::ResourceExt;

use super::migration::{self, Step};
use super::publish;
use super::reason::Reason;
use super::retire::{self, Retirement};
use super::{ephemeral, validate};
use crate::api::backfill::Backfill;
use crate::api::kafka_cluster_set::{
    ClusterPhase, ClusterRole, ClusterSettings, ClusterStatus, KafkaClusterSet,
    KafkaClusterSetStatus, TopicState, TopicStatus,
};
use crate::conditions::{ConditionStatus, DEGRADED, PROGRESSING, READY};
use crate::controller::common::provider::{ClusterProvider, ProviderError};
use crate::controller::reconcile::Act;
use crate::controller::status::{own_fields, Outcome, Requeue, Wanted};
use crate::controller::{cache_ready, Shared};
use crate::error::Error;
use crate::kafka::topic::{config_drift, desired_topic, plan, TopicPlan};
use crate::kafka::{
    ClusterConnection, ClusterView, DesiredTopic, KafkaAdmin, KafkaError, ObservedTopic,
};

/// How often a healthy set is checked for drift outside Kubernetes (a
/// deleted topic, a cluster gone away).
const RESYNC: Duration = Duration::from_secs(300);
/// How often a set whose clusters are starting looks again (their
/// StatefulSets' changes also wake it).
const STARTING_RECHECK: Duration = Duration::from_secs(10);

/// What the set controller talks to besides the API server.
pub struct SetDeps {
    /// Kafka's admin API.
    pub admin: Arc<dyn KafkaAdmin>,
    /// Who runs or finds each cluster.
    pub providers: Arc<dyn ClusterProvider>,
    /// Backfills, which add clusters to sets for a run.
    pub backfills: Store<DeserializeGuard<Backfill>>,
}

/// Acts on one set.
pub struct SyncSet<'c> {
    /// Shared controller parts.
    pub shared: &'c Shared,
    /// Kafka and providers.
    pub deps: &'c SetDeps,
}

impl Act<KafkaClusterSet> for SyncSet<'_> {
    fn act<'a>(self, set: &'a KafkaClusterSet) -> BoxFuture<'a, Result<Outcome, Error>>
    where
        Self: 'a,
    {
        async move { sync(self.shared, self.deps, set).await }.boxed()
    }
}

/// A problem found while acting, reported as a condition reason.
struct Problem {
    reason: Reason,
    message: String,
}

async fn sync(shared: &Shared, deps: &SetDeps, set: &KafkaClusterSet) -> Result<Outcome, Error> {
    // Membership is read from the Backfills: a cache not yet filled (a new
    // leader starting) would retire every cluster a Backfill holds.
    cache_ready(&deps.backfills, "Backfills").await?;
    let ephemeral = ephemeral::members(set, &deps.backfills.state());
    let widened = ephemeral::widen(set, &ephemeral);
    let set = &widened;
    let namespace = set
        .namespace()
        .ok_or(Error::MissingObjectField("metadata.namespace"))?;
    let current = set.status.clone().unwrap_or_default();
    // Immutability: a recorded cluster whose settings changed stops everything.
    let effective: Vec<(String, ClusterSettings)> = set
        .spec
        .clusters
        .iter()
        .map(|c| (c.name.clone(), ClusterSettings::of(&set.spec, c)))
        .collect();
    let changed: Vec<&str> = validate::changed_clusters(&set.spec, Some(&current))
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    if !changed.is_empty() {
        let message = format!(
            "the spec of cluster(s) {} changed after creation and was not applied; {}",
            changed
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", "),
            validate::IMMUTABLE_HINT
        );
        return Ok(Outcome {
            conditions: vec![Wanted::new(
                DEGRADED,
                ConditionStatus::True,
                Reason::ImmutableClusterChanged,
                message,
            )],
            fields: fields(&current)?,
            requeue: Requeue::OnChange,
        });
    }

    // Endpoints, then one look at every reachable cluster.
    let mut endpoints = BTreeMap::new();
    let mut statuses: BTreeMap<String, ClusterStatus> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut starting = Vec::new();
    for (entry, (name, spec)) in set.spec.clusters.iter().zip(&effective) {
        let mut status = ClusterStatus {
            name: name.clone(),
            role: entry.role,
            spec_hash: Some(spec.hash()),
            settings: Some(spec.clone()),
            owner: ephemeral.get(name).map(|e| e.owner.clone()),
            ..ClusterStatus::default()
        };
        match deps.providers.endpoint(set, name, spec).await {
            Ok(endpoint) => {
                status.bootstrap_servers = Some(endpoint.connection.bootstrap_servers.clone());
                endpoints.insert(name.clone(), endpoint);
            }
            Err(ProviderError::Starting(message)) => {
                status.phase = Some(ClusterPhase::Starting);
                starting.push(format!("cluster `{name}`: {message}"));
                status.message = Some(message);
            }
            Err(error) => {
                status.phase = Some(ClusterPhase::Unavailable);
                status.message = Some(error.to_string());
                status.streams = last_seen_streams(&current, name);
                problems.push(Problem {
                    reason: Reason::Provider(error.reason()),
                    message: format!("cluster `{name}`: {error}"),
                });
            }
        }
        statuses.insert(name.clone(), status);
    }
    let topics: Vec<DesiredTopic> = set.spec.streams.iter().map(desired_topic).collect();
    let topic_names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
    let views = join_all(endpoints.iter().map(|(name, endpoint)| {
        let names = &topic_names;
        async move {
            let result = timed(
                shared,
                "describe",
                deps.admin.describe(&endpoint.connection, names),
            )
            .await;
            (name.clone(), result)
        }
    }))
    .await;
    let mut reachable: BTreeMap<String, ClusterView> = BTreeMap::new();
    for (name, view) in views {
        let status = statuses.entry(name.clone()).or_default();
        match view {
            Ok(view) => {
                status.brokers = i32::try_from(view.brokers).ok();
                reachable.insert(name, view);
            }
            Err(error) => {
                status.phase = Some(ClusterPhase::Unreachable);
                status.message = Some(error.to_string());
                status.streams = last_seen_streams(&current, &name);
                problems.push(Problem {
                    reason: Reason::Kafka(error.category()),
                    message: format!("cluster `{name}`: {error}"),
                });
            }
        }
    }

    // What the declared topics need; refusals stop all changes.
    let topics_on = |name: &str| -> Vec<DesiredTopic> {
        match ephemeral.get(name) {
            Some(member) => topics.iter().map(|t| member.topic(t)).collect(),
            None => topics.clone(),
        }
    };
    let mut refusals = Vec::new();
    for (name, view) in &reachable {
        for (index, topic) in topics_on(name).iter().enumerate() {
            let observed = view.topics.get(&topic.name);
            if observed.is_none() && topic.replication as usize > view.brokers {
                refusals.push(Problem {
                    reason: Reason::ReplicationImpossible,
                    message: format!(
                        "spec.streams[{index}].replication: {} exceeds the {} broker(s) of cluster `{name}`",
                        topic.replication, view.brokers
                    ),
                });
            }
            if let TopicPlan::RefuseShrink { actual } = plan(topic, observed) {
                refusals.push(Problem {
                    reason: Reason::PartitionDecreaseRefused,
                    message: format!(
                        "spec.streams[{index}].partitions: topic `{}` on cluster `{name}` has {actual} partitions and Kafka cannot remove partitions; declare {actual} or more",
                        topic.name
                    ),
                });
            }
        }
    }
    if !refusals.is_empty() {
        for (name, view) in &reachable {
            let status = statuses.entry(name.clone()).or_default();
            status.phase = Some(ClusterPhase::Refused);
            status.streams = observed_topics(set, &topics_on(name), view);
        }
        let mut refused = current.clone();
        refused.clusters = merge_recorded(&current, statuses);
        let reason = refusals[0].reason;
        let message = joined(&refusals);
        return Ok(Outcome {
            conditions: vec![
                Wanted::new(READY, ConditionStatus::False, reason, message.clone()),
                Wanted::new(
                    DEGRADED,
                    ConditionStatus::True,
                    reason,
                    format!("{message}; nothing was changed"),
                ),
            ],
            fields: fields(&refused)?,
            requeue: Requeue::After(RESYNC),
        });
    }

    // Apply: create what is missing, grow what is short, set what differs.
    for (name, view) in &reachable {
        let connection = &endpoints[name].connection;
        let mut streams = Vec::new();
        for (stream, topic) in set.spec.streams.iter().zip(&topics_on(name)) {
            let observed = view.topics.get(&topic.name);
            let mut status = TopicStatus {
                stream: stream.name.clone(),
                topic: topic.name.clone(),
                partitions: Some(topic.partitions),
                state: TopicState::Ready,
                message: None,
            };
            if let Err(error) =
                apply_topic(shared, deps.admin.as_ref(), connection, topic, observed).await
            {
                status.state = TopicState::Failed;
                status.partitions = observed.map(|o| o.partitions);
                status.message = Some(error.to_string());
                problems.push(Problem {
                    reason: Reason::Kafka(error.category()),
                    message: format!("cluster `{name}`: {error}"),
                });
            }
            streams.push(status);
        }
        let status = statuses.entry(name.clone()).or_default();
        status.streams = streams;
        if status.streams.iter().all(|s| s.state == TopicState::Ready) {
            status.phase = Some(ClusterPhase::Ready);
        } else {
            status.phase = Some(ClusterPhase::Failed);
        }
    }

    // Routing: one migration step at most, then the document it calls for.
    // The epoch grows only when the content changes.
    let mut next = current.clone();
    next.clusters = merge_recorded(&current, statuses);
    next.cluster_count = i32::try_from(set.spec.clusters.len()).ok();
    // Clusters that left the spec stay reachable (from their recorded
    // settings) until drained.
    let retiring = retire::retiring(set, &next);
    let mut unreachable = BTreeMap::new();
    for name in &retiring {
        let recorded = next
            .clusters
            .iter()
            .find(|c| &c.name == name)
            .and_then(|c| c.settings.clone());
        if let Some(settings) = recorded {
            match deps.providers.reach(set, name, &settings).await {
                Ok(endpoint) => {
                    endpoints.insert(name.clone(), endpoint);
                }
                Err(ProviderError::Gone(why)) if !retire::written(&next, name) => {
                    // Removed by an earlier reconcile whose status this view
                    // does not show yet: nothing is left to drain.
                    tracing::info!(cluster = %name, %why, "retired cluster already removed");
                    next.drained_segments.retain(|s| &s.cluster != name);
                    next.clusters.retain(|c| &c.name != name);
                }
                Err(error) => {
                    unreachable.insert(name.clone(), error.to_string());
                }
            }
        }
    }
    let step = migration::advance(shared, deps.admin.as_ref(), set, &endpoints, &mut next).await?;
    let mut retiring_waits = Vec::new();
    let still_recorded: Vec<String> = retiring
        .iter()
        .filter(|n| next.clusters.iter().any(|c| &c.name == *n))
        .cloned()
        .collect();
    for name in &still_recorded {
        let retirement = retire::advance(
            deps.admin.as_ref(),
            deps.providers.as_ref(),
            set,
            name,
            endpoints.get(name).ok_or_else(|| {
                unreachable
                    .get(name)
                    .map_or("its settings are not recorded", String::as_str)
            }),
            &mut next,
        )
        .await;
        match retirement {
            Retirement::Retired => {
                endpoints.remove(name);
                tracing::info!(cluster = %name, "cluster retired");
            }
            Retirement::Waiting(why) => {
                if let Some(status) = next.clusters.iter_mut().find(|c| &c.name == name) {
                    status.phase = Some(ClusterPhase::Retiring);
                    status.message = Some(why.clone());
                }
                retiring_waits.push(why);
            }
        }
    }
    let keep: BTreeSet<String> = set
        .spec
        .clusters
        .iter()
        .map(|c| c.name.clone())
        .chain(next.clusters.iter().map(|c| c.name.clone()))
        .collect();
    match deps.providers.sweep(set, &keep).await {
        Ok(swept) if !swept.is_empty() => {
            tracing::info!(clusters = ?swept, "removed objects of clusters that are no longer in the set");
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "removing objects of former clusters failed"),
    }
    if let Some(mut document) = publish::document(set, &endpoints, &next, 0) {
        let hash = document.content_hash();
        let epoch = match (&current.discovery_hash, current.epoch) {
            (Some(old), Some(epoch)) if *old == hash => epoch,
            (_, epoch) => epoch.unwrap_or(0) + 1,
        };
        document.epoch = epoch;
        if let Some(migration) = next.migration.as_mut().filter(|m| m.epoch == 0) {
            migration.epoch = epoch;
        }
        if publish::publish(&shared.client, set, &document).await? {
            tracing::info!(epoch, write = %document.streams.first().map(|s| s.write.cluster.as_str()).unwrap_or_default(), "discovery document published");
        }
        next.epoch = Some(epoch);
        next.discovery_hash = Some(hash);
    }
    record_metrics(shared, &namespace, &set.name_any(), &next);
    let (progressing, step_requeue) = progress(&next, &step);
    if let Step::Blocked(error) = &step {
        let from = next.migration.as_ref().map_or("", |m| m.from.as_str());
        problems.push(Problem {
            reason: Reason::Kafka(error.category()),
            message: format!(
                "recording the end offsets of the old write cluster `{from}`: {error}"
            ),
        });
    }

    let (progressing, step_requeue) = match (&next.migration, starting.is_empty()) {
        (None, false) => (
            Wanted::new(
                PROGRESSING,
                ConditionStatus::True,
                Reason::ClusterStarting,
                starting.join("; "),
            ),
            step_requeue,
        ),
        (None, true) if !retiring_waits.is_empty() => (
            Wanted::new(
                PROGRESSING,
                ConditionStatus::True,
                Reason::RetiringCluster,
                retiring_waits.join("; "),
            ),
            Some(Requeue::After(STARTING_RECHECK)),
        ),
        _ => (progressing, step_requeue),
    };
    let mut conditions = vec![progressing];
    let requeue = if let Some(problem) = problems.first() {
        conditions.push(Wanted::new(
            READY,
            ConditionStatus::False,
            problem.reason,
            joined(&problems),
        ));
        Requeue::Backoff
    } else if !starting.is_empty() {
        conditions.push(Wanted::new(
            READY,
            ConditionStatus::False,
            Reason::ClusterStarting,
            starting.join("; "),
        ));
        Requeue::After(STARTING_RECHECK)
    } else {
        conditions.push(Wanted::new(
            READY,
            ConditionStatus::True,
            Reason::ClustersReady,
            format!(
                "{} cluster(s) reachable, {} stream(s) on each, discovery epoch {}",
                reachable.len(),
                topics.len(),
                next.epoch.unwrap_or(0)
            ),
        ));
        step_requeue.unwrap_or(Requeue::After(RESYNC))
    };
    conditions.push(match problems.first() {
        Some(problem) => Wanted::new(
            DEGRADED,
            ConditionStatus::True,
            problem.reason,
            joined(&problems),
        ),
        None => Wanted::new(
            DEGRADED,
            ConditionStatus::False,
            Reason::AsDeclared,
            "every cluster carries every stream as declared",
        ),
    });
    Ok(Outcome {
        conditions,
        fields: fields(&next)?,
        requeue,
    })
}

/// The Progressing condition for where the routing stands, and when to look
/// again if a migration is under way.
fn progress(next: &KafkaClusterSetStatus, step: &Step) -> (Wanted, Option<Requeue>) {
    let Some(migration) = &next.migration else {
        let write = next.write_cluster.as_deref().unwrap_or_default();
        return (
            Wanted::new(
                PROGRESSING,
                ConditionStatus::False,
                Reason::Settled,
                format!("producers write to `{write}`"),
            ),
            None,
        );
    };
    let moving = format!(
        "moving writes from `{}` to `{}` (epoch {})",
        migration.from, migration.to, migration.epoch
    );
    match step {
        Step::AwaitingProducers(recheck) => (
            Wanted::new(
                PROGRESSING,
                ConditionStatus::True,
                Reason::AwaitingProducers,
                format!(
                    "{moving}: waiting for producer(s) {} to acknowledge",
                    migration.waiting_for.join(", ")
                ),
            ),
            Some(Requeue::After(*recheck)),
        ),
        _ => (
            Wanted::new(
                PROGRESSING,
                ConditionStatus::True,
                Reason::MigrationAnnounced,
                format!("{moving}: announced"),
            ),
            Some(Requeue::After(Duration::from_secs(1))),
        ),
    }
}

/// The set's gauges: discovery epoch, clusters by role and phase (every
/// combination, so a cluster that changes phase leaves no stale series),
/// and whether a migration is under way.
fn record_metrics(shared: &Shared, namespace: &str, set: &str, status: &KafkaClusterSetStatus) {
    let metrics = &shared.metrics;
    metrics
        .discovery_epoch
        .with_label_values(&[namespace, set])
        .set(status.epoch.unwrap_or(0));
    for role in [
        ClusterRole::Primary,
        ClusterRole::Standby,
        ClusterRole::Backfill,
    ] {
        let role_name = serde_json::to_value(role)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        for phase in ClusterPhase::ALL {
            let count = status
                .clusters
                .iter()
                .filter(|c| c.role == role && c.phase == Some(phase))
                .count();
            metrics
                .clusters
                .with_label_values(&[namespace, set, &role_name, phase.as_str()])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }
    metrics
        .migrations_in_progress
        .with_label_values(&[namespace, set])
        .set(i64::from(status.migration.is_some()));
}

/// Brings one topic on one cluster to its declaration: created when
/// missing, grown when short, the declared configuration entries set where
/// the cluster reports something else.
async fn apply_topic(
    shared: &Shared,
    admin: &dyn KafkaAdmin,
    connection: &ClusterConnection,
    topic: &DesiredTopic,
    observed: Option<&ObservedTopic>,
) -> Result<(), KafkaError> {
    match plan(topic, observed) {
        TopicPlan::Create => {
            return timed(
                shared,
                "create_topic",
                admin.create_topic(connection, topic),
            )
            .await;
        }
        TopicPlan::Grow { .. } => {
            let grow = admin.grow_partitions(connection, &topic.name, topic.partitions);
            timed(shared, "grow_partitions", grow).await?;
        }
        TopicPlan::UpToDate | TopicPlan::RefuseShrink { .. } => {}
    }
    let drift = observed.map(|o| config_drift(topic, o)).unwrap_or_default();
    if drift.is_empty() {
        return Ok(());
    }
    let set_config = admin.set_topic_config(connection, &topic.name, &drift);
    timed(shared, "set_topic_config", set_config).await
}

/// Runs one admin call, counting its latency and failures.
async fn timed<T>(
    shared: &Shared,
    operation: &str,
    call: BoxFuture<'_, Result<T, KafkaError>>,
) -> Result<T, KafkaError> {
    let started = Instant::now();
    let result = call.await;
    shared
        .metrics
        .kafka_admin_duration
        .with_label_values(&[operation])
        .observe(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        shared
            .metrics
            .kafka_admin_errors
            .with_label_values(&[operation, error.category()])
            .inc();
    }
    result
}

/// The topics of the declared streams as a cluster reports them.
fn observed_topics(
    set: &KafkaClusterSet,
    topics: &[DesiredTopic],
    view: &ClusterView,
) -> Vec<TopicStatus> {
    set.spec
        .streams
        .iter()
        .zip(topics)
        .map(|(stream, topic)| {
            let observed = view.topics.get(&topic.name);
            let refused = matches!(plan(topic, observed), TopicPlan::RefuseShrink { .. })
                || (observed.is_none() && topic.replication as usize > view.brokers);
            TopicStatus {
                stream: stream.name.clone(),
                topic: topic.name.clone(),
                partitions: observed.map(|o| o.partitions),
                state: if refused {
                    TopicState::Refused
                } else {
                    TopicState::Pending
                },
                message: None,
            }
        })
        .collect()
}

/// Cluster statuses for the declared clusters, keeping recorded ones that
/// the spec no longer names (retiring them is not this version's work).
fn merge_recorded(
    current: &KafkaClusterSetStatus,
    mut statuses: BTreeMap<String, ClusterStatus>,
) -> Vec<ClusterStatus> {
    let mut merged: Vec<ClusterStatus> = current
        .clusters
        .iter()
        .filter(|c| !statuses.contains_key(&c.name))
        .cloned()
        .collect();
    merged.extend(std::mem::take(&mut statuses).into_values());
    merged.sort_by(|a, b| a.name.cmp(&b.name));
    merged
}

/// The topics last seen on `cluster`, kept while it cannot be looked at
/// (its phase says why). Emptied, the list would be written as `null` by
/// server-side apply, which the schema refuses, and the whole status write
/// with it (kubernetes/kubernetes#104694).
fn last_seen_streams(current: &KafkaClusterSetStatus, cluster: &str) -> Vec<TopicStatus> {
    current
        .clusters
        .iter()
        .find(|c| c.name == cluster)
        .map(|c| c.streams.clone())
        .unwrap_or_default()
}

fn joined(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The set's own status fields, as written beside the common ones.
fn fields(
    status: &KafkaClusterSetStatus,
) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    Ok(own_fields(serde_json::to_value(status)?))
}
