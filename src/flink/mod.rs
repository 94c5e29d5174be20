//! What the operator asks of Flink, as a small trait over its REST API, with
//! one real implementation ([`rest::RestFlink`]). Every answer that is an
//! error keeps Flink's (or the jar server's) own words, so that a condition
//! can show them.

mod hosts;
pub mod jar;
mod job_state;
pub mod rest;

use std::collections::BTreeMap;

use futures::future::BoxFuture;

pub use job_state::FlinkJobState;

/// A Flink call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlinkError {
    /// The REST endpoint did not answer.
    #[error("Flink REST endpoint {url} unreachable: {message}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// Why, as the HTTP client says.
        message: String,
    },
    /// The job jar could not be fetched.
    #[error("fetching the job jar {url} failed: {message}")]
    JarUnavailable {
        /// The jar's URL.
        url: String,
        /// The server's status or the client's error.
        message: String,
    },
    /// The job jar is not fetched: its URL's scheme is not allowed, or it is
    /// larger than the operator accepts (`--jar-schemes`, `--jar-max-bytes`).
    #[error("the job jar {url} is refused: {message}")]
    JarRefused {
        /// The jar's URL.
        url: String,
        /// Which limit it breaks.
        message: String,
    },
    /// Flink refused the request; `message` is what it said.
    #[error("Flink answered {status} to {call}: {message}")]
    Refused {
        /// What was asked, e.g. `POST /jars/{id}/run`.
        call: String,
        /// HTTP status.
        status: u16,
        /// Flink's `errors`, joined.
        message: String,
    },
    /// The job does not exist on the cluster.
    #[error("Flink has no job {0}")]
    JobNotFound(String),
    /// An answer this client could not read.
    #[error("unexpected answer to {call}: {message}")]
    Unexpected {
        /// What was asked.
        call: String,
        /// What was wrong with the answer.
        message: String,
    },
}

impl FlinkError {
    /// One error of each kind, for tests of what users are told.
    #[cfg(test)]
    pub(crate) fn examples() -> [Self; 6] {
        let words = String::new;
        [
            Self::Unreachable {
                url: words(),
                message: words(),
            },
            Self::JarUnavailable {
                url: words(),
                message: words(),
            },
            Self::JarRefused {
                url: words(),
                message: words(),
            },
            Self::Refused {
                call: words(),
                status: 400,
                message: words(),
            },
            Self::JobNotFound(words()),
            Self::Unexpected {
                call: words(),
                message: words(),
            },
        ]
    }

    /// A condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "FlinkUnreachable",
            Self::JarUnavailable { .. } => "JarUnavailable",
            Self::JarRefused { .. } => "JarRefused",
            Self::Refused { .. } => "FlinkRefused",
            Self::JobNotFound(_) => "JobNotFound",
            Self::Unexpected { .. } => "FlinkUnexpectedAnswer",
        }
    }

    /// Whether Flink refused a submission because the job id is taken,
    /// which for a job id chosen before submitting means it was submitted.
    pub fn is_duplicate_submission(&self) -> bool {
        // Flink 2.x says Application, Flink 1.x Job.
        matches!(self, Self::Refused { message, .. }
            if message.contains("DuplicateApplicationSubmissionException")
                || message.contains("DuplicateJobSubmissionException"))
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The job id to give it, chosen before submitting so that a retry after
    /// a crash cannot run the job twice.
    pub job_id: String,
    /// Where the jar is (`http(s)://`).
    pub jar_uri: String,
    /// Main class; the manifest's when unset.
    pub entry_class: Option<String>,
    /// Program arguments.
    pub args: Vec<String>,
    /// Job parallelism.
    pub parallelism: i32,
    /// Savepoint or checkpoint to start from.
    pub savepoint_path: Option<String>,
    /// Whether state of operators no longer in the job may be skipped.
    pub allow_non_restored_state: bool,
}

/// A job as Flink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOverview {
    /// Flink's job state.
    pub state: FlinkJobState,
    /// Whether every task of the job is running: a job is `RUNNING` before
    /// its tasks are deployed, and cannot take a savepoint until they are.
    pub all_tasks_running: bool,
    /// How many of its subtasks are in each state (`SCHEDULED`: waiting for
    /// a TaskManager's slot), states with none left out.
    pub tasks: BTreeMap<String, u32>,
}

impl JobOverview {
    /// The subtasks' states in words: `1 RUNNING, 2 SCHEDULED (waiting for
    /// a TaskManager's slot)`.
    pub fn tasks_words(&self) -> String {
        let words: Vec<String> = self
            .tasks
            .iter()
            .map(|(state, count)| match state.as_str() {
                "SCHEDULED" => format!("{count} {state} (waiting for a TaskManager's slot)"),
                _ => format!("{count} {state}"),
            })
            .collect();
        if words.is_empty() {
            "none reported yet".into()
        } else {
            words.join(", ")
        }
    }
}

/// Where an asynchronous savepoint operation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Still running.
    InProgress,
    /// Done; for a savepoint, where it is.
    Completed(Option<String>),
    /// Failed, with Flink's words.
    Failed(String),
}

/// What a job's checkpoints say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoints {
    /// Path of the latest completed checkpoint or savepoint, the newer of the two.
    pub latest: Option<String>,
    /// Path the job was restored from.
    pub restored: Option<String>,
}

