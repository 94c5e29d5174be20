//! Service level objectives of Pipelines: the validated model of
//! `spec.slo`, the samples the operator counts (`sli`) and the Prometheus
//! rules built from them (`rules`). docs/slo.md describes all three.

pub mod budget;
pub mod manifests;
pub mod rules;
pub mod sli;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::api::pipeline::Slo;
use crate::duration::{format_duration, SpecDuration};
use crate::validation::SpecProblem;

/// The window the SRE workbook's burn-rate table is written for; the alert
/// windows of an SLO scale with its own window relative to this one.
pub const REFERENCE_WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// `slo.window` when unset.
pub const DEFAULT_WINDOW: Duration = REFERENCE_WINDOW;

/// How often lag is measured: a freshness objective below it could not be
/// told apart from the measurement's own delay.
pub const MEASURING_INTERVAL: Duration = Duration::from_secs(15);

/// The shortest alert window must span at least this much, so that `rate()`
/// over it sees several scrapes at the usual 15 to 30 s scrape intervals.
pub const SHORTEST_ALERT_WINDOW: Duration = Duration::from_secs(60);

/// Where a Pipeline's SLO rules are delivered in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Delivery {
    /// A `monitoring.coreos.com/v1` PrometheusRule, when the cluster serves that kind.
    #[value(name = "prometheusRule")]
    PrometheusRule,
    /// A ConfigMap `<pipeline>-slo-rules` holding a Prometheus rule file.
    #[value(name = "configMap")]
    ConfigMap,
    /// Both.
    Both,
    /// Neither: the samples are exported, rules are kept elsewhere
    /// (`kappa-operator slo-rules`).
    Off,
}

impl Delivery {
    /// Whether rules go into a PrometheusRule.
    pub fn prometheus_rule(self) -> bool {
        matches!(self, Self::PrometheusRule | Self::Both)
    }

    /// Whether rules go into a ConfigMap.
    pub fn config_map(self) -> bool {
        matches!(self, Self::ConfigMap | Self::Both)
    }
}

/// How the operator delivers and reads back SLOs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SloSettings {
    /// Where rules go.
    pub delivery: Delivery,
    /// Labels on the rule objects, so that a Prometheus selects them.
    pub rule_labels: BTreeMap<String, String>,
    /// Where `docs/alerts.md` is published: the alerts' default runbook.
    pub runbooks: String,
    /// Prometheus to read SLIs and error budgets from into status.
    pub prometheus_url: Option<String>,
}

impl Default for SloSettings {
    fn default() -> Self {
        Self {
            delivery: Delivery::ConfigMap,
            rule_labels: BTreeMap::new(),
            runbooks: DEFAULT_RUNBOOKS.to_string(),
            prometheus_url: None,
        }
    }
}

/// The alerts' runbook when none is configured: the runbook page in this
/// project's documentation.
pub const DEFAULT_RUNBOOKS: &str = "docs/alerts.md";

/// What an objective measures; its name is the `objective` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Objective {
    /// The oldest unread record of every input is younger than `freshness`.
    Freshness,
    /// The records behind, over all inputs, are at most `maxLagRecords`.
    LagRecords,
    /// The job runs.
    Availability,
}

impl Objective {
    /// Every objective, in the order status and rules list them.
    pub const ALL: [Objective; 3] = [
        Objective::Freshness,
        Objective::LagRecords,
        Objective::Availability,
    ];

    /// The `objective` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Freshness => "freshness",
            Self::LagRecords => "lag_records",
            Self::Availability => "availability",
        }
    }
}

/// A Pipeline's `spec.slo`, parsed and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SloModel {
    /// Share of good samples required over `window`, e.g. 0.999.
    pub target: f64,
    /// The target as written, in percent, for messages.
    pub target_percent: f64,
    /// Period the target is measured over.
    pub window: Duration,
    /// Maximum age of the oldest unread record.
    pub freshness: Option<Duration>,
    /// Maximum records behind.
    pub max_lag_records: Option<i64>,
    /// Runbook linked from the alerts, when the user named one.
    pub runbook_url: Option<String>,
}

