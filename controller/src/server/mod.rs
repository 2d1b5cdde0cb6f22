//! The HTTP server of a controller node: Raft RPCs between nodes, and the versioned REST API.
//!
//! Writes are proposed to Raft on the leader; a follower forwards the request to the leader
//! as it came, so a client may talk to any node. Reads go to the leader too (which checks it
//! still leads before answering), so a read never shows state older than a write the client
//! saw acknowledged; `?local=true` reads this node's own replica instead.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use plexus_api::{ClusterStatus, Member, Problem};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod resources;
mod routing;

use resources::*;
use routing::*;

use crate::model::{Command, Refusal};
use crate::store::{Raft, SharedState, TypeConfig};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// This node's id.
    pub id: u64,
    /// The Raft node.
    pub raft: Raft,
    /// The replicated state.
    pub state: SharedState,
    /// The model's revision as this node applies entries.
    pub revisions: tokio::sync::watch::Receiver<u64>,
    /// For forwarding to the leader.
    pub http: reqwest::Client,
    /// The switches this node programs, if it listens for them.
    pub switches: Option<Arc<crate::switches::SwitchManager>>,
    /// This node's proof of being in the majority (renewed by the leader's appends).
    pub lease: Arc<crate::mastership::Lease>,
}

/// Largest Raft RPC accepted (catch-up batches and snapshots are big).
pub const MAX_RAFT_BODY: usize = 256 << 20;

/// The router of one node, and the OpenAPI document describing exactly its routes: both
/// come from the same `#[utoipa::path]` declarations, so neither can list a route the other
/// lacks.
pub fn router(st: AppState) -> Router {
    let (router, doc) = routes().split_for_parts();
    let _ = DOC.set(doc);
    router.fallback(|| async { problem(Problem::new(404, "not found", "no such route")) }).with_state(Arc::new(st))
}

/// The OpenAPI document alone (for `plexus controller openapi` and tests).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Plexus controller API", description = "Networks, endpoints and hosts of a Plexus software-defined network."),
    tags((name = "networks"), (name = "endpoints"), (name = "hosts"), (name = "cluster"), (name = "routing"), (name = "watch"), (name = "internal", description = "Between controller nodes"))
)]
struct ApiDoc;

static DOC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();

/// The OpenAPI 3.1 document of this API, generated from the handlers' declarations.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "cluster", responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
async fn openapi_json() -> Response {
    match DOC.get() {
        Some(d) => Json(d.clone()).into_response(),
        None => problem(Problem::new(500, "no document", "the OpenAPI document was not built")),
    }
}

fn routes() -> OpenApiRouter<Arc<AppState>> {
    let raft =
        OpenApiRouter::new().routes(routes!(raft_append)).routes(routes!(raft_vote)).routes(routes!(raft_snapshot)).layer(DefaultBodyLimit::max(MAX_RAFT_BODY));
    OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(openapi_json))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(cluster))
        .routes(routes!(add_member))
        .routes(routes!(remove_member))
        .routes(routes!(list_networks, create_network))
        .routes(routes!(get_network, put_network, delete_network))
        .routes(routes!(list_endpoints, create_endpoint))
        .routes(routes!(get_endpoint, delete_endpoint))
        .routes(routes!(list_leases))
        .routes(routes!(list_routers, create_router))
        .routes(routes!(get_router, put_router, delete_router))
        .routes(routes!(list_policies, create_policy))
        .routes(routes!(get_policy, put_policy, delete_policy))
        .routes(routes!(watch))
        .routes(routes!(list_hosts))
        .routes(routes!(get_host, put_host))
        .routes(routes!(host_flows))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .merge(raft)
}

pub(crate) type St = State<Arc<AppState>>;

pub(crate) fn problem(p: Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(&p).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/problem+json")], body).into_response()
}

pub(crate) fn refusal(r: Refusal) -> Response {
    let title = match r.status {
        404 => "not found",
        409 => "conflict",
        412 => "precondition failed",
        _ => "invalid request",
    };
    problem(Problem { field: r.field.clone(), ..Problem::new(r.status, title, r.reason) })
}

pub(crate) fn unavailable(detail: impl Into<String>) -> Response {
    problem(Problem::new(503, "no quorum", detail))
}

// ---- Raft RPCs ----

#[utoipa::path(post, path = "/raft/append", tag = "internal", request_body(content = Object, description = "openraft AppendEntriesRequest"), responses((status = 200, description = "openraft result", body = Object)))]
async fn raft_append(State(s): St, Json(req): Json<AppendEntriesRequest<TypeConfig>>) -> Response {
    let r = s.raft.append_entries(req).await;
    if matches!(r, Ok(ref a) if !matches!(a, openraft::raft::AppendEntriesResponse::HigherVote(_))) {
        s.lease.leader_contact();
    }
    Json(r).into_response()
}

