//! The objects tests create: valid bases, mutations, and the checks shared by
//! the out-of-cluster and in-cluster operator tests.

use std::time::Duration;

use serde_json::{json, Value};

use super::{create, kappa_api, repo, wait_for_ready, yaml_documents, Testbed};

/// The semantic verdict must arrive within this long of creating an object.
pub const VERDICT_WITHIN: Duration = Duration::from_secs(5);

pub fn kcs(spec: Value) -> Value {
    json!({"apiVersion": "kappa.dev/v1alpha1", "kind": "KafkaClusterSet", "metadata": {"name": "events"}, "spec": spec})
}

pub fn valid_kcs_spec() -> Value {
    json!({
        "template": {"provider": "external", "external": {"bootstrapServers": ["kafka:9092"]}},
        "clusters": [{"name": "blue"}],
        "streams": [{"name": "orders"}, {"name": "totals"}],
        "routing": {"writeCluster": "blue"}
    })
}

pub fn pipeline(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "kappa.dev/v1alpha1", "kind": "Pipeline", "metadata": {"name": name}, "spec": spec})
}

pub fn valid_pipeline_spec() -> Value {
    json!({
        "clusterSet": "events",
        "inputs": [{"stream": "orders"}],
        "outputs": [{"stream": "totals"}],
        "engine": {"type": "flink", "flink": {"mode": "session", "sessionUrl": "http://flink:8081", "jarUri": "https://x/job.jar"}}
    })
}

pub fn savepoint(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "kappa.dev/v1alpha1", "kind": "Savepoint", "metadata": {"name": name}, "spec": spec})
}

pub fn backfill(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "kappa.dev/v1alpha1", "kind": "Backfill", "metadata": {"name": name}, "spec": spec})
}

pub fn valid_backfill_spec() -> Value {
    json!({"pipelineRef": "job", "from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"})
}

/// `base` with the JSON pointer `path` set to `value` (or removed when `value` is null).
pub fn with(mut base: Value, path: &str, value: Value) -> Value {
    let (parent, key) = path.rsplit_once('/').expect("path has a parent");
    let target = base.pointer_mut(parent).expect("parent exists");
    match (target, value) {
        (Value::Object(map), Value::Null) => {
            map.remove(key);
        }
        (Value::Object(map), value) => {
            map.insert(key.to_string(), value);
        }
        (Value::Array(items), value) => items[key.parse::<usize>().expect("index")] = value,
        _ => panic!("cannot set {path}"),
    }
    base
}

pub fn semantic_cases() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    let consumer =
        json!({"type": "consumer", "consumer": {"template": {"spec": {"containers": "app"}}}});
    vec![
        (
            "a write cluster not in the set",
            kcs(with(
                valid_kcs_spec(),
                "/routing/writeCluster",
                json!("red"),
            )),
            "InvalidSpec",
            "spec.routing.writeCluster",
        ),
        (
            "two streams on one topic",
            kcs(with(
                valid_kcs_spec(),
                "/streams",
                json!([{"name": "a", "topic": "t"}, {"name": "b", "topic": "t"}]),
            )),
            "InvalidSpec",
            "spec.streams[1].topic",
        ),
        (
            "a raw key for a typed field",
            kcs(with(
                valid_kcs_spec(),
                "/streams",
                json!([{"name": "a", "config": {"cleanup.policy": "compact"}}]),
            )),
            "InvalidSpec",
            "spec.streams[0].config[cleanup.policy]",
        ),
        (
            "an external cluster without servers",
            kcs(with(
                valid_kcs_spec(),
                "/template",
                json!({"provider": "external"}),
            )),
            "InvalidSpec",
            "spec.clusters[0].overrides.external",
        ),
        (
            "an undeclared input stream",
            pipeline(
                "undeclared",
                with(
                    valid_pipeline_spec(),
                    "/inputs",
                    json!([{"stream": "payments"}]),
                ),
            ),
            "InvalidSpec",
            "spec.inputs[0].stream",
        ),
        (
            "a missing cluster set",
            pipeline(
                "orphan",
                with(valid_pipeline_spec(), "/clusterSet", json!("nowhere")),
            ),
            "KafkaClusterSetNotFound",
            "spec.clusterSet",
        ),
        (
            "a flink engine without its section",
            pipeline(
                "no-flink",
                with(valid_pipeline_spec(), "/engine", json!({"type": "flink"})),
            ),
            "InvalidSpec",
            "spec.engine.flink",
        ),
        (
            "two restore sources",
            pipeline(
                "two-sources",
                with(
                    valid_pipeline_spec(),
                    "/restoreFrom",
                    json!({"savepoint": "a", "path": "/b"}),
                ),
            ),
            "InvalidSpec",
            "spec.restoreFrom",
        ),
        (
            "a pod template of the wrong shape",
            pipeline(
                "bad-template",
                with(valid_pipeline_spec(), "/engine", consumer),
            ),
            "InvalidSpec",
            "spec.engine.consumer.template.spec.containers",
        ),
        (
            "an application-mode job with more parallelism than task slots",
            pipeline(
                "too-parallel",
                with(
                    valid_pipeline_spec(),
                    "/engine/flink",
                    json!({"mode": "application", "image": "flink:2.3", "jarUri": "local:///opt/job.jar",
                           "parallelism": 5, "taskManager": {"replicas": 2, "taskSlots": 2}}),
                ),
            ),
            "InvalidSpec",
            "spec.engine.flink.parallelism",
        ),
        (
            "a savepoint of a missing pipeline",
            savepoint("orphan", json!({"pipelineRef": "nowhere"})),
            "PipelineNotFound",
            "spec.pipelineRef",
        ),
        (
            "an offsets savepoint with a path",
            savepoint(
                "offsets-path",
                json!({"pipelineRef": "job", "type": "offsets", "path": "/x"}),
            ),
            "InvalidSpec",
            "spec.path",
        ),
        (
            "a range that ends before it starts",
            backfill(
                "backwards",
                with(valid_backfill_spec(), "/to", json!("2025-12-01T00:00:00Z")),
            ),
            "InvalidSpec",
            "spec.to",
        ),
        (
            "a savepoint start without a savepoint",
            backfill(
                "no-start",
                with(
                    valid_backfill_spec(),
                    "/startState",
                    json!({"type": "savepoint"}),
                ),
            ),
            "InvalidSpec",
            "spec.startState.savepoint",
        ),
    ]
}

