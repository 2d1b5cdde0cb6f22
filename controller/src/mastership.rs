//! Which controller node programs which switch. Every switch has every node as an OpenFlow
//! target; the leader assigns each one a master among the live nodes and records that in the
//! replicated state, where the assignment's revision becomes the OpenFlow role generation id.
//! A node acts as master only while it can prove it is in the majority (its [`Lease`]); the
//! others keep their sessions as slaves. The switch itself refuses a master request with an
//! older generation, so two nodes never program one switch even across a partition.
//!
//! Assignment is rendezvous hashing of host and node over the live nodes: balanced, and a node
//! that dies or comes back moves only its own share of the switches.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::Command;
use crate::store::{Raft, SharedState};

/// How long a node may go without proof of being in the majority and still act as master.
pub const LEASE: Duration = Duration::from_millis(300);
/// How long the leader waits before it takes an unanswering node for dead. Longer than
/// [`LEASE`]: a node cut off stops mastering before anybody replaces it.
pub const DEAD_AFTER: Duration = Duration::from_millis(1500);
/// How often the leader checks the nodes and the assignment.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// Every how many checks a follower touches its peers' cluster ports (5 s: well inside the
/// client's 30 s idle timeout).
const WARM_EVERY: u64 = 50;
/// How long the leader's liveness probe waits.
const PROBE_DEADLINE: Duration = Duration::from_millis(300);
/// How long a follower's warming touch waits: unhurried, since a request cut short closes the
/// connection it was to keep open.
const WARM_DEADLINE: Duration = Duration::from_secs(5);

/// What a liveness probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// The node answered.
    Alive,
    /// Nothing listens at its address: the process is gone (or restarting). Its switches move
    /// at once; waiting out [`DEAD_AFTER`] would only prolong their time without a master.
    Refused,
    /// No answer in time: maybe dead, maybe slow or cut off. Only [`DEAD_AFTER`] of these
    /// moves its switches, so a loaded node is not failed over.
    Silent,
}

/// Whether `e` is a refused connection (somewhere in its chain of causes).
fn refused(e: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
            return true;
        }
        cause = c.source();
    }
    false
}

async fn probe(http: &reqwest::Client, url: &str, deadline: Duration) -> Probe {
    match http.get(url).timeout(deadline).send().await {
        Ok(r) if r.status().is_success() => Probe::Alive,
        Ok(_) => Probe::Silent,
        Err(e) if refused(&e) => Probe::Refused,
        Err(_) => Probe::Silent,
    }
}

/// This node's proof of being in the majority.
pub struct Lease {
    id: u64,
    raft: Raft,
    leader_contact_ms: AtomicU64,
    /// As leader: when ([`mono_ms`]) the newest heartbeat a majority acknowledged was sent, as
    /// estimated when the metrics saying so arrived, and in which term.
    acked_ms: AtomicU64,
    acked_term: AtomicU64,
}

impl Lease {
    /// The lease of node `id`. With a runtime, it follows the Raft metrics from then on.
    pub fn new(id: u64, raft: Raft) -> Arc<Lease> {
        let lease = Arc::new(Lease { id, raft, leader_contact_ms: AtomicU64::new(0), acked_ms: AtomicU64::new(0), acked_term: AtomicU64::new(0) });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(watch_acks(Arc::downgrade(&lease)));
        }
        lease
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Notes that the current leader's append (or heartbeat) was accepted just now.
    pub fn leader_contact(&self) {
        self.leader_contact_ms.store(mono_ms(), Ordering::Relaxed);
    }

    /// Whether this node can prove, now, that it is in the majority: as leader, a majority
    /// answered its heartbeats within [`LEASE`]; as follower, the leader reached it within
    /// [`LEASE`].
    pub fn holds(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        if m.current_leader == Some(self.id) {
            leads_a_majority(&m, self.id)
        } else {
            m.current_leader.is_some() && mono_ms().saturating_sub(self.leader_contact_ms.load(Ordering::Relaxed)) < LEASE.as_millis() as u64
        }
    }
}

/// Milliseconds on a monotonic clock: a lease must not grow when the wall clock is stepped
/// back. It starts an hour in, so that a time never recorded (0) is long past.
fn mono_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 3_600_000
}

