//! Prometheus metrics of the operator, with bounded label sets.

mod pipelines;
mod problems;
mod series;

use std::collections::BTreeSet;

use prometheus::core::Collector;

pub use pipelines::PipelineGauges;
use problems::ObjectProblems;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// An object's problem conditions: (type, reason) pairs.
pub type Problems = BTreeSet<(String, String)>;

/// The objects in one controller's cache, to remove the metric series of
/// those that are gone. Only series of the namespace the cache covers are
/// judged: an operator watching several namespaces runs one set of
/// controllers per namespace, all writing the same metrics.
#[derive(Debug, Clone, Default)]
pub struct Present {
    /// The namespace the cache covers; every namespace when `None`.
    scope: Option<String>,
    /// (namespace, name) of every object in it.
    objects: BTreeSet<(String, String)>,
}

impl Present {
    /// The `objects` of a cache covering `scope` (all namespaces when `None`).
    pub fn new(scope: Option<&str>, objects: BTreeSet<(String, String)>) -> Self {
        Self {
            scope: scope.map(str::to_string),
            objects,
        }
    }

    /// Whether the object `namespace`/`name` is in the cache's scope but
    /// not in the cache: deleted.
    pub fn gone(&self, namespace: &str, name: &str) -> bool {
        self.covers(namespace)
            && !self
                .objects
                .contains(&(namespace.to_string(), name.to_string()))
    }

    /// Whether the cache covers `namespace`.
    pub fn covers(&self, namespace: &str) -> bool {
        self.scope.as_deref().is_none_or(|scope| scope == namespace)
    }
}

/// Every metric the operator exports.
pub struct Metrics {
    /// Every metric, in the order it is rendered.
    collectors: Vec<Box<dyn Collector>>,
    /// Reconciles started, per controller.
    pub reconciles: IntCounterVec,
    /// Reconciles failed, per controller and error category.
    pub reconcile_errors: IntCounterVec,
    /// Reconcile duration, per controller.
    pub reconcile_duration: HistogramVec,
    /// Status writes, per controller.
    pub status_writes: IntCounterVec,
    /// Objects whose spec is currently refused, per controller and reason.
    pub spec_problems: IntCounterVec,
    /// Requests sent to the Kubernetes API, per HTTP method.
    pub kube_requests: IntCounterVec,
    /// 1 while this replica holds the leader lease.
    pub leader: IntGauge,
    /// Epoch of each set's published discovery document.
    pub discovery_epoch: IntGaugeVec,
    /// Clusters of each set by role and phase.
    pub clusters: IntGaugeVec,
    /// 1 while a set moves its write cluster.
    pub migrations_in_progress: IntGaugeVec,
    /// Kafka admin calls that failed, per operation and error category.
    pub kafka_admin_errors: IntCounterVec,
    /// Kafka admin call latency, per operation.
    pub kafka_admin_duration: HistogramVec,
    /// Savepoint durations.
    pub savepoint_duration: HistogramVec,
    /// Failed savepoint attempts.
    pub savepoint_failures: IntCounterVec,
    /// Each Pipeline's gauges: running, deployments, restarts, savepoints, lag.
    pub pipelines: PipelineGauges,
    /// Records of a Backfill's range, and of them replayed so far.
    pub backfill_records: IntGaugeVec,
    /// Records per second of a Backfill's current phase (replay, then the job).
    pub backfill_rate: GaugeVec,
    /// Key and value bytes a Backfill's workers have replayed.
    pub backfill_bytes: IntGaugeVec,
    /// 1 for a Backfill's current phase.
    pub backfill_phase: IntGaugeVec,
    /// 1 for each problem condition an object has, by type and reason.
    object_problems: ObjectProblems,
    /// When each running Backfill expects to finish, from its current rate.
    pub backfill_expected_end: IntGaugeVec,
    /// SLO samples taken, per Pipeline and objective.
    pub slo_samples: IntCounterVec,
    /// SLO samples in which the objective held.
    pub slo_good_samples: IntCounterVec,
    /// Each Pipeline SLO's target, as a share.
    pub slo_target: GaugeVec,
    /// Error budget left per objective, as read from Prometheus.
    pub slo_budget_left: GaugeVec,
    /// Admission reviews answered, by kind and verdict.
    pub admissions: IntCounterVec,
    /// When the served webhook certificate expires (Unix seconds).
    pub webhook_certificate_expiry: IntGauge,
}

