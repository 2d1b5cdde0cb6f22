//! Plexus's own certificates. A cluster has a CA of its own; it issues the certificates its
//! controller nodes (and, later, agents and operators) present, and every control channel is
//! TLS 1.3 with both ends proving they hold a certificate of that CA.
//!
//! On disk a cluster directory holds `ca.crt`, `ca.key` and one `NAME.crt`/`NAME.key` pair per
//! identity issued there; keys are written mode 0600 in a directory of mode 0700.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::WebPkiServerVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// What can go wrong making, reading or using certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A certificate or key could not be made or parsed.
    #[error("certificate: {0}")]
    Cert(String),
    /// A TLS configuration could not be built from them.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

pub mod token;

pub use token::{Claims, Role, TokenError, TokenKey};

fn io(path: &Path, e: impl std::fmt::Display) -> PkiError {
    PkiError::Io { path: path.to_path_buf(), reason: e.to_string() }
}

fn cert(e: impl std::fmt::Display) -> PkiError {
    PkiError::Cert(e.to_string())
}

/// The subject every cluster CA has. Certificates chain by signature, not by name, so two
/// clusters' CAs sharing it trust nothing of each other.
const CA_NAME: &str = "Plexus cluster CA";
const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";

/// Installs the process's TLS crypto provider (ring); harmless when one is installed.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The name a host's switch certificate carries: `HOST.hosts.plexus`, which no controller
/// node's or operator's certificate can. The controller accepts a switch only with a
/// certificate naming the host its datapath id belongs to.
pub fn host_cert_name(host: &str) -> String {
    format!("{host}.hosts.plexus")
}

/// The name every certificate allowed on the cluster port carries besides its own: controller
/// nodes' and operators'. A host's switch certificate, issued by the same CA, lacks it, so a
/// host that is taken over cannot speak Raft or change the membership.
pub const CLUSTER_ROLE: &str = "cluster.plexus";

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A controller node: serves and calls its peers on the cluster port.
    Node,
    /// An operator: calls the cluster port (membership changes).
    Operator,
    /// Only the calling end, and not on the cluster port (a host's switch).
    Client,
    /// Only the serving end, and not on the cluster port (a node's REST API).
    Api,
}

/// A cluster's CA: its certificate and the key that signs what it issues.
#[derive(Debug)]
pub struct Ca {
    cert_pem: String,
    key: KeyPair,
}

fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert)?;
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_after = rcgen::date_time_ymd(2046, 1, 1);
    Ok(p)
}

/// Writes `contents` to a new file `path` with `mode`; fails if it exists.
fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), std::io::Error> {
    let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// Writes a secret (a token) to a new file readable by its owner only; fails if it exists.
pub fn write_secret(path: &Path, secret: &str) -> Result<(), PkiError> {
    write_new(path, &format!("{secret}\n"), 0o600).map_err(|e| io(path, e))
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|e| io(path, e))
}

impl Ca {
    /// A new CA.
    pub fn create() -> Result<Ca, PkiError> {
        let key = KeyPair::generate().map_err(cert)?;
        let cert_pem = ca_params()?.self_signed(&key).map_err(cert)?.pem();
        Ok(Ca { cert_pem, key })
    }

