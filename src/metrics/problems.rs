//! `kappa_object_problem`: one series per problem condition of each
//! object, made on each scrape from what the reconciles recorded. A gauge
//! vector kept a child per series, each with its own copy of the metric's
//! description and label pairs: some 14 MB at 10,000 objects, nine in ten
//! of them failing, beside the record of each object's problems that the
//! reconciles compare against anyway.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use super::series::Family;
use super::{Present, Problems};

const FAMILY: Family = Family {
    name: "kappa_object_problem",
    help: "1 while an object has a problem condition (Ready False, Degraded True), by condition type and reason",
    labels: &["controller", "namespace", "name", "condition", "reason"],
};

/// Problems by controller, then namespace, then object name (looked up
/// without allocating a key).
type Recorded = HashMap<&'static str, BTreeMap<String, BTreeMap<String, Problems>>>;

/// Each object's problem conditions, as its last reconcile found them;
/// clones share them.
#[derive(Clone)]
pub struct ObjectProblems {
    desc: Desc,
    recorded: Arc<Mutex<Recorded>>,
}

impl ObjectProblems {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            desc: FAMILY.desc()?,
            recorded: Arc::default(),
        })
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the problem conditions of one object; none removes it.
    pub fn set(&self, controller: &'static str, namespace: &str, name: &str, problems: &Problems) {
        let mut recorded = self.recorded();
        let namespaces = recorded.entry(controller).or_default();
        if problems.is_empty() {
            if let Some(names) = namespaces.get_mut(namespace) {
                names.remove(name);
                if names.is_empty() {
                    namespaces.remove(namespace);
                }
            }
            return;
        }
        let names = match namespaces.get_mut(namespace) {
            Some(names) => names,
            None => namespaces.entry(namespace.to_string()).or_default(),
        };
        match names.get_mut(name) {
            Some(kept) if kept == problems => {}
            Some(kept) => kept.clone_from(problems),
            None => {
                names.insert(name.to_string(), problems.clone());
            }
        }
    }

    /// Forgets `controller`'s objects that `present` says are gone.
    pub fn forget(&self, controller: &str, present: &Present) {
        let mut recorded = self.recorded();
        if let Some(namespaces) = recorded.get_mut(controller) {
            for (namespace, names) in namespaces.iter_mut() {
                names.retain(|name, _| !present.gone(namespace, name));
            }
            namespaces.retain(|_, names| !names.is_empty());
        }
    }
}

impl Collector for ObjectProblems {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let recorded = self.recorded();
        let mut metrics = Vec::new();
        for (controller, namespaces) in recorded.iter() {
            for (namespace, names) in namespaces {
                for (name, problems) in names {
                    for (condition, reason) in problems {
                        let values = [controller, namespace.as_str(), name, condition, reason];
                        metrics.push(FAMILY.gauge(&values, 1.0));
                    }
                }
            }
        }
        vec![FAMILY.with(metrics)]
    }
}