/// Flink's REST API, as far as the operator uses it. `url` is the REST
/// endpoint of a JobManager (a session cluster, or an application's).
pub trait FlinkApi: Send + Sync {
    /// Fetches the jar, uploads it, runs it; the job id Flink took.
    fn submit<'a>(
        &'a self,
        url: &'a str,
        submission: &'a Submission,
    ) -> BoxFuture<'a, Result<String, FlinkError>>;
    /// The job's state and whether its tasks run.
    fn job<'a>(
        &'a self,
        url: &'a str,
        job: &'a str,
    ) -> BoxFuture<'a, Result<JobOverview, FlinkError>>;
    /// How many times Flink has restarted the job (its `numRestarts` metric).
    fn restarts<'a>(
        &'a self,
        url: &'a str,
        job: &'a str,
    ) -> BoxFuture<'a, Result<Option<i64>, FlinkError>>;
    /// Why the job last failed, if it did.
    fn failure<'a>(
        &'a self,
        url: &'a str,
        job: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, FlinkError>>;
    /// Triggers a savepoint under `trigger` (an id chosen by the caller, so
    /// that a trigger repeated after a crash is the same savepoint) into
    /// `directory` (the cluster's default when `None`), stopping the job
    /// with it when `stop`.
    fn trigger_savepoint<'a>(
        &'a self,
        url: &'a str,
        job: &'a str,
        trigger: &'a str,
        directory: Option<&'a str>,
        stop: bool,
    ) -> BoxFuture<'a, Result<(), FlinkError>>;
    /// Where a triggered savepoint stands.
    fn savepoint_status<'a>(
        &'a self,
        url: &'a str,
        job: &'a str,
        trigger: &'a str,
    ) -> BoxFuture<'a, Result<Operation, FlinkError>>;
    /// Cancels the job.
    fn cancel<'a>(&'a self, url: &'a str, job: &'a str) -> BoxFuture<'a, Result<(), FlinkError>>;
    /// The job's latest and restored checkpoints.
    fn checkpoints<'a>(
        &'a self,
        url: &'a str,
        job: &'a str,
    ) -> BoxFuture<'a, Result<Checkpoints, FlinkError>>;
    /// Starts deleting a savepoint's files; the trigger id.
    fn dispose_savepoint<'a>(
        &'a self,
        url: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<String, FlinkError>>;
    /// Where a disposal stands.
    fn disposal_status<'a>(
        &'a self,
        url: &'a str,
        trigger: &'a str,
    ) -> BoxFuture<'a, Result<Operation, FlinkError>>;
}

/// The words of a failure Flink reports as a Java stack trace: its first
/// line and its deepest cause, which together say what went wrong.
pub fn failure_words(stack_trace: &str) -> String {
    let first = stack_trace
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let deepest = stack_trace
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("Caused by: "));
    match deepest {
        Some(cause) if !first.contains(cause) => format!("{first} (caused by {cause})"),
        _ => first,
    }
}

/// A Flink id (32 hex digits, as job and trigger ids are) that depends
/// only on `seed`: the same deployment or savepoint always asks for the
/// same id.
pub fn flink_id(seed: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(seed.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_tasks_are_counted_in_words() {
        let overview = |tasks: &[(&str, u32)]| JobOverview {
            state: FlinkJobState::Running,
            all_tasks_running: false,
            tasks: tasks.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        };
        assert_eq!(overview(&[]).tasks_words(), "none reported yet");
        assert_eq!(
            overview(&[("RUNNING", 1), ("SCHEDULED", 2)]).tasks_words(),
            "1 RUNNING, 2 SCHEDULED (waiting for a TaskManager's slot)"
        );
    }

    #[test]
    fn a_stack_trace_becomes_its_first_line_and_deepest_cause() {
        let trace = "java.util.concurrent.CompletionException: CheckpointException: IO-problem detected.\n\tat a.b(C.java:1)\nCaused by: java.io.IOException: outer\n\tat x\nCaused by: java.nio.file.AccessDeniedException: /proc/kappa\n\tat y";
        assert_eq!(
            failure_words(trace),
            "java.util.concurrent.CompletionException: CheckpointException: IO-problem detected. (caused by java.nio.file.AccessDeniedException: /proc/kappa)"
        );
        assert_eq!(failure_words("just this"), "just this");
    }

    #[test]
    fn a_refused_duplicate_is_recognised_in_both_flink_versions() {
        let refused = |message: &str| FlinkError::Refused {
            call: "POST /jars/x/run".into(),
            status: 400,
            message: message.into(),
        };
        assert!(refused("Could not execute application. (caused by org.apache.flink.runtime.client.DuplicateApplicationSubmissionException: Application has already been submitted.)").is_duplicate_submission());
        assert!(refused("org.apache.flink.runtime.client.DuplicateJobSubmissionException: Job has already been submitted.").is_duplicate_submission());
        assert!(!refused("asked to fail at start").is_duplicate_submission());
    }

    #[test]
    fn job_ids_are_stable_flink_ids() {
        let id = flink_id("uid-1/1");
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(id, flink_id("uid-1/1"));
        assert_ne!(id, flink_id("uid-1/2"));
    }
}
