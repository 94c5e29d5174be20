//! The CRDs and the operator against a real kube-apiserver: schema rejections,
//! semantic validation by the running operator, recovery when fixed.

mod common;

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

/// One admission review sent to the webhook at `address` as the API server
/// sends it: by the Service's name `host`, trusting only the CA bundle of
/// the ValidatingWebhookConfiguration `configuration` as it is now.
async fn review_over_tls(
    client: &kube::Client,
    configuration: &str,
    (host, address): (&str, std::net::SocketAddr),
    review: &Value,
) -> Result<Value, String> {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let configurations: kube::Api<ValidatingWebhookConfiguration> = kube::Api::all(client.clone());
    let found = configurations
        .get(configuration)
        .await
        .map_err(|e| e.to_string())?;
    let bundle = found
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .find_map(|w| w.client_config.ca_bundle)
        .ok_or("no CA bundle yet")?;
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .resolve(host, address)
        .timeout(Duration::from_secs(5));
    for ca in reqwest::Certificate::from_pem_bundle(&bundle.0).map_err(|e| e.to_string())? {
        builder = builder.add_root_certificate(ca);
    }
    let http = builder.build().map_err(|e| e.to_string())?;
    let url = format!("https://{host}:{}/validate", address.port());
    let response = http
        .post(url)
        .json(review)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    response.json().await.map_err(|e| e.to_string())
}

/// The webhook's certificate as the operator issues it, valid for six
/// seconds here: it is renewed again and again, each new CA reaches the
/// ValidatingWebhookConfiguration before its certificate is served, and
/// every review sent the way the API server sends it is answered.
#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_certificate_is_renewed_and_always_trusted() {
    use k8s_openapi::api::core::v1::Secret;
    let testbed = Testbed::get();
    // As the shipped ServiceAccount, under the shipped names: its roles let
    // it create, read and renew only this Secret in its own namespace, and
    // patch only this configuration.
    let kubeconfig = common::service_account_kubeconfig(testbed);
    let ns = "kappa-system".to_string();
    let configuration = "kappa-operator".to_string();
    // Its rule matches no group, so the API server never calls it: what is
    // tested is the CA bundle the operator keeps in it.
    register_webhook(testbed, &ns, &configuration);
    let (mut operator, address) = start_webhook_operator(
        testbed,
        &kubeconfig,
        (&ns, &configuration, "kappa-operator-webhook-tls"),
        &["--webhook-certificate-validity", "6s"],
    );
    let client = testbed.client().await;
    let host = format!("renewal.{ns}.svc");
    let review = invalid_set_review(&ns);
    first_answer(&client, &configuration, (&host, address), &review).await;

    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), &ns);
    let mut served = std::collections::BTreeSet::new();
    let mut answered = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let secret = secrets
            .get("kappa-operator-webhook-tls")
            .await
            .expect("the certificate's Secret");
        let data = secret.data.unwrap_or_default();
        served.insert(data.get("tls.crt").expect("tls.crt").0.clone());
        // The operator may switch certificates between this read of the
        // bundle and the call, as between any API server's read and call:
        // then the bundle read after it must do.
        let mut outcome = review_over_tls(&client, &configuration, (&host, address), &review).await;
        if outcome.is_err() {
            outcome = review_over_tls(&client, &configuration, (&host, address), &review).await;
        }
        let answer = outcome.unwrap_or_else(|e| panic!("not trusted by its own bundle: {e}"));
        assert_eq!(answer["response"]["uid"], "renewal-1", "{answer}");
        assert_eq!(answer["response"]["allowed"], false, "{answer}");
        let message = answer["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains("spec.routing.writeCluster"), "{message}");
        answered += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!(
        "{answered} reviews answered over TLS while {} certificates were served in 20 s",
        served.len()
    );
    assert!(
        served.len() >= 3,
        "renewed at least twice: {}",
        served.len()
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let expiry = operator.metric("kappa_webhook_certificate_expiry_timestamp_seconds");
    assert!(expiry > now, "the metric shows a future expiry: {expiry}");
    operator.assert_log_clean();
    assert!(operator.terminate(), "the operator stops cleanly");
    testbed.kubectl(&["delete", "validatingwebhookconfiguration", &configuration]);
}

/// Registers a ValidatingWebhookConfiguration `configuration` for the
/// Service `renewal` in `ns`. Its rule matches no group, so the API server
/// never calls it: what is tested is the CA bundle it holds.
fn register_webhook(testbed: &Testbed, ns: &str, configuration: &str) {
    let registration = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": configuration},
        "webhooks": [{"name": "validate.kappa.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": {"service": {"name": "renewal", "namespace": ns, "path": "/validate", "port": 443}},
            "rules": [{"apiGroups": ["renewal.invalid"], "apiVersions": ["*"], "operations": ["CREATE"],
                       "resources": ["things"]}]}]
    });
    let file = testbed.state.join(format!("{configuration}.json"));
    std::fs::write(&file, registration.to_string()).expect("registration");
    testbed.kubectl(&["apply", "-f", &file.to_string_lossy()]);
}

