//! `kubectl kappa`: a kubectl plugin (any `kubectl-kappa` on the PATH) for
//! Backfills. `backfill start` creates one from flags; `backfill status`
//! shows its phase, a progress bar of the records replayed, the rate and
//! the time left, and with `--watch` follows it until it completes or fails.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kappa_operator::api::backfill::{
    Backfill, BackfillSpec, Capacity, Completion, StartState, StartStateType,
};
use kappa_operator::backfill_view::{finished, render};
use kube::api::PostParams;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

#[derive(Parser)]
#[command(version, about = "Starts and follows kappa-operator Backfills")]
struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Backfills: start one, or show one's progress.
    #[command(subcommand)]
    Backfill(BackfillCommand),
}

#[derive(Subcommand)]
enum BackfillCommand {
    /// Create a Backfill of a Pipeline over a time range.
    Start(StartArgs),
    /// Show a Backfill's phase, progress, rate and ETA.
    Status {
        /// The Backfill.
        name: String,
        /// Show it again on every change until it completes or fails.
        #[arg(short, long)]
        watch: bool,
    },
}

#[derive(Args)]
struct StartArgs {
    /// Name of the Backfill.
    name: String,
    /// The live Pipeline to reprocess for.
    #[arg(long)]
    pipeline: String,
    /// Start of the range (RFC 3339), inclusive.
    #[arg(long)]
    from: String,
    /// End of the range (RFC 3339), exclusive.
    #[arg(long)]
    to: String,
    /// Extra Kafka clusters.
    #[arg(long, default_value_t = 1)]
    clusters: i32,
    /// Partitions of the replayed topics, as a multiple of the source's.
    #[arg(long, default_value_t = 1)]
    partition_multiplier: i32,
    /// Parallelism of the backfill job.
    #[arg(long, default_value_t = 4)]
    parallelism: i32,
    /// Start the backfill job from this Savepoint instead of empty.
    #[arg(long)]
    start_savepoint: Option<String>,
    /// What happens when the backfill job has caught up.
    #[arg(long, value_enum, default_value_t = CompletionArg::Handoff)]
    completion: CompletionArg,
    /// Keep the extra clusters this long after completion.
    #[arg(long, default_value = "0s")]
    teardown_after: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompletionArg {
    Handoff,
    OutputOnly,
}

/// Parses an RFC 3339 instant named by `flag`.
fn instant(flag: &str, text: &str) -> Result<Time, String> {
    text.parse()
        .map(Time)
        .map_err(|e| format!("--{flag} `{text}` is not an RFC 3339 time: {e}"))
}

fn backfill(args: &StartArgs) -> Result<Backfill, String> {
    let start_state = match &args.start_savepoint {
        Some(savepoint) => StartState {
            type_: StartStateType::Savepoint,
            savepoint: Some(savepoint.clone()),
        },
        None => StartState::default(),
    };
    let spec = BackfillSpec {
        pipeline_ref: args.pipeline.clone(),
        from: instant("from", &args.from)?,
        to: instant("to", &args.to)?,
        capacity: Capacity {
            clusters: args.clusters,
            partition_multiplier: args.partition_multiplier,
            parallelism: args.parallelism,
        },
        start_state,
        completion: match args.completion {
            CompletionArg::Handoff => Completion::Handoff,
            CompletionArg::OutputOnly => Completion::OutputOnly,
        },
        teardown_after: args.teardown_after.clone(),
    };
    Ok(Backfill::new(&args.name, spec))
}

async fn run(cli: Cli) -> Result<(), String> {
    let client = Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes client configuration: {e}"))?;
    let namespace = cli
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<Backfill> = Api::namespaced(client, &namespace);
    match cli.command {
        Command::Backfill(BackfillCommand::Start(args)) => {
            let created = api
                .create(&PostParams::default(), &backfill(&args)?)
                .await
                .map_err(|e| format!("the API server refused the Backfill: {e}"))?;
            println!(
                "backfill.kappa.dev/{} created in {namespace}",
                created.metadata.name.unwrap_or_default()
            );
        }
        Command::Backfill(BackfillCommand::Status { name, watch }) => {
            let shown = api
                .get(&name)
                .await
                .map_err(|e| format!("Backfill {name} in {namespace}: {e}"))?;
            println!("{}", render(&shown));
            if watch && !finished(&shown) {
                follow(&api, &name).await?;
            }
        }
    }
    Ok(())
}

/// Shows the Backfill again on every change until it completes or fails.
async fn follow(api: &Api<Backfill>, name: &str) -> Result<(), String> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut changes = watcher::watcher(api.clone(), config).boxed();
    while let Some(event) = changes.next().await {
        match event.map_err(|e| format!("watching Backfill {name}: {e}"))? {
            Event::Apply(backfill) | Event::InitApply(backfill) => {
                println!("\n{}", render(&backfill));
                if finished(&backfill) {
                    return Ok(());
                }
            }
            Event::Delete(_) => return Err(format!("Backfill {name} was deleted")),
            Event::Init | Event::InitDone => {}
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kubectl kappa: {message}");
            ExitCode::FAILURE
        }
    }
}
