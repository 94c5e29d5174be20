//! Building blocks of the gauges the operator makes at each scrape from
//! what its reconciles recorded (instead of a gauge vector's child per
//! series, each with its own copy of its labels and description).

use std::collections::{BTreeMap, HashMap};

use prometheus::core::Desc;
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};

use super::Present;

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

/// A value per object, by namespace then name: looked up without building
/// a key, so a reconcile that changes nothing allocates nothing.
#[derive(Debug)]
pub struct ByObject<T>(BTreeMap<String, BTreeMap<String, T>>);

impl<T> Default for ByObject<T> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<T> ByObject<T> {
    /// Changes the value of `namespace`/`name` (a default one if it had none).
    pub fn change<R>(&mut self, namespace: &str, name: &str, change: impl FnOnce(&mut T) -> R) -> R
    where
        T: Default,
    {
        let names = match self.0.get_mut(namespace) {
            Some(names) => names,
            None => self.0.entry(namespace.to_string()).or_default(),
        };
        match names.get_mut(name) {
            Some(value) => change(value),
            None => change(names.entry(name.to_string()).or_default()),
        }
    }

    /// Forgets the value of `namespace`/`name`.
    pub fn remove(&mut self, namespace: &str, name: &str) {
        if let Some(names) = self.0.get_mut(namespace) {
            names.remove(name);
            if names.is_empty() {
                self.0.remove(namespace);
            }
        }
    }

    /// Forgets the objects that `present` says are gone.
    pub fn forget(&mut self, present: &Present) {
        for (namespace, names) in self.0.iter_mut() {
            names.retain(|name, _| !present.gone(namespace, name));
        }
        self.0.retain(|_, names| !names.is_empty());
    }

    /// (namespace, name, value) of every object, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &T)> {
        self.0.iter().flat_map(|(namespace, names)| {
            names
                .iter()
                .map(move |(name, value)| (namespace.as_str(), name.as_str(), value))
        })
    }
}
