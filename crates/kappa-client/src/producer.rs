//! A producer that writes each stream to its current write cluster. On a
//! document with a greater epoch it lets every send in flight finish on the
//! clusters it was writing to, flushes them, switches, and only then
//! acknowledges the epoch through its Lease (`docs/discovery.md`) with the
//! offsets after its last delivered records, so the operator records a
//! drained cluster's end offsets after its last record. Every record carries
//! the epoch from which its producer writes the segment it is in
//! ([`EPOCH_HEADER`]), so a consumer whose document lags behind does not
//! read past a segment's end it does not know yet.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use serde_json::json;
use tokio::sync::RwLock;
use tokio::task::JoinHandle;

use super::{cluster, ClientError, Credentials, Discovery};
use crate::discovery::acknowledgement::{
    WrittenOffsets, ACKNOWLEDGED_EPOCH_ANNOTATION, CLIENT_LABEL, CLUSTER_SET_LABEL, PRODUCER,
    WRITTEN_OFFSETS_ANNOTATION,
};
use crate::discovery::{ClusterState, DiscoveryDocument, EPOCH_HEADER};

/// How long the Lease counts as live without renewal.
const LEASE_SECONDS: i32 = 15;
/// How long a record may take to be delivered.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a record went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The cluster written.
    pub cluster: String,
    /// The partition.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// The epoch of the document that routed it.
    pub epoch: i64,
}

/// Settings of a [`RoutedProducer`].
#[derive(Clone)]
pub struct ProducerSettings {
    /// This producer's id, unique among the set's producers; names its Lease.
    pub id: String,
    /// The API server to acknowledge epochs through. Without one the
    /// producer still follows the document, but the operator cannot wait
    /// for it, so a move may lose records it sends meanwhile.
    pub acknowledge_through: Option<Client>,
    /// Where credentials are mounted.
    pub credentials: Credentials,
    /// Further librdkafka settings for every cluster
    /// (`enable.idempotence` is `true` unless set here).
    pub config: BTreeMap<String, String>,
}

/// The document a producer writes by, and for each stream the epoch from
/// which it has written to the stream's current write segment.
struct Routing {
    document: Arc<DiscoveryDocument>,
    segment_since: BTreeMap<String, i64>,
}

impl Routing {
    /// A producer's first document: it knows of no earlier epoch for any
    /// segment (a later epoch than the segment's first is safe: a consumer
    /// at most waits for a document it would not have needed).
    fn first(document: Arc<DiscoveryDocument>) -> Self {
        let segment_since = document
            .streams
            .iter()
            .map(|s| (s.name.clone(), document.epoch))
            .collect();
        Self {
            document,
            segment_since,
        }
    }

    /// Routing by `next`: a stream whose open segment changed (another
    /// write cluster, or the same one again from new start offsets) writes
    /// its new segment from `next`'s epoch.
    fn next(&self, next: Arc<DiscoveryDocument>) -> Self {
        let segment_since = next
            .streams
            .iter()
            .map(|stream| {
                let same = self
                    .document
                    .streams
                    .iter()
                    .find(|s| s.name == stream.name)
                    .is_some_and(|s| s.read.last() == stream.read.last());
                let since = match self.segment_since.get(&stream.name) {
                    Some(since) if same => *since,
                    _ => next.epoch,
                };
                (stream.name.clone(), since)
            })
            .collect();
        Self {
            document: next,
            segment_since,
        }
    }
}

struct Shared {
    routing: RwLock<Routing>,
    producers: Mutex<BTreeMap<String, FutureProducer>>,
    written: Mutex<WrittenOffsets>,
    settings: ProducerSettings,
}

impl Shared {
    /// Notes a delivered record, so the acknowledgement reports it.
    fn delivered(&self, cluster: &str, topic: &str, partition: i32, offset: i64) {
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = written
            .entry(cluster.to_string())
            .or_default()
            .entry(topic.to_string())
            .or_default()
            .entry(partition.to_string())
            .or_insert(0);
        *next = (*next).max(offset + 1);
    }

    fn written(&self) -> WrittenOffsets {
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn producer(
        &self,
        document: &DiscoveryDocument,
        name: &str,
    ) -> Result<FutureProducer, ClientError> {
        let mut producers = self
            .producers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(producer) = producers.get(name) {
            return Ok(producer.clone());
        }
        let mut extra = BTreeMap::from([("enable.idempotence".to_string(), "true".to_string())]);
        extra.extend(self.settings.config.clone());
        let producer: FutureProducer = self
            .settings
            .credentials
            .config(cluster(document, name)?, &extra)?
            .create()?;
        producers.insert(name.to_string(), producer.clone());
        Ok(producer)
    }

    /// Keeps a producer for every active cluster of `document`, so that the
    /// first record after a move does not wait for connecting to the new
    /// write cluster and initialising an idempotent producer there; the
    /// producers of clusters that left the document go.
    fn prepare(&self, document: &DiscoveryDocument) {
        self.producers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|name, _| document.clusters.iter().any(|c| &c.name == name));
        for active in document
            .clusters
            .iter()
            .filter(|c| c.state == ClusterState::Active)
        {
            if let Err(error) = self.producer(document, &active.name) {
                tracing::warn!(cluster = active.name, %error, "no producer for an active cluster");
            }
        }
    }
}

