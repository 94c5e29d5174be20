//! Job jars on their way from a jar server to a Flink session cluster: which
//! URLs the operator fetches (`--jar-schemes`), how large (`--jar-max-bytes`)
//! and how slow (`--jar-timeout`) a jar may be. The bytes are passed on to
//! Flink's upload as they arrive, never held whole in the operator's memory,
//! so a large jar costs the operator no more than a slow one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};

use super::FlinkError;

/// The largest jar fetched unless the operator is told otherwise: 512 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 512 * 1024 * 1024;

/// How long fetching a jar may take unless the operator is told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// What the operator accepts of a job jar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JarPolicy {
    /// URL schemes jars are fetched over (lower case).
    pub schemes: Vec<String>,
    /// The largest jar, in bytes.
    pub max_bytes: u64,
    /// How long the whole transfer may take, from the request to the last byte.
    pub timeout: Duration,
}

impl Default for JarPolicy {
    fn default() -> Self {
        Self {
            schemes: vec!["http".into(), "https".into()],
            max_bytes: DEFAULT_MAX_BYTES,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl JarPolicy {
    /// The jar's URL, when its scheme is one jars are fetched over.
    pub fn admit_url(&self, uri: &str) -> Result<reqwest::Url, FlinkError> {
        let url = reqwest::Url::parse(uri).map_err(|e| refused(uri, format!("not a URL: {e}")))?;
        if !self
            .schemes
            .iter()
            .any(|scheme| scheme.eq_ignore_ascii_case(url.scheme()))
        {
            return Err(refused(
                uri,
                format!(
                    "the scheme {} is not allowed; the operator fetches jars over {} (--jar-schemes)",
                    url.scheme(),
                    self.schemes.join(", ")
                ),
            ));
        }
        Ok(url)
    }

    /// Refuses a jar whose announced length is over the limit, before any of
    /// it is read.
    pub fn admit_length(&self, uri: &str, length: Option<u64>) -> Result<(), FlinkError> {
        match length {
            Some(length) if length > self.max_bytes => Err(self.too_large(uri, length)),
            _ => Ok(()),
        }
    }

    fn too_large(&self, uri: &str, seen: u64) -> FlinkError {
        refused(
            uri,
            format!(
                "it has {seen} bytes or more, over the limit of {} bytes (--jar-max-bytes)",
                self.max_bytes
            ),
        )
    }

    /// What a download error means to a user.
    fn download_failed(&self, uri: &str, error: &reqwest::Error) -> FlinkError {
        let message = if error.is_timeout() {
            format!(
                "the transfer took longer than {} s (--jar-timeout)",
                self.timeout.as_secs()
            )
        } else {
            super::rest::error_chain(error)
        };
        FlinkError::JarUnavailable {
            url: uri.to_string(),
            message,
        }
    }

    /// `body` passed on chunk by chunk; it fails once more than
    /// `max_bytes` passed or the download fails, and `stopped` keeps why
    /// (the upload it feeds only learns that its body failed).
    pub fn limited<S, B>(
        &self,
        uri: &str,
        body: S,
        stopped: Stopped,
    ) -> impl Stream<Item = Result<B, StreamStopped>>
    where
        S: Stream<Item = Result<B, reqwest::Error>>,
        B: AsRef<[u8]>,
    {
        let policy = self.clone();
        let uri = uri.to_string();
        let mut seen: u64 = 0;
        body.map(move |chunk| {
            let failure = match chunk {
                Ok(bytes) => {
                    seen += bytes.as_ref().len() as u64;
                    if seen <= policy.max_bytes {
                        return Ok(bytes);
                    }
                    policy.too_large(&uri, seen)
                }
                Err(error) => policy.download_failed(&uri, &error),
            };
            let words = failure.to_string();
            stopped.keep(failure);
            Err(StreamStopped(words))
        })
    }
}

fn refused(uri: &str, message: String) -> FlinkError {
    FlinkError::JarRefused {
        url: uri.to_string(),
        message,
    }
}

/// Why a jar stopped on its way, once it did.
#[derive(Debug, Clone, Default)]
pub struct Stopped(Arc<Mutex<Option<FlinkError>>>);

impl Stopped {
    fn keep(&self, failure: FlinkError) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.get_or_insert(failure);
    }

    /// The first failure of the jar's stream, if it failed.
    pub fn take(&self) -> Option<FlinkError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The error a jar's stream ends with; its cause is in [`Stopped`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StreamStopped(String);

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use futures::stream;

    use super::*;

    fn reason(result: Result<impl std::fmt::Debug, FlinkError>) -> (&'static str, String) {
        let error = result.expect_err("refused");
        (error.reason(), error.to_string())
    }

    #[test]
    fn only_the_allowed_schemes_are_fetched() {
        let policy = JarPolicy::default();
        assert!(policy.admit_url("https://jars/job.jar").is_ok());
        assert!(policy.admit_url("HTTP://jars/job.jar").is_ok());
        let (why, words) = reason(policy.admit_url("file:///etc/passwd"));
        assert_eq!(why, "JarRefused");
        assert!(words.contains("the scheme file is not allowed"), "{words}");
        assert!(words.contains("over http, https"), "{words}");
        let https_only = JarPolicy {
            schemes: vec!["https".into()],
            ..JarPolicy::default()
        };
        let (_, words) = reason(https_only.admit_url("http://jars/job.jar"));
        assert!(words.contains("scheme http is not allowed"), "{words}");
        let (_, words) = reason(policy.admit_url("jars/job.jar"));
        assert!(words.contains("not a URL"), "{words}");
    }

    #[test]
    fn an_announced_length_over_the_limit_is_refused_before_reading() {
        let policy = JarPolicy {
            max_bytes: 100,
            ..JarPolicy::default()
        };
        assert!(policy.admit_length("http://j/a.jar", Some(100)).is_ok());
        assert!(policy.admit_length("http://j/a.jar", None).is_ok());
        let (why, words) = reason(policy.admit_length("http://j/a.jar", Some(101)));
        assert_eq!(why, "JarRefused");
        assert!(
            words.contains("101 bytes or more, over the limit of 100"),
            "{words}"
        );
    }

    #[test]
    fn a_stream_stops_at_the_first_chunk_past_the_limit_and_keeps_why() {
        let policy = JarPolicy {
            max_bytes: 10,
            ..JarPolicy::default()
        };
        let chunks = || stream::iter([Ok(vec![0u8; 4]), Ok(vec![0; 4]), Ok(vec![0; 4])]);
        let stopped = Stopped::default();
        let passed: Vec<_> = block_on(
            policy
                .limited("http://j/a.jar", chunks(), stopped.clone())
                .collect(),
        );
        assert_eq!(passed.len(), 3);
        assert!(passed[..2].iter().all(Result::is_ok));
        assert!(passed[2].is_err());
        let (why, words) = reason(Err::<(), _>(stopped.take().expect("kept")));
        assert_eq!(why, "JarRefused");
        assert!(words.contains("12 bytes or more"), "{words}");

        let roomy = JarPolicy {
            max_bytes: 12,
            ..policy
        };
        let stopped = Stopped::default();
        let passed: Vec<_> = block_on(
            roomy
                .limited("http://j/a.jar", chunks(), stopped.clone())
                .collect(),
        );
        assert!(passed.iter().all(Result::is_ok));
        assert!(stopped.take().is_none());
    }
}
