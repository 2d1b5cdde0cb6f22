//! The HTTP servers of a controller node: the versioned REST API for clients ([`router`]),
//! and the cluster port between nodes ([`cluster_router`]: Raft RPCs, membership, forwarded
//! requests), which only peers holding a certificate of the cluster's CA can reach.
//!
//! Writes are proposed to Raft on the leader; a follower forwards the request to the leader
//! as it came, so a client may talk to any node. Reads go to the leader too (which checks it
//! still leads before answering), so a read never shows state older than a write the client
//! saw acknowledged; `?local=true` reads this node's own replica instead.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use plexus_api::Problem;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod auth;
mod batch;
mod bootstrap;
mod edge;
mod health;
mod leader;
mod membership;
mod openapi;
mod raft;
mod resources;
mod routing;
mod trace;
mod ui;
mod watch;

pub(crate) use auth::Caller;
use batch::*;
use bootstrap::*;
pub use health::ApplyWatch;
use health::*;
pub(crate) use leader::{route_read, route_write, ReadOpts};
use membership::*;
use openapi::*;
pub use openapi::{openapi, PROBLEM_JSON};
pub use raft::MAX_RAFT_BODY;
use raft::*;
use resources::*;
use routing::*;
use trace::*;
use watch::*;

use crate::model::Refusal;
use crate::store::{Raft, SharedState};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// This node's id.
    pub id: u64,
    /// The Raft node.
    pub raft: Raft,
    /// Proposes this node's writes to it, grouping those that arrive together.
    pub proposer: crate::store::Proposer,
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
    /// Checks the API's bearer tokens.
    pub tokens: Arc<plexus_pki::TokenKey>,
    /// Whether applying the log has stalled (for readiness).
    pub apply_watch: Arc<ApplyWatch>,
    /// The cluster's PKI directory (the CA and token key it hands out for one-time tokens).
    pub pki_dir: std::path::PathBuf,
    /// Traces waiting for agents (`plexus trace`).
    pub traces: Arc<crate::trace::TraceHub>,
    /// Watch answers, encoded once for all the watchers that ask for the same one.
    pub(crate) watch_cache: Arc<WatchCache>,
}

/// The router of one node, and the OpenAPI document describing exactly its routes: both
/// come from the same `#[utoipa::path]` declarations, so neither can list a route the other
/// lacks.
pub fn router(st: AppState) -> Router {
    api_router(Arc::new(st))
}

fn api_router(st: Arc<AppState>) -> Router {
    let (router, doc) = routes().split_for_parts();
    let _ = DOC.set(finish_document(doc));
    router
        .route_layer(axum::middleware::from_fn(timed))
        .route("/ui", axum::routing::get(ui::page))
        .route("/ui/app.js", axum::routing::get(ui::script))
        .fallback(|| async { problem(Problem::new(404, "not found", "no such route")) })
        .method_not_allowed_fallback(|| async { problem(Problem::new(405, "method not allowed", "this route does not take that method")) })
        .layer(axum::middleware::map_response(problem_for_rejections))
        .layer(axum::middleware::from_fn(require_json))
        .layer(axum::middleware::from_fn_with_state(st.clone(), auth::authorize))
        .with_state(st)
}

/// Every request body is JSON: one that says otherwise (or says nothing) is refused before
/// any handler reads it, which also keeps a browser's cross-site form posts out.
async fn require_json(req: Request, next: axum::middleware::Next) -> Response {
    let h = req.headers();
    let length = h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let has_body = length.map_or(h.contains_key(header::TRANSFER_ENCODING), |n| n > 0);
    let json = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if has_body && !json {
        let got = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("none").to_string();
        return problem(Problem {
            field: Some("Content-Type".into()),
            ..Problem::new(415, "unsupported media type", format!("request bodies must be application/json, not {got}"))
        });
    }
    next.run(req).await
}

/// The errors axum produces itself (a path or query that does not parse, a body over the
/// limit) are plain text; every error of this API is a problem document, so they become one.
async fn problem_for_rejections(resp: Response) -> Response {
    let status = resp.status();
    let is_problem = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with(PROBLEM_JSON));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return resp;
    }
    let title = status.canonical_reason().unwrap_or("error");
    let detail = match axum::body::to_bytes(resp.into_body(), 64 * 1024).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        _ => title.to_string(),
    };
    problem(Problem::new(status.as_u16(), &title.to_lowercase(), detail))
}

