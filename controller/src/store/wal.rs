//! The Raft log's entries in append-only segment files: a group of appends is one sequential
//! write and one `fdatasync`, as in etcd's WAL. A B-tree database commit (what the log was
//! before) costs two to three times that on the same disk, and Raft pays it twice per write
//! in a cluster — on the leader, then on a follower — since openraft replicates an entry only
//! once it is on the leader's disk.
//!
//! A segment is a file `<first index, 20 digits>.wal` of records, each
//! `[payload length u32][CRC-32 of index and payload u32][index u64][payload]` (big-endian),
//! preallocated so that an append changes no file metadata. A zero length ends a segment's
//! records. On open, a record cut short or garbled at the end of the last segment (a crash in
//! the middle of a write, never acknowledged) ends the log there; one anywhere else is
//! corruption and refuses to open, since dropping it could drop acknowledged writes.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Record header: payload length, CRC, index.
const HEADER: usize = 16;

/// A new segment starts once the last one holds this much (a bigger entry still fits in one).
pub(super) const SEGMENT_BYTES: u64 = 64 << 20;

/// An append-only log of `(index, payload)` records, consecutive by index.
#[derive(Debug)]
pub(super) struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Serializes what changes the files (appends, truncations, purges); readers take only
    /// `state`, briefly.
    io: Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// Segments by the index of their first record.
    segments: BTreeMap<u64, Arc<Segment>>,
    /// Where each live record is.
    at: BTreeMap<u64, Loc>,
    /// Where the next record of the last segment goes.
    end: u64,
    /// The index of the last segment's last record (purged or not).
    last_written: Option<u64>,
}

#[derive(Debug)]
struct Segment {
    file: File,
    path: PathBuf,
}

