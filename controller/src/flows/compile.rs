//! The flow compiler: the desired flows of one switch as a pure function of the model and of
//! what that switch's ports are. Nothing here talks to a switch; the switch manager diffs the
//! result against what a switch holds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use plexus_api::endpoint::parse_mac;
use plexus_api::{Endpoint, NetworkKind};
use plexus_ovs::openflow::{mac_u128, Action, Field, FlowMod, Match, MatchField, OFPP_IN_PORT};

use super::pipeline::{next, table, REG_FROM_TUNNEL, REG_NETWORK};
use crate::model::Model;

/// What the compiler needs to know about one switch besides the model.
#[derive(Debug, Clone)]
pub struct SwitchView {
    /// The host whose `br-int` this is.
    pub host: String,
    /// OpenFlow port of the flow-based tunnel.
    pub tunnel_port: u32,
    /// OpenFlow port of each endpoint of this host that is plugged in, by `network/id`; only
    /// endpoints that exist and live on this host.
    pub ports: BTreeMap<String, u32>,
}

/// What a cookie says a flow belongs to (its top byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CookieKind {
    /// The pipeline's own glue (table defaults).
    Pipeline = 1,
    /// A network.
    Network = 2,
    /// An endpoint.
    Endpoint = 3,
}

/// Top byte: the kind; the rest: a hash of the object's key. Deleting by cookie with mask
/// `u64::MAX` removes exactly one object's flows.
pub fn cookie(kind: CookieKind, key: &str) -> u64 {
    ((kind as u64) << 56) | (plexus_api::ids::fnv1a(key) & 0x00ff_ffff_ffff_ffff)
}

/// The gateway's MAC: `0a:58` and its address, like endpoints (no endpoint has that address).
pub fn gateway_mac(gw: Ipv4Addr) -> [u8; 6] {
    let o = gw.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

const BROADCAST_BIT: u128 = 0x01_00_00_00_00_00;

fn mac_of(e: &Endpoint) -> Option<[u8; 6]> {
    parse_mac("mac", &e.mac).ok()
}

/// An ARP reply built in the switch: the request turned around, answering for `ip`/`mac`.
fn arp_reply(ip: Ipv4Addr, mac: [u8; 6]) -> Vec<Action> {
    vec![
        Action::RegMove { src: Field::EthSrc, src_ofs: 0, dst: Field::EthDst, dst_ofs: 0, n_bits: 48 },
        Action::set_field(Field::EthSrc, mac_u128(mac)),
        Action::set_field(Field::ArpOp, 2u16),
        Action::RegMove { src: Field::ArpSha, src_ofs: 0, dst: Field::ArpTha, dst_ofs: 0, n_bits: 48 },
        Action::RegMove { src: Field::ArpSpa, src_ofs: 0, dst: Field::ArpTpa, dst_ofs: 0, n_bits: 32 },
        Action::set_field(Field::ArpSha, mac_u128(mac)),
        Action::set_field(Field::ArpSpa, u32::from(ip)),
        Action::output(OFPP_IN_PORT),
    ]
}

fn to_tunnel(vni: u32, dst: Ipv4Addr, port: u32) -> Vec<Action> {
    vec![Action::set_field(Field::TunnelId, vni as u64), Action::set_tun_dst(dst), Action::output(port)]
}

/// What a group of flows comes from. A switch's desired flows are the union of its units';
/// a change to the model recompiles only the units it touches ([`affected`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    /// The pipeline's own glue.
    Glue,
    /// A network's shared flows on this switch: tunnel classification, gateway ARP, ARP
    /// defaults, broadcast.
    Network(String),
    /// One endpoint's flows (`network/id`): port classification and security and unicast for
    /// a local one; ARP answer and unicast to the tunnel for a remote one.
    Endpoint(String),
}

/// The desired flows of the switch `view` describes, normalized (as the switch reports them).
pub fn compile(model: &Model, view: &SwitchView) -> Vec<FlowMod> {
    compile_units(model, view).into_values().flatten().collect()
}

