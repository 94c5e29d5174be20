//! The admission decision: which `kappa.dev` objects the webhook refuses,
//! and why, in the words of the status conditions.
//!
//! An object is judged by what it says itself (references to other objects
//! are left to the reconcile, which reports them as conditions) and, on an
//! update, against the object it replaces. An update that leaves the spec
//! as it was (a finalizer or label change, a deletion in progress) is never
//! refused, so an object stored before a rule existed can still be deleted.

use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use kube::core::DynamicObject;
use serde::de::DeserializeOwned;

use crate::api::backfill::Backfill;
use crate::api::kafka_cluster_set::KafkaClusterSet;
use crate::api::pipeline::Pipeline;
use crate::api::savepoint::Savepoint;
use crate::controller::{backfill, kafka_cluster_set, pipeline, savepoint};
use crate::validation::{Referenced, SpecProblem, Verdict};

/// HTTP status of a refusal, as the API server's own validation answers.
const UNPROCESSABLE: u16 = 422;

/// The answer to one admission request.
pub fn review(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let kind = &request.kind.kind;
    let name = request.name.as_str();
    let refusal = match refusals(request) {
        Ok(problems) => match Verdict::from_problems(problems) {
            Verdict::Valid => return response,
            invalid => invalid.message(),
        },
        Err(unreadable) => unreadable,
    };
    let mut denied = response.deny(format!("{kind} `{name}` is refused: {refusal}"));
    denied.result.code = UNPROCESSABLE;
    denied.result.reason = "Invalid".into();
    denied
}

/// What is wrong with the request's object; `Err` when it cannot be read.
fn refusals(request: &AdmissionRequest<DynamicObject>) -> Result<Vec<SpecProblem>, String> {
    let Some(object) = &request.object else {
        return Ok(Vec::new());
    };
    let old = request.old_object.as_ref();
    let unchanged = old.is_some_and(|old| old.data.get("spec") == object.data.get("spec"));
    if unchanged || object.metadata.deletion_timestamp.is_some() {
        return Ok(Vec::new());
    }
    let name = object
        .metadata
        .name
        .as_deref()
        .or(object.metadata.generate_name.as_deref())
        .unwrap_or_default();
    match request.kind.kind.as_str() {
        "KafkaClusterSet" => judge(
            object,
            old,
            |new: &KafkaClusterSet| kafka_cluster_set::validate::validate(&new.spec),
            |new, old| {
                kafka_cluster_set::validate::check_update(&new.spec, &old.spec, old.status.as_ref())
            },
        ),
        "Pipeline" => judge(
            object,
            None,
            |new: &Pipeline| {
                let refs = pipeline::validate::PipelineRefs {
                    cluster_set: Referenced::Unchecked,
                    restore_savepoint: None,
                };
                pipeline::validate::validate(name, &new.spec, &refs)
            },
            |_, _| Vec::new(),
        ),
        "Backfill" => judge(
            object,
            old,
            |new: &Backfill| {
                let refs = backfill::validate::BackfillRefs {
                    pipeline: Referenced::Unchecked,
                    start_savepoint: Some(Referenced::Unchecked),
                };
                backfill::validate::validate(name, &new.spec, &refs)
            },
            |new, old| backfill::validate::check_update(&new.spec, &old.spec, old.status.as_ref()),
        ),
        "Savepoint" => judge(
            object,
            old,
            |new: &Savepoint| savepoint::validate::validate(&new.spec, &Referenced::Unchecked),
            |new, old| savepoint::validate::check_update(&new.spec, &old.spec),
        ),
        // Only the four kinds are registered; anything else is not ours to judge.
        _ => Ok(Vec::new()),
    }
}

/// The problems `rules` finds in `object` read as `K`, and those `update`
/// finds in the change from `old` (when it reads as `K`: one stored under
/// an older schema is judged without the update rules).
fn judge<K: DeserializeOwned>(
    object: &DynamicObject,
    old: Option<&DynamicObject>,
    rules: impl Fn(&K) -> Vec<SpecProblem>,
    update: impl Fn(&K, &K) -> Vec<SpecProblem>,
) -> Result<Vec<SpecProblem>, String> {
    let new: K = read(object)?;
    let mut problems = rules(&new);
    if let Some(old) = old.and_then(|o| read::<K>(o).ok()) {
        problems.extend(update(&new, &old));
    }
    Ok(problems)
}