/// Keeps the leader's acknowledgement time from the metrics. openraft reports how long ago a
/// majority acknowledged, as of the report; turning that into a point in time when the report
/// arrives (not when it is read, perhaps much later) keeps a leader that has gone quiet from
/// looking fresh. The estimate errs late by the report's delivery delay, far inside the margin
/// [`Lease::serves_reads`] keeps.
async fn watch_acks(lease: std::sync::Weak<Lease>) {
    let mut rx = match lease.upgrade() {
        Some(l) => l.raft.metrics(),
        None => return,
    };
    while rx.changed().await.is_ok() {
        let Some(l) = lease.upgrade() else { return };
        let m = rx.borrow_and_update();
        if let (Some(ms), true) = (m.millis_since_quorum_ack, m.current_leader == Some(l.id)) {
            l.acked_term.store(m.current_term, Ordering::Relaxed);
            l.acked_ms.store(mono_ms().saturating_sub(ms), Ordering::Relaxed);
        }
    }
}

impl Lease {
    /// Whether this node, as leader, may answer a read from its own replica without a round of
    /// heartbeats: a majority acknowledged a heartbeat of this term sent less than [`LEASE`]
    /// ago, and it has applied an entry of its own term (so everything committed before it led
    /// is applied). Safe because a follower refuses to vote for anyone else for an election
    /// timeout's upper bound (600 ms, twice [`LEASE`]) after it last heard from its leader: no
    /// other leader can exist yet.
    pub fn serves_reads(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        let own_term_applied = m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term);
        m.current_leader == Some(self.id)
            && own_term_applied
            && self.acked_term.load(Ordering::Relaxed) == m.current_term
            && mono_ms().saturating_sub(self.acked_ms.load(Ordering::Relaxed)) < LEASE.as_millis() as u64
    }
}

/// Whether node `id` leads and a majority answered it within [`LEASE`] (a cluster of one is
/// its own majority).
fn leads_a_majority(m: &openraft::RaftMetrics<u64, openraft::BasicNode>, id: u64) -> bool {
    if m.current_leader != Some(id) {
        return false;
    }
    let alone = m.membership_config.membership().voter_ids().all(|v| v == id);
    alone || m.millis_since_quorum_ack.is_some_and(|ms| ms < LEASE.as_millis() as u64)
}

/// The node a host's switch goes to among `live`: the highest hash of host and node.
pub fn choose(host: &str, live: &[u64]) -> Option<u64> {
    live.iter().copied().max_by_key(|n| mix(plexus_api::ids::fnv1a(&format!("{host}/{n}"))))
}

