//! TLS for `ssl:` OVSDB targets, with the host's certificate and the cluster's CA: the agent
//! proves which host it is, and trusts only a server whose certificate the CA issued for the
//! address it dialled.

use std::sync::Arc;

use plexus_ovs::openflow::Transport;
use plexus_ovs::ovsdb::{TlsConnector, TlsHandshake};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;

/// A [`TlsConnector`] over rustls.
#[derive(Debug, Clone)]
pub struct RustlsConnector {
    config: Arc<tokio_rustls::rustls::ClientConfig>,
}

impl RustlsConnector {
    /// With `identity`'s certificate, trusting its CA.
    pub fn new(identity: &plexus_pki::Identity) -> Result<RustlsConnector, plexus_pki::PkiError> {
        Ok(RustlsConnector { config: Arc::new(identity.client_config()?) })
    }
}

impl TlsConnector for RustlsConnector {
    fn connect(&self, tcp: TcpStream) -> TlsHandshake {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        Box::pin(async move {
            // The server must be certified for the address dialled.
            let name = ServerName::IpAddress(tcp.peer_addr()?.ip().into());
            let tls = connector.connect(name, tcp).await?;
            Ok(Box::new(tls) as Box<dyn Transport>)
        })
    }
}
