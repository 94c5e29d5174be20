//! The gauges of each Pipeline (running, deployments, restarts, savepoints,
//! lag per input stream), made at each scrape from one reading per
//! pipeline that its reconciles update: at 10,000 pipelines, gauge vectors
//! kept some 10 MB of children, each with its own copy of its labels.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Metric, MetricFamily};

use super::series::{ByObject, Family};
use super::Present;

const PIPELINE: &[&str] = &["namespace", "pipeline"];
const STREAM: &[&str] = &["namespace", "pipeline", "stream"];

/// One series of a pipeline: the stream label's value (for the per-stream
/// families), and the gauge's.
type Series<'a> = (Option<&'a str>, f64);

/// A family and its series in a reading.
struct PipelineFamily {
    family: Family,
    values: for<'a> fn(&'a PipelineReading) -> Vec<Series<'a>>,
}

/// A value once found.
fn one<'a>(value: Option<i64>) -> Vec<Series<'a>> {
    value.map(|v| (None, v as f64)).into_iter().collect()
}

/// Every family, in the order they are rendered.
const FAMILIES: [PipelineFamily; 7] = [
    PipelineFamily {
        family: Family {
            name: "kappa_pipeline_lag_records",
            help: "Records of an input stream a Pipeline has not yet read, over every cluster it is read from",
            labels: STREAM,
        },
        values: |r| r.lag.iter().map(|(stream, lag)| (Some(stream.as_str()), lag.records as f64)).collect(),
    },
    PipelineFamily {
        family: Family {
            name: "kappa_pipeline_lag_seconds",
            help: "Seconds since the oldest record of an input stream a Pipeline has not yet read was written (0 when it has read everything)",
            labels: STREAM,
        },
        values: |r| r.lag.iter().filter_map(|(stream, lag)| Some((Some(stream.as_str()), lag.seconds?))).collect(),
    },
    PipelineFamily {
        family: Family {
            name: "kappa_pipeline_running",
            help: "1 while a Pipeline's job runs with all its tasks, else 0",
            labels: PIPELINE,
        },
        values: |r| vec![(None, f64::from(u8::from(r.running)))],
    },
    PipelineFamily {
        family: Family {
            name: "kappa_pipeline_deployments",
            help: "Jobs a Pipeline has deployed: the first, then one per upgrade, restart or resumption",
            labels: PIPELINE,
        },
        values: |r| one(r.deployments),
    },
    PipelineFamily {
        family: Family {
            name: "kappa_pipeline_restarts",
            help: "Restarts of a Pipeline's current job as Flink counts them (numRestarts), or of its consumer pods' containers",
            labels: PIPELINE,
        },
        values: |r| one(r.restarts),
    },
    PipelineFamily {
        family: Family {
            name: "kappa_pipeline_last_savepoint_timestamp_seconds",
            help: "When a Pipeline's newest savepoint completed (its age is time() minus this)",
            labels: PIPELINE,
        },
        values: |r| one(r.last_savepoint),
    },
    PipelineFamily {
        family: Family {
            name: "kappa_pipeline_savepoint_interval_seconds",
            help: "Interval of a Pipeline's periodic savepoints",
            labels: PIPELINE,
        },
        values: |r| one(r.savepoint_interval),
    },
];

/// An input stream's lag as last measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamReading {
    pub records: i64,
    /// Unknown until a record's time was read.
    pub seconds: Option<f64>,
}

/// What a pipeline's reconciles last found; a value not found yet is not
/// exported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineReading {
    pub running: bool,
    pub deployments: Option<i64>,
    pub restarts: Option<i64>,
    /// Unix seconds.
    pub last_savepoint: Option<i64>,
    pub savepoint_interval: Option<i64>,
    /// By input stream.
    pub lag: BTreeMap<String, StreamReading>,
}

/// Each pipeline's reading; clones share them.
#[derive(Clone)]
pub struct PipelineGauges {
    descs: Vec<Desc>,
    readings: Arc<Mutex<ByObject<PipelineReading>>>,
}

impl PipelineGauges {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            descs: FAMILIES
                .iter()
                .map(|each| each.family.desc())
                .collect::<Result<_, _>>()?,
            readings: Arc::default(),
        })
    }

    fn readings(&self) -> MutexGuard<'_, ByObject<PipelineReading>> {
        self.readings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the reading of pipeline `namespace`/`name` (a new one
    /// starts with nothing found).
    pub fn update(&self, namespace: &str, name: &str, change: impl FnOnce(&mut PipelineReading)) {
        self.readings().change(namespace, name, change);
    }

    /// Forgets the pipelines that `present` says are gone.
    pub fn forget(&self, present: &Present) {
        self.readings().forget(present);
    }
}

impl Collector for PipelineGauges {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let readings = self.readings();
        FAMILIES
            .iter()
            .map(|each| {
                let mut metrics: Vec<Metric> = Vec::new();
                for (namespace, name, reading) in readings.iter() {
                    for (stream, value) in (each.values)(reading) {
                        let mut labels = vec![namespace, name];
                        labels.extend(stream);
                        metrics.push(each.family.gauge(&labels, value));
                    }
                }
                each.family.with(metrics)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn a_pipelines_gauges_show_what_was_found_and_go_with_it() {
        let metrics = Metrics::new("1.2.3").expect("metrics register");
        metrics.pipelines.update("shop", "totals", |reading| {
            reading.running = true;
            reading.deployments = Some(2);
            reading.lag.insert(
                "orders".into(),
                StreamReading {
                    records: 7,
                    seconds: None,
                },
            );
        });
        metrics
            .pipelines
            .update("shop", "other", |reading| reading.restarts = Some(3));
        let text = metrics.render().expect("render");
        for series in [
            r#"kappa_pipeline_running{namespace="shop",pipeline="totals"} 1"#,
            r#"kappa_pipeline_running{namespace="shop",pipeline="other"} 0"#,
            r#"kappa_pipeline_deployments{namespace="shop",pipeline="totals"} 2"#,
            r#"kappa_pipeline_restarts{namespace="shop",pipeline="other"} 3"#,
            r#"kappa_pipeline_lag_records{namespace="shop",pipeline="totals",stream="orders"} 7"#,
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
        for unknown in [
            "kappa_pipeline_lag_seconds{",
            "kappa_pipeline_restarts{namespace=\"shop\",pipeline=\"totals\"}",
            "kappa_pipeline_last_savepoint_timestamp_seconds{",
        ] {
            assert!(!text.contains(unknown), "{unknown} not found yet: {text}");
        }

        let present = BTreeSet::from([("shop".to_string(), "other".to_string())]);
        metrics
            .pipelines
            .forget(&Present::new(Some("elsewhere"), BTreeSet::new()));
        assert!(metrics
            .render()
            .expect("render")
            .contains("pipeline=\"totals\""));
        metrics.pipelines.forget(&Present::new(None, present));
        let text = metrics.render().expect("render");
        assert!(!text.contains("pipeline=\"totals\""), "{text}");
        assert!(text.contains("pipeline=\"other\""), "{text}");
    }
}
