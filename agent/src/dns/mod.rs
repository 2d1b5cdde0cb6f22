//! DNS for containers: the agent answers queries its containers send to their network's
//! gateway. The switch sends each such query up (`controller(id=53)`, installed by the
//! controller's routing feature) over `br-int`'s management socket, marked with the network's
//! VNI; the agent answers from the names the controller computes for this host
//! (`GET /v1/hosts/{name}/names`, long-polled, so a new endpoint's name is known here as soon
//! as the cluster applied it), and sends the answer straight back out of the container's port
//! as if from the gateway. Names outside Plexus go to the host's resolvers.
//!
//! Bounded everywhere: the packet-in queue (the connection's), the forwards in flight
//! ([`MAX_FORWARDS`]), the time an upstream gets ([`UPSTREAM_TIMEOUT`]).

pub mod frame;
pub mod table;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use plexus_api::names::DNS_CONTROLLER_ID;
use plexus_api::Client;
use plexus_ovs::openflow::{receive_packet_ins, Action, Connection, ConnectionOptions, Field, Message, PacketIn, PacketOut, OFPP_CONTROLLER, OFP_NO_BUFFER};
use tokio::sync::Semaphore;

use table::{Resolution, Table};
use wire::{Query, Rcode, WireError};

/// Forwards to upstream resolvers in flight at most; a query beyond gets SERVFAIL.
pub const MAX_FORWARDS: usize = 256;
/// How long one upstream resolver gets to answer before the next is tried.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest answer sent back in one frame (what fits an overlay's MTU with room to spare);
/// a larger upstream answer goes back truncated.
const MAX_ANSWER: usize = 1200;

/// The responder's settings.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// This host's name (whose names to poll).
    pub host: String,
    /// `br-int`'s management socket.
    pub mgmt: PathBuf,
    /// Where names outside Plexus are asked, in order.
    pub upstreams: Vec<SocketAddr>,
}

/// Queries by outcome, since the agent started.
pub static ANSWERED: AtomicU64 = AtomicU64::new(0);
/// See [`ANSWERED`].
pub static NXDOMAIN: AtomicU64 = AtomicU64::new(0);
/// See [`ANSWERED`].
pub static FORWARDED: AtomicU64 = AtomicU64::new(0);
/// See [`ANSWERED`]: upstreams that did not answer, forwards over the bound.
pub static FAILED: AtomicU64 = AtomicU64::new(0);
/// See [`ANSWERED`]: what was not a query it reads, or came from a network it does not serve.
pub static REFUSED: AtomicU64 = AtomicU64::new(0);

/// The responder's counters in Prometheus' text format.
pub fn metrics() -> String {
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    format!(
        "# HELP plexus_agent_dns_queries_total DNS queries from containers by outcome.\n# TYPE plexus_agent_dns_queries_total counter\n\
         plexus_agent_dns_queries_total{{outcome=\"answered\"}} {}\nplexus_agent_dns_queries_total{{outcome=\"nxdomain\"}} {}\n\
         plexus_agent_dns_queries_total{{outcome=\"forwarded\"}} {}\nplexus_agent_dns_queries_total{{outcome=\"failed\"}} {}\n\
         plexus_agent_dns_queries_total{{outcome=\"refused\"}} {}\n",
        g(&ANSWERED),
        g(&NXDOMAIN),
        g(&FORWARDED),
        g(&FAILED),
        g(&REFUSED)
    )
}

