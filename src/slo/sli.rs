//! The SLIs: every [`SAMPLE_EVERY`], the leader judges each objective of
//! each Pipeline with an SLO from the newest thing its reconcile observed,
//! and counts the sample, and whether it was good, in two counters. Error
//! ratios are then `rate()`s of counters, which survive restarts and
//! leader changes (docs/slo.md).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Objective, SloModel};
use crate::api::pipeline::{
    EngineType, JobState, Pipeline, PipelinePhase, PipelineStatus, StreamLag,
};
use crate::metrics::Metrics;

/// How often every objective is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// An observation older than this counts as bad: the operator could not
/// look (reconciles failing, Kafka unreachable) and cannot say it was good.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// A Pipeline's lag, as its last reconcile found it.
#[derive(Debug, Clone, PartialEq)]
pub enum Lag {
    /// Its engine's lag is not measured (a Flink job).
    NotMeasured,
    /// Measuring failed.
    Unknown,
    /// Records behind over all inputs, and the age of the oldest unread
    /// record over all inputs when every input's is known.
    Known {
        /// Records behind.
        records: i64,
        /// Seconds since the oldest unread record was written.
        seconds: Option<f64>,
    },
}

/// What one reconcile of a Pipeline found.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// When.
    pub at: Instant,
    /// The job runs (phase Running).
    pub running: bool,
    /// The user asked for the job to be stopped: nothing is sampled.
    pub suspended: bool,
    /// Samples are counted once the job has run (`status.slo.sampledSince`).
    pub armed: bool,
    /// How far behind it is.
    pub lag: Lag,
}

impl Observation {
    /// What `status`, as a reconcile of `pipeline` is about to write it,
    /// and `lag`, the newest measurement of a consumer pipeline's lag (not
    /// status', which shows it less often), say.
    pub fn of(
        pipeline: &Pipeline,
        status: &PipelineStatus,
        lag: Option<&[StreamLag]>,
        at: Instant,
    ) -> Self {
        let running = status.phase == Some(PipelinePhase::Running);
        let lag = match (pipeline.spec.engine.type_, lag) {
            (EngineType::Flink, _) => Lag::NotMeasured,
            (EngineType::Consumer, None) => Lag::Unknown,
            (EngineType::Consumer, Some(lag)) => Lag::Known {
                records: lag.iter().map(|l| l.records).sum(),
                seconds: lag
                    .iter()
                    .map(|l| l.seconds.or((l.records == 0).then_some(0.0)))
                    .try_fold(0.0_f64, |oldest, s| s.map(|s| oldest.max(s))),
            },
        };
        Self {
            at,
            running,
            suspended: pipeline.spec.state == JobState::Suspended,
            armed: running
                || status
                    .slo
                    .as_ref()
                    .is_some_and(|s| s.sampled_since.is_some()),
            lag,
        }
    }
}

/// Whether `objective` held, as of `observation` at `now`: `None` when no
/// sample is taken (the job is suspended or has never run, or the engine
/// does not measure it).
pub fn judge(
    model: &SloModel,
    objective: Objective,
    observation: Option<&Observation>,
    now: Instant,
) -> Option<bool> {
    let Some(observation) = observation else {
        // Not reconciled since this operator started: nothing to go by yet.
        return None;
    };
    if observation.suspended || !observation.armed {
        return None;
    }
    let measured = !matches!(
        (objective, &observation.lag),
        (
            Objective::Freshness | Objective::LagRecords,
            Lag::NotMeasured
        )
    );
    if !measured {
        return None;
    }
    if now.saturating_duration_since(observation.at) > STALE_AFTER {
        return Some(false);
    }
    Some(match (objective, &observation.lag) {
        (Objective::Availability, _) => observation.running,
        (Objective::Freshness, Lag::Known { seconds, .. }) => seconds
            .zip(model.freshness)
            .is_some_and(|(seconds, limit)| seconds <= limit.as_secs_f64()),
        (Objective::LagRecords, Lag::Known { records, .. }) => {
            model.max_lag_records.is_some_and(|limit| *records <= limit)
        }
        (Objective::Freshness | Objective::LagRecords, _) => false,
    })
}

/// Whether the operator measures `objective` for a pipeline of `engine`.
pub fn measured(engine: EngineType, objective: Objective) -> bool {
    engine == EngineType::Consumer || objective == Objective::Availability
}

/// A pipeline's identity in metrics: namespace and name.
pub type PipelineKey = (String, String);

/// The newest observation of each Pipeline, written by its reconciles and
/// read by the sampler.
#[derive(Default)]
pub struct Observations(Mutex<HashMap<PipelineKey, Observation>>);

