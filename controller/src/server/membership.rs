//! Cluster membership and status: who the voters are, who leads, which node masters which
//! switch (on the API); adding and removing voters (on the cluster port only, where every
//! caller holds a certificate of the cluster's CA).

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use plexus_api::{ClusterStatus, Member, Problem, StateDigest};

use super::leader::{at_leader, read_body};
use super::{parse, problem, unavailable, AppState, St};
#[utoipa::path(get, path = "/v1/cluster", tag = "cluster", responses((status = 200, description = "This node's view of the cluster", body = ClusterStatus)))]
pub(super) async fn cluster(State(s): St) -> Response {
    let m = s.raft.metrics().borrow().clone();
    let mc = m.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = mc.voter_ids().collect();
    let members = mc.nodes().filter(|(id, _)| voters.contains(id)).map(|(id, n)| Member { id: *id, addr: n.addr.clone() }).collect();
    let learners = mc.nodes().filter(|(id, _)| !voters.contains(id)).map(|(id, n)| Member { id: *id, addr: n.addr.clone() }).collect();
    let (revision, masters) = {
        let st = s.state.read().await;
        let masters = st.model.masters.iter().map(|(h, (n, g))| plexus_api::Mastership { host: h.clone(), node: *n, generation: *g }).collect();
        (st.model.revision, masters)
    };
    Json(ClusterStatus {
        id: s.id,
        state: format!("{:?}", m.state),
        leader: m.current_leader,
        term: m.current_term,
        members,
        learners,
        applied_index: m.last_applied.map(|l| l.index),
        last_log_index: m.last_log_index,
        revision,
        snapshot_index: m.snapshot.map(|l| l.index),
        purged_index: m.purged.map(|l| l.index),
        masters,
    })
    .into_response()
}

/// A digest of this node's replica, to compare replicas without reading them whole: two
/// nodes that applied the same log show the same digest at the same revision.
#[utoipa::path(get, path = "/v1/cluster/state", tag = "cluster", responses((status = 200, description = "This node's replica, digested", body = StateDigest)))]
pub(super) async fn state_digest(State(s): St) -> Response {
    let (revision, bytes) = {
        let st = s.state.read().await;
        (st.model.revision, serde_json::to_vec(&st.model))
    };
    let Ok(bytes) = bytes else { return problem(Problem::new(500, "digest failed", "the model did not serialize")) };
    let sha256 = ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Json(StateDigest { node: s.id, revision, sha256 }).into_response()
}

pub(super) async fn add_member(State(s): St, req: Request) -> Response {
    let (parts, bytes) = match read_body(req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let m: Member = match parse(&bytes) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if let Some(r) = at_leader(&s, "", &parts, &bytes).await {
        return r;
    }
    if let Err(e) = s.raft.add_learner(m.id, openraft::BasicNode { addr: m.addr.clone() }, true).await {
        return unavailable(format!("adding node {} as learner: {e}", m.id));
    }
    // Relative to the membership the leader has when it applies the change, so two nodes
    // joining at once cannot undo each other.
    let change = openraft::ChangeMembers::AddVoterIds([m.id].into_iter().collect());
    match s.raft.change_membership(change, false).await {
        Ok(_) => (StatusCode::OK, Json(m)).into_response(),
        Err(e) => unavailable(format!("promoting node {}: {e}", m.id)),
    }
}

pub(super) async fn remove_member(State(s): St, axum::extract::Path(id): axum::extract::Path<u64>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    if let Some(r) = at_leader(&s, "", &parts, &Bytes::new()).await {
        return r;
    }
    let voters: std::collections::BTreeSet<u64> = s.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
    if !voters.contains(&id) {
        return problem(Problem { field: Some("id".into()), ..Problem::new(404, "not found", format!("node {id} is not a member")) });
    }
    if voters.len() == 1 {
        return problem(Problem { field: Some("id".into()), ..Problem::new(422, "invalid request", "the last member of a cluster cannot be removed") });
    }
    let change = openraft::ChangeMembers::RemoveVoters([id].into_iter().collect());
    match s.raft.change_membership(change, false).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => unavailable(format!("removing node {id}: {e}")),
    }
}

// openraft's `Raft` has no `Debug`: show what identifies this value.
impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("id", &self.id).finish_non_exhaustive()
    }
}