/// Every unit's flows on the switch `view` describes; units without flows are left out.
pub fn compile_units(model: &Model, view: &SwitchView) -> BTreeMap<Unit, Vec<FlowMod>> {
    let mut units = BTreeMap::new();
    units.insert(Unit::Glue, normalized(glue()));
    for (name, eps) in &model.endpoints {
        let Some(vni) = carries(model, view, name) else { continue };
        units.insert(Unit::Network(name.clone()), normalized(network_flows(model, view, name, vni)));
        for e in eps.values() {
            let f = normalized(endpoint_flows(model, view, e, vni));
            if !f.is_empty() {
                units.insert(Unit::Endpoint(format!("{name}/{}", e.id)), f);
            }
        }
    }
    units
}

/// The VNI of `network` if the switch carries it: an overlay in which the switch has a
/// plugged-in endpoint. A switch with no endpoint in a network carries none of its flows;
/// broadcast never reaches it either.
pub(crate) fn carries(model: &Model, view: &SwitchView, network: &str) -> Option<u32> {
    let NetworkKind::Overlay { vni: Some(vni) } = model.networks.get(network)?.spec.kind else { return None };
    let prefix = format!("{network}/");
    let local = view.ports.range(prefix.clone()..).next().is_some_and(|(k, _)| k.starts_with(&prefix));
    local.then_some(vni)
}

/// The flows of one unit, normalized.
pub fn compile_unit(model: &Model, view: &SwitchView, unit: &Unit) -> Vec<FlowMod> {
    let out = match unit {
        Unit::Glue => glue(),
        Unit::Network(name) => carries(model, view, name).map(|vni| network_flows(model, view, name, vni)).unwrap_or_default(),
        Unit::Endpoint(key) => {
            let Some((net, id)) = key.split_once('/') else { return Vec::new() };
            let Some(e) = model.endpoints.get(net).and_then(|eps| eps.get(id)) else { return Vec::new() };
            carries(model, view, net).map(|vni| endpoint_flows(model, view, e, vni)).unwrap_or_default()
        }
    };
    normalized(out)
}

fn normalized(flows: Vec<FlowMod>) -> Vec<FlowMod> {
    flows
        .into_iter()
        .filter_map(|f| match f.normalized() {
            Ok(f) => Some(f),
            Err(e) => {
                // A compiler bug, not bad input: say so loudly and leave that flow out.
                tracing::error!(error = %e, flow = ?f, "the flow compiler built an invalid flow");
                None
            }
        })
        .collect()
}

/// The units a model change can touch on a switch, given the change's kind and key; `None`
/// when it may touch anything (a host's tunnel address, a network's settings). Besides these,
/// a unit's network gaining or losing its last local endpoint touches all of its units; the
/// caller checks that with the network unit's before and after.
pub fn affected(kind: &str, key: &str) -> Option<Vec<Unit>> {
    match kind {
        "endpoint" => {
            let net = key.split_once('/').map(|(n, _)| n)?;
            Some(vec![Unit::Network(net.to_string()), Unit::Endpoint(key.to_string())])
        }
        // No flows come from these yet.
        "router" | "policy" | "mastership" => Some(vec![]),
        _ => None,
    }
}

fn glue() -> Vec<FlowMod> {
    let glue = cookie(CookieKind::Pipeline, "pipeline");
    // Stages without features yet pass packets on.
    ["egress-policy", "routing"].iter().map(|t| FlowMod::add(table(t), 0, Match::new()).cookie(glue).goto(next(t))).collect()
}

fn net_match(vni: u32) -> Match {
    Match::new().reg(REG_NETWORK, vni)
}

fn arp_request(vni: u32, ip: Ipv4Addr) -> Match {
    net_match(vni).with(Field::ArpOp, 1u16).with(Field::ArpTpa, u32::from(ip))
}

