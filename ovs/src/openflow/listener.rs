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

    /// Accepts one switch and performs the handshake, waiting for it. A server should use
    /// [`Listener::accept_stream`] and run each [`Connection::handshake`] in a task of its
    /// own: a peer that never says hello would otherwise hold up every switch behind it.
    pub async fn accept(&self, opts: ConnectionOptions) -> Result<(Connection, Events), OfError> {
        let (s, _) = self.accept_stream().await?;
        Connection::handshake(s, opts).await
    }

    /// Accepts one connection without reading from it; returns it and who the peer is.
    pub async fn accept_stream(&self) -> Result<(Stream, String), OfError> {
        Ok(match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                (Stream::Tcp(s), peer.to_string())
            }
            Listener::Unix(l, p) => (Stream::Unix(l.accept().await?.0), p.display().to_string()),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}
