//! Credentials stay in their Secrets. With the operator at its most verbose
//! log level (`RUST_LOG=trace`, every library included), a KafkaClusterSet
//! whose external cluster takes TLS and SASL credentials, and a consumer
//! Pipeline reading from it, leave the secret values in no log line, Event,
//! status, discovery document or child object.

mod common;

use std::time::Duration;

use common::node::demo_consumer;
use common::{create, kafka, wait_for_ready, Operator, Testbed};
use serde_json::json;

const PASSWORD: &str = "correct-horse-battery-staple";

/// A CA certificate for the cluster's TLS (public, but handed over the same way).
fn ca_certificate() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["secured-kafka".to_string()]).expect("params");
    params.self_signed(&key).expect("certificate").pem()
}

#[tokio::test]
async fn credentials_appear_nowhere_but_in_their_secret_at_the_most_verbose_log_level() {
    let testbed = Testbed::with_brokers();
    let operator = Operator::start_logging(testbed, "secrets", "trace", &["--no-leader-election"]);
    let client = testbed.client().await;
    let ns = testbed.namespace("secrets").await;

    let set = json!({
        "apiVersion": "kappa.dev/v1alpha1", "kind": "KafkaClusterSet",
        "metadata": {"name": "secured"},
        "spec": {
            "template": {"provider": "external"},
            "clusters": [{"name": "blue", "overrides": {"external": {
                "bootstrapServers": [&testbed.brokers[0]],
                "tls": {"caCert": {"name": "blue-ca", "key": "ca.crt"}},
                "sasl": {"mechanism": "SCRAM-SHA-512", "secretName": "blue-client"}
            }}}],
            "streams": [{"name": "orders", "partitions": 3, "retention": "1h"}],
            "routing": {"writeCluster": "blue"}
        }
    });
    create(&client, &ns, set).await.expect("set");
    // The operator waits for the Secrets, and says which.
    let missing = wait_for_ready(
        &client,
        &ns,
        "KafkaClusterSet",
        "secured",
        Duration::from_secs(60),
        |c| c.reason == "SecretNotFound",
    )
    .await;
    println!("without the Secrets: {}", missing.message);

    for (name, data) in [
        (
            "blue-client",
            json!({"username": "app", "password": PASSWORD}),
        ),
        ("blue-ca", json!({"ca.crt": ca_certificate()})),
    ] {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name}, "stringData": data});
        let file = testbed.state.join(format!("{name}.json"));
        std::fs::write(&file, secret.to_string()).expect("secret file");
        testbed.kubectl(&["-n", &ns, "apply", "-f", &file.to_string_lossy()]);
    }
    let mut consumer = demo_consumer("running");
    consumer["clusterSet"] = json!("secured");
    create(&client, &ns, common::objects::pipeline("reader", consumer))
        .await
        .expect("pipeline");

    // The credentials are read and handed to the Kafka client: whatever the
    // plaintext test broker makes of TLS, the set gets past the Secrets, and
    // the pipeline's children are written.
    let used = wait_for_ready(
        &client,
        &ns,
        "KafkaClusterSet",
        "secured",
        Duration::from_secs(120),
        |c| c.reason != "SecretNotFound" && !c.message.is_empty(),
    )
    .await;
    println!("with the Secrets: {} {}", used.reason, used.message);
    let pipeline = wait_for_ready(
        &client,
        &ns,
        "Pipeline",
        "reader",
        Duration::from_secs(120),
        |c| !c.message.is_empty(),
    )
    .await;
    println!("pipeline: {} {}", pipeline.reason, pipeline.message);
    let document = kafka::discovery(&client, &ns, "secured").await;

    // As a Secret's data holds it.
    let encoded = serde_json::to_string(&k8s_openapi::ByteString(PASSWORD.into()))
        .expect("base64")
        .trim_matches('"')
        .to_string();
    let log = std::fs::read_to_string(&operator.log).expect("operator log");
    assert!(
        log.lines().any(|line| line.contains("TRACE")),
        "the operator did not log at trace level"
    );
    let objects = testbed.kubectl(&[
        "-n",
        &ns,
        "get",
        "events,kafkaclustersets,pipelines,configmaps,deployments,services",
        "-o",
        "json",
    ]);
    let document = document.map(|d| d.to_json()).unwrap_or_default();
    for (what, text) in [
        ("operator's log", &log),
        ("Events, statuses and child objects", &objects),
        ("discovery document", &document),
    ] {
        for (form, value) in [("password", PASSWORD), ("base64 password", &encoded)] {
            assert!(!text.contains(value), "the {form} is in the {what}");
        }
    }
    println!(
        "searched {} log lines ({} bytes) and {} bytes of objects",
        log.lines().count(),
        log.len(),
        objects.len()
    );
}