fn network_flows(model: &Model, view: &SwitchView, name: &str, vni: u32) -> Vec<FlowMod> {
    let mut out = Vec::new();
    let Some(net) = model.networks.get(name) else { return out };
    let empty = BTreeMap::new();
    let eps = model.endpoints.get(name).unwrap_or(&empty);
    let ncookie = cookie(CookieKind::Network, name);
    // Classify: which network, and whether from a tunnel.
    out.push(
        FlowMod::add(table("classify"), 100, Match::new().in_port(view.tunnel_port).tunnel_id(vni as u64))
            .cookie(ncookie)
            .apply(vec![Action::set_field(Field::Reg(REG_NETWORK), vni), Action::set_field(Field::Reg(REG_FROM_TUNNEL), 1u32)])
            .goto(table("l2-lookup")),
    );
    if let Some(gw) = net.spec.gateway {
        out.push(FlowMod::add(table("arp-responder"), 100, arp_request(vni, gw)).cookie(ncookie).apply(arp_reply(gw, gateway_mac(gw))));
    }
    // Other ARP requests are dropped, never flooded: every address is known.
    out.push(FlowMod::add(table("arp-responder"), 50, net_match(vni).with(Field::ArpOp, 1u16)).cookie(ncookie));
    out.push(FlowMod::add(table("arp-responder"), 0, net_match(vni)).cookie(ncookie).goto(next("arp-responder")));
    // Broadcast and multicast: local ports, plus one copy per host with endpoints here; what
    // came from a tunnel goes to local ports only.
    // Local ports come from the switch's (few) ports; remote hosts from one pass over the
    // network's endpoints that allocates nothing.
    let prefix = format!("{name}/");
    let locals: Vec<Action> = view
        .ports
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(_, p)| Action::output(*p))
        .collect();
    let mut remote: Vec<&str> = Vec::new();
    for e in eps.values() {
        if e.host != view.host && !remote.contains(&e.host.as_str()) {
            remote.push(&e.host);
        }
    }
    let remote_hosts: BTreeSet<Ipv4Addr> = remote.iter().filter_map(|h| model.hosts.get(*h).map(|h| h.spec.tunnel_ip)).collect();
    let bcast = |from_tunnel: u32| net_match(vni).reg(REG_FROM_TUNNEL, from_tunnel).set(MatchField { field: Field::EthDst, value: BROADCAST_BIT, mask: Some(BROADCAST_BIT) });
    let mut flood = locals.clone();
    for h in &remote_hosts {
        flood.extend(to_tunnel(vni, *h, view.tunnel_port));
    }
    out.push(FlowMod::add(table("l2-lookup"), 50, bcast(0)).cookie(ncookie).apply(flood));
    out.push(FlowMod::add(table("l2-lookup"), 50, bcast(1)).cookie(ncookie).apply(locals));
    out
}

