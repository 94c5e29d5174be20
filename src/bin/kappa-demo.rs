//! `kappa-demo`: an application of a KafkaClusterSet that shows and checks
//! the routing client. `produce` writes records numbered per key, `consume`
//! prints every record it reads, `check` compares the two: each record read
//! once, in order per key. `aggregate` is a stateful job: it counts and sums
//! the numbers it reads per key and writes what it added to an output stream;
//! `totals` adds up such a stream per key.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use kappa_operator::client::check::Check;
use kappa_operator::client::producer::ProducerSettings;
use kappa_operator::client::{
    ClientError, Credentials, Discovery, DiscoverySource, Member, RoutedConsumer, RoutedProducer,
};

#[derive(Parser)]
#[command(
    version,
    about = "Writes, reads and checks numbered records through a KafkaClusterSet"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Write records `<id>-k<n>` numbered from 0 per key; print what was written as JSON.
    Produce {
        #[command(flatten)]
        discovery: DiscoveryArgs,
        /// The stream to write.
        #[arg(long)]
        stream: String,
        /// This producer's id (names its Lease and its keys).
        #[arg(long)]
        id: String,
        /// How many keys.
        #[arg(long, default_value_t = 5)]
        keys: usize,
        /// How many rounds of one record per key (default: until SIGTERM or Ctrl-C).
        #[arg(long)]
        rounds: Option<u64>,
        /// Pause between rounds, in milliseconds.
        #[arg(long, default_value_t = 10)]
        pause_ms: u64,
    },
    /// Print `<key> <number> <cluster> <partition> <offset>` per record read.
    Consume {
        #[command(flatten)]
        input: InputArgs,
        /// Stop after this many records (default: until SIGTERM or Ctrl-C).
        #[arg(long)]
        records: Option<u64>,
    },
    /// Count and sum the numeric payloads read per key; at every checkpoint
    /// write one record per key read since the last one, `<key>` ->
    /// `<count> <sum>` added, to the output stream, then commit the offsets
    /// read. A key's totals are the sums of its records there (a pod that dies
    /// between writing and committing adds that checkpoint's part twice).
    Aggregate {
        #[command(flatten)]
        input: InputArgs,
        /// The stream to write (a consumer-engine Pipeline sets its outputs).
        #[arg(long, env = "KAPPA_OUTPUTS")]
        output: String,
        /// Time between checkpoints, in milliseconds.
        #[arg(long, default_value_t = 500)]
        checkpoint_ms: u64,
    },
    /// Read an output stream of `aggregate` from its start until nothing
    /// came for a while; print each key's count and sum (the sums of its
    /// records) as JSON.
    Totals {
        #[command(flatten)]
        input: InputArgs,
        /// How long without a record means the end, in milliseconds.
        #[arg(long, default_value_t = 5_000)]
        idle_ms: u64,
    },
    /// Compare what producers wrote (their JSON) with what a consumer printed.
    Check {
        /// Files with a producer's output.
        #[arg(long, required = true)]
        written: Vec<PathBuf>,
        /// File with the consumer's output.
        #[arg(long)]
        read: PathBuf,
    },
}

/// The stream a consumer reads, as which group, through which discovery.
#[derive(Args)]
struct InputArgs {
    #[command(flatten)]
    discovery: DiscoveryArgs,
    /// The stream to read (set by a consumer-engine Pipeline).
    #[arg(long, env = "KAPPA_STREAM")]
    stream: String,
    /// The consumer group (set by a consumer-engine Pipeline).
    #[arg(long, env = "KAPPA_GROUP")]
    group: String,
    /// This replica's pod, whose ordinal picks its share of the partitions
    /// (set by a consumer-engine Pipeline).
    #[arg(long, env = "KAPPA_POD_NAME")]
    pod_name: Option<String>,
    /// How many replicas share the partitions (set by a consumer-engine Pipeline).
    #[arg(long, env = "KAPPA_REPLICAS")]
    replicas: Option<u32>,
}

