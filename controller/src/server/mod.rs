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
use axum::{Json, Router};
use plexus_api::Problem;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod auth;
mod health;
mod leader;
mod membership;
mod raft;
mod resources;
mod routing;

pub(crate) use auth::Caller;
use health::*;
pub(crate) use leader::{route_read, route_write, ReadOpts};
use membership::*;
pub use raft::MAX_RAFT_BODY;
use raft::*;
use resources::*;
use routing::*;

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
}

/// The router of one node, and the OpenAPI document describing exactly its routes: both
/// come from the same `#[utoipa::path]` declarations, so neither can list a route the other
/// lacks.
pub fn router(st: AppState) -> Router {
    api_router(Arc::new(st))
}

fn api_router(st: Arc<AppState>) -> Router {
    let (router, doc) = routes().split_for_parts();
    let _ = DOC.set(with_problem_bodies(doc));
    router
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

/// The OpenAPI document alone (for `plexus controller openapi` and tests).
pub fn openapi() -> utoipa::openapi::OpenApi {
    with_problem_bodies(routes().split_for_parts().1)
}

/// The media type of every error this API returns.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every error response of the API is a problem document. Rather than repeat that in each
/// route's annotation, the document gets it here, once, for every 4xx and 5xx it lists that
/// says nothing else.
fn with_problem_bodies(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{Content, Ref, RefOr};
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten() {
            for (status, resp) in op.responses.responses.iter_mut() {
                let error = status.starts_with('4') || status.starts_with('5');
                if let (true, RefOr::T(r)) = (error, resp) {
                    if r.content.is_empty() {
                        r.content.insert(PROBLEM_JSON.into(), RefOr::T(Content::new(Some(Ref::from_schema_name("Problem")))));
                    }
                }
            }
        }
    }
    doc
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Plexus controller API", description = "Networks, endpoints and hosts of a Plexus software-defined network."),
    components(schemas(Problem)),
    tags((name = "networks"), (name = "endpoints"), (name = "hosts"), (name = "cluster"), (name = "routing"), (name = "watch"))
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
