//! A Pipeline SLO pages a person, and only when it burns: the operator
//! in-cluster samples a consumer pipeline's objectives, a real Prometheus
//! scrapes its pods (found through the API server) and evaluates the rules
//! the operator wrote, and a real Alertmanager delivers to this test's
//! webhook. Healthy, nothing arrives; with its app broken, the page arrives
//! when the burn-rate math says; repaired, it resolves; with a
//! PrometheusRule kind served, the rules also go into one, and removing the
//! SLO removes them; with the operator stopped, KappaOperatorDown arrives.

mod common;

use std::time::{Duration, Instant};

use common::flink::patch_spec;
use common::node::{demo_consumer, deploy_operator, pod_cluster_set};
use common::objects::pipeline;
use common::prometheus::{Delivered, Monitoring, INTERVAL};
use common::{create, repo, status, Testbed};
use serde_json::{json, Value};

/// The SLO under test: 99% over 6 days, so the page's windows are 12m and
/// 1m at 14.4x (0.144 of the samples bad), and 1h12m and 6m at 6x (0.06).
const TARGET: f64 = 99.0;
const PAGE_PAIRS: [(f64, f64, f64); 2] = [
    (14.4 * (100.0 - TARGET) / 100.0, 12.0 * 60.0, 60.0),
    (6.0 * (100.0 - TARGET) / 100.0, 72.0 * 60.0, 6.0 * 60.0),
];

/// How long the pipeline runs healthy before it is broken.
const HEALTHY: Duration = Duration::from_secs(60);

/// What may pass between a sample turning bad and the alert arriving:
/// the sampler's 10 s, a scrape and an evaluation, Alertmanager's group wait.
fn delivery_slack() -> Duration {
    Duration::from_secs(10) + INTERVAL * 2 + Duration::from_secs(10)
}

/// Seconds of bad samples after which the ratio over a `window` passes
/// `ratio`, when `history` seconds of good ones came before: it is
/// bad / (history + bad) while they all fit in the window.
fn seconds_to_pass(ratio: f64, window: f64, history: f64) -> f64 {
    let within = ratio * history / (1.0 - ratio);
    if history + within <= window {
        within
    } else {
        ratio * window
    }
}

/// Seconds of bad samples after which the page fires: the first of its
/// pairs whose long and short windows both pass their ratio.
fn seconds_to_page(history: f64) -> f64 {
    PAGE_PAIRS
        .iter()
        .map(|&(ratio, long, short)| {
            seconds_to_pass(ratio, long, history).max(seconds_to_pass(ratio, short, history))
        })
        .fold(f64::INFINITY, f64::min)
}

/// Seconds after the last bad sample within which the page resolves: at
/// the latest once every pair's short window holds no bad sample; at the
/// earliest once the shortest short window holds too few (a crash-looping
/// app runs for moments, so bad samples thin out before they stop).
fn seconds_to_resolve() -> (f64, f64) {
    let earliest = PAGE_PAIRS
        .iter()
        .map(|&(ratio, _, short)| short * (1.0 - ratio))
        .fold(f64::INFINITY, f64::min);
    let latest = PAGE_PAIRS
        .iter()
        .map(|&(_, _, short)| short)
        .fold(0.0, f64::max);
    (earliest, latest)
}

/// Waits for the notification `wanted` and checks that it came `predicted`
/// after `since`: not more than 10 s before (samples are taken every 10 s),
/// and not later than the delivery's own delays allow.
async fn arrives_as_predicted(
    monitoring: &Monitoring,
    what: &str,
    since: Instant,
    predicted: Duration,
    wanted: impl Fn(&Delivered) -> bool,
) -> Delivered {
    let timeout = predicted + delivery_slack() + Duration::from_secs(30);
    let delivered = monitoring.wait_for(what, timeout, wanted).await;
    let after = delivered.at.duration_since(since);
    println!("{what} came after {after:?}; predicted {predicted:?}");
    assert!(
        after + Duration::from_secs(10) >= predicted,
        "{what} came after {after:?}, before the {predicted:?} the burn rates allow"
    );
    assert!(
        after <= predicted + delivery_slack(),
        "{what} came after {after:?}, predicted {predicted:?}"
    );
    delivered
}

