//! `plexus trace`: builds the packet an endpoint would send, has the agent of its host run it
//! through the switch's real pipeline (`ofproto/trace`), follows it through the tunnel into
//! the receiving host's pipeline, and explains every flow it met by the object the flow's
//! cookie names, ending with a verdict in plain words.
//!
//! The controller never runs anything on a host itself: it queues a job for the host's agent
//! ([`TraceHub`]), which holds a long poll open for them and answers with what OVS printed.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use plexus_api::{Endpoint, Mac, Trace, TraceJob, TraceProtocol, TraceRequest, TraceStep, TracedPacket};
use tokio::sync::{oneshot, Notify};

use crate::flows::compile::{cookie, unit_cookie, CookieKind, Unit};
use crate::flows::features::gateway_mac;
use crate::flows::pipeline::Table;
use crate::flows::policy::{direction, drop_cookie, rule_cookie};
use crate::model::Model;

/// How long an agent has to answer a trace job.
pub const AGENT_WAIT: Duration = Duration::from_secs(5);
/// An agent whose last poll is older than this is taken to be gone (it polls every 8 s).
const POLL_GONE: Duration = Duration::from_secs(20);
/// Jobs that may wait for one host's agent.
const MAX_QUEUED: usize = 64;

/// Trace jobs waiting for agents, and the requests waiting for their answers. Lives on the
/// node that answers `/v1/trace` and the agents' long polls: the leader (both are forwarded).
#[derive(Debug, Default)]
pub struct TraceHub {
    queued: Mutex<HashMap<String, VecDeque<TraceJob>>>,
    /// When each host's agent last asked for jobs.
    polled: Mutex<HashMap<String, std::time::Instant>>,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Result<String, String>>>>,
    wake: Notify,
    next: AtomicU64,
}

/// Why a trace could not be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// Bad input: the field and the reason.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// An agent did not answer, or OVS could not trace.
    #[error("{0}")]
    Agent(String),
}

impl TraceHub {
    /// Queues `flow` for `host`'s agent and waits for what OVS printed.
    pub async fn run(&self, host: &str, flow: String) -> Result<String, TraceError> {
        // An agent that has not asked for a while is not there to ask: say so at once.
        let seen = self.polled.lock().unwrap_or_else(|e| e.into_inner()).get(host).map(|t| t.elapsed());
        if seen.is_none_or(|t| t > POLL_GONE) {
            return Err(TraceError::Agent(format!("host {host}'s agent is not asking this controller for traces (is it running, and reaching the leader?)")));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        {
            let mut q = self.queued.lock().unwrap_or_else(|e| e.into_inner());
            let jobs = q.entry(host.to_string()).or_default();
            if jobs.len() >= MAX_QUEUED {
                return Err(TraceError::Agent(format!("{MAX_QUEUED} traces already wait for host {host}'s agent")));
            }
            jobs.push_back(TraceJob { id, flow });
            self.waiting.lock().unwrap_or_else(|e| e.into_inner()).insert(id, tx);
        }
        self.wake.notify_waiters();
        let r = tokio::time::timeout(AGENT_WAIT, rx).await;
        // Whatever happened, the job and its waiter are gone afterwards.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        if let Some(jobs) = self.queued.lock().unwrap_or_else(|e| e.into_inner()).get_mut(host) {
            jobs.retain(|j| j.id != id);
        }
        match r {
            Ok(Ok(Ok(out))) => Ok(out),
            Ok(Ok(Err(e))) => Err(TraceError::Agent(format!("host {host}'s agent could not trace: {e}"))),
            _ => Err(TraceError::Agent(format!("host {host}'s agent did not answer within {AGENT_WAIT:?} (is it running, and reaching this controller?)"))),
        }
    }

    /// The jobs for `host`, waiting up to `wait` for one to come.
    pub async fn take(&self, host: &str, wait: Duration) -> Vec<TraceJob> {
        self.polled.lock().unwrap_or_else(|e| e.into_inner()).insert(host.to_string(), std::time::Instant::now());
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let woken = self.wake.notified();
            let jobs: Vec<TraceJob> = self.queued.lock().unwrap_or_else(|e| e.into_inner()).get_mut(host).map(|q| q.drain(..).collect()).unwrap_or_default();
            if !jobs.is_empty() || tokio::time::Instant::now() >= deadline {
                return jobs;
            }
            let _ = tokio::time::timeout_at(deadline, woken).await;
        }
    }

    /// An agent's answer to job `id`; `false` if nobody waits for it (any more).
    pub fn answer(&self, id: u64, r: Result<String, String>) -> bool {
        match self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
            Some(tx) => tx.send(r).is_ok(),
            None => false,
        }
    }
}

