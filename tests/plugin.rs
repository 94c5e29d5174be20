//! `kubectl kappa` against the real API server and the operator in-cluster
//! on the testbed's node: every verb, its `--wait` path following the
//! operator's work, its errors with exit code 1 (an unknown object, a wrong
//! state, no permission, a missing context), JSON output, and the display
//! redrawn in place under a pseudo-terminal.

mod common;

use std::process::Output;

use common::node::{demo_consumer, deploy_operator, pod_cluster_set, run_consumer_pipeline};
use common::{kappa_api, status, Testbed};
use k8s_openapi::api::core::v1::Secret;

/// Standard output and error of a run, for messages.
fn said(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `-n NS` and `args`.
fn in_ns<'a>(ns: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    ["-n", ns].iter().chain(args).copied().collect()
}

/// Runs `args` in `ns` and checks it succeeded; returns its standard output.
fn done(testbed: &Testbed, ns: &str, args: &[&str]) -> String {
    let args = in_ns(ns, args);
    let output = testbed.kubectl_kappa(&args);
    assert!(output.status.success(), "{args:?}: {}", said(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `args` in `ns` with `env` and checks it failed with exit code 1
/// saying `words`.
fn refused(testbed: &Testbed, env: &[(&str, &str)], ns: &str, args: &[&str], words: &str) {
    let args = in_ns(ns, args);
    let output = testbed.kubectl_kappa_with(env, &args);
    assert_eq!(output.status.code(), Some(1), "{args:?}: {}", said(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(words),
        "{args:?} says `{words}`: {}",
        said(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_kappa_does_the_daily_tasks_with_the_operator() {
    let testbed = Testbed::with_node();
    deploy_operator(testbed);
    let client = testbed.client().await;
    let ns = testbed.namespace("plugin").await;
    pod_cluster_set(testbed, &client, &ns, "plugin-orders").await;
    run_consumer_pipeline(&client, &ns, "app", demo_consumer("running")).await;
    let run = |args: &[&str]| done(testbed, &ns, args);

    // The overview, as text and JSON.
    let overview = run(&["status"]);
    assert!(
        overview.contains("Pipelines:") && overview.contains("\napp "),
        "{overview}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&run(&["status", "-o", "json"])).expect("JSON");
    assert_eq!(json["pipelines"][0]["metadata"]["name"], "app", "{json}");
    assert_eq!(
        json["clusterSets"][0]["metadata"]["name"], "events",
        "{json}"
    );

    // An ordered move, followed to its end; plain lines on a pipe.
    let moved = run(&[
        "set",
        "move",
        "events",
        "--to",
        "green",
        "--wait",
        "--timeout",
        "3m",
    ]);
    assert!(moved.contains("settled on green"), "{moved}");
    assert!(!moved.contains('\x1b'), "no redraw on a pipe: {moved:?}");
    assert_eq!(
        status(&client, &ns, "KafkaClusterSet", "events").await["writeCluster"],
        "green"
    );
    refused(
        testbed,
        &[],
        &ns,
        &["set", "move", "events", "--to", "nowhere"],
        "has no cluster `nowhere`",
    );

    // Back, under a pseudo-terminal: the screen is redrawn in place.
    let plugin = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-kappa"));
    let command = format!(
        "{} -n {ns} set move events --to blue --wait --timeout 3m",
        plugin.display()
    );
    let terminal = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("KUBECONFIG", &testbed.kubeconfig)
        .output()
        .expect("script runs");
    let shown = String::from_utf8_lossy(&terminal.stdout);
    assert!(terminal.status.success(), "{}", said(&terminal));
    assert!(
        shown.contains("\x1b[") && shown.contains("\x1b[J"),
        "redrawn: {shown:?}"
    );
    assert!(shown.contains("settled on blue"), "{shown:?}");

    // A savepoint, taken and followed to Completed.
    let taken = run(&[
        "pipeline",
        "savepoint",
        "app",
        "--name",
        "snap",
        "--wait",
        "--timeout",
        "3m",
    ]);
    assert!(
        taken.contains("savepoint.kappa.dev/snap created"),
        "{taken}"
    );
    assert_eq!(
        status(&client, &ns, "Savepoint", "snap").await["phase"],
        "Completed"
    );

    // Suspended, refused a restart while so, resumed, restarted.
    let suspended = run(&["pipeline", "suspend", "app", "--wait", "--timeout", "3m"]);
    assert!(
        suspended.contains("pipeline.kappa.dev/app suspended"),
        "{suspended}"
    );
    assert_eq!(
        status(&client, &ns, "Pipeline", "app").await["phase"],
        "Suspended"
    );
    let again = run(&["pipeline", "suspend", "app"]);
    assert!(again.contains("is suspended already"), "{again}");
    refused(
        testbed,
        &[],
        &ns,
        &["pipeline", "restart", "app"],
        "resume it instead",
    );
    run(&["pipeline", "resume", "app", "--wait", "--timeout", "3m"]);
    assert_eq!(
        status(&client, &ns, "Pipeline", "app").await["phase"],
        "Running"
    );
    let before = kappa_api(&client, &ns, "Pipeline")
        .get("app")
        .await
        .expect("app");
    run(&["pipeline", "restart", "app", "--wait", "--timeout", "3m"]);
    let after = kappa_api(&client, &ns, "Pipeline")
        .get("app")
        .await
        .expect("app");
    assert_eq!(
        after.data["spec"]["restartNonce"].as_i64(),
        Some(
            before.data["spec"]["restartNonce"]
                .as_i64()
                .unwrap_or_default()
                + 1
        )
    );
    assert_eq!(after.data["status"]["phase"], "Running");

    // Restored to the savepoint; an unknown one is refused.
    let restored = run(&[
        "pipeline",
        "restore",
        "app",
        "--savepoint",
        "snap",
        "--wait",
        "--timeout",
        "3m",
    ]);
    assert!(
        restored.contains("restores from Savepoint snap"),
        "{restored}"
    );
    assert_eq!(
        status(&client, &ns, "Pipeline", "app").await["restoredFrom"],
        "snap"
    );
    refused(
        testbed,
        &[],
        &ns,
        &["pipeline", "restore", "app", "--savepoint", "nosuch"],
        "Savepoint nosuch not found",
    );

    // A Backfill started and cancelled: gone once its teardown ran.
    run(&[
        "backfill",
        "start",
        "redo",
        "--pipeline",
        "app",
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-01-02T00:00:00Z",
        "--completion",
        "output-only",
    ]);
    let cancelled = run(&["backfill", "cancel", "redo", "--wait", "--timeout", "3m"]);
    assert!(
        cancelled.contains("its clusters and Jobs are gone"),
        "{cancelled}"
    );
    assert!(kappa_api(&client, &ns, "Backfill")
        .get_opt("redo")
        .await
        .expect("read")
        .is_none());
    refused(
        testbed,
        &[],
        &ns,
        &["backfill", "cancel", "redo"],
        "Backfill redo not found",
    );

    // Contexts: the kubeconfig's by name; an unknown one is refused.
    run(&["--context", "kappa-testbed", "status"]);
    refused(
        testbed,
        &[],
        &ns,
        &["--context", "nosuch", "status"],
        "no Kubernetes client configuration",
    );

    // No permission: a ServiceAccount without any role.
    testbed.kubectl(&["-n", &ns, "create", "serviceaccount", "nobody"]);
    let secret = loop {
        let name = testbed.jsonpath(&ns, &["serviceaccount", "nobody"], "{.secrets[0].name}");
        if !name.trim().is_empty() {
            break name.trim().to_string();
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), &ns);
    let token = secrets.get(&secret).await.expect("the token's Secret");
    let token = token
        .data
        .and_then(|data| data.get("token").cloned())
        .map(|token| String::from_utf8_lossy(&token.0).into_owned())
        .expect("a token");
    let admin = std::fs::read_to_string(&testbed.kubeconfig).expect("kubeconfig");
    let nobody = admin
        .lines()
        .map(|line| match line.trim_start().strip_prefix("token: ") {
            Some(_) => format!("    token: {token}"),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = testbed.state.join("nobody.kubeconfig");
    std::fs::write(&path, nobody).expect("kubeconfig written");
    refused(
        testbed,
        &[("KUBECONFIG", &path.to_string_lossy())],
        &ns,
        &["status"],
        "Forbidden",
    );
}
