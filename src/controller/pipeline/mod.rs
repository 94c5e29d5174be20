//! What happens to a Pipeline: its spec and references are validated and the
//! verdict recorded; a change to its KafkaClusterSet or restore Savepoint
//! re-validates it. A valid session-mode Flink pipeline is deployed to its
//! Flink cluster and followed there.

pub mod application;
pub mod consumer;
pub mod flink_job;
pub mod lag_book;
mod reason;
pub mod slo;
pub mod snapshots;
pub mod validate;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, ResourceExt};

use super::reconcile::Act;
use super::status::{Outcome, Requeue};
use super::watches::Watches;
use super::{
    cache_ready, drive, finalizer, lookup, reconcile, referrers, watch_metadata, Ctx, Kind, Shared,
};
use crate::api::common::CommonStatus;
use crate::api::kafka_cluster_set::KafkaClusterSet;
use crate::api::pipeline::{
    HistoryEntry, Pipeline, PipelinePhase, PipelineStatus, SavepointRecord, StreamLag,
};
use crate::api::savepoint::Savepoint;
use crate::error::Error;
use crate::flink::FlinkApi;
use crate::kafka::KafkaAdmin;
use crate::metrics::{Metrics, Present};
use crate::shutdown::Shutdown;
use crate::slo::budget::{Budgets, HttpPrometheus, PrometheusApi};
use crate::slo::sli::{Observation, Observations, PipelineKey};
use crate::slo::SloModel;
use crate::validation::Referenced;
use lag_book::LagBook;
use validate::PipelineRefs;

impl Kind for Pipeline {
    const CONTROLLER: &'static str = "pipeline";
    fn common_status(&self) -> Option<&CommonStatus> {
        self.status.as_ref().map(|s| &s.common)
    }
    fn forget_metrics(metrics: &Metrics, present: &Present) {
        metrics.pipelines.forget(present);
    }
}

/// Caches of the kinds a Pipeline references, and the engines it runs on.
pub struct Stores {
    sets: Store<DeserializeGuard<KafkaClusterSet>>,
    savepoints: Store<DeserializeGuard<Savepoint>>,
    flink: Arc<dyn FlinkApi>,
    admin: Arc<dyn KafkaAdmin>,
    /// The rules ConfigMaps of pipeline SLOs.
    rule_maps: Store<ConfigMap>,
    prometheus_rules: slo::PrometheusRuleKind,
    /// What each pipeline's last reconcile saw, for the SLO sampler.
    observations: Arc<Observations>,
    /// Where error budgets are read from, when configured.
    prometheus: Option<Arc<dyn PrometheusApi>>,
    /// The error budgets last read.
    budgets: Arc<Budgets>,
    /// Consumer pipelines' lag as last measured.
    lag: LagBook,
}

/// Acts on one valid pipeline.
struct RunPipeline<'c> {
    shared: &'c Shared,
    stores: &'c Stores,
}

impl Act<Pipeline> for RunPipeline<'_> {
    fn act<'a>(self, pipeline: &'a Pipeline) -> BoxFuture<'a, Result<Outcome, Error>>
    where
        Self: 'a,
    {
        async move {
            let stores = self.stores;
            let engine = &pipeline.spec.engine;
            let mut outcome = match (&engine.flink, &engine.consumer) {
                (Some(flink), _) => {
                    let client = &self.shared.client;
                    flink_job::run(client, &*stores.flink, &stores.savepoints, pipeline, flink)
                        .await?
                }
                (None, Some(consumer)) => {
                    let deps = consumer::ConsumerDeps {
                        client: &self.shared.client,
                        admin: &*stores.admin,
                        savepoints: &stores.savepoints,
                        lag: &stores.lag,
                    };
                    consumer::run(&deps, pipeline, consumer).await?
                }
                // Validation lets no such pipeline through.
                (None, None) => return Ok(Outcome::validated_only("engine-less Pipeline")),
            };
            let running =
                outcome.fields.get("phase") == Some(&PipelinePhase::Running.as_str().into());
            let last = snapshots::newest_completed(pipeline, &stores.savepoints);
            let lag = stores.lag.latest(&pipeline_key(pipeline)).flatten();
            let found = Found {
                running,
                outcome: &outcome,
                lag: lag.as_deref(),
                last: last.as_ref(),
            };
            record_metrics(self.shared, pipeline, &found);
            if let Some(last) = last {
                outcome
                    .fields
                    .insert("lastSavepoint".into(), serde_json::to_value(last)?);
            }
            if running {
                let client = &self.shared.client;
                if let Some(due) = snapshots::schedule(client, pipeline, &stores.savepoints).await?
                {
                    outcome.requeue = earlier(outcome.requeue, due);
                }
            }
            record_slo(self.shared, stores, pipeline, &mut outcome).await?;
            Ok(outcome)
        }
        .boxed()
    }
}

