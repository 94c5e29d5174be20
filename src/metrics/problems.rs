//! `kappa_object_problem`: one series per problem condition of each
//! object, made on each scrape from what the reconciles recorded. A gauge
//! vector kept a child per series, each with its own copy of the metric's
//! description and label pairs: some 14 MB at 10,000 objects, nine in ten
//! of them failing, beside the record of each object's problems that the
//! reconciles compare against anyway.

use std::collections::HashMap;
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

/// (controller, namespace, name) of an object.
type Key = (String, String, String);

/// Each object's problem conditions, as its last reconcile found them;
/// clones share them.
#[derive(Clone)]
pub struct ObjectProblems {
    desc: Desc,
    recorded: Arc<Mutex<HashMap<Key, Problems>>>,
}

impl ObjectProblems {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            desc: FAMILY.desc()?,
            recorded: Arc::default(),
        })
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Problems>> {
        self.recorded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the problem conditions of one object; none removes it.
    pub fn set(&self, controller: &str, namespace: &str, name: &str, problems: &Problems) {
        let mut recorded = self.recorded();
        let key = (
            controller.to_string(),
            namespace.to_string(),
            name.to_string(),
        );
        if problems.is_empty() {
            recorded.remove(&key);
        } else if recorded.get(&key) != Some(problems) {
            recorded.insert(key, problems.clone());
        }
    }

    /// Forgets `controller`'s objects that `present` says are gone.
    pub fn forget(&self, controller: &str, present: &Present) {
        self.recorded()
            .retain(|(c, namespace, name), _| c != controller || !present.gone(namespace, name));
    }
}

impl Collector for ObjectProblems {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let recorded = self.recorded();
        let mut metrics = Vec::new();
        for ((controller, namespace, name), problems) in recorded.iter() {
            for (condition, reason) in problems {
                let values = [controller, namespace, name, condition, reason].map(String::as_str);
                metrics.push(FAMILY.gauge(&values, 1.0));
            }
        }
        vec![FAMILY.with(metrics)]
    }
}
