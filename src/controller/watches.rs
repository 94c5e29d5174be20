//! One watch per custom resource kind for all the controllers of a scope.
//! A Pipeline is read by its own controller, by the Backfills that run it
//! and by the Savepoints that snapshot it; each such kind is listed and
//! watched once, kept in one cache, and every object the watch changes is
//! handed to each controller that asked for it, after the cache has it
//! (after the whole list, when the watch lists).

use std::future::Future;
use std::sync::Arc;

use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, store::Writer, ObjectRef, Store};
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

/// How long a controller may leave a change untaken before the watch says
/// that it waits for it.
const SLOW_TAKER: std::time::Duration = std::time::Duration::from_secs(10);

/// A controller's feed of changes, with the controller's name for the log.
struct Subscriber<T> {
    controller: &'static str,
    sender: mpsc::Sender<T>,
}

/// The watch of one kind: its cache, and the controllers it feeds.
pub struct Watch<K: Kind> {
    store: Store<DeserializeGuard<K>>,
    writer: Writer<DeserializeGuard<K>>,
    subscribers: Vec<Subscriber<Arc<DeserializeGuard<K>>>>,
}

/// What one controller receives: each object the watch changed or deleted,
/// shared by every controller that receives it.
pub type Changes<K> = std::pin::Pin<Box<dyn Stream<Item = Arc<DeserializeGuard<K>>> + Send>>;

impl<K: Kind> Watch<K> {
    fn new() -> Self {
        let (store, writer) = reflector::store();
        Self {
            store,
            writer,
            subscribers: Vec::new(),
        }
    }

    /// For the controller named `controller`: the cache of every object of
    /// the kind in scope, and a new feed of the objects the watch changes;
    /// the cache has each object before the feed yields it.
    pub fn subscribe(
        &mut self,
        controller: &'static str,
    ) -> (Store<DeserializeGuard<K>>, Changes<K>) {
        let (sender, receiver) = mpsc::channel(WAITING);
        self.subscribers.push(Subscriber { controller, sender });
        (self.store.clone(), receiver.boxed())
    }

    /// Lists and watches the kind until the shutdown, or until no
    /// controller reads any more. The watch backs off on its own errors and
    /// lists again after one (a 410 Gone included), as each controller's own
    /// watch did.
    fn run(self, shared: &Shared, shutdown: &Shutdown) -> impl Future<Output = ()> + Send {
        let events = watcher(
            shared.api::<DeserializeGuard<K>>(),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(forget_unread)
        .take_until(shutdown.signalled());
        let changes = settled(events, self.writer, self.store).boxed();
        fan_out(K::CONTROLLER, changes, self.subscribers)
    }
}

/// What the operator never reads of a cached object, cleared before the
/// cache keeps it: the managed fields, and the copy of the spec that
/// `kubectl apply` keeps in an annotation (about as large as the object).
fn forget_unread<K: Kind>(object: &mut DeserializeGuard<K>) {
    object.managed_fields_mut().clear();
    object.annotations_mut().remove(LAST_APPLIED);
}

/// The annotation in which `kubectl apply` keeps what it applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The objects to hand to controllers, from the watch's events, each once
/// the cache has it: a changed or deleted object at once; on a list (the
/// first, or again after the watch expired), every listed object once the
/// cache holds the whole list, as the cache holds it (a list of 10,000
/// Pipelines is not copied again). kube-runtime's reflector keeps a list's
/// objects apart until the list is complete; a controller handed one
/// before that would find it missing from the cache and drop it, and an
/// object created while the watch listed again would wait for its next
/// change.
fn settled<T>(
    events: impl Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send + 'static,
    mut writer: Writer<T>,
    store: Store<T>,
) -> impl Stream<Item = Result<Arc<T>, watcher::Error>> + Send
where
    T: kube::Resource + Clone + Send + Sync + 'static,
    T::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    events.flat_map(move |event| {
        let objects: Box<dyn Iterator<Item = Result<Arc<T>, watcher::Error>> + Send> = match event {
            Err(error) => Box::new(std::iter::once(Err(error))),
            Ok(event) => {
                writer.apply_watcher_event(&event);
                match event {
                    // The cache's own copy: one copy of a changed object
                    // lives, not two.
                    watcher::Event::Apply(object) => {
                        let cached = store.get(&ObjectRef::from_obj(&object));
                        Box::new(std::iter::once(Ok(
                            cached.unwrap_or_else(|| Arc::new(object))
                        )))
                    }
                    watcher::Event::Delete(object) => {
                        Box::new(std::iter::once(Ok(Arc::new(object))))
                    }
                    watcher::Event::InitDone => Box::new(store.state().into_iter().map(Ok)),
                    watcher::Event::Init | watcher::Event::InitApply(_) => {
                        Box::new(std::iter::empty())
                    }
                }
            }
        };
        futures::stream::iter(objects)
    })
}

