//! Where a request is served: writes on the Raft leader (a follower forwards them as they
//! came), reads on the leader under its lease or after it confirms its leadership, unless the
//! client asks for this node's own replica.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use plexus_api::Problem;
use serde::Deserialize;

use super::health::{REFUSED, WRITES};
use super::{problem, refusal, unavailable, AppState, MAX_BODY};
use crate::model::{Command, Model};

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
/// Sends a request to the leader's cluster port (mutual TLS) at `prefix` + `uri`: API requests
/// under [`super::FORWARD_PREFIX`], cluster requests (membership) at their own path.
async fn forward(s: &AppState, addr: &str, prefix: &str, method: Method, uri: &str, headers: &HeaderMap, body: Bytes) -> Response {
    let url = format!("https://{addr}{prefix}{uri}");
    let mut req = s.http.request(method, &url).timeout(Duration::from_secs(10)).body(body);
    // The leader checks the caller's credential again: it trusts its peer's link, not its judgement.
    for h in [header::CONTENT_TYPE, header::IF_MATCH, header::AUTHORIZATION] {
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
const QUORUM_LOST_MS: u64 = 600;

/// How long a write may wait for a majority before the client is told there is none.
const QUORUM_WAIT: Duration = Duration::from_secs(3);

/// Proposes a command (through the proposer, which groups those arriving together) and turns
/// the outcome into a response. A leader cut off from the majority must not appear to accept
/// writes: outside its lease it first proves it still leads (a round of heartbeats answered
/// by a majority) and gives up after [`QUORUM_WAIT`].
pub(crate) async fn write(s: &AppState, cmd: Command, ok_status: StatusCode) -> Response {
    // A leader no majority has answered for longer than an election timeout is cut off,
    // and says so before it proposes anything.
    let since_ack = s.raft.metrics().borrow().millis_since_quorum_ack;
    if let Some(ms) = since_ack.filter(|ms| *ms > QUORUM_LOST_MS) {
        return unavailable(format!("no majority of the cluster has answered this node for {ms} ms: it is cut off; nothing was written"));
    }
    // Under the lease a majority has answered very recently, and the commit itself proves
    // leadership again; a round of heartbeats first would only add a network round trip.
    // Without it, the round tells a cut-off leader so before it proposes anything.
    if !s.lease.serves_reads() {
        match tokio::time::timeout(QUORUM_WAIT, s.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return unavailable(format!("this node cannot confirm it leads a majority of the cluster; nothing was written: {e}")),
            Err(_) => return unavailable(format!("no majority answered within {QUORUM_WAIT:?}: this node is cut off from the cluster; nothing was written")),
        }
    }
    // What the model will refuse is decided here first, on a snapshot of this leader's
    // replica: a refused write then costs no log entry and no fsync on every node. Should the
    // state change in between, the log still records the refusal, the same on every node.
    let dry = {
        let snapshot = s.state.read().await.model.clone();
        Model::clone(&snapshot).apply(cmd.clone())
    };
    if let Err(refused) = dry {
        REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return refusal(refused);
    }
    let res = match tokio::time::timeout(QUORUM_WAIT, s.proposer.propose(cmd)).await {
        Ok(r) => r,
        Err(_) => {
            return unavailable(format!(
                "the write was not committed within {QUORUM_WAIT:?} (lost quorum?); it may still be applied later, so read before retrying"
            ))
        }
    };
    match res {
        Ok(Ok(Some(obj))) => {
            WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (ok_status, Json(obj)).into_response()
        }
        Ok(Ok(None)) => {
            WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(refused)) => {
            REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            refusal(refused)
        }
        Err(e) => unavailable(e.to_string()),
    }
}

/// How long a client has to send a request's body once its headers are in.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Splits a write request into its head and body, refusing an oversize body and one that
/// does not arrive in time.
pub(super) async fn read_body(req: Request) -> Result<(axum::http::request::Parts, Bytes), Response> {
    read_body_up_to(req, MAX_BODY).await
}

/// [`read_body`] with a limit of its own (a batch's body may be larger than one object's).
pub(super) async fn read_body_up_to(req: Request, limit: usize) -> Result<(axum::http::request::Parts, Bytes), Response> {
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => Ok((parts, b)),
        Ok(Err(_)) => Err(problem(Problem::new(413, "request body too large", format!("bodies are limited to {limit} bytes")))),
        Err(_) => Err(problem(Problem::new(408, "request timeout", format!("the body did not arrive within {BODY_READ_TIMEOUT:?}")))),
    }
}

/// Every write runs on the leader: `None` if this node is it, else the answer — the
/// leader's, relayed, or why there is none. A request already forwarded once is not
/// forwarded again, so two nodes that disagree about the leader cannot bounce it.
/// `prefix` is where the leader's cluster port serves this request ([`super::FORWARD_PREFIX`]
/// for the API, empty for cluster requests).
pub(super) async fn at_leader(s: &AppState, prefix: &str, parts: &axum::http::request::Parts, bytes: &Bytes) -> Option<Response> {
    match leader_addr(s).await {
        Err(r) => Some(r),
        Ok(None) => None,
        Ok(Some(_)) if parts.headers.get("x-plexus-forwarded").is_some() => Some(unavailable("leadership is changing; retry")),
        Ok(Some(addr)) => {
            let uri = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            Some(forward(s, &addr, prefix, parts.method.clone(), uri, &parts.headers, bytes.clone()).await)
        }
    }
}

pub(crate) async fn route_write(s: &AppState, req: Request, cmd: impl FnOnce(Bytes) -> Result<Command, Response>, ok: StatusCode) -> Response {
    let (parts, bytes) = match read_body(req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Some(r) = at_leader(s, super::FORWARD_PREFIX, &parts, &bytes).await {
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
        // Under the leader lease no other leader can exist: the replica is current.
        None if s.lease.serves_reads() => Ok(()),
        None => match tokio::time::timeout(QUORUM_WAIT, s.raft.ensure_linearizable()).await {
            Ok(r) => r.map(|_| ()).map_err(|e| unavailable(e.to_string())),
            Err(_) => Err(unavailable(format!("no majority answered within {QUORUM_WAIT:?}: this node is cut off from the cluster"))),
        },
        Some(addr) => {
            let uri = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            Err(forward(s, &addr, super::FORWARD_PREFIX, Method::GET, uri, headers, Bytes::new()).await)
        }
    }
}
