//! Serving the cluster port: TLS 1.3 with client certificates of the cluster's CA, then HTTP/1
//! to the cluster router. A peer without such a certificate never reaches a handler; each
//! handshake runs in its own task with a deadline, and connections are capped, so silent or
//! hostile peers cost bounded time and memory.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a peer has for its TLS handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once.
const MAX_CONNECTIONS: usize = 512;

/// Serves `app` on `listener` to peers the TLS configuration admits, until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, tls: Arc<tokio_rustls::rustls::ServerConfig>, app: Router) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accepting on the cluster port failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many connections on the cluster port; closed");
            continue;
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "refused a peer on the cluster port");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "a peer did not finish its TLS handshake in time");
                    return;
                }
            };
            let svc = TowerToHyperService::new(app);
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await {
                tracing::debug!(%peer, error = %e, "cluster connection ended");
            }
        });
    }
}