impl SloModel {
    /// Parses `slo`, or names every field that breaks a rule.
    pub fn from_spec(slo: &Slo) -> Result<Self, Vec<SpecProblem>> {
        let mut problems = Vec::new();
        if !(slo.availability > 0.0 && slo.availability < 100.0) {
            problems.push(SpecProblem::invalid(
                "spec.slo.availability",
                format!(
                    "is {} but must be above 0 and below 100 (percent): 100 leaves no error budget to alert on",
                    slo.availability
                ),
            ));
        }
        let freshness = match slo.freshness.as_ref().map(SpecDuration::get) {
            None => None,
            Some(Err(error)) => {
                problems.push(SpecProblem::invalid(
                    "spec.slo.freshness",
                    error.to_string(),
                ));
                None
            }
            Some(Ok(freshness)) if freshness < MEASURING_INTERVAL => {
                problems.push(SpecProblem::invalid(
                    "spec.slo.freshness",
                    format!(
                        "is {} but must be at least {}: lag is measured every {}",
                        format_duration(freshness),
                        format_duration(MEASURING_INTERVAL),
                        format_duration(MEASURING_INTERVAL)
                    ),
                ));
                None
            }
            Some(Ok(freshness)) => Some(freshness),
        };
        let window = match slo.window.as_ref().map(SpecDuration::get) {
            None => DEFAULT_WINDOW,
            Some(Err(error)) => {
                problems.push(SpecProblem::invalid("spec.slo.window", error.to_string()));
                DEFAULT_WINDOW
            }
            Some(Ok(window)) => {
                let least = minimum_window();
                if window < least {
                    problems.push(SpecProblem::invalid(
                        "spec.slo.window",
                        format!(
                            "is {} but must be at least {}: the alert windows scale with it and the shortest ({} of a {} window) must span {}",
                            format_duration(window),
                            format_days(least),
                            format_duration(rules::BURN_RATES[0].short),
                            format_days(REFERENCE_WINDOW),
                            format_duration(SHORTEST_ALERT_WINDOW)
                        ),
                    ));
                }
                window
            }
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            target: slo.availability / 100.0,
            target_percent: slo.availability,
            window,
            freshness,
            max_lag_records: slo.max_lag_records,
            runbook_url: slo.runbook_url.clone(),
        })
    }

    /// The objectives this SLO has: availability always, the lag ones when set.
    pub fn objectives(&self) -> Vec<Objective> {
        Objective::ALL
            .into_iter()
            .filter(|objective| match objective {
                Objective::Freshness => self.freshness.is_some(),
                Objective::LagRecords => self.max_lag_records.is_some(),
                Objective::Availability => true,
            })
            .collect()
    }

    /// The share of samples allowed to be bad, e.g. 0.001.
    pub fn error_budget(&self) -> f64 {
        (100.0 - self.target_percent) / 100.0
    }

    /// `window` scaled the way the alert windows are: `base` is a window
    /// of the reference table, for a 30-day SLO.
    pub fn scaled(&self, base: Duration) -> Duration {
        let seconds =
            base.as_secs_f64() * self.window.as_secs_f64() / REFERENCE_WINDOW.as_secs_f64();
        Duration::from_secs(seconds.round().max(1.0) as u64)
    }

    /// The objectives in words, e.g. `freshness<=30s, availability; 99.9% over 30d`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .objectives()
            .into_iter()
            .map(|objective| match objective {
                Objective::Freshness => format!(
                    "freshness<={}",
                    format_duration(self.freshness.unwrap_or_default())
                ),
                Objective::LagRecords => {
                    format!("lag<={} records", self.max_lag_records.unwrap_or_default())
                }
                Objective::Availability => "running".to_string(),
            })
            .collect();
        format!(
            "{}; {}% over {}",
            parts.join(", "),
            self.target_percent,
            format_days(self.window)
        )
    }
}

/// The shortest `slo.window` whose shortest alert window spans
/// [`SHORTEST_ALERT_WINDOW`].
fn minimum_window() -> Duration {
    let shortest = rules::BURN_RATES
        .iter()
        .map(|rate| rate.short)
        .min()
        .unwrap_or(SHORTEST_ALERT_WINDOW);
    let ratio = SHORTEST_ALERT_WINDOW.as_secs_f64() / shortest.as_secs_f64();
    Duration::from_secs((REFERENCE_WINDOW.as_secs_f64() * ratio).ceil() as u64)
}

/// A window in days when it is whole days (`30d`), else as `1h2m3s`.
fn format_days(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds > 0 && seconds.is_multiple_of(86_400) {
        format!("{}d", seconds / 86_400)
    } else {
        format_duration(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slo(value: serde_json::Value) -> Slo {
        serde_json::from_value(value).expect("test SLO deserializes")
    }

    #[test]
    fn defaults_to_availability_over_thirty_days() {
        let model = SloModel::from_spec(&slo(json!({}))).expect("valid");
        assert_eq!(model.window, DEFAULT_WINDOW);
        assert_eq!(model.objectives(), vec![Objective::Availability]);
        assert_eq!(model.summary(), "running; 99% over 30d");
        assert!((model.error_budget() - 0.01).abs() < 1e-12);
    }

    #[test]
    fn names_every_field_it_refuses() {
        let problems = SloModel::from_spec(&slo(json!({
            "availability": 100.0, "freshness": "10s", "window": "1d"
        })))
        .expect_err("refused");
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.slo.availability",
                "spec.slo.freshness",
                "spec.slo.window"
            ]
        );
        assert!(problems[1].message.contains("at least 15s"), "{problems:?}");
        assert!(problems[2].message.contains("at least 6d"), "{problems:?}");
        assert!(SloModel::from_spec(&slo(json!({"availability": 0.0}))).is_err());
    }

    #[test]
    fn windows_scale_with_the_slo_window() {
        let model =
            SloModel::from_spec(&slo(json!({"window": "6d", "freshness": "30s"}))).expect("valid");
        assert_eq!(
            model.scaled(Duration::from_secs(3600)),
            Duration::from_secs(720)
        );
        assert_eq!(
            model.scaled(Duration::from_secs(300)),
            Duration::from_secs(60)
        );
        assert_eq!(
            model.objectives(),
            vec![Objective::Freshness, Objective::Availability]
        );
        assert_eq!(model.summary(), "freshness<=30s, running; 99% over 6d");
    }
}
