//! One watch per custom resource kind for all the controllers of a scope.
//! A Pipeline is read by its own controller, by the Backfills that run it
//! and by the Savepoints that snapshot it; each such kind is listed and
//! watched once, kept in one cache, and every object the watch changes is
//! handed to each controller that asked for it, after the cache has it.

use std::future::Future;

use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;

use super::{Kind, Shared};
use crate::api::backfill::Backfill;
use crate::api::kafka_cluster_set::KafkaClusterSet;
use crate::api::pipeline::Pipeline;
use crate::api::savepoint::Savepoint;
use crate::shutdown::Shutdown;

/// How many changed objects wait for a controller that has not taken them
/// yet; beyond that the watch waits for it (a controller takes them as they
/// come: its queue removes duplicates).
const WAITING: usize = 256;

/// The watch of one kind: its cache, and the controllers it feeds.
pub struct Watch<K: Kind> {
    store: Store<DeserializeGuard<K>>,
    writer: Writer<DeserializeGuard<K>>,
    subscribers: Vec<mpsc::Sender<DeserializeGuard<K>>>,
}

/// What one controller receives: each object the watch changed or deleted.
pub type Changes<K> =
    std::pin::Pin<Box<dyn Stream<Item = Result<DeserializeGuard<K>, watcher::Error>> + Send>>;

impl<K: Kind> Watch<K> {
    fn new() -> Self {
        let (store, writer) = reflector::store();
        Self {
            store,
            writer,
            subscribers: Vec::new(),
        }
    }

    /// The cache of every object of the kind in scope.
    pub fn store(&self) -> Store<DeserializeGuard<K>> {
        self.store.clone()
    }

    /// A new feed of the objects the watch changes, for one controller; the
    /// cache has each object before the feed yields it.
    pub fn subscribe(&mut self) -> Changes<K> {
        let (sender, receiver) = mpsc::channel(WAITING);
        self.subscribers.push(sender);
        receiver.map(Ok).boxed()
    }

    /// Lists and watches the kind until the shutdown, or until no
    /// controller reads any more. The watch backs off on its own errors and
    /// lists again after one (a 410 Gone included), as each controller's own
    /// watch did.
    fn run(self, shared: &Shared, shutdown: &Shutdown) -> impl Future<Output = ()> + Send {
        let changes = watcher(
            shared.api::<DeserializeGuard<K>>(),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|object: &mut DeserializeGuard<K>| object.managed_fields_mut().clear())
        .reflect(self.writer)
        .touched_objects()
        .take_until(shutdown.signalled())
        .boxed();
        fan_out(K::CONTROLLER, changes, self.subscribers)
    }
}

/// Hands each object of `changes` to every subscriber in turn, dropping
/// those that stopped reading, until `changes` ends or none reads.
async fn fan_out<T: Clone>(
    kind: &'static str,
    mut changes: impl Stream<Item = Result<T, watcher::Error>> + Unpin,
    mut subscribers: Vec<mpsc::Sender<T>>,
) {
    while let Some(change) = changes.next().await {
        let object = match change {
            Ok(object) => object,
            Err(error) => {
                tracing::debug!(controller = kind, %error, "watch failed, backing off");
                continue;
            }
        };
        let mut delivered = Vec::with_capacity(subscribers.len());
        for mut subscriber in subscribers {
            // A controller that stopped has dropped its feed.
            if subscriber.send(object.clone()).await.is_ok() {
                delivered.push(subscriber);
            }
        }
        subscribers = delivered;
        if subscribers.is_empty() {
            break;
        }
    }
}

/// The watches of the four kinds in one scope.
pub struct Watches {
    pub sets: Watch<KafkaClusterSet>,
    pub pipelines: Watch<Pipeline>,
    pub savepoints: Watch<Savepoint>,
    pub backfills: Watch<Backfill>,
}

impl Watches {
    /// Watches that start once [`Watches::run`] runs; controllers subscribe
    /// before that.
    pub fn new() -> Self {
        Self {
            sets: Watch::new(),
            pipelines: Watch::new(),
            savepoints: Watch::new(),
            backfills: Watch::new(),
        }
    }

    /// Runs the four watches until the shutdown.
    pub async fn run(self, shared: &Shared, shutdown: Shutdown) {
        tokio::join!(
            self.sets.run(shared, &shutdown),
            self.pipelines.run(shared, &shutdown),
            self.savepoints.run(shared, &shutdown),
            self.backfills.run(shared, &shutdown),
        );
    }
}

#[cfg(test)]
mod tests {
    use futures::stream;

    use super::*;

    #[tokio::test]
    async fn every_subscriber_gets_every_change_until_it_stops_reading() {
        let (first, mut first_feed) = mpsc::channel(WAITING);
        let (second, second_feed) = mpsc::channel(WAITING);
        drop(second_feed);
        let changes = stream::iter([Ok(1), Err(watcher::Error::NoResourceVersion), Ok(2)]);
        fan_out("test", changes, vec![first, second]).await;
        let mut received = Vec::new();
        while let Ok(change) = first_feed.try_recv() {
            received.push(change);
        }
        assert_eq!(received, [1, 2], "an error is skipped, not handed on");
    }

    #[tokio::test]
    async fn the_watch_ends_once_no_controller_reads() {
        let (only, feed) = mpsc::channel::<u32>(WAITING);
        drop(feed);
        // An endless watch: only the subscribers' absence can end it.
        let changes = stream::repeat_with(|| Ok(7));
        fan_out("test", changes, vec![only]).await;
    }
}
