//! The `kappa-operator` binary: `run` the controllers, or print the `crds`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kappa_operator::flink::jar::{self, JarPolicy};
use kappa_operator::leader::LeaseSettings;
use kappa_operator::telemetry::{self, LogFormat};
use kappa_operator::webhook::{CertificateSource, WebhookSettings};
use kappa_operator::{api, duration, operator, replay, slo};

#[derive(Parser)]
#[command(version, about = "Runs the Kappa architecture on Kubernetes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster of the environment (in-cluster or KUBECONFIG).
    Run(Box<RunArgs>),
    /// Write the CustomResourceDefinitions as YAML: to stdout, or one file per kind into a folder.
    Crds {
        /// Folder to write one `<plural>.yaml` per kind into.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the JSON Schema of the discovery document (docs/discovery.schema.json).
    DiscoverySchema,
    /// Copy one worker's share of a Backfill's replay plan (run by the replay Job).
    Replay(ReplayArgs),
    /// Print the Prometheus rule file of every Pipeline SLO in a YAML file of manifests.
    SloRules {
        /// YAML file of manifests (`-` for stdin); kinds other than Pipeline are skipped.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Namespace of Pipelines that name none.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Where docs/alerts.md is published: the alerts' runbook link.
        #[arg(long, default_value = slo::DEFAULT_RUNBOOKS)]
        runbook_base_url: String,
    },
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// The replay plan (JSON), as the operator writes it into the replay Job's ConfigMap.
    #[arg(
        long,
        env = "KAPPA_REPLAY_PLAN",
        default_value = "/etc/kappa/replay/plan.json"
    )]
    plan: PathBuf,
    /// This worker's index; an indexed Job sets JOB_COMPLETION_INDEX.
    #[arg(long, env = "JOB_COMPLETION_INDEX")]
    worker: i32,
    /// Where the Secrets a secured source names are mounted, one directory each.
    #[arg(long, env = "KAPPA_CREDENTIALS_DIR", default_value = kappa_operator::client::CREDENTIALS_DIR)]
    credentials_dir: PathBuf,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "KAPPA_HTTP_ADDRESS", default_value = "0.0.0.0:8080")]
    http_address: SocketAddr,
    /// Watch only these namespaces (repeat the flag, or separate with commas; default: all namespaces).
    #[arg(
        long = "namespace",
        env = "KAPPA_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    namespaces: Vec<String>,
    /// Log line format.
    #[arg(long, env = "KAPPA_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Run without leader election (only ever one replica).
    #[arg(long)]
    no_leader_election: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kappa-system")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "kappa-operator-leader")]
    lease_name: String,
    /// This replica's identity in the Lease (default: pod name, else host name and process id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a lease stays valid without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: std::time::Duration,
    /// How often the leader renews and standbys retry.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    renew_interval: std::time::Duration,
    /// Where Pipeline SLO rules go: a PrometheusRule (when the cluster
    /// serves that kind), a ConfigMap `<pipeline>-slo-rules`, both, or neither.
    #[arg(long, env = "KAPPA_SLO_RULES", value_enum, default_value = "both")]
    slo_rules: slo::Delivery,
    /// Labels on the rule objects, so that a Prometheus selects them: `k=v,k2=v2`.
    #[arg(long, env = "KAPPA_SLO_RULE_LABELS", default_value = "", value_parser = parse_labels)]
    slo_rule_labels: BTreeMap<String, String>,
    /// Where docs/alerts.md is published: the alerts' runbook link.
    #[arg(long, env = "KAPPA_RUNBOOK_BASE_URL", default_value = slo::DEFAULT_RUNBOOKS)]
    runbook_base_url: String,
    /// Prometheus to read each SLO's error budget from into status.
    #[arg(long, env = "KAPPA_PROMETHEUS_URL")]
    prometheus_url: Option<String>,
    #[command(flatten)]
    webhook: WebhookArgs,
    #[command(flatten)]
    jars: JarArgs,
}

#[derive(clap::Args)]
struct JarArgs {
    /// URL schemes job jars are fetched over (separate with commas).
    #[arg(
        long,
        env = "KAPPA_JAR_SCHEMES",
        value_delimiter = ',',
        default_value = "http,https"
    )]
    jar_schemes: Vec<String>,
    /// The largest job jar fetched, in bytes; a larger one is refused.
    #[arg(long, env = "KAPPA_JAR_MAX_BYTES", default_value_t = jar::DEFAULT_MAX_BYTES)]
    jar_max_bytes: u64,
    /// How long fetching a job jar may take, from the request to its last byte.
    #[arg(long, env = "KAPPA_JAR_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    jar_timeout: std::time::Duration,
}

impl JarArgs {
    fn policy(self) -> JarPolicy {
        JarPolicy {
            schemes: self
                .jar_schemes
                .iter()
                .map(|s| s.trim().to_ascii_lowercase())
                .collect(),
            max_bytes: self.jar_max_bytes,
            timeout: self.jar_timeout,
        }
    }
}

