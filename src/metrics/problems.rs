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

use super::series::{ByObject, Family};
use super::{Present, Problems};

const FAMILY: Family = Family {
    name: "kappa_object_problem",
    help: "1 while an object has a problem condition (Ready False, Degraded True), by condition type and reason",
    labels: &["controller", "namespace", "name", "condition", "reason"],
};

/// Each controller's objects' problems.
type Recorded = HashMap<&'static str, ByObject<Problems>>;

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
        let objects = recorded.entry(controller).or_default();
        if problems.is_empty() {
            objects.remove(namespace, name);
        } else {
            objects.change(namespace, name, |kept| {
                if kept != problems {
                    kept.clone_from(problems);
                }
            });
        }
    }

    /// Forgets `controller`'s objects that `present` says are gone.
    pub fn forget(&self, controller: &str, present: &Present) {
        if let Some(objects) = self.recorded().get_mut(controller) {
            objects.forget(present);
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
        for (controller, objects) in recorded.iter() {
            for (namespace, name, problems) in objects.iter() {
                for (condition, reason) in problems {
                    let values = [controller, namespace, name, condition, reason];
                    metrics.push(FAMILY.gauge(&values, 1.0));
                }
            }
        }
        vec![FAMILY.with(metrics)]
    }
}
