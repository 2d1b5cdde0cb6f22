//! REST handlers for networks, endpoints and hosts.

use crate::now_ms;

use axum::extract::{Path, Query, Request};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use plexus_api::{Endpoint, EndpointLabels, EndpointPublish, EndpointSpec, Host, HostSpec, Lease, Network, NetworkSpec, Problem, Valid};
use serde::Deserialize;

use super::{if_match, parse, problem, route_read, route_write, Caller, ReadOpts, St};
use crate::model::{Command, OWNER_LABEL};

/// The host an agent's credential is bound to, when an agent calls.
fn agent_host(req: &Request) -> Option<String> {
    req.extensions().get::<Caller>().and_then(|c| c.agent_host()).map(str::to_string)
}

pub(crate) fn not_found(field: &str, detail: String) -> Response {
    problem(Problem { field: Some(field.into()), ..Problem::new(404, "not found", detail) })
}

fn mismatch(field: &str, body: &str, url: &str) -> Response {
    problem(Problem { field: Some(field.into()), ..Problem::new(422, "invalid field", format!("{field} {body:?} differs from the URL's {url:?}")) })
}

macro_rules! header_or_return {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

// ---- networks ----

#[utoipa::path(post, path = "/v1/networks", tag = "networks", request_body = NetworkSpec,
    responses((status = 201, description = "Created", body = Network), (status = 400, description = "Malformed body"), (status = 409, description = "Name, VNI or VLAN taken"), (status = 413, description = "Body too large"), (status = 422, description = "Invalid field"), (status = 503, description = "No leader or no quorum")))]
pub(crate) async fn create_network(s: St, req: Request) -> Response {
    let im = header_or_return!(if_match(req.headers()));
    let agent = agent_host(&req);
    route_write(
        &s,
        req,
        |b| {
            let mut spec: NetworkSpec = parse(&b)?;
            // What a host's agent makes (for its Docker) is marked as its own: only that it
            // may delete again.
            if let Some(h) = agent {
                spec.labels.insert(OWNER_LABEL.into(), h);
            }
            let spec = Valid::new(spec).map_err(|e| problem(Problem::invalid(&e)))?;
            Ok(Command::PutNetwork { spec, create: true, if_match: im })
        },
        StatusCode::CREATED,
    )
    .await
}

#[utoipa::path(put, path = "/v1/networks/{name}", tag = "networks", request_body = NetworkSpec,
    params(("name" = String, Path, description = "Network name"), ("If-Match" = Option<String>, Header, description = "Revision the network must be at")),
    responses((status = 200, description = "Created or replaced (idempotent)", body = Network), (status = 400, description = "Malformed body"), (status = 409, description = "Conflict"), (status = 412, description = "Revision mismatch"), (status = 422, description = "Invalid field"), (status = 503, description = "No leader or no quorum")))]
pub(crate) async fn put_network(s: St, Path(name): Path<String>, req: Request) -> Response {
    let im = header_or_return!(if_match(req.headers()));
    route_write(
        &s,
        req,
        move |b| {
            let spec: NetworkSpec = parse(&b)?;
            if spec.name != name {
                return Err(mismatch("name", &spec.name, &name));
            }
            let spec = Valid::new(spec).map_err(|e| problem(Problem::invalid(&e)))?;
            Ok(Command::PutNetwork { spec, create: false, if_match: im })
        },
        StatusCode::OK,
    )
    .await
}

#[derive(Deserialize)]
pub(crate) struct DeleteOpts {
    #[serde(default)]
    force: bool,
}

#[utoipa::path(delete, path = "/v1/networks/{name}", tag = "networks",
    params(("name" = String, Path, description = "Network name"), ("force" = Option<bool>, Query, description = "Delete its endpoints too"), ("If-Match" = Option<String>, Header, description = "Revision the network must be at")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such network"), (status = 409, description = "Endpoints remain"), (status = 412, description = "Revision mismatch"), (status = 503, description = "No leader or no quorum")))]
pub(crate) async fn delete_network(s: St, Path(name): Path<String>, Query(o): Query<DeleteOpts>, req: Request) -> Response {
    let im = header_or_return!(if_match(req.headers()));
    let owner = agent_host(&req);
    if owner.is_some() && o.force {
        return problem(Problem { field: Some("force".into()), ..Problem::new(403, "forbidden", "an agent's credential may not force-delete a network") });
    }
    route_write(&s, req, move |_| Ok(Command::DeleteNetwork { name, if_match: im, force: o.force, owner }), StatusCode::NO_CONTENT).await
}

#[utoipa::path(get, path = "/v1/networks", tag = "networks", params(("local" = Option<bool>, Query, description = "Answer from this node's replica instead of the leader")),
    responses((status = 200, description = "All networks", body = [Network]), (status = 503, description = "No leader or no quorum")))]
