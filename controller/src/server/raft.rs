//! The Raft RPCs between controller nodes: openraft's requests as JSON, handed to openraft.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use super::St;
use crate::store::TypeConfig;

/// Largest Raft RPC accepted (catch-up batches and snapshots are big).
pub const MAX_RAFT_BODY: usize = 256 << 20;

#[utoipa::path(post, path = "/raft/append", tag = "internal", request_body(content = Object, description = "openraft AppendEntriesRequest"), responses((status = 200, description = "openraft result", body = Object)))]
pub(super) async fn raft_append(State(s): St, Json(req): Json<AppendEntriesRequest<TypeConfig>>) -> Response {
    let r = s.raft.append_entries(req).await;
    if matches!(r, Ok(ref a) if !matches!(a, openraft::raft::AppendEntriesResponse::HigherVote(_))) {
        s.lease.leader_contact();
    }
    Json(r).into_response()
}

#[utoipa::path(post, path = "/raft/vote", tag = "internal", request_body(content = Object, description = "openraft VoteRequest"), responses((status = 200, description = "openraft result", body = Object)))]
pub(super) async fn raft_vote(State(s): St, Json(req): Json<VoteRequest<u64>>) -> Response {
    Json(s.raft.vote(req).await).into_response()
}

#[utoipa::path(post, path = "/raft/snapshot", tag = "internal", request_body(content = Object, description = "openraft InstallSnapshotRequest"), responses((status = 200, description = "openraft result", body = Object)))]
pub(super) async fn raft_snapshot(State(s): St, Json(req): Json<InstallSnapshotRequest<TypeConfig>>) -> Response {
    Json(s.raft.install_snapshot(req).await).into_response()
}