fn is_page(d: &Delivered, ns: &str, status: &str) -> bool {
    d.status == status
        && d.labels["alertname"] == "KappaPipelineSLOBurn"
        && d.labels["severity"] == "page"
        && d.labels["namespace"] == ns
        && d.labels["pipeline"] == "orders-app"
        && d.labels["objective"] == "availability"
}

async fn phase(client: &kube::Client, ns: &str) -> Option<String> {
    status(client, ns, "Pipeline", "orders-app").await["phase"]
        .as_str()
        .map(String::from)
}

/// Waits until the pipeline's phase satisfies `wanted`; when it did.
async fn wait_phase(client: &kube::Client, ns: &str, wanted: impl Fn(&str) -> bool) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if phase(client, ns).await.as_deref().is_some_and(&wanted) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "phase stayed {:?}",
            phase(client, ns).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits up to two minutes (the operator reads budgets once a minute) for
/// `status.slo` to satisfy `wanted`.
async fn wait_slo(client: &kube::Client, ns: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let slo = status(client, ns, "Pipeline", "orders-app").await["slo"].clone();
        if wanted(&slo) {
            return slo;
        }
        assert!(Instant::now() < deadline, "status.slo stayed {slo}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every query of the chart's Grafana dashboard is valid PromQL, and those
/// of the pipeline and set panels return data within a few scrapes (no
/// Backfill runs here).
async fn assert_dashboard_has_data(monitoring: &Monitoring) {
    let path = repo().join("charts/kappa-operator/files/dashboard.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut section = String::new();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            section = panel["title"].as_str().unwrap_or_default().to_string();
            continue;
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .expect("expr")
                .replace("$namespace", ".*")
                .replace("$pipeline", ".*")
                .replace("$__rate_interval", "1m");
            queried += 1;
            // A series set at the reconcile that just wrote status shows
            // after Prometheus' next scrape.
            let deadline = Instant::now() + INTERVAL * 4;
            let mut result = monitoring.query(&expr).await;
            while result.is_empty() && section != "Backfills" && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                result = monitoring.query(&expr).await;
            }
            if section != "Backfills" {
                assert!(
                    !result.is_empty(),
                    "{section} / {}: no data for {expr} within {:?}",
                    panel["title"],
                    INTERVAL * 4
                );
            }
        }
    }
    assert!(queried >= 12, "{queried} queries");
}

