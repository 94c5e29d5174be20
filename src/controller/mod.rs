//! One controller per kind, and what they share: the context, the status
//! writer, the error policy and the wiring.

pub mod backfill;
pub mod common;
mod events;
mod finalizer;
pub mod kafka_cluster_set;
mod kstatus;
pub mod pipeline;
mod pod_security;
mod reconcile;
pub mod savepoint;
mod status;
mod watches;

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use futures::{FutureExt, Stream, StreamExt};
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::core::{DeserializeGuard, NamespaceResourceScope};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use rand::Rng;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::api::common::CommonStatus;
use crate::error::Error;
use crate::flink::FlinkApi;
use crate::kafka::KafkaAdmin;
use crate::metrics::{Metrics, Present};
use crate::shutdown::Shutdown;
use crate::slo::SloSettings;
pub use events::Publisher;
use watches::Watches;

/// What every controller shares.
pub struct Shared {
    /// Client to the API server.
    pub client: Client,
    /// Publishes Events on the objects.
    pub events: Publisher,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object UID, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Namespace to watch; all when `None`.
    namespace: Option<String>,
    /// Where SLO rules go and where budgets are read from.
    pub slo: SloSettings,
    /// Flink's REST API, one client for every controller.
    pub flink: Arc<dyn FlinkApi>,
    /// Kafka's admin API, one long-lived client per cluster for every
    /// controller.
    pub kafka: Arc<dyn KafkaAdmin>,
}

impl Shared {
    /// Context for controllers watching `namespace`, or every namespace when `None`.
    pub fn new(
        client: Client,
        events: Publisher,
        metrics: Arc<Metrics>,
        namespace: Option<String>,
        slo: SloSettings,
        flink: Arc<dyn FlinkApi>,
        kafka: Arc<dyn KafkaAdmin>,
    ) -> Self {
        Self {
            client,
            events,
            metrics,
            failures: Mutex::new(HashMap::new()),
            namespace,
            slo,
            flink,
            kafka,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// Delay before the next attempt on an object that failed: exponential
    /// from 1 s to 5 min with jitter, so a broken object does not hot-loop.
    fn next_backoff(&self, uid: &str) -> Duration {
        let attempts = {
            let mut failures = self
                .failures
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let count = failures.entry(uid.to_string()).or_insert(0);
            *count = count.saturating_add(1);
            *count
        };
        let base = Duration::from_secs(1u64 << attempts.min(9).saturating_sub(1))
            .min(Duration::from_secs(300));
        base + base.mul_f64(rand::rng().random_range(0.0..0.25))
    }

    fn reset_backoff(&self, uid: &str) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        failures.remove(uid);
    }
}

/// A kind this operator reconciles.
pub trait Kind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + serde::Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// Controller name, used in metrics and logs.
    const CONTROLLER: &'static str;
    /// The status fields every kind has, when a status exists.
    fn common_status(&self) -> Option<&CommonStatus>;
    /// Removes the kind's own metric series of objects not in `present`
    /// (namespace, name): they were deleted.
    fn forget_metrics(_metrics: &Metrics, _present: &Present) {}
}

/// Context of one controller: the shared parts plus the stores of the kinds it references.
pub struct Ctx<S> {
    /// What all controllers share.
    pub shared: Arc<Shared>,
    /// Caches of referenced kinds.
    pub stores: S,
}

/// The objects of kind `K` that `config` selects, by their metadata, as a
/// trigger of a controller: a watch backing off on its own errors.
fn watch_metadata<K>(
    shared: &Shared,
    config: watcher::Config,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    watcher(shared.api::<PartialObjectMeta<K>>(), config)
        .default_backoff()
        .touched_objects()
}

/// A controller's watches taken together do not back off: each backs off on
/// its own errors (`default_backoff` on every stream). kube-runtime's
/// default backs the merged stream off on any watch's error and doubles on
/// each, so after an API server outage every watch's 410 Gone added up to
/// minutes in which even the recovered watches were not read.
struct EachWatchBacksOff;

impl Iterator for EachWatchBacksOff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl Backoff for EachWatchBacksOff {
    fn reset(&mut self) {}
}