#[utoipa::path(post, path = "/raft/vote", tag = "internal", request_body(content = Object, description = "openraft VoteRequest"), responses((status = 200, description = "openraft result", body = Object)))]
async fn raft_vote(State(s): St, Json(req): Json<VoteRequest<u64>>) -> Response {
    Json(s.raft.vote(req).await).into_response()
}

#[utoipa::path(post, path = "/raft/snapshot", tag = "internal", request_body(content = Object, description = "openraft InstallSnapshotRequest"), responses((status = 200, description = "openraft result", body = Object)))]
async fn raft_snapshot(State(s): St, Json(req): Json<InstallSnapshotRequest<TypeConfig>>) -> Response {
    Json(s.raft.install_snapshot(req).await).into_response()
}

// ---- leader routing ----

/// Where the leader is, if this node is not it.
async fn leader_addr(s: &AppState) -> Result<Option<String>, Response> {
    let m = s.raft.metrics().borrow().clone();
    match m.current_leader {
        Some(l) if l == s.id => Ok(None),
        Some(l) => match m.membership_config.membership().get_node(&l) {
            Some(n) => Ok(Some(n.addr.clone())),
            None => Err(unavailable(format!("leader {l} is not in the membership"))),
        },
        None => Err(unavailable("no leader: this node cannot reach a majority of the cluster")),
    }
}

/// Sends the request to the leader as it came and relays the answer.
async fn forward(s: &AppState, addr: &str, method: Method, uri: &str, headers: &HeaderMap, body: Bytes) -> Response {
    let url = format!("http://{addr}{uri}");
    let mut req = s.http.request(method, &url).timeout(Duration::from_secs(10)).body(body);
    for h in [header::CONTENT_TYPE, header::IF_MATCH] {
        if let Some(v) = headers.get(&h) {
            req = req.header(h, v);
        }
    }
    match req.header("x-plexus-forwarded", "1").send().await {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let ct = r.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json").to_string();
            let body = r.bytes().await.unwrap_or_default();
            (status, [(header::CONTENT_TYPE, ct)], body).into_response()
        }
        Err(e) => unavailable(format!("forwarding to the leader at {addr} failed: {e}")),
    }
}

/// A leader whose last acknowledgement from a majority is older than this is cut off: by
/// then the others have started an election (the election timeout's upper bound).
const QUORUM_LOST_MS: u64 = 2000;

/// How long a write may wait for a majority before the client is told there is none.
const QUORUM_WAIT: Duration = Duration::from_secs(3);

/// Proposes a command and turns the outcome into a response. A leader cut off from the
/// majority must not appear to accept writes: it first proves it still leads (a round of
/// heartbeats answered by a majority) and gives up after [`QUORUM_WAIT`].
async fn write(s: &AppState, cmd: Command, ok_status: StatusCode) -> Response {
    // A leader no majority has answered for longer than an election timeout is cut off,
    // and says so before it proposes anything.
    let since_ack = s.raft.metrics().borrow().millis_since_quorum_ack;
    if let Some(ms) = since_ack.filter(|ms| *ms > QUORUM_LOST_MS) {
        return unavailable(format!("no majority of the cluster has answered this node for {ms} ms: it is cut off; nothing was written"));
    }
    match tokio::time::timeout(QUORUM_WAIT, s.raft.ensure_linearizable()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return unavailable(format!("this node cannot confirm it leads a majority of the cluster; nothing was written: {e}")),
        Err(_) => return unavailable(format!("no majority answered within {QUORUM_WAIT:?}: this node is cut off from the cluster; nothing was written")),
    }
    let res = match tokio::time::timeout(QUORUM_WAIT, s.raft.client_write(cmd)).await {
        Ok(r) => r,
        Err(_) => {
            return unavailable(format!(
                "the write was not committed within {QUORUM_WAIT:?} (lost quorum?); it may still be applied later, so read before retrying"
            ))
        }
    };
    match res {
        Ok(r) => match r.data {
            Ok(Some(obj)) => {
                WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (ok_status, Json(obj)).into_response()
            }
            Ok(None) => {
                WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                StatusCode::NO_CONTENT.into_response()
            }
            Err(refused) => {
                REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                refusal(refused)
            }
        },
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => unavailable(format!("leadership moved to {:?} while writing; retry", f.leader_id)),
        Err(e) => unavailable(e.to_string()),
    }
}

/// Runs a write here if this node leads, else forwards it.
/// Splits a write request into its head and body, refusing an oversize body.
async fn read_body(req: Request) -> Result<(axum::http::request::Parts, Bytes), Response> {
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => Ok((parts, b)),
        Err(_) => Err(problem(Problem::new(413, "request body too large", format!("bodies are limited to {MAX_BODY} bytes")))),
    }
}

