//! The CRDs and the operator against a real kube-apiserver: schema rejections,
//! semantic validation by the running operator, recovery when fixed.

mod common;
#[path = "api_server/schema.rs"]
mod schema;
#[path = "api_server/webhook.rs"]
mod webhook;

use std::sync::OnceLock;
use std::time::Duration;

use common::gitops::Repository;
use common::objects::*;
use common::{create, kappa_api, wait_for_ready, Operator, Testbed};
use kube::api::{Patch, PatchParams};
use serde_json::{json, Value};

/// One operator for the whole binary, watching every namespace.
fn operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        Operator::start(
            Testbed::get(),
            "api-server-tests",
            &["--no-leader-election"],
        )
    })
}

#[tokio::test]
async fn crds_are_established_with_names_and_columns() {
    let testbed = Testbed::get();
    let names = testbed.kubectl(&[
        "api-resources",
        "--api-group=kappa.dev",
        "--no-headers",
        "-o",
        "name",
    ]);
    for plural in ["kafkaclustersets", "pipelines", "savepoints", "backfills"] {
        assert!(
            names.contains(&format!("{plural}.kappa.dev")),
            "{plural} missing: {names}"
        );
    }
    let short = testbed.kubectl(&["api-resources", "--categories=kappa", "--no-headers"]);
    for short_name in ["kcs", "kpipe", "ksp", "kbf"] {
        assert!(
            short.contains(short_name),
            "short name {short_name} missing: {short}"
        );
    }
    // The API server publishes a new CRD's OpenAPI a few seconds after it is established.
    let mut explained = String::new();
    for _ in 0..60 {
        let output = testbed.kubectl_output(&["explain", "pipeline.spec.upgradeMode"]);
        explained = String::from_utf8_lossy(&output.stdout).into_owned();
        if explained.contains("Flink Kubernetes") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        explained.contains("Flink Kubernetes"),
        "doc comments reach kubectl explain: {explained}"
    );
}

#[tokio::test]
async fn every_example_is_accepted_and_found_valid() {
    let testbed = Testbed::get();
    operator();
    let client = testbed.client().await;
    let ns = testbed.namespace("examples").await;
    common::objects::assert_examples_valid(&client, &ns).await;
    operator().assert_log_clean();
}

/// Every list (with its entries) in `value`, by JSON pointer.
fn lists(value: &Value, at: &str, found: &mut Vec<(String, Value)>) {
    match value {
        Value::Array(entries) => {
            found.push((at.to_string(), value.clone()));
            for (index, entry) in entries.iter().enumerate() {
                lists(entry, &format!("{at}/{index}"), found);
            }
        }
        Value::Object(fields) => {
            for (key, field) in fields {
                lists(field, &format!("{at}/{key}"), found);
            }
        }
        _ => {}
    }
}

/// Applied as a GitOps tool applies them (server-side, a field manager of
/// its own), the examples' lists come back exactly as written: the API
/// server adds no defaults to list entries, which a tool comparing lists
/// would report as drift. Once the operator has written every status, Git
/// and the cluster still agree, as Argo CD's and Flux's server-side diffs
/// would find.
#[tokio::test]
async fn examples_keep_their_lists_as_git_has_them() {
    let testbed = Testbed::get();
    let client = testbed.client().await;
    let ns = testbed.namespace("gitops-lists").await;
    let mut repository = Repository::new(testbed, &ns);
    let examples = std::fs::read_dir(common::repo().join("manifests/examples")).expect("examples");
    let mut compared = 0;
    for entry in examples {
        let path = entry.expect("example entry").path();
        let Some(file) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        if file == "kustomization" {
            continue;
        }
        let documents = common::yaml_documents(&path);
        let stored = repository.commit(&client, &file, &documents).await;
        for (document, stored) in documents.iter().zip(stored) {
            let stored = serde_json::to_value(stored).expect("JSON");
            let mut written = Vec::new();
            lists(&document["spec"], "/spec", &mut written);
            for (pointer, list) in written {
                assert_eq!(
                    stored.pointer(&pointer),
                    Some(&list),
                    "{file}: {pointer} as stored differs from Git"
                );
                compared += 1;
            }
        }
    }
    assert!(
        compared >= 5,
        "the examples have lists: {compared} compared"
    );
    operator();
    repository.assert_no_drift(&client).await;
}