/// Looks up `name` in the namespace of `of` in a cache.
pub(crate) fn lookup<K: Kind, O: Resource>(
    store: &Store<DeserializeGuard<K>>,
    of: &O,
    name: &str,
) -> Option<Arc<DeserializeGuard<K>>> {
    let mut key = ObjectRef::new(name);
    if let Some(ns) = of.meta().namespace.as_deref() {
        key = key.within(ns);
    }
    store.get(&key)
}

/// How long a reconcile waits for a cache to fill before it gives up and is
/// retried: not forever, so that a shutdown never waits on a cache that is
/// no longer fed.
const CACHE_WAIT: Duration = Duration::from_secs(5);

/// Fails unless `store` has listed its objects once: acting on a cache that
/// is still filling (a new leader starting) would take what it has not
/// listed yet for gone.
pub(crate) async fn cache_ready<K>(store: &Store<K>, what: &'static str) -> Result<(), Error>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    match tokio::time::timeout(CACHE_WAIT, store.wait_until_ready()).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Error::CacheNotReady(what)),
    }
}

/// Object annotation: a digest of what the operator last applied.
const APPLIED_ANNOTATION: &str = "kappa.dev/applied-hash";

/// Server-side applies `desired` unless the object already carries the
/// digest of the same desired state, so that a periodic reconcile reads
/// its objects and writes them only when what it wants has changed.
pub(crate) async fn apply_if_changed<K>(api: &Api<K>, desired: K) -> Result<K, Error>
where
    K: Resource + Clone + Debug + serde::Serialize + DeserializeOwned,
{
    let existing = api.get_opt(&desired.name_any()).await?;
    apply_unless_current(api, desired, existing.as_ref()).await
}

/// Server-side applies `desired` unless `existing` (read by the caller,
/// from the API or a cache) carries the digest of the same desired state.
pub(crate) async fn apply_unless_current<K>(
    api: &Api<K>,
    mut desired: K,
    existing: Option<&K>,
) -> Result<K, Error>
where
    K: Resource + Clone + Debug + serde::Serialize + DeserializeOwned,
{
    let hash = crate::discovery::hex(&Sha256::digest(serde_json::to_vec(&desired)?)[..8]);
    desired
        .annotations_mut()
        .insert(APPLIED_ANNOTATION.to_string(), hash.clone());
    if let Some(existing) = existing {
        if existing.annotations().get(APPLIED_ANNOTATION) == Some(&hash) {
            return Ok(existing.clone());
        }
    }
    let params = PatchParams::apply(reconcile::FIELD_MANAGER).force();
    let name = desired.name_any();
    Ok(api.patch(&name, &params, &Patch::Apply(&desired)).await?)
}

/// Whether a delete found the object already gone (`true`) or started it.
pub(crate) fn gone<T>(result: Result<T, kube::Error>) -> Result<bool, Error> {
    match result {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(true),
        Err(error) => Err(error.into()),
        Ok(_) => Ok(false),
    }
}

/// The objects in `store` that `refers` says point at `target`.
fn referrers<K: Kind, T: Resource>(
    store: &Store<DeserializeGuard<K>>,
    target: &T,
    refers: impl Fn(&K, &str) -> bool,
) -> Vec<ObjectRef<DeserializeGuard<K>>> {
    let name = target.name_any();
    let namespace = target.namespace();
    store
        .state()
        .into_iter()
        .filter(|object| object.namespace() == namespace)
        .filter(|object| object.0.as_ref().is_ok_and(|k| refers(k, &name)))
        .map(|object| ObjectRef::from_obj(&*object))
        .collect()
}

fn error_policy<K: Kind, S>(
    object: Arc<DeserializeGuard<K>>,
    error: &Error,
    ctx: Arc<Ctx<S>>,
) -> kube::runtime::controller::Action {
    let delay = ctx.shared.next_backoff(&object.uid().unwrap_or_default());
    tracing::warn!(
        controller = K::CONTROLLER,
        namespace = object.namespace().unwrap_or_default(),
        name = object.name_any(),
        error = %error,
        retry_in_ms = delay.as_millis() as u64,
        "reconcile failed"
    );
    kube::runtime::controller::Action::requeue(delay)
}

