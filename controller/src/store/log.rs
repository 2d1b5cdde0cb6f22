//! The Raft log, vote and commit index, durable in redb. Every write transaction is committed
//! (fsync) before openraft is told the entries are flushed.
//!
//! Appends are group-committed: `append` hands its entries to a writer thread and returns at
//! once (openraft reads them from memory meanwhile); the writer takes every append queued
//! while it was busy, writes them in one transaction and one fsync, and only then tells
//! openraft each of them is flushed. Under load one disk flush carries many writes, on the
//! leader and on every follower; one write alone still costs exactly one.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogId, LogState, RaftLogReader, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{io_err, StorageError, TypeConfig};

type Entry = openraft::Entry<TypeConfig>;

const LOGS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");

/// The log store. Cheap to clone: clones share the database, the entries not yet flushed and
/// the writer.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// Entries appended but not yet committed to disk: what readers see before the writer
    /// has flushed them.
    pending: Arc<Mutex<BTreeMap<u64, Entry>>>,
    writer: mpsc::Sender<Job>,
}

/// Work for the writer thread, done in the order sent.
enum Job {
    /// Entries to make durable, and whom to tell.
    Append(Vec<Entry>, LogFlushed<TypeConfig>),
    /// Answer once everything sent before is durable.
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Append(e, _) => write!(f, "Append({} entries)", e.len()),
            Job::Flush(_) => f.write_str("Flush"),
        }
    }
}

/// Log flushes (transactions with their fsync) this process made, and the commands they
/// carried (a group entry counts each of its commands): their ratio is how many writes one
/// fsync carries.
pub static FLUSHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// See [`FLUSHES`].
pub static COMMANDS_FLUSHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The client writes an entry carries.
fn commands_in(e: &Entry) -> u64 {
    match &e.payload {
        openraft::EntryPayload::Normal(crate::model::Command::Group { commands }) => commands.len() as u64,
        openraft::EntryPayload::Normal(_) => 1,
        _ => 0,
    }
}

/// At most this many appends share one transaction (bounding one fsync's latency).
const GROUP_MAX: usize = 1024;

