//! How far this node's Raft log is on its own disk.
//!
//! openraft 0.9 sends a leader's new entries to the followers only once its own append has
//! returned, so a write would pay two flushes in a row: the leader's, then a follower's. The
//! leader's [`super::LogStore`] therefore tells openraft its own entries are flushed as soon as
//! they are queued for the disk, and replication and its own fdatasync run side by side
//! (etcd's leader does the same). openraft then counts the leader in the majority before the
//! entry is on its disk, which is safe only because nothing of an entry can be seen before it
//! is there too:
//!
//! - the state machine applies an entry only once it is on this node's disk ([`OnDisk::covers`]),
//!   so no client is answered and no reader or watcher sees it before;
//! - the leader tells a follower a commit index only once that entry is on its disk (the
//!   network caps what it sends at [`OnDisk::last`]), so no follower applies it before.
//!
//! Whatever anybody can see is thus on the disks of a majority: the leader's and the follower's
//! whose answer committed it. Should the leader's machine die before its flush, the entry is
//! as good as never committed: nobody saw it, and a new leader may keep or drop it.
//!
//! A leader whose disk stalls keeps its followers (its heartbeats go on), for a while: one
//! that has not flushed what it committed for [`STALL_LIMIT`] stops sending, so that the
//! followers elect another leader instead of waiting for a disk that may never come back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::LogId;
use tokio::sync::watch;

/// How long a leader may go without flushing an entry it committed and still lead.
pub(super) const STALL_LIMIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default)]
struct Mark {
    /// The last entry on disk (everything before it is too).
    last: Option<LogId<u64>>,
    /// Why the log can no longer be written, if it cannot.
    failed: Option<String>,
}

/// Readers' view of how far the log is on disk. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OnDisk {
    mark: watch::Receiver<Mark>,
    /// While a commit index to send is not on disk: how long the disk has been stuck.
    stall: Arc<Mutex<Option<Stall>>>,
}

/// A disk making no progress while a commit index waits for it.
#[derive(Debug)]
struct Stall {
    /// Since when.
    since: Instant,
    /// Where the disk stood then.
    at: Option<LogId<u64>>,
    /// Whether it was reported.
    reported: bool,
}

/// The log writer's side of [`OnDisk`].
#[derive(Debug)]
pub(super) struct Marker(watch::Sender<Mark>);

/// A marker starting at `last` (what the log holds on disk when it opens), and its readers.
pub(super) fn channel(last: Option<LogId<u64>>) -> (Marker, OnDisk) {
    let (tx, rx) = watch::channel(Mark { last, failed: None });
    (Marker(tx), OnDisk { mark: rx, stall: Arc::default() })
}

impl Marker {
    /// Every entry up to `last` is on disk.
    pub(super) fn flushed(&self, last: LogId<u64>) {
        self.0.send_modify(|m| m.last = Some(last));
    }

    /// Entries from `index` on were removed; `before` is the entry before them (none if the
    /// log is empty below `index`).
    pub(super) fn truncated(&self, index: u64, before: Option<LogId<u64>>) {
        self.0.send_if_modified(|m| {
            let cut = m.last.is_some_and(|l| l.index >= index);
            if cut {
                m.last = before;
            }
            cut
        });
    }

    /// The log cannot be written: whoever waits for it gets `why`.
    pub(super) fn failed(&self, why: String) {
        self.0.send_modify(|m| m.failed = Some(why));
    }
}

impl OnDisk {
    /// Waits until the entry at `index` is on disk; the log's failure if it never will be.
    pub async fn covers(&self, index: u64) -> Result<(), String> {
        let on = |m: &Mark| m.last.is_some_and(|l| l.index >= index);
        if on(&self.mark.borrow()) {
            return Ok(());
        }
        let mut rx = self.mark.clone();
        let m = rx.wait_for(|m| on(m) || m.failed.is_some()).await.map_err(|_| "the log writer has stopped".to_string())?;
        match &m.failed {
            Some(why) if !on(&m) => Err(why.clone()),
            _ => Ok(()),
        }
    }

    /// The last entry on disk now.
    pub fn last(&self) -> Option<LogId<u64>> {
        self.mark.borrow().last
    }

    /// Notes whether the commit index the leader is about to send is on disk (`covered`).
    /// If it is not, and the disk has flushed nothing for over [`STALL_LIMIT`]: for how long,
    /// and whether this is the first time that is said of this stall (to report it once).
    pub fn stalled(&self, covered: bool) -> Option<(Duration, bool)> {
        let mut stall = self.stall.lock().unwrap_or_else(|e| e.into_inner());
        if covered {
            *stall = None;
            return None;
        }
        let at = self.last();
        // A disk that is slow but moving is not stuck: its time starts again.
        if stall.as_ref().is_some_and(|s| s.at != at) {
            *stall = None;
        }
        let s = stall.get_or_insert_with(|| Stall { since: Instant::now(), at, reported: false });
        let t = s.since.elapsed();
        if t <= STALL_LIMIT {
            return None;
        }
        let first = !s.reported;
        s.reported = true;
        Some((t, first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(openraft::CommittedLeaderId::new(term, 1), index)
    }

    #[tokio::test]
    async fn a_wait_ends_when_the_entry_is_flushed_or_the_log_fails() {
        let (marker, on_disk) = channel(Some(id(1, 3)));
        assert_eq!(on_disk.covers(3).await, Ok(()));
        let waiting = tokio::spawn({
            let d = on_disk.clone();
            async move { d.covers(5).await }
        });
        marker.flushed(id(1, 4));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "entry 5 is not on disk yet");
        marker.flushed(id(1, 5));
        assert_eq!(waiting.await.unwrap(), Ok(()));

        // A truncation takes the mark back to the entry before the cut.
        marker.truncated(4, Some(id(1, 3)));
        assert_eq!(on_disk.last(), Some(id(1, 3)));
        marker.truncated(9, Some(id(1, 8)));
        assert_eq!(on_disk.last(), Some(id(1, 3)), "a cut above the mark changes nothing");

        marker.failed("disk full".into());
        assert_eq!(on_disk.covers(4).await, Err("disk full".into()));
        assert_eq!(on_disk.covers(3).await, Ok(()), "what is on disk stays on disk");

        // A stall is timed from the first send it holds back, is told once it passes the
        // limit (reported once, whichever clone asks), and ends with the next send covered.
        assert_eq!(on_disk.stalled(true), None);
        assert_eq!(on_disk.stalled(false), None);
        std::thread::sleep(STALL_LIMIT + Duration::from_millis(10));
        assert!(matches!(on_disk.clone().stalled(false), Some((t, true)) if t > STALL_LIMIT));
        assert!(matches!(on_disk.stalled(false), Some((_, false))));
        assert_eq!(on_disk.stalled(true), None);
        assert_eq!(on_disk.stalled(false), None, "a new stall starts afresh");
        std::thread::sleep(STALL_LIMIT + Duration::from_millis(10));
        marker.flushed(id(1, 4));
        assert_eq!(on_disk.stalled(false), None, "a disk that flushed something is not stuck");
    }
}