/// The packet of a trace request, resolved against the model.
struct Packet<'a> {
    from: &'a Endpoint,
    dst: Ipv4Addr,
    to: Option<&'a Endpoint>,
    req: &'a TraceRequest,
}

fn resolve<'a>(m: &'a Model, req: &'a TraceRequest) -> Result<Packet<'a>, TraceError> {
    let invalid = |field, reason: String| TraceError::Invalid { field, reason };
    let from = m
        .endpoints
        .get(&req.network)
        .and_then(|e| e.get(&req.from))
        .ok_or_else(|| invalid("from", format!("no endpoint {} in network {}", req.from, req.network)))?;
    let (dst, to) = match req.to.parse::<Ipv4Addr>() {
        Ok(ip) => {
            // The endpoint with that address in the sender's routing domain, if any.
            let nets = m.domain_of(&req.network);
            let to = nets.iter().filter_map(|n| m.endpoints.get(n)).flat_map(|e| e.values()).find(|e| e.ip == ip);
            (ip, to)
        }
        Err(_) => {
            let (n, id) = req.to.split_once('/').unwrap_or_default();
            let e = m.endpoints.get(n).and_then(|e| e.get(id)).ok_or_else(|| invalid("to", format!("no endpoint {id} in network {n}")))?;
            (e.ip, Some(e))
        }
    };
    Ok(Packet { from, dst, to, req })
}

impl Packet<'_> {
    /// Protocol fields in OVS's flow syntax.
    fn l4(&self) -> String {
        match (self.req.protocol, self.req.port.unwrap_or(0)) {
            (TraceProtocol::Icmp, _) => "icmp,icmp_type=8,icmp_code=0".into(),
            (TraceProtocol::Tcp, p) => format!("tcp,tp_src=40000,tp_dst={p},tcp_flags=syn"),
            (TraceProtocol::Udp, p) => format!("udp,tp_src=40000,tp_dst={p}"),
        }
    }

    /// The packet as the sender puts it on its port: to the destination's MAC on its own
    /// subnet (derived from the address, as endpoints' are, when nobody has it), else to the
    /// gateway's.
    fn flow(&self) -> String {
        let e = self.from;
        let mask = u32::MAX.checked_shl(32 - u32::from(e.prefix_len)).unwrap_or(0);
        let same_subnet = u32::from(self.dst) & mask == u32::from(e.ip) & mask;
        let dl_dst = match (same_subnet, self.to) {
            (true, Some(t)) if t.network == e.network => t.mac,
            (true, _) => Mac::from_ipv4(self.dst),
            (false, _) => gateway_mac(e.gateway),
        };
        format!("in_port={},{},dl_src={},dl_dst={dl_dst},nw_src={},nw_dst={},nw_ttl=64", e.key().port_name(), self.l4(), e.mac, e.ip, self.dst)
    }

    fn what(&self) -> String {
        match (self.req.protocol, self.req.port) {
            (TraceProtocol::Icmp, _) => format!("ping from {}", self.from.ip),
            (p, Some(port)) => format!("{}/{port} from {}", format!("{p:?}").to_lowercase(), self.from.ip),
            (p, None) => format!("{p:?} from {}", self.from.ip).to_lowercase(),
        }
    }
}