/// The writer: one transaction and one fsync for everything queued while the last was
/// being written.
fn writer(db: Arc<Database>, pending: Arc<Mutex<BTreeMap<u64, Entry>>>, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match jobs.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        let entries: Vec<&Entry> = group.iter().filter_map(|j| if let Job::Append(e, _) = j { Some(e) } else { None }).flatten().collect();
        let res = if entries.is_empty() { Ok(()) } else { write_entries(&db, &entries) };
        let last = entries.last().map(|e| e.log_id.index);
        if res.is_ok() {
            if !entries.is_empty() {
                FLUSHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                COMMANDS_FLUSHED.fetch_add(entries.iter().map(|e| commands_in(e)).sum(), std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(last) = last {
                // Flushed entries are read from disk from now on; later appends stay.
                let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                let keep = p.split_off(&(last + 1));
                *p = keep;
            }
        }
        for j in group {
            match j {
                Job::Append(_, cb) => cb.log_io_completed(res.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.clone()))),
                Job::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
        if let Err(e) = res {
            tracing::error!(error = %e, "the Raft log could not be written");
        }
    }
}

fn write_entries(db: &Database, entries: &[&Entry]) -> Result<(), String> {
    let w = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut t = w.open_table(LOGS).map_err(|e| e.to_string())?;
        for e in entries {
            let bytes = serde_json::to_vec(e).map_err(|x| x.to_string())?;
            t.insert(e.log_id.index, bytes.as_slice()).map_err(|x| x.to_string())?;
        }
    }
    w.commit().map_err(|e| e.to_string())
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
        let db = Arc::new(db);
        let pending = Arc::new(Mutex::new(BTreeMap::new()));
        let (tx, rx) = mpsc::channel();
        let (db2, pending2) = (db.clone(), pending.clone());
        std::thread::Builder::new().name("raft-log".into()).spawn(move || writer(db2, pending2, rx)).map_err(|e| logs_err(ErrorVerb::Write, e))?;
        Ok(LogStore { db, pending, writer: tx })
    }

    /// Waits until every append sent so far is on disk: what truncating, purging and saving
    /// the vote need first, so that they act on the disk alone and in order. (Awaited, not
    /// blocked on: the runtime's thread stays free while the disk works.)
    async fn flush(&self) -> Result<(), StorageError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.writer.send(Job::Flush(tx)).map_err(|_| logs_err(ErrorVerb::Write, "the log writer has stopped"))?;
        rx.await.map_err(|_| logs_err(ErrorVerb::Write, "the log writer has stopped"))
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
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
        // Memory first, then disk: an entry the writer flushes in between is then seen in one
        // or the other (it leaves memory only once it is on disk).
        let mut out: BTreeMap<u64, Entry> = self.pending().range(start..).take_while(|(k, _)| range.contains(*k)).map(|(k, e)| (*k, e.clone())).collect();
        let r = self.db.begin_read().map_err(|e| logs_err(ErrorVerb::Read, e))?;
        let t = r.open_table(LOGS).map_err(|e| logs_err(ErrorVerb::Read, e))?;
        for item in t.range(start..).map_err(|e| logs_err(ErrorVerb::Read, e))? {
            let (k, v) = item.map_err(|e| logs_err(ErrorVerb::Read, e))?;
            if !range.contains(&k.value()) {
                break;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = out.entry(k.value()) {
                slot.insert(serde_json::from_slice(v.value()).map_err(|e| logs_err(ErrorVerb::Read, e))?);
            }
        }
        Ok(out.into_values().collect())
    }

    /// Entries from `start` (before `end`) up to [`PAYLOAD_BYTES`] of them, at least one:
    /// what one append to a follower carries. openraft allows up to `max_payload_entries`
    /// per append and waits one heartbeat interval for the answer; a new leader probing a
    /// follower's log from its middle would otherwise send hundreds of entries — batches of
    /// thousands of endpoints, assignments of a thousand switches — ten megabytes that a loaded
    /// machine cannot carry and parse in 100 ms, again and again: the follower never heard
    /// from its leader.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        let mut pending = self.pending().range(start..end).map(|(k, e)| (*k, e.clone())).collect::<BTreeMap<u64, Entry>>().into_iter().peekable();
        let r = self.db.begin_read().map_err(|e| logs_err(ErrorVerb::Read, e))?;
        let t = r.open_table(LOGS).map_err(|e| logs_err(ErrorVerb::Read, e))?;
        let mut disk = t.range(start..end).map_err(|e| logs_err(ErrorVerb::Read, e))?.peekable();
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        while bytes < PAYLOAD_BYTES {
            let disk_next = match disk.peek() {
                Some(Ok((k, _))) => Some(k.value()),
                Some(Err(_)) => match disk.next() {
                    Some(Err(e)) => return Err(logs_err(ErrorVerb::Read, e)),
                    _ => continue,
                },
                None => None,
            };
            let from_memory = match (pending.peek().map(|(k, _)| *k), disk_next) {
                (None, None) => break,
                (Some(m), Some(d)) => m <= d,
                (m, _) => m.is_some(),
            };
            if from_memory {
                let Some((k, e)) = pending.next() else { break };
                // An entry both in memory and on disk (flushed in between) is taken once.
                if disk_next == Some(k) {
                    disk.next();
                }
                bytes += serde_json::to_vec(&e).map_or(0, |v| v.len());
                out.push(e);
            } else {
                let Some(Ok((_, v))) = disk.next() else { break };
                bytes += v.value().len();
                out.push(serde_json::from_slice(v.value()).map_err(|e| logs_err(ErrorVerb::Read, e))?);
            }
        }
        Ok(out)
    }
}

