//! The state machine: the model in memory, snapshots durable in redb. After a restart the
//! model is rebuilt from the last snapshot and the committed log entries after it.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StoredMembership};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use super::{io_err, OnDisk, StorageError, TypeConfig};
use crate::model::{Applied, Model};

const SNAP: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("snapshot");

/// What every node agrees on, readable by the API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SmData {
    /// The last log entry applied.
    pub last_applied: Option<LogId<u64>>,
    /// The membership as of that entry.
    pub membership: StoredMembership<u64, openraft::BasicNode>,
    /// The model: readers clone the `Arc` (or the model, in O(1)) and let go of the lock.
    pub model: Arc<Model>,
}

/// The state shared between the state machine and the API.
pub type SharedState = Arc<RwLock<SmData>>;

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, openraft::BasicNode>,
    data: Vec<u8>,
}

/// The state machine.
#[derive(Debug, Clone)]
pub struct StateMachine {
    state: SharedState,
    db: Arc<Database>,
    revision: Arc<tokio::sync::watch::Sender<u64>>,
    /// How far the log is on this node's disk: nothing is applied before it is there.
    on_disk: OnDisk,
}

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    io_err(ErrorSubject::StateMachine, verb, e)
}

impl StateMachine {
    /// Opens `dir/raft-snapshot.redb` and restores the last snapshot, if any. Entries are
    /// applied once `on_disk` covers them.
    pub fn open(dir: &Path, on_disk: OnDisk) -> Result<StateMachine, StorageError> {
        let db = Database::create(dir.join("raft-snapshot.redb")).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let w = db.begin_write().map_err(|e| sm_err(ErrorVerb::Write, e))?;
        w.open_table(SNAP).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        w.commit().map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let sm =
            StateMachine { state: Arc::new(RwLock::new(SmData::default())), db: Arc::new(db), revision: Arc::new(tokio::sync::watch::channel(0).0), on_disk };
        if let Some(s) = sm.stored()? {
            let mut data: SmData = serde_json::from_slice(&s.data).map_err(|e| sm_err(ErrorVerb::Read, e))?;
            Arc::make_mut(&mut data.model).reindex();
            sm.revision.send_replace(data.model.revision);
            sm.state.try_write().map(|mut st| *st = data).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        Ok(sm)
    }

    /// The shared state, for readers.
    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    /// Follows the model's revision as entries are applied (for watchers).
    pub fn revisions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revision.subscribe()
    }

    fn stored(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let r = self.db.begin_read().map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let t = r.open_table(SNAP).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let Some(v) = t.get("current").map_err(|e| sm_err(ErrorVerb::Read, e))? else { return Ok(None) };
        serde_json::from_slice(v.value()).map(Some).map_err(|e| sm_err(ErrorVerb::Read, e))
    }

    fn store(&self, s: &StoredSnapshot) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(s).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let w = self.db.begin_write().map_err(|e| sm_err(ErrorVerb::Write, e))?;
        {
            let mut t = w.open_table(SNAP).map_err(|e| sm_err(ErrorVerb::Write, e))?;
            t.insert("current", bytes.as_slice()).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        w.commit().map_err(|e| sm_err(ErrorVerb::Write, e))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let st = self.state.read().await;
        let data = serde_json::to_vec(&*st).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let last = st.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: st.membership.clone(),
            snapshot_id: format!("{}-{}", last.map(|l| l.leader_id.term).unwrap_or(0), last.map(|l| l.index).unwrap_or(0)),
        };
        drop(st);
        self.store(&StoredSnapshot { meta: meta.clone(), data: data.clone() })?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "snapshot built");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, StoredMembership<u64, openraft::BasicNode>), StorageError> {
        let st = self.state.read().await;
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<openraft::Entry<TypeConfig>> = entries.into_iter().collect();
        // The leader may have counted itself in the majority before its own flush (see
        // `OnDisk`): what is applied is what readers, watchers and clients see.
        if let Some(last) = entries.last() {
            self.on_disk.covers(last.log_id.index).await.map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        let mut st = self.state.write().await;
        let mut out = Vec::new();
        for e in entries {
            st.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Applied::One(Ok(None))),
                // Copies the model only if a reader still holds the previous snapshot, and
                // then in O(1): its maps share structure.
                EntryPayload::Normal(cmd) => out.push(Arc::make_mut(&mut st.model).apply_entry(cmd)),
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(Applied::One(Ok(None)));
                }
            }
        }
        self.revision.send_replace(st.model.revision);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta<u64, openraft::BasicNode>, snapshot: Box<Cursor<Vec<u8>>>) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut new: SmData = serde_json::from_slice(&data).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        Arc::make_mut(&mut new.model).reindex();
        self.store(&StoredSnapshot { meta: meta.clone(), data })?;
        let rev = new.model.revision;
        *self.state.write().await = new;
        self.revision.send_replace(rev);
        tracing::info!(snapshot = %meta.snapshot_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.stored()?.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