/// Objects the schema accepts but the operator refuses, with the reason and
/// the field its message must name.
#[tokio::test]
async fn the_operator_refuses_what_the_schema_cannot_within_seconds() {
    let testbed = Testbed::get();
    let operator = operator();
    let client = testbed.client().await;
    let ns = testbed.namespace("semantic").await;
    common::objects::assert_semantic_verdicts(testbed, &client, &ns).await;
    operator.assert_log_clean();
}

#[tokio::test]
async fn fixing_an_object_or_creating_its_reference_clears_the_condition() {
    let testbed = Testbed::get();
    operator();
    let client = testbed.client().await;
    let ns = testbed.namespace("recovery").await;
    let params = PatchParams::default();

    // A missing reference: the Pipeline recovers when its set appears.
    create(&client, &ns, pipeline("job", valid_pipeline_spec()))
        .await
        .expect("pipeline");
    wait_for_ready(&client, &ns, "Pipeline", "job", VERDICT_WITHIN, |c| {
        c.reason == "KafkaClusterSetNotFound"
    })
    .await;
    // What kstatus and `kubectl wait` read: stalled until the user acts.
    let wait = |condition: &str| {
        testbed.kubectl(&[
            "-n",
            &ns,
            "wait",
            &format!("--for=condition={condition}"),
            "pipeline/job",
            "--timeout=30s",
        ])
    };
    wait("Stalled");
    create(
        &client,
        &ns,
        kcs(with(
            valid_kcs_spec(),
            "/streams",
            json!([{"name": "orders"}]),
        )),
    )
    .await
    .expect("set");
    let ready = wait_for_ready(&client, &ns, "Pipeline", "job", VERDICT_WITHIN, |c| {
        c.reason != "KafkaClusterSetNotFound"
    })
    .await;
    assert_eq!(
        ready.reason, "InvalidSpec",
        "the output stream is still undeclared: {}",
        ready.message
    );

    // A change to the referenced set re-validates the Pipeline (which then
    // goes on to its Flink cluster, unreachable here).
    let streams = json!({"spec": {"streams": [{"name": "orders"}, {"name": "totals"}]}});
    kappa_api(&client, &ns, "KafkaClusterSet")
        .patch("events", &params, &Patch::Merge(&streams))
        .await
        .expect("set patched");
    wait_for_ready(
        &client,
        &ns,
        "Pipeline",
        "job",
        VERDICT_WITHIN,
        common::spec_accepted,
    )
    .await;
    // On its way (its Flink cluster does not answer here), not stalled.
    wait("Stalled=false");
    wait("Reconciling");

    // Deleting the set makes it missing again.
    kappa_api(&client, &ns, "KafkaClusterSet")
        .delete("events", &Default::default())
        .await
        .expect("set deleted");
    wait_for_ready(&client, &ns, "Pipeline", "job", VERDICT_WITHIN, |c| {
        c.reason == "KafkaClusterSetNotFound"
    })
    .await;

    // A fixed spec: the Backfill recovers and records the new generation.
    create(
        &client,
        &ns,
        backfill(
            "bf",
            with(valid_backfill_spec(), "/to", json!("2025-12-01T00:00:00Z")),
        ),
    )
    .await
    .expect("backfill");
    wait_for_ready(&client, &ns, "Backfill", "bf", VERDICT_WITHIN, |c| {
        c.reason == "InvalidSpec"
    })
    .await;
    let fix = json!({"spec": {"to": "2026-03-01T00:00:00Z"}});
    kappa_api(&client, &ns, "Backfill")
        .patch("bf", &params, &Patch::Merge(&fix))
        .await
        .expect("backfill patched");
    let ready = wait_for_ready(&client, &ns, "Backfill", "bf", VERDICT_WITHIN, |c| {
        c.reason != "InvalidSpec"
    })
    .await;
    // Accepted and acted on: a Backfill of a Flink pipeline waits in Pending.
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("Unknown", "EngineNotSupported"),
        "{}",
        ready.message
    );
    assert_eq!(ready.observed_generation, Some(2));
}

