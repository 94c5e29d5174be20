//! Keeping the webhook's certificate: every replica, leader or not, reads
//! the Secret at a short interval. With certificates from the operator, the
//! first replica to find the Secret missing or due issues a new one (a
//! write with the read's resourceVersion, so two replicas never both
//! renew: the loser reads the winner's), and every replica makes sure the
//! ValidatingWebhookConfiguration trusts the Secret's CA *before* it serves
//! the Secret's certificate. Without the configuration (deleted to turn
//! admission off) no API server calls the webhook: the certificate is
//! served all the same, so the replica is ready, and trusted again in the
//! first round after the configuration is back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tokio_rustls::rustls::{self, ServerConfig};

use super::certificate::{self, IssueError};
use super::{CertificateSource, WebhookSettings};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Annotation on the Secret: when its certificate should be replaced.
pub const RENEW_AFTER: &str = "kappa.dev/renew-after";
/// Annotation on the Secret: when its certificate expires.
pub const NOT_AFTER: &str = "kappa.dev/not-after";

/// Why the certificate could not be kept this round.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    /// Reading or writing the Secret or webhook configuration failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Issuing failed.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// With an external source, the Secret is not there yet.
    #[error("Secret `{0}` does not exist yet; the certificate source writes it")]
    SecretMissing(String),
    /// The Secret lacks a key or holds no usable certificate and key.
    #[error("Secret `{secret}`: {what}")]
    Unusable {
        /// The Secret.
        secret: String,
        /// What is wrong with it.
        what: String,
    },
}