#[derive(clap::Args)]
struct WebhookArgs {
    /// Address of the admission webhook's HTTPS server; no webhook is served without it.
    #[arg(long, env = "KAPPA_WEBHOOK_ADDRESS")]
    webhook_address: Option<SocketAddr>,
    /// The Service the API server calls the webhook through (in the operator's namespace).
    #[arg(
        long,
        env = "KAPPA_WEBHOOK_SERVICE",
        default_value = "kappa-operator-webhook"
    )]
    webhook_service: String,
    /// The `kubernetes.io/tls` Secret of the webhook's certificate (in the operator's namespace).
    #[arg(
        long,
        env = "KAPPA_WEBHOOK_SECRET",
        default_value = "kappa-operator-webhook-tls"
    )]
    webhook_secret: String,
    /// The ValidatingWebhookConfiguration whose CA bundle the operator keeps.
    #[arg(
        long,
        env = "KAPPA_WEBHOOK_CONFIGURATION",
        default_value = "kappa-operator"
    )]
    webhook_configuration: String,
    /// Who writes the certificate: the operator (and keeps the CA bundle), or an external issuer.
    #[arg(
        long,
        env = "KAPPA_WEBHOOK_CERTIFICATES",
        value_enum,
        default_value = "operator"
    )]
    webhook_certificates: CertificateSource,
    /// Validity of a certificate the operator issues; renewed two thirds in.
    #[arg(long, env = "KAPPA_WEBHOOK_CERTIFICATE_VALIDITY", default_value = "90d", value_parser = parse_duration)]
    webhook_certificate_validity: std::time::Duration,
}

impl WebhookArgs {
    fn settings(self, namespace: &str) -> Option<WebhookSettings> {
        Some(WebhookSettings {
            address: self.webhook_address?,
            namespace: namespace.to_string(),
            service: self.webhook_service,
            secret: self.webhook_secret,
            configuration: self.webhook_configuration,
            certificates: self.webhook_certificates,
            validity: self.webhook_certificate_validity,
        })
    }
}

/// Labels written `k=v,k2=v2`.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_string(), value.trim().to_string()))
            }
            _ => Err(format!("`{pair}` is not key=value")),
        })
        .collect()
}

/// Exit status of a replay worker stopped by SIGTERM or SIGINT (128 + 15).
const TERMINATED: i32 = 143;

fn parse_duration(text: &str) -> Result<std::time::Duration, duration::DurationError> {
    duration::parse_duration(text)
}

fn print_slo_rules(file: &std::path::Path, namespace: &str, runbooks: &str) -> ExitCode {
    let text = if file == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    };
    let text = match text {
        Ok(text) => text,
        Err(error) => {
            eprintln!("cannot read {}: {error}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let rules = slo::manifests::rules_of_manifests(&text, namespace, runbooks)
        .map_err(|e| e.to_string())
        .and_then(|rules| serde_yaml::to_string(&rules).map_err(|e| e.to_string()));
    match rules {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(2)
        }
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "kappa-operator".into());
    format!("{host}-{}", std::process::id())
}

fn write_crds(out: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let crds = api::crds();
    match out {
        None => {
            let docs = crds
                .iter()
                .map(|(_, crd)| api::crd_yaml(crd))
                .collect::<Result<Vec<_>, _>>()?;
            print!("{}", docs.join("---\n"));
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            for (file, crd) in &crds {
                std::fs::write(dir.join(file), api::crd_yaml(crd)?)?;
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    kappa_operator::allocator::limit_arenas();
    match Cli::parse().command {
        Command::Crds { out } => match write_crds(out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("kappa-operator crds: {error}");
                ExitCode::FAILURE
            }
        },
        Command::SloRules {
            file,
            namespace,
            runbook_base_url,
        } => print_slo_rules(&file, &namespace, &runbook_base_url),
        Command::DiscoverySchema => {
            print!("{}", kappa_operator::discovery::json_schema());
            ExitCode::SUCCESS
        }
        Command::Replay(args) => {
            telemetry::init(LogFormat::Json);
            // A worker stops at once when told to: its pod may have been
            // force-deleted and a new run of its share started, and every
            // record it wrote after that would be written twice. What it has
            // written stays; the next run resumes from it. It runs as its
            // container's first process, which ignores SIGTERM unless it
            // listens for it.
            tokio::spawn(async {
                kappa_operator::shutdown::termination_signal().await;
                std::process::exit(TERMINATED);
            });
            let credentials = kappa_operator::client::Credentials::mounted(args.credentials_dir);
            let worker = tokio::task::spawn_blocking(move || {
                replay::run_worker(&args.plan, args.worker, &credentials)
            });
            match worker.await {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(error)) => {
                    tracing::error!(%error, "replay worker stopped");
                    ExitCode::FAILURE
                }
                Err(error) => {
                    tracing::error!(%error, "replay worker crashed");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(boxed) => {
            let args = *boxed;
            telemetry::init(args.log_format);
            let webhook = args.webhook.settings(&args.lease_namespace);
            let lease = (!args.no_leader_election).then(|| LeaseSettings {
                namespace: args.lease_namespace,
                name: args.lease_name,
                identity: args.identity.unwrap_or_else(default_identity),
                lease_duration: args.lease_duration,
                renew_interval: args.renew_interval,
            });
            let settings = operator::Settings {
                http_address: args.http_address,
                namespaces: args.namespaces,
                lease,
                slo: slo::SloSettings {
                    delivery: args.slo_rules,
                    rule_labels: args.slo_rule_labels,
                    runbooks: args.runbook_base_url,
                    prometheus_url: args.prometheus_url,
                },
                webhook,
                jars: args.jars.policy(),
            };
            match operator::run(settings).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "kappa-operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
