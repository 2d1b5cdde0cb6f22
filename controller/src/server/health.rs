//! Health, readiness and metrics of a node.

use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{unavailable, St};
#[utoipa::path(get, path = "/readyz", tag = "cluster", responses((status = 200, description = "A leader is known and state applied", body = String), (status = 503, description = "No leader or no quorum")))]
pub(super) async fn readyz(State(s): St) -> Response {
    let m = s.raft.metrics().borrow().clone();
    match m.current_leader {
        Some(_) if m.last_applied.is_some() => (StatusCode::OK, "ready").into_response(),
        _ => unavailable("not ready: no leader known or nothing applied yet"),
    }
}

/// Writes this node committed as leader.
pub(super) static WRITES: AtomicU64 = AtomicU64::new(0);
/// Writes the model refused.
pub(super) static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "cluster", responses((status = 200, description = "Alive", body = String)))]
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// Prometheus text exposition of the node's Raft and store state.
#[utoipa::path(get, path = "/metrics", tag = "cluster", responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub(super) async fn metrics(State(s): St) -> Response {
    use std::fmt::Write;
    let m = s.raft.metrics().borrow().clone();
    let st = s.state.read().await;
    let mut out = String::new();
    let mut g = |name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    g("plexus_raft_term", "Current Raft term.", m.current_term);
    g("plexus_raft_is_leader", "1 if this node is the Raft leader.", (m.current_leader == Some(s.id)) as u64);
    g("plexus_raft_last_log_index", "Index of the last entry in this node's log.", m.last_log_index.unwrap_or(0));
    g("plexus_raft_applied_index", "Index of the last entry applied to the state machine.", m.last_applied.map(|l| l.index).unwrap_or(0));
    g("plexus_store_revision", "Revision of the model.", st.model.revision);
    g("plexus_networks", "Networks in the model.", st.model.networks.len() as u64);
    g("plexus_endpoints", "Endpoints in the model.", st.model.all_endpoints().count() as u64);
    g("plexus_hosts", "Registered hosts.", st.model.hosts.len() as u64);
    let _ = writeln!(
        out,
        "# HELP plexus_api_writes_total Writes this node committed as leader.\n# TYPE plexus_api_writes_total counter\nplexus_api_writes_total {}",
        WRITES.load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP plexus_api_refused_total Writes the model refused.\n# TYPE plexus_api_refused_total counter\nplexus_api_refused_total {}",
        REFUSED.load(std::sync::atomic::Ordering::Relaxed)
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
