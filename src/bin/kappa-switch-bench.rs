//! Benchmark of moving the write cluster, against two real brokers:
//! the routing client following a discovery document (written to a file
//! as a mounted ConfigMap would be, with this program playing the
//! operator's part of the migration), against what a user does without it
//! (restart producer and consumer with the new bootstrap servers). Reports,
//! over many moves, the time from the decision to the first record written
//! on the new cluster and to the consumer reading it, p50 and p99, and the
//! routed move's steps before those.
//!
//!   kappa-switch-bench --blue HOST:PORT --green HOST:PORT [--flips 40] [--fetch-wait-ms 100]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use kappa_operator::api::kafka_cluster_set::ClusterRole;
use kappa_operator::client::producer::ProducerSettings;
use kappa_operator::client::{
    Credentials, Discovery, DiscoverySource, ReadOptions, RoutedConsumer, RoutedProducer,
};
use kappa_operator::discovery::{
    ClusterState, DiscoveredCluster, DiscoveredStream, DiscoveryDocument, ReadSegment, Segment,
    DOCUMENT_KEY, FORMAT_VERSION,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TOPIC: &str = "switch-bench";
const PARTITIONS: i32 = 3;
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(about = "Measures moving the write cluster: routed client against restarting")]
struct Cli {
    /// Bootstrap address of the first broker.
    #[arg(long)]
    blue: String,
    /// Bootstrap address of the second broker.
    #[arg(long)]
    green: String,
    /// Moves per method.
    #[arg(long, default_value_t = 40)]
    flips: usize,
    /// How long a broker may hold a fetch (`fetch.wait.max.ms`), for both
    /// consumers; the routing client's default unless given.
    #[arg(long)]
    fetch_wait_ms: Option<u64>,
}