/// What each cookie of the model names, in the operator's words.
fn objects(m: &Model) -> HashMap<u64, String> {
    let mut o = HashMap::new();
    o.insert(cookie(CookieKind::Pipeline, "pipeline"), "the pipeline's own flows".to_string());
    for n in m.networks.keys() {
        o.insert(unit_cookie(&Unit::Network(n.clone())), format!("network {n}"));
        o.insert(unit_cookie(&Unit::Policies(n.clone())), format!("policies of {n} (conntrack and shared rule parts)"));
    }
    let policed: std::collections::BTreeSet<&str> = m.policies.values().map(|p| p.spec.network.as_str()).collect();
    for e in m.all_endpoints() {
        o.insert(unit_cookie(&Unit::Endpoint(e.key())), format!("endpoint {} ({}) on {}, host {}", e.id, e.ip, e.network, e.host));
        o.insert(unit_cookie(&Unit::Governed(e.key())), format!("the policy rules governing endpoint {}", e.id));
        for n in &policed {
            for ip in std::iter::once(std::net::IpAddr::V4(e.ip)).chain(e.ip6.map(std::net::IpAddr::V6)) {
                o.insert(unit_cookie(&Unit::PeerAddr(n.to_string(), ip)), format!("{ip} as a peer in {n}'s policy rules"));
            }
        }
        for egress in [false, true] {
            o.insert(drop_cookie(&e.key(), egress), format!("default deny of endpoint {} ({})", e.id, direction(egress)));
        }
    }
    for p in m.policies.values() {
        for egress in [false, true] {
            for (i, r) in p.spec.rules(egress).into_iter().flatten().enumerate() {
                o.insert(rule_cookie(&p.spec.name, egress, i), format!("policy {} {} rule {i} ({})", p.spec.name, direction(egress), r.describe(egress)));
            }
        }
    }
    o
}

/// One flow an `ofproto/trace` printout shows.
#[derive(Debug)]
struct RawStep {
    table: u8,
    matched: String,
    cookie: u64,
    actions: Vec<String>,
}

/// One `ofproto/trace` printout, cut into the steps of `br-int` (the underlay bridge's are
/// left out), with the datapath actions and the final flow it ended with.
#[derive(Debug)]
struct Printout {
    steps: Vec<RawStep>,
    datapath: String,
    final_flow: String,
}

fn parse(out: &str) -> Printout {
    let mut steps: Vec<RawStep> = Vec::new();
    let (mut in_int, mut datapath, mut final_flow) = (false, String::new(), String::new());
    for line in out.lines() {
        if let Some(b) = line.strip_prefix("bridge(\"") {
            in_int = b.starts_with("br-int");
            continue;
        }
        if let Some(d) = line.strip_prefix("Datapath actions: ") {
            datapath = d.trim().to_string();
            continue;
        }
        if let Some(f) = line.strip_prefix("Final flow: ") {
            final_flow = f.trim().to_string();
            continue;
        }
        if !in_int || line.trim().is_empty() || line.starts_with('=') || line.starts_with("Flow:") || line.starts_with("Megaflow:") {
            continue;
        }
        let t = line.trim_start();
        let head = t.split_once(". ").filter(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && line.len() - t.len() <= 1);
        match head {
            Some((n, rest)) => {
                let table = n.parse().unwrap_or(0);
                let (matched, cookie) = match rest.rsplit_once(", cookie ") {
                    Some((m, c)) => (m.to_string(), u64::from_str_radix(c.trim().trim_start_matches("0x"), 16).unwrap_or(0)),
                    None => (rest.to_string(), 0),
                };
                steps.push(RawStep { table, matched, cookie, actions: Vec::new() });
            }
            None => {
                if let Some(s) = steps.last_mut() {
                    s.actions.push(t.to_string());
                }
            }
        }
    }
    Printout { steps, datapath, final_flow }
}

/// A `key=value` of an OVS flow printout.
fn field<'a>(flow: &'a str, key: &str) -> Option<&'a str> {
    flow.split(',').find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

