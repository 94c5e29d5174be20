//! Applications of the routing client on a set whose write cluster flips:
//! producers write records numbered per key while the set's
//! `routing.writeCluster` moves back and forth, a consumer reads, and the
//! check counts what was lost, repeated or reordered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kappa_operator::client::check::{Check, Report};
use kappa_operator::client::producer::ProducerSettings;
use kappa_operator::client::{
    Credentials, Discovery, DiscoverySource, Record, RoutedConsumer, RoutedProducer,
};
use kappa_operator::discovery::DiscoveryDocument;
use kube::api::{Patch, PatchParams};
use kube::Client;
use serde_json::json;

use super::kafka::wait_for_document;
use super::{create, kappa_api};

const PRODUCERS: usize = 3;
const KEYS_PER_PRODUCER: usize = 5;
const SET: &str = "events";

/// What a run ended with.
pub struct Flipped {
    /// Records written.
    pub written: u64,
    /// Records written per key (numbered from 0).
    pub per_key: BTreeMap<String, u64>,
    /// Records read, per cluster.
    pub per_cluster: BTreeMap<String, u64>,
    /// Lost, repeated, reordered.
    pub report: Report,
    /// The consumer, where it stopped.
    pub consumer: RoutedConsumer,
}

impl Flipped {
    /// Prints the counts under `what`; fails unless every record written
    /// was read once, in order, from both clusters.
    pub fn assert_clean(&self, what: &str) {
        println!(
            "{what}: {} records written, read per cluster {:?}: {}",
            self.written, self.per_cluster, self.report
        );
        assert!(self.report.clean(), "{}", self.report);
        assert_eq!(self.report.read, self.written);
        assert_eq!(self.per_cluster.len(), 2, "both clusters were read");
    }
}

/// Follows the set's ConfigMap through the API server.
pub fn from_api(client: &Client, ns: &str) -> Discovery {
    Discovery::follow(DiscoverySource::ConfigMap {
        client: client.clone(),
        namespace: ns.to_string(),
        set: SET.to_string(),
    })
}

/// How the consumer of [`flip_while_writing`] sees the discovery document.
pub enum ConsumerView {
    /// Every document as it comes, through the API server.
    Live,
    /// The first document only, from a file written into this directory,
    /// until the moves are done and the producers stopped: a consumer of a
    /// mounted ConfigMap that the kubelet refreshes late.
    Late(std::path::PathBuf),
}

/// Writes the set's current document into `dir` as a mounted ConfigMap has it.
async fn write_document(client: &Client, ns: &str, dir: &std::path::Path) {
    let document = super::kafka::discovery(client, ns, SET)
        .await
        .expect("the set's document");
    let path = dir.join(kappa_operator::discovery::DOCUMENT_KEY);
    std::fs::write(path, document.to_json()).expect("document written");
}

/// Whether the document writes to `cluster` with every earlier segment drained.
pub fn settled_on(document: &DiscoveryDocument, cluster: &str) -> bool {
    let stream = &document.streams[0];
    let Some((live, earlier)) = stream.read.split_last() else {
        return false;
    };
    stream.write.cluster == cluster
        && live.cluster == cluster
        && earlier.iter().all(|s| s.end_offsets.is_some())
}

/// Creates the set `events` in `ns` with one stream on `blue` and `green`
/// (external clusters at `brokers`) and waits for its document.
pub async fn create_set(client: &Client, ns: &str, brokers: &[String], topic: &str) {
    let clusters: Vec<_> = ["blue", "green"]
        .iter()
        .zip(brokers)
        .map(|(name, bootstrap)| {
            json!({"name": name, "overrides": {"external": {"bootstrapServers": [bootstrap]}}})
        })
        .collect();
    let set = json!({
        "apiVersion": "kappa.dev/v1alpha1",
        "kind": "KafkaClusterSet",
        "metadata": {"name": SET},
        "spec": {
            "template": {"provider": "external"},
            "clusters": clusters,
            "streams": [{"name": "orders", "topic": topic, "partitions": 3}],
            "routing": {"writeCluster": "blue"}
        }
    });
    create(client, ns, set).await.expect("set created");
    wait_for_document(client, ns, SET, Duration::from_secs(90), |d| {
        settled_on(d, "blue")
    })
    .await;
}