/// The nameservers of a `resolv.conf` text, on port 53.
pub fn resolv_conf_upstreams(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then(|| w.next()?.parse::<std::net::IpAddr>().ok()).flatten()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// What a container's `resolv.conf` holds to ask the responder: its gateway, and its network
/// as the search domain (so `NAME` and `NAME.NETWORK` both work in every resolver library).
pub fn resolv_conf(gateway: std::net::Ipv4Addr, network: &str) -> String {
    format!("nameserver {gateway}\nsearch {network}\noptions ndots:1 timeout:1 attempts:3\n")
}

type Shared = Arc<RwLock<Arc<Table>>>;

/// Runs the responder until the process ends: keeps the names current and a session with the
/// switch open (reopened when the switch restarts or `br-int` is remade).
pub async fn run(api: Client, cfg: DnsConfig) {
    let table: Shared = Arc::default();
    tokio::spawn(poll_names(api, cfg.host.clone(), table.clone()));
    let cfg = Arc::new(cfg);
    loop {
        match session(&cfg, &table).await {
            Ok(reason) => tracing::warn!(%reason, "the DNS responder's switch session closed; reopening"),
            Err(e) => tracing::debug!(error = %e, mgmt = %cfg.mgmt.display(), "cannot open the DNS responder's switch session yet"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn poll_names(api: Client, host: String, table: Shared) {
    let mut known: Option<String> = None;
    loop {
        match api.host_names(&host, known.as_deref(), 25).await {
            Ok(h) => {
                if known.as_deref() != Some(h.digest.as_str()) {
                    let t = Table::new(&h);
                    tracing::debug!(zones = h.zones.len(), names = t.len(), "DNS names updated");
                    known = Some(h.digest.clone());
                    *table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(t);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot fetch this host's DNS names yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One session on the management socket; returns why it closed.
async fn session(cfg: &Arc<DnsConfig>, table: &Shared) -> Result<String, plexus_ovs::openflow::OfError> {
    let (conn, mut events) = Connection::connect_unix(&cfg.mgmt, ConnectionOptions::default()).await?;
    // Nothing else is asked for; what comes anyway (an error for one of the messages above)
    // is worth a line in the log.
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            tracing::warn!(message = ?ev.message, "unexpected message on the DNS responder's switch session");
        }
    });
    for m in receive_packet_ins(DNS_CONTROLLER_ID) {
        conn.send(&m).await?;
    }
    conn.barrier().await?;
    let Some(mut packet_ins) = conn.take_packet_ins() else { return Ok("packet-ins already taken".into()) };
    tracing::info!(mgmt = %cfg.mgmt.display(), upstreams = ?cfg.upstreams, "answering containers' DNS");
    let forwards = Arc::new(Semaphore::new(MAX_FORWARDS));
    loop {
        tokio::select! {
            pi = packet_ins.recv() => match pi {
                Some(pi) => handle(&conn, cfg, table, &forwards, pi).await,
                None => return Ok("the switch stopped sending".into()),
            },
            reason = conn.closed() => return Ok(reason),
        }
    }
}

/// Where an answer goes: the port the query came in on, and the query's frame to turn around.
struct Asker {
    in_port: u32,
    data: Vec<u8>,
}

async fn send_answer(conn: &Connection, asker: &Asker, payload: &[u8]) {
    let Some(q) = frame::parse(&asker.data) else { return };
    let po = PacketOut { buffer_id: OFP_NO_BUFFER, in_port: OFPP_CONTROLLER, actions: vec![Action::output(asker.in_port)], data: frame::reply(&q, payload) };
    if let Err(e) = conn.send(&Message::PacketOut(po)).await {
        tracing::debug!(error = %e, "cannot send a DNS answer");
    }
}

async fn handle(conn: &Connection, cfg: &Arc<DnsConfig>, table: &Shared, forwards: &Arc<Semaphore>, pi: PacketIn) {
    tracing::trace!(bytes = pi.data.len(), "DNS query from the switch");
    let field = |f: Field| pi.match_.get(f).map(|m| m.value as u32);
    let (Some(in_port), Some(vni)) = (field(Field::InPort), field(Field::Reg(0))) else {
        tracing::debug!(fields = ?pi.match_.fields(), "a DNS packet-in without its port or network");
        REFUSED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let table = table.read().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(zone) = table.zone(vni) else {
        // The names of a network new on this host may be a poll behind its flows: no answer
        // rather than a wrong one; the client retries.
        tracing::debug!(vni, "a DNS query from a network this host's names do not have (yet)");
        REFUSED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let asker = Asker { in_port, data: pi.data };
    let Some(udp) = frame::parse(&asker.data) else {
        REFUSED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let payload = udp.payload.to_vec();
    if udp.dst_ip != zone.gateway {
        REFUSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let q = match wire::parse_query(&payload) {
        Ok(q) => q,
        Err(e) => {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            let rcode = match e {
                WireError::Response => return,
                WireError::Unsupported(_) => Rcode::NotImp,
                WireError::Truncated | WireError::BadName(_) => Rcode::FormErr,
            };
            if let Some(a) = wire::bare_error(&payload, rcode) {
                send_answer(conn, &asker, &a).await;
            }
            return;
        }
    };
    match table.resolve(zone, &q) {
        Resolution::Local(rcode, data) => {
            let counter = if rcode == Rcode::NxDomain { &NXDOMAIN } else { &ANSWERED };
            counter.fetch_add(1, Ordering::Relaxed);
            send_answer(conn, &asker, &wire::answer(&q, rcode, &data)).await;
        }
        Resolution::Forward => {
            let Ok(permit) = forwards.clone().try_acquire_owned() else {
                FAILED.fetch_add(1, Ordering::Relaxed);
                send_answer(conn, &asker, &wire::answer(&q, Rcode::ServFail, &[])).await;
                return;
            };
            let (conn, cfg) = (conn.clone(), cfg.clone());
            tokio::spawn(async move {
                let answer = forward(&cfg.upstreams, &q, &payload).await;
                drop(permit);
                send_answer(&conn, &asker, &answer).await;
            });
        }
    }
}

/// Asks each upstream in turn; the first answer that is one (same id, a response) is
/// relayed, or SERVFAIL when none answers.
async fn forward(upstreams: &[SocketAddr], q: &Query, payload: &[u8]) -> Vec<u8> {
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
        let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else { continue };
        if sock.connect(up).await.is_err() || sock.send(payload).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
        // Skips whatever is not the answer (a late answer to someone else cannot arrive on
        // this fresh socket, but a forged one could).
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            let a = &buf[..n];
            if n >= 12 && wire::id_of(a) == Some(q.id) && a[2] & 0x80 != 0 {
                FORWARDED.fetch_add(1, Ordering::Relaxed);
                return if n > MAX_ANSWER { wire::truncated(q) } else { a.to_vec() };
            }
        }
        tracing::debug!(upstream = %up, name = %q.name, "an upstream resolver did not answer");
    }
    FAILED.fetch_add(1, Ordering::Relaxed);
    wire::answer(q, Rcode::ServFail, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nameservers() {
        let t = "# comment\nnameserver 10.0.0.2\nsearch x\nnameserver fe80::1\nnameserver bogus\n";
        assert_eq!(resolv_conf_upstreams(t), vec!["10.0.0.2:53".parse::<SocketAddr>().unwrap(), "[fe80::1]:53".parse().unwrap()]);
    }
}