/// What a cache lookup found, in the terms validation uses.
/// The key under which a pipeline's SLO observations and lag are kept.
fn pipeline_key(pipeline: &Pipeline) -> PipelineKey {
    (
        pipeline.namespace().unwrap_or_default(),
        pipeline.name_any(),
    )
}

pub(crate) fn referenced<K>(found: &Option<Arc<DeserializeGuard<K>>>) -> Referenced<'_, K> {
    match found.as_deref() {
        None => Referenced::Missing,
        Some(DeserializeGuard(Ok(object))) => Referenced::Found(object),
        Some(DeserializeGuard(Err(_))) => Referenced::Unreadable,
    }
}

/// Hands what this reconcile found to the SLO sampler, delivers the
/// pipeline's rules and sets `status.slo`.
async fn record_slo(
    shared: &Shared,
    stores: &Stores,
    pipeline: &Pipeline,
    outcome: &mut Outcome,
) -> Result<(), Error> {
    let mut status: PipelineStatus =
        serde_json::from_value(serde_json::Value::Object(outcome.fields.clone()))?;
    let model = pipeline
        .spec
        .slo
        .as_ref()
        .and_then(|slo| SloModel::from_spec(slo).ok());
    let deps = slo::SloDeps {
        client: &shared.client,
        settings: &shared.slo,
        config_maps: &stores.rule_maps,
        prometheus_rules: &stores.prometheus_rules,
    };
    let key = pipeline_key(pipeline);
    let budgets = match (&stores.prometheus, &model) {
        (Some(prometheus), Some(model)) => stores.budgets.of(&**prometheus, &key, model).await,
        _ => Default::default(),
    };
    status.slo = slo::deliver(&deps, pipeline, model.as_ref(), &budgets, &status).await?;
    for (objective, budget) in &budgets {
        shared
            .metrics
            .slo_budget_left
            .with_label_values(&[key.0.as_str(), key.1.as_str(), objective.as_str()])
            .set(budget.left_percent);
    }
    stores.observations.record(key.clone(), {
        let lag = stores.lag.latest(&key).flatten();
        Observation::of(pipeline, &status, lag.as_deref(), Instant::now())
    });
    match &status.slo {
        Some(slo) => {
            outcome
                .fields
                .insert("slo".into(), serde_json::to_value(slo)?);
            // A Prometheus Operator installed later is noticed, and the
            // samples never go stale while the job waits on nothing.
            outcome.requeue = earlier(outcome.requeue, SLO_RECHECK);
        }
        None => {
            outcome.fields.remove("slo");
        }
    }
    Ok(())
}

/// How often a pipeline with an SLO is looked at even when nothing changed.
const SLO_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// What a reconcile of a pipeline found.
struct Found<'a> {
    running: bool,
    outcome: &'a Outcome,
    /// A consumer pipeline's newest lag measurement.
    lag: Option<&'a [StreamLag]>,
    /// The newest completed savepoint.
    last: Option<&'a SavepointRecord>,
}