/// Writes records of the streams of one KafkaClusterSet.
pub struct RoutedProducer {
    shared: Arc<Shared>,
    lease: Option<ProducerLease>,
    follower: JoinHandle<()>,
}

impl RoutedProducer {
    /// Waits for the first document, takes the producer's Lease and
    /// acknowledges that document's epoch, then follows the document.
    pub async fn start(
        mut discovery: Discovery,
        settings: ProducerSettings,
    ) -> Result<Self, ClientError> {
        let document = discovery.newer_than(i64::MIN).await?;
        let lease = match &settings.acknowledge_through {
            Some(client) => {
                let lease = ProducerLease::new(client.clone(), &document, &settings.id);
                lease
                    .acknowledge(document.epoch, &WrittenOffsets::new())
                    .await?;
                Some(lease)
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            routing: RwLock::new(Routing::first(document)),
            producers: Mutex::new(BTreeMap::new()),
            written: Mutex::new(WrittenOffsets::new()),
            settings,
        });
        shared.prepare(&shared.routing.read().await.document);
        let follower = tokio::spawn(follow(discovery, shared.clone(), lease.clone()));
        Ok(Self {
            shared,
            lease,
            follower,
        })
    }

    /// Sends one record to `stream` and waits for its delivery. Records sent
    /// one after another (each awaited) keep their order across a move.
    pub async fn send(
        &self,
        stream: &str,
        key: &[u8],
        payload: &[u8],
    ) -> Result<Delivery, ClientError> {
        let routing = self.shared.routing.read().await;
        let document = &routing.document;
        let route = document
            .streams
            .iter()
            .find(|s| s.name == stream)
            .ok_or_else(|| ClientError::UnknownStream(stream.to_string()))?;
        let producer = self.shared.producer(document, &route.write.cluster)?;
        let since = routing
            .segment_since
            .get(stream)
            .copied()
            .unwrap_or(document.epoch);
        let epoch = document.epoch_header(since);
        let record = FutureRecord::to(&route.write.topic)
            .key(key)
            .payload(payload)
            .headers(OwnedHeaders::new().insert(Header {
                key: EPOCH_HEADER,
                value: Some(epoch.as_str()),
            }));
        let delivered = producer
            .send(record, Timeout::After(DELIVERY_TIMEOUT))
            .await
            .map_err(|(error, _)| error)?;
        self.shared.delivered(
            &route.write.cluster,
            &route.write.topic,
            delivered.partition,
            delivered.offset,
        );
        Ok(Delivery {
            cluster: route.write.cluster.clone(),
            partition: delivered.partition,
            offset: delivered.offset,
            epoch: document.epoch,
        })
    }

    /// The epoch of the document it writes by.
    pub async fn epoch(&self) -> i64 {
        self.shared.routing.read().await.document.epoch
    }

    /// Flushes and gives up the Lease, so the operator stops waiting for it.
    pub async fn close(self) -> Result<(), ClientError> {
        self.follower.abort();
        let _routing = self.shared.routing.write().await;
        flush_all(&self.shared).await;
        if let Some(lease) = &self.lease {
            lease.release().await?;
        }
        Ok(())
    }
}

/// How often a flush looks whether every record is delivered.
const FLUSH_CHECK: Duration = Duration::from_millis(1);

/// Waits until every record given to a producer is delivered or has
/// failed (at most [`DELIVERY_TIMEOUT`]). The producers' own threads take
/// the delivery reports; rdkafka's `flush` would wait for one in steps of
/// up to 100 ms on its own thread, and when the report went to the
/// producer's thread a whole step passed for nothing (seen as a move's
/// acknowledgement taking 100 ms, one move in 40).
async fn flush_all(shared: &Shared) {
    let producers: Vec<FutureProducer> = shared
        .producers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .filter(|producer| producer.in_flight_count() > 0)
        .cloned()
        .collect();
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    for producer in producers {
        while producer.in_flight_count() > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    in_flight = producer.in_flight_count(),
                    "records still undelivered after {DELIVERY_TIMEOUT:?}; switching without them"
                );
                break;
            }
            tokio::time::sleep(FLUSH_CHECK).await;
        }
    }
}

