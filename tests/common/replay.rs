//! Replay helpers: source data with known keys and timestamps, the plan a
//! Backfill's range gives, a full read of what the backfill clusters hold,
//! and per-key totals computed from the source and read from a job's output.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kappa_operator::kafka::rdkafka_admin::RdKafkaAdmin;
use kappa_operator::kafka::{ClusterConnection, DesiredTopic, KafkaAdmin};
use kappa_operator::replay::plan::{locate, ReplayPlan};
use kappa_operator::replay::{SOURCE_OFFSET_HEADER, SOURCE_PARTITION_HEADER};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Creates `topic` with `partitions` partitions on `bootstrap`.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let desired = DesiredTopic {
        name: topic.to_string(),
        partitions,
        replication: 1,
        config: BTreeMap::new(),
    };
    RdKafkaAdmin::default()
        .create_topic(&ClusterConnection::plaintext(bootstrap), &desired)
        .await
        .expect("topic created");
}

/// An instant in milliseconds as RFC 3339, as a Backfill's range takes it.
pub fn rfc3339(ms: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .expect("a time")
        .to_string()
}

/// Writes `parts` records to `topic` in three parts, a second apart:
/// record `n` has key `k<n % keys>` and a 100-byte value starting with `n`,
/// stamped with the time it is written. Returns the times between the parts:
/// a range covering the middle part only. The producer batches, so the
/// broker stores multi-record batches.
pub fn write_source(bootstrap: &str, topic: &str, parts: [u64; 3], keys: u64) -> (i64, i64) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .expect("source producer");
    let mut times = Vec::new();
    let mut n = 0u64;
    for (part, count) in parts.iter().enumerate() {
        if part > 0 {
            std::thread::sleep(Duration::from_millis(1_100));
            times.push(now_ms());
            std::thread::sleep(Duration::from_millis(100));
        }
        for _ in 0..*count {
            let key = format!("k{}", n % keys);
            let value = format!("{n:0>100}");
            let mut record = BaseRecord::to(topic).key(&key).payload(&value);
            while let Err((error, back)) = producer.send(record) {
                assert!(
                    error.to_string().contains("Queue full"),
                    "writing the source: {error}"
                );
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            n += 1;
        }
        producer
            .flush(Duration::from_secs(120))
            .expect("source written");
    }
    (times[0], times[1])
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The plan for copying `[from, to)` of `topic` from `source` into `destinations`.
pub async fn plan(
    source: &str,
    topic: &str,
    destination_topic: &str,
    range: (i64, i64),
    destinations: &[String],
    multiplier: i32,
    workers: i32,
) -> ReplayPlan {
    let admin = RdKafkaAdmin::default();
    let connection = ClusterConnection::plaintext(source);
    let stream = locate(
        &admin,
        &connection,
        (topic, topic, destination_topic),
        range,
    )
    .await
    .expect("the range is located");
    ReplayPlan {
        source: source.to_string(),
        source_security: None,
        destinations: destinations.to_vec(),
        multiplier,
        workers,
        progress_group: format!("kappa-replay-{destination_topic}"),
        streams: vec![stream],
    }
}

/// One copied record as a backfill cluster holds it.
#[derive(Debug, Clone)]
pub struct Copied {
    /// Backfill cluster index.
    pub cluster: usize,
    /// Destination partition.
    pub partition: i32,
    /// Source partition from its header.
    pub source_partition: i32,
    /// Source offset from its header.
    pub source_offset: i64,
    /// Record key.
    pub key: Vec<u8>,
    /// Key and value bytes.
    pub bytes: i64,
}

/// Hands every record of `topic` on `bootstrap` to `each`, read from offset
/// 0 until nothing more arrives for three seconds.
fn each_record(bootstrap: &str, topic: &str, group: &str, mut each: impl FnMut(&BorrowedMessage)) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut list = TopicPartitionList::new();
    for found in metadata.topics().iter().filter(|t| t.name() == topic) {
        for partition in found.partitions() {
            list.add_partition_offset(topic, partition.id(), Offset::Beginning)
                .expect("position");
        }
    }
    consumer.assign(&list).expect("assigned");
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(3) {
        if let Some(record) = consumer.poll(Duration::from_millis(100)) {
            each(&record.expect("readable"));
            last = Instant::now();
        }
    }
}

