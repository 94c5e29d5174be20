//! The copy loop of one replay worker: read its source partitions from the
//! range's start, route every record, skip what its destination partition
//! already holds, write the rest with their source position in headers, and
//! every second flush and record how far each destination partition is
//! written and how many bytes of the range it holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::plan::{ReplayPlan, Unit};
use super::route::Layout;
use super::tail::{read_tails, REQUEST_TIMEOUT};
use super::{bytes_group, ReplayError, SOURCE_OFFSET_HEADER, SOURCE_PARTITION_HEADER};
use crate::client::Credentials;

/// How often a worker flushes, records its progress and reports.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a flush may take before the worker gives up (and its Job retries).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// What a worker has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Records written to the backfill clusters by this run.
    pub copied: u64,
    /// Records of the range found already written by an earlier run.
    pub skipped: u64,
    /// Key and value bytes written by this run.
    pub bytes: u64,
}

/// The consumer group suffix under which workers record, per destination
/// partition, the batch boundary a restarted worker scans from.
const RESUME_GROUP_SUFFIX: &str = "-resume";

/// Copies worker `index`'s share of `plan`, calling `report` after every
/// checkpoint; returns what it did once its whole share is written.
pub fn run(
    plan: &ReplayPlan,
    index: i32,
    credentials: &Credentials,
    report: &mut dyn FnMut(&Progress),
) -> Result<Progress, ReplayError> {
    if !(0..plan.workers).contains(&index) {
        return Err(ReplayError::NoSuchWorker {
            index,
            workers: plan.workers,
        });
    }
    let clusters = plan
        .destinations
        .iter()
        .enumerate()
        .map(|(n, bootstrap)| Backfill::connect(n, bootstrap, &plan.progress_group))
        .collect::<Result<Vec<_>, _>>()?;
    let watched: Vec<(usize, &str, i32)> = plan
        .units_of(index)
        .into_iter()
        .flat_map(|unit| {
            let topic = unit.stream.destination_topic.as_str();
            plan.layout(unit.stream)
                .destinations_of(unit.range.partition)
                .into_iter()
                .map(move |d| (d.cluster, topic, d.partition))
        })
        .collect();
    wait_until_quiet(&clusters, &watched)?;
    let mut shares = Vec::new();
    for unit in plan.units_of(index) {
        shares.push(Share::resume(plan, unit, &clusters)?);
    }
    let source = credentials
        .connect(
            &plan.source,
            plan.source_security.as_ref(),
            &source_settings(&plan.progress_group),
        )
        .map_err(|e| ReplayError::Credentials(e.to_string()))?
        .create::<BaseConsumer>()
        .map_err(ReplayError::kafka("connecting to the source cluster"))?;
    let mut copy = Copy {
        clusters,
        shares,
        progress: Progress::default(),
    };
    copy.run(&source, report)?;
    Ok(copy.progress)
}

/// How long a worker's destination partitions must stay unchanged before it
/// reads their tails: an earlier run of this worker whose pod was
/// force-deleted may still be writing for a moment, and tails read before it
/// stops would make this run write its last records again.
const QUIET: Duration = Duration::from_secs(3);

/// How long a worker waits for its destination partitions to go quiet.
const QUIET_WITHIN: Duration = Duration::from_secs(120);