/// The admission review of creating a set whose write cluster is not one of its clusters.
fn invalid_set_review(ns: &str) -> Value {
    let object = kcs(with(
        valid_kcs_spec(),
        "/routing/writeCluster",
        json!("red"),
    ));
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "renewal-1", "kind": {"group": "kappa.dev", "version": "v1alpha1", "kind": "KafkaClusterSet"},
            "resource": {"group": "kappa.dev", "version": "v1alpha1", "resource": "kafkaclustersets"},
            "name": "events", "namespace": ns, "operation": "CREATE", "userInfo": {"username": "test"},
            "object": object, "dryRun": false}
    })
}

/// Waits up to 30 s for the webhook to answer `review` over TLS; its answer.
async fn first_answer(
    client: &kube::Client,
    configuration: &str,
    target: (&str, std::net::SocketAddr),
    review: &Value,
) -> Value {
    let waited = std::time::Instant::now();
    loop {
        match review_over_tls(client, configuration, target, review).await {
            Ok(answer) => return answer,
            Err(e) if waited.elapsed() > Duration::from_secs(30) => {
                panic!("the webhook never answered over TLS: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A certificate written by someone else (as cert-manager writes it, with
/// its CA injected into the configuration as cainjector does): the
/// operator serves it and leaves the Secret and the CA bundle alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_from_an_external_issuer_is_served_as_written() {
    use k8s_openapi::api::core::v1::Secret;
    use kappa_operator::webhook::certificate;
    let testbed = Testbed::get();
    let ns = testbed.namespace("webhook-external").await;
    let configuration = format!("{ns}-check");
    register_webhook(testbed, &ns, &configuration);
    let issued = certificate::issue(
        &certificate::service_names("renewal", &ns),
        Duration::from_secs(3600),
        std::time::SystemTime::now(),
    )
    .expect("issued");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "issued-tls", "namespace": ns},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": issued.certificate, "tls.key": issued.key, "ca.crt": issued.ca},
    }))
    .expect("secret");
    let client = testbed.client().await;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), &ns);
    secrets
        .create(&Default::default(), &secret)
        .await
        .expect("secret created");
    let bundle = base64_of(&issued.ca);
    testbed.kubectl(&[
        "patch",
        "validatingwebhookconfiguration",
        &configuration,
        "--type=json",
        "-p",
        &format!(
            r#"[{{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "{bundle}"}}]"#
        ),
    ]);
    let written = secrets.get("issued-tls").await.expect("secret");
    // The Secret and lease are in the test's namespace, where the shipped
    // roles grant nothing: as the testbed's administrator.
    let (mut operator, address) = start_webhook_operator(
        testbed,
        &testbed.kubeconfig,
        (&ns, &configuration, "issued-tls"),
        &["--webhook-certificates", "external"],
    );
    let host = format!("renewal.{ns}.svc");
    let answer = first_answer(
        &client,
        &configuration,
        (&host, address),
        &invalid_set_review(&ns),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let after = secrets.get("issued-tls").await.expect("secret");
    assert_eq!(
        after.metadata.resource_version, written.metadata.resource_version,
        "the operator wrote the issuer's Secret"
    );
    let expiry = operator.metric("kappa_webhook_certificate_expiry_timestamp_seconds");
    assert_eq!(
        expiry, 0.0,
        "an external certificate's expiry is not known to the operator"
    );
    operator.assert_log_clean();
    assert!(operator.terminate(), "the operator stops cleanly");
    testbed.kubectl(&["delete", "validatingwebhookconfiguration", &configuration]);
}

/// An operator with the identity of `kubeconfig`, watching only `ns`, that
/// serves the webhook of `configuration` ([`register_webhook`] made it for
/// Service `renewal` in `ns`) with its certificate in Secret `secret` of
/// `ns`; its webhook's address.
fn start_webhook_operator(
    testbed: &Testbed,
    kubeconfig: &std::path::Path,
    (ns, configuration, secret): (&str, &str, &str),
    extra: &[&str],
) -> (Operator, std::net::SocketAddr) {
    let address = common::free_address();
    let listen = address.to_string();
    let mut args = vec![
        "--no-leader-election",
        "--namespace",
        ns,
        "--lease-namespace",
        ns,
        "--webhook-address",
        &listen,
        "--webhook-service",
        "renewal",
        "--webhook-secret",
        secret,
        "--webhook-configuration",
        configuration,
    ];
    args.extend_from_slice(extra);
    let operator = Operator::start_as(testbed, kubeconfig, ns, &args);
    (operator, address)
}

/// `text` in base64, as a caBundle holds it.
fn base64_of(text: &str) -> String {
    serde_json::to_value(k8s_openapi::ByteString(text.as_bytes().to_vec()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .expect("base64")
}
