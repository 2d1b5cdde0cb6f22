//! Serving a node's ports: the API (plain HTTP for now) and the cluster port (TLS 1.3 with
//! client certificates of the cluster's CA), both over one loop. A peer without an admissible
//! certificate never reaches a handler; each connection runs in its own task; a client has a
//! deadline for its TLS handshake and for the headers of every request; connections are
//! capped. So silent or slow peers cost bounded time and memory, and delay no one else.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a peer has for its TLS handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
/// How long a client has to send a request's headers (the first request's, and each next
/// one's on a kept-alive connection).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once on one port.
const MAX_CONNECTIONS: usize = 1024;

/// Serves `app` on `listener` (with `tls`, only to peers its configuration admits), until the
/// task is aborted.
pub(crate) async fn serve(listener: TcpListener, tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>, app: Router) {
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many connections; closed");
            continue;
        };
        // An answer goes out in more than one write (TLS records, headers and body): with
        // Nagle's algorithm the second waits for the peer's acknowledgement of the first,
        // which a delayed ACK can hold back for 40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not turn Nagle's algorithm off");
        }
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
            let svc = TowerToHyperService::new(app);
            let served = match acceptor {
                None => http.serve_connection(TokioIo::new(tcp), svc).await,
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => http.serve_connection(TokioIo::new(tls), svc).await,
                    Ok(Err(e)) => return tracing::warn!(%peer, error = %e, "refused a peer's TLS handshake"),
                    Err(_) => return tracing::warn!(%peer, "a peer did not finish its TLS handshake in time"),
                },
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}
