//! The webhook's certificates when the operator manages them: a CA and a
//! serving certificate it signs, issued together, and when to renew them.
//!
//! Each renewal issues a new CA. The CA bundle the API server trusts holds
//! the new CA and the one before it, so that a replica still serving the
//! previous certificate is trusted until it has loaded the new one.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

/// Why a certificate could not be issued.
#[derive(Debug, thiserror::Error)]
#[error("issuing the webhook certificate: {0}")]
pub struct IssueError(#[from] rcgen::Error);

/// A CA and a serving certificate signed by it, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The CA certificate.
    pub ca: String,
    /// The serving certificate.
    pub certificate: String,
    /// The serving certificate's private key.
    pub key: String,
    /// When both stop being valid.
    pub not_after: SystemTime,
    /// When they should be replaced: two thirds into their validity.
    pub renew_after: SystemTime,
}

/// Issues a CA and a serving certificate for `dns_names`, valid from a
/// minute before `now` (clocks differ) for `validity`.
pub fn issue(
    dns_names: &[String],
    validity: Duration,
    now: SystemTime,
) -> Result<Issued, IssueError> {
    let not_before = now - Duration::from_secs(60);
    let not_after = now + validity;
    let window = |params: &mut CertificateParams| {
        params.not_before = OffsetDateTime::from(not_before);
        params.not_after = OffsetDateTime::from(not_after);
    };

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    window(&mut ca);
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.distinguished_name
        .push(DnType::CommonName, "kappa-operator webhook CA");
    let ca_key = KeyPair::generate()?;
    let ca_certificate = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut serving = CertificateParams::new(dns_names.to_vec())?;
    window(&mut serving);
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    serving.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    if let Some(first) = dns_names.first() {
        serving
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    let key = KeyPair::generate()?;
    let certificate = serving.signed_by(&key, &issuer)?;
    Ok(Issued {
        ca: ca_certificate.pem(),
        certificate: certificate.pem(),
        key: key.serialize_pem(),
        not_after,
        renew_after: now + validity.mul_f64(2.0 / 3.0),
    })
}

/// The DNS names a Service `service` in `namespace` is called by.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_string(),
    ]
}

/// The CA bundle after a renewal: the new CA first, then the first CA of
/// the bundle before (the one that signed the certificate still served).
pub fn bundle(new_ca: &str, previous: Option<&str>) -> String {
    let kept = previous.and_then(|p| pem_blocks(p).into_iter().next());
    match kept {
        Some(old) if old.trim() != new_ca.trim() => format!("{}\n{}\n", new_ca.trim(), old.trim()),
        _ => format!("{}\n", new_ca.trim()),
    }
}

/// The PEM blocks of `text`, each with its BEGIN and END lines.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            current = Some(vec![line]);
        } else if let Some(block) = current.as_mut() {
            block.push(line);
            if line.starts_with("-----END ") {
                blocks.push(block.join("\n"));
                current = None;
            }
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serving_certificate_is_issued_with_its_ca_and_renewal_time() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let names = service_names("kappa-operator-webhook", "kappa-system");
        let issued = issue(&names, Duration::from_secs(3600), now).expect("issued");
        assert!(issued.ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(issued
            .certificate
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(issued.key.contains("PRIVATE KEY"));
        assert_ne!(issued.ca, issued.certificate);
        assert_eq!(issued.not_after, now + Duration::from_secs(3600));
        assert_eq!(issued.renew_after, now + Duration::from_secs(2400));
    }

    #[test]
    fn the_bundle_keeps_the_new_ca_and_the_one_before_it() {
        let block =
            |n: &str| format!("-----BEGIN CERTIFICATE-----\n{n}\n-----END CERTIFICATE-----");
        let (a, b, c) = (block("a"), block("b"), block("c"));
        assert_eq!(bundle(&a, None), format!("{a}\n"));
        assert_eq!(bundle(&b, Some(&bundle(&a, None))), format!("{b}\n{a}\n"));
        assert_eq!(
            bundle(&c, Some(&format!("{b}\n{a}\n"))),
            format!("{c}\n{b}\n")
        );
        assert_eq!(bundle(&a, Some(&a)), format!("{a}\n"));
    }
}
