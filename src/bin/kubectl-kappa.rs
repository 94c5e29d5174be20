//! `kubectl kappa`: a kubectl plugin (any `kubectl-kappa` on the PATH) for
//! the daily tasks of kappa-operator's users; `kappa_operator::plugin` has
//! what each verb does.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kappa_operator::api::backfill::{
    Backfill, BackfillPhase, BackfillSpec, Capacity, Completion, StartState, StartStateType,
};
use kappa_operator::plugin::backfill_view::{finished, render};
use kappa_operator::plugin::display::Display;
use kappa_operator::plugin::verbs::{self, Done, PipelineChange, Wait};
use kappa_operator::plugin::{follow, PluginError, Session};
use kube::api::PostParams;

#[derive(Parser)]
#[command(
    version,
    about = "Daily tasks of kappa-operator: an overview, write-cluster moves, savepoints, suspensions, restarts, restores and Backfills",
    after_help = "Exit codes: 0 done; 1 the API server refused, an object is missing or in the wrong state, the work failed or did not finish in time; 2 wrong usage."
)]
struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// The kubeconfig context to use (default: the current one).
    #[arg(long, global = true)]
    context: Option<String>,
    /// How to print the result.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// One screen of every KafkaClusterSet, Pipeline, Savepoint and Backfill
    /// of the namespace, what needs attention first.
    Status,
    /// KafkaClusterSets.
    #[command(subcommand)]
    Set(SetCommand),
    /// Pipelines.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Backfills.
    #[command(subcommand)]
    Backfill(BackfillCommand),
}

#[derive(Args, Clone, Copy)]
struct WaitArgs {
    /// Follow the work until it is done (or failed), showing each step.
    #[arg(long)]
    wait: bool,
    /// How long `--wait` waits, e.g. 90s or 10m.
    #[arg(long, default_value = "10m", value_parser = duration)]
    timeout: Duration,
}