/// Runs a controller built by `build` until `shutdown` completes.
async fn drive<K, S, F, Fut>(
    controller: Controller<DeserializeGuard<K>>,
    ctx: Arc<Ctx<S>>,
    reconcile: F,
    shutdown: Shutdown,
) where
    K: Kind,
    S: Send + Sync + 'static,
    F: FnMut(Arc<DeserializeGuard<K>>, Arc<Ctx<S>>) -> Fut,
    Fut: Future<Output = Result<kube::runtime::controller::Action, Error>> + Send + 'static,
{
    let store = controller.store();
    let sweeper = tokio::spawn(forget_deleted::<K>(
        ctx.shared.metrics.clone(),
        ctx.shared.namespace.clone(),
        store.clone(),
    ));
    let running = controller
        .trigger_backoff(EachWatchBacksOff)
        .with_config(kube::runtime::controller::Config::default().concurrency(8))
        .graceful_shutdown_on(shutdown.signalled())
        .run(reconcile, error_policy::<K, S>, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(controller = K::CONTROLLER, %error, "controller event");
            }
        });
    tokio::select! {
        () = running => tracing::info!(controller = K::CONTROLLER, "controller stopped"),
        () = stopped_before_listing(&store, &shutdown) => {
            tracing::info!(controller = K::CONTROLLER, "controller stopped before its first list");
        }
    }
    sweeper.abort();
}

/// Completes when the shutdown finds `store` not yet listed, and never
/// otherwise. kube-runtime starts no reconcile before its store has listed
/// once, and still waits for that list after a graceful shutdown has stopped
/// the watch that would make it: a shutdown in the first moments of a
/// controller would wait forever. With no reconcile started, there is
/// nothing to wait for.
async fn stopped_before_listing<K>(store: &Store<K>, shutdown: &Shutdown)
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    shutdown.signalled().await;
    if store.wait_until_ready().now_or_never().is_some() {
        std::future::pending::<()>().await;
    }
}

/// How often the metric series of deleted objects are removed.
const METRICS_SWEEP: Duration = Duration::from_secs(60);

/// Removes, every minute, the metric series of objects that are gone: a
/// deleted object must not stay on dashboards or keep an alert firing.
async fn forget_deleted<K: Kind>(
    metrics: Arc<Metrics>,
    scope: Option<String>,
    objects: Store<DeserializeGuard<K>>,
) {
    let mut every =
        tokio::time::interval_at(tokio::time::Instant::now() + METRICS_SWEEP, METRICS_SWEEP);
    loop {
        every.tick().await;
        let present = Present::new(
            scope.as_deref(),
            objects
                .state()
                .iter()
                .map(|o| (o.namespace().unwrap_or_default(), o.name_any()))
                .collect(),
        );
        metrics.forget_problems(K::CONTROLLER, &present);
        K::forget_metrics(&metrics, &present);
    }
}

/// Runs the four controllers of every scope (a namespace, or all of them)
/// until `shutdown` completes.
pub async fn run(scopes: Vec<Arc<Shared>>, shutdown: Shutdown) {
    join_all(
        scopes
            .into_iter()
            .map(|shared| run_scope(shared, shutdown.clone())),
    )
    .await;
}

/// Runs the four controllers of one scope until `shutdown` completes.
async fn run_scope(shared: Arc<Shared>, shutdown: Shutdown) {
    let mut watches = Watches::new();
    let sets = kafka_cluster_set::run(shared.clone(), &mut watches, shutdown.clone());
    let pipelines = pipeline::run(shared.clone(), &mut watches, shutdown.clone());
    let savepoints = savepoint::run(shared.clone(), &mut watches, shutdown.clone());
    let backfills = backfill::run(shared.clone(), &mut watches, shutdown.clone());
    tokio::join!(
        sets,
        pipelines,
        savepoints,
        backfills,
        watches.run(&shared, shutdown)
    );
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    use super::*;
    use crate::shutdown;

    #[tokio::test]
    async fn a_shutdown_before_the_first_list_stops_at_once_and_after_it_waits() {
        let (trigger, shutdown) = shutdown::channel();
        let (store, mut writer) = reflector::store::<ConfigMap>();
        trigger.trigger();
        assert!(
            stopped_before_listing(&store, &shutdown)
                .now_or_never()
                .is_some(),
            "nothing listed, nothing to wait for"
        );
        writer.apply_watcher_event(&Event::InitDone);
        assert!(
            stopped_before_listing(&store, &shutdown)
                .now_or_never()
                .is_none(),
            "a listed store leaves the wait to the controller"
        );
    }
}
