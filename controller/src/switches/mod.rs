//! The switch manager: every switch that connects is identified by its datapath id, its
//! ports are learned from port description and port status, and its flows are kept equal to
//! what the compiler makes of the model — on connect, on every model change, on every port
//! change, and on a periodic audit that undoes tampering.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexus_ovs::openflow::{Connection, ConnectionOptions, Events, Listener, Message, PortReason, Stream};
use tokio::sync::watch;
use tokio_rustls::rustls::pki_types::CertificateDer;

use crate::flows::DesiredFlows;
use crate::held::{Held, HeldStats};
use crate::mastership::Lease;
use crate::store::SharedState;
use identity::names_host;
use pass::Scope;
use plexus_ovs::openflow::Role;
use ports::PortIndex;

mod identity;
mod pass;
mod ports;
mod status;

pub use status::{PassStats, SwitchStatus};

/// Names of the flow-based tunnel ports the agent creates, one per encapsulation.
pub const TUNNEL_PORTS: [&str; 2] = [plexus_api::Encap::ALL[0].port_name(), plexus_api::Encap::ALL[1].port_name()];

pub use plexus_api::ids::port_name;

/// Packet-in reasons: a table-miss flow's controller action, another flow's.
const OFPR_NO_MATCH: u8 = 0;
const OFPR_ACTION: u8 = 1;

/// Changes arriving during one pass that make a burst.
const BURST: u64 = 3;
/// How long a pass in a burst waits for more of it.
const BURST_WAIT: Duration = Duration::from_millis(50);

/// What the next pass of a session looks at.
fn scope(full: bool, ports_changed: bool) -> Scope {
    match (full, ports_changed) {
        (true, _) => Scope::Full,
        (false, true) => Scope::Ports,
        (false, false) => Scope::Model,
    }
}

/// What a session does with its switch, as its role settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acting {
    /// Program it: this node is its master (or there is no cluster).
    Program,
    /// Program it from scratch: this node just became its master.
    Promoted,
    /// Program nothing for now, but keep what it was given: this node is its master, but its
    /// lease lapsed.
    Paused,
    /// Program nothing: another node is its master.
    Not,
}

/// Keeps switches in their desired state.
#[derive(Debug)]
pub struct SwitchManager {
    /// With TLS, every switch must present a certificate naming the host its datapath id
    /// belongs to.
    tls: bool,
    state: SharedState,
    revisions: watch::Receiver<u64>,
    audit_every: Duration,
    status: Mutex<BTreeMap<String, SwitchStatus>>,
    lease: Option<Arc<Lease>>,
    /// Held packets of the sessions that ended (a live session's are in its status).
    held_ended: Mutex<HeldStats>,
    /// The live session of each switch (by datapath id), numbered so that a session that
    /// ends removes only itself, not a newer one of the same switch.
    live: Mutex<HashMap<String, (u64, Connection)>>,
    sessions: std::sync::atomic::AtomicU64,
}

pub use plexus_pki::host_cert_name;

/// Every how many audits one reads the switch's flows back whole (the others compare counts).
const FULL_AUDIT_EVERY: u64 = 6;

/// How long a peer has to complete the OpenFlow handshake (hello, features).
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
/// Handshakes that may be pending at once.
const MAX_HANDSHAKES: usize = 256;

/// How often a node re-checks whether it should master its switches.
const ROLE_CHECK: Duration = Duration::from_millis(200);
/// How long a role request may take.
const ROLE_WAIT: Duration = Duration::from_millis(500);