/// Runs the trace: the sender's host, then the receiver's if the packet left through the
/// tunnel.
pub async fn trace(hub: &TraceHub, m: &Model, req: &TraceRequest) -> Result<Trace, TraceError> {
    let p = resolve(m, req)?;
    let objects = objects(m);
    let mut flow = p.flow();
    let mut host = p.from.host.clone();
    let mut steps = Vec::new();
    let mut first = Vec::new();
    for hop in 0..2 {
        first.push(TracedPacket { host: host.clone(), flow: flow.clone() });
        let out = hub.run(&host, flow.clone()).await?;
        let Printout { steps: raw, datapath, final_flow } = parse(&out);
        let mut tunnel: Option<(String, String)> = None;
        for RawStep { table, matched, cookie: c, actions } in raw {
            let name = Table::from_id(table).map_or("?", |t| t.name());
            let mut object =
                objects
                    .get(&c)
                    .cloned()
                    .unwrap_or_else(|| if matched.starts_with("No match") { "no flow (table miss)".into() } else { format!("cookie {c:#x}") });
            let tun_dst = actions.iter().find_map(|a| a.strip_prefix("set_field:").and_then(|x| x.strip_suffix("->tun_dst")));
            let tun_id = actions.iter().find_map(|a| a.strip_prefix("set_field:").and_then(|x| x.strip_suffix("->tun_id")));
            if let (Some(ip), Some(vni)) = (tun_dst, tun_id) {
                let to = m.hosts.values().find(|h| h.spec.tunnel_ip.to_string() == ip).map_or(ip.to_string(), |h| h.spec.name.clone());
                object = format!("{object}; tunnel to {to}");
                tunnel = Some((ip.to_string(), vni.to_string()));
            }
            if c == cookie(CookieKind::Pipeline, "pipeline") {
                object = glue(&matched, &actions).to_string();
            }
            if Table::from_id(table) == Some(Table::Routing) && c >> 56 == CookieKind::Endpoint as u64 {
                if let Some(to) = p.to {
                    let routers: Vec<&str> = m.routers.values().filter(|r| r.spec.networks.contains(&to.network)).map(|r| r.spec.name.as_str()).collect();
                    object = format!("router {}: {} -> {}, to {object}", routers.join(","), req.network, to.network);
                }
            }
            steps.push(TraceStep { host: host.clone(), table, table_name: name.to_string(), object, matched, actions });
        }
        let left_by_tunnel = datapath.contains("tnl_push");
        match (left_by_tunnel, tunnel, hop) {
            (true, Some((ip, vni)), 0) => {
                let Some(next) = m.hosts.values().find(|h| h.spec.tunnel_ip.to_string() == ip) else {
                    return Ok(verdict(first, steps, false, format!("sent through the tunnel to {ip}, which no registered host has")));
                };
                let src = m.hosts.get(&host).map(|h| h.spec.tunnel_ip.to_string()).unwrap_or_default();
                let inner: Vec<String> = ["dl_src", "dl_dst", "nw_src", "nw_dst", "nw_ttl", "tp_src", "tp_dst", "tcp_flags", "icmp_type", "icmp_code"]
                    .iter()
                    .filter_map(|k| field(&final_flow, k).map(|v| format!("{k}={v}")))
                    .collect();
                let proto = match req.protocol {
                    TraceProtocol::Icmp => "icmp",
                    TraceProtocol::Tcp => "tcp",
                    TraceProtocol::Udp => "udp",
                };
                flow = format!("in_port={},tun_id={vni},tun_src={src},tun_dst={ip},{proto},{}", next.spec.encap.port_name(), inner.join(","));
                host = next.spec.name.clone();
            }
            _ => return Ok(explain(m, &p, first, steps, &datapath)),
        }
    }
    Ok(explain(m, &p, first, steps, "drop"))
}

/// What one of the pipeline's own flows did.
fn glue(matched: &str, actions: &[String]) -> &'static str {
    if actions.iter().any(|a| a.starts_with("ct(commit")) {
        "a new connection that got through: committed to conntrack"
    } else if matched.contains("+est") {
        "a packet of an established connection: passes"
    } else if matched.contains("+rel") {
        "related to a known connection: passes"
    } else if actions.iter().any(|a| a.starts_with("output:")) {
        "out through the port chosen before"
    } else if actions.iter().any(|a| a.starts_with("meter:") || a.contains("CONTROLLER")) {
        "no flow for it (yet): held at the controller for flows on their way"
    } else if matched == "priority 0" {
        "nothing here concerns it: on to the next table"
    } else {
        "the pipeline's own flows"
    }
}

fn verdict(packets: Vec<TracedPacket>, steps: Vec<TraceStep>, delivered: bool, verdict: String) -> Trace {
    Trace { packets, steps, delivered, verdict }
}

