//! A real Prometheus and Alertmanager (Debian's packages) on the host beside
//! the testbed: Prometheus finds the in-cluster operator's pods through
//! Kubernetes service discovery against the testbed's API server, loads the
//! rule files the operator wrote into ConfigMaps (this harness copies them
//! into its rule folder, the part a sidecar such as k8s-sidecar plays in a
//! cluster) and the operator's shipped alerts, and Alertmanager delivers to
//! a webhook receiver the test runs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{free_address, repo, Testbed};

/// How often Prometheus scrapes and evaluates rules in the tests.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// One notification Alertmanager delivered: an alert's labels, annotations
/// and status, and when it arrived.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// When the webhook received it.
    pub at: Instant,
    /// `firing` or `resolved`.
    pub status: String,
    /// The alert's labels.
    pub labels: Value,
    /// The alert's annotations.
    pub annotations: Value,
}

/// Prometheus, Alertmanager and the webhook receiver.
pub struct Monitoring {
    prometheus: Child,
    alertmanager: Child,
    /// Prometheus' HTTP address.
    pub url: String,
    /// Prometheus' port, on every address of the host.
    pub port: u16,
    rules: PathBuf,
    delivered: Arc<Mutex<Vec<Delivered>>>,
    http: reqwest::Client,
}

impl Drop for Monitoring {
    fn drop(&mut self) {
        let _ = self.prometheus.kill();
        let _ = self.alertmanager.kill();
    }
}

/// The API server address, CA file and token of the testbed's kubeconfig.
fn api_access(testbed: &Testbed) -> (String, String, String) {
    let text = std::fs::read_to_string(&testbed.kubeconfig).expect("kubeconfig");
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(key))
            .map(|value| value.trim().to_string())
            .unwrap_or_else(|| panic!("kubeconfig has no {key}"))
    };
    (
        field("server:"),
        field("certificate-authority:"),
        field("token:"),
    )
}

fn start(testbed: &Testbed, name: &str, program: &str, args: &[String]) -> Child {
    let log = testbed.state.join("logs").join(format!("{name}.log"));
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{program} starts (Debian's package, installed by e2e/test): {e}")
        });
    std::fs::write(
        testbed.state.join("pids").join(format!("{name}.pid")),
        child.id().to_string(),
    )
    .expect("pid file");
    child
}