impl Cli {
    fn fetch_wait(&self) -> Duration {
        self.fetch_wait_ms
            .map_or(ReadOptions::default().fetch_wait, Duration::from_millis)
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What one side touched and when.
#[derive(Default)]
struct Switches {
    /// Each time it went on to another cluster: (time, cluster).
    firsts: Mutex<Vec<(Instant, String)>>,
    /// When it last touched each cluster.
    lasts: Mutex<BTreeMap<String, Instant>>,
}

impl Switches {
    fn note(&self, last: &mut Option<String>, cluster: &str) {
        self.lasts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(cluster.to_string(), Instant::now());
        if last.as_deref() != Some(cluster) {
            *last = Some(cluster.to_string());
            let mut seen = self
                .firsts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            seen.push((Instant::now(), cluster.to_string()));
        }
    }

    /// Waits until `cluster` was reached after `since`; when.
    async fn reached(&self, cluster: &str, since: Instant) -> Result<Instant> {
        let deadline = since + Duration::from_secs(60);
        while Instant::now() < deadline {
            let found = self
                .firsts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .find(|(at, c)| *at >= since && c == cluster)
                .map(|(at, _)| *at);
            if let Some(at) = found {
                return Ok(at);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Err(format!("{cluster} not reached within 60 s").into())
    }

    /// When `cluster` was last touched.
    fn last(&self, cluster: &str) -> Option<Instant> {
        self.lasts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(cluster)
            .copied()
    }
}

/// The operator's part: the document, rewritten as a mounted ConfigMap is.
struct Map {
    dir: PathBuf,
    document: DiscoveryDocument,
}

impl Map {
    fn new(dir: &Path, blue: &str, green: &str) -> Self {
        let cluster = |name: &str, bootstrap: &str| DiscoveredCluster {
            name: name.into(),
            role: ClusterRole::Primary,
            state: ClusterState::Active,
            bootstrap_servers: bootstrap.into(),
            security: None,
        };
        let segment = |cluster: &str| ReadSegment {
            cluster: cluster.into(),
            topic: TOPIC.into(),
            start_offsets: None,
            end_offsets: None,
        };
        Self {
            dir: dir.to_path_buf(),
            document: DiscoveryDocument {
                version: FORMAT_VERSION,
                epoch: 1,
                namespace: "bench".into(),
                set: "bench".into(),
                clusters: vec![cluster("blue", blue), cluster("green", green)],
                streams: vec![DiscoveredStream {
                    name: "events".into(),
                    write: Segment {
                        cluster: "blue".into(),
                        topic: TOPIC.into(),
                    },
                    read: vec![segment("blue")],
                }],
            },
        }
    }

    fn publish(&mut self) -> Result<()> {
        self.document.epoch += 1;
        let staged = self.dir.join(".staged");
        std::fs::write(&staged, self.document.to_json())?;
        std::fs::rename(&staged, self.dir.join(DOCUMENT_KEY))?;
        Ok(())
    }

    /// Announces `to` as the write cluster; the current one is being drained.
    fn announce(&mut self, to: &str) -> Result<()> {
        let stream = &mut self.document.streams[0];
        let start = stream
            .read
            .iter()
            .rev()
            .find(|s| s.cluster == to)
            .and_then(|s| s.end_offsets.clone());
        stream.write.cluster = to.into();
        stream.read.push(ReadSegment {
            cluster: to.into(),
            topic: TOPIC.into(),
            start_offsets: start,
            end_offsets: None,
        });
        self.publish()
    }

    /// Records the end offsets of the segment being drained.
    fn drained(&mut self, ends: BTreeMap<String, i64>) -> Result<()> {
        let read = &mut self.document.streams[0].read;
        let open = read.len() - 2;
        read[open].end_offsets = Some(ends);
        self.publish()
    }
}

fn config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    config
}

fn high_watermarks(bootstrap: &str) -> Result<BTreeMap<String, i64>> {
    let consumer: BaseConsumer = config(bootstrap).create()?;
    let mut ends = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let (_, high) = consumer.fetch_watermarks(TOPIC, partition, TIMEOUT)?;
        ends.insert(partition.to_string(), high);
    }
    Ok(ends)
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index].as_secs_f64() * 1000.0
}

struct Measured {
    written: Vec<Duration>,
    caught_up: Vec<Duration>,
}

/// When each step of a routed move ended, from the decision.
#[derive(Default)]
struct Steps {
    /// The producer acknowledged the new epoch (it read the document).
    acknowledged: Vec<Duration>,
    /// The old cluster's end offsets were read and published.
    ends_published: Vec<Duration>,
    /// The consumer read the old cluster's last record.
    old_read: Vec<Duration>,
}

async fn routed(cli: &Cli, dir: &Path) -> Result<(Measured, Steps)> {
    let mut map = Map::new(dir, &cli.blue, &cli.green);
    map.publish()?;
    let source = || Discovery::follow(DiscoverySource::Directory(dir.to_path_buf()));
    let settings = ProducerSettings {
        id: "bench".into(),
        acknowledge_through: None,
        credentials: Credentials::default(),
        config: BTreeMap::new(),
    };
    let producer = Arc::new(RoutedProducer::start(source(), settings).await?);
    let options = ReadOptions {
        fetch_wait: cli.fetch_wait(),
        ..ReadOptions::default()
    };
    let mut consumer = RoutedConsumer::start_with(
        source(),
        "events",
        "bench-routed",
        Credentials::default(),
        options,
    )
    .await?;
    let (writes, reads) = (Arc::new(Switches::default()), Arc::new(Switches::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writer = {
        let (producer, writes, stop) = (producer.clone(), writes.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut last, mut n) = (None, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let key = format!("k{}", n % 16);
                match producer
                    .send("events", key.as_bytes(), &n.to_be_bytes())
                    .await
                {
                    Ok(delivery) => writes.note(&mut last, &delivery.cluster),
                    Err(error) => eprintln!("send failed: {error}"),
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let reader = {
        let reads = reads.clone();
        tokio::spawn(async move {
            let mut last = None;
            while let Ok(record) = consumer.next().await {
                reads.note(&mut last, &record.cluster);
            }
        })
    };
    let mut measured = Measured {
        written: Vec::new(),
        caught_up: Vec::new(),
    };
    let mut steps = Steps::default();
    let (mut from, mut to) = ("blue", "green");
    // Moves start once a record was delivered, as the restarted client's
    // first move does: an idempotent producer's first delivery waits for
    // its producer id (about 500 ms on Tansu), which a move after it must
    // wait for too, and which is a start, not a move.
    writes.reached(from, started).await?;
    reads.reached(from, started).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..cli.flips {
        let decided = Instant::now();
        map.announce(to)?;
        // What the operator waits for: the producer acknowledging the epoch.
        let epoch = map.document.epoch;
        while producer.epoch().await < epoch {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        steps.acknowledged.push(decided.elapsed());
        let ends = high_watermarks(if from == "blue" {
            &cli.blue
        } else {
            &cli.green
        })?;
        map.drained(ends)?;
        steps.ends_published.push(decided.elapsed());
        measured
            .written
            .push(writes.reached(to, decided).await? - decided);
        measured
            .caught_up
            .push(reads.reached(to, decided).await? - decided);
        let old_read = reads.last(from).ok_or("the old cluster was never read")?;
        steps
            .old_read
            .push(old_read.saturating_duration_since(decided));
        tokio::time::sleep(Duration::from_millis(200)).await;
        (from, to) = (to, from);
    }
    stop.store(true, Ordering::Relaxed);
    writer.await?;
    reader.abort();
    Ok((measured, steps))
}

/// Without routing: on each move the producer and the consumer are
/// restarted with the other cluster's bootstrap servers; the consumer
/// resumes from the group's position there.
async fn restarted(cli: &Cli) -> Result<Measured> {
    let bootstrap = |cluster: &str| {
        if cluster == "blue" {
            cli.blue.clone()
        } else {
            cli.green.clone()
        }
    };
    let mut measured = Measured {
        written: Vec::new(),
        caught_up: Vec::new(),
    };
    let (mut from, mut to) = ("blue", "green");
    let mut producer: FutureProducer = config(&bootstrap(from))
        .set("enable.idempotence", "true")
        .create()?;
    for _ in 0..cli.flips {
        producer
            .send(FutureRecord::to(TOPIC).key("k").payload("x"), TIMEOUT)
            .await
            .map_err(|(e, _)| e)?;
        let decided = Instant::now();
        // The consumer restarts on the new cluster at the group's position
        // there (its end: everything before was read on the last visit).
        let starts = high_watermarks(&bootstrap(to))?;
        producer.flush(TIMEOUT)?;
        drop(producer);
        producer = config(&bootstrap(to))
            .set("enable.idempotence", "true")
            .create()?;
        producer
            .send(FutureRecord::to(TOPIC).key("k").payload("x"), TIMEOUT)
            .await
            .map_err(|(e, _)| e)?;
        measured.written.push(decided.elapsed());
        let consumer: BaseConsumer = config(&bootstrap(to))
            .set("group.id", "bench-restarted")
            .set("enable.auto.commit", "false")
            // As the routed consumer fetches.
            .set(
                "fetch.wait.max.ms",
                cli.fetch_wait().as_millis().to_string(),
            )
            .create()?;
        let mut list = TopicPartitionList::new();
        for (partition, offset) in &starts {
            list.add_partition_offset(TOPIC, partition.parse()?, Offset::Offset(*offset))?;
        }
        consumer.assign(&list)?;
        let consumer = Arc::new(consumer);
        let polled = consumer.clone();
        tokio::task::spawn_blocking(move || loop {
            if let Some(Ok(_)) = polled.poll(Duration::from_millis(100)) {
                return;
            }
        })
        .await?;
        measured.caught_up.push(decided.elapsed());
        (from, to) = (to, from);
    }
    Ok(measured)
}

async fn create_topics(cli: &Cli) -> Result<()> {
    for bootstrap in [&cli.blue, &cli.green] {
        let admin: AdminClient<DefaultClientContext> = config(bootstrap).create()?;
        let topic = NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1));
        admin.create_topics(&[topic], &AdminOptions::new()).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    create_topics(&cli).await?;
    let dir = std::env::temp_dir().join(format!("kappa-switch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (mut routed, mut steps) = routed(&cli, &dir).await?;
    std::fs::remove_dir_all(&dir)?;
    let mut restarted = restarted(&cli).await?;
    let row = |name: &str, samples: &mut Vec<Duration>, peer: &mut Vec<Duration>| {
        let (p50, p99) = (percentile(samples, 0.5), percentile(samples, 0.99));
        let (q50, q99) = (percentile(peer, 0.5), percentile(peer, 0.99));
        println!(
            "| {name} | {p50:.1} / {p99:.1} ms | {q50:.1} / {q99:.1} ms | {:.2} / {:.2} |",
            p50 / q50,
            p99 / q99
        );
    };
    println!(
        "\n{} moves each, fetches held up to {} ms, p50 / p99:\n",
        cli.flips,
        cli.fetch_wait().as_millis()
    );
    println!("| from the decision to | routed client | restarted client | ratio |");
    println!("|---|---|---|---|");
    row(
        "the first record written on the new cluster",
        &mut routed.written,
        &mut restarted.written,
    );
    row(
        "the consumer reading it",
        &mut routed.caught_up,
        &mut restarted.caught_up,
    );
    println!("\nThe routed move's steps, p50 / p99 from the decision:\n");
    println!("| the step ended | routed client |");
    println!("|---|---|");
    for (name, samples) in [
        (
            "the producer acknowledged the new epoch",
            &mut steps.acknowledged,
        ),
        (
            "the old cluster's end offsets read and published",
            &mut steps.ends_published,
        ),
        (
            "the first record written on the new cluster",
            &mut routed.written,
        ),
        (
            "the consumer read the old cluster's last record",
            &mut steps.old_read,
        ),
        (
            "the consumer read the new cluster's first",
            &mut routed.caught_up,
        ),
    ] {
        let (p50, p99) = (percentile(samples, 0.5), percentile(samples, 0.99));
        println!("| {name} | {p50:.1} / {p99:.1} ms |");
    }
    Ok(())
}
