//! Replay throughput against real brokers: copies a source topic's whole
//! history into backfill clusters with 1, 2, 4... workers, each worker a
//! `kappa-operator replay` process as the replay Job runs it, and reports
//! records/s and MB/s per worker count. `e2e/bench/replay` writes the
//! source with librdkafka's performance tool and measures the brokers' raw
//! produce and consume rates beside it.
//!
//!   kappa-replay-bench --operator PATH --source HOST:PORT \
//!     --destinations HOST:PORT,HOST:PORT --topic T --to MS [--workers 1,2,4]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use clap::Parser;
use kappa_operator::kafka::rdkafka_admin::RdKafkaAdmin;
use kappa_operator::kafka::{ClusterConnection, DesiredTopic, KafkaAdmin};
use kappa_operator::replay::plan::{locate, ReplayPlan};

#[derive(Parser)]
#[command(about = "Measures replay throughput with different worker counts")]
struct Cli {
    /// The kappa-operator binary the workers run.
    #[arg(long)]
    operator: PathBuf,
    /// Bootstrap address of the source broker.
    #[arg(long)]
    source: String,
    /// Bootstrap addresses of the backfill brokers, comma-separated.
    #[arg(long, value_delimiter = ',')]
    destinations: Vec<String>,
    /// Source topic; its records before `--to` are copied.
    #[arg(long)]
    topic: String,
    /// End of the copied range (ms since the epoch).
    #[arg(long)]
    to: i64,
    /// Worker counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<i32>,
    /// Destination partitions per source partition.
    #[arg(long, default_value_t = 1)]
    multiplier: i32,
    /// Folder for plans and worker logs.
    #[arg(long, default_value = "/tmp")]
    work: PathBuf,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let admin = RdKafkaAdmin::default();
    for workers in &cli.workers {
        let destination_topic = format!("{}-replayed-by-{workers}", cli.topic);
        let stream = locate(
            &admin,
            &ClusterConnection::plaintext(&cli.source),
            (&cli.topic, &cli.topic, &destination_topic),
            (0, cli.to),
        )
        .await?;
        let plan = ReplayPlan {
            source: cli.source.clone(),
            source_security: None,
            destinations: cli.destinations.clone(),
            multiplier: cli.multiplier,
            workers: *workers,
            progress_group: format!("kappa-replay-{destination_topic}"),
            streams: vec![stream],
        };
        let partitions = plan.layout(&plan.streams[0]).destination_partitions();
        for destination in &cli.destinations {
            let topic = DesiredTopic {
                name: destination_topic.clone(),
                partitions,
                replication: 1,
                config: Default::default(),
            };
            admin
                .create_topic(&ClusterConnection::plaintext(destination), &topic)
                .await?;
        }
        let path = cli.work.join(format!("{destination_topic}.json"));
        std::fs::write(&path, serde_json::to_vec(&plan)?)?;
        let started = Instant::now();
        let children = (0..*workers)
            .map(|index| {
                let log = std::fs::File::create(path.with_extension(format!("{index}.log")))?;
                Command::new(&cli.operator)
                    .args(["replay", "--plan", &path.to_string_lossy()])
                    .args(["--worker", &index.to_string()])
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        for mut child in children {
            if !child.wait()?.success() {
                return Err(format!("a worker failed; see {}", cli.work.display()).into());
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let bytes: u64 = (0..*workers)
            .map(|index| copied_bytes(&path.with_extension(format!("{index}.log"))))
            .sum();
        let records = plan.total_records() as f64;
        println!(
            "replay workers={workers} records={records} seconds={seconds:.2} records_per_second={:.0} mb_per_second={:.2}",
            records / seconds,
            bytes as f64 / seconds / 1e6
        );
    }
    Ok(())
}

/// The `bytes` a worker's last log line reports.
fn copied_bytes(log: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rev()
        .find_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()?["bytes"].as_u64())
        .unwrap_or(0)
}