pub(crate) async fn list_networks(s: St, Query(o): Query<ReadOpts>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = route_read(&s, &o, &uri, &headers).await {
        return r;
    }
    let st = s.state.read().await;
    Json(st.model.networks.values().cloned().collect::<Vec<_>>()).into_response()
}

#[utoipa::path(get, path = "/v1/networks/{name}", tag = "networks", params(("name" = String, Path, description = "Network name"), ("local" = Option<bool>, Query, description = "Answer from this node's replica instead of the leader")),
    responses((status = 200, description = "The network (ETag: its revision)", body = Network), (status = 404, description = "No such network"), (status = 503, description = "No leader or no quorum")))]
pub(crate) async fn get_network(s: St, Path(name): Path<String>, Query(o): Query<ReadOpts>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = route_read(&s, &o, &uri, &headers).await {
        return r;
    }
    match s.state.read().await.model.networks.get(&name) {
        Some(n) => ([(header::ETAG, format!("\"{}\"", n.revision))], Json(n.clone())).into_response(),
        None => not_found("name", format!("no network named {name}")),
    }
}

// ---- endpoints ----

#[utoipa::path(post, path = "/v1/networks/{name}/endpoints", tag = "endpoints", request_body = EndpointSpec,
    params(("name" = String, Path, description = "Network name")),
    responses((status = 201, description = "Created, address allocated", body = Endpoint), (status = 400, description = "Malformed body"), (status = 404, description = "No such network"), (status = 409, description = "Address, MAC or id taken, or subnet exhausted"), (status = 422, description = "Invalid field"), (status = 503, description = "No leader or no quorum")))]
pub(crate) async fn create_endpoint(s: St, Path(network): Path<String>, req: Request) -> Response {
    let now_ms = now_ms();
    let agent = agent_host(&req);
    route_write(
        &s,
        req,
        move |b| {
            let spec: EndpointSpec = parse(&b)?;
            if let Some(h) = agent.filter(|h| *h != spec.host) {
                let detail = format!("host {h}'s agent may create endpoints only on {h}, not on {}", spec.host);
                return Err(problem(Problem { field: Some("host".into()), ..Problem::new(403, "forbidden", detail) }));
            }
            let spec = Valid::new(spec).map_err(|e| problem(Problem::invalid(&e)))?;
            Ok(Command::CreateEndpoint { network, spec, now_ms })
        },
        StatusCode::CREATED,
    )
    .await
}

#[utoipa::path(delete, path = "/v1/networks/{name}/endpoints/{id}", tag = "endpoints",
    params(("name" = String, Path, description = "Network name"), ("id" = String, Path, description = "Endpoint id")),
    responses((status = 204, description = "Deleted, address freed"), (status = 404, description = "No such endpoint"), (status = 503, description = "No leader or no quorum")))]
pub(crate) async fn delete_endpoint(s: St, Path((network, id)): Path<(String, String)>, req: Request) -> Response {
    let on_host = agent_host(&req);
    route_write(&s, req, move |_| Ok(Command::DeleteEndpoint { network, id, on_host }), StatusCode::NO_CONTENT).await
}

#[utoipa::path(put, path = "/v1/networks/{name}/endpoints/{id}/labels", tag = "endpoints", request_body = EndpointLabels,
    params(("name" = String, Path, description = "Network name"), ("id" = String, Path, description = "Endpoint id"), ("If-Match" = Option<String>, Header, description = "Revision the endpoint must be at")),
    responses((status = 200, description = "Labels replaced; policies that select by them apply at once", body = Endpoint), (status = 400, description = "Malformed body"), (status = 404, description = "No such endpoint"), (status = 412, description = "Revision mismatch"), (status = 422, description = "Invalid label"), (status = 503, description = "No leader or no quorum")))]
pub(crate) async fn put_endpoint_labels(s: St, Path((network, id)): Path<(String, String)>, req: Request) -> Response {
    put_endpoint_part(s, req, move |labels: Valid<EndpointLabels>, if_match, on_host| Command::SetEndpointLabels { network, id, labels, if_match, on_host })
        .await
}