/// The key and number of a record written by [`write_until`].
pub fn numbered(record: Record) -> (String, u64) {
    let key = String::from_utf8(record.key.unwrap_or_default()).expect("key");
    let number = String::from_utf8(record.payload.unwrap_or_default())
        .expect("payload")
        .parse()
        .expect("a record number");
    (key, number)
}

/// Writes numbered records for its keys until stopped; what it wrote per key.
async fn write_until(
    producer: RoutedProducer,
    index: usize,
    stop: Arc<AtomicBool>,
) -> BTreeMap<String, u64> {
    let mut written: BTreeMap<String, u64> = (0..KEYS_PER_PRODUCER)
        .map(|k| (format!("p{index}-k{k}"), 0))
        .collect();
    while !stop.load(Ordering::Relaxed) {
        for (key, next) in written.iter_mut() {
            producer
                .send("orders", key.as_bytes(), next.to_string().as_bytes())
                .await
                .expect("record delivered");
            *next += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    producer.close().await.expect("producer closed");
    written
}

/// On the set made by [`create_set`]: producers write while the write
/// cluster moves `flips` times, then a consumer's reads are checked.
pub async fn flip_while_writing(
    client: &Client,
    ns: &str,
    brokers: &[String],
    topic: &str,
    flips: usize,
    view: ConsumerView,
) -> Flipped {
    let writing = Writing::start(client, ns, view).await;
    for flip in 0..flips {
        let target = if flip % 2 == 0 { "green" } else { "blue" };
        move_write_cluster(client, ns, target).await;
        wait_for_document(client, ns, SET, Duration::from_secs(60), |d| {
            settled_on(d, target)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    writing.finish(client, ns, brokers, topic).await
}

/// Moves the set's write cluster to `target`.
pub async fn move_write_cluster(client: &Client, ns: &str, target: &str) {
    let patch = json!({"spec": {"routing": {"writeCluster": target}}});
    kappa_api(client, ns, "KafkaClusterSet")
        .patch(SET, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("write cluster moved");
}

/// Producers writing numbered records and a consumer reading them, on the
/// set made by [`create_set`], until [`Writing::finish`].
pub struct Writing {
    view: ConsumerView,
    stop: Arc<AtomicBool>,
    producers: Vec<tokio::task::JoinHandle<BTreeMap<String, u64>>>,
    read: tokio::sync::mpsc::UnboundedReceiver<Record>,
    stop_reading: tokio::sync::oneshot::Sender<()>,
    reader: tokio::task::JoinHandle<RoutedConsumer>,
}

impl Writing {
    /// Starts the producers and the consumer.
    pub async fn start(client: &Client, ns: &str, view: ConsumerView) -> Writing {
        // The client's warnings (an unreachable or stalled cluster) in the test output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("kappa_operator=warn")
            .with_test_writer()
            .try_init();
        let stop = Arc::new(AtomicBool::new(false));
        let mut producers = Vec::new();
        for index in 0..PRODUCERS {
            let settings = ProducerSettings {
                id: format!("writer-{index}"),
                acknowledge_through: Some(client.clone()),
                credentials: Credentials::default(),
                config: BTreeMap::new(),
            };
            let producer = RoutedProducer::start(from_api(client, ns), settings)
                .await
                .expect("producer started");
            producers.push(tokio::spawn(write_until(producer, index, stop.clone())));
        }
        let discovery = match &view {
            ConsumerView::Live => from_api(client, ns),
            ConsumerView::Late(dir) => {
                write_document(client, ns, dir).await;
                Discovery::follow(DiscoverySource::Directory(dir.clone()))
            }
        };
        let mut consumer =
            RoutedConsumer::start(discovery, "orders", "checker", Credentials::default())
                .await
                .expect("consumer started");
        let (records, read) = tokio::sync::mpsc::unbounded_channel();
        let (stop_reading, mut reading_stopped) = tokio::sync::oneshot::channel::<()>();
        let reader = tokio::spawn(async move {
            loop {
                let record = tokio::select! {
                    _ = &mut reading_stopped => return consumer,
                    record = consumer.next() => record.expect("a record"),
                };
                if records.send(record).is_err() {
                    return consumer;
                }
            }
        });
        Writing {
            view,
            stop,
            producers,
            read,
            stop_reading,
            reader,
        }
    }

    /// Stops the producers, reads until every record written was read (and
    /// a little longer: anything beyond would be a repeat) and checks.
    pub async fn finish(
        mut self,
        client: &Client,
        ns: &str,
        brokers: &[String],
        topic: &str,
    ) -> Flipped {
        self.stop.store(true, Ordering::Relaxed);
        let mut written = BTreeMap::new();
        for producer in self.producers {
            written.extend(producer.await.expect("producer task"));
        }
        let expected: u64 = written.values().sum();
        if let ConsumerView::Late(dir) = &self.view {
            write_document(client, ns, dir).await;
        }

        // Until every record is read, then a little longer: anything beyond
        // would be a repeat.
        let mut check = Check::default();
        let mut per_cluster: BTreeMap<String, u64> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut count = 0;
        while Instant::now() < deadline {
            let wait = if count < expected { 1 } else { 2 };
            match tokio::time::timeout(Duration::from_secs(wait), self.read.recv()).await {
                Ok(Some(record)) => {
                    *per_cluster.entry(record.cluster.clone()).or_default() += 1;
                    let (key, number) = numbered(record);
                    check.read(&key, number);
                    count += 1;
                }
                _ if count >= expected => break,
                _ => {}
            }
        }
        let _ = self.stop_reading.send(());
        let consumer = self.reader.await.expect("reader task");
        let report = check.report(&written);
        if !report.clean() {
            // Where the consumer stands against what the clusters hold.
            let document = super::kafka::discovery(client, ns, SET).await;
            eprintln!("consumer positions: {:?}", consumer.positions());
            eprintln!(
                "segments: {:?}",
                document.map(|d| d.streams[0].read.clone())
            );
            let positions = consumer.positions();
            for (cluster, bootstrap) in ["blue", "green"].iter().zip(brokers) {
                let ends = super::kafka::high_watermarks(bootstrap, topic);
                eprintln!("{cluster} ends: {ends:?}");
                let behind: BTreeMap<i32, i64> = ends
                    .keys()
                    .map(|p| {
                        let partition: i32 = p.parse().expect("a partition number");
                        let at = positions.get(&(cluster.to_string(), partition));
                        (partition, at.copied().unwrap_or(0))
                    })
                    .filter(|(p, at)| ends.get(&p.to_string()).is_some_and(|end| at < end))
                    .collect();
                if behind.is_empty() {
                    continue;
                }
                let count = |served: &BTreeMap<i32, Vec<i64>>| {
                    served
                        .iter()
                        .map(|(p, o)| (*p, o.len(), o.first().copied()))
                        .collect::<Vec<_>>()
                };
                let together = super::kafka::offsets_served(bootstrap, "checker", topic, &behind);
                eprintln!(
                    "{cluster} from {behind:?} together, as the checker: {:?}",
                    count(&together)
                );
                for (partition, from) in &behind {
                    let alone = super::kafka::offsets_served(
                        bootstrap,
                        "probe",
                        topic,
                        &BTreeMap::from([(*partition, *from)]),
                    );
                    eprintln!(
                        "{cluster}[{partition}] from {from} alone: {:?}",
                        count(&alone)
                    );
                }
            }
        }
        Flipped {
            written: expected,
            per_key: written.clone(),
            per_cluster,
            report,
            consumer,
        }
    }
}
