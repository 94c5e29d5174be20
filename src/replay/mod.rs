//! Replay: copying a range of a pipeline's input streams from the source
//! cluster into a Backfill's extra clusters, exactly once, sharded over the
//! workers of an indexed Kubernetes Job (`kappa-operator replay`).
//!
//! Exactly-once does not rely on broker transactions (the testbed's brokers
//! have none). Instead every destination partition has exactly one writer:
//! a source partition's records go only to its own destination partitions
//! ([`route`]), and one worker owns each source partition. Every copied
//! record carries its source partition and offset in headers, and a worker
//! writes to a destination partition in source-offset order. A worker that
//! starts again reads the tail of each of its destination partitions
//! ([`tail`]) and skips, per destination partition, every source record at or
//! below the last one it finds there.

pub mod plan;
pub mod route;
pub mod tail;
pub mod worker;

/// Header carrying the source partition of a copied record (decimal text).
pub const SOURCE_PARTITION_HEADER: &str = "kappa.source.partition";
/// Header carrying the source offset of a copied record (decimal text).
pub const SOURCE_OFFSET_HEADER: &str = "kappa.source.offset";

/// The consumer group, beside the plan's progress group, under which workers
/// record per destination partition the key and value bytes of the range's
/// records there, as that partition's committed "offset". Kafka keeps
/// offset-commit metadata, which would be the natural place, but Tansu 0.6
/// drops it; a committed offset is kept as given.
pub fn bytes_group(progress_group: &str) -> String {
    format!("{progress_group}-bytes")
}

/// Why a replay worker stopped before finishing its share.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The plan file could not be read or parsed.
    #[error("the replay plan {path} could not be read: {message}")]
    Plan {
        /// Where the plan was looked for.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The worker index is not below the plan's worker count.
    #[error("worker {index} does not exist: the plan has {workers} workers")]
    NoSuchWorker {
        /// This worker's index.
        index: i32,
        /// Workers in the plan.
        workers: i32,
    },
    /// The destination partitions kept changing: another run of this worker
    /// is still writing them.
    #[error("the destination partitions kept changing for {seconds}s: another run of this worker is still writing")]
    StillWritten {
        /// How long the worker waited.
        seconds: u64,
    },
    /// The source's credentials could not be read from where they are mounted.
    #[error("the source cluster's credentials: {0}")]
    Credentials(String),
    /// A Kafka client call failed.
    #[error("{what}: {source}")]
    Kafka {
        /// The step that failed.
        what: String,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
    /// A destination partition did not return its records up to its high watermark.
    #[error("{topic}/{partition} on destination {cluster} did not return its records up to its high watermark")]
    Unreadable {
        /// Destination cluster index.
        cluster: usize,
        /// Destination topic.
        topic: String,
        /// Destination partition.
        partition: i32,
    },
    /// A destination topic is missing or has fewer partitions than the plan needs.
    #[error(
        "topic {topic} on destination {cluster} has {found} partitions, the replay needs {needed}"
    )]
    DestinationTopic {
        /// Destination cluster index.
        cluster: usize,
        /// Destination topic.
        topic: String,
        /// Partitions found (0: no such topic).
        found: i32,
        /// Partitions needed.
        needed: i32,
    },
    /// A destination partition holds fewer records than were acknowledged.
    #[error("{topic}/{partition} on destination {cluster} lost acknowledged records: high watermark {high}, more than {written} were written")]
    Lost {
        /// Destination cluster index.
        cluster: usize,
        /// Destination topic.
        topic: String,
        /// Destination partition.
        partition: i32,
        /// The partition's high watermark now.
        high: i64,
        /// Records known written before the last batch.
        written: i64,
    },
}

/// Reads the plan at `path` and copies worker `index`'s share, logging
/// progress; a secured source's Secrets are read from `credentials`.
pub fn run_worker(
    path: &std::path::Path,
    index: i32,
    credentials: &crate::client::Credentials,
) -> Result<(), ReplayError> {
    let plan_error = |message: String| ReplayError::Plan {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| plan_error(e.to_string()))?;
    let plan: plan::ReplayPlan =
        serde_json::from_str(&text).map_err(|e| plan_error(e.to_string()))?;
    let started = std::time::Instant::now();
    let mut report = |p: &worker::Progress| {
        let seconds = started.elapsed().as_secs_f64().max(0.001);
        tracing::info!(
            worker = index,
            copied = p.copied,
            skipped = p.skipped,
            bytes = p.bytes,
            records_per_second = (p.copied as f64 / seconds).round(),
            "replay progress"
        );
    };
    let done = worker::run(&plan, index, credentials, &mut report)?;
    tracing::info!(
        worker = index,
        copied = done.copied,
        skipped = done.skipped,
        bytes = done.bytes,
        seconds = started.elapsed().as_secs_f64(),
        "replay share copied"
    );
    Ok(())
}

impl ReplayError {
    fn kafka(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let what = what.into();
        move |source| Self::Kafka { what, source }
    }
}
