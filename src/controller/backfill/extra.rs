//! The extra clusters of a run, as the set records them: which are ready,
//! and what the run reads, creates and deletes on them.

use std::collections::BTreeMap;

use kube::ResourceExt;

use super::run::RunBackfill;
use crate::api::backfill::Backfill;
use crate::api::kafka_cluster_set::{ClusterPhase, ClusterStatus, KafkaClusterSet};
use crate::kafka::topic::desired_topic;
use crate::kafka::{ClusterConnection, DesiredTopic, KafkaAdmin, TopicOffsets};
use crate::replay::plan::ReplayPlan;

/// The extra clusters of one run: their names, as the run's status keeps
/// them, and the set whose status records where they are.
pub(crate) struct ExtraClusters<'r> {
    set: &'r KafkaClusterSet,
    names: Vec<String>,
    admin: &'r dyn KafkaAdmin,
}

impl RunBackfill<'_> {
    /// The extra clusters `names` of `set`, reached through this run's admin.
    pub(crate) fn extra<'r>(
        &'r self,
        set: &'r KafkaClusterSet,
        names: &[String],
    ) -> ExtraClusters<'r> {
        ExtraClusters {
            set,
            names: names.to_vec(),
            admin: self.deps.admin.as_ref(),
        }
    }
}

impl<'r> ExtraClusters<'r> {
    /// Our clusters as the set's status shows them, once all are Ready.
    pub(crate) fn ready(&self, backfill: &Backfill) -> Result<Vec<&'r ClusterStatus>, String> {
        let recorded = self.recorded();
        let mut ready = Vec::new();
        let mut waiting = Vec::new();
        for name in &self.names {
            match recorded
                .iter()
                .find(|c| &c.name == name && c.owner.as_deref() == Some(&backfill.name_any()))
            {
                Some(c)
                    if c.phase == Some(ClusterPhase::Ready) && c.bootstrap_servers.is_some() =>
                {
                    ready.push(c)
                }
                Some(c) => waiting.push(format!(
                    "`{name}` is {}{}",
                    c.phase.map_or("starting", ClusterPhase::as_str),
                    c.message
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                )),
                None => waiting.push(format!("`{name}` is not in the set's status yet")),
            }
        }
        if waiting.is_empty() {
            Ok(ready)
        } else {
            Err(waiting.join("; "))
        }
    }

    /// Per extra cluster, the committed offsets of `group` on `topics`.
    pub(crate) async fn committed(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, BTreeMap<i32, i64>>>, String> {
        let mut all = BTreeMap::new();
        for (name, connection) in self.connections()? {
            let offsets = self
                .admin
                .group_offsets(&connection, group, topics)
                .await
                .map_err(|e| format!("cluster `{name}`: {e}"))?;
            all.insert(name, offsets);
        }
        Ok(all)
    }

    /// Creates every destination topic of `plan` that an extra cluster
    /// lacks, with the plan's layout: a broker restarted without its data,
    /// or a copy started again, leaves them missing, and the set creates
    /// them only at its next resync.
    pub(crate) async fn ensure_topics(&self, plan: &ReplayPlan) -> Result<(), String> {
        let mut wanted = Vec::new();
        for stream in &plan.streams {
            let Some(spec) = self
                .set
                .spec
                .streams
                .iter()
                .find(|s| s.name == stream.stream)
            else {
                return Err(format!(
                    "stream `{}` is no longer declared in the set",
                    stream.stream
                ));
            };
            wanted.push(DesiredTopic {
                name: stream.destination_topic.clone(),
                partitions: plan.layout(stream).destination_partitions(),
                ..desired_topic(spec)
            });
        }
        let topics: Vec<String> = wanted.iter().map(|t| t.name.clone()).collect();
        for (name, connection) in self.connections()? {
            let admin = self.admin;
            let view = admin
                .describe(&connection, &topics)
                .await
                .map_err(|e| format!("cluster `{name}`: {e}"))?;
            for topic in wanted.iter().filter(|t| !view.topics.contains_key(&t.name)) {
                admin
                    .create_topic(&connection, topic)
                    .await
                    .map_err(|e| format!("cluster `{name}`: {e}"))?;
            }
        }
        Ok(())
    }

    /// The destination partitions (`cluster/topic/partition`) whose end
    /// lies beyond the next offset the workers recorded there (`written`):
    /// someone else wrote records after theirs. Brokers that report the
    /// start of the last batch as the end (Tansu) are never beyond.
    pub(crate) async fn written_by_others(
        &self,
        written: &BTreeMap<String, TopicOffsets>,
        topics: &[String],
    ) -> Result<Vec<String>, String> {
        let mut foreign = Vec::new();
        for (name, connection) in self.connections()? {
            for topic in topics {
                let ends = self
                    .admin
                    .end_offsets(&connection, topic)
                    .await
                    .map_err(|e| format!("cluster `{name}`: {e}"))?;
                let mine = written.get(&name).and_then(|t| t.get(topic));
                foreign.extend(
                    ends.into_iter()
                        .filter(|(partition, end)| {
                            *end > mine.and_then(|m| m.get(partition)).copied().unwrap_or(0)
                        })
                        .map(|(partition, _)| format!("{name}/{topic}/{partition}")),
                );
            }
        }
        Ok(foreign)
    }

    /// Deletes `topics` on the extra clusters, with what was
    /// committed on them.
    pub(crate) async fn empty_topics(&self, topics: &[String]) -> Result<(), String> {
        for (name, connection) in self.connections()? {
            self.admin
                .delete_topics(&connection, topics)
                .await
                .map_err(|e| format!("cluster `{name}`: {e}"))?;
        }
        Ok(())
    }

    /// Every cluster the set's status records.
    fn recorded(&self) -> &'r [ClusterStatus] {
        self.set
            .status
            .as_ref()
            .map(|s| s.clusters.as_slice())
            .unwrap_or_default()
    }

    /// Each extra cluster with a connection to it, as the set's status
    /// records it.
    fn connections(&self) -> Result<Vec<(String, ClusterConnection)>, String> {
        let recorded = self.recorded();
        self.names
            .iter()
            .map(|name| {
                recorded
                    .iter()
                    .find(|c| &c.name == name)
                    .and_then(|c| c.bootstrap_servers.as_deref())
                    .map(|bootstrap| (name.clone(), ClusterConnection::plaintext(bootstrap)))
                    .ok_or_else(|| format!("cluster `{name}` has no address in the set's status"))
            })
            .collect()
    }
}
