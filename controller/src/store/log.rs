//! The Raft log: entries in append-only segment files ([`Wal`]), the vote and commit index in
//! redb.
//!
//! Appends are group-committed: `append` hands its entries to a writer thread and returns at
//! once (openraft reads them from memory meanwhile); the writer takes every append queued
//! while it was busy, writes them in one write and one fdatasync, and only then tells
//! openraft each of them is flushed. Under load one disk flush carries many writes, on the
//! leader and on every follower; one write alone still costs exactly one.
//!
//! The exception is the leader's own new entries: openraft hears at once that they are
//! flushed, so that it replicates them while the writer flushes them; [`OnDisk`] says why that
//! is safe and what waits for the flush instead.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogId, LogState, RaftLogReader, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::ondisk::{Marker, OnDisk};
use super::wal::{Wal, SEGMENT_BYTES};
use super::{io_err, StorageError, TypeConfig};

type Entry = openraft::Entry<TypeConfig>;

/// Where entries were kept before the segment files: read once, on the first start of a node
/// that has them, moved into the [`Wal`] and emptied.
const LOGS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");

/// The log store. Cheap to clone: clones share the files, the entries not yet flushed and the
/// writer.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<Database>,
    wal: Arc<Wal>,
    /// Entries appended but not yet on disk (what readers see before the writer has flushed
    /// them), and the latest flushed ones (see [`RECENT_BYTES`]).
    pending: Arc<Mutex<BTreeMap<u64, Entry>>>,
    writer: mpsc::Sender<Job>,
    /// This node's id.
    id: u64,
    /// The vote as last saved: a committed one naming this node makes it the leader of that
    /// term, whose own entries openraft may hear of before they are flushed.
    vote: Arc<Mutex<Option<Vote<u64>>>>,
    on_disk: OnDisk,
    marker: Arc<Marker>,
}

/// Work for the writer thread, done in the order sent.
enum Job {
    /// Entries to make durable, and whom to tell (nobody: the leader's own, whose
    /// flush [`OnDisk`] reports).
    Append(Vec<Entry>, Option<LogFlushed<TypeConfig>>),
    /// The commit index to note once the entries queued before are written.
    Committed(Option<LogId<u64>>),
    /// Answer once everything sent before is durable.
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Append(e, _) => write!(f, "Append({} entries)", e.len()),
            Job::Flush(_) => f.write_str("Flush"),
            Job::Committed(c) => write!(f, "Committed({c:?})"),
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

/// How many bytes of the latest flushed entries stay in memory besides the files. Right after
/// its flush an entry is read again, to be applied and sent to the followers: from memory that
/// is a clone, from the files a read and a parse.
const RECENT_BYTES: usize = 4 << 20;

/// Flushed entries kept in memory, oldest first, and their bytes.
#[derive(Default)]
struct Recent {
    kept: std::collections::VecDeque<(LogId<u64>, usize)>,
    bytes: usize,
}

impl Recent {
    /// Keeps `flushed` (with their sizes), and lets the oldest go from `pending` past the bound.
    fn keep(&mut self, flushed: impl IntoIterator<Item = (LogId<u64>, usize)>, pending: &mut BTreeMap<u64, Entry>) {
        for (id, n) in flushed {
            self.kept.push_back((id, n));
            self.bytes += n;
        }
        while self.bytes > RECENT_BYTES {
            let Some((id, n)) = self.kept.pop_front() else { break };
            self.bytes -= n;
            // Only that very entry: a truncation may have put another, not yet flushed, at its index.
            if pending.get(&id.index).is_some_and(|e| e.log_id == id) {
                pending.remove(&id.index);
            }
        }
    }
}

/// The writer: one transaction and one fsync for everything queued while the last was
/// being written.
fn writer(wal: Arc<Wal>, db: std::sync::Weak<Database>, pending: Arc<Mutex<BTreeMap<u64, Entry>>>, marker: Arc<Marker>, jobs: mpsc::Receiver<Job>) {
    let mut recent = Recent::default();
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match jobs.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        let entries: Vec<&Entry> = group.iter().filter_map(|j| if let Job::Append(e, _) = j { Some(e) } else { None }).flatten().collect();
        let res = if entries.is_empty() { Ok(Vec::new()) } else { write_entries(&wal, &entries) };
        let last = entries.last().map(|e| e.log_id);
        if let Ok(sizes) = &res {
            if !entries.is_empty() {
                FLUSHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                COMMANDS_FLUSHED.fetch_add(entries.iter().map(|e| commands_in(e)).sum(), std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(last) = last {
                let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                recent.keep(entries.iter().map(|e| e.log_id).zip(sizes.iter().copied()), &mut p);
                drop(p);
                marker.flushed(last);
            }
        }
        let res = res.map(|_| ());
        let mut committed = None;
        for j in group {
            match j {
                Job::Append(_, None) => {}
                Job::Append(_, Some(cb)) => cb.log_io_completed(res.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.clone()))),
                Job::Flush(done) => {
                    let _ = done.send(());
                }
                Job::Committed(c) => committed = Some(c),
            }
        }
        match res {
            Err(e) => {
                tracing::error!(error = %e, "the Raft log could not be written");
                marker.failed(format!("the Raft log could not be written: {e}"));
            }
            // Written after the entries queued before it: a commit index on disk never runs
            // ahead of the entries it names.
            Ok(()) => {
                // (Held weakly: a closed log store closes its database, to be opened again.)
                if let (Some(c), Some(db)) = (committed, db.upgrade()) {
                    if let Err(e) = put_meta(&db, "committed", &c, false) {
                        tracing::warn!(error = %e, "could not note the commit index");
                    }
                }
            }
        }
    }
}

