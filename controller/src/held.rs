//! Packets held for flows not yet installed. A table whose miss is [`Miss::Hold`] sends what it
//! cannot place to the controller (through the hold meter); the switch's session keeps those
//! packets here and sends them through the pipeline again (a packet-out to `OFPP_TABLE` with
//! the packet's own input port and tunnel metadata) after the next pass that changed the
//! switch's flows. So an ARP request or a first packet that raced its endpoint's flows is late
//! by one pass instead of lost to the sender's retry timer (a second for ARP and TCP).
//!
//! Everything here is bounded: how many packets and bytes wait, how long, and the record of
//! which were already tried. What cannot be placed after [`HOLD_FOR`] is dropped.
//!
//! [`Miss::Hold`]: crate::flows::pipeline::Miss::Hold

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use plexus_ovs::openflow::{Action, Field, PacketIn, PacketOut, OFPP_TABLE, OFP_NO_BUFFER};

/// How long a packet may wait for its flows before it is dropped.
pub const HOLD_FOR: Duration = Duration::from_secs(2);
/// Packets held per switch at most.
pub const MAX_PACKETS: usize = 512;
/// Bytes held per switch at most.
pub const MAX_BYTES: usize = 1 << 20;
/// Larger frames are not held (nothing in an overlay's MTU is this large).
pub const MAX_FRAME: usize = 9216;
/// A packet that arrives this soon after a pass that changed flows may have been sent to the
/// controller before those flows were in (packet-ins and the bundle's reply travel apart), so
/// it is tried again at once rather than held until the next change.
pub const LATE: Duration = Duration::from_millis(200);
/// Packets whose tries are remembered at most (beyond, the record starts afresh).
const MAX_TRIED: usize = 4 * MAX_PACKETS;

/// What happened to held packets, since the session started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct HeldStats {
    /// Packets the switch sent to be held (what passed its meter).
    pub received: u64,
    /// Packets sent through the pipeline again.
    pub reinjected: u64,
    /// Packets dropped after waiting [`HOLD_FOR`] for their flows.
    pub expired: u64,
    /// Packets dropped because the buffer was full or the frame too large.
    pub overflow: u64,
}

impl HeldStats {
    /// Adds another switch's or session's figures.
    pub fn add(&mut self, o: &HeldStats) {
        self.received += o.received;
        self.reinjected += o.reinjected;
        self.expired += o.expired;
        self.overflow += o.overflow;
    }
}

#[derive(Debug)]
struct Packet {
    first_seen: Instant,
    in_port: u32,
    tunnel: Vec<Action>,
    data: Vec<u8>,
}

/// One switch's held packets.
#[derive(Debug, Default)]
pub struct Held {
    waiting: VecDeque<(u64, Packet)>,
    bytes: usize,
    /// Packets already sent through the pipeline again, by a hash of their bytes: when they
    /// were first seen and after which pass, so a packet that misses again keeps its age and
    /// is not retried against the same flows.
    tried: HashMap<u64, (Instant, u64)>,
    /// Passes that changed flows, and when the last one ended.
    passes: u64,
    last_change: Option<Instant>,
    /// What happened so far.
    pub stats: HeldStats,
}

impl Held {
    /// Takes a packet-in from the switch: returns a packet-out to send at once if the packet
    /// may have missed flows that are in by now, else holds it (or drops it, counted).
    pub fn offer(&mut self, pi: PacketIn, now: Instant) -> Option<PacketOut> {
        self.stats.received += 1;
        self.expire_front(now);
        let Some(in_port) = pi.match_.get(Field::InPort).and_then(|f| u32::try_from(f.value).ok()) else {
            // OVS always says where a packet came from; a packet-in without it cannot be replayed.
            self.stats.overflow += 1;
            return None;
        };
        let hash = plexus_api::ids::fnv1a_bytes(&pi.data);
        // Old tries are forgotten only before a replay; one past its time is not this packet's.
        let tried = self.tried.get(&hash).copied().filter(|(t, _)| now.saturating_duration_since(*t) < HOLD_FOR);
        let (first_seen, tried_at) = tried.map_or((now, None), |(t, p)| (t, Some(p)));
        // Tunnel metadata the pipeline matches on: replayed as set-fields before the table.
        let tunnel: Vec<Action> = [Field::TunnelId, Field::TunIpv4Src]
            .into_iter()
            .filter_map(|f| pi.match_.get(f))
            .map(|mf| Action::SetField(plexus_ovs::openflow::MatchField::new(mf.field, mf.value)))
            .collect();
        let packet = Packet { first_seen, in_port, tunnel, data: pi.data };
        let late = self.last_change.is_some_and(|t| now.saturating_duration_since(t) < LATE);
        if late && tried_at != Some(self.passes) {
            return Some(self.replay(hash, packet));
        }
        if packet.data.len() > MAX_FRAME || self.waiting.len() >= MAX_PACKETS || self.bytes + packet.data.len() > MAX_BYTES {
            self.stats.overflow += 1;
            return None;
        }
        self.bytes += packet.data.len();
        self.waiting.push_back((hash, packet));
        None
    }

