//! Which host a switch's TLS certificate names.

use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use super::host_cert_name;

/// Whether `cert` names `host` ([`host_cert_name`]); its chain was checked by TLS already.
pub(super) fn names_host(cert: &CertificateDer<'static>, host: &str) -> Result<(), String> {
    let parsed = tokio_rustls::rustls::server::ParsedCertificate::try_from(cert).map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host_cert_name(host)).map_err(|e| e.to_string())?;
    tokio_rustls::rustls::client::verify_server_name(&parsed, &name).map_err(|e| e.to_string())
}