/// Writes `entries` durably; their sizes on disk.
fn write_entries(wal: &Wal, entries: &[&Entry]) -> Result<Vec<usize>, String> {
    let records = entries.iter().map(|e| serde_json::to_vec(e).map(|b| (e.log_id.index, b))).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    wal.append(&records).map_err(|e| e.to_string())?;
    Ok(records.iter().map(|(_, b)| b.len()).collect())
}

fn put_meta<T: serde::Serialize>(db: &Database, key: &str, value: &T, durable: bool) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(value).map_err(|e| logs_err(ErrorVerb::Write, e))?;
    let mut w = db.begin_write().map_err(|e| logs_err(ErrorVerb::Write, e))?;
    if !durable {
        w.set_durability(Durability::None).map_err(|e| logs_err(ErrorVerb::Write, e))?;
    }
    {
        let mut t = w.open_table(META).map_err(|e| logs_err(ErrorVerb::Write, e))?;
        t.insert(key, bytes.as_slice()).map_err(|e| logs_err(ErrorVerb::Write, e))?;
    }
    w.commit().map_err(|e| logs_err(ErrorVerb::Write, e))
}

fn logs_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    io_err(ErrorSubject::Logs, verb, e)
}

impl LogStore {
    /// Opens (or creates) node `id`'s log: entries in `dir/raft-wal/`, the vote and commit
    /// index in `dir/raft-log.redb`.
    pub fn open(dir: &Path, id: u64) -> Result<LogStore, StorageError> {
        let db = Database::create(dir.join("raft-log.redb")).map_err(|e| logs_err(ErrorVerb::Read, e))?;
        let w = db.begin_write().map_err(|e| logs_err(ErrorVerb::Write, e))?;
        w.open_table(LOGS).map_err(|e| logs_err(ErrorVerb::Write, e))?;
        w.open_table(META).map_err(|e| logs_err(ErrorVerb::Write, e))?;
        w.commit().map_err(|e| logs_err(ErrorVerb::Write, e))?;
        let wal = Arc::new(Wal::open(&dir.join("raft-wal"), SEGMENT_BYTES).map_err(|e| logs_err(ErrorVerb::Read, e))?);
        let db = Arc::new(db);
        let pending = Arc::new(Mutex::new(BTreeMap::new()));
        let (tx, rx) = mpsc::channel();
        let (marker, on_disk) = super::ondisk::channel(None);
        let marker = Arc::new(marker);
        let (wal2, db2, pending2, marker2) = (wal.clone(), Arc::downgrade(&db), pending.clone(), marker.clone());
        std::thread::Builder::new()
            .name("raft-log".into())
            .spawn(move || writer(wal2, db2, pending2, marker2, rx))
            .map_err(|e| logs_err(ErrorVerb::Write, e))?;
        let log = LogStore { db, wal, pending, writer: tx, id, vote: Default::default(), on_disk, marker };
        log.move_entries_from_redb()?;
        // Purged records that share a segment with live ones are still in the files.
        if let Some(purged) = log.get_meta::<LogId<u64>>("last_purged")? {
            log.wal.purge(purged.index).map_err(|e| logs_err(ErrorVerb::Delete, e))?;
        }
        // Nothing is queued yet: the log's last entry is on disk.
        if let Some(last) = log.log_state()?.last_log_id {
            log.marker.flushed(last);
        }
        Ok(log)
    }