/// Waits until the high watermarks of `watched` (cluster, topic, partition)
/// have not changed for `QUIET`: no other writer of this share is alive. A
/// partition that cannot be read counts as unchanged (its broker is down,
/// so nobody writes it).
fn wait_until_quiet(
    clusters: &[Backfill],
    watched: &[(usize, &str, i32)],
) -> Result<(), ReplayError> {
    let observe = || -> Vec<Option<i64>> {
        watched
            .iter()
            .map(|(cluster, topic, partition)| {
                clusters[*cluster]
                    .resume
                    .fetch_watermarks(topic, *partition, REQUEST_TIMEOUT)
                    .ok()
                    .map(|(_, high)| high)
            })
            .collect()
    };
    let started = Instant::now();
    let mut last = observe();
    let mut unchanged_since = Instant::now();
    while unchanged_since.elapsed() < QUIET {
        if started.elapsed() > QUIET_WITHIN {
            return Err(ReplayError::StillWritten {
                seconds: QUIET_WITHIN.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
        let now = observe();
        if now != last {
            last = now;
            unchanged_since = Instant::now();
        }
    }
    Ok(())
}

/// A consumer that commits only when told to and fetches whole batches:
/// a fetch cut short inside a batch would continue from inside it, where
/// Tansu 0.6 returns nothing.
fn source_settings(group: &str) -> BTreeMap<String, String> {
    [
        ("log_level", "3"),
        ("group.id", group),
        ("enable.auto.commit", "false"),
        ("fetch.message.max.bytes", "16777216"),
        ("fetch.max.bytes", "67108864"),
        ("receive.message.max.bytes", "100000000"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect()
}

fn consumer_config(bootstrap: &str, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in source_settings(group) {
        config.set(key, value);
    }
    config
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("log_level", "3");
    config
}

/// Offsets delivered per destination topic and partition, and the first failure.
#[derive(Default)]
struct Deliveries {
    next: Mutex<HashMap<String, HashMap<i32, i64>>>,
    failure: Mutex<Option<KafkaError>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(record) => {
                let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
                let partitions = match next.get_mut(record.topic()) {
                    Some(partitions) => partitions,
                    None => next.entry(record.topic().to_string()).or_default(),
                };
                let entry = partitions.entry(record.partition()).or_insert(0);
                *entry = (*entry).max(record.offset() + 1);
            }
            Err((error, _)) => {
                let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
                failure.get_or_insert_with(|| error.clone());
            }
        }
    }
}

impl Deliveries {
    fn next(&self, topic: &str, partition: i32) -> Option<i64> {
        let next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        next.get(topic)?.get(&partition).copied()
    }

    fn failure(&self) -> Option<KafkaError> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// One backfill cluster: a producer and the three groups progress is recorded under.
struct Backfill {
    index: usize,
    producer: ThreadedProducer<Deliveries>,
    /// Commits the exact next offset of every destination partition written.
    progress: BaseConsumer,
    /// Commits a batch boundary below the last record of each partition.
    resume: BaseConsumer,
    /// Commits the bytes of the range each destination partition holds.
    bytes: BaseConsumer,
}

impl Backfill {
    fn connect(index: usize, bootstrap: &str, group: &str) -> Result<Self, ReplayError> {
        let connecting = format!("connecting to destination {index}");
        let producer = client_config(bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "500000")
            .set("message.timeout.ms", "30000")
            .create_with_context(Deliveries::default())
            .map_err(ReplayError::kafka(connecting.clone()))?;
        let member = |group: String| {
            consumer_config(bootstrap, &group)
                .create::<BaseConsumer>()
                .map_err(ReplayError::kafka(connecting.clone()))
        };
        Ok(Self {
            index,
            producer,
            progress: member(group.to_string())?,
            resume: member(format!("{group}{RESUME_GROUP_SUFFIX}"))?,
            bytes: member(bytes_group(group))?,
        })
    }

    /// Fails unless `topic` has at least `needed` partitions here.
    fn require_topic(&self, topic: &str, needed: i32) -> Result<(), ReplayError> {
        let metadata = self
            .resume
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(ReplayError::kafka(format!(
                "reading the metadata of {topic} on destination {}",
                self.index
            )))?;
        let found = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len() as i32)
            .max()
            .unwrap_or(0);
        if found < needed {
            return Err(ReplayError::DestinationTopic {
                cluster: self.index,
                topic: topic.to_string(),
                found,
                needed,
            });
        }
        Ok(())
    }

    /// Fails when a partition's high watermark is not above its recorded
    /// boundary: the broker lost records it had acknowledged (a broker
    /// restarted without its data), so what the worker believes written is
    /// not there and it must start again from what is.
    fn check_kept(&self, topic: &str, hints: &BTreeMap<i32, i64>) -> Result<(), ReplayError> {
        for (partition, hint) in hints {
            let (_, high) = self
                .resume
                .fetch_watermarks(topic, *partition, REQUEST_TIMEOUT)
                .map_err(ReplayError::kafka(format!(
                    "reading the high watermark of {topic}/{partition} on destination {}",
                    self.index
                )))?;
            if high <= *hint {
                return Err(ReplayError::Lost {
                    cluster: self.index,
                    topic: topic.to_string(),
                    partition: *partition,
                    high,
                    written: *hint,
                });
            }
        }
        Ok(())
    }

    fn commit(
        &self,
        consumer: &BaseConsumer,
        topic: &str,
        offsets: &BTreeMap<i32, i64>,
    ) -> Result<(), ReplayError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in offsets {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(ReplayError::kafka("recording replay progress"))?;
        }
        consumer
            .commit(&list, CommitMode::Sync)
            .map_err(ReplayError::kafka(format!(
                "recording replay progress on destination {}",
                self.index
            )))
    }
}

/// One source partition being copied, and where each of its destination
/// partitions stands.
struct Share<'a> {
    unit: Unit<'a>,
    layout: Layout,
    cluster: usize,
    /// Per destination partition: the greatest source offset it holds.
    written: BTreeMap<i32, Option<i64>>,
    /// Per destination partition: the batch boundary at the last checkpoint.
    boundary: BTreeMap<i32, i64>,
    /// Per destination partition: the boundary recorded for a restart.
    hint: BTreeMap<i32, i64>,
    /// Per destination partition: key and value bytes of the records read
    /// so far that go there, written by this run or found there.
    bytes: BTreeMap<i32, i64>,
    /// Per destination partition: the bytes an earlier run recorded, below
    /// which this run, counting again from the range's start, records none.
    bytes_recorded: BTreeMap<i32, i64>,
    done: bool,
}

impl<'a> Share<'a> {
    /// Reads what the share's destination partitions hold already.
    fn resume(
        plan: &ReplayPlan,
        unit: Unit<'a>,
        clusters: &[Backfill],
    ) -> Result<Self, ReplayError> {
        let layout = plan.layout(unit.stream);
        let destinations = layout.destinations_of(unit.range.partition);
        let cluster = destinations.first().map_or(0, |d| d.cluster);
        let backfill = &clusters[cluster];
        let topic = &unit.stream.destination_topic;
        backfill.require_topic(topic, layout.destination_partitions())?;
        let partitions: Vec<i32> = destinations.iter().map(|d| d.partition).collect();
        let hints = committed(&backfill.resume, topic, &partitions)?;
        let bytes_recorded = committed(&backfill.bytes, topic, &partitions)?;
        let tails = read_tails(&backfill.resume, cluster, topic, &partitions, &hints)?;
        Ok(Self {
            unit,
            layout,
            cluster,
            written: tails
                .iter()
                .map(|(p, t)| (*p, t.last_source_offset))
                .collect(),
            boundary: tails.iter().map(|(p, t)| (*p, t.next_offset)).collect(),
            hint: BTreeMap::new(),
            bytes: BTreeMap::new(),
            bytes_recorded,
            done: false,
        })
    }

    /// Whether the record at `offset` routed to `partition` is already there.
    fn holds(&self, partition: i32, offset: i64) -> bool {
        self.written
            .get(&partition)
            .copied()
            .flatten()
            .is_some_and(|last| offset <= last)
    }
}

/// Committed offsets of `partitions` of `topic` for the consumer's group.
fn committed(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
) -> Result<BTreeMap<i32, i64>, ReplayError> {
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        list.add_partition(topic, *partition);
    }
    let found = consumer
        .committed_offsets(list, REQUEST_TIMEOUT)
        .map_err(ReplayError::kafka(format!(
            "reading the resume points of {topic}"
        )))?;
    Ok(found
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(offset) => Some((e.partition(), offset)),
            _ => None,
        })
        .collect())
}

