//! Kafka-side helpers for tests: what a broker itself reports, the
//! discovery document as a client reads it, and a producer that follows the
//! document and acknowledges epochs the way the documented protocol says.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kappa_operator::discovery::acknowledgement::{
    ACKNOWLEDGED_EPOCH_ANNOTATION, CLIENT_LABEL, CLUSTER_SET_LABEL, PRODUCER,
};
use kappa_operator::discovery::DiscoveryDocument;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client")
}

/// Partitions of `topic` in the metadata of the broker at `bootstrap`.
pub fn partitions_on(bootstrap: &str, topic: &str) -> Option<usize> {
    let metadata = admin(bootstrap)
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("Metadata answers");
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len())
}

/// Partitions and configuration of `topic` as the broker reports them.
pub async fn topic_on(bootstrap: &str, topic: &str) -> Option<(usize, BTreeMap<String, String>)> {
    let partitions = partitions_on(bootstrap, topic)?;
    let admin = admin(bootstrap);
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .expect("DescribeConfigs answers");
    let config = described
        .into_iter()
        .flatten()
        .flat_map(|resource| resource.entries)
        .filter_map(|entry| Some((entry.name, entry.value?)))
        .collect();
    Some((partitions, config))
}

/// The high watermark of every partition of `topic`, keyed as the discovery
/// document keys them (decimal strings).
pub fn high_watermarks(bootstrap: &str, topic: &str) -> BTreeMap<String, i64> {
    let admin = admin(bootstrap);
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("Metadata answers");
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions
        .into_iter()
        .map(|p| {
            let (_, high) = admin
                .inner()
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            (p.to_string(), high)
        })
        .collect()
}

/// The offsets a fresh consumer in `group` reads within a few seconds
/// when it fetches `topic`'s partitions from the given offsets at once:
/// what the broker itself serves there.
pub fn offsets_served(
    bootstrap: &str,
    group: &str,
    topic: &str,
    from: &BTreeMap<i32, i64>,
) -> BTreeMap<i32, Vec<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("socket.timeout.ms", "5000")
        .create()
        .expect("probe consumer");
    let mut assignment = TopicPartitionList::new();
    for (partition, offset) in from {
        assignment
            .add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .expect("probe position");
    }
    consumer.assign(&assignment).expect("probe assigned");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut offsets: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => offsets
                .entry(rdkafka::Message::partition(&message))
                .or_default()
                .push(rdkafka::Message::offset(&message)),
            Some(Err(error)) => eprintln!("probe of {topic} at {from:?}: {error}"),
            None => {}
        }
    }
    offsets
}

/// The discovery document of `set`, if published.
pub async fn discovery(client: &Client, ns: &str, set: &str) -> Option<DiscoveryDocument> {
    let map = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(&format!("{set}-discovery"))
        .await
        .expect("ConfigMap read")?;
    let text = map.data.as_ref()?.get("discovery.json")?;
    Some(serde_json::from_str(text).expect("the document follows its schema"))
}