impl SwitchManager {
    /// Starts accepting switches on `listener`. With a `lease` (a clustered node) it programs
    /// only the switches the cluster assigned to it, as OpenFlow master, and only while the
    /// lease holds; without one it programs every switch that connects.
    ///
    /// With `tls`, switches connect over TLS (`ssl:` targets) with a certificate of the
    /// cluster's CA, and one is accepted only if its certificate names the host that its
    /// datapath id belongs to ([`host_cert_name`]).
    pub fn spawn(
        listener: Listener,
        state: SharedState,
        revisions: watch::Receiver<u64>,
        audit_every: Duration,
        lease: Option<Arc<Lease>>,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> Arc<SwitchManager> {
        let m = Arc::new(SwitchManager {
            tls: tls.is_some(),
            state,
            revisions,
            audit_every,
            status: Mutex::new(BTreeMap::new()),
            lease,
            held_ended: Mutex::default(),
            live: Mutex::default(),
            sessions: Default::default(),
        });
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let mm = m.clone();
        tokio::spawn(async move {
            // Each handshake runs in a task of its own with a deadline, so a peer that
            // connects and says nothing delays nobody; at most MAX_HANDSHAKES are pending, so a
            // flood of them costs bounded memory (the excess is closed at once).
            let pending = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
            loop {
                let (stream, peer) = match listener.accept_stream().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting an OpenFlow connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "too many OpenFlow handshakes pending; connection closed");
                    continue;
                };
                let (mm, acceptor) = (mm.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let (stream, cert) = match (acceptor, stream) {
                        (None, s) => (s, None),
                        (Some(a), Stream::Tcp(tcp)) => match tokio::time::timeout(HANDSHAKE_DEADLINE, a.accept(tcp)).await {
                            Ok(Ok(tls)) => {
                                let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.clone().into_owned());
                                (Stream::Other(Box::new(tls)), cert)
                            }
                            Ok(Err(e)) => return tracing::warn!(%peer, error = %e, "refused a switch's TLS handshake"),
                            Err(_) => return tracing::warn!(%peer, "a switch did not finish its TLS handshake in time"),
                        },
                        (Some(_), _) => return tracing::warn!(%peer, "TLS is required and this listener is not TCP"),
                    };
                    let opts = ConnectionOptions { handshake_timeout: HANDSHAKE_DEADLINE, ..ConnectionOptions::default() };
                    let res = Connection::handshake(stream, opts).await;
                    drop(permit);
                    match res {
                        Ok((conn, events)) => {
                            if mm.admits(&conn, cert.as_ref()).await {
                                mm.serve(conn, events).await
                            }
                        }
                        Err(e) => tracing::warn!(%peer, error = %e, "a peer failed the OpenFlow handshake"),
                    }
                });
            }
        });
        m
    }

    /// Whether a switch that completed the handshake may be served: without TLS, any; with
    /// TLS, one whose certificate names the host registered with its datapath id. A refused
    /// switch is recorded (not programmed) and its connection closed.
    async fn admits(&self, conn: &Connection, cert: Option<&CertificateDer<'static>>) -> bool {
        if !self.tls {
            return true;
        }
        let dpid = format!("{:016x}", conn.datapath_id());
        let host = self.state.read().await.model.host_by_datapath(&dpid).map(|h| h.spec.name.clone());
        let known = host.is_some();
        let verdict = match (host, cert) {
            (None, _) => Err(format!("no registered host has datapath id {dpid}")),
            (Some(_), None) => Err("no client certificate".to_string()),
            (Some(h), Some(c)) => names_host(c, &h).map_err(|e| format!("its certificate does not name host {h}: {e}")),
        };
        match verdict {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(%dpid, reason = %why, "refused a switch");
                // Recorded only for a registered host's datapath id: a peer cycling through
                // made-up ids must not grow the status table. The real switch's session, if
                // it has one, is untouched: an impostor refused does not disconnect it.
                if known {
                    self.update(&dpid, |s| s.last_error = Some(format!("refused a connection claiming this switch: {why}")));
                }
                false
            }
        }
    }

    /// Every switch seen, by datapath id.
    pub fn status(&self) -> BTreeMap<String, SwitchStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, dpid: &str, f: impl FnOnce(&mut SwitchStatus)) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let e = s.entry(dpid.to_string()).or_insert_with(|| SwitchStatus { datapath_id: dpid.to_string(), ..Default::default() });
        f(e);
    }

    /// Records this node's role on a switch; a no-op when unchanged, as it mostly is on the
    /// 200 ms re-check. Returns whether it changed.
    fn set_role(&self, dpid: &str, role: &str) -> bool {
        let mut changed = false;
        self.update(dpid, |s| {
            if s.role != role {
                s.role = role.to_string();
                changed = true;
            }
        });
        changed
    }

    /// The switches connected to this node now (master or slave alike: either may read
    /// statistics), by datapath id.
    pub fn connections(&self) -> Vec<(String, Connection)> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(d, (_, c))| (d.clone(), c.clone())).collect()
    }

    async fn serve(&self, conn: Connection, events: Events) {
        let dpid = format!("{:016x}", conn.datapath_id());
        let session = self.sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.live.lock().unwrap_or_else(|e| e.into_inner()).insert(dpid.clone(), (session, conn.clone()));
        self.serve_session(&dpid, conn, events).await;
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.get(&dpid).is_some_and(|(s, _)| *s == session) {
            live.remove(&dpid);
        }
    }

    async fn serve_session(&self, dpid: &str, conn: Connection, mut events: Events) {
        let dpid = dpid.to_string();
        tracing::info!(%dpid, "switch connected");
        let clustered = self.lease.is_some();
        self.update(&dpid, |s| {
            s.connected = true;
            s.sessions += 1;
            s.held = HeldStats::default();
            s.packet_ins_dropped = 0;
            if !clustered {
                s.role = "equal".into();
            }
        });
        let mut ports: HashMap<String, u32> = match conn.port_desc().await {
            Ok(p) => p.into_iter().map(|p| (p.name, p.port_no)).collect(),
            Err(e) => {
                self.update(&dpid, |s| {
                    s.connected = false;
                    s.last_error = Some(e.to_string());
                });
                return;
            }
        };
        let mut revisions = self.revisions.clone();
        // Switches that connected together (a node's restart, a thousand at once) would
        // otherwise audit together, every node's full read-backs landing in the same second:
        // each switch's audits are offset by a share of the period its datapath id picks.
        let offset = Duration::from_millis(plexus_api::ids::fnv1a(&dpid) % (self.audit_every.as_millis() as u64).max(1));
        let mut audit = tokio::time::interval_at(tokio::time::Instant::now() + self.audit_every + offset, self.audit_every);
        // A node that fell behind audits once, not once per period missed.
        audit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // What the switch was last given; `None` makes the next pass a full one.
        let mut desired: Option<DesiredFlows> = None;
        let mut index = PortIndex::default();
        let mut full = true;
        let port_event = |ports: &mut HashMap<String, u32>, ev: plexus_ovs::openflow::Event| {
            if let Message::PortStatus(ps) = ev.message {
                if ps.reason == PortReason::Delete {
                    ports.remove(&ps.port.name);
                } else {
                    ports.insert(ps.port.name, ps.port.port_no);
                }
            }
        };
        let mut role_check = tokio::time::interval(ROLE_CHECK);
        // The generation this node masters the switch at, if it does.
        let mut mastered: Option<u64> = None;
        let mut need_pass = true;
        // Whether a port came, went or was renumbered since the last pass.
        let mut ports_changed = true;
        // Only this session reads the switch's packet-ins; a second take cannot happen.
        let mut packet_ins = conn.take_packet_ins();
        let mut audits: u64 = 0;
        let mut held = Held::default();
        // When the oldest change not yet on the switch arrived (for the sync-lag histogram).
        let mut pending_since: Option<Instant> = None;
        loop {
            let role = self.take_role(&conn, &dpid, &mut mastered).await;
            let acting = matches!(role, Acting::Program | Acting::Promoted);
            if role == Acting::Promoted {
                // A new master trusts nothing: it reads the switch back, and changes only
                // what differs.
                full = true;
                need_pass = true;
                desired = None;
            }
            // A revision is marked seen only by the pass that covers it (or when this node
            // does not program the switch, which on promotion gets a full pass anyway): a
            // wake-up for anything else (a packet-in, a role check) must not swallow a change
            // that arrived meanwhile, or the switch would wait for the next event to get it.
            let mut started_at = *revisions.borrow();
            if role == Acting::Not {
                revisions.borrow_and_update();
                pending_since = None; // another node syncs it
            }
            if acting && need_pass {
                started_at = *revisions.borrow_and_update();
                let done = self.pass(&conn, &dpid, &ports, &mut desired, &mut index, scope(full, ports_changed)).await;
                full = false;
                // A pass that did not get as far as the switch (no tunnel port yet) has not
                // seen the ports: the next one must still look at them.
                ports_changed &= done.is_none();
                // Sync lag: from the first change this pass covers to the switch holding it.
                if let (Some(t), Some(_)) = (pending_since.take_if(|_| done.is_some()), done) {
                    crate::metrics::SYNC.observe(t.elapsed());
                }
                if done == Some(true) {
                    let out = held.release(Instant::now());
                    if !out.is_empty() {
                        tracing::debug!(%dpid, packets = out.len(), "replaying held packets after a flow change");
                        self.replay(&conn, out).await;
                        let stats = held.stats;
                        self.update(&dpid, |s| s.held = stats);
                    }
                }
            }
            // A paused master keeps its pass for when the lease holds again.
            need_pass &= role == Acting::Paused;
            // Changes that arrived while the pass ran. Several mean a burst (a batch being
            // created): waiting a little lets more of it join the next pass, so a batch costs
            // a few passes, not one each. A lone change, or two in a row, goes out at once.
            if revisions.borrow().saturating_sub(started_at) >= BURST {
                tokio::time::sleep(BURST_WAIT).await;
            }
            tokio::select! {
                r = revisions.changed() => if r.is_err() { break } else {
                    need_pass = true;
                    pending_since.get_or_insert_with(Instant::now);
                },
                _ = audit.tick() => {
                    // Most audits ask the switch only how many flows it holds (reading 10,000
                    // flows back every 10 s stalls a userspace datapath's forwarding thread
                    // for a noticeable while); every FULL_AUDIT_EVERY-th, or when the count is
                    // off, reads them all back and undoes whatever differs.
                    audits += 1;
                    let count_ok = !audits.is_multiple_of(FULL_AUDIT_EVERY) && match (&desired, mastered.is_some() || !clustered) {
                        (Some(d), true) => conn.aggregate(Default::default()).await.is_ok_and(|a| a.flow_count as usize == d.len()),
                        _ => false,
                    };
                    if !count_ok {
                        full = true;
                        need_pass = true;
                    }
                }
                // Outside a cluster the role never changes: nothing to re-check.
                _ = role_check.tick(), if clustered => {}
                ev = events.recv() => match ev {
                    None => break,
                    Some(ev) => { port_event(&mut ports, ev); (need_pass, ports_changed) = (true, true) }
                },
                Some(pi) = async { packet_ins.as_mut()?.recv().await }, if packet_ins.is_some() => {
                    // A slave is not sent packet-ins; one that arrives anyway (a role change
                    // in flight) is the new master's to replay. Only the hold flows' own
                    // packet-ins are held (reason "action", or "no match" for the table-miss
                    // ones, as OVS reports a priority-0 catch-all); a TTL that ran out is a drop.
                    if (mastered.is_some() || !clustered) && matches!(pi.reason, OFPR_NO_MATCH | OFPR_ACTION) {
                        let (now, table) = (Instant::now(), pi.table_id);
                        match held.offer(pi, now) {
                            Some(out) => {
                                tracing::debug!(%dpid, table, "a packet missed flows just installed: replayed at once");
                                self.replay(&conn, vec![out]).await;
                            }
                            None => tracing::debug!(%dpid, table, waiting = held.len(), "holding a packet for its flows"),
                        }
                        let (stats, dropped) = (held.stats, conn.packet_ins_dropped());
                        self.update(&dpid, |s| {
                            s.held = stats;
                            s.packet_ins_dropped = dropped;
                        });
                    }
                }
            }
            while let Ok(ev) = events.try_recv() {
                port_event(&mut ports, ev);
                (need_pass, ports_changed) = (true, true);
            }
        }
        self.held_ended.lock().unwrap_or_else(|e| e.into_inner()).add(&held.stats);
        let why = conn.closed_reason().unwrap_or_else(|| "closed".into());
        tracing::info!(%dpid, reason = %why, "switch disconnected");
        self.update(&dpid, |s| s.connected = false);
    }

    /// Settles this node's role on the switch: master when the cluster assigned the switch to
    /// this node and the lease holds, slave otherwise.
    ///
    /// A lapsed lease pauses a master instead of demoting it: it stops programming at once
    /// (the lease is there so that a node cut off from the majority stops before anybody
    /// replaces it), but keeps its generation and what it gave the switch. When a leader dies,
    /// every follower's lease lapses until the election is over; stepping down from every
    /// switch and taking each back with a full read-back would keep the survivors busy just
    /// when the dead node's switches need them. If the switch moved meanwhile, the newer
    /// generation's master made this node a slave on the switch, and the replicated
    /// assignment says so once the lease holds again: then it steps down.
    async fn take_role(&self, conn: &Connection, dpid: &str, mastered: &mut Option<u64>) -> Acting {
        let Some(lease) = &self.lease else { return Acting::Program };
        let assigned = {
            let model = self.state.read().await.model.clone();
            model.host_by_datapath(dpid).and_then(|h| model.masters.get(&h.spec.name).copied())
        };
        let mine = assigned.filter(|(node, _)| *node == lease.id()).map(|(_, g)| g);
        match (mine, lease.holds(), *mastered) {
            (Some(g), true, Some(m)) if g == m => {
                if self.set_role(dpid, &format!("master (generation {g})")) {
                    tracing::info!(%dpid, generation = g, "lease holds again: programming the switch");
                }
                Acting::Program
            }
            (Some(g), false, Some(m)) if g == m => {
                if self.set_role(dpid, &format!("paused (master at generation {g}; lease lapsed)")) {
                    tracing::info!(%dpid, generation = g, "lease lapsed: not programming the switch until it holds again");
                }
                Acting::Paused
            }
            (Some(g), true, _) => match tokio::time::timeout(ROLE_WAIT, conn.set_role(Role::Master, g))
                .await
                .unwrap_or(Err(plexus_ovs::openflow::OfError::Timeout("role request")))
            {
                Ok(_) => {
                    tracing::info!(%dpid, generation = g, "master of the switch");
                    *mastered = Some(g);
                    self.set_role(dpid, &format!("master (generation {g})"));
                    Acting::Promoted
                }
                Err(e) => {
                    // Most likely a newer generation is out there: that master wins.
                    tracing::warn!(%dpid, generation = g, error = %e, "the switch refused this node as master");
                    *mastered = None;
                    self.set_role(dpid, "slave");
                    Acting::Not
                }
            },
            (_, _, Some(m)) => {
                // Stop first, then tell the switch (which a cut-off node may not reach).
                tracing::info!(%dpid, "no longer master of the switch");
                *mastered = None;
                self.set_role(dpid, "slave");
                let g = assigned.map_or(m, |(_, g)| g.max(m));
                if let Ok(Err(e)) = tokio::time::timeout(ROLE_WAIT, conn.set_role(Role::Slave, g)).await {
                    tracing::debug!(%dpid, error = %e, "stepping down to slave");
                }
                Acting::Not
            }
            (_, _, None) => {
                self.set_role(dpid, "slave");
                Acting::Not
            }
        }
    }

    /// Sends held packets through the switch's pipeline again.
    async fn replay(&self, conn: &Connection, packets: Vec<plexus_ovs::openflow::PacketOut>) {
        for p in packets {
            // Fire and forget: a packet that still finds no flow comes back to be held, and
            // an error for one is no reason to stop the others.
            if let Err(e) = conn.send(&Message::PacketOut(p)).await {
                tracing::debug!(error = %e, "replaying a held packet");
                return;
            }
        }
    }
}

impl SwitchManager {
    /// What happened to held packets on every switch this node served, ended sessions and
    /// live ones.
    pub fn held_totals(&self) -> HeldStats {
        let mut t = *self.held_ended.lock().unwrap_or_else(|e| e.into_inner());
        for s in self.status().values().filter(|s| s.connected) {
            t.add(&s.held);
        }
        t
    }
}
