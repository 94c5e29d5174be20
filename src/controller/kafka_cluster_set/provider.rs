//! Who runs a cluster of the set, and how to reach it. A provider is a
//! trait so that another (such as one over Strimzi's resources) drops in
//! without touching the set's reconciler.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::kafka_cluster_set::{
    BuiltinCluster, ClusterEntry, ExternalCluster, KafkaClusterSetSpec, Provider, SaslMechanism,
};
use crate::discovery::{ClientSecurity, SecretKey};
use crate::kafka::ClusterConnection;

/// Why a cluster cannot be reached yet. Each is a condition reason.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    /// The provider is not part of this operator version.
    #[error("the `{0}` provider is not available in this operator version; use `external`")]
    Unavailable(&'static str),
    /// A Secret or key the cluster's settings name does not exist.
    #[error("{0}")]
    SecretMissing(String),
    /// The API server did not answer.
    #[error("reading a Secret failed: {0}")]
    Api(String),
}

impl ProviderError {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "ProviderUnavailable",
            Self::SecretMissing(_) => "SecretNotFound",
            Self::Api(_) => "KubeApiError",
        }
    }
}

/// A cluster's settings after its overrides, as recorded for immutability.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveSpec {
    /// Who runs it.
    pub provider: Provider,
    /// Builtin settings, for a builtin cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builtin: Option<BuiltinCluster>,
    /// External settings, for an external cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalCluster>,
}

impl EffectiveSpec {
    /// The settings of `cluster`: its overrides over the set's template.
    pub fn of(spec: &KafkaClusterSetSpec, cluster: &ClusterEntry) -> Self {
        let overrides = cluster.overrides.clone().unwrap_or_default();
        let provider = overrides.provider.unwrap_or(spec.template.provider);
        match provider {
            Provider::Builtin => Self {
                provider,
                builtin: Some(
                    overrides
                        .builtin
                        .or_else(|| spec.template.builtin.clone())
                        .unwrap_or_default(),
                ),
                external: None,
            },
            Provider::External => Self {
                provider,
                builtin: None,
                external: overrides
                    .external
                    .or_else(|| spec.template.external.clone()),
            },
        }
    }

    /// A digest of the settings; a recorded cluster whose digest changes has
    /// had its spec edited.
    pub fn hash(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(bytes)[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// How clients reach a cluster: the admin connection (secrets resolved) and
/// what the discovery document says (secrets named, never copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// For the operator's own admin calls.
    pub connection: ClusterConnection,
    /// For clients, without credentials.
    pub security: Option<ClientSecurity>,
}

/// Runs or finds the clusters of a set.
pub trait ClusterProvider: Send + Sync {
    /// How to reach the cluster with these settings.
    fn endpoint<'a>(
        &'a self,
        namespace: &'a str,
        spec: &'a EffectiveSpec,
    ) -> BoxFuture<'a, Result<Endpoint, ProviderError>>;
}

/// Providers by kind, chosen per cluster.
pub struct Providers {
    client: Client,
}

impl Providers {
    /// The providers of this operator version.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl ClusterProvider for Providers {
    fn endpoint<'a>(
        &'a self,
        namespace: &'a str,
        spec: &'a EffectiveSpec,
    ) -> BoxFuture<'a, Result<Endpoint, ProviderError>> {
        match (spec.provider, &spec.external) {
            (Provider::External, Some(external)) => {
                external_endpoint(&self.client, namespace, external).boxed()
            }
            // Validation refuses an external cluster without settings.
            (Provider::External, None) => {
                futures::future::ready(Err(ProviderError::Unavailable("external"))).boxed()
            }
            (Provider::Builtin, _) => {
                futures::future::ready(Err(ProviderError::Unavailable("builtin"))).boxed()
            }
        }
    }
}

/// An existing cluster: its bootstrap servers, with TLS and SASL settings
/// read from the named Secrets.
async fn external_endpoint(
    client: &Client,
    namespace: &str,
    external: &ExternalCluster,
) -> Result<Endpoint, ProviderError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut properties = BTreeMap::new();
    let tls = external.tls.is_some();
    let protocol = match (tls, external.sasl.is_some()) {
        (false, false) => None,
        (true, false) => Some("SSL"),
        (false, true) => Some("SASL_PLAINTEXT"),
        (true, true) => Some("SASL_SSL"),
    };
    let mut security = protocol.map(|protocol| ClientSecurity {
        protocol: protocol.to_string(),
        sasl_mechanism: None,
        sasl_secret_name: None,
        ca_secret: None,
    });
    if let Some(protocol) = protocol {
        properties.insert("security.protocol".to_string(), protocol.to_string());
    }
    if let Some(tls) = &external.tls {
        let ca = secret_value(&secrets, &tls.ca_cert.name, &tls.ca_cert.key).await?;
        properties.insert("ssl.ca.pem".to_string(), ca);
        if let Some(security) = security.as_mut() {
            security.ca_secret = Some(SecretKey {
                name: tls.ca_cert.name.clone(),
                key: tls.ca_cert.key.clone(),
            });
        }
    }
    if let Some(sasl) = &external.sasl {
        let mechanism = match sasl.mechanism {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        };
        properties.insert("sasl.mechanism".to_string(), mechanism.to_string());
        properties.insert(
            "sasl.username".to_string(),
            secret_value(&secrets, &sasl.secret_name, "username").await?,
        );
        properties.insert(
            "sasl.password".to_string(),
            secret_value(&secrets, &sasl.secret_name, "password").await?,
        );
        if let Some(security) = security.as_mut() {
            security.sasl_mechanism = Some(mechanism.to_string());
            security.sasl_secret_name = Some(sasl.secret_name.clone());
        }
    }
    Ok(Endpoint {
        connection: ClusterConnection {
            bootstrap_servers: external.bootstrap_servers.join(","),
            properties,
        },
        security,
    })
}

async fn secret_value(
    secrets: &Api<Secret>,
    name: &str,
    key: &str,
) -> Result<String, ProviderError> {
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| ProviderError::Api(e.to_string()))?
        .ok_or_else(|| ProviderError::SecretMissing(format!("Secret `{name}` does not exist")))?;
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .and_then(|value| String::from_utf8(value.0.clone()).ok())
        .ok_or_else(|| {
            ProviderError::SecretMissing(format!("Secret `{name}` has no UTF-8 key `{key}`"))
        })
}
