//! Clients that follow a KafkaClusterSet's discovery document
//! (`docs/discovery.md`): a producer that writes to each stream's write
//! cluster and moves with it, acknowledging every epoch, and a consumer that
//! reads a stream's segments in order across clusters, so that moving the
//! write cluster loses, repeats and reorders nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rdkafka::ClientConfig;

pub mod check;
pub mod consumer;
pub mod producer;
pub mod segments;
pub mod watch;

pub use consumer::{Record, RoutedConsumer};
pub use producer::{Delivery, RoutedProducer};
pub use watch::{Discovery, DiscoverySource};

use crate::discovery::{DiscoveredCluster, DiscoveryDocument};

/// What a client can run into.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The document names no such stream.
    #[error("stream `{0}` is not in the discovery document")]
    UnknownStream(String),
    /// The document routes to a cluster it does not describe.
    #[error("cluster `{0}` is not in the discovery document")]
    UnknownCluster(String),
    /// A document could not be used.
    #[error("discovery document refused: {0}")]
    Malformed(String),
    /// A background task of the client failed.
    #[error("a client task failed: {0}")]
    Task(String),
    /// The discovery source stopped.
    #[error("the discovery source stopped")]
    DiscoveryClosed,
    /// A credential file named by the document's Secret is missing.
    #[error("credential `{path}` unreadable: {error}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        error: String,
    },
    /// Kafka refused or failed a call.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The API server refused or failed a call.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// What the producer reports in its Lease could not be encoded.
    #[error("encoding the acknowledgement: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Where the credentials of secured clusters are mounted: the Secret that
/// the document names is expected at `<dir>/<secret name>/<key>`.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    dir: Option<PathBuf>,
}

impl Credentials {
    /// Credentials mounted under `dir`.
    pub fn mounted(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: Some(dir.into()),
        }
    }

    fn read(&self, secret: &str, key: &str) -> Result<String, ClientError> {
        let path = self
            .dir
            .as_deref()
            .unwrap_or(Path::new("/var/run/secrets/kappa.dev"))
            .join(secret)
            .join(key);
        std::fs::read_to_string(&path)
            .map(|value| value.trim_end().to_string())
            .map_err(|error| ClientError::Credentials {
                path,
                error: error.to_string(),
            })
    }

    /// The librdkafka settings to reach `cluster`, credentials included.
    pub fn config(
        &self,
        cluster: &DiscoveredCluster,
        extra: &BTreeMap<String, String>,
    ) -> Result<ClientConfig, ClientError> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &cluster.bootstrap_servers);
        if let Some(security) = &cluster.security {
            config.set("security.protocol", &security.protocol);
            if let Some(mechanism) = &security.sasl_mechanism {
                config.set("sasl.mechanism", mechanism);
            }
            if let Some(secret) = &security.sasl_secret_name {
                config.set("sasl.username", self.read(secret, "username")?);
                config.set("sasl.password", self.read(secret, "password")?);
            }
            if let Some(ca) = &security.ca_secret {
                config.set("ssl.ca.pem", self.read(&ca.name, &ca.key)?);
            }
        }
        for (key, value) in extra {
            config.set(key, value);
        }
        Ok(config)
    }
}

/// The cluster `name` of `document`.
fn cluster<'a>(
    document: &'a DiscoveryDocument,
    name: &str,
) -> Result<&'a DiscoveredCluster, ClientError> {
    document
        .clusters
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| ClientError::UnknownCluster(name.to_string()))
}