/// A finalizer (splitmix64's) over FNV-1a: keys that differ only in their last byte, as
/// `host/1`, `host/2`, `host/3` do, get FNV hashes whose high bits move together, and the
/// highest of them went to node 1 for half of all hosts. Mixed, each node gets its share.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// On the leader, keeps the assignment of switches to live nodes in the replicated state.
pub fn spawn_assigner(id: u64, raft: Raft, state: SharedState, http: reqwest::Client) {
    tokio::spawn(async move {
        let mut last_ok: HashMap<u64, Instant> = HashMap::new();
        let mut leading = false;
        // The last other node seen leading: when this node takes over, most likely the one
        // that died.
        let mut previous_leader = None;
        let mut tick = tokio::time::interval(CHECK_EVERY);
        let mut ticks: u64 = 0;
        loop {
            tick.tick().await;
            let (is_leader, voters) = {
                let m = raft.metrics();
                let m = m.borrow();
                if m.current_leader.is_some_and(|l| l != id) {
                    previous_leader = m.current_leader;
                }
                let mc = m.membership_config.membership();
                let voters: Vec<(u64, String)> = mc.voter_ids().filter_map(|v| mc.get_node(&v).map(|n| (v, n.addr.clone()))).collect();
                (leads_a_majority(&m, id), voters)
            };
            if !is_leader {
                leading = false;
                // Followers keep a connection to each other warm: whichever of them leads
                // next must reach the others within a heartbeat interval from its first
                // append, and a fresh TLS handshake on a loaded machine may not fit in it.
                ticks += 1;
                if ticks.is_multiple_of(WARM_EVERY) {
                    for (_, addr) in voters.iter().filter(|(v, _)| *v != id) {
                        let (url, http) = (format!("https://{addr}/healthz"), http.clone());
                        tokio::spawn(async move { probe(&http, &url, WARM_DEADLINE).await });
                    }
                }
                continue;
            }
            if !leading {
                // A new leader gives every node the benefit of the doubt before it moves
                // anything: no storm after an election. Not the previous leader, whose
                // silence is what made this election: it must answer the first probe, or its
                // switches move at once rather than 1.5 s later.
                leading = true;
                last_ok = voters.iter().filter(|(v, _)| Some(*v) != previous_leader).map(|(v, _)| (*v, Instant::now())).collect();
                if let Some(p) = previous_leader {
                    tracing::info!(previous_leader = p, "leading; the previous leader must answer its first probe to keep its switches");
                }
            }
            let mut probes = tokio::task::JoinSet::new();
            for (v, addr) in voters.iter().filter(|(v, _)| *v != id) {
                let (v, url, http) = (*v, format!("https://{addr}/healthz"), http.clone());
                probes.spawn(async move { (v, probe(&http, &url, PROBE_DEADLINE).await) });
            }
            while let Some(Ok((v, found))) = probes.join_next().await {
                match found {
                    Probe::Alive => {
                        last_ok.insert(v, Instant::now());
                    }
                    Probe::Refused => {
                        if last_ok.remove(&v).is_some() {
                            tracing::info!(node = v, "nothing listens at the node's address: its switches move now");
                        }
                    }
                    Probe::Silent => {}
                }
            }
            let live: Vec<u64> = voters.iter().map(|(v, _)| *v).filter(|v| *v == id || last_ok.get(v).is_some_and(|t| t.elapsed() < DEAD_AFTER)).collect();
            let (desired, current) = {
                let st = state.read().await;
                let desired: BTreeMap<String, u64> = st.model.hosts.keys().filter_map(|h| Some((h.clone(), choose(h, &live)?))).collect();
                let current: BTreeMap<String, u64> = st.model.masters.iter().map(|(h, (n, _))| (h.clone(), *n)).collect();
                (desired, current)
            };
            if desired == current {
                continue;
            }
            let moved: Vec<String> = desired.iter().filter(|(h, n)| current.get(*h) != Some(n)).map(|(h, n)| format!("{h}→{n}")).collect();
            tracing::info!(?live, moved = %moved.join(" "), "assigning switch masters");
            match tokio::time::timeout(Duration::from_secs(2), raft.client_write(Command::SetMasters { masters: desired })).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot record switch masters"),
                Err(_) => tracing::warn!("recording switch masters timed out"),
            }
        }
    });
}

// openraft's `Raft` has no `Debug`: show what identifies this value.
impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("id", &self.id).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::choose;

    /// A thousand hosts over three nodes: each node masters about a third, and a node's death
    /// moves its share only, spread over the others.
    #[test]
    fn switches_spread_evenly_and_only_the_dead_nodes_move() {
        let hosts: Vec<String> = (0..1000).map(|i| format!("em{i:05}")).collect();
        let all: Vec<u64> = hosts.iter().map(|h| choose(h, &[1, 2, 3]).unwrap()).collect();
        for n in 1..=3 {
            let mine = all.iter().filter(|m| **m == n).count();
            assert!((300..=367).contains(&mine), "node {n} masters {mine} of 1000");
        }
        let after: Vec<u64> = hosts.iter().map(|h| choose(h, &[2, 3]).unwrap()).collect();
        let moved: Vec<(u64, u64)> = all.iter().zip(&after).filter(|(a, b)| a != b).map(|(a, b)| (*a, *b)).collect();
        assert!(moved.iter().all(|(from, _)| *from == 1), "only node 1's switches move");
        let to2 = moved.iter().filter(|(_, to)| *to == 2).count();
        assert!(to2 * 3 > moved.len() && to2 * 3 < moved.len() * 2, "node 1's switches split between 2 and 3: {to2} of {}", moved.len());
        assert_eq!(choose("h1", &[]), None);
    }
}