fn endpoint_flows(model: &Model, view: &SwitchView, e: &Endpoint, vni: u32) -> Vec<FlowMod> {
    let mut out = Vec::new();
    let Some(mac) = mac_of(e) else { return out };
    let key = format!("{}/{}", e.network, e.id);
    let c = cookie(CookieKind::Endpoint, &key);
    // ARP for every endpoint of the network, answered here.
    out.push(FlowMod::add(table("arp-responder"), 100, arp_request(vni, e.ip)).cookie(c).apply(arp_reply(e.ip, mac)));
    if e.host == view.host {
        let Some(port) = view.ports.get(&key).copied() else { return out };
        out.push(
            FlowMod::add(table("classify"), 100, Match::new().in_port(port))
                .cookie(c)
                .apply(vec![Action::set_field(Field::Reg(REG_NETWORK), vni)])
                .goto(table("port-security")),
        );
        // Port security: only its own MAC and address, for IPv4 and ARP.
        let base = || Match::new().in_port(port).eth_src(mac);
        out.push(FlowMod::add(table("port-security"), 100, base().ipv4_src(e.ip)).cookie(c).goto(next("port-security")));
        out.push(
            FlowMod::add(table("port-security"), 100, base().with(Field::ArpSpa, u32::from(e.ip)).with(Field::ArpSha, mac_u128(mac)))
                .cookie(c)
                .goto(next("port-security")),
        );
        out.push(FlowMod::add(table("l2-lookup"), 100, net_match(vni).eth_dst(mac)).cookie(c).apply(vec![Action::output(port)]));
    } else if let Some(h) = model.hosts.get(&e.host) {
        // Unicast to a remote endpoint: through the tunnel to its host.
        out.push(
            FlowMod::add(table("l2-lookup"), 100, net_match(vni).reg(REG_FROM_TUNNEL, 0).eth_dst(mac))
                .cookie(c)
                .apply(to_tunnel(vni, h.spec.tunnel_ip, view.tunnel_port)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Command;
    use plexus_api::{EndpointSpec, HostSpec, NetworkSpec};
    use plexus_ovs::openflow::Instruction;

    fn model() -> Model {
        let mut m = Model::default();
        for (i, h) in ["h1", "h2", "h3"].iter().enumerate() {
            let spec = HostSpec { name: h.to_string(), tunnel_ip: Ipv4Addr::new(192, 0, 2, i as u8 + 1), encap: Default::default(), labels: Default::default() };
            m.apply(Command::PutHost { spec, now_ms: 0 }).unwrap();
        }
        let spec = NetworkSpec { kind: NetworkKind::Overlay { vni: Some(7) }, ..NetworkSpec::overlay("red", "10.1.0.0/24") };
        m.apply(Command::PutNetwork { spec, create: true, if_match: None }).unwrap();
        for (id, h) in [("a", "h1"), ("b", "h1"), ("c", "h2")] {
            let spec = EndpointSpec { id: Some(id.into()), host: h.into(), ip: None, mac: None, owner: None, labels: Default::default() };
            m.apply(Command::CreateEndpoint { network: "red".into(), spec, now_ms: 0 }).unwrap();
        }
        m
    }

    fn view(host: &str, ports: &[(&str, u32)]) -> SwitchView {
        SwitchView { host: host.into(), tunnel_port: 1, ports: ports.iter().map(|(k, v)| (k.to_string(), *v)).collect() }
    }

    #[test]
    fn a_switch_gets_flows_only_for_networks_it_has_endpoints_in() {
        let m = model();
        let h3 = compile(&m, &view("h3", &[]));
        assert!(h3.iter().all(|f| f.cookie >> 56 == CookieKind::Pipeline as u64), "h3 holds only the pipeline glue");
        let h1 = compile(&m, &view("h1", &[("red/a", 5), ("red/b", 6)]));
        // Broadcast from a local port: both local ports and one copy to h2 only.
        let flood = h1.iter().find(|f| f.priority == 50 && f.match_.get(Field::Reg(REG_FROM_TUNNEL)).is_some_and(|r| r.value == 0)).unwrap();
        let Instruction::ApplyActions(acts) = &flood.instructions[0] else { panic!() };
        let tunnels: Vec<&Action> = acts.iter().filter(|a| matches!(a, Action::SetField(mf) if mf.field == Field::TunIpv4Dst)).collect();
        assert_eq!(tunnels.len(), 1, "one copy, to h2: {acts:?}");
        assert!(acts.contains(&Action::output(5)) && acts.contains(&Action::output(6)));
    }

    #[test]
    fn every_flow_of_an_endpoint_carries_its_cookie() {
        let m = model();
        let flows = compile(&m, &view("h1", &[("red/a", 5), ("red/b", 6)]));
        let a = cookie(CookieKind::Endpoint, "red/a");
        let mine: Vec<&FlowMod> = flows.iter().filter(|f| f.cookie == a).collect();
        // classify, two port-security, unicast, ARP answer.
        assert_eq!(mine.len(), 5, "{mine:#?}");
        assert_ne!(a, cookie(CookieKind::Endpoint, "red/b"));
        // Compiling twice gives the same flows: the compiler is a function.
        assert_eq!(flows, compile(&m, &view("h1", &[("red/a", 5), ("red/b", 6)])));
    }
}
