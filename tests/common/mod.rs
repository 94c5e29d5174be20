//! Test harness: one real control plane per test binary (started by
//! `e2e/testbed/up`, stopped by itself when the test process exits), the
//! operator binary as a child process, and a namespace per test.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod flink;
pub mod gitops;
pub mod kafka;
pub mod link;
pub mod node;
pub mod objects;
mod operator;
pub mod prometheus;
pub mod replay;
pub mod routing;

#[allow(unused_imports)] // as dead code above: not every test binary starts an operator
pub use operator::{Operator, STOP_GRACE};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Lines of an operator log that do not count as failures.
const LOG_ALLOW_LIST: [&str; 2] = [
    // A killed leader's lease expiring is expected in the leader-election test.
    "lost the leader lease",
    "kappa-operator stopped",
];

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The control plane of this test binary.
pub struct Testbed {
    /// Kubeconfig of the admin user.
    pub kubeconfig: PathBuf,
    /// Bootstrap addresses of the Tansu brokers started with the testbed.
    pub brokers: Vec<String>,
    /// Runtime state folder (logs, pids).
    pub state: PathBuf,
}

impl Testbed {
    /// Starts the control plane on first use and installs the CRDs from `crds/`.
    pub fn get() -> &'static Testbed {
        static TESTBED: OnceLock<Testbed> = OnceLock::new();
        TESTBED.get_or_init(|| Testbed::start(false, 0, None))
    }

    /// Like [`Testbed::get`], with two Tansu brokers (two single-node Kafka clusters).
    pub fn with_brokers() -> &'static Testbed {
        static TESTBED: OnceLock<Testbed> = OnceLock::new();
        TESTBED.get_or_init(|| Testbed::start(false, 2, None))
    }

    /// Like [`Testbed::with_brokers`], for fault tests: etcd is compacted
    /// every 5 s and watches are served from etcd, so a watch resumed from
    /// a resourceVersion older than a few seconds expires (410 Gone); its
    /// services can be restarted ([`Testbed::restart`]).
    pub fn with_faults() -> &'static Testbed {
        static TESTBED: OnceLock<Testbed> = OnceLock::new();
        TESTBED.get_or_init(|| Testbed::start(false, 2, Some("5s")))
    }

    /// Like [`Testbed::get`], with a real node (kubelet, containerd, DNS) so
    /// that pods run, and two Tansu brokers advertised on the node's address
    /// so that pods reach them. Each such testbed has a node network of its
    /// own, so it runs beside the demo's testbed and other test binaries'.
    pub fn with_node() -> &'static Testbed {
        static TESTBED: OnceLock<Testbed> = OnceLock::new();
        TESTBED.get_or_init(|| Testbed::start(true, 2, None))
    }

    fn start(node: bool, brokers: usize, compaction: Option<&str>) -> Testbed {
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "tests".into());
        // A binary may start more than one kind of testbed: each gets a
        // state folder of its own, or `up` would find the other one running.
        let kind = match (node, compaction) {
            (true, _) => "node",
            (false, Some(_)) => "faults",
            (false, None) => "brokers",
        };
        let state = std::env::temp_dir().join(format!(
            "kappa-testbed-{binary}-{}-{kind}",
            std::process::id()
        ));
        let output = Command::new(repo().join("e2e/testbed/up"))
            .env("KAPPA_TESTBED_STATE", &state)
            .env("KAPPA_TESTBED_NODE", if node { "1" } else { "0" })
            .env("KAPPA_TESTBED_OWNER_PID", std::process::id().to_string())
            .env("KAPPA_TESTBED_BROKERS", brokers.to_string())
            .env("KAPPA_TESTBED_COMPACTION", compaction.unwrap_or_default())
            .stderr(Stdio::inherit())
            .output()
            .expect("e2e/testbed/up runs");
        if !output.status.success() {
            // Remove whatever part did start; its output above says what failed.
            let _ = Command::new(repo().join("e2e/testbed/down"))
                .env("KAPPA_TESTBED_STATE", &state)
                .status();
            panic!("e2e/testbed/up failed");
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let kubeconfig = stdout
            .lines()
            .find_map(|line| line.strip_prefix("export KUBECONFIG="))
            .map(PathBuf::from)
            .expect("e2e/testbed/up prints KUBECONFIG");
        let brokers = stdout
            .lines()
            .find_map(|line| line.strip_prefix("export KAPPA_TESTBED_BROKERS="))
            .map(|list| {
                list.split(',')
                    .filter(|b| !b.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let testbed = Testbed {
            kubeconfig,
            brokers,
            state,
        };
        testbed.kubectl(&["apply", "-k", &repo().join("crds").to_string_lossy()]);
        testbed.kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ]);
        testbed.kubectl(&["create", "namespace", "kappa-system"]);
        testbed
    }

    /// Starts one more Tansu broker named `name` on `port`; returns its address.
    pub fn start_broker(&self, name: &str, port: u16) -> String {
        let output = Command::new(repo().join("e2e/testbed/broker"))
            .args([name, &port.to_string()])
            .env("KAPPA_TESTBED_STATE", &self.state)
            .stderr(Stdio::inherit())
            .output()
            .expect("e2e/testbed/broker runs");
        assert!(output.status.success(), "broker {name} did not start");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// Stops the broker `name` started by [`Testbed::start_broker`] or with
    /// the testbed; its memory storage goes with it.
    pub fn stop_broker(&self, name: &str) {
        let pidfile = self.state.join(format!("pids/broker-{name}.pid"));
        let pid = std::fs::read_to_string(&pidfile).expect("the broker's pid file");
        let status = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "broker {name} was not running");
        let port_free = |port: &str| TcpStream::connect(format!("127.0.0.1:{port}")).is_err();
        let log = std::fs::read_to_string(self.state.join(format!("logs/broker-{name}.log")))
            .unwrap_or_default();
        let port = log
            .split("listening on: tcp://0.0.0.0:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default()
            .to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !port_free(&port) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops `service` (etcd, kube-apiserver), keeps it down for `down`,
    /// starts it again and returns once the API server is ready again.
    pub fn restart(&self, service: &str, down: Duration) {
        let status = Command::new(repo().join("e2e/testbed/restart"))
            .arg(service)
            .arg(down.as_secs().to_string())
            .env("KAPPA_TESTBED_STATE", &self.state)
            .status()
            .expect("e2e/testbed/restart runs");
        assert!(status.success(), "{service} did not come back");
    }

    /// A copy of `kubeconfig` that reaches the API server through `link`.
    pub fn kubeconfig_through(&self, kubeconfig: &Path, link: &link::Link) -> PathBuf {
        let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
        let server = self.api_address();
        let path = self
            .state
            .join(format!("through-{}.kubeconfig", link.address.port()));
        std::fs::write(
            &path,
            text.replace(&server.to_string(), &link.address.to_string()),
        )
        .expect("kubeconfig written");
        path
    }

    /// The API server's address.
    pub fn api_address(&self) -> SocketAddr {
        let text = std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig");
        text.lines()
            .find_map(|line| line.trim().strip_prefix("server: https://"))
            .and_then(|address| address.parse().ok())
            .expect("the kubeconfig names the API server by address")
    }

    /// Freezes broker `name` (SIGSTOP): its connections stay open and
    /// nothing answers on them, as when its traffic is dropped; what it
    /// holds stays (Tansu keeps records in memory, so a stopped broker
    /// would lose them).
    pub fn freeze_broker(&self, name: &str) {
        self.signal_broker(name, "-STOP");
    }

    /// Lets a frozen broker answer again (SIGCONT).
    pub fn thaw_broker(&self, name: &str) {
        self.signal_broker(name, "-CONT");
    }

    fn signal_broker(&self, name: &str, signal: &str) {
        let pidfile = self.state.join(format!("pids/broker-{name}.pid"));
        let pid = std::fs::read_to_string(&pidfile).expect("the broker's pid file");
        let status = Command::new("kill")
            .args([signal, pid.trim()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "broker {name} was not running");
    }

    /// Runs kubectl against the testbed; panics with its output on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let output = self.kubectl_output(args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `kubectl kappa …` through kubectl's plugin lookup, with the
    /// `kubectl-kappa` binary of this build first on the PATH and `env`
    /// set (e.g. another KUBECONFIG).
    pub fn kubectl_kappa_with(&self, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
        let plugin = Path::new(env!("CARGO_BIN_EXE_kubectl-kappa"));
        let folder = plugin.parent().expect("the binary's folder");
        let path = format!(
            "{}:{}",
            folder.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("kubectl")
            .arg("kappa")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", path)
            .envs(env.iter().copied())
            .output()
            .expect("kubectl runs")
    }

    /// `kubectl kappa …` as the testbed's admin.
    pub fn kubectl_kappa(&self, args: &[&str]) -> std::process::Output {
        self.kubectl_kappa_with(&[], args)
    }

    /// `kubectl -n NS get WHAT... -o jsonpath=PATH`: what it prints.
    pub fn jsonpath(&self, ns: &str, what: &[&str], path: &str) -> String {
        let mut args = vec!["-n", ns, "get"];
        args.extend(what);
        let path = format!("jsonpath={path}");
        args.extend(["-o", path.as_str()]);
        self.kubectl(&args)
    }

    /// Runs kubectl against the testbed and returns what happened.
    pub fn kubectl_output(&self, args: &[&str]) -> std::process::Output {
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .expect("kubectl runs")
    }

    /// A client of the admin user, bound to the calling test's runtime.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig reads");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig is usable");
        Client::try_from(config).expect("client builds")
    }

    /// A fresh namespace for one test.
    pub async fn namespace(&self, name: &str) -> String {
        let api: Api<Namespace> = Api::all(self.client().await);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        api.create(&PostParams::default(), &namespace)
            .await
            .expect("test namespace is created");
        name.to_string()
    }
}

/// The lines of an operator's `log` that report an error or a panic, but
/// for those the tests expect and those that contain one of `expected`.
pub fn errors_in<'a>(log: &'a str, expected: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|line| line.contains("ERROR") || line.contains("panicked"))
        .filter(|line| {
            !LOG_ALLOW_LIST
                .iter()
                .chain(expected)
                .any(|allowed| line.contains(allowed))
        })
        .collect()
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    free_address().port()
}

pub fn free_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound address")
}