struct Copy<'a> {
    clusters: Vec<Backfill>,
    shares: Vec<Share<'a>>,
    progress: Progress,
}

impl Copy<'_> {
    fn run(
        &mut self,
        source: &BaseConsumer,
        report: &mut dyn FnMut(&Progress),
    ) -> Result<(), ReplayError> {
        let mut list = TopicPartitionList::new();
        let mut lookup: HashMap<&str, HashMap<i32, usize>> = HashMap::new();
        for (n, share) in self.shares.iter().enumerate() {
            let topic = share.unit.stream.source_topic.as_str();
            list.add_partition_offset(
                topic,
                share.unit.range.partition,
                Offset::Offset(share.unit.range.start),
            )
            .map_err(ReplayError::kafka("assigning source partitions"))?;
            lookup
                .entry(topic)
                .or_default()
                .insert(share.unit.range.partition, n);
        }
        source
            .assign(&list)
            .map_err(ReplayError::kafka("assigning source partitions"))?;
        let mut last_checkpoint = Instant::now();
        while self.shares.iter().any(|s| !s.done) {
            if last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
                self.checkpoint()?;
                report(&self.progress);
                last_checkpoint = Instant::now();
            }
            let record = match source.poll(Duration::from_millis(100)) {
                None => continue,
                Some(record) => record.map_err(ReplayError::kafka("reading the source cluster"))?,
            };
            let found = lookup
                .get(record.topic())
                .and_then(|p| p.get(&record.partition()));
            if let Some(&n) = found {
                self.copy(source, n, &record)?;
            }
        }
        self.checkpoint()?;
        report(&self.progress);
        Ok(())
    }

    fn copy(
        &mut self,
        source: &BaseConsumer,
        n: usize,
        record: &BorrowedMessage<'_>,
    ) -> Result<(), ReplayError> {
        let share = &mut self.shares[n];
        let (offset, range) = (record.offset(), share.unit.range);
        if share.done || offset < range.start {
            return Ok(());
        }
        if offset >= range.end {
            return finish(source, share);
        }
        let destination = share.layout.route(range.partition, record.key(), offset);
        let size = (record.key_len() + record.payload_len()) as u64;
        *share.bytes.entry(destination.partition).or_default() += size as i64;
        if share.holds(destination.partition, offset) {
            self.progress.skipped += 1;
        } else {
            let producer = &self.clusters[share.cluster].producer;
            send(
                producer,
                &share.unit.stream.destination_topic,
                destination.partition,
                record,
            )?;
            self.progress.copied += 1;
            self.progress.bytes += size;
        }
        if offset + 1 >= range.end {
            finish(source, share)?;
        }
        Ok(())
    }

    /// Flushes every producer, fails on a failed delivery, and records how
    /// far every destination partition is written.
    fn checkpoint(&mut self) -> Result<(), ReplayError> {
        for backfill in &self.clusters {
            backfill
                .producer
                .flush(FLUSH_TIMEOUT)
                .map_err(ReplayError::kafka(format!(
                    "flushing to destination {}",
                    backfill.index
                )))?;
            if let Some(error) = backfill.producer.context().failure() {
                return Err(ReplayError::Kafka {
                    what: format!("writing to destination {}", backfill.index),
                    source: error,
                });
            }
        }
        for share in &mut self.shares {
            let backfill = &self.clusters[share.cluster];
            let topic = &share.unit.stream.destination_topic;
            let mut next = BTreeMap::new();
            for (partition, boundary) in share.boundary.iter_mut() {
                let delivered = backfill.producer.context().next(topic, *partition);
                let now = delivered.unwrap_or(*boundary).max(*boundary);
                if now > *boundary {
                    share.hint.insert(*partition, *boundary);
                    *boundary = now;
                }
                next.insert(*partition, now);
            }
            backfill.check_kept(topic, &share.hint)?;
            backfill.commit(&backfill.progress, topic, &next)?;
            backfill.commit(&backfill.resume, topic, &share.hint)?;
            let bytes: BTreeMap<i32, i64> = share
                .bytes
                .iter()
                .filter(|(p, bytes)| share.bytes_recorded.get(p).is_none_or(|r| *bytes > r))
                .map(|(p, bytes)| (*p, *bytes))
                .collect();
            backfill.commit(&backfill.bytes, topic, &bytes)?;
            share.bytes_recorded.extend(bytes);
        }
        Ok(())
    }
}

