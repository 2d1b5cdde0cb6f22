//! The replicated store: openraft with a durable log (segment files) and state machine
//! snapshots in redb.
//!
//! Every node applies the same log to the same [`crate::model::Model`]; writes go through the
//! leader, which answers only once a majority has the entry on disk ([`OnDisk`] says how the
//! leader's own flush and replication overlap without breaking that). Writes arriving together
//! share a log entry ([`Proposer`]) and writes queued together share an fsync ([`LogStore`]).

mod log;
mod network;
mod ondisk;
mod propose;
pub mod sm;
mod wal;

use std::io::Cursor;

pub use log::{LogStore, COMMANDS_FLUSHED, FLUSHES};
pub use network::{cluster_client, cluster_client_from, HttpNetwork};
pub use ondisk::OnDisk;
pub use propose::{ProposeError, Proposer};
pub use sm::{SharedState, StateMachine};

use crate::model::{Applied, Command};

openraft::declare_raft_types!(
    /// Plexus's Raft types: commands on the model, results of applying them.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft node of the controller cluster.
pub type Raft = openraft::Raft<TypeConfig>;

/// Storage errors as openraft wants them.
pub type StorageError = openraft::StorageError<u64>;

fn io_err(subject: openraft::ErrorSubject<u64>, verb: openraft::ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}