    /// The CA in `dir`, made there first if the directory has none. Several processes may
    /// race to make it (the nodes of a lab starting at once): one wins, the others read it.
    pub fn open_or_create(dir: &Path) -> Result<Ca, PkiError> {
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| io(dir, e))?;
        let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
        if !key_path.exists() {
            let ca = Ca::create()?;
            match write_new(&key_path, &ca.key.serialize_pem(), 0o600) {
                Ok(()) => {
                    write_new(&cert_path, &ca.cert_pem, 0o644).map_err(|e| io(&cert_path, e))?;
                    tracing::info!(dir = %dir.display(), "created a cluster CA");
                    return Ok(ca);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(&key_path, e)),
            }
        }
        // Another process is writing it: wait (briefly) for both halves.
        for _ in 0..100 {
            if let (Ok(c), Ok(k)) = (fs::read_to_string(&cert_path), fs::read_to_string(&key_path)) {
                if !c.is_empty() && !k.is_empty() {
                    return Ca::from_pem(&c, &k);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ca::from_pem(&read(&cert_path)?, &read(&key_path)?)
    }

    /// Writes a cluster's CA (certificate and key) and token key into `dir`, as a node that
    /// joins with a join token receives them; refuses to replace a CA already there.
    pub fn install(dir: &Path, ca_pem: &str, ca_key_pem: &str, token_key: &str) -> Result<(), PkiError> {
        Ca::from_pem(ca_pem, ca_key_pem)?;
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| io(dir, e))?;
        let key = dir.join(CA_KEY);
        write_new(&key, ca_key_pem, 0o600).map_err(|e| io(&key, e))?;
        let cert = dir.join(CA_CERT);
        write_new(&cert, ca_pem, 0o644).map_err(|e| io(&cert, e))?;
        token::TokenKey::install(dir, token_key)
    }

    /// The CA in `dir` (it must be there).
    pub fn open(dir: &Path) -> Result<Ca, PkiError> {
        Ca::from_pem(&read(&dir.join(CA_CERT))?, &read(&dir.join(CA_KEY))?)
    }

    /// A CA from its certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(cert)?;
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(cert)?;
        Ok(Ca { cert_pem: cert_pem.to_string(), key })
    }

    /// The CA's certificate.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate named `name` (its common name and a DNS name), valid also for
    /// `sans` (DNS names or IP addresses), for `usage`.
    pub fn issue(&self, name: &str, sans: &[String], usage: Usage) -> Result<Identity, PkiError> {
        let mut names = vec![name.to_string()];
        names.extend(sans.iter().filter(|s| *s != name).cloned());
        if matches!(usage, Usage::Node | Usage::Operator) {
            names.push(CLUSTER_ROLE.to_string());
        }
        let mut p = CertificateParams::new(names).map_err(cert)?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = match usage {
            Usage::Node => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Operator | Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Api => vec![ExtendedKeyUsagePurpose::ServerAuth],
        };
        p.not_after = rcgen::date_time_ymd(2045, 1, 1);
        let key = KeyPair::generate().map_err(cert)?;
        let issuer = Issuer::new(ca_params()?, &self.key);
        let c = p.signed_by(&key, &issuer).map_err(cert)?;
        Ok(Identity { cert_pem: c.pem(), key_pem: key.serialize_pem(), ca_pem: self.cert_pem.clone() })
    }

    /// The identity `name` in `dir`, issued there (by the CA in `dir`, made if need be) the
    /// first time it is asked for.
    pub fn identity_in(dir: &Path, name: &str, sans: &[String], usage: Usage) -> Result<Identity, PkiError> {
        if let Ok(id) = Identity::load(dir, name) {
            return Ok(id);
        }
        let ca = Ca::open_or_create(dir)?;
        let id = ca.issue(name, sans, usage)?;
        id.save(dir, name)?;
        Ok(id)
    }
}

/// A certificate, its key, and the CA that issued it (and that its peers must be issued by).
#[derive(Clone)]
pub struct Identity {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
    /// The CA's certificate (PEM).
    pub ca_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

impl Identity {
    /// `dir/NAME.crt`, `dir/NAME.key` and `dir/ca.crt`.
    pub fn load(dir: &Path, name: &str) -> Result<Identity, PkiError> {
        Ok(Identity { cert_pem: read(&dir.join(format!("{name}.crt")))?, key_pem: read(&dir.join(format!("{name}.key")))?, ca_pem: read(&dir.join(CA_CERT))? })
    }