/// Marks a share copied and stops fetching its partition.
fn finish(source: &BaseConsumer, share: &mut Share<'_>) -> Result<(), ReplayError> {
    share.done = true;
    let mut list = TopicPartitionList::new();
    list.add_partition(&share.unit.stream.source_topic, share.unit.range.partition);
    source
        .pause(&list)
        .map_err(ReplayError::kafka("pausing a copied source partition"))
}

/// Writes `record` with its source position, waiting while the queue is full.
fn send(
    producer: &ThreadedProducer<Deliveries>,
    topic: &str,
    partition: i32,
    record: &BorrowedMessage<'_>,
) -> Result<(), ReplayError> {
    let source_partition = record.partition().to_string();
    let source_offset = record.offset().to_string();
    let mut headers = OwnedHeaders::new();
    if let Some(original) = record.headers() {
        for header in original.iter() {
            headers = headers.insert(header);
        }
    }
    let headers = headers
        .insert(Header {
            key: SOURCE_PARTITION_HEADER,
            value: Some(&source_partition),
        })
        .insert(Header {
            key: SOURCE_OFFSET_HEADER,
            value: Some(&source_offset),
        });
    let mut out: BaseRecord<'_, [u8], [u8]> =
        BaseRecord::to(topic).partition(partition).headers(headers);
    if let Some(key) = record.key() {
        out = out.key(key);
    }
    if let Some(payload) = record.payload() {
        out = out.payload(payload);
    }
    if let Some(timestamp) = record.timestamp().to_millis() {
        out = out.timestamp(timestamp);
    }
    loop {
        match producer.send(out) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                out = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((error, _)) => {
                return Err(ReplayError::Kafka {
                    what: format!("writing to {topic}/{partition}"),
                    source: error,
                })
            }
        }
    }
}
