//! What one host's agent long-polls, answered from this node's replica like a watch (agents
//! may poll any node): `GET /v1/hosts/{name}/edge`, what the host's own stack must do for
//! Plexus (routes and NAT for external networks, published ports), and
//! `GET /v1/hosts/{name}/names`, what its DNS responder answers.

use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use axum::Json;
use plexus_api::{HostEdge, HostNames, Problem};
use serde::Deserialize;

use super::{problem, St};
use crate::model::Model;

/// Longest a poll is held (the client gives up on a request after 30 s).
const MAX_WAIT: u64 = 25;
/// How long a woken poll lets further changes gather before it looks again.
const COALESCE: std::time::Duration = std::time::Duration::from_millis(20);

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PollOpts {
    /// The digest the agent holds: the answer waits until what it polls differs from it.
    #[serde(default)]
    known: Option<String>,
    /// Seconds to wait for a difference before answering with the same (at most 25).
    #[serde(default)]
    #[param(maximum = 25)]
    wait: u64,
}

/// Answers host `name`'s poll of `view` (with its digest): at once without `known` or when the
/// view differs from it, else when it changes or the wait ends.
async fn poll<T: serde::Serialize>(s: St, name: String, o: PollOpts, view: impl Fn(&Model, &str) -> T, digest: impl Fn(&T) -> &str) -> Response {
    if o.wait > MAX_WAIT {
        return problem(Problem { field: Some("wait".into()), ..Problem::new(400, "invalid query", format!("wait {} is over {MAX_WAIT} seconds", o.wait)) });
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(o.wait);
    let mut rx = s.revisions.clone();
    loop {
        // A snapshot (O(1)) under the lock, the walk outside it: every host's poll wakes on
        // every change, and Raft's apply must not wait for them.
        let model = {
            let st = s.state.read().await;
            rx.borrow_and_update();
            st.model.clone()
        };
        if !model.hosts.contains_key(&name) {
            return problem(Problem { field: Some("name".into()), ..Problem::new(404, "not found", format!("no host named {name}")) });
        }
        let answer = view(&model, &name);
        if o.known.as_deref() != Some(digest(&answer)) {
            return Json(answer).into_response();
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            // A burst of changes (a batch, a thousand endpoint creations) would otherwise
            // cost every waiting host a walk of the model per change: the walk comes 20 ms
            // after the change that woke it and takes in every change of those 20 ms, a delay
            // no container notices.
            Ok(Ok(())) => tokio::time::sleep(COALESCE).await,
            _ => return Json(answer).into_response(),
        }
    }
}

#[utoipa::path(get, path = "/v1/hosts/{name}/edge", tag = "hosts",
    params(("name" = String, Path, description = "Host name"), PollOpts),
    responses((status = 200, description = "The host's external subnets and published ports", body = HostEdge),
              (status = 400, description = "wait over 25 s"), (status = 404, description = "No such host")))]
/// What host `name`'s stack must do for Plexus; with `known`, waits until that changes.
pub(crate) async fn host_edge(s: St, Path(name): Path<String>, Query(o): Query<PollOpts>) -> Response {
    poll(s, name, o, Model::host_edge, |e: &HostEdge| &e.digest).await
}

#[utoipa::path(get, path = "/v1/hosts/{name}/names", tag = "hosts",
    params(("name" = String, Path, description = "Host name"), PollOpts),
    responses((status = 200, description = "The zones and names host's DNS responder serves", body = HostNames),
              (status = 400, description = "wait over 25 s"), (status = 404, description = "No such host")))]
/// What host `name`'s DNS responder answers; with `known`, waits until that changes.
pub(crate) async fn host_names(s: St, Path(name): Path<String>, Query(o): Query<PollOpts>) -> Response {
    poll(s, name, o, Model::host_names, |n: &HostNames| &n.digest).await
}
