//! What the CRDs' schema refuses, naming the field.

use super::*;

#[tokio::test]
async fn the_schema_refuses_malformed_objects_naming_the_field() {
    let testbed = Testbed::get();
    let client = testbed.client().await;
    let ns = testbed.namespace("schema").await;
    let base_kcs = kcs(valid_kcs_spec());
    let base_pipeline = pipeline("job", valid_pipeline_spec());
    let base_savepoint = savepoint("sp", json!({"pipelineRef": "job"}));
    let base_backfill = backfill("bf", valid_backfill_spec());
    // The API server of Kubernetes 1.20 names list items without their index.
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "clusters of the wrong type",
            with(base_kcs.clone(), "/spec/clusters", json!("blue")),
            "spec.clusters",
        ),
        (
            "a cluster name with capitals",
            with(base_kcs.clone(), "/spec/clusters/0/name", json!("Blue_1")),
            "spec.clusters.name",
        ),
        (
            "an unknown cluster role",
            with(base_kcs.clone(), "/spec/clusters/0/role", json!("leader")),
            "spec.clusters.role",
        ),
        (
            "no routing",
            with(base_kcs.clone(), "/spec/routing", Value::Null),
            "spec.routing",
        ),
        (
            "zero partitions",
            with(base_kcs.clone(), "/spec/streams/0/partitions", json!(0)),
            "spec.streams.partitions",
        ),
        (
            "too many partitions",
            with(base_kcs.clone(), "/spec/streams/0/partitions", json!(20000)),
            "spec.streams.partitions",
        ),
        (
            "a retention in words",
            with(
                base_kcs.clone(),
                "/spec/streams/0/retention",
                json!("7 days"),
            ),
            "spec.streams.retention",
        ),
        (
            "a bootstrap server without port",
            with(
                base_kcs.clone(),
                "/spec/template/external/bootstrapServers",
                json!(["kafka"]),
            ),
            "spec.template.external.bootstrapServers",
        ),
        (
            "two clusters of one name",
            with(
                base_kcs.clone(),
                "/spec/clusters",
                json!([{"name": "a"}, {"name": "a"}]),
            ),
            "spec.clusters[1]",
        ),
        (
            "an unknown provider",
            with(
                base_kcs.clone(),
                "/spec/template/provider",
                json!("strimzi"),
            ),
            "spec.template.provider",
        ),
        (
            "no clusters",
            with(base_kcs.clone(), "/spec/clusters", json!([])),
            "spec.clusters",
        ),
        (
            "a storage size in words",
            with(
                base_kcs.clone(),
                "/spec/template/builtin",
                json!({"storage": {"size": "lots"}}),
            ),
            "spec.template.builtin.storage.size",
        ),
        (
            "two streams of one name",
            with(
                base_kcs.clone(),
                "/spec/streams",
                json!([{"name": "a"}, {"name": "a"}]),
            ),
            "spec.streams[1]",
        ),
        (
            "an unknown engine",
            with(base_pipeline.clone(), "/spec/engine/type", json!("spark")),
            "spec.engine.type",
        ),
        (
            "an unknown upgrade mode",
            with(base_pipeline.clone(), "/spec/upgradeMode", json!("rolling")),
            "spec.upgradeMode",
        ),
        (
            "a savepoint interval in words",
            with(
                base_pipeline.clone(),
                "/spec/savepoints",
                json!({"interval": "often"}),
            ),
            "spec.savepoints.interval",
        ),
        (
            "zero parallelism",
            with(
                base_pipeline.clone(),
                "/spec/engine/flink/parallelism",
                json!(0),
            ),
            "spec.engine.flink.parallelism",
        ),
        (
            "no cluster set",
            with(base_pipeline.clone(), "/spec/clusterSet", Value::Null),
            "spec.clusterSet",
        ),
        (
            "availability of 100%",
            with(
                base_pipeline.clone(),
                "/spec/slo",
                json!({"availability": 100}),
            ),
            "spec.slo.availability",
        ),
        (
            "no inputs",
            with(base_pipeline.clone(), "/spec/inputs", json!([])),
            "spec.inputs",
        ),
        (
            "a restart nonce in words",
            with(base_pipeline.clone(), "/spec/restartNonce", json!("again")),
            "spec.restartNonce",
        ),
        (
            "a jar URI that is no jar",
            with(
                base_pipeline.clone(),
                "/spec/engine/flink/jarUri",
                json!("ftp://x/y.zip"),
            ),
            "spec.engine.flink.jarUri",
        ),
        (
            "an unknown savepoint type",
            with(base_savepoint.clone(), "/spec/type", json!("snapshot")),
            "spec.type",
        ),
        (
            "a negative backoff limit",
            with(base_savepoint.clone(), "/spec/backoffLimit", json!(-1)),
            "spec.backoffLimit",
        ),
        (
            "no pipeline reference",
            with(base_savepoint.clone(), "/spec/pipelineRef", Value::Null),
            "spec.pipelineRef",
        ),
        (
            "a start time in words",
            with(base_backfill.clone(), "/spec/from", json!("yesterday")),
            "spec.from",
        ),
        (
            "zero extra clusters",
            with(
                base_backfill.clone(),
                "/spec/capacity",
                json!({"clusters": 0}),
            ),
            "spec.capacity.clusters",
        ),
        (
            "an unknown completion",
            with(base_backfill.clone(), "/spec/completion", json!("merge")),
            "spec.completion",
        ),
        (
            "a teardown delay in words",
            with(base_backfill.clone(), "/spec/teardownAfter", json!("soon")),
            "spec.teardownAfter",
        ),
        (
            "an object name with capitals",
            with(base_backfill.clone(), "/metadata/name", json!("Bad_Name")),
            "metadata.name",
        ),
    ];
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for (what, object, field) in cases {
        match create(&client, &ns, object).await {
            Ok(created) => {
                failures.push(format!("{what}: accepted as {:?}", created.metadata.name))
            }
            Err(message) if message.contains(field) => {}
            Err(message) => failures.push(format!(
                "{what}: message does not name `{field}`: {message}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for valid in [base_kcs, base_pipeline, base_savepoint, base_backfill] {
        create(&client, &ns, valid)
            .await
            .expect("the valid base objects are accepted");
    }
}
