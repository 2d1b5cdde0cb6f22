//! The controller side of `tcp:`/`unix:` controller targets: switches connect to us.

use std::path::PathBuf;

use tokio::net::{TcpListener, UnixListener};

use super::conn::{Connection, ConnectionOptions, Events, Stream};
use super::error::OfError;

/// Accepts connections from switches (controller side of `tcp:`/`unix:` targets).
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix socket; the file is removed on drop.
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Listens on TCP.
    pub async fn bind_tcp(addr: std::net::SocketAddr) -> Result<Listener, OfError> {
        Ok(Listener::Tcp(TcpListener::bind(addr).await.map_err(|e| OfError::Io(format!("bind {addr}: {e}")))?))
    }

    /// Wraps a bound standard listener (e.g. one bound inside another network namespace).
    pub fn from_std(l: std::net::TcpListener) -> Result<Listener, OfError> {
        l.set_nonblocking(true)?;
        Ok(Listener::Tcp(TcpListener::from_std(l)?))
    }

    /// Listens on a unix socket path (an existing stale socket file is replaced).
    pub fn bind_unix(path: impl Into<PathBuf>) -> Result<Listener, OfError> {
        let path = path.into();
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).map_err(|e| OfError::Io(format!("bind {}: {e}", path.display())))?;
        Ok(Listener::Unix(l, path))
    }

    /// The TCP address, for TCP listeners.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    /// Accepts one switch and performs the handshake.
    pub async fn accept(&self, opts: ConnectionOptions) -> Result<(Connection, Events), OfError> {
        let s = match self {
            Listener::Tcp(l) => Stream::Tcp(l.accept().await?.0),
            Listener::Unix(l, _) => Stream::Unix(l.accept().await?.0),
        };
        Connection::handshake(s, opts).await
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}
