//! REST handlers for routers and policies.

use axum::extract::{Path, Query, Request};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use plexus_api::{Policy, PolicySpec, Problem, Router, RouterSpec, Valid};

use super::{if_match, parse, problem, route_read, route_write, ReadOpts, St};
use crate::model::Command;

fn invalid(e: plexus_api::FieldError) -> Response {
    problem(Problem::invalid(&e))
}

fn name_mismatch(body: &str, url: &str) -> Response {
    problem(Problem { field: Some("name".into()), ..Problem::new(422, "invalid field", format!("name {body:?} differs from the URL's {url:?}")) })
}

fn not_found(what: &str, name: &str) -> Response {
    problem(Problem { field: Some("name".into()), ..Problem::new(404, "not found", format!("no {what} named {name}")) })
}

const P503: &str = "No leader or no quorum";

#[utoipa::path(post, path = "/v1/routers", tag = "routing", request_body = RouterSpec,
    responses((status = 201, description = "Created", body = Router), (status = 409, description = "Exists", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field, unknown network, or overlapping subnets in the routing domain", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = P503, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create_router(s: St, req: Request) -> Response {
    route_write(
        &s,
        req,
        |b| {
            let spec: RouterSpec = parse(&b)?;
            Ok(Command::PutRouter { spec: Valid::new(spec).map_err(invalid)?, create: true, if_match: None })
        },
        StatusCode::CREATED,
    )
    .await
}

#[utoipa::path(put, path = "/v1/routers/{name}", tag = "routing", request_body = RouterSpec,
    params(("name" = String, Path, description = "Router name"), ("If-Match" = Option<String>, Header, description = "Revision the router must be at")),
    responses((status = 200, description = "Created or replaced", body = Router), (status = 412, description = "Revision mismatch", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid", body = Problem, content_type = "application/problem+json"), (status = 503, description = P503, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn put_router(s: St, Path(name): Path<String>, req: Request) -> Response {
    let im = match if_match(req.headers()) {
        Ok(v) => v,
        Err(r) => return r,
    };
    route_write(
        &s,
        req,
        move |b| {
            let spec: RouterSpec = parse(&b)?;
            if spec.name != name {
                return Err(name_mismatch(&spec.name, &name));
            }
            Ok(Command::PutRouter { spec: Valid::new(spec).map_err(invalid)?, create: false, if_match: im })
        },
        StatusCode::OK,
    )
    .await
}

#[utoipa::path(delete, path = "/v1/routers/{name}", tag = "routing", params(("name" = String, Path, description = "Router name")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such router", body = Problem, content_type = "application/problem+json"), (status = 503, description = P503, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete_router(s: St, Path(name): Path<String>, req: Request) -> Response {
    route_write(&s, req, move |_| Ok(Command::DeleteRouter { name }), StatusCode::NO_CONTENT).await
}

#[utoipa::path(get, path = "/v1/routers", tag = "routing", params(("local" = Option<bool>, Query, description = "Answer from this node's replica")),
    responses((status = 200, description = "All routers", body = [Router]), (status = 503, description = P503, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_routers(s: St, Query(o): Query<ReadOpts>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = route_read(&s, &o, &uri, &headers).await {
        return r;
    }
    Json(s.state.read().await.model.routers.values().cloned().collect::<Vec<_>>()).into_response()
}

#[utoipa::path(get, path = "/v1/routers/{name}", tag = "routing", params(("name" = String, Path, description = "Router name"), ("local" = Option<bool>, Query, description = "Answer from this node's replica")),
    responses((status = 200, description = "The router", body = Router), (status = 404, description = "No such router", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_router(s: St, Path(name): Path<String>, Query(o): Query<ReadOpts>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = route_read(&s, &o, &uri, &headers).await {
        return r;
    }
    match s.state.read().await.model.routers.get(&name) {
        Some(r) => Json(r.clone()).into_response(),
        None => not_found("router", &name),
    }
}

#[utoipa::path(post, path = "/v1/policies", tag = "routing", request_body = PolicySpec,
    responses((status = 201, description = "Created", body = Policy), (status = 422, description = "Invalid field or unknown network", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = P503, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create_policy(s: St, req: Request) -> Response {
    route_write(
        &s,
        req,
        |b| {
            let spec: PolicySpec = parse(&b)?;
            Ok(Command::PutPolicy { spec: Valid::new(spec).map_err(invalid)?, create: true, if_match: None })
        },
        StatusCode::CREATED,
    )
    .await
}

#[utoipa::path(put, path = "/v1/policies/{name}", tag = "routing", request_body = PolicySpec,
    params(("name" = String, Path, description = "Policy name"), ("If-Match" = Option<String>, Header, description = "Revision the policy must be at")),
    responses((status = 200, description = "Created or replaced", body = Policy), (status = 412, description = "Revision mismatch", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid", body = Problem, content_type = "application/problem+json"), (status = 503, description = P503, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn put_policy(s: St, Path(name): Path<String>, req: Request) -> Response {
    let im = match if_match(req.headers()) {
        Ok(v) => v,
        Err(r) => return r,
    };
    route_write(
        &s,
        req,
        move |b| {
            let spec: PolicySpec = parse(&b)?;
            if spec.name != name {
                return Err(name_mismatch(&spec.name, &name));
            }
            Ok(Command::PutPolicy { spec: Valid::new(spec).map_err(invalid)?, create: false, if_match: im })
        },
        StatusCode::OK,
    )
    .await
}

#[utoipa::path(delete, path = "/v1/policies/{name}", tag = "routing", params(("name" = String, Path, description = "Policy name")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such policy", body = Problem, content_type = "application/problem+json"), (status = 503, description = P503, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete_policy(s: St, Path(name): Path<String>, req: Request) -> Response {
    route_write(&s, req, move |_| Ok(Command::DeletePolicy { name }), StatusCode::NO_CONTENT).await
}

#[utoipa::path(get, path = "/v1/policies", tag = "routing", params(("local" = Option<bool>, Query, description = "Answer from this node's replica")),
    responses((status = 200, description = "All policies", body = [Policy]), (status = 503, description = P503, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_policies(s: St, Query(o): Query<ReadOpts>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = route_read(&s, &o, &uri, &headers).await {
        return r;
    }
    Json(s.state.read().await.model.policies.values().cloned().collect::<Vec<_>>()).into_response()
}

#[utoipa::path(get, path = "/v1/policies/{name}", tag = "routing", params(("name" = String, Path, description = "Policy name"), ("local" = Option<bool>, Query, description = "Answer from this node's replica")),
    responses((status = 200, description = "The policy", body = Policy), (status = 404, description = "No such policy", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_policy(s: St, Path(name): Path<String>, Query(o): Query<ReadOpts>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = route_read(&s, &o, &uri, &headers).await {
        return r;
    }
    match s.state.read().await.model.policies.get(&name) {
        Some(p) => Json(p.clone()).into_response(),
        None => not_found("policy", &name),
    }
}