/// The pipeline's gauges, from what this reconcile found.
fn record_metrics(shared: &Shared, pipeline: &Pipeline, found: &Found) {
    let Found {
        running,
        outcome,
        lag,
        last,
    } = *found;
    let field = |name: &str| {
        outcome
            .fields
            .get("job")
            .and_then(|job| job.get(name))
            .and_then(|v| v.as_i64())
    };
    let interval = pipeline
        .spec
        .savepoints
        .as_ref()
        .and_then(|policy| policy.interval.as_ref())
        .and_then(crate::duration::SpecDuration::ok);
    let namespace = pipeline.namespace().unwrap_or_default();
    let name = pipeline.name_any();
    shared
        .metrics
        .pipelines
        .update(&namespace, &name, |reading| {
            reading.running = running;
            if let Some(deployments) = field("deployment") {
                reading.deployments = Some(deployments);
            }
            if let Some(restarts) = field("restarts") {
                reading.restarts = Some(restarts);
            }
            for lag in lag.into_iter().flatten() {
                let stream = reading.lag.entry(lag.stream.clone()).or_default();
                stream.records = lag.records;
                if let Some(seconds) = lag.seconds {
                    stream.seconds = Some(seconds);
                }
            }
            reading.savepoint_interval = interval.map(|i| i.as_secs() as i64);
            if let Some(time) = last.and_then(|l| l.time.as_ref()) {
                reading.last_savepoint = Some(time.0.as_second());
            }
        });
}

/// How many history entries a pipeline keeps.
const HISTORY: usize = 10;

/// Notes a deployment, an upgrade or a restore in the pipeline's history.
fn remember(
    status: &mut PipelineStatus,
    pipeline: &Pipeline,
    event: &str,
    restored_from: Option<String>,
) {
    status.history.insert(
        0,
        HistoryEntry {
            generation: pipeline.metadata.generation.unwrap_or_default(),
            event: event.into(),
            restored_from,
            time: Time(Timestamp::now()),
        },
    );
    status.history.truncate(HISTORY);
}

/// Looks again at `due` at the latest.
fn earlier(requeue: Requeue, due: std::time::Duration) -> Requeue {
    match requeue {
        Requeue::After(after) => Requeue::After(after.min(due)),
        Requeue::OnChange => Requeue::After(due),
        Requeue::Backoff => Requeue::Backoff,
    }
}

async fn reconcile(
    pipeline: Arc<DeserializeGuard<Pipeline>>,
    ctx: Arc<Ctx<Stores>>,
) -> Result<Action, Error> {
    if let Ok(object) = &pipeline.0 {
        let namespace = object
            .namespace()
            .ok_or(Error::MissingObjectField("metadata.namespace"))?;
        let api: Api<Pipeline> = Api::namespaced(ctx.shared.client.clone(), &namespace);
        let step = flink_job::on_delete(&api, &*ctx.stores.flink, object).await;
        let step = finalizer::reported(&ctx.shared, &api, object, flink_job::FINALIZER, step);
        if let Some(action) = step.await? {
            return Ok(action);
        }
    }
    reconcile::reconcile(
        &ctx.shared,
        &pipeline,
        |p| {
            let set = lookup(&ctx.stores.sets, p, &p.spec.cluster_set);
            let savepoint = p
                .spec
                .restore_from
                .as_ref()
                .and_then(|r| r.savepoint.as_ref())
                .map(|name| lookup(&ctx.stores.savepoints, p, name));
            let refs = PipelineRefs {
                cluster_set: referenced(&set),
                restore_savepoint: savepoint.as_ref().map(referenced),
            };
            validate::validate(&p.name_any(), &p.spec, &refs)
        },
        RunPipeline {
            shared: &ctx.shared,
            stores: &ctx.stores,
        },
    )
    .await
}

