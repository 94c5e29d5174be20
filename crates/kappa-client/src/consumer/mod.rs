//! A consumer of one stream that reads its segments in order: on every
//! partition, a drained segment up to its end offset, then the next; a
//! segment still being drained holds the partition until the operator has
//! recorded its end. A consumer whose document lags behind (a mounted
//! ConfigMap is refreshed late) stops a partition at a record of a segment
//! that a newer document than its own opened ([`EPOCH_HEADER`]) until that
//! document comes, so it never reads past an end it does not know. It reads each cluster with its own librdkafka consumer
//! (partitions assigned by the document, not by group rebalancing, and
//! shared among an application's replicas by [`super::Member`]) and commits
//! its position on each cluster under the same group id.
//!
//! Per-key order holds across clusters when a stream's topic has the same
//! partition count on every cluster and producers use the same partitioner
//! (every [`super::RoutedProducer`] does).

mod reader;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::segments::{reading, Positions, Reading};
use super::{cluster, ClientError, Credentials, Discovery, Member};
use crate::discovery::{DiscoveredStream, DiscoveryDocument};
use reader::{load, ClusterReader, Fetched, Fetcher, Polled, POLL_WAIT};

/// How long a metadata or offset request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often positions are committed while reading.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// How long a partition may read nothing before its cluster is asked
/// whether there is more to read.
const STALL_AFTER: Duration = Duration::from_secs(5);

/// One record read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The cluster it was read from.
    pub cluster: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset on that cluster.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub payload: Option<Vec<u8>>,
    /// Its timestamp in milliseconds, when it has one.
    pub timestamp: Option<i64>,
}

/// A cluster's partitions of the topic, with the group's committed
/// offsets, or why they could not be read.
type Loaded = Result<Vec<(i32, Offset)>, String>;

/// What a cluster's load hands over: the cluster and its result.
type ClusterLoad = (String, Loaded);

/// How long a broker may hold a fetch that finds no new record, by default:
/// a partition that moves to a cluster joins the next fetch there, after the
/// one in flight returns. Tansu 0.6 holds every fetch this long, records
/// or not, so there it is also how old a record is when it is read.
pub const FETCH_WAIT: Duration = Duration::from_millis(100);

/// How a [`RoutedConsumer`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// The share of the partitions it reads.
    pub member: Member,
    /// How long a broker may hold a fetch that finds no new record
    /// (`fetch.wait.max.ms`): shorter follows a move sooner, at the price
    /// of more fetches of an idle stream.
    pub fetch_wait: Duration,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            member: Member::ALL,
            fetch_wait: FETCH_WAIT,
        }
    }
}

/// Records fetched and not yet taken, over all clusters.
const FETCHED_AHEAD: usize = 1024;

/// Reads one stream of one KafkaClusterSet.
pub struct RoutedConsumer {
    discovery: Discovery,
    document: Arc<DiscoveryDocument>,
    stream: String,
    group: String,
    credentials: Credentials,
    options: ReadOptions,
    readers: BTreeMap<String, ClusterReader>,
    positions: Positions,
    partitions: BTreeSet<i32>,
    readings: BTreeMap<i32, Reading>,
    /// Partitions stopped at a record of a segment a newer document than
    /// the one in force opened: partition -> that epoch.
    held: BTreeMap<i32, i64>,
    last_commit: Instant,
    /// Whether `next` commits what it returned every second by itself.
    periodic_commits: bool,
    /// Records every cluster's fetching thread hands over.
    records: mpsc::Receiver<Polled>,
    /// The sending side, for new fetching threads.
    sender: mpsc::Sender<Polled>,
    /// Clusters' partitions and committed offsets as they are read.
    loads: mpsc::UnboundedReceiver<ClusterLoad>,
    /// The sending side, for loads started.
    load_sender: mpsc::UnboundedSender<ClusterLoad>,
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, rdkafka::error::KafkaError> + Send + 'static,
) -> Result<T, ClientError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(ClientError::from),
        Err(error) => Err(ClientError::Malformed(format!(
            "blocking call failed: {error}"
        ))),
    }
}

