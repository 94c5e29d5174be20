//! A real Prometheus and Alertmanager (Debian's packages) on the host beside
//! the testbed, started by `e2e/testbed/monitoring`: Prometheus scrapes the
//! in-cluster operator's pods, found through the testbed's API server, and
//! loads the rule files the operator wrote into ConfigMaps and its shipped
//! alerts, and Alertmanager delivers to a webhook receiver the test runs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{repo, Testbed};

/// How often Prometheus scrapes and evaluates rules in the tests.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// One notification Alertmanager delivered: an alert's labels, annotations
/// and status, and when it arrived.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// When the webhook received it.
    pub at: Instant,
    /// The same moment on the wall clock, in Unix seconds, as Prometheus counts time.
    pub unix: f64,
    /// `firing` or `resolved`.
    pub status: String,
    /// The alert's labels.
    pub labels: Value,
    /// The alert's annotations.
    pub annotations: Value,
}

/// Prometheus, Alertmanager and the webhook receiver.
pub struct Monitoring {
    /// Prometheus' HTTP address, at the node's address: pods reach it too.
    pub url: String,
    delivered: Arc<Mutex<Vec<Delivered>>>,
    http: reqwest::Client,
}

impl Monitoring {
    /// Starts the webhook receiver, then Prometheus and Alertmanager with
    /// `e2e/testbed/monitoring` (stopped with the testbed).
    pub async fn start(testbed: &Testbed) -> Monitoring {
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let hook = receive_webhooks(delivered.clone());
        let output = Command::new(repo().join("e2e/testbed/monitoring"))
            .arg(format!("http://{hook}/"))
            .env("KAPPA_TESTBED_STATE", &testbed.state)
            .env(
                "KAPPA_MONITORING_INTERVAL",
                format!("{}s", INTERVAL.as_secs()),
            )
            .stderr(Stdio::inherit())
            .output()
            .expect("e2e/testbed/monitoring runs");
        assert!(output.status.success(), "e2e/testbed/monitoring failed");
        let url = String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("export KAPPA_PROMETHEUS_URL="))
            .expect("e2e/testbed/monitoring prints KAPPA_PROMETHEUS_URL")
            .to_string();
        Monitoring {
            url,
            delivered,
            http: reqwest::Client::new(),
        }
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

    /// When (Unix seconds) the value of `expr`, a single series, last
    /// changed within the past `lookback`, sampled every scrape interval.
    pub async fn last_change(&self, expr: &str, lookback: Duration) -> f64 {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_secs_f64();
        let start = (end - lookback.as_secs_f64()).to_string();
        let step = INTERVAL.as_secs().to_string();
        let answer = self
            .get(
                "/api/v1/query_range",
                &[
                    ("query", expr),
                    ("start", &start),
                    ("end", &end.to_string()),
                    ("step", &step),
                ],
            )
            .await;
        let points = answer["data"]["result"][0]["values"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut changed = None;
        for pair in points.windows(2) {
            if pair[0][1] != pair[1][1] {
                changed = pair[1][0].as_f64();
            }
        }
        changed.unwrap_or_else(|| panic!("{expr} did not change in {lookback:?}: {answer}"))
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
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            if let Ok(payload) = serde_json::from_slice::<Value>(&body) {
                let mut kept = delivered.lock().unwrap_or_else(|p| p.into_inner());
                for alert in payload["alerts"].as_array().into_iter().flatten() {
                    kept.push(Delivered {
                        at,
                        unix,
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