/// The object as its kind, or which field does not read.
fn read<K: DeserializeOwned>(object: &DynamicObject) -> Result<K, String> {
    let value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize(value).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::admission::AdmissionReview;
    use serde_json::{json, Value};

    /// An admission request as the API server sends it.
    fn request(kind: &str, object: Value, old: Option<Value>) -> AdmissionRequest<DynamicObject> {
        let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
        let plural = format!("{}s", kind.to_lowercase());
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "3f1c", "kind": {"group": "kappa.dev", "version": "v1alpha1", "kind": kind},
                "resource": {"group": "kappa.dev", "version": "v1alpha1", "resource": plural},
                "name": object["metadata"]["name"], "namespace": "team", "operation": operation,
                "userInfo": {"username": "alice"}, "object": object, "oldObject": old,
                "dryRun": false
            }
        }))
        .expect("review deserializes");
        review.try_into().expect("review has a request")
    }

    fn set(clusters: Value, streams: Value) -> Value {
        json!({"apiVersion": "kappa.dev/v1alpha1", "kind": "KafkaClusterSet",
               "metadata": {"name": "events", "namespace": "team"},
               "spec": {"template": {"provider": "builtin"}, "clusters": clusters, "streams": streams,
                        "routing": {"writeCluster": "blue"}}})
    }

    fn verdict(request: &AdmissionRequest<DynamicObject>) -> (bool, String) {
        let response = review(request);
        (response.allowed, response.result.message)
    }

    #[test]
    fn an_invalid_object_is_refused_naming_the_field_and_a_valid_one_passes() {
        let duplicated = set(
            json!([{"name": "blue"}, {"name": "blue"}]),
            json!([{"name": "orders", "partitions": 3}]),
        );
        let (allowed, message) = verdict(&request("KafkaClusterSet", duplicated, None));
        assert!(!allowed);
        assert!(
            message.starts_with("KafkaClusterSet `events` is refused: "),
            "{message}"
        );
        assert!(message.contains("spec.clusters[1].name"), "{message}");

        let fine = set(
            json!([{"name": "blue"}]),
            json!([{"name": "orders", "partitions": 3}]),
        );
        assert_eq!(
            verdict(&request("KafkaClusterSet", fine, None)),
            (true, String::new())
        );
    }

    #[test]
    fn references_are_left_to_the_reconcile() {
        let savepoint = json!({"apiVersion": "kappa.dev/v1alpha1", "kind": "Savepoint",
            "metadata": {"name": "s1", "namespace": "team"},
            "spec": {"pipelineRef": "nowhere", "type": "flink"}});
        assert!(verdict(&request("Savepoint", savepoint, None)).0);
    }

    #[test]
    fn an_unreadable_object_is_refused_with_its_path() {
        let savepoint = json!({"apiVersion": "kappa.dev/v1alpha1", "kind": "Savepoint",
            "metadata": {"name": "s1", "namespace": "team"},
            "spec": {"pipelineRef": "p", "type": "flink", "backoffLimit": "many"}});
        let (allowed, message) = verdict(&request("Savepoint", savepoint, None));
        assert!(!allowed);
        assert!(message.contains("spec.backoffLimit"), "{message}");
    }

    #[test]
    fn a_recorded_cluster_keeps_its_settings_and_streams_keep_their_partitions() {
        let old = set(
            json!([{"name": "blue"}]),
            json!([{"name": "orders", "partitions": 6}]),
        );
        let spec: KafkaClusterSet = serde_json::from_value(old.clone()).expect("set");
        let settings =
            crate::api::kafka_cluster_set::ClusterSettings::of(&spec.spec, &spec.spec.clusters[0]);
        let mut old = old;
        old["status"] = json!({"clusters": [{"name": "blue", "specHash": settings.hash()}]});
        let new = set(
            json!([{"name": "blue", "overrides": {"builtin": {"nodes": 5}}}]),
            json!([{"name": "orders", "partitions": 3}]),
        );
        let (allowed, message) = verdict(&request("KafkaClusterSet", new, Some(old)));
        assert!(!allowed);
        assert!(
            message.contains("spec.clusters[0]: the settings of cluster `blue` changed"),
            "{message}"
        );
        assert!(
            message.contains("spec.streams[0].partitions: cannot go down from 6 to 3"),
            "{message}"
        );
    }

    fn backfill(to: &str, phase: Option<&str>) -> Value {
        let mut object = json!({"apiVersion": "kappa.dev/v1alpha1", "kind": "Backfill",
            "metadata": {"name": "history", "namespace": "team"},
            "spec": {"pipelineRef": "totals", "from": "2026-01-01T00:00:00Z", "to": to}});
        if let Some(phase) = phase {
            object["status"] = json!({"phase": phase});
        }
        object
    }

    #[test]
    fn a_started_backfill_keeps_its_range_and_a_pending_one_may_change() {
        let old = backfill("2026-02-01T00:00:00Z", Some("Replaying"));
        let new = backfill("2026-03-01T00:00:00Z", None);
        let (allowed, message) = verdict(&request("Backfill", new.clone(), Some(old)));
        assert!(!allowed);
        assert!(
            message.contains("spec.to: cannot change once the run has started (it is Replaying)"),
            "{message}"
        );

        let pending = backfill("2026-02-01T00:00:00Z", Some("Pending"));
        assert!(verdict(&request("Backfill", new, Some(pending))).0);
    }

    #[test]
    fn a_savepoint_keeps_what_it_snapshots_but_not_its_clean_up() {
        let savepoint = |dir: &str, dispose: bool| {
            json!({"apiVersion": "kappa.dev/v1alpha1", "kind": "Savepoint",
                "metadata": {"name": "s1", "namespace": "team"},
                "spec": {"pipelineRef": "p", "type": "flink", "targetDirectory": dir,
                         "disposeOnDelete": dispose}})
        };
        let moved = request(
            "Savepoint",
            savepoint("s3://b", false),
            Some(savepoint("s3://a", false)),
        );
        let (allowed, message) = verdict(&moved);
        assert!(!allowed);
        assert!(
            message.contains("spec.targetDirectory: cannot change"),
            "{message}"
        );
        let disposed = request(
            "Savepoint",
            savepoint("s3://a", true),
            Some(savepoint("s3://a", false)),
        );
        assert!(verdict(&disposed).0);
    }

    #[test]
    fn an_unchanged_spec_passes_even_when_invalid_so_deletion_finishes() {
        let invalid = set(
            json!([{"name": "blue"}, {"name": "blue"}]),
            json!([{"name": "orders", "partitions": 3}]),
        );
        let mut finalized = invalid.clone();
        finalized["metadata"]["finalizers"] = json!([]);
        assert!(verdict(&request("KafkaClusterSet", finalized, Some(invalid))).0);
    }
}
