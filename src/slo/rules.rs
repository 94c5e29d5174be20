//! Prometheus rules from a Pipeline's SLO: recording rules of the error
//! ratio over every window the alerts need, and the multi-window,
//! multi-burn-rate alerts of the SRE workbook (chapter "Alerting on SLOs"),
//! with windows scaled to the SLO's own window.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SloModel;
use crate::duration::format_duration;

/// A Prometheus rule file: what `--config.file`'s `rule_files` load, and
/// the `spec` of a PrometheusRule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleFile {
    /// Rule groups, each evaluated in order.
    pub groups: Vec<RuleGroup>,
}

/// A group of rules evaluated together, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleGroup {
    /// Unique within the file.
    pub name: String,
    /// The rules, recording rules before the alerts that read them.
    pub rules: Vec<Rule>,
}

/// One recording or alerting rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Name of the series a recording rule writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// Name of the alert an alerting rule raises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    /// The PromQL expression.
    pub expr: String,
    /// How long the expression must hold before the alert fires.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    /// Labels added to the series or alert.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of an alert.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Who is told when an alert fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Wake someone: the budget goes within days.
    Page,
    /// Look at it during working hours.
    Ticket,
}

impl Severity {
    /// The `severity` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Page => "page",
            Self::Ticket => "ticket",
        }
    }
}

/// One row of the burn-rate table, for a 30-day SLO: alert when the error
/// ratio exceeds `factor` times the budget over both windows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnRate {
    /// Who is told.
    pub severity: Severity,
    /// Multiple of the error budget.
    pub factor: f64,
    /// The long window: the burn is real.
    pub long: Duration,
    /// The short window: it is still going on.
    pub short: Duration,
}

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;

/// The SRE workbook's table: 2% of a 30-day budget in an hour, 5% in six
/// hours (page), 10% in a day and 10% in three days (ticket).
pub const BURN_RATES: [BurnRate; 4] = [
    BurnRate {
        severity: Severity::Page,
        factor: 14.4,
        long: Duration::from_secs(HOUR),
        short: Duration::from_secs(5 * MINUTE),
    },
    BurnRate {
        severity: Severity::Page,
        factor: 6.0,
        long: Duration::from_secs(6 * HOUR),
        short: Duration::from_secs(30 * MINUTE),
    },
    BurnRate {
        severity: Severity::Ticket,
        factor: 3.0,
        long: Duration::from_secs(24 * HOUR),
        short: Duration::from_secs(2 * HOUR),
    },
    BurnRate {
        severity: Severity::Ticket,
        factor: 1.0,
        long: Duration::from_secs(72 * HOUR),
        short: Duration::from_secs(6 * HOUR),
    },
];

/// Name of the alert every pipeline SLO raises (one per objective and severity).
pub const ALERT: &str = "KappaPipelineSLOBurn";

/// The counter of samples, by namespace, pipeline and objective.
pub const SAMPLES: &str = "kappa_pipeline_slo_samples_total";
/// The counter of good samples.
pub const GOOD_SAMPLES: &str = "kappa_pipeline_slo_good_samples_total";

/// Name of the recording rule of the error ratio over `window`.
pub fn error_ratio_record(window: Duration) -> String {
    format!(
        "kappa_pipeline:slo_errors:ratio_rate{}",
        format_duration(window)
    )
}

/// The rule group of one Pipeline's SLO. `runbooks` is where
/// `docs/alerts.md` is published; a runbook named in the spec wins.
pub fn pipeline_rules(
    namespace: &str,
    pipeline: &str,
    model: &SloModel,
    runbooks: &str,
) -> RuleGroup {
    let selector = format!("{{namespace=\"{namespace}\",pipeline=\"{pipeline}\"}}");
    let mut windows: Vec<Duration> = BURN_RATES
        .iter()
        .flat_map(|rate| [model.scaled(rate.long), model.scaled(rate.short)])
        .collect();
    windows.sort();
    windows.dedup();
    let mut rules: Vec<Rule> = windows
        .iter()
        .map(|&window| {
            let range = format_duration(window);
            let by = "sum by (namespace, pipeline, objective)";
            Rule {
                record: Some(error_ratio_record(window)),
                alert: None,
                expr: format!(
                    "1 - {by} (rate({GOOD_SAMPLES}{selector}[{range}])) / {by} (rate({SAMPLES}{selector}[{range}]))"
                ),
                for_: None,
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
            }
        })
        .collect();
    let runbook = model
        .runbook_url
        .clone()
        .unwrap_or_else(|| format!("{runbooks}#{}", ALERT.to_lowercase()));
    for severity in [Severity::Page, Severity::Ticket] {
        let pairs: Vec<String> = BURN_RATES
            .iter()
            .filter(|rate| rate.severity == severity)
            .map(|rate| {
                let threshold = number(rate.factor * model.error_budget());
                format!(
                    "({long}{selector} > {threshold} and {short}{selector} > {threshold})",
                    long = error_ratio_record(model.scaled(rate.long)),
                    short = error_ratio_record(model.scaled(rate.short)),
                )
            })
            .collect();
        let windows: Vec<String> = BURN_RATES
            .iter()
            .filter(|rate| rate.severity == severity)
            .map(|rate| {
                format!(
                    "{}x over {} and {}",
                    number(rate.factor),
                    format_duration(model.scaled(rate.long)),
                    format_duration(model.scaled(rate.short))
                )
            })
            .collect();
        let speed = match severity {
            Severity::Page => "fast",
            Severity::Ticket => "steadily",
        };
        rules.push(Rule {
            record: None,
            alert: Some(ALERT.to_string()),
            expr: pairs.join(" or "),
            for_: None,
            labels: BTreeMap::from([("severity".to_string(), severity.as_str().to_string())]),
            annotations: BTreeMap::from([
                (
                    "summary".to_string(),
                    format!(
                        "Pipeline {namespace}/{pipeline} burns its {{{{ $labels.objective }}}} error budget {speed}"
                    ),
                ),
                (
                    "description".to_string(),
                    format!(
                        "{{{{ $value | humanizePercentage }}}} of the {{{{ $labels.objective }}}} samples of Pipeline {namespace}/{pipeline} were bad over the alert's long window; its SLO allows {}% over {} ({} budget burn: {}).",
                        number(model.error_budget() * 100.0),
                        super::format_days(model.window),
                        severity.as_str(),
                        windows.join(", or ")
                    ),
                ),
                ("runbook_url".to_string(), runbook.clone()),
            ]),
        });
    }
    RuleGroup {
        name: group_name(namespace, pipeline),
        rules,
    }
}