#[derive(Args)]
struct DiscoveryArgs {
    /// Directory where the `<set>-discovery` ConfigMap is mounted.
    #[arg(
        long,
        env = "KAPPA_DISCOVERY_DIR",
        conflicts_with = "set",
        required_unless_present = "set"
    )]
    discovery_dir: Option<PathBuf>,
    /// The KafkaClusterSet, to follow its ConfigMap through the API server.
    #[arg(long, env = "KAPPA_CLUSTER_SET")]
    set: Option<String>,
    /// The set's namespace.
    #[arg(long, env = "KAPPA_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Where the Secrets the document names are mounted.
    #[arg(long, env = "KAPPA_CREDENTIALS_DIR")]
    credentials_dir: Option<PathBuf>,
    /// Do not acknowledge epochs through a Lease (no API server at hand).
    #[arg(long)]
    no_acknowledge: bool,
}

impl DiscoveryArgs {
    async fn source(&self) -> Result<DiscoverySource, ClientError> {
        match (&self.discovery_dir, &self.set) {
            (Some(dir), _) => Ok(DiscoverySource::Directory(dir.clone())),
            (None, Some(set)) => Ok(DiscoverySource::ConfigMap {
                client: kube::Client::try_default().await?,
                namespace: self.namespace.clone(),
                set: set.clone(),
            }),
            (None, None) => Err(ClientError::Malformed(
                "give --discovery-dir or --set".into(),
            )),
        }
    }

    fn credentials(&self) -> Credentials {
        self.credentials_dir
            .clone()
            .map(Credentials::mounted)
            .unwrap_or_default()
    }
}

async fn stopped() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn produce(
    discovery: &DiscoveryArgs,
    stream: &str,
    id: &str,
    keys: usize,
    rounds: Option<u64>,
    pause: Duration,
) -> Result<(), ClientError> {
    let settings = ProducerSettings {
        id: id.to_string(),
        acknowledge_through: if discovery.no_acknowledge {
            None
        } else {
            Some(kube::Client::try_default().await?)
        },
        credentials: discovery.credentials(),
        config: BTreeMap::new(),
    };
    let producer =
        RoutedProducer::start(Discovery::follow(discovery.source().await?), settings).await?;
    let mut written: BTreeMap<String, u64> = (0..keys).map(|k| (format!("{id}-k{k}"), 0)).collect();
    let mut stop = std::pin::pin!(stopped());
    let mut round = 0;
    while rounds.is_none_or(|r| round < r) {
        for (key, next) in written.iter_mut() {
            producer
                .send(stream, key.as_bytes(), next.to_string().as_bytes())
                .await?;
            *next += 1;
        }
        round += 1;
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    // What was delivered stands even if giving up the Lease fails.
    let closed = producer.close().await;
    println!("{}", serde_json::json!({ "written": written }));
    closed
}

impl InputArgs {
    /// A consumer of the stream, from the group's committed positions.
    async fn consumer(&self) -> Result<RoutedConsumer, ClientError> {
        RoutedConsumer::start_as(
            Discovery::follow(self.discovery.source().await?),
            &self.stream,
            &self.group,
            self.discovery.credentials(),
            Member::of_pod(self.pod_name.as_deref(), self.replicas)?,
        )
        .await
    }
}

async fn consume(input: &InputArgs, records: Option<u64>) -> Result<(), ClientError> {
    let mut consumer = input.consumer().await?;
    let mut stop = std::pin::pin!(stopped());
    let mut out = std::io::stdout().lock();
    let mut count = 0;
    while records.is_none_or(|r| count < r) {
        let record = tokio::select! {
            () = &mut stop => break,
            record = consumer.next() => record?,
        };
        let text = |bytes: Option<Vec<u8>>| {
            String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned()
        };
        let line = format!(
            "{} {} {} {} {}",
            text(record.key),
            text(record.payload),
            record.cluster,
            record.partition,
            record.offset
        );
        if writeln!(out, "{line}").is_err() {
            break;
        }
        count += 1;
    }
    consumer.commit_all().await;
    Ok(())
}

/// Count and sum added per key since the last checkpoint.
type Added = BTreeMap<Vec<u8>, (u64, u64)>;

async fn aggregate(input: &InputArgs, output: &str, every: Duration) -> Result<(), ClientError> {
    if output.contains(',') {
        return Err(ClientError::Malformed(format!(
            "one output stream expected, got `{output}`"
        )));
    }
    let discovery = &input.discovery;
    let settings = ProducerSettings {
        id: input.group.clone(),
        acknowledge_through: None,
        credentials: discovery.credentials(),
        config: BTreeMap::new(),
    };
    let producer =
        RoutedProducer::start(Discovery::follow(discovery.source().await?), settings).await?;
    let mut consumer = input.consumer().await?.commit_only_when_asked();
    let mut added = Added::new();
    let mut stop = std::pin::pin!(stopped());
    let mut checkpoint = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = checkpoint.tick() => write_added(&producer, output, &mut added, &mut consumer).await?,
            record = consumer.next() => {
                let record = record?;
                let number = record
                    .payload
                    .as_deref()
                    .and_then(|p| std::str::from_utf8(p).ok())
                    .and_then(|p| p.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                let totals = added.entry(record.key.unwrap_or_default()).or_default();
                totals.0 += 1;
                totals.1 += number;
            }
        }
    }
    write_added(&producer, output, &mut added, &mut consumer).await?;
    producer.close().await
}

