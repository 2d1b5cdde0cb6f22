//! `POST /v1/batch`: many changes in one request, one log entry, all or nothing.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use plexus_api::batch::MAX_OPERATIONS;
use plexus_api::{Batch, FieldError, Operation, Problem, Valid, Validate};

use super::leader::{at_leader, read_body_up_to, write};
use super::{parse, problem, St, FORWARD_PREFIX};
use crate::model::Command;

/// A batch's body may hold thousands of objects.
const MAX_BATCH_BODY: usize = 8 << 20;

/// The command of one operation, its specs checked; an error names the operation's field.
fn command(i: usize, op: Operation, now_ms: u64) -> Result<Command, FieldError> {
    fn valid<T: Validate>(i: usize, spec: T) -> Result<Valid<T>, FieldError> {
        Valid::new(spec).map_err(|e| FieldError::new(format!("operations[{i}].spec.{}", e.field), e.reason))
    }
    Ok(match op {
        Operation::PutNetwork { spec } => Command::PutNetwork { spec: valid(i, spec)?, create: false, if_match: None },
        Operation::DeleteNetwork { name, force } => Command::DeleteNetwork { name, if_match: None, force, owner: None },
        Operation::CreateEndpoint { network, spec } => Command::CreateEndpoint { network, spec: valid(i, spec)?, now_ms },
        Operation::DeleteEndpoint { network, id } => Command::DeleteEndpoint { network, id, on_host: None },
        Operation::SetEndpointLabels { network, id, labels } => {
            let labels = Valid::new(plexus_api::EndpointLabels { labels }).map_err(|e| FieldError::new(format!("operations[{i}].{}", e.field), e.reason))?;
            Command::SetEndpointLabels { network, id, labels, if_match: None, on_host: None }
        }
        Operation::PutRouter { spec } => Command::PutRouter { spec: valid(i, spec)?, create: false, if_match: None },
        Operation::DeleteRouter { name } => Command::DeleteRouter { name },
        Operation::PutPolicy { spec } => Command::PutPolicy { spec: valid(i, spec)?, create: false, if_match: None },
        Operation::DeletePolicy { name } => Command::DeletePolicy { name },
    })
}

#[utoipa::path(post, path = "/v1/batch", tag = "networks", request_body = Batch,
    responses((status = 200, description = "Every operation applied, in one log entry; each one's object in order (null for a deletion)", body = [serde_json::Value]),
              (status = 400, description = "Malformed body"), (status = 404, description = "An operation names an object that does not exist; nothing applied"),
              (status = 409, description = "An operation conflicts; nothing applied"), (status = 413, description = "Body over 8 MiB"),
              (status = 422, description = "An operation is invalid (`operations[i]…` names it); nothing applied"), (status = 503, description = "No leader or no quorum")))]
pub(crate) async fn batch(s: St, req: Request) -> Response {
    let (parts, bytes) = match read_body_up_to(req, MAX_BATCH_BODY).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Some(r) = at_leader(&s, FORWARD_PREFIX, &parts, &bytes).await {
        return r;
    }
    let b: Batch = match parse(&bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if b.operations.is_empty() || b.operations.len() > MAX_OPERATIONS {
        let detail = format!("{} operations; a batch holds 1 to {MAX_OPERATIONS}", b.operations.len());
        return problem(Problem { field: Some("operations".into()), ..Problem::new(422, "invalid request", detail) });
    }
    let now = crate::now_ms();
    let commands: Result<Vec<Command>, FieldError> = b.operations.into_iter().enumerate().map(|(i, op)| command(i, op, now)).collect();
    match commands {
        Ok(commands) => write(&s, Command::Batch { commands }, StatusCode::OK).await,
        Err(e) => problem(Problem::invalid(&e)),
    }
}
