//! REST handlers for routers and policies: both are named objects with a spec, created,
//! replaced, deleted, listed and read the same way, so one generic implementation
//! ([`Named`]) serves both; the handlers below only name the kind and document the route.

use axum::extract::{Path, Query, Request};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use plexus_api::{Policy, PolicyCounters, PolicySpec, Problem, Router, RouterSpec, Valid, Validate};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{if_match, parse, problem, route_read, route_write, ReadOpts, St};
use crate::model::{Command, Model};

const P503: &str = "No leader or no quorum";

/// A kind of named object the generic handlers serve.
trait Named {
    /// Its name in messages.
    const KIND: &'static str;
    /// What clients send.
    type Spec: Validate + DeserializeOwned;
    /// What the model stores.
    type Stored: Serialize + Clone;
    /// The spec's name.
    fn name(spec: &Self::Spec) -> &str;
    /// The command that creates (`create`) or replaces it.
    fn put(spec: Valid<Self::Spec>, create: bool, if_match: Option<u64>) -> Command;
    /// The command that deletes it.
    fn delete(name: String) -> Command;
    /// Every stored one.
    fn all(m: &Model) -> Vec<Self::Stored>;
    /// One by name.
    fn get(m: &Model, name: &str) -> Option<Self::Stored>;
}

struct Routers;
struct Policies;

impl Named for Routers {
    const KIND: &'static str = "router";
    type Spec = RouterSpec;
    type Stored = Router;
    fn name(spec: &RouterSpec) -> &str {
        &spec.name
    }
    fn put(spec: Valid<RouterSpec>, create: bool, if_match: Option<u64>) -> Command {
        Command::PutRouter { spec, create, if_match }
    }
    fn delete(name: String) -> Command {
        Command::DeleteRouter { name }
    }
    fn all(m: &Model) -> Vec<Router> {
        m.routers.values().cloned().collect()
    }
    fn get(m: &Model, name: &str) -> Option<Router> {
        m.routers.get(name).cloned()
    }
}

impl Named for Policies {
    const KIND: &'static str = "policy";
    type Spec = PolicySpec;
    type Stored = Policy;
    fn name(spec: &PolicySpec) -> &str {
        &spec.name
    }
    fn put(spec: Valid<PolicySpec>, create: bool, if_match: Option<u64>) -> Command {
        Command::PutPolicy { spec, create, if_match }
    }
    fn delete(name: String) -> Command {
        Command::DeletePolicy { name }
    }
    fn all(m: &Model) -> Vec<Policy> {
        m.policies.values().cloned().collect()
    }
    fn get(m: &Model, name: &str) -> Option<Policy> {
        m.policies.get(name).cloned()
    }
}

/// Parses and validates a spec; with `url_name`, its name must be the URL's.
fn spec_of<N: Named>(bytes: &[u8], url_name: Option<&str>) -> Result<Valid<N::Spec>, Response> {
    let spec: N::Spec = parse(&bytes.to_vec().into())?;
    if let Some(url) = url_name.filter(|u| *u != N::name(&spec)) {
        let body = N::name(&spec);
        return Err(problem(Problem {
            field: Some("name".into()),
            ..Problem::new(422, "invalid field", format!("name {body:?} differs from the URL's {url:?}"))
        }));
    }
    Valid::new(spec).map_err(|e| problem(Problem::invalid(&e)))
}

async fn create<N: Named>(s: St, req: Request) -> Response {
    route_write(&s, req, |b| Ok(N::put(spec_of::<N>(&b, None)?, true, None)), StatusCode::CREATED).await
}

async fn replace<N: Named>(s: St, name: String, req: Request) -> Response {
    let im = match if_match(req.headers()) {
        Ok(v) => v,
        Err(r) => return r,
    };
    route_write(&s, req, move |b| Ok(N::put(spec_of::<N>(&b, Some(&name))?, false, im)), StatusCode::OK).await
}

async fn delete<N: Named>(s: St, name: String, req: Request) -> Response {
    route_write(&s, req, move |_| Ok(N::delete(name)), StatusCode::NO_CONTENT).await
}

async fn list<N: Named>(s: St, o: ReadOpts, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = route_read(&s, &o, &uri, &headers).await {
        return r;
    }
    Json(N::all(&s.state.read().await.model)).into_response()
}

async fn get<N: Named>(s: St, name: String, o: ReadOpts, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = route_read(&s, &o, &uri, &headers).await {
        return r;
    }
    match N::get(&s.state.read().await.model, &name) {
        Some(x) => Json(x).into_response(),
        None => problem(Problem { field: Some("name".into()), ..Problem::new(404, "not found", format!("no {} named {name}", N::KIND)) }),
    }
}

#[utoipa::path(post, path = "/v1/routers", tag = "routing", request_body = RouterSpec,
    responses((status = 201, description = "Created", body = Router), (status = 409, description = "Exists"),
              (status = 422, description = "Invalid field, unknown network, or overlapping subnets in the routing domain"),
              (status = 503, description = P503)))]
pub(crate) async fn create_router(s: St, req: Request) -> Response {
    create::<Routers>(s, req).await
}

