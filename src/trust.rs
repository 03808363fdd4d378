//! What heal trusts as a TLS client (probes, the CLI and agents toward a
//! heal server, PostgreSQL): the webpki roots, and a private CA's PEM file
//! where one is given.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Reads the PEM certificates of a private CA.
pub(crate) fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca_file {}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "ca_file {} holds no certificate (expected \"-----BEGIN CERTIFICATE-----\")",
            path.display()
        ));
    }
    Ok(certs)
}

/// A rustls client config trusting the webpki roots and `ca`.
pub(crate) fn client_config(
    ca: Option<&[CertificateDer<'static>]>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in ca.unwrap_or_default() {
        roots
            .add(cert.clone())
            .map_err(|e| format!("ca_file: a certificate cannot be used as a root: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