/// How often the Secret is read: a tenth of the validity, between one
/// second and a minute.
pub fn check_interval(validity: Duration) -> Duration {
    (validity / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Keeps the certificate until `shutdown`, publishing the TLS settings to
/// serve into `tls` whenever the certificate changes.
pub async fn keep(
    client: Client,
    settings: WebhookSettings,
    tls: watch::Sender<Option<Arc<ServerConfig>>>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    let keeper = Keeper {
        secrets: Api::namespaced(client.clone(), &settings.namespace),
        configurations: Api::all(client),
        settings,
    };
    let interval = check_interval(keeper.settings.validity);
    let mut served: Option<(ByteString, ByteString)> = None;
    let mut last_error = String::new();
    loop {
        match keeper.round(&mut served, &tls, &metrics).await {
            Ok(()) => last_error.clear(),
            // Said once, not every few seconds while it lasts.
            Err(error) if error.to_string() != last_error => {
                tracing::warn!(%error, "cannot keep the webhook certificate");
                last_error = error.to_string();
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.signalled() => return,
        }
    }
}

struct Keeper {
    secrets: Api<Secret>,
    configurations: Api<ValidatingWebhookConfiguration>,
    settings: WebhookSettings,
}

impl Keeper {
    async fn round(
        &self,
        served: &mut Option<(ByteString, ByteString)>,
        tls: &watch::Sender<Option<Arc<ServerConfig>>>,
        metrics: &Metrics,
    ) -> Result<(), KeeperError> {
        let secret = match self.settings.certificates {
            CertificateSource::Operator => self.current_secret().await?,
            CertificateSource::External => self
                .secrets
                .get_opt(&self.settings.secret)
                .await?
                .ok_or_else(|| KeeperError::SecretMissing(self.settings.secret.clone()))?,
        };
        // Checked every round: an upgrade of the chart may have reset it.
        let trusted = match self.settings.certificates {
            CertificateSource::Operator => {
                let ca = self.key(&secret, "ca.crt")?;
                self.trust(&ca).await?
            }
            CertificateSource::External => true,
        };
        let pair = (self.key(&secret, "tls.crt")?, self.key(&secret, "tls.key")?);
        if served.as_ref() == Some(&pair) {
            return Ok(());
        }
        let config =
            server_config(&pair.0 .0, &pair.1 .0).map_err(|what| KeeperError::Unusable {
                secret: self.settings.secret.clone(),
                what,
            })?;
        tls.send_replace(Some(Arc::new(config)));
        let expiry = annotation_time(&secret, NOT_AFTER).map_or(0, |t| t.as_second());
        metrics.webhook_certificate_expiry.set(expiry);
        tracing::info!(secret = %self.settings.secret, not_after = %annotation(&secret, NOT_AFTER).unwrap_or("unknown"), "serving the webhook certificate");
        if !trusted {
            tracing::info!(configuration = %self.settings.configuration, "the webhook configuration does not exist: no API server calls the webhook until it is back");
        }
        *served = Some(pair);
        Ok(())
    }

    fn key(&self, secret: &Secret, key: &str) -> Result<ByteString, KeeperError> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .filter(|v| !v.0.is_empty())
            .cloned()
            .ok_or_else(|| KeeperError::Unusable {
                secret: self.settings.secret.clone(),
                what: format!("has no `{key}`"),
            })
    }

    /// The Secret, issued first when missing or due for renewal.
    async fn current_secret(&self) -> Result<Secret, KeeperError> {
        let now = SystemTime::now();
        let found = self.secrets.get_opt(&self.settings.secret).await?;
        let due = |secret: &Secret| {
            annotation_time(secret, RENEW_AFTER)
                .is_none_or(|at| Timestamp::try_from(now).is_ok_and(|n| n >= at))
        };
        if let Some(current) = found.as_ref().filter(|s| !due(s)) {
            return Ok(current.clone());
        }
        let names = certificate::service_names(&self.settings.service, &self.settings.namespace);
        let issued = certificate::issue(&names, self.settings.validity, now)?;
        let previous_ca = found
            .as_ref()
            .and_then(|s| s.data.as_ref()?.get("ca.crt"))
            .map(|ca| String::from_utf8_lossy(&ca.0).into_owned());
        let desired = Secret {
            metadata: ObjectMeta {
                name: Some(self.settings.secret.clone()),
                namespace: Some(self.settings.namespace.clone()),
                resource_version: found
                    .as_ref()
                    .and_then(|s| s.metadata.resource_version.clone()),
                labels: found.as_ref().and_then(|s| s.metadata.labels.clone()),
                annotations: Some(BTreeMap::from([
                    (RENEW_AFTER.to_string(), timestamp(issued.renew_after)),
                    (NOT_AFTER.to_string(), timestamp(issued.not_after)),
                ])),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(BTreeMap::from([
                (
                    "tls.crt".to_string(),
                    ByteString(issued.certificate.into_bytes()),
                ),
                ("tls.key".to_string(), ByteString(issued.key.into_bytes())),
                (
                    "ca.crt".to_string(),
                    ByteString(
                        certificate::bundle(&issued.ca, previous_ca.as_deref()).into_bytes(),
                    ),
                ),
            ])),
            ..Secret::default()
        };
        let written = match &found {
            None => self.secrets.create(&PostParams::default(), &desired).await,
            Some(_) => {
                self.secrets
                    .replace(&self.settings.secret, &PostParams::default(), &desired)
                    .await
            }
        };
        match written {
            Ok(secret) => {
                tracing::info!(secret = %self.settings.secret, "issued a new webhook certificate");
                Ok(secret)
            }
            // Another replica issued first: use its certificate.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                Ok(self.secrets.get(&self.settings.secret).await?)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Makes every webhook of the configuration trust `ca`; `false` when
    /// there is no configuration to trust it.
    async fn trust(&self, ca: &ByteString) -> Result<bool, KeeperError> {
        let name = &self.settings.configuration;
        let Some(configuration) = self.configurations.get_opt(name).await? else {
            return Ok(false);
        };
        let stale: Vec<String> = configuration
            .webhooks
            .unwrap_or_default()
            .into_iter()
            .filter(|w| w.client_config.ca_bundle.as_ref() != Some(ca))
            .map(|w| w.name)
            .collect();
        if stale.is_empty() {
            return Ok(true);
        }
        let webhooks: Vec<serde_json::Value> = stale
            .iter()
            .map(|webhook| serde_json::json!({"name": webhook, "clientConfig": {"caBundle": ca}}))
            .collect();
        let patch = serde_json::json!({"webhooks": webhooks});
        self.configurations
            .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await?;
        tracing::info!(configuration = %name, webhooks = ?stale, "wrote the webhook CA bundle");
        Ok(true)
    }
}

fn annotation<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn annotation_time(secret: &Secret, key: &str) -> Option<Timestamp> {
    annotation(secret, key)?.parse().ok()
}

fn timestamp(at: SystemTime) -> String {
    Timestamp::try_from(at).map_or_else(|_| String::new(), |t| t.to_string())
}

/// TLS settings serving the PEM `certificate` chain with `key`.
fn server_config(certificate: &[u8], key: &[u8]) -> Result<ServerConfig, String> {
    let chain = CertificateDer::pem_slice_iter(certificate)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("tls.key: {e}"))?;
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls.crt and tls.key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_certificate_makes_tls_settings_and_garbage_does_not() {
        let issued = certificate::issue(
            &certificate::service_names("w", "ns"),
            Duration::from_secs(600),
            SystemTime::now(),
        )
        .expect("issued");
        assert!(server_config(issued.certificate.as_bytes(), issued.key.as_bytes()).is_ok());
        let error = server_config(b"not a certificate", issued.key.as_bytes()).unwrap_err();
        assert_eq!(error, "tls.crt holds no certificate");
        let mismatched = certificate::issue(
            &["other".into()],
            Duration::from_secs(600),
            SystemTime::now(),
        )
        .expect("issued");
        assert!(server_config(issued.certificate.as_bytes(), mismatched.key.as_bytes()).is_err());
    }

    #[test]
    fn the_secret_is_read_often_enough_to_renew_in_time() {
        assert_eq!(
            check_interval(Duration::from_secs(90)),
            Duration::from_secs(9)
        );
        assert_eq!(
            check_interval(Duration::from_secs(5)),
            Duration::from_secs(1)
        );
        assert_eq!(
            check_interval(Duration::from_secs(90 * 86_400)),
            Duration::from_secs(60)
        );
    }
}