#[derive(Debug, Clone, Copy)]
struct Loc {
    segment: u64,
    offset: u64,
    len: u32,
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl Wal {
    /// Opens the log in `dir` (created if missing), recovering every whole record.
    pub(super) fn open(dir: &Path, segment_bytes: u64) -> io::Result<Wal> {
        std::fs::create_dir_all(dir)?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let path = e?.path();
            let first = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".wal")).and_then(|n| n.parse::<u64>().ok());
            if let Some(first) = first {
                names.push((first, path));
            }
        }
        names.sort();
        let mut st = State::default();
        let count = names.len();
        for (i, (first, path)) in names.into_iter().enumerate() {
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let last_segment = i + 1 == count;
            let (end, last) = scan(&file, first, &mut st.at, last_segment).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
            if last_segment {
                // Whatever follows the last whole record (a torn write) goes, so that the next
                // append is not read back behind garbage.
                file.set_len(end)?;
                preallocate(&file, segment_bytes);
                file.sync_all()?;
                st.end = end;
                st.last_written = last;
            }
            st.segments.insert(first, Arc::new(Segment { file, path }));
        }
        Ok(Wal { dir: dir.to_path_buf(), segment_bytes, state: Mutex::new(st), io: Mutex::new(()) })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last record's index.
    pub(super) fn last(&self) -> Option<u64> {
        self.state().at.keys().next_back().copied()
    }

    /// Appends records (consecutive indexes) and makes them durable before it returns.
    pub(super) fn append(&self, records: &[(u64, Vec<u8>)]) -> io::Result<()> {
        let Some(&(first, _)) = records.first() else { return Ok(()) };
        if records.windows(2).any(|w| w[1].0 != w[0].0 + 1) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "records to append are not consecutive"));
        }
        let _io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        let mut buf = Vec::with_capacity(records.iter().map(|(_, p)| HEADER + p.len()).sum());
        for (index, payload) in records {
            let len = u32::try_from(payload.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a record over 4 GiB"))?;
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(&crc(*index, payload).to_be_bytes());
            buf.extend_from_slice(&index.to_be_bytes());
            buf.extend_from_slice(payload);
        }
        let reuse = {
            let st = self.state();
            let follows = st.last_written.is_some_and(|l| l + 1 == first);
            // A segment holds consecutive records only, the first named in its file name:
            // after a snapshot moved the log ahead, or once it is full, records go into a
            // new one.
            st.segments
                .last_key_value()
                .filter(|(k, _)| (follows || (st.end == 0 && **k == first)) && st.end < self.segment_bytes)
                .map(|(k, s)| (*k, s.clone(), st.end))
        };
        let (segment, seg, offset) = match reuse {
            Some(r) => r,
            None => (first, self.new_segment(first)?, 0),
        };
        seg.file.write_all_at(&buf, offset)?;
        seg.file.sync_data()?;
        let mut st = self.state();
        let mut at = offset;
        for (index, payload) in records {
            st.at.insert(*index, Loc { segment, offset: at, len: payload.len() as u32 });
            at += (HEADER + payload.len()) as u64;
        }
        st.end = at;
        st.last_written = records.last().map(|(i, _)| *i);
        Ok(())
    }

    fn new_segment(&self, first: u64) -> io::Result<Arc<Segment>> {
        let path = self.dir.join(format!("{first:020}.wal"));
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        preallocate(&file, self.segment_bytes);
        file.sync_all()?;
        sync_dir(&self.dir)?;
        let s = Arc::new(Segment { file, path });
        let mut st = self.state();
        st.segments.insert(first, s.clone());
        st.end = 0;
        st.last_written = None;
        Ok(s)
    }

    /// The payloads of the records from `start` before `end`, in order, as long as they stay
    /// under `max_bytes` (the first always comes, however big).
    pub(super) fn read(&self, start: u64, end: u64, max_bytes: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let wanted: Vec<(u64, Loc, Arc<Segment>)> = {
            let st = self.state();
            let mut bytes = 0usize;
            let mut out = Vec::new();
            for (i, loc) in st.at.range(start..end) {
                if !out.is_empty() && bytes >= max_bytes {
                    break;
                }
                bytes += loc.len as usize;
                let Some(seg) = st.segments.get(&loc.segment) else { return Err(invalid(format!("record {i} has no segment"))) };
                out.push((*i, *loc, seg.clone()));
            }
            out
        };
        let mut out = Vec::with_capacity(wanted.len());
        for (index, loc, seg) in wanted {
            let mut rec = vec![0u8; HEADER + loc.len as usize];
            seg.file.read_exact_at(&mut rec, loc.offset)?;
            match parse(&rec) {
                Some((i, payload)) if i == index && payload.len() == rec.len() - HEADER => out.push((index, rec.split_off(HEADER))),
                _ => return Err(invalid(format!("{}: record {index} at {} does not read back", seg.path.display(), loc.offset))),
            }
        }
        Ok(out)
    }

    /// Removes the records from `from` on (they conflict with the leader's log).
    pub(super) fn truncate(&self, from: u64) -> io::Result<()> {
        let _io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        let mut st = self.state();
        let Some(loc) = st.at.get(&from).copied() else { return Ok(()) };
        // Later segments go first, last one first: a crash in between leaves a log that is
        // the old one cut shorter, never one with a hole.
        let later: Vec<u64> = st.segments.range(loc.segment + 1..).map(|(k, _)| *k).rev().collect();
        for k in later {
            if let Some(s) = st.segments.remove(&k) {
                std::fs::remove_file(&s.path)?;
            }
        }
        sync_dir(&self.dir)?;
        let seg = st.segments.get(&loc.segment).cloned().ok_or_else(|| invalid(format!("record {from} has no segment")))?;
        seg.file.set_len(loc.offset)?;
        preallocate(&seg.file, self.segment_bytes);
        seg.file.sync_all()?;
        st.at.split_off(&from);
        st.end = loc.offset;
        st.last_written = from.checked_sub(1).filter(|_| loc.offset > 0);
        Ok(())
    }

    /// Forgets the records up to `upto` (a snapshot holds them), deleting every segment that
    /// holds nothing newer.
    pub(super) fn purge(&self, upto: u64) -> io::Result<()> {
        let _io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        let mut st = self.state();
        st.at = st.at.split_off(&(upto + 1));
        // A segment is done with once the next one starts at or before `upto + 1`; the last
        // one stays (appends go there).
        let firsts: Vec<u64> = st.segments.keys().copied().collect();
        let mut removed = false;
        for w in firsts.windows(2) {
            if w[1] <= upto + 1 {
                if let Some(s) = st.segments.remove(&w[0]) {
                    std::fs::remove_file(&s.path)?;
                    removed = true;
                }
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// Reads a segment's records into `at`; returns where they end and the last one's index.
/// Only the last segment may end in a torn record.
fn scan(file: &File, first: u64, at: &mut BTreeMap<u64, Loc>, last_segment: bool) -> Result<(u64, Option<u64>), String> {
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let (mut offset, mut next, mut last) = (0u64, first, None);
    let mut header = [0u8; HEADER];
    while offset + HEADER as u64 <= size {
        file.read_exact_at(&mut header, offset).map_err(|e| e.to_string())?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        if len == 0 {
            break;
        }
        let whole = offset + (HEADER as u64) + u64::from(len) <= size;
        let mut rec = vec![0u8; HEADER + len as usize * usize::from(whole)];
        let ok = whole && file.read_exact_at(&mut rec, offset).is_ok() && matches!(parse(&rec), Some((i, p)) if i == next && p.len() == len as usize);
        if !ok {
            if last_segment {
                tracing::warn!(offset, index = next, "the Raft log ends in a torn record (a crash while writing); it is dropped");
                break;
            }
            return Err(format!("record {next} at offset {offset} is corrupt"));
        }
        at.insert(next, Loc { segment: first, offset, len });
        last = Some(next);
        offset += HEADER as u64 + u64::from(len);
        next += 1;
    }
    Ok((offset, last))
}

/// A whole record's index and payload, if its checksum holds.
fn parse(rec: &[u8]) -> Option<(u64, &[u8])> {
    let h = rec.get(..HEADER)?;
    let len = u32::from_be_bytes(h[0..4].try_into().ok()?) as usize;
    let sum = u32::from_be_bytes(h[4..8].try_into().ok()?);
    let index = u64::from_be_bytes(h[8..16].try_into().ok()?);
    let payload = rec.get(HEADER..HEADER + len)?;
    (crc(index, payload) == sum).then_some((index, payload))
}

/// Allocates the segment's blocks up front, so that appends change no file metadata and one
/// `fdatasync` is all they cost. Best effort: a filesystem without it only makes appends
/// slower.
fn preallocate(file: &File, len: u64) {
    use std::os::fd::AsRawFd;
    let Ok(len) = libc::off_t::try_from(len) else { return };
    // SAFETY: a valid open descriptor; fallocate reads no memory of ours.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if r != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "could not preallocate a Raft log segment");
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// CRC-32 (IEEE) of the index and the payload.
fn crc(index: u64, payload: &[u8]) -> u32 {
    crc32(index.to_be_bytes().iter().chain(payload))
}

fn crc32<'a>(bytes: impl Iterator<Item = &'a u8>) -> u32 {
    let mut c = !0u32;
    for b in bytes {
        c = CRC_TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("plx-wal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn recs(r: std::ops::RangeInclusive<u64>, size: usize) -> Vec<(u64, Vec<u8>)> {
        r.map(|i| (i, format!("{i:0size$}").into_bytes())).collect()
    }

    fn indexes(w: &Wal) -> Vec<u64> {
        w.read(0, u64::MAX, usize::MAX).unwrap().into_iter().map(|(i, _)| i).collect()
    }

    #[test]
    fn crc_is_the_ieee_one() {
        // The table is the standard one: CRC-32 of "123456789" is its published check value.
        assert_eq!(crc32(b"123456789".iter()), 0xCBF4_3926);
    }

    /// Records survive a reopen across segments; truncation and purging take exactly what
    /// they name, on disk too.
    #[test]
    fn records_survive_reopening_truncation_and_purging() {
        let d = dir("reopen");
        let w = Wal::open(&d, 1000).unwrap();
        for chunk in recs(1..=40, 90).chunks(3) {
            w.append(chunk).unwrap();
        }
        let segments = std::fs::read_dir(&d).unwrap().count();
        assert!(segments > 3, "1,000-byte segments roll over: {segments}");
        drop(w);
        let w = Wal::open(&d, 1000).unwrap();
        assert_eq!(indexes(&w), (1..=40).collect::<Vec<_>>());
        assert_eq!(w.read(5, 7, usize::MAX).unwrap(), recs(5..=6, 90));
        assert_eq!(w.read(5, 40, 200).unwrap().len(), 3, "stops once 200 bytes are read");
        w.truncate(25).unwrap();
        w.append(&recs(25..=27, 10)).unwrap();
        w.purge(12).unwrap();
        drop(w);
        let w = Wal::open(&d, 1000).unwrap();
        // What was purged but shares a segment with live records is still on disk; the store
        // knows where the log starts and purges again after opening.
        w.purge(12).unwrap();
        assert_eq!(indexes(&w), (13..=27).collect::<Vec<_>>());
        assert_eq!(w.read(25, 28, usize::MAX).unwrap(), recs(25..=27, 10));
        // A snapshot moved the log ahead: it goes on at the new index.
        w.purge(100).unwrap();
        w.append(&recs(101..=102, 10)).unwrap();
        drop(w);
        let w = Wal::open(&d, 1000).unwrap();
        w.purge(100).unwrap();
        assert_eq!(indexes(&w), vec![101, 102]);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A crash in the middle of a write leaves part of a record: the log ends before it, and
    /// the next append lands where it was.
    #[test]
    fn a_torn_last_record_is_dropped_and_a_corrupt_middle_one_refuses() {
        let d = dir("torn");
        let w = Wal::open(&d, 1 << 20).unwrap();
        w.append(&recs(1..=5, 50)).unwrap();
        drop(w);
        let seg = d.join(format!("{:020}.wal", 1));
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        // Record 6's header and half its payload, as a crash would leave them.
        let mut rec = Vec::new();
        let p = vec![b'x'; 50];
        rec.extend_from_slice(&50u32.to_be_bytes());
        rec.extend_from_slice(&crc(6, &p).to_be_bytes());
        rec.extend_from_slice(&6u64.to_be_bytes());
        rec.extend_from_slice(&p[..25]);
        let end = 5 * (HEADER as u64 + 50);
        f.write_all_at(&rec, end).unwrap();
        drop(f);
        let w = Wal::open(&d, 1 << 20).unwrap();
        assert_eq!(indexes(&w), (1..=5).collect::<Vec<_>>());
        w.append(&recs(6..=7, 50)).unwrap();
        drop(w);
        let w = Wal::open(&d, 1 << 20).unwrap();
        assert_eq!(w.read(0, u64::MAX, usize::MAX).unwrap(), recs(1..=7, 50));
        // A flipped byte in a record of an older segment: refusing beats losing what it held.
        w.append(&[(8, vec![b'y'; 2 << 20])]).unwrap();
        w.append(&recs(9..=9, 5)).unwrap();
        drop(w);
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(b"!", HEADER as u64 + 3).unwrap();
        drop(f);
        let e = Wal::open(&d, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("record 1 at offset 0 is corrupt"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