#[tokio::test]
async fn a_converged_object_is_not_written_again() {
    let testbed = Testbed::get();
    let operator = operator();
    let client = testbed.client().await;
    let ns = testbed.namespace("idle").await;
    create(&client, &ns, pipeline("job", valid_pipeline_spec()))
        .await
        .expect("pipeline");
    wait_for_ready(&client, &ns, "Pipeline", "job", VERDICT_WITHIN, |c| {
        c.reason == "KafkaClusterSetNotFound"
    })
    .await;
    let resource_version = |object: kube::api::DynamicObject| object.metadata.resource_version;
    let api = kappa_api(&client, &ns, "Pipeline");
    let before = resource_version(api.get("job").await.expect("pipeline"));
    // A label change triggers a reconcile that must find nothing to write.
    let label = json!({"metadata": {"labels": {"touched": "yes"}}});
    api.patch("job", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("labelled");
    let reconciles = operator.metric("kappa_reconcile_total{controller=\"pipeline\"}");
    let after_label = resource_version(api.get("job").await.expect("pipeline"));
    assert_ne!(before, after_label);
    for _ in 0..50 {
        if operator.metric("kappa_reconcile_total{controller=\"pipeline\"}") > reconciles {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = resource_version(api.get("job").await.expect("pipeline"));
    assert_eq!(
        after_label, after,
        "the reconcile after the label change wrote the object"
    );
}

#[tokio::test]
async fn health_and_metrics_are_served() {
    let testbed = Testbed::get();
    let operator = operator();
    let client = testbed.client().await;
    let ns = testbed.namespace("metrics").await;
    create(&client, &ns, savepoint("sp", json!({"pipelineRef": "job"})))
        .await
        .expect("savepoint");
    wait_for_ready(&client, &ns, "Savepoint", "sp", VERDICT_WITHIN, |c| {
        c.reason == "PipelineNotFound"
    })
    .await;
    let mut ready = None;
    for _ in 0..100 {
        ready = operator.http_get("/readyz");
        if ready.as_ref().is_some_and(|(status, _)| *status == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready.map(|(status, _)| status), Some(200));
    assert_eq!(
        operator.http_get("/healthz").map(|(status, _)| status),
        Some(200)
    );
    let (_, metrics) = operator.http_get("/metrics").expect("metrics");
    for name in [
        "kappa_build_info",
        "kappa_reconcile_total",
        "kappa_reconcile_duration_seconds_bucket",
        "kappa_kube_requests_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn the_shipped_manifests_apply_and_their_rbac_is_enough() {
    let testbed = Testbed::get();
    common::apply_manifests_without_webhook(testbed);
    let kubeconfig = common::service_account_kubeconfig(testbed);
    let client = testbed.client().await;
    let ns = testbed.namespace("rbac").await;
    // Its own namespace only: an operator acting on the other tests'
    // objects beside theirs would write their statuses too, and its checks
    // below would judge objects it was not given.
    let mut operator = Operator::start_as(
        testbed,
        &kubeconfig,
        "shipped-rbac",
        &[
            "--lease-namespace",
            "kappa-system",
            "--lease-name",
            "rbac-test",
            "--namespace",
            &ns,
        ],
    );

    create(&client, &ns, kcs(valid_kcs_spec()))
        .await
        .expect("set");
    create(&client, &ns, pipeline("job", valid_pipeline_spec()))
        .await
        .expect("pipeline");
    create(
        &client,
        &ns,
        savepoint("sp", json!({"pipelineRef": "job", "type": "offsets"})),
    )
    .await
    .expect("savepoint");
    create(&client, &ns, backfill("bf", valid_backfill_spec()))
        .await
        .expect("backfill");
    for (kind, name) in [
        ("KafkaClusterSet", "events"),
        ("Pipeline", "job"),
        ("Backfill", "bf"),
    ] {
        wait_for_ready(
            &client,
            &ns,
            kind,
            name,
            Duration::from_secs(30),
            common::spec_accepted,
        )
        .await;
    }
    // The invalid Savepoint makes the operator publish a Warning Event.
    wait_for_ready(
        &client,
        &ns,
        "Savepoint",
        "sp",
        Duration::from_secs(30),
        |c| c.reason == "InvalidSpec",
    )
    .await;
    let events = testbed.kubectl(&[
        "get",
        "events.events.k8s.io",
        "-n",
        &ns,
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(
        events.contains("InvalidSpec"),
        "the Event was published: {events}"
    );
    assert_eq!(operator.metric("kappa_reconcile_errors_total"), 0.0);
    assert!(
        operator.terminate(),
        "the operator stops cleanly and releases its lease"
    );
    let log = std::fs::read_to_string(&operator.log).expect("operator log");
    if let Some(found) = common::refusal_in(&log) {
        panic!("a call was refused (`{found}`):\n{log}");
    }
    operator.assert_log_clean();
}

/// The kubectl plugin creates a Backfill from flags, refuses bad flags in
/// words, and shows a Backfill's phase, progress bar, rate and ETA.
#[tokio::test]
async fn the_kubectl_plugin_starts_a_backfill_and_shows_its_progress() {
    let testbed = Testbed::get();
    let client = testbed.client().await;
    let ns = testbed.namespace("plugin").await;
    let started = testbed.kubectl_kappa(&[
        "-n",
        &ns,
        "backfill",
        "start",
        "november",
        "--pipeline",
        "totals",
        "--from",
        "2026-11-01T00:00:00Z",
        "--to",
        "2026-11-02T00:00:00Z",
        "--clusters",
        "2",
        "--completion",
        "output-only",
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let backfill = kappa_api(&client, &ns, "Backfill")
        .get("november")
        .await
        .expect("created");
    let spec = &backfill.data["spec"];
    assert_eq!(spec["pipelineRef"], "totals");
    assert_eq!(spec["capacity"]["clusters"], 2);
    assert_eq!(spec["completion"], "outputOnly");
    assert_eq!(spec["to"], "2026-11-02T00:00:00Z");

    let refused = testbed.kubectl_kappa(&[
        "-n",
        &ns,
        "backfill",
        "start",
        "bad",
        "--pipeline",
        "totals",
        "--from",
        "yesterday",
        "--to",
        "2026-11-02T00:00:00Z",
    ]);
    let words = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        words.contains("--from `yesterday` is not an RFC 3339 time"),
        "{words}"
    );

    // What the plugin shows is what the status says.
    kappa_api(&client, &ns, "Backfill")
        .patch_status(
            "november",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Replaying",
                "clusters": ["events-backfill-1", "events-backfill-2"],
                "progress": {"recordsReplayed": 300, "recordsTotal": 1000,
                             "rate": 150.0, "eta": "5s"}
            }})),
        )
        .await
        .expect("status written");
    let shown = testbed.kubectl_kappa(&["-n", &ns, "backfill", "status", "november"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    println!("{shown}");
    assert!(shown.contains("november"), "{shown}");
    assert!(shown.contains(": Replaying"), "{shown}");
    assert!(shown.contains("]  30% 300 of 1000 records"), "{shown}");
    assert!(shown.contains("rate 150 records/s, ETA 5s"), "{shown}");
    assert!(
        shown.contains("extra clusters: events-backfill-1, events-backfill-2"),
        "{shown}"
    );
}
