//! Building blocks of the gauges the operator makes at each scrape from
//! what its reconciles recorded (instead of a gauge vector's child per
//! series, each with its own copy of its labels and description).

use std::collections::HashMap;

use prometheus::core::Desc;
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// One gauge family: its name, help and label names.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

impl Family {
    /// The description the registry checks.
    pub fn desc(&self) -> Result<Desc, prometheus::Error> {
        Desc::new(
            self.name.to_string(),
            self.help.to_string(),
            self.labels.iter().map(|l| l.to_string()).collect(),
            HashMap::new(),
        )
    }

    /// A series of this family: `values` in the order of its label names.
    pub fn gauge(&self, values: &[&str], value: f64) -> Metric {
        let mut labels: Vec<LabelPair> = self
            .labels
            .iter()
            .zip(values)
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name(name.to_string());
                pair.set_value(value.to_string());
                pair
            })
            .collect();
        // In the names' order, as the text format is usually written.
        labels.sort_by(|a, b| a.name().cmp(b.name()));
        let mut gauge = Gauge::default();
        gauge.set_value(value);
        let mut metric = Metric::default();
        metric.set_label(labels);
        metric.set_gauge(gauge);
        metric
    }

    /// The family with `metrics` as its series.
    pub fn with(&self, metrics: Vec<Metric>) -> MetricFamily {
        let mut family = MetricFamily::default();
        family.set_name(self.name.to_string());
        family.set_help(self.help.to_string());
        family.set_field_type(MetricType::GAUGE);
        family.set_metric(metrics);
        family
    }
}