fn app_args(args: &str) -> Value {
    let mut spec = demo_consumer("running");
    spec["engine"]["consumer"]["template"]["spec"]["containers"][0]["args"] = json!([args]);
    spec["engine"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burning_slo_pages_and_a_healthy_one_does_not() {
    let testbed = Testbed::with_node();
    deploy_operator(testbed);
    let client = testbed.client().await;
    let monitoring = Monitoring::start(testbed).await;
    // The operator reads error budgets from it.
    testbed.kubectl(&[
        "-n",
        "kappa-system",
        "set",
        "env",
        "deployment/kappa-operator",
        &format!("KAPPA_PROMETHEUS_URL={}", monitoring.url),
    ]);
    deploy_operator(testbed);
    let ns = testbed.namespace("slo").await;
    pod_cluster_set(testbed, &client, &ns, "slo-orders").await;
    let mut spec = demo_consumer("running");
    spec["slo"] = json!({"availability": TARGET, "window": "6d", "freshness": "1m"});
    create(&client, &ns, pipeline("orders-app", spec))
        .await
        .expect("pipeline");
    wait_phase(&client, &ns, |p| p == "Running").await;

    // The rules the operator wrote, loaded by Prometheus.
    let slo = status(&client, &ns, "Pipeline", "orders-app").await["slo"].clone();
    assert_eq!(
        slo["summary"], "freshness<=1m, running; 99% over 6d",
        "{slo}"
    );
    assert_eq!(
        slo["rules"], "ConfigMap/orders-app-slo-rules",
        "no PrometheusRule kind is served yet: {slo}"
    );
    let group = format!("kappa-slo-{ns}-orders-app");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !monitoring.rule_groups().await.contains(&group) {
        assert!(Instant::now() < deadline, "Prometheus did not load {group}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let sampled_since = slo["sampledSince"]
        .as_str()
        .expect("sampledSince")
        .to_string();

    // Healthy: samples counted, all good, nothing delivered.
    tokio::time::sleep(HEALTHY).await;
    let ratio = monitoring
        .query(&format!(
            "kappa_pipeline:slo_errors:ratio_rate12m{{namespace=\"{ns}\",pipeline=\"orders-app\"}}"
        ))
        .await;
    let objectives: Vec<&str> = ratio
        .iter()
        .filter_map(|r| r["metric"]["objective"].as_str())
        .collect();
    assert_eq!(ratio.len(), 2, "an error ratio per objective: {ratio:?}");
    assert!(objectives.contains(&"availability") && objectives.contains(&"freshness"));
    for series in &ratio {
        assert_eq!(series["value"][1], "0", "healthy, nothing is bad: {series}");
    }
    assert!(
        monitoring.delivered().is_empty(),
        "{:#?}",
        monitoring.delivered()
    );
    let budget_left = |slo: &Value| slo["budgetLeftPercent"].as_f64();
    let slo = wait_slo(&client, &ns, |slo| budget_left(slo).is_some()).await;
    assert_eq!(
        budget_left(&slo),
        Some(100.0),
        "healthy, no budget spent: {slo}"
    );
    assert_dashboard_has_data(&monitoring).await;

    // Broken: its app crashes at start; the page comes when both windows of
    // one pair pass its ratio: with a minute or two of history, the 6x pair's
    // (its 6m window holds all of it) before the 14.4x pair's 12m one.
    patch_spec(
        &client,
        &ns,
        "orders-app",
        json!({"engine": app_args("no-such-mode")}),
    )
    .await;
    let broken = wait_phase(&client, &ns, |p| p != "Running").await;
    let since = k8s_openapi::jiff::Timestamp::now().as_second()
        - sampled_since
            .parse::<k8s_openapi::jiff::Timestamp>()
            .expect("sampledSince is a time")
            .as_second();
    let history = since as f64 - broken.elapsed().as_secs_f64();
    let predicted = Duration::from_secs_f64(seconds_to_page(history));
    println!(
        "healthy for {history:.0} s: the page is due {predicted:?} after the job stopped running"
    );
    let page = arrives_as_predicted(&monitoring, "the page", broken, predicted, |d| {
        is_page(d, &ns, "firing")
    })
    .await;
    assert_eq!(
        page.annotations["runbook_url"], "docs/alerts.md#kappapipelinesloburn",
        "{page:?}"
    );
    assert!(
        page.annotations["summary"]
            .as_str()
            .is_some_and(|s| s.contains(&format!("{ns}/orders-app")) && s.contains("availability")),
        "{page:?}"
    );
    let others: Vec<Delivered> = monitoring
        .delivered()
        .into_iter()
        .filter(|d| {
            d.labels["objective"] == "freshness" || d.labels["alertname"] != "KappaPipelineSLOBurn"
        })
        .collect();
    assert!(
        others.is_empty(),
        "only availability burns (nothing is written, so nothing lags): {others:#?}"
    );

    let slo = wait_slo(&client, &ns, |slo| {
        budget_left(slo).is_some_and(|b| b < 100.0)
    })
    .await;
    println!("after the page: {slo}");

    // Repaired: the 1m window clears within a minute, the 6m one (6x, 0.06)
    // once fewer than 6% of its samples are bad: 338 s after the job runs again.
    patch_spec(
        &client,
        &ns,
        "orders-app",
        json!({"engine": app_args("consume")}),
    )
    .await;
    wait_phase(&client, &ns, |p| p == "Running").await;
    let (earliest, latest) = seconds_to_resolve();
    let resolved = monitoring
        .wait_for(
            "the page's resolution",
            Duration::from_secs_f64(latest) + delivery_slack() + Duration::from_secs(60),
            |d| is_page(d, &ns, "resolved"),
        )
        .await;
    // From the last bad sample as Prometheus scraped it: the app's last
    // moments before it ran again are not the test's to time.
    let bad = format!(
        "kappa_pipeline_slo_samples_total{{namespace=\"{ns}\",objective=\"availability\"}} \
         - kappa_pipeline_slo_good_samples_total{{namespace=\"{ns}\",objective=\"availability\"}}"
    );
    let last_bad = monitoring.last_change(&bad, Duration::from_secs(900)).await;
    let after = resolved.unix - last_bad;
    println!(
        "the page resolved {after:.1} s after the last bad sample was scraped; predicted {earliest:.1} to {latest:.1} s"
    );
    assert!(
        after + 10.0 >= earliest && after <= latest + delivery_slack().as_secs_f64(),
        "resolved {after:.1} s after the last bad sample, predicted {earliest:.1} to {latest:.1} s"
    );

    // A PrometheusRule kind served: the rules also go into one, owned by
    // the pipeline; without an SLO both objects and the samples go.
    testbed.kubectl(&[
        "apply",
        "-f",
        &repo().join("e2e/monitoring-crds.yaml").to_string_lossy(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rules = status(&client, &ns, "Pipeline", "orders-app").await["slo"]["rules"].clone();
        if rules == "ConfigMap/orders-app-slo-rules, PrometheusRule/orders-app-slo" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no PrometheusRule after the kind was served: {rules}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rule: Value = serde_json::from_str(&testbed.kubectl(&[
        "-n",
        &ns,
        "get",
        "prometheusrule",
        "orders-app-slo",
        "-o",
        "json",
    ]))
    .expect("PrometheusRule JSON");
    assert_eq!(rule["metadata"]["ownerReferences"][0]["name"], "orders-app");
    assert_eq!(rule["spec"]["groups"][0]["name"], group.as_str());
    patch_spec(&client, &ns, "orders-app", json!({"slo": null})).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = testbed.kubectl(&[
            "-n",
            &ns,
            "get",
            "prometheusrules,configmaps",
            "-l",
            "kappa.dev/pipeline=orders-app",
            "-o",
            "name",
        ]);
        let slo = status(&client, &ns, "Pipeline", "orders-app").await["slo"].clone();
        if left.trim().is_empty() && slo.is_null() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still there without an SLO: {left} {slo}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let samples = format!("kappa_pipeline_slo_samples_total{{namespace=\"{ns}\"}}");
    while !monitoring.query(&samples).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the removed SLO's samples are still exported"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The operator stopped: KappaOperatorDown after its 5 minutes.
    testbed.kubectl(&[
        "-n",
        "kappa-system",
        "scale",
        "deployment/kappa-operator",
        "--replicas=0",
    ]);
    let stopped = Instant::now();
    let down = monitoring
        .wait_for(
            "operator-down page",
            Duration::from_secs(300) + delivery_slack() + Duration::from_secs(60),
            |d| d.status == "firing" && d.labels["alertname"] == "KappaOperatorDown",
        )
        .await;
    let after = down.at.duration_since(stopped);
    println!("KappaOperatorDown {after:?} after the operator was stopped");
    assert!(
        after >= Duration::from_secs(300),
        "KappaOperatorDown after {after:?}, before its 5 minutes"
    );
    assert_eq!(down.labels["severity"], "page");
}