    /// How far the log is on this node's disk, for what must wait for it.
    pub fn on_disk(&self) -> OnDisk {
        self.on_disk.clone()
    }

    /// The id of the entry at `index`, if the log (memory or files) still holds it.
    fn log_id_at(&self, index: u64) -> Result<Option<LogId<u64>>, StorageError> {
        Ok(self.entries(index, index + 1, usize::MAX)?.pop().map(|e| e.log_id))
    }

    /// The last purged entry, and the last entry (the last purged one if none is left).
    fn log_state(&self) -> Result<LogState<TypeConfig>, StorageError> {
        let purged: Option<LogId<u64>> = self.get_meta("last_purged")?;
        let in_memory = self.pending().values().next_back().map(|e| e.log_id);
        let last = match (in_memory, self.wal.last()) {
            (Some(id), _) => Some(id),
            (None, Some(i)) => self.log_id_at(i)?,
            (None, None) => None,
        };
        Ok(LogState { last_purged_log_id: purged, last_log_id: last.or(purged) })
    }

    /// A node that kept its entries in redb (before the segment files) keeps them: they move
    /// into the files (durably) before the table is emptied, so a crash in between finds them
    /// in one place or both, and moving them again writes the same records.
    fn move_entries_from_redb(&self) -> Result<(), StorageError> {
        let r = self.db.begin_read().map_err(|e| logs_err(ErrorVerb::Read, e))?;
        let t = r.open_table(LOGS).map_err(|e| logs_err(ErrorVerb::Read, e))?;
        let mut records = Vec::new();
        for item in t.iter().map_err(|e| logs_err(ErrorVerb::Read, e))? {
            let (k, v) = item.map_err(|e| logs_err(ErrorVerb::Read, e))?;
            records.push((k.value(), v.value().to_vec()));
        }
        drop((t, r));
        if records.is_empty() {
            return Ok(());
        }
        tracing::info!(entries = records.len(), "moving the Raft log's entries into segment files");
        if let Some(&(first, _)) = records.first() {
            self.wal.truncate(first).map_err(|e| logs_err(ErrorVerb::Write, e))?;
        }
        self.wal.append(&records).map_err(|e| logs_err(ErrorVerb::Write, e))?;
        let w = self.db.begin_write().map_err(|e| logs_err(ErrorVerb::Write, e))?;
        {
            let mut t = w.open_table(LOGS).map_err(|e| logs_err(ErrorVerb::Write, e))?;
            t.retain(|_, _| false).map_err(|e| logs_err(ErrorVerb::Write, e))?;
        }
        w.commit().map_err(|e| logs_err(ErrorVerb::Write, e))
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
        put_meta(&self.db, key, value, durable)
    }
}

