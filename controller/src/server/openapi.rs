//! The API's OpenAPI document: generated from the handlers' declarations, then finished with
//! what every route shares (the errors any route can answer, in the problem format) and with
//! the limits of parameters the declarations cannot state, so a client generated from it (or a
//! fuzzer driven by it) expects exactly what the server does.

use axum::response::{IntoResponse, Response};
use axum::Json;
use plexus_api::Problem;
use serde_json::{json, Value};

use super::{problem, routes};

/// The OpenAPI document alone (for `plexus controller openapi` and tests).
pub fn openapi() -> utoipa::openapi::OpenApi {
    finish_document(routes().split_for_parts().1)
}

/// The media type of every error this API returns.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Responses any route may give besides its own: a malformed path, query or header (400), no
/// or a bad credential (401), a role that may not (403); with a body, also a body too slow
/// (408), too large (413) or not JSON (415).
const SHARED: [(&str, &str, bool); 6] = [
    ("400", "Malformed path, query, header or body", false),
    ("401", "No credential, or one not valid for this cluster", false),
    ("403", "The credential's role may not do this", false),
    ("408", "The body did not arrive in time", true),
    ("413", "Body too large", true),
    ("415", "The body is not application/json", true),
];

/// Finishes the generated document: every error is a problem document, every route lists the
/// errors it shares with all others, optional parameters are absent rather than `null`, and
/// limits the declarations cannot state are stated.
pub(super) fn finish_document(doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let Ok(mut v) = serde_json::to_value(&doc) else { return doc };
    let problem_body = json!({PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}});
    for item in v["paths"].as_object_mut().into_iter().flat_map(|p| p.values_mut()) {
        for (method, op) in item.as_object_mut().into_iter().flatten() {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let has_body = op.get("requestBody").is_some();
            let probe = op["operationId"].as_str().is_some_and(|id| id == "healthz" || id == "readyz");
            for p in op["parameters"].as_array_mut().into_iter().flatten() {
                finish_parameter(p);
            }
            let Some(responses) = op["responses"].as_object_mut() else { continue };
            for (status, what, needs_body) in SHARED {
                let applies = !probe && (!needs_body || has_body);
                if applies && !responses.contains_key(status) {
                    responses.insert(status.into(), json!({"description": what}));
                }
            }
            for (status, r) in responses.iter_mut() {
                let error = status.starts_with('4') || status.starts_with('5');
                if error && r.get("content").is_none() {
                    r["content"] = problem_body.clone();
                }
            }
        }
    }
    // A stored object is its spec and more: the spec's `additionalProperties: false` (it
    // refuses unknown fields in requests) must not refuse the rest, so the spec is inlined
    // into the stored object's schema without it.
    let specs = v.pointer("/components/schemas").cloned().unwrap_or(Value::Null);
    for schema in v.pointer_mut("/components/schemas").and_then(Value::as_object_mut).into_iter().flat_map(|m| m.values_mut()) {
        for part in schema.get_mut("allOf").and_then(Value::as_array_mut).into_iter().flatten() {
            let target = part.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/components/schemas/")).map(str::to_string);
            if let Some(mut spec) = target.and_then(|t| specs.get(&t).cloned()) {
                if let Some(o) = spec.as_object_mut() {
                    o.remove("additionalProperties");
                }
                *part = spec;
            }
        }
    }
    // The kinds of network refuse unknown fields too (utoipa does not say so for enum variants).
    for kind in v.pointer_mut("/components/schemas/NetworkKind/oneOf").and_then(Value::as_array_mut).into_iter().flatten() {
        kind["additionalProperties"] = Value::Bool(false);
    }
    // A batch's operations refuse unknown fields too, and a deletion's result is null.
    for op in v.pointer_mut("/components/schemas/Operation/oneOf").and_then(Value::as_array_mut).into_iter().flatten() {
        op["additionalProperties"] = Value::Bool(false);
    }
    if let Some(items) = v.pointer_mut("/paths/~1v1~1batch/post/responses/200/content/application~1json/schema/items") {
        let one = |s: &str| json!({"$ref": format!("#/components/schemas/{s}")});
        *items = json!({"oneOf": [one("Network"), one("Endpoint"), one("Router"), one("Policy"), {"type": "null"}]});
    }
    // A port is a number or a range of numbers.
    if let Some(ports) = v.pointer_mut("/components/schemas/Rule/properties/ports") {
        *ports = json!({"type": "array", "items": {"type": "string", "pattern": "^[0-9]{1,5}(-[0-9]{1,5})?$"}, "maxItems": 64,
                        "description": "Destination ports or ranges (`\"5432\"`, `\"8000-8080\"`), TCP and UDP only; all if empty."});
    }
    serde_json::from_value(v).unwrap_or(doc)
}

/// An optional query parameter is left out, never sent as `null` (which a query string cannot
/// say); `If-Match` is a revision number, quoted or not.
fn finish_parameter(p: &mut Value) {
    if let Some(types) = p.pointer_mut("/schema/type").and_then(Value::as_array_mut) {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let t = types[0].clone();
            p["schema"]["type"] = t;
        }
    }
    if p["name"] == "If-Match" {
        p["schema"] = json!({"type": "string", "pattern": "^\"?[0-9]{1,19}\"?$"});
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Plexus controller API", description = "Networks, endpoints and hosts of a Plexus software-defined network."),
    components(schemas(Problem)),
    tags((name = "networks"), (name = "endpoints"), (name = "hosts"), (name = "cluster"), (name = "routing"), (name = "watch"))
)]
pub(super) struct ApiDoc;

pub(super) static DOC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();

/// The OpenAPI 3.1 document of this API, generated from the handlers' declarations.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "cluster", responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub(super) async fn openapi_json() -> Response {
    match DOC.get() {
        Some(d) => Json(d.clone()).into_response(),
        None => problem(Problem::new(500, "no document", "the OpenAPI document was not built")),
    }
}

#[cfg(test)]
mod tests {
    /// Every schema the document names is in it: a client generator or a fuzzer fails on a
    /// dangling reference, and a type added to a response is easy to leave out.
    #[test]
    fn every_schema_reference_resolves() {
        let v = serde_json::to_value(super::openapi()).unwrap();
        let text = v.to_string();
        let schemas = v["components"]["schemas"].as_object().unwrap();
        for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling $ref {name}");
        }
    }
}