/// The discovery document once `accept` says yes; panics after `within`.
pub async fn wait_for_document(
    client: &Client,
    ns: &str,
    set: &str,
    within: Duration,
    accept: impl Fn(&DiscoveryDocument) -> bool,
) -> DiscoveryDocument {
    let started = std::time::Instant::now();
    let mut last = None;
    while started.elapsed() < within {
        last = discovery(client, ns, set).await;
        if let Some(document) = last.as_ref().filter(|d| accept(d)) {
            return document.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("discovery document of {ns}/{set} not as expected within {within:?}; last: {last:?}");
}

/// A producer's acknowledgement Lease, as the protocol in
/// `kappa_operator::discovery::acknowledgement` describes it.
pub struct ProducerLease {
    api: Api<Lease>,
    name: String,
}

impl ProducerLease {
    /// Creates the Lease of producer `id` of `set`, alive for a minute.
    pub async fn create(client: &Client, ns: &str, set: &str, id: &str) -> ProducerLease {
        let api: Api<Lease> = Api::namespaced(client.clone(), ns);
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(format!("{set}-producer-{id}")),
                labels: Some(BTreeMap::from([
                    (CLUSTER_SET_LABEL.to_string(), set.to_string()),
                    (CLIENT_LABEL.to_string(), PRODUCER.to_string()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(id.to_string()),
                lease_duration_seconds: Some(60),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..LeaseSpec::default()
            }),
        };
        api.create(&PostParams::default(), &lease)
            .await
            .expect("producer Lease created");
        ProducerLease {
            api,
            name: format!("{set}-producer-{id}"),
        }
    }

    /// Renews the Lease and acknowledges `epoch`.
    pub async fn acknowledge(&self, epoch: i64) {
        let patch = json!({
            "metadata": {"annotations": {ACKNOWLEDGED_EPOCH_ANNOTATION: epoch.to_string()}},
            "spec": {"renewTime": MicroTime(Timestamp::now())}
        });
        self.api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("Lease acknowledged");
    }
}

/// Records written by a [`FollowingProducer`], per cluster.
pub type Written = BTreeMap<String, u64>;

/// What a [`FollowingProducer`] did: records per cluster, and every
/// document it acted on, in order.
pub struct Followed {
    /// Records written, per cluster.
    pub written: Written,
    /// The documents whose epochs it acknowledged.
    pub documents: Vec<DiscoveryDocument>,
}

/// A producer writing sequence-numbered records to one stream, always to
/// the write cluster of the latest document: on a new epoch it flushes what
/// it sent, switches, and acknowledges the epoch through its Lease.
pub struct FollowingProducer {
    stop: watch::Sender<bool>,
    task: JoinHandle<Followed>,
}

impl FollowingProducer {
    /// Starts writing to `stream` of `set` as producer `id`.
    pub async fn start(client: &Client, ns: &str, set: &str, stream: &str, id: &str) -> Self {
        let lease = ProducerLease::create(client, ns, set, id).await;
        let (stop, mut stopped) = watch::channel(false);
        let (client, ns, set, stream) = (
            client.clone(),
            ns.to_string(),
            set.to_string(),
            stream.to_string(),
        );
        let task = tokio::spawn(async move {
            let mut written = Written::new();
            let mut documents = Vec::new();
            let mut epoch = 0;
            let mut target: Option<(String, String, FutureProducer)> = None;
            let mut sequence = 0u64;
            while !*stopped.borrow() {
                let document = discovery(&client, &ns, &set)
                    .await
                    .expect("document published");
                if document.epoch > epoch {
                    let route = document
                        .streams
                        .iter()
                        .find(|s| s.name == stream)
                        .expect("stream routed")
                        .write
                        .clone();
                    let bootstrap = document
                        .clusters
                        .iter()
                        .find(|c| c.name == route.cluster)
                        .expect("write cluster listed")
                        .bootstrap_servers
                        .clone();
                    if let Some((_, _, old)) = target.take() {
                        old.flush(Duration::from_secs(10)).expect("flushed");
                    }
                    let producer = idempotent_producer(&bootstrap);
                    target = Some((route.cluster, route.topic, producer));
                    epoch = document.epoch;
                    lease.acknowledge(epoch).await;
                    documents.push(document);
                }
                let (cluster, topic, producer) = target.as_ref().expect("a write target");
                for _ in 0..10 {
                    send_numbered(producer, topic, sequence).await;
                    sequence += 1;
                    *written.entry(cluster.clone()).or_default() += 1;
                }
                tokio::select! {
                    _ = stopped.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
            Followed { written, documents }
        });
        FollowingProducer { stop, task }
    }

    /// Stops writing; what it wrote and saw.
    pub async fn stop(self) -> Followed {
        let _ = self.stop.send(true);
        self.task.await.expect("producer task")
    }
}

fn idempotent_producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer")
}

/// Sends record number `sequence` (keyed over seven keys) and waits for its delivery.
async fn send_numbered(producer: &FutureProducer, topic: &str, sequence: u64) {
    let key = format!("key-{}", sequence % 7);
    let payload = sequence.to_string();
    producer
        .send(
            FutureRecord::to(topic).key(&key).payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .expect("record delivered");
}

/// Writes `count` keyed records to `topic` and waits for every delivery.
pub async fn produce(bootstrap: &str, topic: &str, count: u64) {
    let producer = idempotent_producer(bootstrap);
    for sequence in 0..count {
        send_numbered(&producer, topic, sequence).await;
    }
}

/// The offsets `group` has committed on `topic`, per partition.
pub fn committed(bootstrap: &str, group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for partition in high_watermarks(bootstrap, topic).keys() {
        list.add_partition(topic, partition.parse().expect("partition number"));
    }
    consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets")
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(offset) => Some((e.partition(), offset)),
            _ => None,
        })
        .collect()
}

/// Records of `topic` that `group` has not read: high watermarks less
/// committed offsets, as a lag exporter computes it.
pub fn lag(bootstrap: &str, group: &str, topic: &str) -> i64 {
    let committed = committed(bootstrap, group, topic);
    high_watermarks(bootstrap, topic)
        .iter()
        .map(|(partition, high)| {
            let at = partition
                .parse()
                .ok()
                .and_then(|p: i32| committed.get(&p).copied())
                .unwrap_or(0);
            high - at
        })
        .sum()
}

/// Commits `offsets` (partition -> offset) on `topic` for consumer group
/// `group`, as a consumer that has read up to there would.
pub fn commit_offsets(bootstrap: &str, group: &str, topic: &str, offsets: &BTreeMap<String, i64>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for (partition, offset) in offsets {
        list.add_partition_offset(
            topic,
            partition.parse().expect("partition number"),
            Offset::Offset(*offset),
        )
        .expect("offset added");
    }
    consumer
        .commit(&list, CommitMode::Sync)
        .expect("offsets committed");
}

/// A KafkaClusterSet `events` of the testbed's two brokers as external
/// clusters blue and green, with one stream `orders` on `topic`, writing to
/// `write`.
pub fn blue_green_set(testbed: &super::Testbed, topic: &str, write: &str) -> serde_json::Value {
    let (blue, green) = (&testbed.brokers[0], &testbed.brokers[1]);
    serde_json::json!({
        "apiVersion": "kappa.dev/v1alpha1",
        "kind": "KafkaClusterSet",
        "metadata": {"name": "events"},
        "spec": {
            "template": {"provider": "external"},
            "clusters": [
                {"name": "blue", "overrides": {"external": {"bootstrapServers": [blue]}}},
                {"name": "green", "overrides": {"external": {"bootstrapServers": [green]}}}
            ],
            "streams": [{"name": "orders", "topic": topic, "partitions": 2}],
            "routing": {"writeCluster": write}
        }
    })
}

/// What consumers of `topic` read once the write cluster moved from blue,
/// which ended at `blue_ends`, to green.
pub fn reads_after_blue_to_green(
    topic: &str,
    blue_ends: &BTreeMap<String, i64>,
) -> Vec<kappa_operator::discovery::ReadSegment> {
    use kappa_operator::discovery::ReadSegment;
    vec![
        ReadSegment {
            cluster: "blue".into(),
            topic: topic.into(),
            start_offsets: None,
            end_offsets: Some(blue_ends.clone()),
        },
        ReadSegment {
            cluster: "green".into(),
            topic: topic.into(),
            start_offsets: None,
            end_offsets: None,
        },
    ]
}

/// Starts a migration of [`blue_green_set`] in `ns`: the set is created
/// writing to blue, a producer acknowledges epoch 1, 30 records go to blue,
/// the write cluster moves to green, and epoch 2 is announced. The
/// producer's lease, to acknowledge epoch 2 with.
pub async fn announce_blue_to_green(
    testbed: &super::Testbed,
    client: &Client,
    ns: &str,
    topic: &str,
    within: Duration,
) -> ProducerLease {
    super::create(client, ns, blue_green_set(testbed, topic, "blue"))
        .await
        .expect("set created");
    wait_for_document(client, ns, "events", within, |d| d.epoch == 1).await;
    let lease = ProducerLease::create(client, ns, "events", "producer-a").await;
    lease.acknowledge(1).await;
    produce(&testbed.brokers[0], topic, 30).await;
    let patch = json!({"spec": {"routing": {"writeCluster": "green"}}});
    super::kappa_api(client, ns, "KafkaClusterSet")
        .patch("events", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("write cluster moved");
    wait_for_document(client, ns, "events", within, |d| d.epoch == 2).await;
    lease
}
