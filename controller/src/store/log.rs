//! The Raft log, vote and commit index, durable in redb. Every write transaction is committed
//! (fsync) before openraft is told the entries are flushed.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogId, LogState, RaftLogReader, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{io_err, StorageError, TypeConfig};

type Entry = openraft::Entry<TypeConfig>;

const LOGS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");

/// The log store. Cheap to clone: clones share the database.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

fn logs_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    io_err(ErrorSubject::Logs, verb, e)
}

impl LogStore {
    /// Opens (or creates) the log in `dir/raft-log.redb`.
    pub fn open(dir: &Path) -> Result<LogStore, StorageError> {
        let db = Database::create(dir.join("raft-log.redb")).map_err(|e| logs_err(ErrorVerb::Read, e))?;
        let w = db.begin_write().map_err(|e| logs_err(ErrorVerb::Write, e))?;
        w.open_table(LOGS).map_err(|e| logs_err(ErrorVerb::Write, e))?;
        w.open_table(META).map_err(|e| logs_err(ErrorVerb::Write, e))?;
        w.commit().map_err(|e| logs_err(ErrorVerb::Write, e))?;
        Ok(LogStore { db: Arc::new(db) })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let r = self.db.begin_read().map_err(|e| logs_err(ErrorVerb::Read, e))?;
        let t = r.open_table(META).map_err(|e| logs_err(ErrorVerb::Read, e))?;
        let Some(v) = t.get(key).map_err(|e| logs_err(ErrorVerb::Read, e))? else { return Ok(None) };
        serde_json::from_slice(v.value()).map(Some).map_err(|e| logs_err(ErrorVerb::Read, e))
    }

    fn put_meta<T: serde::Serialize>(&self, key: &str, value: &T, durable: bool) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(|e| logs_err(ErrorVerb::Write, e))?;
        let mut w = self.db.begin_write().map_err(|e| logs_err(ErrorVerb::Write, e))?;
        if !durable {
            w.set_durability(Durability::None).map_err(|e| logs_err(ErrorVerb::Write, e))?;
        }
        {
            let mut t = w.open_table(META).map_err(|e| logs_err(ErrorVerb::Write, e))?;
            t.insert(key, bytes.as_slice()).map_err(|e| logs_err(ErrorVerb::Write, e))?;
        }
        w.commit().map_err(|e| logs_err(ErrorVerb::Write, e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(&mut self, range: RB) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let r = self.db.begin_read().map_err(|e| logs_err(ErrorVerb::Read, e))?;
        let t = r.open_table(LOGS).map_err(|e| logs_err(ErrorVerb::Read, e))?;
        let mut out = Vec::new();
        for item in t.range(start..).map_err(|e| logs_err(ErrorVerb::Read, e))? {
            let (k, v) = item.map_err(|e| logs_err(ErrorVerb::Read, e))?;
            if !range.contains(&k.value()) {
                break;
            }
            out.push(serde_json::from_slice(v.value()).map_err(|e| logs_err(ErrorVerb::Read, e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId<u64>> = self.get_meta("last_purged")?;
        let r = self.db.begin_read().map_err(|e| logs_err(ErrorVerb::Read, e))?;
        let t = r.open_table(LOGS).map_err(|e| logs_err(ErrorVerb::Read, e))?;
        let last = match t.last().map_err(|e| logs_err(ErrorVerb::Read, e))? {
            Some((_, v)) => Some(serde_json::from_slice::<Entry>(v.value()).map_err(|e| logs_err(ErrorVerb::Read, e))?.log_id),
            None => None,
        };
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.put_meta("vote", vote, true).map_err(|_| io_err(ErrorSubject::Vote, ErrorVerb::Write, "saving the vote failed"))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.get_meta("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError> {
        // Only a hint for re-applying after a restart (the leader tells the commit index
        // anyway), so it rides on the next durable commit instead of costing an fsync.
        self.put_meta("committed", &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError> {
        Ok(self.get_meta::<Option<LogId<u64>>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let w = self.db.begin_write().map_err(|e| logs_err(ErrorVerb::Write, e))?;
        {
            let mut t = w.open_table(LOGS).map_err(|e| logs_err(ErrorVerb::Write, e))?;
            for e in entries {
                let bytes = serde_json::to_vec(&e).map_err(|x| logs_err(ErrorVerb::Write, x))?;
                t.insert(e.log_id.index, bytes.as_slice()).map_err(|x| logs_err(ErrorVerb::Write, x))?;
            }
        }
        let res = w.commit().map_err(|e| std::io::Error::other(e.to_string()));
        let failed = res.as_ref().err().map(|e| e.to_string());
        callback.log_io_completed(res);
        match failed {
            Some(e) => Err(logs_err(ErrorVerb::Write, e)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let w = self.db.begin_write().map_err(|e| logs_err(ErrorVerb::Delete, e))?;
        {
            let mut t = w.open_table(LOGS).map_err(|e| logs_err(ErrorVerb::Delete, e))?;
            t.retain_in(log_id.index.., |_, _| false).map_err(|e| logs_err(ErrorVerb::Delete, e))?;
        }
        w.commit().map_err(|e| logs_err(ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        self.put_meta("last_purged", &log_id, true)?;
        let w = self.db.begin_write().map_err(|e| logs_err(ErrorVerb::Delete, e))?;
        {
            let mut t = w.open_table(LOGS).map_err(|e| logs_err(ErrorVerb::Delete, e))?;
            t.retain_in(..=log_id.index, |_, _| false).map_err(|e| logs_err(ErrorVerb::Delete, e))?;
        }
        w.commit().map_err(|e| logs_err(ErrorVerb::Delete, e))
    }
}
