//! Credentials handed out for one-time tokens: a host's agent trades a bootstrap token for its
//! agent token and switch certificate, a new controller node trades a join token for the
//! cluster's CA and token key. The token is spent through the Raft log first, so it buys
//! exactly one set of credentials cluster-wide; the leader, which holds the CA's key, issues
//! them.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use plexus_api::{AgentCredentials, NodeCredentials, Problem};
use plexus_pki::{Ca, Role, Usage};

use super::leader::{at_leader, read_body, write};
use super::{problem, Caller, St, FORWARD_PREFIX};
use crate::model::Command;

fn failed(e: impl std::fmt::Display) -> Response {
    problem(Problem::new(500, "cannot issue credentials", e.to_string()))
}

/// Spends the caller's one-time token, which must be of the kind `wanted` accepts, on the
/// leader (forwarding there first); `Ok(claims)` once it is spent, the answer to relay
/// otherwise. Any other credential is refused before anything is written.
async fn spend(s: &St, req: Request, wanted: fn(&Role) -> bool) -> Result<Caller, Response> {
    let caller = req.extensions().get::<Caller>().cloned();
    let Some(caller) = caller.filter(|c| wanted(&c.0.role)) else {
        return Err(problem(Problem::new(403, "forbidden", "this route takes a one-time token of its kind (plexus pki token --role bootstrap:HOST or join)")));
    };
    let (parts, bytes) = read_body(req).await?;
    if let Some(r) = at_leader(s, FORWARD_PREFIX, &parts, &bytes).await {
        return Err(r);
    }
    let expires_ms = caller.0.expires.map_or(u64::MAX, |e| e.saturating_mul(1000));
    let cmd = Command::SpendToken { nonce: caller.0.nonce.clone(), expires_ms, now_ms: crate::now_ms() };
    let r = write(s, cmd, StatusCode::NO_CONTENT).await;
    if r.status() != StatusCode::NO_CONTENT {
        return Err(r);
    }
    Ok(caller)
}

/// A host's agent credentials, for its bootstrap token (once).
#[utoipa::path(post, path = "/v1/bootstrap/agent", tag = "cluster",
    responses((status = 200, description = "The host's agent token and switch certificate", body = AgentCredentials),
              (status = 409, description = "The token was used already"), (status = 503, description = "No leader or no quorum")))]
pub(super) async fn bootstrap_agent(s: St, req: Request) -> Response {
    let caller = match spend(&s, req, |r| matches!(r, Role::Bootstrap(_))).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Role::Bootstrap(host) = caller.0.role else { return problem(Problem::new(403, "forbidden", "a bootstrap token is needed")) };
    let dir = s.pki_dir.clone();
    let tokens = s.tokens.clone();
    let issued = tokio::task::spawn_blocking(move || {
        let ca = Ca::open(&dir)?;
        let id = ca.issue(&plexus_pki::host_cert_name(&host), &[], Usage::Client)?;
        let token = tokens.issue(&Role::Agent(host.clone()))?;
        tracing::info!(%host, "issued agent credentials for a bootstrap token");
        Ok::<_, plexus_pki::PkiError>(AgentCredentials { host, token, certificate_pem: id.cert_pem, private_key_pem: id.key_pem, ca_pem: id.ca_pem })
    })
    .await;
    match issued {
        Ok(Ok(c)) => Json(c).into_response(),
        Ok(Err(e)) => failed(e),
        Err(e) => failed(e),
    }
}

/// What a new controller node needs to join, for a join token (once).
#[utoipa::path(post, path = "/v1/bootstrap/node", tag = "cluster",
    responses((status = 200, description = "The cluster's CA and token key", body = NodeCredentials),
              (status = 409, description = "The token was used already"), (status = 503, description = "No leader or no quorum")))]
pub(super) async fn bootstrap_node(s: St, req: Request) -> Response {
    if let Err(r) = spend(&s, req, |r| *r == Role::Join).await {
        return r;
    }
    let dir = s.pki_dir.clone();
    let read = tokio::task::spawn_blocking(move || {
        let file = |f: &str| std::fs::read_to_string(dir.join(f)).map_err(|e| format!("{}: {e}", dir.join(f).display()));
        Ok::<_, String>(NodeCredentials { ca_pem: file("ca.crt")?, ca_key_pem: file("ca.key")?, token_key: file("token.key")?.trim().to_string() })
    })
    .await;
    match read {
        Ok(Ok(c)) => {
            tracing::info!("handed the cluster's CA and token key to a joining node");
            Json(c).into_response()
        }
        Ok(Err(e)) => failed(e),
        Err(e) => failed(e),
    }
}