/// Cases the admission webhook refuses, each judged by the object alone
/// (description, object, field the refusal names): the semantic cases
/// whose rule needs no other object, and more.
pub fn admission_cases() -> Vec<(&'static str, Value, &'static str)> {
    // Its rule compares the inputs with the set's streams: the reconcile's.
    let needs_the_set = "an undeclared input stream";
    let mut cases: Vec<(&'static str, Value, &'static str)> = semantic_cases()
        .into_iter()
        .filter(|(what, _, reason, _)| *reason == "InvalidSpec" && *what != needs_the_set)
        .map(|(what, object, _, field)| (what, object, field))
        .collect();
    let builtin = json!({"provider": "builtin", "builtin": {"nodes": 1}});
    let flink = |section: Value| with(valid_pipeline_spec(), "/engine/flink", section);
    cases.extend([
        (
            "tiered storage on a compacted stream",
            kcs(with(
                valid_kcs_spec(),
                "/streams",
                json!([{"name": "a", "cleanupPolicy": "compact", "tieredStorage": true}]),
            )),
            "spec.streams[0].tieredStorage",
        ),
        (
            "a topic configuration key Kafka does not know",
            kcs(with(
                valid_kcs_spec(),
                "/streams",
                json!([{"name": "a", "config": {"colour.of.bytes": "blue"}}]),
            )),
            "spec.streams[0].config[colour.of.bytes]",
        ),
        (
            "more replicas than builtin nodes",
            kcs(with(
                with(valid_kcs_spec(), "/template", builtin.clone()),
                "/streams",
                json!([{"name": "a", "replication": 2}]),
            )),
            "spec.streams[0].replication",
        ),
        (
            "a broker key the operator sets",
            kcs(with(
                valid_kcs_spec(),
                "/template",
                json!({"provider": "builtin", "builtin": {"config": {"log.dirs": "/tmp"}}}),
            )),
            "spec.template.builtin.config[log.dirs]",
        ),
        (
            "a flink engine with a consumer section",
            pipeline(
                "both-engines",
                with(
                    valid_pipeline_spec(),
                    "/engine/consumer",
                    json!({"template": {"spec": {"containers": [{"name": "app", "image": "app:1"}]}}}),
                ),
            ),
            "spec.engine.consumer",
        ),
        (
            "a session job without the session",
            pipeline(
                "no-session",
                flink(json!({"mode": "session", "jarUri": "https://x/job.jar"})),
            ),
            "spec.engine.flink.sessionUrl",
        ),
        (
            "a savepoint registered and taken at once",
            savepoint(
                "both-ways",
                json!({"pipelineRef": "job", "type": "flink", "path": "s3://a/sp-1", "targetDirectory": "s3://a"}),
            ),
            "spec.targetDirectory",
        ),
        (
            "offsets on a flink savepoint",
            savepoint(
                "flink-offsets",
                json!({"pipelineRef": "job", "type": "flink",
                       "offsets": [{"cluster": "blue", "topic": "orders", "partition": 0, "offset": 1}]}),
            ),
            "spec.offsets",
        ),
        (
            "an empty start state naming a savepoint",
            backfill(
                "empty-start",
                with(
                    valid_backfill_spec(),
                    "/startState",
                    json!({"type": "empty", "savepoint": "sp"}),
                ),
            ),
            "spec.startState.savepoint",
        ),
        (
            "a backfill whose job's pods could not be named",
            backfill("history.v2", valid_backfill_spec()),
            "metadata.name",
        ),
    ]);
    cases
}