/// Switches to every newer document and keeps the Lease renewed.
async fn follow(mut discovery: Discovery, shared: Arc<Shared>, lease: Option<ProducerLease>) {
    let renew_every = Duration::from_secs(u64::from(LEASE_SECONDS.unsigned_abs()) / 3);
    let mut acknowledged = shared.routing.read().await.document.epoch;
    loop {
        let epoch = tokio::select! {
            next = discovery.newer_than(acknowledged) => match next {
                Ok(document) => {
                    // Taking the lock waits for every send in flight.
                    let mut current = shared.routing.write().await;
                    flush_all(&shared).await;
                    let epoch = document.epoch;
                    tracing::info!(epoch, "switching to a new discovery document");
                    *current = current.next(document);
                    shared.prepare(&current.document);
                    epoch
                }
                Err(error) => {
                    tracing::warn!(%error, "the producer stops following the discovery document");
                    return;
                }
            },
            () = tokio::time::sleep(renew_every) => acknowledged,
        };
        if let Some(lease) = &lease {
            if let Err(error) = lease.acknowledge(epoch, &shared.written()).await {
                tracing::warn!(%error, epoch, "acknowledging the epoch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        acknowledged = epoch;
    }
}

/// The producer's acknowledgement Lease.
#[derive(Clone)]
struct ProducerLease {
    api: Api<Lease>,
    name: String,
    set: String,
    id: String,
}

impl ProducerLease {
    fn new(client: Client, document: &DiscoveryDocument, id: &str) -> Self {
        Self {
            api: Api::namespaced(client, &document.namespace),
            name: format!("{}-producer-{id}", document.set),
            set: document.set.clone(),
            id: id.to_string(),
        }
    }

    /// Renews the Lease and records `epoch` as acknowledged, with what was
    /// delivered by then.
    async fn acknowledge(&self, epoch: i64, written: &WrittenOffsets) -> Result<(), ClientError> {
        let written = serde_json::to_string(written)?;
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "labels": {CLUSTER_SET_LABEL: self.set, CLIENT_LABEL: PRODUCER},
                "annotations": {
                    ACKNOWLEDGED_EPOCH_ANNOTATION: epoch.to_string(),
                    WRITTEN_OFFSETS_ANNOTATION: written,
                },
            },
            "spec": {
                "holderIdentity": self.id,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": MicroTime(Timestamp::now()),
            },
        });
        let params = PatchParams::apply(&format!("kappa-producer-{}", self.id)).force();
        self.api
            .patch(&self.name, &params, &Patch::Apply(&lease))
            .await?;
        Ok(())
    }

    async fn release(&self) -> Result<(), ClientError> {
        match self.api.delete(&self.name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{DiscoveredStream, ReadSegment, Segment, FORMAT_VERSION};

    /// A document of epoch `epoch` writing `orders` to `write`, reading the
    /// segments `read` (cluster, start offset of partition 0, end offset).
    fn document(
        epoch: i64,
        write: &str,
        read: &[(&str, Option<i64>, Option<i64>)],
    ) -> Arc<DiscoveryDocument> {
        let offsets = |o: Option<i64>| o.map(|o| BTreeMap::from([("0".to_string(), o)]));
        Arc::new(DiscoveryDocument {
            version: FORMAT_VERSION,
            epoch,
            namespace: "shop".into(),
            set: "events".into(),
            clusters: Vec::new(),
            streams: vec![DiscoveredStream {
                name: "orders".into(),
                write: Segment {
                    cluster: write.into(),
                    topic: "orders".into(),
                },
                read: read
                    .iter()
                    .map(|(cluster, start, end)| ReadSegment {
                        cluster: cluster.to_string(),
                        topic: "orders".into(),
                        start_offsets: offsets(*start),
                        end_offsets: offsets(*end),
                    })
                    .collect(),
            }],
        })
    }

    #[test]
    fn a_segment_is_written_from_the_epoch_that_opened_it() {
        let mut routing = Routing::first(document(3, "blue", &[("blue", None, None)]));
        let steps = [
            // Another change (a cluster added): the segment goes on.
            (document(4, "blue", &[("blue", None, None)]), 3),
            // Blue to green announced, then settled: green's segment from 5.
            (
                document(5, "green", &[("blue", None, None), ("green", None, None)]),
                5,
            ),
            (
                document(
                    6,
                    "green",
                    &[("blue", None, Some(10)), ("green", None, None)],
                ),
                5,
            ),
            // Back to blue, from where its first segment ended: a new segment.
            (
                document(
                    7,
                    "blue",
                    &[
                        ("blue", None, Some(10)),
                        ("green", None, None),
                        ("blue", Some(10), None),
                    ],
                ),
                7,
            ),
            (
                document(
                    8,
                    "blue",
                    &[
                        ("blue", None, Some(10)),
                        ("green", None, Some(4)),
                        ("blue", Some(10), None),
                    ],
                ),
                7,
            ),
        ];
        for (next, since) in steps {
            let epoch = next.epoch;
            routing = routing.next(next);
            assert_eq!(
                routing.segment_since.get("orders"),
                Some(&since),
                "epoch {epoch}"
            );
        }
    }
}
