//! The validating admission webhook: every replica serves it over TLS,
//! leader or not, and keeps its certificate current.
//!
//! - [`admit`]: what is refused, built from the kinds' own validation;
//! - [`certificate`]: issuing a CA and serving certificate;
//! - [`keeper`]: the Secret holding them, its renewal, the CA bundle of the
//!   ValidatingWebhookConfiguration, and the TLS settings served;
//! - [`server`]: the HTTPS endpoint the API server calls.

pub mod admit;
pub mod certificate;
pub mod keeper;
pub mod server;

use std::net::SocketAddr;
use std::time::Duration;

/// Who provides the serving certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CertificateSource {
    /// The operator issues a CA and certificate into the Secret, renews them
    /// and writes the CA into the ValidatingWebhookConfiguration.
    Operator,
    /// Someone else (e.g. cert-manager and its CA injector) writes the
    /// Secret and the CA bundle; the operator only serves what it finds.
    External,
}

/// How the webhook runs.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Address of the HTTPS server.
    pub address: SocketAddr,
    /// Namespace of the operator, its Service and Secret.
    pub namespace: String,
    /// The Service the API server calls the webhook through.
    pub service: String,
    /// The `kubernetes.io/tls` Secret with `tls.crt`, `tls.key`, `ca.crt`.
    pub secret: String,
    /// The ValidatingWebhookConfiguration whose CA bundle is kept.
    pub configuration: String,
    /// Who provides the certificate.
    pub certificates: CertificateSource,
    /// How long an issued certificate is valid; renewed two thirds in.
    pub validity: Duration,
}