impl Observations {
    /// Keeps `observation` as the newest of `key`.
    pub fn record(&self, key: PipelineKey, observation: Observation) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key, observation);
    }

    /// Counts one sample of every objective of every pipeline in `slos`,
    /// and forgets the pipelines (and objectives) of namespace `scope`
    /// (every namespace when `None`) no longer there, their series
    /// included.
    pub fn sample(
        &self,
        metrics: &Metrics,
        slos: &[(PipelineKey, SloModel)],
        scope: Option<&str>,
        now: Instant,
    ) {
        let mut observations = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let wanted: BTreeSet<(String, String, &'static str)> = slos
            .iter()
            .flat_map(|((namespace, name), model)| {
                model
                    .objectives()
                    .into_iter()
                    .map(|o| (namespace.clone(), name.clone(), o.as_str()))
            })
            .collect();
        for ((namespace, name), model) in slos {
            metrics
                .slo_target
                .with_label_values(&[namespace.as_str(), name.as_str()])
                .set(model.target);
            let observation = observations.get(&(namespace.clone(), name.clone()));
            for objective in model.objectives() {
                let Some(good) = judge(model, objective, observation, now) else {
                    continue;
                };
                let labels = [namespace.as_str(), name.as_str(), objective.as_str()];
                metrics.slo_samples.with_label_values(&labels).inc();
                // The good counter exists from the first sample on, so the
                // ratio is defined (0 good) before anything went well.
                let good_samples = metrics.slo_good_samples.with_label_values(&labels);
                if good {
                    good_samples.inc();
                }
            }
        }
        let present: BTreeSet<PipelineKey> = slos.iter().map(|(key, _)| key.clone()).collect();
        observations.retain(|key, _| present.contains(key));
        let in_scope = |namespace: &String| scope.is_none_or(|s| s == namespace);
        for (namespace, name, objective) in recorded(metrics)
            .difference(&wanted)
            .filter(|(namespace, _, _)| in_scope(namespace))
        {
            let labels = [namespace.as_str(), name.as_str(), objective];
            // A series never set is simply not there to remove.
            let _ = metrics.slo_samples.remove_label_values(&labels);
            let _ = metrics.slo_good_samples.remove_label_values(&labels);
            let _ = metrics.slo_budget_left.remove_label_values(&labels);
            if !present.contains(&(namespace.clone(), name.clone())) {
                let _ = metrics
                    .slo_target
                    .remove_label_values(&[namespace.as_str(), name.as_str()]);
            }
        }
    }
}

/// The (namespace, pipeline, objective) of every sample series.
fn recorded(metrics: &Metrics) -> BTreeSet<(String, String, &'static str)> {
    crate::metrics::label_values(&metrics.slo_samples, ["namespace", "pipeline", "objective"])
        .into_iter()
        .filter_map(|[namespace, pipeline, objective]| {
            let objective = Objective::ALL
                .into_iter()
                .find(|o| o.as_str() == objective)?
                .as_str();
            Some((namespace, pipeline, objective))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pipeline::Slo;
    use serde_json::json;

    fn model() -> SloModel {
        let slo: Slo = serde_json::from_value(json!({"freshness": "30s", "maxLagRecords": 100}))
            .expect("test SLO deserializes");
        SloModel::from_spec(&slo).expect("valid")
    }

    fn seen(running: bool, lag: Lag, at: Instant) -> Observation {
        Observation {
            at,
            running,
            suspended: false,
            armed: true,
            lag,
        }
    }

    #[test]
    fn judges_each_objective_from_the_newest_observation() {
        let now = Instant::now();
        let model = model();
        let fresh = Lag::Known {
            records: 100,
            seconds: Some(30.0),
        };
        let behind = Lag::Known {
            records: 101,
            seconds: Some(31.0),
        };
        let cases = [
            (
                seen(true, fresh.clone(), now),
                [Some(true), Some(true), Some(true)],
            ),
            (
                seen(false, behind.clone(), now),
                [Some(false), Some(false), Some(false)],
            ),
            (
                seen(
                    true,
                    Lag::Known {
                        records: 5,
                        seconds: None,
                    },
                    now,
                ),
                [Some(false), Some(true), Some(true)],
            ),
            (
                seen(true, Lag::Unknown, now),
                [Some(false), Some(false), Some(true)],
            ),
            (seen(true, Lag::NotMeasured, now), [None, None, Some(true)]),
            (
                seen(
                    true,
                    fresh.clone(),
                    now - STALE_AFTER - Duration::from_secs(1),
                ),
                [Some(false), Some(false), Some(false)],
            ),
            (
                Observation {
                    suspended: true,
                    ..seen(false, behind.clone(), now)
                },
                [None, None, None],
            ),
            (
                Observation {
                    armed: false,
                    ..seen(false, behind, now)
                },
                [None, None, None],
            ),
        ];
        for (observation, expected) in cases {
            let judged = Objective::ALL.map(|o| judge(&model, o, Some(&observation), now));
            assert_eq!(judged, expected, "{observation:?}");
        }
        assert_eq!(judge(&model, Objective::Availability, None, now), None);
    }

    #[test]
    fn counts_samples_and_forgets_pipelines_that_are_gone() {
        let metrics = Metrics::new("test").expect("metrics register");
        let observations = Observations::default();
        let now = Instant::now();
        let key = ("shop".to_string(), "orders".to_string());
        observations.record(
            key.clone(),
            seen(
                true,
                Lag::Known {
                    records: 500,
                    seconds: Some(1.0),
                },
                now,
            ),
        );
        let slos = vec![(key.clone(), model())];
        observations.sample(&metrics, &slos, None, now);
        observations.sample(&metrics, &slos, None, now);
        let text = metrics.render().expect("render");
        for line in [
            r#"kappa_pipeline_slo_samples_total{namespace="shop",objective="lag_records",pipeline="orders"} 2"#,
            r#"kappa_pipeline_slo_good_samples_total{namespace="shop",objective="lag_records",pipeline="orders"} 0"#,
            r#"kappa_pipeline_slo_good_samples_total{namespace="shop",objective="freshness",pipeline="orders"} 2"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        observations.sample(&metrics, &[], Some("elsewhere"), now);
        let text = metrics.render().expect("render");
        assert!(
            text.contains("pipeline=\"orders\""),
            "another namespace's sampler forgets nothing here"
        );
        observations.sample(&metrics, &[], None, now);
        let text = metrics.render().expect("render");
        assert!(!text.contains("pipeline=\"orders\""), "{text}");
    }
}