impl LogStore {
    /// Entries from `start` (before `end`), consecutive, as long as they stay under
    /// `max_bytes` (the first always comes). Memory first, then disk: an entry the writer
    /// flushes in between is then seen in one or the other (it leaves memory only once it is
    /// on disk).
    fn entries(&self, start: u64, end: u64, max_bytes: usize) -> Result<Vec<Entry>, StorageError> {
        let mut memory: BTreeMap<u64, Entry> = self.pending().range(start..end).map(|(k, e)| (*k, e.clone())).collect();
        let mut disk: BTreeMap<u64, Vec<u8>> = self.wal.read(start, end, max_bytes).map_err(|e| logs_err(ErrorVerb::Read, e))?.into_iter().collect();
        let first = memory.keys().next().into_iter().chain(disk.keys().next()).min().copied();
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        let mut i = first.unwrap_or(end);
        while i < end && (out.is_empty() || bytes < max_bytes) {
            let e = match (memory.remove(&i), disk.remove(&i)) {
                (Some(e), _) => {
                    if max_bytes < usize::MAX {
                        bytes += serde_json::to_vec(&e).map_or(0, |v| v.len());
                    }
                    e
                }
                (None, Some(b)) => {
                    bytes += b.len();
                    serde_json::from_slice(&b).map_err(|e| logs_err(ErrorVerb::Read, e))?
                }
                (None, None) => break,
            };
            out.push(e);
            i += 1;
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(&mut self, range: RB) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => x.saturating_add(1),
            Bound::Excluded(x) => *x,
            Bound::Unbounded => u64::MAX,
        };
        self.entries(start, end, usize::MAX)
    }

    /// Entries from `start` (before `end`) up to [`PAYLOAD_BYTES`] of them, at least one:
    /// what one append to a follower carries. openraft allows up to `max_payload_entries`
    /// per append and waits one heartbeat interval for the answer; a new leader probing a
    /// follower's log from its middle would otherwise send hundreds of entries — batches of
    /// thousands of endpoints, assignments of a thousand switches — ten megabytes that a loaded
    /// machine cannot carry and parse in 100 ms, again and again: the follower never heard
    /// from its leader.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        self.entries(start, end, PAYLOAD_BYTES)
    }
}