/// The API of a kappa.dev kind, as untyped objects.
pub fn kappa_api(client: &Client, namespace: &str, kind: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("kappa.dev", "v1alpha1", kind));
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// The status of a kappa object.
pub async fn status(client: &Client, ns: &str, kind: &str, name: &str) -> serde_json::Value {
    let object = kappa_api(client, ns, kind).get(name).await.expect("object");
    object.data["status"].clone()
}

/// Creates an object from JSON; the API server's error message when refused.
pub async fn create(
    client: &Client,
    namespace: &str,
    object: serde_json::Value,
) -> Result<DynamicObject, String> {
    let kind = object["kind"]
        .as_str()
        .expect("object has a kind")
        .to_string();
    let object: DynamicObject = serde_json::from_value(object).expect("object is an object");
    kappa_api(client, namespace, &kind)
        .create(&PostParams::default(), &object)
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) => status.message,
            other => other.to_string(),
        })
}

/// The Ready condition of an object, once `accept` says yes; panics after `timeout`.
pub async fn wait_for_ready(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
    timeout: Duration,
    accept: impl Fn(&Condition) -> bool,
) -> Condition {
    let api = kappa_api(client, namespace, kind);
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < timeout {
        if let Ok(object) = api.get(name).await {
            last = ready_condition(&object);
            if let Some(ready) = last.as_ref().filter(|c| accept(c)) {
                return ready.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{kind} {namespace}/{name}: Ready condition not as expected within {timeout:?}; last: {last:?}");
}

/// Waits until the status of `kind` `name` satisfies `accept`; returns it.
pub async fn wait_for_status(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
    timeout: Duration,
    accept: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let api = kappa_api(client, namespace, kind);
    let started = Instant::now();
    let mut last = serde_json::Value::Null;
    while started.elapsed() < timeout {
        if let Ok(object) = api.get(name).await {
            last = object.data["status"].clone();
            if accept(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{kind} {namespace}/{name}: status not as expected within {timeout:?}; last: {last}");
}

/// Reasons the operator gives a spec it refuses.
const REFUSAL_REASONS: [&str; 5] = [
    "InvalidSpec",
    "KafkaClusterSetNotFound",
    "PipelineNotFound",
    "SavepointNotFound",
    "ReferencedObjectInvalid",
];

/// Whether a Ready condition says the spec passed validation; the object
/// may still wait for something outside (a set's unreachable cluster).
pub fn spec_accepted(ready: &Condition) -> bool {
    !REFUSAL_REASONS.contains(&ready.reason.as_str())
}

/// The Ready condition in an object's status.
pub fn ready_condition(object: &DynamicObject) -> Option<Condition> {
    let conditions = object.data.get("status")?.get("conditions")?.clone();
    let conditions: Vec<Condition> = serde_json::from_value(conditions).ok()?;
    conditions.into_iter().find(|c| c.type_ == "Ready")
}

/// Every YAML document in a file, as JSON values.
pub fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).expect("example reads");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("example is YAML"))
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}

/// What a refused API call or a crash leaves in the operator's log: the
/// status code as a word of its own (not a digit run inside a timestamp),
/// Kubernetes' "forbidden" reason, an error line, a panic.
const REFUSAL_IN_LOG: &str = r#"\b403\b|(?i)forbidden|"level":"ERROR"|panicked"#;

/// The first sign of a refused call, error or panic in an operator's log.
pub fn refusal_in(log: &str) -> Option<&str> {
    let refusal = regex::Regex::new(REFUSAL_IN_LOG).expect("refusal pattern compiles");
    refusal.find(log).map(|found| found.as_str())
}

/// Which testbeds have the shipped ServiceAccount and roles, by state folder.
static SHIPPED_RBAC: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// The shipped manifests' objects of the kinds `keep` accepts, rendered by kustomize.
fn shipped_objects(testbed: &Testbed, keep: impl Fn(&str) -> bool) -> PathBuf {
    let rendered = testbed.kubectl(&["kustomize", &repo().join("manifests").to_string_lossy()]);
    let documents: Vec<&str> = rendered
        .split("\n---\n")
        .filter(|doc| {
            let kind = doc.lines().find_map(|line| line.strip_prefix("kind: "));
            kind.is_some_and(|kind| keep(kind.trim()))
        })
        .collect();
    let manifest = testbed.state.join("manifests.yaml");
    std::fs::write(&manifest, documents.join("\n---\n")).expect("rendered manifests");
    manifest
}

/// Applies `manifests/` without its ValidatingWebhookConfiguration: on a
/// testbed without a node no pod of the operator would answer it
/// (tests/in_cluster.rs tests it), and every object of the four kinds
/// would be refused meanwhile.
pub fn apply_manifests_without_webhook(testbed: &Testbed) {
    // Not at the same time as another apply of the same objects.
    let _applying = SHIPPED_RBAC.lock().unwrap_or_else(|p| p.into_inner());
    let manifest = shipped_objects(testbed, |kind| kind != "ValidatingWebhookConfiguration");
    testbed.kubectl(&["apply", "-f", &manifest.to_string_lossy()]);
}

/// A kubeconfig for the ServiceAccount the shipped manifests create, so the
/// operator runs with exactly the shipped RBAC; applies their namespace,
/// ServiceAccount, roles and bindings (only those) the first time.
pub fn service_account_kubeconfig(testbed: &Testbed) -> PathBuf {
    let path = testbed.state.join("operator-sa.kubeconfig");
    let mut applied = SHIPPED_RBAC.lock().unwrap_or_else(|p| p.into_inner());
    if applied.contains(&testbed.state) {
        return path;
    }
    let manifest = shipped_objects(testbed, |kind| {
        matches!(
            kind,
            "Namespace"
                | "ServiceAccount"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "Role"
                | "RoleBinding"
        )
    });
    testbed.kubectl(&["apply", "-f", &manifest.to_string_lossy()]);
    let mut token = String::new();
    for _ in 0..100 {
        let secret = testbed.kubectl(&[
            "get", "secrets", "-n", "kappa-system", "-o",
            "jsonpath={.items[?(@.metadata.annotations.kubernetes\\.io/service-account\\.name==\"kappa-operator\")].data.token}",
        ]);
        if !secret.trim().is_empty() {
            let decoded = std::process::Command::new("base64")
                .arg("-d")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write;
                    child
                        .stdin
                        .take()
                        .expect("stdin")
                        .write_all(secret.trim().as_bytes())?;
                    child.wait_with_output()
                })
                .expect("base64 decodes");
            token = String::from_utf8_lossy(&decoded.stdout).into_owned();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !token.is_empty(),
        "the token controller issued no token for kappa-operator"
    );
    let admin = std::fs::read_to_string(&testbed.kubeconfig).expect("admin kubeconfig");
    let admin_token = admin
        .lines()
        .find_map(|line| line.trim().strip_prefix("token: "))
        .expect("admin token");
    std::fs::write(&path, admin.replace(admin_token, token.trim()))
        .expect("service account kubeconfig");
    applied.push(testbed.state.clone());
    path
}