/// How many bytes of entries one append carries at most (one entry, however big, always).
const PAYLOAD_BYTES: usize = 256 << 10;

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId<u64>> = self.get_meta("last_purged")?;
        let r = self.db.begin_read().map_err(|e| logs_err(ErrorVerb::Read, e))?;
        let t = r.open_table(LOGS).map_err(|e| logs_err(ErrorVerb::Read, e))?;
        let in_memory = self.pending().values().next_back().map(|e| e.log_id);
        let last = match (in_memory, t.last().map_err(|e| logs_err(ErrorVerb::Read, e))?) {
            (Some(id), _) => Some(id),
            (None, Some((_, v))) => Some(serde_json::from_slice::<Entry>(v.value()).map_err(|e| logs_err(ErrorVerb::Read, e))?.log_id),
            (None, None) => None,
        };
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.flush().await?;
        self.put_meta("vote", vote, true).map_err(|_| io_err(ErrorSubject::Vote, ErrorVerb::Write, "saving the vote failed"))
    }

    /// The vote as saved, except that a committed one comes back uncommitted. openraft reads
    /// the vote only when it starts, and a node whose saved vote is a committed one for itself
    /// would start as the leader of that term again — with a state machine rebuilt only up to
    /// the commit index it last flushed, while the others may have committed more through it
    /// (a stale read under the lease, found by the linearizability test). Uncommitted, the
    /// vote still says whom this node voted for in that term (so it votes for no one else in
    /// it), but the node starts as a follower and leads again only by winning a new term,
    /// whose first entry it must commit and apply before it serves anything.
    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Ok(self.get_meta::<Vote<u64>>("vote")?.map(|v| Vote { committed: false, ..v }))
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
        let entries: Vec<Entry> = entries.into_iter().collect();
        {
            let mut p = self.pending();
            for e in &entries {
                p.insert(e.log_id.index, e.clone());
            }
        }
        self.writer.send(Job::Append(entries, callback)).map_err(|_| logs_err(ErrorVerb::Write, "the log writer has stopped"))
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        self.flush().await?;
        let w = self.db.begin_write().map_err(|e| logs_err(ErrorVerb::Delete, e))?;
        {
            let mut t = w.open_table(LOGS).map_err(|e| logs_err(ErrorVerb::Delete, e))?;
            t.retain_in(log_id.index.., |_, _| false).map_err(|e| logs_err(ErrorVerb::Delete, e))?;
        }
        w.commit().map_err(|e| logs_err(ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        self.flush().await?;
        self.put_meta("last_purged", &log_id, true)?;
        let w = self.db.begin_write().map_err(|e| logs_err(ErrorVerb::Delete, e))?;
        {
            let mut t = w.open_table(LOGS).map_err(|e| logs_err(ErrorVerb::Delete, e))?;
            t.retain_in(..=log_id.index, |_, _| false).map_err(|e| logs_err(ErrorVerb::Delete, e))?;
        }
        w.commit().map_err(|e| logs_err(ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    /// An entry of about `kb` KiB: a switch assignment of that many hosts, give or take.
    fn entry(index: u64, kb: usize) -> Entry {
        let masters = (0..kb * 1024 / 24).map(|h| (format!("host-{index}-{h:06}"), 1)).collect();
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(crate::model::Command::SetMasters { masters }) }
    }

    /// What one append may carry is bounded in bytes, not only in entries: from disk, from
    /// memory (not flushed yet) and across both, in order, never empty, never a duplicate.
    #[tokio::test]
    async fn an_append_carries_a_bounded_payload() {
        let dir = std::env::temp_dir().join(format!("plx-log-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = LogStore::open(&dir).unwrap();
        // 1..=10 on disk, 10..=20 in memory (10 in both: flushed while read), 64 KiB each.
        let on_disk: Vec<Entry> = (1..=10).map(|i| entry(i, 64)).collect();
        write_entries(&log.db, &on_disk.iter().collect::<Vec<_>>()).unwrap();
        log.pending().extend((10..=20).map(|i| (i, entry(i, 64))));
        let indexes = |v: &[Entry]| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>();

        let all = log.try_get_log_entries(1..21).await.unwrap();
        assert_eq!(indexes(&all), (1..=20).collect::<Vec<_>>(), "the unlimited read is whole");
        for (start, end) in [(1, 21), (8, 21), (12, 21)] {
            let some = log.limited_get_log_entries(start, end).await.unwrap();
            let n = some.len() as u64;
            assert_eq!(indexes(&some), (start..start + n).collect::<Vec<_>>(), "a prefix of [{start}, {end}), in order, once each");
            let sizes: Vec<usize> = some.iter().map(|e| serde_json::to_vec(e).unwrap().len()).collect();
            let total: usize = sizes.iter().sum();
            assert!(total >= PAYLOAD_BYTES && total - sizes[sizes.len() - 1] < PAYLOAD_BYTES, "stops at the entry that fills {PAYLOAD_BYTES} bytes: {sizes:?}");
            assert!(n < end - start, "fewer than asked for");
        }
        assert_eq!(indexes(&log.limited_get_log_entries(19, 21).await.unwrap()), vec![19, 20], "a short range is whole");
        // One entry bigger than the budget still goes, alone.
        log.pending().insert(21, entry(21, 400));
        log.pending().insert(22, entry(22, 1));
        assert_eq!(indexes(&log.limited_get_log_entries(21, 23).await.unwrap()), vec![21]);
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