/// How many bytes of entries one append carries at most (one entry, however big, always).
const PAYLOAD_BYTES: usize = 256 << 10;

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.log_state()
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.flush().await?;
        self.put_meta("vote", vote, true).map_err(|_| io_err(ErrorSubject::Vote, ErrorVerb::Write, "saving the vote failed"))?;
        *self.vote.lock().unwrap_or_else(|e| e.into_inner()) = Some(*vote);
        Ok(())
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
        // anyway), so it rides on the next durable commit instead of costing an fsync, and is
        // written by the writer, not here where it would hold up applying the entry.
        self.writer.send(Job::Committed(committed)).map_err(|_| logs_err(ErrorVerb::Write, "the log writer has stopped"))
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
        // The leader's own new entries: entries of the term of a committed vote for this node
        // (a node never receives those from another: a newer leader's entries come only after
        // this node saved that leader's vote). See `OnDisk` for why telling openraft now is safe.
        let own =
            self.vote.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|v| {
                v.is_committed() && v.leader_id().voted_for() == Some(self.id) && entries.iter().all(|e| e.log_id.leader_id == *v.leader_id())
            });
        if own {
            self.writer.send(Job::Append(entries, None)).map_err(|_| logs_err(ErrorVerb::Write, "the log writer has stopped"))?;
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        self.writer.send(Job::Append(entries, Some(callback))).map_err(|_| logs_err(ErrorVerb::Write, "the log writer has stopped"))
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        self.flush().await?;
        // Flushed entries kept in memory go with those on disk.
        self.pending().split_off(&log_id.index);
        self.wal.truncate(log_id.index).map_err(|e| logs_err(ErrorVerb::Delete, e))?;
        let before = match log_id.index.checked_sub(1) {
            Some(i) => self.log_id_at(i)?.or(self.get_meta("last_purged")?),
            None => None,
        };
        self.marker.truncated(log_id.index, before);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        self.flush().await?;
        self.put_meta("last_purged", &log_id, true)?;
        {
            let mut p = self.pending();
            *p = p.split_off(&(log_id.index + 1));
        }
        self.wal.purge(log_id.index).map_err(|e| logs_err(ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};
    use redb::ReadableTableMetadata;

    /// An entry of about `kb` KiB: a switch assignment of that many hosts, give or take.
    fn entry(index: u64, kb: usize) -> Entry {
        let masters = (0..kb * 1024 / 24).map(|h| (format!("host-{index}-{h:06}"), 1)).collect();
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(crate::model::Command::SetMasters { masters }) }
    }

    /// A node whose entries are in redb (as before the segment files) finds them after an
    /// upgrade, in the files, and the table emptied; opening again changes nothing.
    #[tokio::test]
    async fn entries_kept_in_redb_move_into_the_segment_files() {
        let dir = std::env::temp_dir().join(format!("plx-log-move-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        {
            let db = Database::create(dir.join("raft-log.redb")).unwrap();
            let w = db.begin_write().unwrap();
            {
                let mut t = w.open_table(LOGS).unwrap();
                for i in 1..=5 {
                    t.insert(i, serde_json::to_vec(&entry(i, 1)).unwrap().as_slice()).unwrap();
                }
            }
            w.commit().unwrap();
        }
        for _ in 0..2 {
            let mut log = LogStore::open(&dir, 1).unwrap();
            let got: Vec<u64> = log.try_get_log_entries(..).await.unwrap().iter().map(|e| e.log_id.index).collect();
            assert_eq!(got, vec![1, 2, 3, 4, 5]);
            assert_eq!(log.get_log_state().await.unwrap().last_log_id.map(|l| l.index), Some(5));
            let r = log.db.begin_read().unwrap();
            assert!(r.open_table(LOGS).unwrap().is_empty().unwrap(), "the table is emptied");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Flushed entries stay in memory up to a bound, oldest out first; an index whose entry a
    /// truncation replaced keeps the new one, which is not on disk yet.
    #[test]
    fn flushed_entries_kept_in_memory_are_bounded_and_never_a_replacement() {
        let mut pending: BTreeMap<u64, Entry> = (1..=8).map(|i| (i, entry(i, 1))).collect();
        let mut recent = Recent::default();
        let quarter = RECENT_BYTES / 4;
        recent.keep((1..=4).map(|i| (entry(i, 1).log_id, quarter)), &mut pending);
        assert_eq!(pending.len(), 8, "four quarters fit");
        // Entry 1 was truncated and appended again in a new term, not flushed yet.
        let replacement = Entry { log_id: LogId::new(CommittedLeaderId::new(2, 1), 1), ..entry(1, 1) };
        pending.insert(1, replacement.clone());
        recent.keep((5..=6).map(|i| (entry(i, 1).log_id, quarter)), &mut pending);
        assert_eq!(pending.get(&1).map(|e| e.log_id), Some(replacement.log_id), "the replacement stays");
        assert!(!pending.contains_key(&2), "the oldest flushed entry left");
        assert!(pending.contains_key(&3) && pending.contains_key(&6), "the newest stay: {:?}", pending.keys().collect::<Vec<_>>());
        assert!(recent.bytes <= RECENT_BYTES);
    }

    /// What one append may carry is bounded in bytes, not only in entries: from disk, from
    /// memory (not flushed yet) and across both, in order, never empty, never a duplicate.
    #[tokio::test]
    async fn an_append_carries_a_bounded_payload() {
        let dir = std::env::temp_dir().join(format!("plx-log-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = LogStore::open(&dir, 1).unwrap();
        // 1..=10 on disk, 10..=20 in memory (10 in both: flushed while read), 64 KiB each.
        let on_disk: Vec<Entry> = (1..=10).map(|i| entry(i, 64)).collect();
        write_entries(&log.wal, &on_disk.iter().collect::<Vec<_>>()).unwrap();
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