/// A PUT that replaces one part of an endpoint: the body checked into `T`, the If-Match
/// revision and the calling agent's host (which the state machine holds it to) made into a
/// command.
async fn put_endpoint_part<T: serde::de::DeserializeOwned + plexus_api::Validate>(
    s: St,
    req: Request,
    command: impl FnOnce(Valid<T>, Option<u64>, Option<String>) -> Command + Send + 'static,
) -> Response {
    let on_host = agent_host(&req);
    let if_match = header_or_return!(if_match(req.headers()));
    route_write(
        &s,
        req,
        move |b| {
            let body: T = parse(&b)?;
            let body = Valid::new(body).map_err(|e| problem(Problem::invalid(&e)))?;
            Ok(command(body, if_match, on_host))
        },
        StatusCode::OK,
    )
    .await
}

#[utoipa::path(put, path = "/v1/networks/{name}/endpoints/{id}/publish", tag = "endpoints", request_body = EndpointPublish,
    params(("name" = String, Path, description = "Network name"), ("id" = String, Path, description = "Endpoint id"), ("If-Match" = Option<String>, Header, description = "Revision the endpoint must be at")),
    responses((status = 200, description = "Published ports replaced; the host forwards them at once", body = Endpoint), (status = 400, description = "Malformed body"), (status = 404, description = "No such endpoint"), (status = 409, description = "A port already published on the host"), (status = 412, description = "Revision mismatch"), (status = 422, description = "Invalid port, or a network without external access"), (status = 503, description = "No leader or no quorum")))]
pub(crate) async fn put_endpoint_publish(s: St, Path((network, id)): Path<(String, String)>, req: Request) -> Response {
    put_endpoint_part(s, req, move |publish: Valid<EndpointPublish>, if_match, on_host| Command::SetEndpointPublish { network, id, publish, if_match, on_host })
        .await
}

#[utoipa::path(get, path = "/v1/networks/{name}/endpoints", tag = "endpoints", params(("name" = String, Path, description = "Network name"), ("local" = Option<bool>, Query, description = "Answer from this node's replica instead of the leader")),
    responses((status = 200, description = "The network's endpoints", body = [Endpoint]), (status = 404, description = "No such network"), (status = 503, description = "No leader or no quorum")))]
pub(crate) async fn list_endpoints(
    s: St,
    Path(network): Path<String>,
    Query(o): Query<ReadOpts>,
    caller: Option<Extension<Caller>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = route_read(&s, &o, &uri, &headers).await {
        return r;
    }
    let st = s.state.read().await;
    if !st.model.networks.contains_key(&network) {
        return not_found("network", format!("no network named {network}"));
    }
    // A host's agent sees its own host's endpoints only: other hosts' are not its business.
    let only = caller.as_ref().and_then(|c| c.agent_host());
    let all = st.model.endpoints.get(&network).map(|m| m.values().filter(|e| only.is_none_or(|h| e.host == h)).cloned().collect::<Vec<_>>());
    Json(all.unwrap_or_default()).into_response()
}

#[utoipa::path(get, path = "/v1/networks/{name}/endpoints/{id}", tag = "endpoints",
    params(("name" = String, Path, description = "Network name"), ("id" = String, Path, description = "Endpoint id"), ("local" = Option<bool>, Query, description = "Answer from this node's replica instead of the leader")),
    responses((status = 200, description = "The endpoint", body = Endpoint), (status = 404, description = "No such endpoint"), (status = 503, description = "No leader or no quorum")))]
pub(crate) async fn get_endpoint(
    s: St,
    Path((network, id)): Path<(String, String)>,
    Query(o): Query<ReadOpts>,
    caller: Option<Extension<Caller>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = route_read(&s, &o, &uri, &headers).await {
        return r;
    }
    let only = caller.as_ref().and_then(|c| c.agent_host());
    match s.state.read().await.model.endpoints.get(&network).and_then(|m| m.get(&id)).filter(|e| only.is_none_or(|h| e.host == h)) {
        Some(e) => Json(e.clone()).into_response(),
        None => not_found("id", format!("no endpoint {id} in network {network}")),
    }
}

#[utoipa::path(get, path = "/v1/networks/{name}/leases", tag = "endpoints", params(("name" = String, Path, description = "Network name"), ("local" = Option<bool>, Query, description = "Answer from this node's replica")),
    responses((status = 200, description = "host-subnet leases of the network", body = [Lease]), (status = 404, description = "No such network")))]