/// The verdict from the last steps and what the datapath was told.
fn explain(m: &Model, p: &Packet<'_>, packet: Vec<TracedPacket>, steps: Vec<TraceStep>, datapath: &str) -> Trace {
    let last = steps.last().cloned();
    let dropped = datapath == "drop" || datapath.is_empty();
    let held = steps.iter().rev().take(1).any(|s| s.actions.iter().any(|a| a.starts_with("meter:") || a.contains("CONTROLLER")));
    if !dropped && !held {
        // Delivered to a local port: the endpoint whose unicast flow chose it.
        let to = steps.iter().rev().find(|s| s.table == Table::L2Lookup.id()).map(|s| s.object.clone()).unwrap_or_else(|| "a local port".into());
        let host = last.as_ref().map(|s| s.host.clone()).unwrap_or_default();
        let to = to.split("; tunnel").next().unwrap_or(&to).split(", host").next().unwrap_or(&to).trim_start_matches("endpoint ").to_string();
        return verdict(packet, steps, true, format!("delivered to {to}, host {host}"));
    }
    let Some(last) = last else { return verdict(packet, steps, false, "dropped before any flow matched".into()) };
    let why = if held && last.table == Table::Routing.id() {
        format!("no endpoint of {}'s routing domain has {}: held for flows on their way, dropped if none come (unknown destination)", p.from.network, p.dst)
    } else if held {
        format!("no flow knows {} in this switch: held for flows on their way, dropped if none come (unknown destination)", p.dst)
    } else if last.object.starts_with("default deny of endpoint") {
        let egress = last.table == Table::EgressPolicy.id();
        let governed = if egress { Some(p.from) } else { p.to };
        let names: Vec<&str> = governed
            .map(|e| {
                m.policies
                    .values()
                    .filter(|pol| pol.spec.network == e.network && pol.spec.rules(egress).is_some())
                    .filter(|pol| plexus_api::Selector::parse(&pol.spec.select).is_ok_and(|s| s.matches(&e.labels)))
                    .map(|pol| pol.spec.name.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let whom = governed.map_or(String::new(), |e| if egress { format!(" out of {}", e.id) } else { format!(" in to {}", e.id) });
        format!("dropped by policy {}: no rule lets {}{whom}", names.join(", "), p.what())
    } else if last.object.starts_with("policy ") {
        format!("dropped by {}", last.object)
    } else if last.table == Table::PortSecurity.id() {
        format!("dropped by port security on {}: {} may send only from its own address and MAC", last.host, p.from.id)
    } else if last.table == Table::Gateway.id() {
        format!("dropped at the gateway: no router joins network {} to {}", p.from.network, p.dst)
    } else {
        format!("dropped in table {} on {} ({})", last.table_name, last.host, last.object)
    };
    verdict(packet, steps, false, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Flow: tcp,in_port=2\n\nbridge(\"br-int\")\n----------------\n 0. in_port=2, priority 100, cookie 0x354c8160440617d\n    set_field:0x3e8->reg0\n    goto_table:10\n70. reg0=0x3e8,reg1=0,dl_dst=0a:58:0a:01:00:03, priority 100, cookie 0x39d300aa4990a0f\n    set_field:0x3e8->tun_id\n    set_field:100.97.37.12->tun_dst\n    goto_table:80\n100. priority 10, cookie 0x13c11fd413aeee3\n    output:NXM_NX_REG2[]\n     -> output to native tunnel\n\nbridge(\"br-phy\")\n----------------\n 0. priority 0\n    NORMAL\n\nFinal flow: recirc_id=0x1,eth,tcp,reg0=0x3e8,dl_src=0a:58:0a:01:00:02,nw_ttl=64,tp_dst=5432\nMegaflow: recirc_id=0x1\nDatapath actions: ct(commit,zone=1000),tnl_push(tnl_port(4)),out_port(1)),2\n";

    #[test]
    fn a_printout_is_cut_into_br_int_steps_with_their_cookies() {
        let Printout { steps, datapath, final_flow } = parse(SAMPLE);
        assert_eq!(steps.len(), 3, "{steps:?}");
        assert_eq!((steps[0].table, steps[0].cookie), (0, 0x354c8160440617d));
        assert_eq!(steps[1].table, 70);
        assert!(steps[1].actions.contains(&"set_field:100.97.37.12->tun_dst".to_string()));
        assert_eq!(steps[2].matched, "priority 10");
        assert!(datapath.contains("tnl_push"));
        assert_eq!(field(&final_flow, "tp_dst"), Some("5432"));
        assert_eq!(field(&final_flow, "nw_ttl"), Some("64"));
    }
}
