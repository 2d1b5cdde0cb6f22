//! OVSDB client errors.

/// Errors of the OVSDB client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OvsdbError {
    /// Not connected to the server right now (it reconnects by itself).
    #[error("not connected to ovsdb-server at {target}: {reason}")]
    NotConnected {
        /// Where it tries to connect.
        target: String,
        /// Why the last attempt failed or the connection dropped.
        reason: String,
    },
    /// The connection dropped while the request was outstanding; it may or may not have been
    /// applied.
    #[error("connection to ovsdb-server lost while waiting for a reply: {0}")]
    Disconnected(String),
    /// The server answered the request with a JSON-RPC error.
    #[error("ovsdb-server refused {method}: {error}")]
    Rpc {
        /// Method called.
        method: String,
        /// The error object, as text.
        error: String,
    },
    /// One operation of a transaction failed (the whole transaction was rolled back).
    #[error("transaction failed at operation {op_index:?}: {error}{}", details.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Transaction {
        /// Which operation, if the server said (None = commit-time failure).
        op_index: Option<usize>,
        /// The OVSDB error tag, e.g. `constraint violation`, `referential integrity violation`.
        error: String,
        /// The server's explanation.
        details: Option<String>,
    },
    /// The server sent something that is not valid OVSDB JSON-RPC.
    #[error("malformed message from ovsdb-server: {0}")]
    Protocol(String),
    /// A row or column does not exist, or a value has the wrong type.
    #[error("{0}")]
    NotFound(String),
    /// A value given by the caller is invalid (nothing was sent).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No reply came in time.
    #[error("timed out after {0:?} waiting for ovsdb-server")]
    Timeout(std::time::Duration),
    /// The client has been shut down.
    #[error("the OVSDB client has shut down")]
    Shutdown,
}
