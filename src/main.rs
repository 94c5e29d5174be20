//! The `kappa-operator` binary: `run` the controllers, or print the `crds`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kappa_operator::leader::LeaseSettings;
use kappa_operator::telemetry::{self, LogFormat};
use kappa_operator::{api, duration, operator, replay};

#[derive(Parser)]
#[command(version, about = "Runs the Kappa architecture on Kubernetes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster of the environment (in-cluster or KUBECONFIG).
    Run(RunArgs),
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
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "KAPPA_WATCH_NAMESPACE")]
    namespace: Option<String>,
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
}

/// Exit status of a replay worker stopped by SIGTERM or SIGINT (128 + 15).
const TERMINATED: i32 = 143;

fn parse_duration(text: &str) -> Result<std::time::Duration, duration::DurationError> {
    duration::parse_duration(text)
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
    match Cli::parse().command {
        Command::Crds { out } => match write_crds(out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("kappa-operator crds: {error}");
                ExitCode::FAILURE
            }
        },
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
        Command::Run(args) => {
            telemetry::init(args.log_format);
            let lease = (!args.no_leader_election).then(|| LeaseSettings {
                namespace: args.lease_namespace,
                name: args.lease_name,
                identity: args.identity.unwrap_or_else(default_identity),
                lease_duration: args.lease_duration,
                renew_interval: args.renew_interval,
            });
            let settings = operator::Settings {
                http_address: args.http_address,
                namespace: args.namespace,
                lease,
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
