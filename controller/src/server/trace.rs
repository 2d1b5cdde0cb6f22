//! REST handlers of `plexus trace`: the operator's request, and the long poll through which
//! each host's agent takes the traces to run on its switch and answers them. All three run on
//! the leader (forwarded like writes), so a trace and the agent that runs it meet on one node.

use std::time::Duration;

use axum::extract::{Path, Query, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use plexus_api::{Problem, Trace, TraceJob, TraceOutput, TraceRequest, Valid};
use serde::Deserialize;

use super::leader::{at_leader, read_body};
use super::{parse, problem, St, FORWARD_PREFIX};
use crate::trace::TraceError;

/// Longest an agent's poll is held (the forwarding between nodes gives up at 10 s).
const MAX_POLL: u64 = 8;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PollOpts {
    /// Seconds to wait for a job before answering with none (at most 8).
    #[serde(default)]
    #[param(maximum = 8)]
    wait: u64,
}

/// The request's body, checked, if this node is the leader; the leader's answer (or why there
/// is none) as the error otherwise.
async fn at_leader_body<T: serde::de::DeserializeOwned + plexus_api::Validate>(s: &St, req: Request) -> Result<T, Response> {
    let (parts, bytes) = read_body(req).await?;
    if let Some(r) = at_leader(s, FORWARD_PREFIX, &parts, &bytes).await {
        return Err(r);
    }
    let body: T = parse(&bytes)?;
    Valid::new(body).map(Valid::into_inner).map_err(|e| problem(Problem::invalid(&e)))
}

#[utoipa::path(post, path = "/v1/trace", tag = "routing", request_body = TraceRequest,
    responses((status = 200, description = "Every flow the packet met on the sender's host and, through the tunnel, the receiver's, and the verdict", body = Trace),
              (status = 422, description = "Invalid field, unknown endpoint"),
              (status = 503, description = "No leader or no quorum, or a host's agent did not answer")))]
pub(crate) async fn trace(s: St, req: Request) -> Response {
    let r: TraceRequest = match at_leader_body(&s, req).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let model = s.state.read().await.model.clone();
    match crate::trace::trace(&s.traces, &model, &r).await {
        Ok(t) => Json(t).into_response(),
        Err(TraceError::Invalid { field, reason }) => problem(Problem { field: Some(field.into()), ..Problem::new(422, "invalid request", reason) }),
        Err(e @ TraceError::Agent(_)) => problem(Problem::new(503, "agent did not trace", e.to_string())),
    }
}

#[utoipa::path(get, path = "/v1/hosts/{name}/trace-jobs", tag = "hosts",
    params(("name" = String, Path, description = "Host name"), PollOpts),
    responses((status = 200, description = "Traces for this host's agent to run", body = [TraceJob]), (status = 400, description = "wait over 8 s"), (status = 404, description = "No such host"),
              (status = 503, description = "No leader or no quorum")))]
pub(crate) async fn trace_jobs(s: St, Path(name): Path<String>, Query(o): Query<PollOpts>, req: Request) -> Response {
    let (parts, bytes) = match read_body(req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if o.wait > MAX_POLL {
        return problem(Problem { field: Some("wait".into()), ..Problem::new(400, "invalid query", format!("wait {} is over {MAX_POLL} seconds", o.wait)) });
    }
    if let Some(r) = at_leader(&s, FORWARD_PREFIX, &parts, &bytes).await {
        return r;
    }
    // Only registered hosts are remembered as polling: a made-up name costs no memory.
    if !s.state.read().await.model.hosts.contains_key(&name) {
        return problem(Problem { field: Some("name".into()), ..Problem::new(404, "not found", format!("no host named {name}")) });
    }
    Json(s.traces.take(&name, Duration::from_secs(o.wait)).await).into_response()
}

#[utoipa::path(post, path = "/v1/hosts/{name}/trace-jobs/{id}", tag = "hosts", request_body = TraceOutput,
    params(("name" = String, Path, description = "Host name"), ("id" = u64, Path, description = "Job id")),
    responses((status = 204, description = "Taken"), (status = 404, description = "Nobody waits for this job (any more)"), (status = 503, description = "No leader or no quorum")))]
pub(crate) async fn trace_answer(s: St, Path((_name, id)): Path<(String, u64)>, req: Request) -> Response {
    let out: TraceOutput = match at_leader_body(&s, req).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let r = match (out.output, out.error) {
        (Some(o), None) => Ok(o),
        (_, Some(e)) => Err(e),
        (None, None) => Err("the agent sent neither output nor error".into()),
    };
    if s.traces.answer(id, r) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        problem(Problem { field: Some("id".into()), ..Problem::new(404, "not found", format!("nobody waits for trace job {id} (any more)")) })
    }
}
