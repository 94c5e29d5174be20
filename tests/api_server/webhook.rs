//! The admission webhook over TLS: its certificate renewed and always
//! trusted, or issued outside and served as written.

use super::*;

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

/// A replica started while its ValidatingWebhookConfiguration does not
/// exist (deleted to turn admission off) serves its certificate and is
/// ready; once the configuration is back, it trusts the certificate.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_is_ready_without_its_webhook_configuration_and_trusted_once_it_is_back() {
    let testbed = Testbed::get();
    let ns = testbed.namespace("webhook-absent").await;
    let configuration = format!("{ns}-check");
    let (mut operator, address) = start_webhook_operator(
        testbed,
        &testbed.kubeconfig,
        (&ns, &configuration, "absent-tls"),
        &["--webhook-certificate-validity", "60s"],
    );
    let started = std::time::Instant::now();
    let mut readiness = None;
    while started.elapsed() < Duration::from_secs(30) {
        readiness = operator.http_get("/readyz");
        if readiness.as_ref().is_some_and(|(status, _)| *status == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        readiness.map(|(status, _)| status),
        Some(200),
        "ready without a webhook configuration"
    );
    register_webhook(testbed, &ns, &configuration);
    let client = testbed.client().await;
    assert_refuses_an_invalid_set(&client, &configuration, &ns, address).await;
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

/// Waits for the webhook at `address`, serving Service `renewal` of `ns`,
/// to answer over TLS trusted by `configuration`, and checks it refuses an
/// invalid set.
async fn assert_refuses_an_invalid_set(
    client: &kube::Client,
    configuration: &str,
    ns: &str,
    address: std::net::SocketAddr,
) {
    let host = format!("renewal.{ns}.svc");
    let review = invalid_set_review(ns);
    let answer = first_answer(client, configuration, (&host, address), &review).await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
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
    assert_refuses_an_invalid_set(&client, &configuration, &ns, address).await;
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
