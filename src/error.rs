//! Errors of the reconcilers. A spec problem is not an error: it becomes a
//! condition. These are failures to talk to the cluster, retried with backoff.

/// A reconcile that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// Kubernetes returned an object this operator could not read.
    #[error("could not encode or decode an object: {0}")]
    Serialization(#[from] serde_json::Error),
    /// A rule file could not be written as YAML.
    #[error("could not write a rule file: {0}")]
    RuleFile(#[from] serde_yaml::Error),
    /// The object lacks a field every stored object has.
    #[error("object has no {0}")]
    MissingObjectField(&'static str),
    /// Flink refused what a deletion needs; retried.
    #[error("{0}")]
    Flink(#[from] crate::flink::FlinkError),
    /// A cache of watched objects has not listed them yet (a controller
    /// starting); retried.
    #[error("the cache of {0} has not listed them yet")]
    CacheNotReady(&'static str),
    /// A deleted Savepoint's files could not be disposed; retried.
    #[error("{0}")]
    Dispose(String),
}

impl Error {
    /// A fixed name per variant, for metric labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "KubeApiError",
            Self::Serialization(_) => "SerializationError",
            Self::RuleFile(_) => "RuleFileError",
            Self::MissingObjectField(_) => "MissingObjectField",
            Self::Dispose(_) => "DisposeFailed",
            Self::CacheNotReady(_) => "CacheNotReady",
            Self::Flink(error) => error.reason(),
        }
    }
}
