//! `GET /v1/watch`: long-polls for changes, answered from this node's replica so agents can
//! watch any node.
//!
//! Every agent watches, and after a change they all ask for the same thing: the changes after
//! the revision they had, which for most of them is the one before. The answer is encoded once
//! per (since, revision) and the same bytes go to every watcher that asks for it, so a change
//! costs one serialisation however many agents wait for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use plexus_api::Problem;
use serde::Deserialize;

use super::{problem, St};
use crate::model::{Change, ChangeRecord, Model};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct WatchOpts {
    /// The revision the client has seen; changes after it are returned.
    since: u64,
    /// Seconds to wait for a change before answering with none (at most 300).
    #[serde(default = "default_wait")]
    #[param(maximum = 300)]
    timeout: u64,
}

fn default_wait() -> u64 {
    30
}

/// What a watch returns.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct WatchResponse {
    /// The revision this node has applied; the next watch passes it as `since`.
    revision: u64,
    /// Changes after `since`, oldest first.
    #[schema(value_type = Vec<ChangeRecord>)]
    changes: Vec<Change>,
}

/// Watch answers that carried changes, and the encodings they needed: under many watchers
/// the second stays near the number of changes.
pub(crate) static ANSWERS: AtomicU64 = AtomicU64::new(0);
/// See [`ANSWERS`].
pub(crate) static ENCODINGS: AtomicU64 = AtomicU64::new(0);

/// How many distinct answers are kept (watchers lagging by different amounts).
const KEPT: usize = 16;

/// Encoded answers by (since, revision): the newest [`KEPT`].
#[derive(Debug, Default)]
pub(crate) struct WatchCache {
    answers: Mutex<Vec<((u64, u64), Bytes)>>,
}

impl WatchCache {
    /// The answer to a watch from `since` on `model`, if there are changes; encoded at most
    /// once for each (since, revision). `Err` when the changes are no longer kept.
    fn answer(&self, model: &Model, since: u64) -> Result<Option<Bytes>, ()> {
        let key = (since, model.revision);
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, b)) = answers.iter().find(|(k, _)| *k == key) {
            return Ok(Some(b.clone()));
        }
        let changes = model.changes_since(since).ok_or(())?;
        if changes.is_empty() {
            return Ok(None);
        }
        // Encoding under the lock: watchers woken together wait for one encoding rather than
        // each making its own.
        let bytes = Bytes::from(serde_json::to_vec(&WatchResponse { revision: model.revision, changes }).unwrap_or_default());
        ENCODINGS.fetch_add(1, Ordering::Relaxed);
        if answers.len() >= KEPT {
            answers.remove(0);
        }
        answers.push((key, bytes.clone()));
        Ok(Some(bytes))
    }
}

#[utoipa::path(get, path = "/v1/watch", tag = "watch", params(WatchOpts),
    responses((status = 200, description = "Changes after `since` (empty if none came before the timeout)", body = WatchResponse),
              (status = 410, description = "`since` is older than the changes kept: list everything again")))]
/// Long-poll for changes, answered from this node's replica so agents can watch any node.
pub(crate) async fn watch(s: St, Query(o): Query<WatchOpts>) -> Response {
    // Revisions are documented as int64 (what JSON clients can hold); a larger one is no
    // revision this store will reach.
    if o.since > i64::MAX as u64 {
        return problem(Problem { field: Some("since".into()), ..Problem::new(400, "invalid query", format!("since {} is beyond any revision", o.since)) });
    }
    if o.timeout > 300 {
        return problem(Problem { field: Some("timeout".into()), ..Problem::new(400, "invalid query", format!("timeout {} is over 300 seconds", o.timeout)) });
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(o.timeout);
    let mut rx = s.revisions.clone();
    loop {
        {
            // The model's maps share structure: a snapshot is cheap, and the state lock is not
            // held while the answer is encoded.
            let model = s.state.read().await.model.clone();
            rx.borrow_and_update();
            match s.watch_cache.answer(&model, o.since) {
                Err(()) => {
                    return problem(Problem::new(
                        410,
                        "gone",
                        format!("changes after revision {} are no longer kept; list everything and watch from revision {}", o.since, model.revision),
                    ))
                }
                Ok(Some(bytes)) => {
                    ANSWERS.fetch_add(1, Ordering::Relaxed);
                    return ([(header::CONTENT_TYPE, "application/json")], bytes).into_response();
                }
                Ok(None) => {}
            }
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            _ => {
                let revision = s.state.read().await.model.revision;
                return axum::Json(WatchResponse { revision, changes: Vec::new() }).into_response();
            }
        }
    }
}
