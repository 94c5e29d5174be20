//! Error budgets read back from Prometheus: each objective's SLI over the
//! SLO's window and the share of its error budget left, for `status.slo`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;

use super::rules::{GOOD_SAMPLES, SAMPLES};
use super::sli::PipelineKey;
use super::SloModel;
use crate::duration::format_duration;

/// How often a Pipeline's budget is read: status changes at most this often.
pub const READ_EVERY: Duration = Duration::from_secs(60);

/// Why Prometheus gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request failed or the answer was not Prometheus's JSON.
    #[error("Prometheus query failed: {0}")]
    Http(#[from] reqwest::Error),
    /// Prometheus refused the query.
    #[error("Prometheus refused the query: {0}")]
    Refused(String),
}

/// The series of an instant query: each one's labels and value.
pub type Vector = Vec<(BTreeMap<String, String>, f64)>;

/// Each objective's budget, by objective name.
pub type ObjectiveBudgets = BTreeMap<String, Budget>;

/// Instant queries to Prometheus.
pub trait PrometheusApi: Send + Sync {
    /// The series of `expr` now: each one's labels and value.
    fn query<'a>(&'a self, expr: &'a str) -> BoxFuture<'a, Result<Vector, QueryError>>;
}

/// [`PrometheusApi`] over Prometheus's HTTP API.
pub struct HttpPrometheus {
    url: String,
    http: reqwest::Client,
}

impl HttpPrometheus {
    /// Prometheus at `url`, e.g. `http://prometheus:9090`.
    pub fn new(url: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            url: url.trim_end_matches('/').to_string(),
            http,
        }
    }
}

#[derive(serde::Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<AnswerData>,
}

#[derive(serde::Deserialize)]
struct AnswerData {
    result: Vec<Sample>,
}

#[derive(serde::Deserialize)]
struct Sample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

impl PrometheusApi for HttpPrometheus {
    fn query<'a>(&'a self, expr: &'a str) -> BoxFuture<'a, Result<Vector, QueryError>> {
        async move {
            let answer: Answer = self
                .http
                .get(format!("{}/api/v1/query", self.url))
                .query(&[("query", expr)])
                .send()
                .await?
                .json()
                .await?;
            if answer.status != "success" {
                return Err(QueryError::Refused(answer.error.unwrap_or(answer.status)));
            }
            Ok(answer
                .data
                .map(|d| d.result)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|s| Some((s.metric, s.value.1.parse().ok()?)))
                .collect())
        }
        .boxed()
    }
}

/// One objective's SLI and budget left over the window, in percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Share of good samples.
    pub sli_percent: f64,
    /// Share of the error budget not spent (negative when overspent).
    pub left_percent: f64,
}

/// The query of every objective's share of good samples over the window.
pub fn sli_query(namespace: &str, pipeline: &str, model: &SloModel) -> String {
    let selector = format!("{{namespace=\"{namespace}\",pipeline=\"{pipeline}\"}}");
    let window = format_duration(model.window);
    format!(
        "sum by (objective) (increase({GOOD_SAMPLES}{selector}[{window}])) / sum by (objective) (increase({SAMPLES}{selector}[{window}]))"
    )
}

/// The budget left when `sli` (a share, 0 to 1) of the samples were good.
pub fn budget(model: &SloModel, sli: f64) -> Budget {
    let spent = (1.0 - sli) / model.error_budget();
    Budget {
        sli_percent: round(sli * 100.0),
        left_percent: round((1.0 - spent) * 100.0),
    }
}

/// Two decimals: finer figures would change status at every read.
fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The budgets last read per Pipeline, and when.
#[derive(Default)]
pub struct Budgets(Mutex<HashMap<PipelineKey, (Instant, ObjectiveBudgets)>>);

impl Budgets {
    /// Each objective's budget, read from `prometheus` when the last read of
    /// this pipeline is older than [`READ_EVERY`], else as last read.
    pub async fn of(
        &self,
        prometheus: &dyn PrometheusApi,
        key: &PipelineKey,
        model: &SloModel,
    ) -> ObjectiveBudgets {
        let cached = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key)
            .cloned();
        if let Some((at, budgets)) = &cached {
            if at.elapsed() < READ_EVERY {
                return budgets.clone();
            }
        }
        let read = match prometheus.query(&sli_query(&key.0, &key.1, model)).await {
            Ok(series) => series
                .into_iter()
                .filter(|(_, sli)| sli.is_finite())
                .filter_map(|(labels, sli)| {
                    Some((labels.get("objective")?.clone(), budget(model, sli)))
                })
                .collect(),
            Err(error) => {
                tracing::warn!(namespace = %key.0, pipeline = %key.1, %error, "error budget unknown");
                cached.map(|(_, budgets)| budgets).unwrap_or_default()
            }
        };
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key.clone(), (Instant::now(), read.clone()));
        read
    }

    /// Forgets the pipelines not in `present`.
    pub fn retain(&self, present: &std::collections::BTreeSet<PipelineKey>) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|key, _| present.contains(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pipeline::Slo;
    use serde_json::json;

    fn model() -> SloModel {
        let slo: Slo = serde_json::from_value(json!({"availability": 99.0, "window": "7d"}))
            .expect("test SLO deserializes");
        SloModel::from_spec(&slo).expect("valid")
    }

    #[test]
    fn the_budget_left_is_what_the_bad_samples_did_not_spend() {
        assert_eq!(
            budget(&model(), 1.0),
            Budget {
                sli_percent: 100.0,
                left_percent: 100.0
            }
        );
        assert_eq!(
            budget(&model(), 0.9975),
            Budget {
                sli_percent: 99.75,
                left_percent: 75.0
            }
        );
        assert_eq!(budget(&model(), 0.97).left_percent, -200.0);
    }

    #[test]
    fn the_query_covers_the_window() {
        assert_eq!(
            sli_query("shop", "orders", &model()),
            "sum by (objective) (increase(kappa_pipeline_slo_good_samples_total{namespace=\"shop\",pipeline=\"orders\"}[168h])) \
/ sum by (objective) (increase(kappa_pipeline_slo_samples_total{namespace=\"shop\",pipeline=\"orders\"}[168h]))"
        );
    }
}