impl Monitoring {
    /// Starts the webhook receiver, Alertmanager and Prometheus, scraping
    /// the operator's pods in `kappa-system`.
    pub async fn start(testbed: &Testbed) -> Monitoring {
        let dir = testbed.state.join("monitoring");
        let rules = dir.join("rules");
        std::fs::create_dir_all(&rules).expect("rules folder");
        std::fs::copy(
            repo().join("manifests/operator.rules.yaml"),
            rules.join("operator.rules.yaml"),
        )
        .expect("operator alerts copied");
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let hook = receive_webhooks(delivered.clone());

        let alertmanager_address = free_address();
        std::fs::write(
            dir.join("alertmanager.yml"),
            format!(
                "route:\n  receiver: test\n  group_by: [alertname, namespace, pipeline, objective, severity]\n  group_wait: 1s\n  group_interval: 5s\n  repeat_interval: 1h\n\
receivers:\n  - name: test\n    webhook_configs: [{{url: 'http://{hook}/', send_resolved: true}}]\n"
            ),
        )
        .expect("alertmanager config");
        let alertmanager = start(
            testbed,
            "alertmanager",
            "prometheus-alertmanager",
            &[
                format!("--config.file={}", dir.join("alertmanager.yml").display()),
                format!("--storage.path={}", dir.join("alertmanager-data").display()),
                format!("--web.listen-address={alertmanager_address}"),
                "--cluster.listen-address=".into(),
            ],
        );

        let (server, ca, token) = api_access(testbed);
        let interval = format!("{}s", INTERVAL.as_secs());
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                r#"global: {{scrape_interval: {interval}, evaluation_interval: {interval}}}
rule_files: ['{rules}/*.yaml']
alerting:
  alertmanagers: [{{static_configs: [{{targets: ['{alertmanager_address}']}}]}}]
scrape_configs:
  - job_name: kappa-operator
    honor_labels: true
    kubernetes_sd_configs:
      - role: pod
        api_server: {server}
        tls_config: {{ca_file: {ca}}}
        authorization: {{credentials: {token}}}
        namespaces: {{names: [kappa-system]}}
    relabel_configs:
      - {{source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name], regex: kappa-operator, action: keep}}
      - {{source_labels: [__meta_kubernetes_pod_container_port_name], regex: http, action: keep}}
      - {{source_labels: [__meta_kubernetes_pod_name], target_label: pod}}
"#,
                rules = rules.display(),
            ),
        )
        .expect("prometheus config");
        let address = free_address();
        let port = address.port();
        let prometheus = start(
            testbed,
            "prometheus",
            "prometheus",
            &[
                format!("--config.file={}", dir.join("prometheus.yml").display()),
                format!(
                    "--storage.tsdb.path={}",
                    dir.join("prometheus-data").display()
                ),
                // Every address, so that pods reach it through the node's bridge.
                format!("--web.listen-address=0.0.0.0:{port}"),
                "--web.enable-lifecycle".into(),
            ],
        );
        let monitoring = Monitoring {
            prometheus,
            alertmanager,
            url: format!("http://{address}"),
            port,
            rules,
            delivered,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while monitoring
            .http
            .get(format!("{}/-/ready", monitoring.url))
            .send()
            .await
            .map_or(true, |r| !r.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "Prometheus is not ready after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        monitoring
    }

    /// Copies every rules ConfigMap (label `kappa.dev/slo-rules=true`) into
    /// the rule folder, drops those gone, and reloads Prometheus.
    pub async fn sync_rules(&self, testbed: &Testbed) {
        let list: Value = serde_json::from_str(&testbed.kubectl(&[
            "get",
            "configmaps",
            "--all-namespaces",
            "-l",
            "kappa.dev/slo-rules=true",
            "-o",
            "json",
        ]))
        .expect("configmap list");
        for entry in std::fs::read_dir(&self.rules).expect("rules folder") {
            let path = entry.expect("entry").path();
            if path.file_name().is_some_and(|n| n != "operator.rules.yaml") {
                std::fs::remove_file(path).expect("old rule file removed");
            }
        }
        for map in list["items"].as_array().into_iter().flatten() {
            for (key, text) in map["data"].as_object().into_iter().flatten() {
                std::fs::write(self.rules.join(key), text.as_str().unwrap_or_default())
                    .expect("rule file written");
            }
        }
        let reload = self
            .http
            .post(format!("{}/-/reload", self.url))
            .send()
            .await
            .expect("reload request");
        assert!(reload.status().is_success(), "reload: {reload:?}");
    }

    /// The names of the rule groups Prometheus has loaded.
    pub async fn rule_groups(&self) -> Vec<String> {
        let rules = self.get("/api/v1/rules", &[]).await;
        rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["name"].as_str().map(String::from))
            .collect()
    }

    /// The result of an instant query.
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        let answer = self.get("/api/v1/query", &[("query", expr)]).await;
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .expect("Prometheus answers")
            .json()
            .await
            .expect("Prometheus answers JSON")
    }

    /// Every notification delivered so far.
    pub fn delivered(&self) -> Vec<Delivered> {
        self.delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until a notification matching `wanted` arrives; panics after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(&Delivered) -> bool,
    ) -> Delivered {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.delivered().into_iter().find(|d| wanted(d)) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {timeout:?}; delivered: {:#?}",
                self.delivered()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Serves Alertmanager's webhook on a free port, keeping every alert of
/// every notification; returns the address.
fn receive_webhooks(delivered: Arc<Mutex<Vec<Delivered>>>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("webhook port");
    let address = listener.local_addr().expect("webhook address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                line.clear();
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let at = Instant::now();
            if let Ok(payload) = serde_json::from_slice::<Value>(&body) {
                let mut kept = delivered.lock().unwrap_or_else(|p| p.into_inner());
                for alert in payload["alerts"].as_array().into_iter().flatten() {
                    kept.push(Delivered {
                        at,
                        status: alert["status"].as_str().unwrap_or_default().to_string(),
                        labels: alert["labels"].clone(),
                        annotations: alert["annotations"].clone(),
                    });
                }
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    address
}