/// The name of a Pipeline's rule group, unique over namespaces.
pub fn group_name(namespace: &str, pipeline: &str) -> String {
    format!("kappa-slo-{namespace}-{pipeline}")
}

/// A threshold as PromQL reads it, without binary noise (`0.0144`, not
/// `0.014400000000000001`).
fn number(value: f64) -> String {
    let text = format!("{value:.9}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pipeline::Slo;
    use serde_json::json;

    fn model(value: serde_json::Value) -> SloModel {
        let slo: Slo = serde_json::from_value(value).expect("test SLO deserializes");
        SloModel::from_spec(&slo).expect("valid SLO")
    }

    #[test]
    fn a_thirty_day_slo_gets_the_workbook_windows() {
        let group = pipeline_rules(
            "shop",
            "orders",
            &model(json!({"availability": 99.9, "freshness": "30s"})),
            "docs/alerts.md",
        );
        assert_eq!(group.name, "kappa-slo-shop-orders");
        let records: Vec<&str> = group
            .rules
            .iter()
            .filter_map(|r| r.record.as_deref())
            .collect();
        assert_eq!(
            records,
            [
                "kappa_pipeline:slo_errors:ratio_rate5m",
                "kappa_pipeline:slo_errors:ratio_rate30m",
                "kappa_pipeline:slo_errors:ratio_rate1h",
                "kappa_pipeline:slo_errors:ratio_rate2h",
                "kappa_pipeline:slo_errors:ratio_rate6h",
                "kappa_pipeline:slo_errors:ratio_rate24h",
                "kappa_pipeline:slo_errors:ratio_rate72h",
            ]
        );
        let alerts: Vec<&Rule> = group.rules.iter().filter(|r| r.alert.is_some()).collect();
        assert_eq!(alerts.len(), 2);
        assert_eq!(
            alerts[0].expr,
            "(kappa_pipeline:slo_errors:ratio_rate1h{namespace=\"shop\",pipeline=\"orders\"} > 0.0144 \
and kappa_pipeline:slo_errors:ratio_rate5m{namespace=\"shop\",pipeline=\"orders\"} > 0.0144) \
or (kappa_pipeline:slo_errors:ratio_rate6h{namespace=\"shop\",pipeline=\"orders\"} > 0.006 \
and kappa_pipeline:slo_errors:ratio_rate30m{namespace=\"shop\",pipeline=\"orders\"} > 0.006)"
        );
        assert_eq!(alerts[0].labels["severity"], "page");
        assert_eq!(alerts[1].labels["severity"], "ticket");
        assert_eq!(
            alerts[1].annotations["runbook_url"],
            "docs/alerts.md#kappapipelinesloburn"
        );
        assert!(
            alerts[1].annotations["description"].contains("allows 0.1% over 30d"),
            "{:?}",
            alerts[1].annotations
        );
    }

    #[test]
    fn windows_scale_and_a_runbook_in_the_spec_wins() {
        let group = pipeline_rules(
            "shop",
            "orders",
            &model(json!({"window": "6d", "runbookUrl": "https://wiki/orders"})),
            "docs/alerts.md",
        );
        let first = &group.rules[0];
        assert_eq!(
            first.expr,
            "1 - sum by (namespace, pipeline, objective) (rate(kappa_pipeline_slo_good_samples_total{namespace=\"shop\",pipeline=\"orders\"}[1m])) \
/ sum by (namespace, pipeline, objective) (rate(kappa_pipeline_slo_samples_total{namespace=\"shop\",pipeline=\"orders\"}[1m]))"
        );
        let page = group
            .rules
            .iter()
            .find(|r| r.alert.is_some())
            .expect("page alert");
        assert!(page.expr.contains("ratio_rate12m"), "{}", page.expr);
        assert!(page.expr.contains("> 0.144 "), "{}", page.expr);
        assert_eq!(page.annotations["runbook_url"], "https://wiki/orders");
    }
}