impl RoutedConsumer {
    /// Waits for the first document and prepares to read `stream` as
    /// consumer group `group`, from the group's committed positions.
    pub async fn start(
        discovery: Discovery,
        stream: &str,
        group: &str,
        credentials: Credentials,
    ) -> Result<Self, ClientError> {
        Self::start_as(discovery, stream, group, credentials, Member::ALL).await
    }

    /// As [`Self::start`], reading only the partitions of `member`'s share,
    /// for one replica among several of the same group.
    pub async fn start_as(
        discovery: Discovery,
        stream: &str,
        group: &str,
        credentials: Credentials,
        member: Member,
    ) -> Result<Self, ClientError> {
        let options = ReadOptions {
            member,
            ..ReadOptions::default()
        };
        Self::start_with(discovery, stream, group, credentials, options).await
    }

    /// As [`Self::start`], reading as `options` say.
    pub async fn start_with(
        mut discovery: Discovery,
        stream: &str,
        group: &str,
        credentials: Credentials,
        options: ReadOptions,
    ) -> Result<Self, ClientError> {
        let document = discovery.newer_than(i64::MIN).await?;
        let (sender, records) = mpsc::channel(FETCHED_AHEAD);
        let (load_sender, loads) = mpsc::unbounded_channel();
        let mut consumer = Self {
            discovery,
            document: document.clone(),
            stream: stream.to_string(),
            group: group.to_string(),
            credentials,
            options,
            readers: BTreeMap::new(),
            positions: Positions::new(),
            partitions: BTreeSet::new(),
            readings: BTreeMap::new(),
            held: BTreeMap::new(),
            last_commit: Instant::now(),
            periodic_commits: true,
            records,
            sender,
            loads,
            load_sender,
        };
        consumer.stream_of(&document)?;
        consumer.adopt(document).await?;
        Ok(consumer)
    }

    /// Commits only on `commit_all`, for an application that must write
    /// what it derived from the records before their offsets are committed.
    pub fn commit_only_when_asked(mut self) -> Self {
        self.periodic_commits = false;
        self
    }