    /// Writes `dir/NAME.crt` and `dir/NAME.key` (mode 0600), refusing to replace them.
    pub fn save(&self, dir: &Path, name: &str) -> Result<(), PkiError> {
        let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        write_new(&k, &self.key_pem, 0o600).map_err(|e| io(&k, e))?;
        write_new(&c, &self.cert_pem, 0o644).map_err(|e| io(&c, e))
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, PkiError> {
        let mut roots = RootCertStore::empty();
        let ca = CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).map_err(cert)?;
        roots.add(ca).map_err(|e| PkiError::Tls(e.to_string()))?;
        Ok(Arc::new(roots))
    }

    fn chain(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
        let certs = vec![CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).map_err(cert)?];
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(cert)?;
        Ok((certs, key))
    }

    /// TLS 1.3 for a server that admits only clients presenting a certificate of its CA and,
    /// with `role`, naming that role too ([`CLUSTER_ROLE`] on the cluster port): a client
    /// without it never gets a session.
    pub fn server_config(&self, role: Option<&str>) -> Result<Arc<ServerConfig>, PkiError> {
        install_crypto_provider();
        let chain = WebPkiClientVerifier::builder(self.roots()?).build().map_err(|e| PkiError::Tls(e.to_string()))?;
        let role = role.map(|r| ServerName::try_from(r.to_string())).transpose().map_err(|e| PkiError::Tls(e.to_string()))?;
        let verifier: Arc<dyn ClientCertVerifier> = match role {
            Some(role) => Arc::new(RoleVerifier { chain, role }),
            None => chain,
        };
        let (certs, key) = self.chain()?;
        let cfg = ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        Ok(Arc::new(cfg))
    }

    /// TLS for the REST API's server: clients prove who they are with a token, not a
    /// certificate, and may be anything from curl to Prometheus, so TLS 1.2 is allowed too.
    pub fn api_server_config(&self) -> Result<Arc<ServerConfig>, PkiError> {
        install_crypto_provider();
        let (certs, key) = self.chain()?;
        let cfg = ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).map_err(|e| PkiError::Tls(e.to_string()))?;
        Ok(Arc::new(cfg))
    }

    /// TLS 1.3 for a client that trusts only servers with a certificate of its CA, and
    /// presents its own.
    pub fn client_config(&self) -> Result<ClientConfig, PkiError> {
        install_crypto_provider();
        let verifier = WebPkiServerVerifier::builder(self.roots()?).build().map_err(|e| PkiError::Tls(e.to_string()))?;
        let (certs, key) = self.chain()?;
        ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(certs, key)
            .map_err(|e| PkiError::Tls(e.to_string()))
    }
}

/// TLS for a client of the REST API: it trusts only servers with a certificate of the CA in
/// `ca_pem` (the cluster's, `ca.crt`) and presents none.
pub fn api_client_config(ca_pem: &str) -> Result<ClientConfig, PkiError> {
    install_crypto_provider();
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.map_err(cert)?).map_err(|e| PkiError::Tls(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(PkiError::Cert("the CA file holds no certificate".into()));
    }
    Ok(ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
}

/// The CA's chain check, then the role's name on the client's certificate.
#[derive(Debug)]
struct RoleVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    role: ServerName<'static>,
}

impl ClientCertVerifier for RoleVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self.chain.verify_client_cert(end_entity, intermediates, now)?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&parsed, &self.role)?;
        Ok(ok)
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_gets_one_ca_and_identities_it_issues() {
        let dir = std::env::temp_dir().join(format!("plexus-pki-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let a = Ca::identity_in(&dir, "node-1", &["127.0.0.1".into()], Usage::Node).unwrap();
        let b = Ca::identity_in(&dir, "node-2", &["127.0.0.2".into()], Usage::Node).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem, "one CA per directory");
        assert_eq!(Ca::identity_in(&dir, "node-1", &[], Usage::Node).unwrap().cert_pem, a.cert_pem, "an identity is issued once");
        let mode = fs::metadata(dir.join("node-1.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(a.server_config(Some(CLUSTER_ROLE)).is_ok() && b.client_config().is_ok());
        assert!(!format!("{a:?}").contains("PRIVATE"), "Debug never shows the key");
        let _ = fs::remove_dir_all(&dir);
    }
}
