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
pub mod discovery;
pub mod member;
pub mod producer;
pub mod segments;
pub mod watch;

pub use consumer::{ReadOptions, Record, RoutedConsumer};
pub use member::Member;
pub use producer::{Delivery, RoutedProducer};
pub use watch::{Discovery, DiscoverySource};

use crate::discovery::{ClientSecurity, DiscoveredCluster, DiscoveryDocument};

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

/// Where credentials are mounted unless told otherwise.
pub const CREDENTIALS_DIR: &str = "/var/run/secrets/kappa.dev";

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
            .unwrap_or(Path::new(CREDENTIALS_DIR))
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
        self.connect(&cluster.bootstrap_servers, cluster.security.as_ref(), extra)
    }

    /// The librdkafka settings to reach `bootstrap_servers` secured as
    /// `security` says, credentials included.
    pub fn connect(
        &self,
        bootstrap_servers: &str,
        security: Option<&ClientSecurity>,
        extra: &BTreeMap<String, String>,
    ) -> Result<ClientConfig, ClientError> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap_servers);
        if let Some(security) = security {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::SecretKey;

    #[test]
    fn a_secured_cluster_is_reached_with_the_mounted_credentials() {
        let dir = std::env::temp_dir().join(format!("kappa-credentials-{}", std::process::id()));
        for (secret, key, value) in [
            ("live-client", "username", "replay"),
            ("live-client", "password", "s3cret\n"),
            ("live-ca", "ca.crt", "-----BEGIN CERTIFICATE-----"),
        ] {
            std::fs::create_dir_all(dir.join(secret)).expect("secret dir");
            std::fs::write(dir.join(secret).join(key), value).expect("secret key");
        }
        let security = ClientSecurity {
            protocol: "SASL_SSL".into(),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_secret_name: Some("live-client".into()),
            ca_secret: Some(SecretKey {
                name: "live-ca".into(),
                key: "ca.crt".into(),
            }),
        };
        let extra = BTreeMap::from([("group.id".to_string(), "g".to_string())]);
        let config = Credentials::mounted(&dir)
            .connect("live:9093", Some(&security), &extra)
            .expect("config");
        for (key, value) in [
            ("bootstrap.servers", "live:9093"),
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "replay"),
            ("sasl.password", "s3cret"),
            ("ssl.ca.pem", "-----BEGIN CERTIFICATE-----"),
            ("group.id", "g"),
        ] {
            assert_eq!(config.get(key), Some(value), "{key}");
        }
        let missing = Credentials::mounted(dir.join("elsewhere"))
            .connect("live:9093", Some(&security), &extra)
            .expect_err("nothing mounted there");
        assert!(
            matches!(missing, ClientError::Credentials { .. }),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }
}