impl Metrics {
    /// Registers every metric; `version` goes into `kappa_build_info`.
    pub fn new(version: &str) -> Result<Self, prometheus::Error> {
        let mut collectors = Collectors::default();
        let reconciles = IntCounterVec::new(
            Opts::new("kappa_reconcile_total", "Reconciles started"),
            &["controller"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "kappa_reconcile_errors_total",
                "Reconciles that failed, by error category",
            ),
            &["controller", "reason"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new("kappa_reconcile_duration_seconds", "Reconcile duration")
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0]),
            &["controller"],
        )?;
        let status_writes = IntCounterVec::new(
            Opts::new("kappa_status_writes_total", "Status subresource writes"),
            &["controller"],
        )?;
        let spec_problems = IntCounterVec::new(
            Opts::new(
                "kappa_spec_problems_total",
                "Times an object was found with a refused spec, by condition reason",
            ),
            &["controller", "reason"],
        )?;
        let kube_requests = IntCounterVec::new(
            Opts::new(
                "kappa_kube_requests_total",
                "Requests sent to the Kubernetes API",
            ),
            &["method"],
        )?;
        let leader = IntGauge::new(
            "kappa_leader",
            "1 while this replica holds the leader lease",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("kappa_build_info", "Build of the running operator"),
            &["version"],
        )?;
        build_info.with_label_values(&[version]).set(1);
        let discovery_epoch = IntGaugeVec::new(
            Opts::new(
                "kappa_discovery_epoch",
                "Epoch of the published discovery document, per KafkaClusterSet",
            ),
            &["namespace", "cluster_set"],
        )?;
        let clusters = IntGaugeVec::new(
            Opts::new(
                "kappa_kafka_clusters",
                "Clusters of each KafkaClusterSet, by role and phase",
            ),
            &["namespace", "cluster_set", "role", "phase"],
        )?;
        let migrations_in_progress = IntGaugeVec::new(
            Opts::new(
                "kappa_migrations_in_progress",
                "1 while a KafkaClusterSet moves its write cluster",
            ),
            &["namespace", "cluster_set"],
        )?;
        let kafka_admin_errors = IntCounterVec::new(
            Opts::new(
                "kappa_kafka_admin_errors_total",
                "Kafka admin calls that failed, by operation and error category",
            ),
            &["operation", "reason"],
        )?;
        let kafka_admin_duration = HistogramVec::new(
            HistogramOpts::new(
                "kappa_kafka_admin_duration_seconds",
                "Kafka admin call latency",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0]),
            &["operation"],
        )?;
        let savepoint_duration = HistogramVec::new(
            HistogramOpts::new(
                "kappa_savepoint_duration_seconds",
                "From trigger to completion of a Savepoint",
            )
            .buckets(vec![0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0]),
            &["namespace", "pipeline"],
        )?;
        let savepoint_failures = IntCounterVec::new(
            Opts::new(
                "kappa_savepoint_failures_total",
                "Failed savepoint attempts",
            ),
            &["namespace", "pipeline"],
        )?;
        let backfill_records = IntGaugeVec::new(
            Opts::new(
                "kappa_backfill_records",
                "Records of a Backfill: `range` in its time range, `replayed` into its extra clusters, `lag` not yet read by its job",
            ),
            &["namespace", "backfill", "kind"],
        )?;
        let backfill_rate = GaugeVec::new(
            Opts::new(
                "kappa_backfill_records_per_second",
                "Average records per second of a Backfill's current phase: copied while replaying, read by its job while processing",
            ),
            &["namespace", "backfill"],
        )?;
        let backfill_bytes = IntGaugeVec::new(
            Opts::new(
                "kappa_backfill_replayed_bytes",
                "Key and value bytes of the records a Backfill's workers have replayed into its extra clusters",
            ),
            &["namespace", "backfill"],
        )?;
        let backfill_phase = IntGaugeVec::new(
            Opts::new("kappa_backfill_phase", "1 for the phase a Backfill is in"),
            &["namespace", "backfill", "phase"],
        )?;
        let slo_samples = IntCounterVec::new(
            Opts::new(
                "kappa_pipeline_slo_samples_total",
                "Samples of a Pipeline's SLO objective, taken every 10 s by the leader while the job is meant to run (docs/slo.md)",
            ),
            &["namespace", "pipeline", "objective"],
        )?;
        let slo_good_samples = IntCounterVec::new(
            Opts::new(
                "kappa_pipeline_slo_good_samples_total",
                "Samples of a Pipeline's SLO objective in which it held",
            ),
            &["namespace", "pipeline", "objective"],
        )?;
        let object_problems = ObjectProblems::new()?;
        let backfill_expected_end = IntGaugeVec::new(
            Opts::new(
                "kappa_backfill_expected_end_timestamp_seconds",
                "When a Backfill's current phase is expected to end, from its current rate (its ETA as a time)",
            ),
            &["namespace", "backfill"],
        )?;
        collectors.register(&object_problems)?;
        collectors.register(&backfill_expected_end)?;
        let slo_target = GaugeVec::new(
            Opts::new(
                "kappa_pipeline_slo_target_ratio",
                "Share of samples a Pipeline's SLO requires to be good, e.g. 0.999",
            ),
            &["namespace", "pipeline"],
        )?;
        let slo_budget_left = GaugeVec::new(
            Opts::new(
                "kappa_pipeline_slo_budget_left_percent",
                "Error budget left over a Pipeline SLO's window, per objective, as the operator last read it from Prometheus (with --prometheus-url)",
            ),
            &["namespace", "pipeline", "objective"],
        )?;
        let admissions = IntCounterVec::new(
            Opts::new(
                "kappa_admission_reviews_total",
                "Admission reviews the webhook answered, by kind and verdict (allowed, denied)",
            ),
            &["kind", "verdict"],
        )?;
        let webhook_certificate_expiry = IntGauge::new(
            "kappa_webhook_certificate_expiry_timestamp_seconds",
            "When the webhook's serving certificate expires, as Unix time; 0 when unknown: before one is loaded, or for a certificate from an external issuer",
        )?;
        collectors.register(&admissions)?;
        collectors.register(&webhook_certificate_expiry)?;
        collectors.register(&slo_target)?;
        collectors.register(&slo_budget_left)?;
        collectors.register(&slo_samples)?;
        collectors.register(&slo_good_samples)?;
        let pipelines = PipelineGauges::new()?;
        collectors.register(&pipelines)?;
        collectors.register(&backfill_records)?;
        collectors.register(&backfill_rate)?;
        collectors.register(&backfill_bytes)?;
        collectors.register(&backfill_phase)?;
        collectors.register(&savepoint_duration)?;
        collectors.register(&savepoint_failures)?;
        collectors.register(&reconciles)?;
        collectors.register(&reconcile_errors)?;
        collectors.register(&reconcile_duration)?;
        collectors.register(&status_writes)?;
        collectors.register(&spec_problems)?;
        collectors.register(&kube_requests)?;
        collectors.register(&leader)?;
        collectors.register(&build_info)?;
        collectors.register(&discovery_epoch)?;
        collectors.register(&clusters)?;
        collectors.register(&migrations_in_progress)?;
        collectors.register(&kafka_admin_errors)?;
        collectors.register(&kafka_admin_duration)?;
        Ok(Self {
            collectors: collectors.each,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            status_writes,
            spec_problems,
            kube_requests,
            leader,
            discovery_epoch,
            clusters,
            migrations_in_progress,
            kafka_admin_errors,
            kafka_admin_duration,
            savepoint_duration,
            savepoint_failures,
            pipelines,
            backfill_records,
            backfill_rate,
            backfill_bytes,
            backfill_phase,
            object_problems,
            backfill_expected_end,
            slo_samples,
            slo_good_samples,
            slo_target,
            slo_budget_left,
            admissions,
            webhook_certificate_expiry,
        })
    }

    /// Sets the problem conditions (type, reason) of one object; its
    /// series show them from the next scrape on.
    pub fn set_problems(
        &self,
        controller: &'static str,
        namespace: &str,
        name: &str,
        problems: &Problems,
    ) {
        self.object_problems
            .set(controller, namespace, name, problems);
    }

    /// Removes the problem series of `controller`'s objects that
    /// `present` says are gone.
    pub fn forget_problems(&self, controller: &str, present: &Present) {
        self.object_problems.forget(controller, present);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let encoder = TextEncoder::new();
        let mut text = String::new();
        for collector in &self.collectors {
            let families: Vec<_> = collector
                .collect()
                .into_iter()
                .filter(|family| !family.get_metric().is_empty())
                .collect();
            encoder.encode_utf8(&families, &mut text)?;
        }
        Ok(text)
    }
}