    fn stream_of<'a>(
        &self,
        document: &'a DiscoveryDocument,
    ) -> Result<&'a DiscoveredStream, ClientError> {
        document
            .streams
            .iter()
            .find(|s| s.name == self.stream)
            .ok_or_else(|| ClientError::UnknownStream(self.stream.clone()))
    }

    /// Where it stands on every cluster it has read: the next offset per
    /// partition (what a lag computation compares with high watermarks).
    pub fn positions(&self) -> &Positions {
        &self.positions
    }

    /// Takes a new document: readers for new clusters, none for clusters
    /// gone (their positions committed first), then the assignments.
    async fn adopt(&mut self, document: Arc<DiscoveryDocument>) -> Result<(), ClientError> {
        let stream = self.stream_of(&document)?.clone();
        let clusters: BTreeSet<&str> = stream.read.iter().map(|s| s.cluster.as_str()).collect();
        let gone: Vec<String> = self
            .readers
            .keys()
            .filter(|name| !clusters.contains(name.as_str()))
            .cloned()
            .collect();
        for name in gone {
            self.commit_cluster(&name, CommitMode::Sync).await;
            self.readers.remove(&name);
            self.positions.retain(|(cluster, _), _| *cluster != name);
        }
        for segment in &stream.read {
            if !self.readers.contains_key(&segment.cluster) {
                let config = self.credentials.config(
                    cluster(&document, &segment.cluster)?,
                    &BTreeMap::from([
                        ("group.id".to_string(), self.group.clone()),
                        ("enable.auto.commit".to_string(), "false".to_string()),
                        ("auto.offset.reset".to_string(), "earliest".to_string()),
                        // A fetch a broker leaves unanswered fails fast, and
                        // the other partitions of that broker go on.
                        ("socket.timeout.ms".to_string(), "5000".to_string()),
                        (
                            "fetch.wait.max.ms".to_string(),
                            self.options.fetch_wait.as_millis().to_string(),
                        ),
                    ]),
                )?;
                let fetcher = Fetcher::start(&config, &segment.cluster, &self.sender)?;
                self.readers.insert(
                    segment.cluster.clone(),
                    ClusterReader {
                        config,
                        fetcher,
                        topic: segment.topic.clone(),
                        loaded: false,
                        retry_at: None,
                        failures: 0,
                        stalls: BTreeMap::new(),
                        loading: false,
                        assigned: BTreeMap::new(),
                        uncommitted: BTreeMap::new(),
                    },
                );
            }
            for ends in [&segment.start_offsets, &segment.end_offsets]
                .into_iter()
                .flatten()
            {
                self.partitions
                    .extend(ends.keys().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
        self.document = document;
        let epoch = self.document.epoch;
        self.held.retain(|_, waiting_for| *waiting_for > epoch);
        self.start_loads();
        self.reassign()
    }

    /// Starts reading, in the background, the partitions and committed
    /// offsets of each cluster not yet loaded (and not waiting to retry);
    /// each result comes over `loads`.
    fn start_loads(&mut self) {
        let now = Instant::now();
        for (name, reader) in &mut self.readers {
            if reader.loaded || reader.loading || reader.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            reader.loading = true;
            let (consumer, topic) = (reader.fetcher.consumer.clone(), reader.topic.clone());
            let (name, loads) = (name.clone(), self.load_sender.clone());
            tokio::spawn(async move {
                let loaded =
                    match tokio::task::spawn_blocking(move || load(&consumer, &topic)).await {
                        Ok(loaded) => loaded.map_err(|e| e.to_string()),
                        Err(error) => Err(error.to_string()),
                    };
                // A consumer that is gone takes no result.
                let _ = loads.send((name, loaded));
            });
        }
    }

    /// Takes the result of loading cluster `name`.
    fn finish_load(&mut self, name: &str, loaded: Loaded) {
        let Some(reader) = self.readers.get_mut(name) else {
            return;
        };
        reader.loading = false;
        match loaded {
            Ok(partitions) => {
                for (partition, offset) in partitions {
                    self.partitions.insert(partition);
                    if let Offset::Offset(offset) = offset {
                        let key = (name.to_string(), partition);
                        let known = self.positions.get(&key).copied().unwrap_or(offset);
                        self.positions.insert(key, known.max(offset));
                    }
                }
                reader.loaded = true;
                reader.retry_at = None;
                reader.failures = 0;
            }
            Err(error) => reader.retry_later(name, &error),
        }
    }

    /// Assigns every partition of its share to the cluster of the segment
    /// it is in.
    fn reassign(&mut self) -> Result<(), ClientError> {
        let segments = self.stream_of(&self.document)?.read.clone();
        let mut wanted: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
        self.readings.clear();
        let member = self.options.member;
        for partition in self.partitions.iter().filter(|p| member.reads(**p)) {
            let now = reading(&segments, &self.positions, *partition);
            if let Reading::Segment { cluster, from, .. } = &now {
                let loaded = self.readers.get(cluster).is_some_and(|r| r.loaded);
                if loaded && !self.held.contains_key(partition) {
                    wanted
                        .entry(cluster.clone())
                        .or_default()
                        .insert(*partition, *from);
                }
            }
            self.readings.insert(*partition, now);
        }
        for (name, reader) in &mut self.readers {
            let want = wanted.remove(name).unwrap_or_default();
            // Only partitions that come or go change: a partition read on
            // keeps its fetch position (reassigning everything at once can
            // leave a partition that is both removed and added unfetched).
            let leaving: Vec<i32> = reader
                .assigned
                .keys()
                .filter(|p| !want.contains_key(p))
                .copied()
                .collect();
            let coming: Vec<(i32, i64)> = want
                .iter()
                .filter(|(p, _)| !reader.assigned.contains_key(p))
                .map(|(p, from)| (*p, *from))
                .collect();
            reader.switch(&leaving, &coming)?;
            let now = Instant::now();
            reader.assigned = want
                .keys()
                .map(|p| (*p, reader.assigned.get(p).copied().unwrap_or(now)))
                .collect();
        }
        Ok(())
    }

    /// Checks every partition that has read nothing for [`STALL_AFTER`]
    /// (doubled after each reconnect, up to 16 times):
    /// if its cluster has records past its position (or does not say), the
    /// cluster's librdkafka consumer is replaced by a new one that fetches
    /// from the positions, or from further back for the stalled partitions.
    /// Tansu 0.6 answers a fetch that starts inside a batch with nothing;
    /// that must not stall a segment for good.
    async fn unstall(&mut self) -> Result<(), ClientError> {
        let now = Instant::now();
        for (name, reader) in &mut self.readers {
            let idle: Vec<i32> = reader
                .assigned
                .iter()
                .filter(|(p, at)| {
                    // A reconnected cluster gets longer each time before it
                    // counts as stalled again: a slow broker or machine must
                    // not have its consumer replaced before it can answer.
                    let stalls = reader.stalls.get(p).copied().unwrap_or(0).min(4);
                    now.duration_since(**at) >= STALL_AFTER * (1 << stalls)
                })
                .map(|(p, _)| *p)
                .collect();
            if idle.is_empty() {
                continue;
            }
            let position = |partition: i32| {
                self.positions
                    .get(&(name.clone(), partition))
                    .copied()
                    .or_else(|| match self.readings.get(&partition) {
                        Some(Reading::Segment { from, .. }) => Some(*from),
                        _ => None,
                    })
                    .unwrap_or(0)
            };
            let (consumer, topic, asked) = (
                reader.fetcher.consumer.clone(),
                reader.topic.clone(),
                idle.clone(),
            );
            let highs = blocking(move || {
                asked
                    .iter()
                    .map(|p| {
                        Ok((
                            *p,
                            consumer.fetch_watermarks(&topic, *p, REQUEST_TIMEOUT)?.1,
                        ))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await;
            let stalled: Vec<i32> = match highs {
                Ok(highs) => highs
                    .iter()
                    .filter(|(p, high)| *high > position(*p))
                    .map(|(p, _)| *p)
                    .collect(),
                Err(_) => idle.clone(),
            };
            for partition in &idle {
                reader.assigned.insert(*partition, now);
            }
            if stalled.is_empty() {
                continue;
            }
            tracing::warn!(cluster = %name, ?stalled, "fetching stalled; reconnecting to the cluster");
            let fresh = Fetcher::start(&reader.config, name, &self.sender)?;
            let mut list = TopicPartitionList::new();
            for partition in reader.assigned.keys() {
                // A broker that cannot serve a fetch starting inside a
                // batch is asked from further back each time; what comes
                // before the position is skipped.
                let mut from = position(*partition);
                if stalled.contains(partition) {
                    let stalls = reader.stalls.entry(*partition).or_default();
                    if *stalls > 0 {
                        from = from.saturating_sub(2 << (*stalls).min(20)).max(0);
                    }
                    *stalls += 1;
                }
                list.add_partition_offset(&reader.topic, *partition, Offset::Offset(from))?;
            }
            fresh.consumer.assign(&list)?;
            reader.fetcher = fresh;
        }
        Ok(())
    }

    /// The next record of the stream, in segment order on its partition.
    pub async fn next(&mut self) -> Result<Record, ClientError> {
        loop {
            let newer = self
                .discovery
                .current()
                .filter(|d| d.epoch > self.document.epoch);
            if let Some(document) = newer {
                self.adopt(document).await?;
            }
            self.start_loads();
            if self.last_commit.elapsed() >= COMMIT_EVERY {
                if self.periodic_commits {
                    self.commit(CommitMode::Async).await;
                } else {
                    self.last_commit = Instant::now();
                }
                self.unstall().await?;
            }
            // A new document, and a cluster's partitions read, are taken as
            // soon as they come, not after the wait: a partition whose old
            // segment is read to its end waits for its new cluster's load.
            let epoch = self.document.epoch;
            let polled = tokio::select! {
                polled = self.records.recv() => polled,
                newer = self.discovery.newer_than(epoch) => {
                    newer?;
                    continue;
                }
                Some((name, loaded)) = self.loads.recv() => {
                    self.finish_load(&name, loaded);
                    self.reassign()?;
                    continue;
                }
                () = tokio::time::sleep(POLL_WAIT) => continue,
            };
            let Some((cluster, polled)) = polled else {
                continue;
            };
            match polled {
                Err(error) => tracing::warn!(%cluster, %error, "poll failed"),
                Ok(fetched) => {
                    if let Some(record) = self.accept(fetched)? {
                        return Ok(record);
                    }
                }
            }
        }
    }

    /// Keeps a record that belongs to the segment its partition is in, and
    /// moves the partition on when that segment is read to its end. On a
    /// segment whose end is not known, a record of a segment a newer
    /// document opened stops the partition until that document is here.
    fn accept(&mut self, fetched: Fetched) -> Result<Option<Record>, ClientError> {
        let Fetched { record, epoch } = fetched;
        if self.held.contains_key(&record.partition) {
            return Ok(None);
        }
        let Some(Reading::Segment {
            cluster,
            from,
            until,
            ..
        }) = self.readings.get(&record.partition)
        else {
            return Ok(None);
        };
        let key = (record.cluster.clone(), record.partition);
        let position = self.positions.get(&key).copied().unwrap_or(*from);
        if *cluster != record.cluster || record.offset < position {
            return Ok(None);
        }
        if until.is_some_and(|end| record.offset >= end) {
            self.reassign()?;
            return Ok(None);
        }
        let newer = epoch
            .as_deref()
            .and_then(|header| self.document.newer_epoch_in(header));
        if let Some(newer) = newer.filter(|_| until.is_none()) {
            tracing::info!(cluster = %record.cluster, partition = record.partition, epoch = newer,
                "a record of a segment a newer discovery document opened: the partition waits for it");
            self.held.insert(record.partition, newer);
            self.reassign()?;
            return Ok(None);
        }
        let ended = until.is_some_and(|end| record.offset + 1 >= end);
        self.positions.insert(key, record.offset + 1);
        if let Some(reader) = self.readers.get_mut(&record.cluster) {
            reader.assigned.insert(record.partition, Instant::now());
            reader.stalls.remove(&record.partition);
            reader
                .uncommitted
                .insert(record.partition, record.offset + 1);
        }
        if ended {
            self.reassign()?;
        }
        Ok(Some(record))
    }

    /// Commits the positions read on every cluster.
    pub async fn commit_all(&mut self) {
        self.commit(CommitMode::Sync).await;
    }

    async fn commit(&mut self, mode: CommitMode) {
        self.last_commit = Instant::now();
        let names: Vec<String> = self.readers.keys().cloned().collect();
        for name in names {
            self.commit_cluster(&name, mode).await;
        }
    }

    async fn commit_cluster(&mut self, name: &str, mode: CommitMode) {
        let Some(reader) = self.readers.get_mut(name) else {
            return;
        };
        if reader.uncommitted.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in &reader.uncommitted {
            if let Err(error) =
                list.add_partition_offset(&reader.topic, *partition, Offset::Offset(*offset))
            {
                tracing::warn!(cluster = %name, %error, "an offset could not be listed");
            }
        }
        let consumer = reader.fetcher.consumer.clone();
        match blocking(move || consumer.commit(&list, mode)).await {
            Ok(()) => reader.uncommitted.clear(),
            Err(error) => {
                tracing::warn!(cluster = %name, %error, "committing positions failed; retrying")
            }
        }
    }
}