/// Every record of `topic` on each of `destinations`.
pub fn read_all(destinations: &[String], topic: &str, group: &str) -> Vec<Copied> {
    let mut all = Vec::new();
    for (cluster, bootstrap) in destinations.iter().enumerate() {
        each_record(bootstrap, topic, group, |record| {
            let header = |name: &str| -> i64 {
                let headers = record.headers().expect("replay headers");
                let value = headers
                    .iter()
                    .filter(|h| h.key == name)
                    .last()
                    .and_then(|h| h.value)
                    .expect("header present");
                std::str::from_utf8(value)
                    .expect("text")
                    .parse()
                    .expect("number")
            };
            all.push(Copied {
                cluster,
                partition: record.partition(),
                source_partition: header(SOURCE_PARTITION_HEADER) as i32,
                source_offset: header(SOURCE_OFFSET_HEADER),
                key: record.key().unwrap_or_default().to_vec(),
                bytes: (record.key_len() + record.payload_len()) as i64,
            });
        });
    }
    all
}

/// Count and sum of numbers per key.
pub type Totals = BTreeMap<Vec<u8>, (u64, u64)>;

fn number(text: Option<&[u8]>) -> u64 {
    text.and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| t.trim().parse().ok())
        .expect("a numeric value")
}

/// The reference a job aggregating the range must reach: per key, how many
/// records of `topic` are stamped within `[from, to)` (ms) and the sum of
/// their values, computed from the source itself; and the key and value
/// bytes of those records.
pub fn reference(bootstrap: &str, topic: &str, (from, to): (i64, i64)) -> (Totals, i64) {
    let mut totals = Totals::new();
    let mut bytes = 0;
    each_record(bootstrap, topic, "kappa-reference", |record| {
        let stamped = record.timestamp().to_millis().expect("a timestamp");
        if (from..to).contains(&stamped) {
            let key = totals
                .entry(record.key().unwrap_or_default().to_vec())
                .or_default();
            key.0 += 1;
            key.1 += number(record.payload());
            bytes += (record.key_len() + record.payload_len()) as i64;
        }
    });
    (totals, bytes)
}

/// Per key, the sums of the `<count> <sum>` records on `topic`: the totals
/// `kappa-demo aggregate` wrote there.
pub fn aggregated(bootstrap: &str, topic: &str) -> Totals {
    let mut totals = Totals::new();
    each_record(bootstrap, topic, "kappa-aggregated", |record| {
        let value = std::str::from_utf8(record.payload().unwrap_or_default()).expect("text");
        let (count, sum) = value.split_once(' ').expect("`<count> <sum>`");
        let key = totals
            .entry(record.key().unwrap_or_default().to_vec())
            .or_default();
        key.0 += number(Some(count.as_bytes()));
        key.1 += number(Some(sum.as_bytes()));
    });
    totals
}

/// What `after` adds to `before`, key by key.
pub fn added(before: &Totals, after: &Totals) -> Totals {
    after
        .iter()
        .map(|(key, (count, sum))| {
            let (was_count, was_sum) = before.get(key).copied().unwrap_or_default();
            (key.clone(), (count - was_count, sum - was_sum))
        })
        .filter(|(_, added)| *added != (0, 0))
        .collect()
}

/// What a replay left, counted against its plan.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Count {
    /// Records of the range found exactly once.
    pub once: u64,
    /// Extra copies of records of the range.
    pub duplicated: u64,
    /// Records of the range not found.
    pub missing: u64,
    /// Records found that are outside the range.
    pub outside: u64,
    /// Records found in a destination partition after one with a greater source offset.
    pub out_of_order: u64,
    /// Records found where the plan's routing does not put them.
    pub misrouted: u64,
}

/// Counts `copied` against `plan` (one stream).
pub fn count(plan: &ReplayPlan, copied: &[Copied]) -> Count {
    let stream = &plan.streams[0];
    let layout = plan.layout(stream);
    let mut seen: BTreeMap<(i32, i64), u64> = BTreeMap::new();
    let mut last: BTreeMap<(usize, i32), i64> = BTreeMap::new();
    let mut result = Count::default();
    for record in copied {
        *seen
            .entry((record.source_partition, record.source_offset))
            .or_default() += 1;
        let previous = last.insert((record.cluster, record.partition), record.source_offset);
        if previous.is_some_and(|p| p >= record.source_offset) {
            result.out_of_order += 1;
        }
        let routed = layout.route(
            record.source_partition,
            Some(&record.key),
            record.source_offset,
        );
        if (routed.cluster, routed.partition) != (record.cluster, record.partition) {
            result.misrouted += 1;
        }
    }
    for range in &stream.partitions {
        for offset in range.start..range.end {
            match seen.remove(&(range.partition, offset)) {
                None => result.missing += 1,
                Some(1) => result.once += 1,
                Some(n) => {
                    result.once += 1;
                    result.duplicated += n - 1;
                }
            }
        }
    }
    result.outside = seen.values().sum();
    result
}