pub(crate) async fn list_leases(s: St, Path(network): Path<String>, Query(o): Query<ReadOpts>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = route_read(&s, &o, &uri, &headers).await {
        return r;
    }
    let st = s.state.read().await;
    if !st.model.networks.contains_key(&network) {
        return not_found("network", format!("no network named {network}"));
    }
    Json(st.model.leases.get(&network).map(|m| m.values().cloned().collect::<Vec<_>>()).unwrap_or_default()).into_response()
}

// ---- hosts ----

#[utoipa::path(put, path = "/v1/hosts/{name}", tag = "hosts", request_body = HostSpec,
    params(("name" = String, Path, description = "Host name")),
    responses((status = 200, description = "Registered; repeating it is the heartbeat", body = Host), (status = 400, description = "Malformed body"), (status = 409, description = "Tunnel address taken"), (status = 422, description = "Invalid field"), (status = 503, description = "No leader or no quorum")))]
pub(crate) async fn put_host(s: St, Path(name): Path<String>, req: Request) -> Response {
    let now_ms = now_ms();
    route_write(
        &s,
        req,
        move |b| {
            let spec: HostSpec = parse(&b)?;
            if spec.name != name {
                return Err(mismatch("name", &spec.name, &name));
            }
            let spec = Valid::new(spec).map_err(|e| problem(Problem::invalid(&e)))?;
            Ok(Command::PutHost { spec, now_ms })
        },
        StatusCode::OK,
    )
    .await
}

#[utoipa::path(get, path = "/v1/hosts", tag = "hosts", params(("local" = Option<bool>, Query, description = "Answer from this node's replica instead of the leader")),
    responses((status = 200, description = "Registered hosts", body = [Host]), (status = 503, description = "No leader or no quorum")))]
pub(crate) async fn list_hosts(s: St, Query(o): Query<ReadOpts>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = route_read(&s, &o, &uri, &headers).await {
        return r;
    }
    Json(s.state.read().await.model.hosts.values().cloned().collect::<Vec<_>>()).into_response()
}

#[utoipa::path(get, path = "/v1/hosts/{name}", tag = "hosts", params(("name" = String, Path, description = "Host name"), ("local" = Option<bool>, Query, description = "Answer from this node's replica instead of the leader")),
    responses((status = 200, description = "The host", body = Host), (status = 404, description = "No such host"), (status = 503, description = "No leader or no quorum")))]
pub(crate) async fn get_host(s: St, Path(name): Path<String>, Query(o): Query<ReadOpts>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = route_read(&s, &o, &uri, &headers).await {
        return r;
    }
    match s.state.read().await.model.hosts.get(&name) {
        Some(h) => Json(h.clone()).into_response(),
        None => not_found("name", format!("no host named {name}")),
    }
}

#[utoipa::path(get, path = "/v1/switches", tag = "hosts",
    responses((status = 200, description = "Every switch that has connected to this node, as this node sees it", body = Vec<crate::switches::SwitchStatus>)))]
/// Every switch that has connected to this node, as this node sees it: its role on each
/// (only its master's view says whether it is in sync), in datapath id order. A cluster's
/// whole picture is the union over its nodes; one request per node, not one per host.
pub(crate) async fn switches(s: St) -> Response {
    let list: Vec<crate::switches::SwitchStatus> = s.switches.as_ref().map(|m| m.status().into_values().collect()).unwrap_or_default();
    Json(list).into_response()
}

#[utoipa::path(get, path = "/v1/hosts/{name}/flows", tag = "hosts", params(("name" = String, Path, description = "Host name")),
    responses((status = 200, description = "The state of the host's switch as this node programs it", body = crate::switches::SwitchStatus),
              (status = 404, description = "No such host, or its switch never connected to this node")))]
/// The state of a host's switch: connected, in sync, desired flows, the revision they reflect, the last pass, the last error.
pub(crate) async fn host_flows(s: St, Path(name): Path<String>) -> Response {
    let Some(dpid) = s.state.read().await.model.hosts.get(&name).map(|h| h.datapath_id.clone()) else {
        return not_found("name", format!("no host named {name}"));
    };
    let Some(mgr) = &s.switches else {
        return not_found("name", "this node does not program switches (no --openflow-listen)".into());
    };
    match mgr.status().remove(&dpid) {
        Some(st) => Json(st).into_response(),
        None => not_found("name", format!("the switch of host {name} (datapath id {dpid}) has not connected to this node")),
    }
}