#[utoipa::path(put, path = "/v1/routers/{name}", tag = "routing", request_body = RouterSpec,
    params(("name" = String, Path, description = "Router name"), ("If-Match" = Option<String>, Header, description = "Revision the router must be at")),
    responses((status = 200, description = "Created or replaced", body = Router), (status = 412, description = "Revision mismatch"),
              (status = 422, description = "Invalid"), (status = 503, description = P503)))]
pub(crate) async fn put_router(s: St, Path(name): Path<String>, req: Request) -> Response {
    replace::<Routers>(s, name, req).await
}

#[utoipa::path(delete, path = "/v1/routers/{name}", tag = "routing", params(("name" = String, Path, description = "Router name")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such router"), (status = 503, description = P503)))]
pub(crate) async fn delete_router(s: St, Path(name): Path<String>, req: Request) -> Response {
    delete::<Routers>(s, name, req).await
}

#[utoipa::path(get, path = "/v1/routers", tag = "routing", params(("local" = Option<bool>, Query, description = "Answer from this node's replica")),
    responses((status = 200, description = "All routers", body = [Router]), (status = 503, description = P503)))]
pub(crate) async fn list_routers(s: St, Query(o): Query<ReadOpts>, uri: Uri, headers: HeaderMap) -> Response {
    list::<Routers>(s, o, uri, headers).await
}

#[utoipa::path(get, path = "/v1/routers/{name}", tag = "routing", params(("name" = String, Path, description = "Router name"), ("local" = Option<bool>, Query, description = "Answer from this node's replica")),
    responses((status = 200, description = "The router", body = Router), (status = 404, description = "No such router")))]
pub(crate) async fn get_router(s: St, Path(name): Path<String>, Query(o): Query<ReadOpts>, uri: Uri, headers: HeaderMap) -> Response {
    get::<Routers>(s, name, o, uri, headers).await
}

#[utoipa::path(post, path = "/v1/policies", tag = "routing", request_body = PolicySpec,
    responses((status = 201, description = "Created", body = Policy), (status = 422, description = "Invalid field, unknown network or unknown peer network"),
              (status = 409, description = "A policy of that name exists"), (status = 503, description = P503)))]
pub(crate) async fn create_policy(s: St, req: Request) -> Response {
    create::<Policies>(s, req).await
}

#[utoipa::path(put, path = "/v1/policies/{name}", tag = "routing", request_body = PolicySpec,
    params(("name" = String, Path, description = "Policy name"), ("If-Match" = Option<String>, Header, description = "Revision the policy must be at")),
    responses((status = 200, description = "Created or replaced", body = Policy), (status = 412, description = "Revision mismatch"),
              (status = 422, description = "Invalid"),
              (status = 503, description = P503)))]
pub(crate) async fn put_policy(s: St, Path(name): Path<String>, req: Request) -> Response {
    replace::<Policies>(s, name, req).await
}

#[utoipa::path(delete, path = "/v1/policies/{name}", tag = "routing", params(("name" = String, Path, description = "Policy name")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such policy"), (status = 503, description = P503)))]
pub(crate) async fn delete_policy(s: St, Path(name): Path<String>, req: Request) -> Response {
    delete::<Policies>(s, name, req).await
}

#[utoipa::path(get, path = "/v1/policies", tag = "routing", params(("local" = Option<bool>, Query, description = "Answer from this node's replica")),
    responses((status = 200, description = "All policies", body = [Policy]), (status = 503, description = P503)))]
pub(crate) async fn list_policies(s: St, Query(o): Query<ReadOpts>, uri: Uri, headers: HeaderMap) -> Response {
    list::<Policies>(s, o, uri, headers).await
}

#[utoipa::path(get, path = "/v1/policies/{name}", tag = "routing", params(("name" = String, Path, description = "Policy name"), ("local" = Option<bool>, Query, description = "Answer from this node's replica")),
    responses((status = 200, description = "The policy", body = Policy), (status = 404, description = "No such policy")))]
pub(crate) async fn get_policy(s: St, Path(name): Path<String>, Query(o): Query<ReadOpts>, uri: Uri, headers: HeaderMap) -> Response {
    get::<Policies>(s, name, o, uri, headers).await
}

#[utoipa::path(get, path = "/v1/policies/{name}/counters", tag = "routing", params(("name" = String, Path, description = "Policy name")),
    responses((status = 200, description = "Each rule's decisions and the governed endpoints' drops, read from the switches connected to this node", body = PolicyCounters),
              (status = 404, description = "No such policy, or this node does not program switches")))]
pub(crate) async fn policy_counters(s: St, Path(name): Path<String>) -> Response {
    let Some(mgr) = &s.switches else {
        return super::resources::not_found("name", "this node does not program switches (no --openflow-listen), so it has no counters".into());
    };
    let model = s.state.read().await.model.clone();
    let Some(p) = model.policies.get(&name) else {
        return super::resources::not_found("name", format!("no policy named {name}"));
    };
    let stats = crate::counters::read(mgr).await;
    Json(crate::counters::policy_counters(&model, p, &stats)).into_response()
}
