//! REST handlers for networks, endpoints and hosts.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, Request};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use plexus_api::{EndpointSpec, HostSpec, NetworkSpec, Problem};
use serde::Deserialize;

use super::{if_match, parse, problem, route_read, route_write, ReadOpts, St};
use crate::model::Command;

fn not_found(field: &str, detail: String) -> Response {
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

pub(crate) async fn create_network(s: St, req: Request) -> Response {
    let im = header_or_return!(if_match(req.headers()));
    route_write(&s, req, |b| {
        let spec: NetworkSpec = parse(&b)?;
        let spec = spec.validated().map_err(|e| problem(Problem::invalid(&e)))?;
        Ok(Command::PutNetwork { spec, create: true, if_match: im })
    }, StatusCode::CREATED)
    .await
}

pub(crate) async fn put_network(s: St, Path(name): Path<String>, req: Request) -> Response {
    let im = header_or_return!(if_match(req.headers()));
    route_write(&s, req, move |b| {
        let spec: NetworkSpec = parse(&b)?;
        if spec.name != name {
            return Err(mismatch("name", &spec.name, &name));
        }
        let spec = spec.validated().map_err(|e| problem(Problem::invalid(&e)))?;
        Ok(Command::PutNetwork { spec, create: false, if_match: im })
    }, StatusCode::OK)
    .await
}

#[derive(Deserialize)]
pub(crate) struct DeleteOpts {
    #[serde(default)]
    force: bool,
}

pub(crate) async fn delete_network(s: St, Path(name): Path<String>, Query(o): Query<DeleteOpts>, req: Request) -> Response {
    let im = header_or_return!(if_match(req.headers()));
    route_write(&s, req, move |_| Ok(Command::DeleteNetwork { name, if_match: im, force: o.force }), StatusCode::NO_CONTENT).await
}

pub(crate) async fn list_networks(s: St, Query(o): Query<ReadOpts>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = route_read(&s, &o, &uri, &headers).await {
        return r;
    }
    let st = s.state.read().await;
    Json(st.model.networks.values().cloned().collect::<Vec<_>>()).into_response()
}

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

pub(crate) async fn create_endpoint(s: St, Path(network): Path<String>, req: Request) -> Response {
    route_write(&s, req, move |b| {
        let spec: EndpointSpec = parse(&b)?;
        let spec = spec.validated().map_err(|e| problem(Problem::invalid(&e)))?;
        Ok(Command::CreateEndpoint { network, spec })
    }, StatusCode::CREATED)
    .await
}

pub(crate) async fn delete_endpoint(s: St, Path((network, id)): Path<(String, String)>, req: Request) -> Response {
    route_write(&s, req, move |_| Ok(Command::DeleteEndpoint { network, id }), StatusCode::NO_CONTENT).await
}

pub(crate) async fn list_endpoints(s: St, Path(network): Path<String>, Query(o): Query<ReadOpts>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = route_read(&s, &o, &uri, &headers).await {
        return r;
    }
    let st = s.state.read().await;
    if !st.model.networks.contains_key(&network) {
        return not_found("network", format!("no network named {network}"));
    }
    Json(st.model.endpoints.get(&network).map(|m| m.values().cloned().collect::<Vec<_>>()).unwrap_or_default()).into_response()
}

pub(crate) async fn get_endpoint(s: St, Path((network, id)): Path<(String, String)>, Query(o): Query<ReadOpts>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = route_read(&s, &o, &uri, &headers).await {
        return r;
    }
    match s.state.read().await.model.endpoints.get(&network).and_then(|m| m.get(&id)) {
        Some(e) => Json(e.clone()).into_response(),
        None => not_found("id", format!("no endpoint {id} in network {network}")),
    }
}

// ---- hosts ----

pub(crate) async fn put_host(s: St, Path(name): Path<String>, req: Request) -> Response {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    route_write(&s, req, move |b| {
        let spec: HostSpec = parse(&b)?;
        if spec.name != name {
            return Err(mismatch("name", &spec.name, &name));
        }
        let spec = spec.validated().map_err(|e| problem(Problem::invalid(&e)))?;
        Ok(Command::PutHost { spec, now_ms })
    }, StatusCode::OK)
    .await
}

pub(crate) async fn list_hosts(s: St, Query(o): Query<ReadOpts>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = route_read(&s, &o, &uri, &headers).await {
        return r;
    }
    Json(s.state.read().await.model.hosts.values().cloned().collect::<Vec<_>>()).into_response()
}

pub(crate) async fn get_host(s: St, Path(name): Path<String>, Query(o): Query<ReadOpts>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = route_read(&s, &o, &uri, &headers).await {
        return r;
    }
    match s.state.read().await.model.hosts.get(&name) {
        Some(h) => Json(h.clone()).into_response(),
        None => not_found("name", format!("no host named {name}")),
    }
}
