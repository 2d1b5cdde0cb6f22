//! Who may call what on the REST API. Every request but the health probes carries a bearer
//! token of the cluster ([`plexus_pki::TokenKey`]); the role it grants decides which routes it
//! reaches. The check is by method and path alone, before any handler runs; what depends on
//! the stored objects (whose endpoint, whose network) travels with the command as a
//! precondition the state machine checks.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use plexus_api::Problem;
use plexus_pki::{Claims, Role};

use super::{problem, AppState};

/// What the caller's token says, for handlers that narrow what an agent may do or spend a
/// one-time token.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) Claims);

impl Caller {
    /// The host an agent's credential is bound to; `None` for operators.
    pub(crate) fn agent_host(&self) -> Option<&str> {
        match &self.0.role {
            Role::Agent(h) => Some(h.as_str()),
            _ => None,
        }
    }
}

/// Routes anyone may call: liveness and readiness probes carry no credential.
fn open(path: &str) -> bool {
    // The topology view's page and script hold no data: what they show comes through the API
    // with the operator's own token.
    matches!(path, "/healthz" | "/readyz" | "/ui" | "/ui/app.js")
}

/// Whether `role` may call `method` on `path`. Deny unless listed: a path an agent's rule
/// does not spell out exactly (another host, an encoded or dotted segment) is refused.
pub(crate) fn allowed(role: &Role, method: &Method, path: &str) -> bool {
    let read = *method == Method::GET || *method == Method::HEAD;
    let post = *method == Method::POST;
    let host = match role {
        Role::Admin => return true,
        // A trace changes nothing: whoever may read may trace.
        Role::Reader => return read || (post && path == "/v1/trace"),
        // One-time tokens reach the one route that spends them, and nothing else.
        Role::Bootstrap(_) => return post && path == "/v1/bootstrap/agent",
        Role::Join => return post && path == "/v1/bootstrap/node",
        Role::Agent(h) => h.as_str(),
    };
    let seg: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    match seg.as_slice() {
        // The hosts' list: their tunnel addresses are its tunnels' far ends, which it must
        // reach (and teach its switch) before the first packet.
        ["v1", "hosts"] => read,
        // Its own host: register, heartbeat, read it and its flows.
        ["v1", "hosts", h] => *h == host && (read || *method == Method::PUT),
        ["v1", "hosts", h, "flows"] => *h == host && read,
        // What its own stack must do: external subnets, its endpoints' published ports.
        ["v1", "hosts", h, "edge"] => *h == host && read,
        // What its DNS responder answers: the names its containers may look up.
        ["v1", "hosts", h, "names"] => *h == host && read,
        // Traces of its own switch: take them, answer them.
        ["v1", "hosts", h, "trace-jobs"] => *h == host && read,
        ["v1", "hosts", h, "trace-jobs", _] => *h == host && post,
        // What its Docker and attachments need: the networks, their endpoints.
        ["v1", "networks"] => read || *method == Method::POST,
        ["v1", "networks", _] => read || *method == Method::DELETE,
        // Its own endpoints only: the handlers show it those alone, and the handlers and the
        // state machine check whose an endpoint is before making or deleting it.
        ["v1", "networks", _, "endpoints"] => read || *method == Method::POST,
        ["v1", "networks", _, "endpoints", _] => read || *method == Method::DELETE,
        // Its own endpoints' labels (its Docker's containers' labels); the state machine
        // checks whose the endpoint is.
        ["v1", "networks", _, "endpoints", _, "labels"] => *method == Method::PUT,
        // Its own endpoints' published ports (its Docker's `-p`); the same check.
        ["v1", "networks", _, "endpoints", _, "publish"] => *method == Method::PUT,
        ["v1", "openapi.json"] => read,
        _ => false,
    }
}

fn unauthorized(detail: &str) -> Response {
    let mut r = problem(Problem::new(401, "unauthorized", detail));
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"plexus\""));
    r
}

/// Authenticates and authorizes every request before anything else reads it.
pub(crate) async fn authorize(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    if open(req.uri().path()) {
        return next.run(req).await;
    }
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return unauthorized("this route needs a credential: send Authorization: Bearer TOKEN (plexus pki token issues one)");
    };
    let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))).map(str::trim);
    let Some(token) = token else { return unauthorized("the Authorization header must read Bearer TOKEN") };
    let claims = match st.tokens.claims(token) {
        Ok(c) => c,
        Err(e) => return unauthorized(&e.to_string()),
    };
    if !allowed(&claims.role, req.method(), req.uri().path()) {
        let detail = format!("a {} credential may not {} {}", claims.role, req.method(), req.uri().path());
        return problem(Problem::new(403, "forbidden", detail));
    }
    req.extensions_mut().insert(Caller(claims));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_reaches_only_its_own_host_and_what_it_needs() {
        let a = Role::Agent("h1".into());
        assert!(allowed(&a, &Method::PUT, "/v1/hosts/h1"));
        assert!(allowed(&a, &Method::GET, "/v1/hosts/h1/flows"));
        assert!(allowed(&a, &Method::GET, "/v1/hosts/h1/edge"));
        assert!(allowed(&a, &Method::GET, "/v1/hosts/h1/names"));
        assert!(allowed(&a, &Method::PUT, "/v1/networks/red/endpoints/e1/publish"));
        for (m, p) in [
            (Method::PUT, "/v1/hosts/h2"),
            (Method::GET, "/v1/hosts/h2/flows"),
            (Method::GET, "/v1/hosts/h2/edge"),
            (Method::GET, "/v1/hosts/h2/names"),
            (Method::PUT, "/v1/hosts/h1/../h2"),
            (Method::PUT, "/v1/hosts/%68%32"),
            (Method::PUT, "/v1/networks/red"),
            (Method::GET, "/metrics"),
            (Method::GET, "/v1/cluster"),
            (Method::POST, "/v1/routers"),
        ] {
            assert!(!allowed(&a, &m, p), "{m} {p}");
        }
        assert!(allowed(&Role::Reader, &Method::GET, "/metrics") && !allowed(&Role::Reader, &Method::POST, "/v1/networks"));
    }
}