/// Every write runs on the leader: `None` if this node is it, else the answer — the
/// leader's, relayed, or why there is none. A request already forwarded once is not
/// forwarded again, so two nodes that disagree about the leader cannot bounce it.
async fn at_leader(s: &AppState, parts: &axum::http::request::Parts, bytes: &Bytes) -> Option<Response> {
    match leader_addr(s).await {
        Err(r) => Some(r),
        Ok(None) => None,
        Ok(Some(_)) if parts.headers.get("x-plexus-forwarded").is_some() => Some(unavailable("leadership is changing; retry")),
        Ok(Some(addr)) => {
            let uri = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            Some(forward(s, &addr, parts.method.clone(), uri, &parts.headers, bytes.clone()).await)
        }
    }
}

pub(crate) async fn route_write(s: &AppState, req: Request, cmd: impl FnOnce(Bytes) -> Result<Command, Response>, ok: StatusCode) -> Response {
    let (parts, bytes) = match read_body(req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Some(r) = at_leader(s, &parts, &bytes).await {
        return r;
    }
    match cmd(bytes) {
        Ok(c) => write(s, c, ok).await,
        Err(r) => r,
    }
}

#[derive(Deserialize)]
pub(crate) struct ReadOpts {
    #[serde(default)]
    pub(crate) local: bool,
}

/// Makes a read linearizable: answered by a leader that has confirmed its leadership, or
/// forwarded to it. Returns `Ok(())` when this node may answer.
pub(crate) async fn route_read(s: &AppState, opts: &ReadOpts, uri: &Uri, headers: &HeaderMap) -> Result<(), Response> {
    if opts.local {
        return Ok(());
    }
    match leader_addr(s).await? {
        None => match tokio::time::timeout(QUORUM_WAIT, s.raft.ensure_linearizable()).await {
            Ok(r) => r.map(|_| ()).map_err(|e| unavailable(e.to_string())),
            Err(_) => Err(unavailable(format!("no majority answered within {QUORUM_WAIT:?}: this node is cut off from the cluster"))),
        },
        Some(addr) => {
            let uri = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            Err(forward(s, &addr, Method::GET, uri, headers, Bytes::new()).await)
        }
    }
}

pub(crate) fn parse<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(bytes).map_err(|e| {
        let kind = if e.is_syntax() || e.is_eof() { "malformed JSON" } else { "invalid request body" };
        problem(Problem::new(400, kind, e.to_string()))
    })
}

pub(crate) fn if_match(h: &HeaderMap) -> Result<Option<u64>, Response> {
    let Some(v) = h.get(header::IF_MATCH) else { return Ok(None) };
    let s = v.to_str().unwrap_or_default().trim().trim_matches('"');
    s.parse().map(Some).map_err(|_| {
        problem(Problem { field: Some("If-Match".into()), ..Problem::new(400, "invalid header", format!("If-Match {s:?} is not a revision number")) })
    })
}

// ---- cluster ----

#[utoipa::path(get, path = "/v1/cluster", tag = "cluster", responses((status = 200, description = "This node's view of the cluster", body = ClusterStatus)))]
async fn cluster(State(s): St) -> Response {
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

#[utoipa::path(get, path = "/readyz", tag = "cluster", responses((status = 200, description = "A leader is known and state applied", body = String), (status = 503, description = "No leader or no quorum", body = Problem, content_type = "application/problem+json")))]
async fn readyz(State(s): St) -> Response {
    let m = s.raft.metrics().borrow().clone();
    match m.current_leader {
        Some(_) if m.last_applied.is_some() => (StatusCode::OK, "ready").into_response(),
        _ => unavailable("not ready: no leader known or nothing applied yet"),
    }
}

#[utoipa::path(post, path = "/v1/cluster/members", tag = "cluster", request_body = Member, responses((status = 200, description = "The node is a voting member", body = Member), (status = 503, description = "No leader or no quorum", body = Problem, content_type = "application/problem+json")))]
async fn add_member(State(s): St, req: Request) -> Response {
    let (parts, bytes) = match read_body(req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let m: Member = match parse(&bytes) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if let Some(r) = at_leader(&s, &parts, &bytes).await {
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

static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "cluster", responses((status = 200, description = "Alive", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// Prometheus text exposition of the node's Raft and store state.
#[utoipa::path(get, path = "/metrics", tag = "cluster", responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
async fn metrics(State(s): St) -> Response {
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

#[utoipa::path(delete, path = "/v1/cluster/members/{id}", tag = "cluster", params(("id" = u64, Path, description = "Node id")),
    responses((status = 204, description = "The node is no longer a member"), (status = 404, description = "Not a member", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "The last member cannot go", body = Problem, content_type = "application/problem+json"), (status = 503, description = "No leader or no quorum", body = Problem, content_type = "application/problem+json")))]
async fn remove_member(State(s): St, axum::extract::Path(id): axum::extract::Path<u64>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    if let Some(r) = at_leader(&s, &parts, &Bytes::new()).await {
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