/// Runs the Pipeline controller until `shutdown` completes.
pub fn run(
    shared: Arc<Shared>,
    watches: &mut Watches,
    shutdown: Shutdown,
) -> impl Future<Output = ()> {
    let (reader, stream) = watches.pipelines.subscribe(Pipeline::CONTROLLER);
    let (sets, sets_stream) = watches.sets.subscribe(Pipeline::CONTROLLER);
    let (savepoints, savepoints_stream) = watches.savepoints.subscribe(Pipeline::CONTROLLER);
    let by_set = reader.clone();
    let by_savepoint = reader.clone();
    let managed = watcher::Config::default().labels("app.kubernetes.io/managed-by=kappa-operator");
    let (rule_maps, rule_maps_writer) = reflector::store();
    let rule_maps_stream = watcher(
        shared.api::<ConfigMap>(),
        watcher::Config::default().labels(&format!("{}=true", slo::RULES_LABEL)),
    )
    .default_backoff()
    .modify(|map: &mut ConfigMap| map.managed_fields_mut().clear())
    .reflect(rule_maps_writer)
    .touched_objects();
    let sampled = reader.clone();
    let controller = Controller::for_shared_stream(stream, reader)
        .owns_stream(watch_metadata::<Deployment>(&shared, managed.clone()))
        .owns_stream(watch_metadata::<StatefulSet>(&shared, managed))
        .owns_stream(rule_maps_stream)
        .watches_shared_stream(sets_stream, move |set| {
            referrers(&by_set, &*set, |p: &Pipeline, name| {
                p.spec.cluster_set == name
            })
        })
        .watches_shared_stream(savepoints_stream, move |savepoint| {
            // A pipeline restoring from it, and the pipeline it snapshots.
            let mut wanted = referrers(&by_savepoint, &*savepoint, |p: &Pipeline, name| {
                p.spec
                    .restore_from
                    .as_ref()
                    .and_then(|r| r.savepoint.as_deref())
                    == Some(name)
            });
            if let Ok(snapshot) = &savepoint.0 {
                let mut owner = ObjectRef::new(&snapshot.spec.pipeline_ref);
                if let Some(ns) = snapshot.namespace() {
                    owner = owner.within(&ns);
                }
                wanted.push(owner);
            }
            wanted
        });
    let observations = Arc::new(Observations::default());
    let budgets = Arc::new(Budgets::default());
    let sampling = sample_slos(
        shared.clone(),
        sampled,
        observations.clone(),
        budgets.clone(),
    );
    let prometheus = shared
        .slo
        .prometheus_url
        .as_deref()
        .map(|url| Arc::new(HttpPrometheus::new(url)) as Arc<dyn PrometheusApi>);
    let flink = shared.flink.clone();
    let admin = shared.kafka.clone();
    let ctx = Arc::new(Ctx {
        shared,
        stores: Stores {
            sets,
            savepoints,
            flink,
            admin,
            rule_maps,
            prometheus_rules: slo::PrometheusRuleKind::default(),
            observations,
            prometheus,
            budgets,
            lag: LagBook::default(),
        },
    });
    async move {
        let sampler = tokio::spawn(sampling);
        drive(controller, ctx, reconcile, shutdown).await;
        sampler.abort();
    }
}

/// Samples every objective of every pipeline SLO every
/// [`SAMPLE_EVERY`](crate::slo::sli::SAMPLE_EVERY), while this replica leads.
async fn sample_slos(
    shared: Arc<Shared>,
    pipelines: Store<DeserializeGuard<Pipeline>>,
    observations: Arc<Observations>,
    budgets: Arc<Budgets>,
) {
    let mut every = tokio::time::interval(crate::slo::sli::SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // A bounded wait, asked again at the next tick: a store's readiness
        // wakes only the last of several waiters (seen: the sampler waited
        // forever while the controller ran).
        if cache_ready(&pipelines, "Pipelines").await.is_err() {
            continue;
        }
        let slos: Vec<_> = pipelines
            .state()
            .iter()
            .filter_map(|guard| {
                let pipeline = guard.0.as_ref().ok()?;
                let model = SloModel::from_spec(pipeline.spec.slo.as_ref()?).ok()?;
                let key = (pipeline.namespace()?, pipeline.name_any());
                Some((key, model))
            })
            .collect();
        let scope = shared.namespace.as_deref();
        observations.sample(&shared.metrics, &slos, scope, Instant::now());
        budgets.retain(&slos.iter().map(|(key, _)| key.clone()).collect());
    }
}
