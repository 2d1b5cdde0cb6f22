//! The Raft RPCs between controller nodes: openraft's requests as JSON, served only on the
//! cluster port (mutual TLS, certificates of the cluster's CA), and checked before openraft
//! sees them: a term no honest peer can have is refused, not applied.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use plexus_api::Problem;

use super::{problem, AppState, St};
use crate::store::TypeConfig;

/// Largest Raft RPC accepted (catch-up batches and snapshots are big).
pub const MAX_RAFT_BODY: usize = 256 << 20;

/// How far ahead of this node's term a peer's may be. An honest peer's term grows by one per
/// election it starts, so even one cut off and campaigning for weeks stays far below this;
/// a term near `u64::MAX` (which overflows inside openraft) never passes.
pub(crate) const MAX_TERM_AHEAD: u64 = 1 << 20;

/// Refuses a term no honest peer can send.
fn plausible(s: &AppState, term: u64) -> Result<(), Response> {
    let current = s.raft.metrics().borrow().current_term;
    if term > current.saturating_add(MAX_TERM_AHEAD) {
        tracing::warn!(term, current, "refused a Raft RPC with an implausible term");
        return Err(problem(Problem {
            field: Some("vote.leader_id.term".into()),
            ..Problem::new(422, "implausible term", format!("term {term} is more than {MAX_TERM_AHEAD} ahead of this node's {current}"))
        }));
    }
    Ok(())
}

pub(super) async fn raft_append(State(s): St, Json(req): Json<AppendEntriesRequest<TypeConfig>>) -> Response {
    if let Err(r) = plausible(&s, req.vote.leader_id().term) {
        return r;
    }
    let (t, n) = (std::time::Instant::now(), req.entries.len());
    let r = s.raft.append_entries(req).await;
    if t.elapsed() >= std::time::Duration::from_millis(100) {
        // The leader gives up on an append after a heartbeat interval (100 ms): this one
        // counted as lost.
        tracing::warn!(ms = t.elapsed().as_millis() as u64, entries = n, "a Raft append took longer than the leader waits");
    }
    if matches!(r, Ok(ref a) if !matches!(a, openraft::raft::AppendEntriesResponse::HigherVote(_))) {
        s.lease.leader_contact();
    }
    Json(r).into_response()
}

pub(super) async fn raft_vote(State(s): St, Json(req): Json<VoteRequest<u64>>) -> Response {
    if let Err(r) = plausible(&s, req.vote.leader_id().term) {
        return r;
    }
    Json(s.raft.vote(req).await).into_response()
}

pub(super) async fn raft_snapshot(State(s): St, Json(req): Json<InstallSnapshotRequest<TypeConfig>>) -> Response {
    if let Err(r) = plausible(&s, req.vote.leader_id().term) {
        return r;
    }
    Json(s.raft.install_snapshot(req).await).into_response()
}