impl From<WaitArgs> for Wait {
    fn from(args: WaitArgs) -> Self {
        Wait {
            wait: args.wait,
            timeout: args.timeout,
        }
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    kappa_operator::duration::parse_duration(text).map_err(|e| e.to_string())
}

#[derive(Subcommand)]
enum SetCommand {
    /// Start an ordered move of the set's write cluster (announced to
    /// producers, acknowledged, the old cluster's segment drained by
    /// consumers) and, with --wait, follow it to the end.
    Move {
        /// The KafkaClusterSet.
        set: String,
        /// The cluster producers are to write to.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Subcommand)]
enum PipelineCommand {
    /// Take a Savepoint now (a Flink savepoint, or a consumer pipeline's
    /// committed offsets).
    Savepoint {
        /// The Pipeline.
        pipeline: String,
        /// Name of the Savepoint (default: `<pipeline>-` and a random suffix).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Stop the job (with a savepoint, for Flink) until it is resumed.
    Suspend {
        /// The Pipeline.
        pipeline: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Run a suspended job again, from where it stopped.
    Resume {
        /// The Pipeline.
        pipeline: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Restart the job (its `upgradeMode` says how).
    Restart {
        /// The Pipeline.
        pipeline: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Move a consumer pipeline's groups back to a Completed Savepoint of it.
    Restore {
        /// The Pipeline.
        pipeline: String,
        /// The Savepoint.
        #[arg(long)]
        savepoint: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
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
        /// How long `--watch` follows it.
        #[arg(long, default_value = "24h", value_parser = duration)]
        timeout: Duration,
    },
    /// Delete a Backfill: the operator tears down what it created.
    Cancel {
        /// The Backfill.
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
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
fn instant(flag: &str, text: &str) -> Result<Time, PluginError> {
    text.parse().map(Time).map_err(|e| {
        PluginError::BadInput(format!("--{flag} `{text}` is not an RFC 3339 time: {e}"))
    })
}

fn backfill(args: &StartArgs) -> Result<Backfill, PluginError> {
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
        teardown_after: args.teardown_after.as_str().into(),
    };
    Ok(Backfill::new(&args.name, spec))
}

/// Prints `object` as `output` asks: JSON, YAML, or the text `text` gives.
fn print<T: serde::Serialize>(
    output: Output,
    object: &T,
    text: impl FnOnce() -> String,
) -> Result<(), PluginError> {
    let shown = match output {
        Output::Text => text(),
        Output::Json => serde_json::to_string_pretty(object)
            .map_err(|e| PluginError::Failed(format!("printing JSON: {e}")))?,
        Output::Yaml => serde_yaml::to_string(object)
            .map_err(|e| PluginError::Failed(format!("printing YAML: {e}")))?,
    };
    println!("{}", shown.trim_end());
    Ok(())
}

fn print_done<K: serde::Serialize>(output: Output, done: Done<K>) -> Result<(), PluginError> {
    print(output, &done.object, || done.summary)
}

async fn run(cli: Cli) -> Result<(), PluginError> {
    let session = Session::connect(cli.context, cli.namespace).await?;
    let output = cli.output;
    // Progress goes to standard output only when it does not carry JSON or YAML.
    let mut display = match output {
        Output::Text => Display::stdout(),
        Output::Json | Output::Yaml => Display::quiet(),
    };
    match cli.command {
        Command::Status => {
            let overview = verbs::overview(&session).await?;
            print(output, &overview, || overview.render())
        }
        Command::Set(SetCommand::Move { set, to, wait }) => {
            let done = verbs::move_set(&session, &set, &to, wait.into(), &mut display).await?;
            print_done(output, done)
        }
        Command::Pipeline(command) => {
            let (pipeline, change, wait) = match command {
                PipelineCommand::Savepoint {
                    pipeline,
                    name,
                    wait,
                } => {
                    let done =
                        verbs::take_savepoint(&session, &pipeline, name, wait.into(), &mut display)
                            .await?;
                    return print_done(output, done);
                }
                PipelineCommand::Restore {
                    pipeline,
                    savepoint,
                    wait,
                } => {
                    let done =
                        verbs::restore(&session, &pipeline, &savepoint, wait.into(), &mut display)
                            .await?;
                    return print_done(output, done);
                }
                PipelineCommand::Suspend { pipeline, wait } => {
                    (pipeline, PipelineChange::Suspend, wait)
                }
                PipelineCommand::Resume { pipeline, wait } => {
                    (pipeline, PipelineChange::Resume, wait)
                }
                PipelineCommand::Restart { pipeline, wait } => {
                    (pipeline, PipelineChange::Restart, wait)
                }
            };
            let done =
                verbs::change_pipeline(&session, &pipeline, change, wait.into(), &mut display)
                    .await?;
            print_done(output, done)
        }
        Command::Backfill(BackfillCommand::Start(args)) => {
            let created = session
                .api::<Backfill>()
                .create(&PostParams::default(), &backfill(&args)?)
                .await?;
            print(output, &created, || {
                format!(
                    "backfill.kappa.dev/{} created in {}",
                    args.name, session.namespace
                )
            })
        }
        Command::Backfill(BackfillCommand::Status {
            name,
            watch,
            timeout,
        }) => {
            let shown: Backfill = session.get("Backfill", &name).await?;
            let last = if watch && !finished(&shown) {
                follow(
                    &session.api(),
                    &name,
                    timeout,
                    &mut display,
                    |b: &Backfill| {
                        let verdict = match b.status.as_ref().and_then(|s| s.phase) {
                            Some(BackfillPhase::Completed) => Some(Ok(())),
                            Some(BackfillPhase::Failed) => Some(Err(format!(
                                "Backfill {name} failed: {}",
                                b.status
                                    .as_ref()
                                    .and_then(|s| s.failure.clone())
                                    .unwrap_or_default()
                            ))),
                            _ => None,
                        };
                        (render(b), verdict)
                    },
                )
                .await?
            } else {
                shown
            };
            if watch && output == Output::Text {
                // The display showed it last.
                return Ok(());
            }
            print(output, &last, || render(&last))
        }
        Command::Backfill(BackfillCommand::Cancel { name, wait }) => {
            let summary =
                verbs::cancel_backfill(&session, &name, wait.into(), &mut display).await?;
            println!("{summary}");
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kubectl kappa: {error}");
            ExitCode::FAILURE
        }
    }
}