    /// After a pass that changed the switch's flows: every held packet, to send through the
    /// pipeline again.
    pub fn release(&mut self, now: Instant) -> Vec<PacketOut> {
        self.passes += 1;
        self.last_change = Some(now);
        self.expire(now);
        let waiting = std::mem::take(&mut self.waiting);
        self.bytes = 0;
        waiting.into_iter().map(|(hash, p)| self.replay(hash, p)).collect()
    }

    /// Packets waiting now.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether no packet waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    fn replay(&mut self, hash: u64, p: Packet) -> PacketOut {
        if self.tried.len() >= MAX_TRIED {
            self.tried.clear();
        }
        self.tried.insert(hash, (p.first_seen, self.passes));
        self.stats.reinjected += 1;
        let mut actions = p.tunnel;
        actions.push(Action::output(OFPP_TABLE));
        PacketOut { buffer_id: OFP_NO_BUFFER, in_port: p.in_port, actions, data: p.data }
    }

    /// Drops the oldest held packets whose time is up: cheap, for every packet-in.
    fn expire_front(&mut self, now: Instant) {
        while self.waiting.front().is_some_and(|(_, p)| now.saturating_duration_since(p.first_seen) >= HOLD_FOR) {
            if let Some((_, p)) = self.waiting.pop_front() {
                self.bytes -= p.data.len();
                self.stats.expired += 1;
            }
        }
    }

    /// Drops every held packet whose time is up and forgets old tries: before a replay. Held
    /// packets are in arrival order, but one first seen long ago may have come back behind
    /// newer ones, so this looks at all of them.
    fn expire(&mut self, now: Instant) {
        let old = |t: Instant| now.saturating_duration_since(t) >= HOLD_FOR;
        let before = self.waiting.len();
        self.waiting.retain(|(_, p)| !old(p.first_seen));
        let gone = before - self.waiting.len();
        if gone > 0 {
            self.stats.expired += gone as u64;
            self.bytes = self.waiting.iter().map(|(_, p)| p.data.len()).sum();
        }
        self.tried.retain(|_, (t, _)| !old(*t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_ovs::openflow::Match;

    fn pi(port: u32, data: &[u8]) -> PacketIn {
        PacketIn {
            buffer_id: OFP_NO_BUFFER,
            total_len: data.len() as u16,
            reason: 1,
            table_id: 0,
            cookie: 0,
            match_: Match::new().in_port(port),
            data: data.to_vec(),
        }
    }

    #[test]
    fn held_packets_are_replayed_after_a_change_from_their_own_port() {
        let mut h = Held::default();
        let t = Instant::now();
        assert!(h.offer(pi(5, b"arp who-has"), t).is_none(), "nothing changed yet: held");
        let out = h.release(t + Duration::from_millis(10));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].in_port, out[0].actions.clone(), out[0].data.as_slice()), (5, vec![Action::output(OFPP_TABLE)], &b"arp who-has"[..]));
        assert!(h.is_empty());
    }

    #[test]
    fn a_tunnelled_packet_is_replayed_with_its_tunnel_id() {
        let mut h = Held::default();
        let t = Instant::now();
        let mut p = pi(1, b"x");
        p.match_ = p.match_.tunnel_id(7);
        h.offer(p, t);
        let out = h.release(t);
        assert_eq!(out[0].actions, vec![Action::set_field(Field::TunnelId, 7u64), Action::output(OFPP_TABLE)]);
    }

    #[test]
    fn a_late_packet_is_tried_once_at_once_then_held_until_the_next_change() {
        let mut h = Held::default();
        let t = Instant::now();
        h.release(t);
        assert!(h.offer(pi(5, b"a"), t + Duration::from_millis(5)).is_some(), "arrived just after a change: tried at once");
        assert!(h.offer(pi(5, b"a"), t + Duration::from_millis(6)).is_none(), "came back against the same flows: held");
        assert_eq!(h.release(t + Duration::from_millis(50)).len(), 1);
        assert!(h.offer(pi(5, b"b"), t + LATE + Duration::from_millis(60)).is_none(), "long after the change: held");
    }

    #[test]
    fn a_packet_that_keeps_missing_is_dropped_after_its_time_counting_from_its_first_miss() {
        let mut h = Held::default();
        let t = Instant::now();
        h.offer(pi(5, b"lost"), t);
        // Replayed on each change, it misses again each time and comes back.
        for i in 1..4 {
            let now = t + Duration::from_millis(500 * i);
            assert_eq!(h.release(now).len(), 1);
            h.offer(pi(5, b"lost"), now + Duration::from_millis(1));
        }
        assert_eq!(h.release(t + HOLD_FOR).len(), 0, "two seconds after its first miss it is gone");
        assert_eq!(h.stats.expired, 1);
    }

    #[test]
    fn the_buffer_is_bounded() {
        let mut h = Held::default();
        let t = Instant::now();
        for i in 0..MAX_PACKETS + 10 {
            h.offer(pi(5, &(i as u64).to_be_bytes()), t);
        }
        assert_eq!(h.len(), MAX_PACKETS);
        assert_eq!(h.stats.overflow, 10);
        h.offer(pi(5, &vec![0; MAX_FRAME + 1]), t);
        assert_eq!(h.stats.overflow, 11, "a jumbo frame is not held");
        let mut p = pi(5, b"?");
        p.match_ = Match::new();
        assert!(h.offer(p, t).is_none());
        assert_eq!(h.stats.overflow, 12, "no input port: cannot be replayed");
    }
}