/// Writes what `added` holds to `output`, waits until every record is
/// acknowledged, then commits what the consumer read.
async fn write_added(
    producer: &RoutedProducer,
    output: &str,
    added: &mut Added,
    consumer: &mut RoutedConsumer,
) -> Result<(), ClientError> {
    let values: Vec<(Vec<u8>, String)> = std::mem::take(added)
        .into_iter()
        .map(|(key, (count, sum))| (key, format!("{count} {sum}")))
        .collect();
    futures::future::try_join_all(
        values
            .iter()
            .map(|(key, value)| producer.send(output, key, value.as_bytes())),
    )
    .await?;
    consumer.commit_all().await;
    Ok(())
}

async fn totals(input: &InputArgs, idle: Duration) -> Result<(), ClientError> {
    let mut consumer = input.consumer().await?.commit_only_when_asked();
    let mut totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    while let Ok(record) = tokio::time::timeout(idle, consumer.next()).await {
        let record = record?;
        let key = String::from_utf8_lossy(&record.key.unwrap_or_default()).into_owned();
        let payload = String::from_utf8_lossy(&record.payload.unwrap_or_default()).into_owned();
        let parsed: Vec<u64> = payload
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| ClientError::Malformed(format!("`{payload}` of key {key}: {e}")))?;
        let [count, sum] = parsed[..] else {
            return Err(ClientError::Malformed(format!(
                "`{payload}` of key {key}: a count and a sum expected"
            )));
        };
        let entry = totals.entry(key).or_default();
        entry.0 += count;
        entry.1 += sum;
    }
    println!("{}", serde_json::json!({ "totals": totals }));
    Ok(())
}

fn check(written: &[PathBuf], read: &PathBuf) -> Result<bool, String> {
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for path in written {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(text.trim()).map_err(|e| format!("{}: {e}", path.display()))?;
        let counts: BTreeMap<String, u64> = serde_json::from_value(value["written"].clone())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        expected.extend(counts);
    }
    let file = std::fs::File::open(read).map_err(|e| format!("{}: {e}", read.display()))?;
    let mut check = Check::default();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let mut fields = line.split_whitespace();
        let (Some(key), Some(number)) = (fields.next(), fields.next()) else {
            continue;
        };
        let number = number
            .parse()
            .map_err(|e| format!("`{line}`: record number: {e}"))?;
        check.read(key, number);
    }
    let report = check.report(&expected);
    println!("{report}");
    Ok(report.clean())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let outcome = match Cli::parse().mode {
        Mode::Produce {
            discovery,
            stream,
            id,
            keys,
            rounds,
            pause_ms,
        } => produce(
            &discovery,
            &stream,
            &id,
            keys,
            rounds,
            Duration::from_millis(pause_ms),
        )
        .await
        .map(|()| true)
        .map_err(|e| e.to_string()),
        Mode::Consume { input, records } => consume(&input, records)
            .await
            .map(|()| true)
            .map_err(|e| e.to_string()),
        Mode::Aggregate {
            input,
            output,
            checkpoint_ms,
        } => aggregate(&input, &output, Duration::from_millis(checkpoint_ms))
            .await
            .map(|()| true)
            .map_err(|e| e.to_string()),
        Mode::Totals { input, idle_ms } => totals(&input, Duration::from_millis(idle_ms))
            .await
            .map(|()| true)
            .map_err(|e| e.to_string()),
        Mode::Check { written, read } => check(&written, &read),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("kappa-demo: {error}");
            ExitCode::from(2)
        }
    }
}