/// Times each request by the route it matched (for `plexus_api_request_duration_seconds`).
async fn timed(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = req.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_default();
    let method = req.method().to_string();
    let t = std::time::Instant::now();
    let resp = next.run(req).await;
    crate::metrics::observe_api(&method, &route, t.elapsed());
    resp
}

/// Where the cluster port serves API requests a follower forwards to the leader.
pub const FORWARD_PREFIX: &str = "/forward";

/// The router of a node's cluster port: Raft RPCs, membership changes, liveness for the
/// mastership probes, and the API for requests forwarded by followers. Served only over
/// mutual TLS with certificates of the cluster's CA (see `node.rs`).
pub fn cluster_router(st: AppState) -> Router {
    let st = Arc::new(st);
    let api = api_router(st.clone());
    let raft = Router::new()
        .route("/raft/append", post(raft_append))
        .route("/raft/vote", post(raft_vote))
        .route("/raft/snapshot", post(raft_snapshot))
        .layer(DefaultBodyLimit::max(MAX_RAFT_BODY));
    Router::new()
        .route("/cluster/members", post(add_member))
        .route("/cluster/members/{id}", delete(remove_member))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .merge(raft)
        .with_state(st)
        .nest_service(FORWARD_PREFIX, api)
        .fallback(|| async { problem(Problem::new(404, "not found", "no such route on the cluster port")) })
}

fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(openapi_json))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(cluster))
        .routes(routes!(state_digest))
        .routes(routes!(bootstrap_agent))
        .routes(routes!(bootstrap_node))
        .routes(routes!(list_networks, create_network))
        .routes(routes!(get_network, put_network, delete_network))
        .routes(routes!(list_endpoints, create_endpoint))
        .routes(routes!(get_endpoint, delete_endpoint))
        .routes(routes!(put_endpoint_labels))
        .routes(routes!(put_endpoint_publish))
        .routes(routes!(list_leases))
        .routes(routes!(list_routers, create_router))
        .routes(routes!(get_router, put_router, delete_router))
        .routes(routes!(list_policies, create_policy))
        .routes(routes!(get_policy, put_policy, delete_policy))
        .routes(routes!(policy_counters))
        .routes(routes!(watch))
        .routes(routes!(list_hosts))
        .routes(routes!(get_host, put_host))
        .routes(routes!(host_flows))
        .routes(routes!(switches))
        .routes(routes!(trace))
        .routes(routes!(batch))
        .routes(routes!(trace_jobs))
        .routes(routes!(trace_answer))
        .routes(routes!(edge::host_edge))
        .routes(routes!(edge::host_names))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

pub(crate) type St = State<Arc<AppState>>;

pub(crate) fn problem(p: Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(&p).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, PROBLEM_JSON)], body).into_response()
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

pub(crate) fn parse<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, Response> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| problem(Problem::new(400, "malformed JSON", e.to_string())))?;
    whole_numbers(&mut v);
    // The path of what did not fit (`publish[0].protocol`) is the field the problem names.
    serde_path_to_error::deserialize(v).map_err(|e| {
        let field = e.path().to_string();
        let detail = if field == "." { e.inner().to_string() } else { format!("{field}: {}", e.inner()) };
        problem(Problem { field: (field != ".").then_some(field), ..Problem::new(400, "invalid request body", detail) })
    })
}

/// JSON does not tell `104` from `104.0`, and neither does the JSON Schema `integer`: a
/// number without a fraction is taken as the integer it is (within the range a double holds
/// exactly), so a client that writes numbers as doubles is not refused.
fn whole_numbers(v: &mut serde_json::Value) {
    use serde_json::Value;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match v {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() <= EXACT) {
                *v = if f >= 0.0 { Value::from(f as u64) } else { Value::from(f as i64) };
            }
        }
        Value::Array(a) => a.iter_mut().for_each(whole_numbers),
        Value::Object(o) => o.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

pub(crate) fn if_match(h: &HeaderMap) -> Result<Option<u64>, Response> {
    let Some(v) = h.get(header::IF_MATCH) else { return Ok(None) };
    let s = v.to_str().unwrap_or_default().trim().trim_matches('"');
    s.parse().map(Some).map_err(|_| {
        problem(Problem { field: Some("If-Match".into()), ..Problem::new(400, "invalid header", format!("If-Match {s:?} is not a revision number")) })
    })
}
