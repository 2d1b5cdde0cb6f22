//! Errors as RFC 7807 problem documents, naming the field and the reason.

use serde::{Deserialize, Serialize};

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, utoipa::ToSchema)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The field, as a JSON path into the request (`subnet`, `kind.vni`).
    pub field: String,
    /// Why it is refused.
    pub reason: String,
}

impl FieldError {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), reason: reason.into() }
    }
}

/// An RFC 7807 `application/problem+json` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` when the status says it all).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What exactly went wrong.
    pub detail: String,
    /// The offending field, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    /// A problem with `status` and `detail`.
    pub fn new(status: u16, title: &str, detail: impl Into<String>) -> Problem {
        Problem { kind: "about:blank".into(), title: title.into(), status, detail: detail.into(), field: None }
    }

    /// A 400/422 naming a field.
    pub fn invalid(e: &FieldError) -> Problem {
        Problem { field: Some(e.field.clone()), ..Problem::new(422, "invalid field", e.to_string()) }
    }
}