/// The metrics as they are registered, to be rendered one at a time: a
/// registry's `gather` copies every series of every metric before the
/// first is written, some 12 MB at 10,000 objects on each scrape. The
/// registry only checks, while they are registered, that the metrics'
/// names and labels are consistent; it is dropped after.
#[derive(Default)]
struct Collectors {
    registry: Registry,
    each: Vec<Box<dyn Collector>>,
}

impl Collectors {
    fn register<C: Collector + Clone + 'static>(
        &mut self,
        collector: &C,
    ) -> Result<(), prometheus::Error> {
        self.registry.register(Box::new(collector.clone()))?;
        self.each.push(Box::new(collector.clone()));
        Ok(())
    }
}

/// The values of the labels `names`, in that order, of every series of
/// `collector` that has them all.
pub fn label_values<const N: usize>(
    collector: &impl Collector,
    names: [&str; N],
) -> Vec<[String; N]> {
    collector
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .filter_map(|metric| {
            let labels = metric.get_label();
            let values = names.map(|name| {
                labels
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
            });
            values
                .iter()
                .all(Option::is_some)
                .then(|| values.map(Option::unwrap_or_default))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_build_info_and_counters() {
        let metrics = Metrics::new("1.2.3").expect("metrics register");
        metrics.reconciles.with_label_values(&["pipeline"]).inc();
        let text = metrics.render().expect("metrics render");
        assert!(text.contains("kappa_build_info{version=\"1.2.3\"} 1"));
        assert!(text.contains("kappa_reconcile_total{controller=\"pipeline\"} 1"));
    }

    #[test]
    fn problems_follow_the_conditions_and_go_with_their_object() {
        let metrics = Metrics::new("1.2.3").expect("metrics register");
        let problem = |c: &str, r: &str| BTreeSet::from([(c.to_string(), r.to_string())]);
        let series = r#"kappa_object_problem{condition="Degraded",controller="kafkaclusterset",name="events",namespace="shop",reason="ClusterUnreachable"} 1"#;
        metrics.set_problems(
            "kafkaclusterset",
            "shop",
            "events",
            &problem("Degraded", "ClusterUnreachable"),
        );
        metrics.set_problems(
            "kafkaclusterset",
            "shop",
            "other",
            &problem("Ready", "InvalidSpec"),
        );
        assert!(metrics.render().expect("render").contains(series));
        metrics.set_problems("kafkaclusterset", "shop", "events", &BTreeSet::new());
        let text = metrics.render().expect("render");
        assert!(!text.contains("name=\"events\""), "{text}");
        assert!(text.contains("name=\"other\""), "{text}");
        let elsewhere = Present::new(Some("other-team"), BTreeSet::new());
        metrics.forget_problems("kafkaclusterset", &elsewhere);
        assert!(
            metrics.render().expect("render").contains("name=\"other\""),
            "another namespace's cache judges nothing here"
        );
        metrics.forget_problems("kafkaclusterset", &Present::new(None, BTreeSet::new()));
        assert!(!metrics
            .render()
            .expect("render")
            .contains("kappa_object_problem{"));
    }
}