/// Every example in `manifests/examples/` is accepted and found valid in `ns`.
pub async fn assert_examples_valid(client: &kube::Client, ns: &str) {
    let mut objects = Vec::new();
    let examples = std::fs::read_dir(repo().join("manifests/examples")).expect("examples folder");
    for entry in examples {
        let path = entry.expect("example entry").path();
        if path
            .file_name()
            .is_some_and(|name| name == "kustomization.yaml")
        {
            continue;
        }
        for document in yaml_documents(&path) {
            let name = document["metadata"]["name"]
                .as_str()
                .expect("example name")
                .to_string();
            let kind = document["kind"].as_str().expect("example kind").to_string();
            create(client, ns, document)
                .await
                .unwrap_or_else(|e| panic!("{} refused: {e}", path.display()));
            objects.push((kind, name));
        }
    }
    assert!(objects.len() >= 4, "examples cover the kinds: {objects:?}");
    for (kind, name) in objects {
        wait_for_ready(
            client,
            ns,
            &kind,
            &name,
            Duration::from_secs(30),
            super::spec_accepted,
        )
        .await;
    }
}

/// Every object of `semantic_cases` is refused by the operator within
/// `VERDICT_WITHIN` with its reason and a message naming its field, with
/// `observedGeneration` and Events; `ns` holds the valid references.
pub async fn assert_semantic_verdicts(testbed: &Testbed, client: &kube::Client, ns: &str) {
    // The referenced objects of the cases that are not about references.
    create(client, ns, kcs(valid_kcs_spec()))
        .await
        .expect("set");
    create(client, ns, pipeline("job", valid_pipeline_spec()))
        .await
        .expect("pipeline");
    wait_for_ready(
        client,
        ns,
        "Pipeline",
        "job",
        Duration::from_secs(30),
        super::spec_accepted,
    )
    .await;
    // The set is replaced by each of its cases in turn, in its own namespace.
    for (i, (what, object, reason, field)) in semantic_cases().into_iter().enumerate() {
        let kind = object["kind"].as_str().expect("kind").to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        let target = if kind == "KafkaClusterSet" {
            testbed.namespace(&format!("{ns}-set-{i}")).await
        } else {
            ns.to_string()
        };
        create(client, &target, object)
            .await
            .unwrap_or_else(|e| panic!("{what}: the schema should accept it: {e}"));
        let ready = wait_for_ready(client, &target, &kind, &name, VERDICT_WITHIN, |c| {
            c.status == "False"
        })
        .await;
        assert_eq!(ready.reason, reason, "{what}: {}", ready.message);
        assert!(
            ready.message.contains(field),
            "{what}: message does not name {field}: {}",
            ready.message
        );
        let object = kappa_api(client, &target, &kind)
            .get(&name)
            .await
            .expect("object");
        assert_eq!(
            object.data["status"]["observedGeneration"],
            object.metadata.generation.map_or(Value::Null, Value::from),
            "{what}: observedGeneration"
        );
    }
    let events = testbed.kubectl(&[
        "get",
        "events.events.k8s.io",
        "-n",
        ns,
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    for reason in ["InvalidSpec", "KafkaClusterSetNotFound", "PipelineNotFound"] {
        assert!(
            events.contains(reason),
            "an Event with reason {reason}: {events}"
        );
    }
}

/// The kinds an operator's object in a namespace can be, or be owned by.
const NAMESPACED_KINDS: &str = "configmaps,services,pods,statefulsets,deployments,jobs,\
poddisruptionbudgets,persistentvolumeclaims,leases,\
kafkaclustersets.kappa.dev,pipelines.kappa.dev,savepoints.kappa.dev,backfills.kappa.dev";

/// Fails naming every object in `ns` whose owner is gone, and every object
/// the operator manages that has no owner (nothing would delete it).
pub fn assert_no_orphans(testbed: &Testbed, ns: &str) {
    let listed: Value =
        serde_json::from_str(&testbed.kubectl(&["get", NAMESPACED_KINDS, "-n", ns, "-o", "json"]))
            .expect("kubectl prints JSON");
    let items = listed["items"].as_array().cloned().unwrap_or_default();
    let present: std::collections::BTreeSet<&str> = items
        .iter()
        .filter_map(|item| item["metadata"]["uid"].as_str())
        .collect();
    let orphans: Vec<String> = items
        .iter()
        .filter(|item| {
            let owners = item["metadata"]["ownerReferences"].as_array();
            let managed =
                item["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kappa-operator";
            match owners {
                Some(owners) => owners
                    .iter()
                    .any(|owner| !present.contains(owner["uid"].as_str().unwrap_or_default())),
                None => managed,
            }
        })
        .map(|item| format!("{} {}", item["kind"], item["metadata"]["name"]))
        .collect();
    assert!(orphans.is_empty(), "orphaned in {ns}: {orphans:?}");
}