/// Hands each object of `changes` to every subscriber in turn, dropping
/// those that stopped reading, until `changes` ends or none reads. A
/// subscriber that leaves a change untaken for [`SLOW_TAKER`] holds up the
/// others: the log names it.
async fn fan_out<T: Clone>(
    kind: &'static str,
    mut changes: impl Stream<Item = Result<T, watcher::Error>> + Unpin,
    mut subscribers: Vec<Subscriber<T>>,
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
            let mut sending = subscriber.sender.send(object.clone());
            let sent = match tokio::time::timeout(SLOW_TAKER, &mut sending).await {
                Ok(sent) => sent,
                Err(_) => {
                    tracing::warn!(watch = kind, controller = subscriber.controller, waited_s = SLOW_TAKER.as_secs(),
                        "a controller has not taken the watch's changes; the watch and the other controllers wait for it");
                    let sent = sending.await;
                    tracing::info!(
                        watch = kind,
                        controller = subscriber.controller,
                        "the controller took the watch's changes again"
                    );
                    sent
                }
            };
            // A controller that stopped has dropped its feed.
            if sent.is_ok() {
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
        let subscribers = [first, second].map(|sender| Subscriber {
            controller: "test",
            sender,
        });
        fan_out("test", changes, subscribers.into()).await;
        let mut received = Vec::new();
        while let Ok(change) = first_feed.try_recv() {
            received.push(change);
        }
        assert_eq!(received, [1, 2], "an error is skipped, not handed on");
    }

    #[tokio::test]
    async fn an_object_is_handed_on_as_the_cache_holds_it_once_it_holds_the_whole_list() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let map = |name: &str| ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let (store, writer) = reflector::store();
        let events = stream::iter([
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(map("a"))),
            Ok(watcher::Event::InitApply(map("b"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(map("c"))),
            // The watch expired; the list again finds `a` gone.
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(map("b"))),
            Ok(watcher::Event::InitApply(map("c"))),
            Ok(watcher::Event::InitDone),
        ]);
        let mut handed = Vec::new();
        let mut changes = std::pin::pin!(settled(events, writer, store.clone()));
        while let Some(change) = changes.next().await {
            let object = change.expect("an object");
            let cached = store.get(&reflector::ObjectRef::from_obj(&object));
            let cached = cached.unwrap_or_else(|| {
                panic!("{} handed on before the cache had it", object.name_any())
            });
            assert!(
                Arc::ptr_eq(&cached, &object),
                "{} handed on as the cache's own copy, not a second one",
                object.name_any()
            );
            handed.push(object.name_any());
        }
        handed[..2].sort();
        handed[3..].sort();
        assert_eq!(handed, ["a", "b", "c", "b", "c"]);
    }

    #[test]
    fn what_the_operator_never_reads_is_not_cached() {
        let mut pipeline: Pipeline = serde_json::from_value(serde_json::json!({
            "apiVersion": "kappa.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {
                "name": "totals",
                "annotations": {LAST_APPLIED: "{}", "team": "shop"},
                "managedFields": [{"manager": "kubectl"}],
            },
            "spec": {
                "clusterSet": "events",
                "inputs": [{"stream": "orders"}],
                "engine": {"type": "consumer", "consumer": {"template": {}}},
            },
        }))
        .expect("a pipeline");
        let mut guard = DeserializeGuard(Ok(pipeline.clone()));
        forget_unread(&mut guard);
        pipeline.metadata.managed_fields = Some(Vec::new());
        pipeline.annotations_mut().remove(LAST_APPLIED);
        assert_eq!(guard.0.expect("kept").metadata, pipeline.metadata);
    }

    #[tokio::test]
    async fn the_watch_ends_once_no_controller_reads() {
        let (sender, feed) = mpsc::channel::<u32>(WAITING);
        drop(feed);
        // An endless watch: only the subscribers' absence can end it.
        let changes = stream::repeat_with(|| Ok(7));
        let only = Subscriber {
            controller: "test",
            sender,
        };
        fan_out("test", changes, vec![only]).await;
    }
}
