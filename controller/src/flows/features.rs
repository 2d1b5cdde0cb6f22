//! The features of the pipeline (Antrea's shape): each declares the tables it writes to and
//! contributes flows for the switch as a whole, for each network the switch carries and for
//! each endpoint of those networks. The compiler asks every feature in turn; a feature never
//! writes to a table it did not declare.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use plexus_api::{Endpoint, EndpointKey, Host, Mac, Network};
use plexus_ovs::openflow::{mac_u128, Action, Field, FlowMod, Match, MatchField, ARP_REPLY, ARP_REQUEST, ND_ADVERT, OFPP_IN_PORT};

use super::pipeline::{priority, Miss, Origin, Table, HOLD_METER, REG_FROM_TUNNEL, REG_NETWORK, REG_OUT_PORT};
use super::SwitchView;
use crate::model::Model;

/// The flows one feature contributes for one unit. Refuses (and logs) a flow for a table the
/// feature did not declare: that is a bug in the feature, caught by the compiler's tests.
#[derive(Debug)]
pub struct Flows {
    feature: &'static str,
    tables: &'static [Table],
    cookie: u64,
    out: Vec<FlowMod>,
}

impl Flows {
    pub(crate) fn new(cookie: u64) -> Flows {
        Flows { feature: "", tables: &[], cookie, out: Vec::new() }
    }

    pub(crate) fn for_feature(&mut self, f: &dyn Feature) {
        self.feature = f.name();
        self.tables = f.tables();
    }

    /// Adds a flow to `table`, with this unit's cookie; `build` adds its instructions.
    pub fn add(&mut self, table: Table, priority: u16, m: Match, build: impl FnOnce(FlowMod) -> FlowMod) {
        if !self.tables.contains(&table) {
            tracing::error!(feature = self.feature, %table, "a feature wrote to a table it does not declare; flow left out");
            debug_assert!(false, "feature {} wrote to undeclared table {table}", self.feature);
            return;
        }
        self.out.push(build(FlowMod::add(table.id(), priority, m).cookie(self.cookie)));
    }

    /// Adds a flow like [`Flows::add`], with a cookie of its own rather than the unit's: for
    /// flows whose counters stand for a smaller object (a policy rule, an endpoint's drops).
    pub fn add_with_cookie(&mut self, table: Table, priority: u16, m: Match, cookie: u64, build: impl FnOnce(FlowMod) -> FlowMod) {
        let unit = self.cookie;
        self.cookie = cookie;
        self.add(table, priority, m, build);
        self.cookie = unit;
    }

    /// The unit's cookie.
    pub fn cookie(&self) -> u64 {
        self.cookie
    }

    pub(crate) fn into_vec(self) -> Vec<FlowMod> {
        self.out
    }
}

/// What a feature sees of one network on one switch.
#[derive(Debug)]
pub struct NetworkCx<'a> {
    /// The model.
    pub model: &'a Model,
    /// The switch.
    pub view: &'a SwitchView,
    /// The network.
    pub network: &'a Network,
    /// Its VNI.
    pub vni: u32,
    /// Its routing domain, if a router joins it ([`REG_DOMAIN`](super::pipeline::REG_DOMAIN)).
    pub domain: Option<u32>,
}

/// What a feature sees of one endpoint on one switch.
#[derive(Debug)]
pub struct EndpointCx<'a> {
    /// The switch.
    pub view: &'a SwitchView,
    /// The endpoint.
    pub endpoint: &'a Endpoint,
    /// Its network's VNI.
    pub vni: u32,
    /// Its network's routing domain, if a router joins the network.
    pub domain: Option<u32>,
    /// Where it is, seen from this switch.
    pub place: Place<'a>,
    /// Its network is an underlay network (no tunnel, no routing).
    pub underlay: bool,
}

/// Where an endpoint is, seen from one switch.
#[derive(Debug, Clone, Copy)]
pub enum Place<'a> {
    /// Plugged into this switch at this OpenFlow port.
    Local(u32),
    /// Meant for this switch but not plugged in (yet).
    Unplugged,
    /// On another host, reached through the tunnel.
    Remote(&'a Host),
    /// On a host the model does not know (yet): unreachable.
    Unknown,
}

/// A feature of the pipeline.
pub trait Feature: Sync + std::fmt::Debug {
    /// Its name.
    fn name(&self) -> &'static str;
    /// The tables it writes to.
    fn tables(&self) -> &'static [Table];
    /// Its flows for the switch as a whole.
    fn glue(&self, _view: &SwitchView, _out: &mut Flows) {}
    /// Its flows for one network the switch carries.
    fn network(&self, _cx: &NetworkCx<'_>, _out: &mut Flows) {}
    /// Its flows for one endpoint of a network the switch carries.
    fn endpoint(&self, _cx: &EndpointCx<'_>, _out: &mut Flows) {}
}

/// Every feature, in the order the compiler asks them.
pub const FEATURES: &[&dyn Feature] = &[
    &MissFlows,
    &Classification,
    &PortSecurity,
    &ArpResponder,
    &super::neighbour::NdResponder,
    &super::policy::Policies,
    &super::routing::Routing,
    &Switching,
    &super::underlay::Underlay,
];

/// The miss flows the pipeline declaration asks for ([`Miss::Next`], [`Miss::Hold`]).
#[derive(Debug)]
pub struct MissFlows;

/// A flow's instructions that hold its packets: through the hold meter to the controller,
/// whole, which runs them through the pipeline again once the switch's flows change.
pub fn hold(f: FlowMod) -> FlowMod {
    f.meter(HOLD_METER).apply(vec![Action::controller()])
}

impl Feature for MissFlows {
    fn name(&self) -> &'static str {
        "table misses"
    }
    fn tables(&self) -> &'static [Table] {
        &Table::ALL
    }
    fn glue(&self, _view: &SwitchView, out: &mut Flows) {
        for t in Table::ALL.into_iter().filter(|t| t.spec().miss == Miss::Hold) {
            out.add(t, priority::MISS, Match::new(), hold);
        }
        for t in Table::ALL.into_iter().filter(|t| t.spec().miss == Miss::Next) {
            let next: Vec<(Origin, Table)> = Origin::ALL.into_iter().filter(|o| t.on_path(*o)).filter_map(|o| Some((o, t.next(o)?))).collect();
            let same = next.windows(2).all(|w| w[0].1 == w[1].1);
            match next.first() {
                Some((_, n)) if same => out.add(t, priority::MISS, Match::new(), |f| f.goto(n.id())),
                _ => {
                    for (o, n) in next {
                        out.add(t, priority::MISS, Match::new().reg(REG_FROM_TUNNEL, o.reg_value()), |f| f.goto(n.id()));
                    }
                }
            }
        }
    }
}

pub(crate) fn net_match(vni: u32) -> Match {
    Match::new().reg(REG_NETWORK, vni)
}

/// Which network a packet belongs to, and where it came from.
#[derive(Debug)]
pub struct Classification;

impl Feature for Classification {
    fn name(&self) -> &'static str {
        "classification"
    }
    fn tables(&self) -> &'static [Table] {
        &[Table::Classify]
    }
    fn network(&self, cx: &NetworkCx<'_>, out: &mut Flows) {
        if cx.network.vni().is_none() {
            // An underlay network's frames come from its uplink ([`super::underlay`]).
            return;
        }
        let from_tunnel = Match::new().in_port(cx.view.tunnel_port).tunnel_id(cx.vni as u64);
        let load = vec![Action::set_field(Field::Reg(REG_NETWORK), cx.vni), Action::set_field(Field::Reg(REG_FROM_TUNNEL), Origin::Tunnel.reg_value())];
        out.add(Table::Classify, priority::OBJECT, from_tunnel, |f| f.apply(load).goto(Table::after_classify(Origin::Tunnel).id()));
    }
    fn endpoint(&self, cx: &EndpointCx<'_>, out: &mut Flows) {
        let Place::Local(port) = cx.place else { return };
        let load = vec![Action::set_field(Field::Reg(REG_NETWORK), cx.vni)];
        out.add(Table::Classify, priority::OBJECT, Match::new().in_port(port), |f| f.apply(load).goto(Table::after_classify(Origin::Local).id()));
    }
}

/// A local endpoint sends only with its own MAC and addresses: IPv4 and ARP, and on a
/// dual-stack network IPv6 from its address or its link-local one (Neighbor Advertisements
/// only for those two: it may not claim anyone else's).
#[derive(Debug)]
pub struct PortSecurity;

impl Feature for PortSecurity {
    fn name(&self) -> &'static str {
        "port security"
    }
    fn tables(&self) -> &'static [Table] {
        &[Table::PortSecurity]
    }
    fn endpoint(&self, cx: &EndpointCx<'_>, out: &mut Flows) {
        let Place::Local(port) = cx.place else { return };
        let (mac, ip) = (cx.endpoint.mac.octets(), cx.endpoint.ip);
        let Some(next) = Table::PortSecurity.next(Origin::Local) else { return };
        let base = || Match::new().in_port(port).eth_src(mac);
        out.add(Table::PortSecurity, priority::OBJECT, base().ipv4_src(ip), |f| f.goto(next.id()));
        let arp = base().with(Field::ArpSpa, u32::from(ip)).with(Field::ArpSha, mac_u128(mac));
        out.add(Table::PortSecurity, priority::OBJECT, arp, |f| f.goto(next.id()));
        let Some(ip6) = cx.endpoint.ip6 else { return };
        // Duplicate address detection sends from `::`, which no flow lets through: nobody
        // answers it, and the controller already keeps addresses unique.
        let advert = || base().with(Field::Icmpv6Type, ND_ADVERT);
        for own in [ip6, cx.endpoint.mac.link_local()] {
            out.add(Table::PortSecurity, priority::OBJECT, base().ipv6_src(own), |f| f.goto(next.id()));
            let m = advert().ipv6_src(own).with(Field::NdTarget, u128::from(own));
            out.add(Table::PortSecurity, priority::OBJECT + 2, m, |f| f.goto(next.id()));
        }
        out.add(Table::PortSecurity, priority::OBJECT + 1, advert(), |f| f);
    }
}

/// ARP requests for every known address answered in the switch; others held (never flooded,
/// since every address is known — or about to be, when its endpoint's flows are on their way).
#[derive(Debug)]
pub struct ArpResponder;

/// The gateway's MAC: derived from its address, like endpoints' (no endpoint has that address).
pub fn gateway_mac(gw: Ipv4Addr) -> Mac {
    Mac::from_ipv4(gw)
}

fn arp_request(vni: u32, ip: Ipv4Addr) -> Match {
    net_match(vni).with(Field::ArpOp, ARP_REQUEST).with(Field::ArpTpa, u32::from(ip))
}

/// An ARP reply built in the switch: the request turned around, answering for `ip`/`mac`.
pub(crate) fn arp_reply(ip: Ipv4Addr, mac: Mac) -> Vec<Action> {
    let mac = mac_u128(mac.octets());
    vec![
        Action::RegMove { src: Field::EthSrc, src_ofs: 0, dst: Field::EthDst, dst_ofs: 0, n_bits: 48 },
        Action::set_field(Field::EthSrc, mac),
        Action::set_field(Field::ArpOp, ARP_REPLY),
        Action::RegMove { src: Field::ArpSha, src_ofs: 0, dst: Field::ArpTha, dst_ofs: 0, n_bits: 48 },
        Action::RegMove { src: Field::ArpSpa, src_ofs: 0, dst: Field::ArpTpa, dst_ofs: 0, n_bits: 32 },
        Action::set_field(Field::ArpSha, mac),
        Action::set_field(Field::ArpSpa, u32::from(ip)),
        Action::output(OFPP_IN_PORT),
    ]
}

impl Feature for ArpResponder {
    fn name(&self) -> &'static str {
        "ARP responder"
    }
    fn tables(&self) -> &'static [Table] {
        &[Table::ArpResponder]
    }
    fn network(&self, cx: &NetworkCx<'_>, out: &mut Flows) {
        if cx.network.vni().is_none() {
            // On an underlay the gateway is a physical router and machines Plexus does not
            // know answer for themselves: requests go on to be broadcast, uplink included.
            return;
        }
        if let Some(gw) = cx.network.spec.gateway {
            out.add(Table::ArpResponder, priority::OBJECT, arp_request(cx.vni, gw), |f| f.apply(arp_reply(gw, gateway_mac(gw))));
        }
        out.add(Table::ArpResponder, priority::NETWORK, net_match(cx.vni).with(Field::ArpOp, ARP_REQUEST), hold);
    }
    fn endpoint(&self, cx: &EndpointCx<'_>, out: &mut Flows) {
        let e = cx.endpoint;
        out.add(Table::ArpResponder, priority::OBJECT, arp_request(cx.vni, e.ip), |f| f.apply(arp_reply(e.ip, e.mac)));
    }
}

/// L2: a known destination MAC picks the output port (a local port, or the tunnel to the
/// endpoint's host) and the packet goes on to ingress policy and output; broadcast and
/// multicast are copied to the network's local ports and to one tunnel per remote host that
/// has endpoints in it (never to every host), and what came from a tunnel only to local ports.
#[derive(Debug)]
pub struct Switching;

const BROADCAST_BIT: u128 = 0x01_00_00_00_00_00;

fn to_tunnel(vni: u32, dst: Ipv4Addr) -> [Action; 2] {
    [Action::set_field(Field::TunnelId, vni as u64), Action::set_tun_dst(dst)]
}

impl Feature for Switching {
    fn name(&self) -> &'static str {
        "L2 switching"
    }
    fn tables(&self) -> &'static [Table] {
        &[Table::L2Lookup, Table::Output]
    }
    fn glue(&self, _view: &SwitchView, out: &mut Flows) {
        out.add(Table::Output, priority::DEFAULT, Match::new(), |f| f.apply(vec![Action::output_reg(REG_OUT_PORT)]));
    }
    fn network(&self, cx: &NetworkCx<'_>, out: &mut Flows) {
        let (vni, name) = (cx.vni, cx.network.spec.name.as_str());
        // Local ports come from the switch's (few) ports; remote hosts from the model's index
        // of which hosts have endpoints in the network: no pass over its endpoints.
        let locals: Vec<Action> =
            cx.view.ports.range(EndpointKey::first_in(name)..).take_while(|(k, _)| *k.network == *name).map(|(_, p)| Action::output(*p)).collect();
        let remote: BTreeSet<Ipv4Addr> =
            cx.model.member_hosts(name).filter(|h| *h != cx.view.host).filter_map(|h| cx.model.hosts.get(h).map(|h| h.spec.tunnel_ip)).collect();
        let bcast = |o: Origin| {
            net_match(vni).reg(REG_FROM_TUNNEL, o.reg_value()).set(MatchField { field: Field::EthDst, value: BROADCAST_BIT, mask: Some(BROADCAST_BIT) })
        };
        let mut flood = locals.clone();
        if cx.network.vni().is_some() {
            for h in &remote {
                flood.extend(to_tunnel(vni, *h));
                flood.push(Action::output(cx.view.tunnel_port));
            }
        }
        // An underlay's broadcast leaves through its uplink too, tagged last (the tag stays on
        // the packet for every output after it).
        if let Some(up) = super::underlay::uplink(cx.view, cx.network) {
            flood.extend(up.out());
        }
        out.add(Table::L2Lookup, priority::NETWORK, bcast(Origin::Local), |f| f.apply(flood));
        out.add(Table::L2Lookup, priority::NETWORK, bcast(Origin::Tunnel), |f| f.apply(locals));
    }
    fn endpoint(&self, cx: &EndpointCx<'_>, out: &mut Flows) {
        let (vni, mac) = (cx.vni, cx.endpoint.mac.octets());
        let Some(next) = Table::L2Lookup.next(Origin::Local) else { return };
        match cx.place {
            Place::Local(port) => {
                let to_port = vec![Action::set_field(Field::Reg(REG_OUT_PORT), port)];
                out.add(Table::L2Lookup, priority::OBJECT, net_match(vni).eth_dst(mac), |f| f.apply(to_port).goto(next.id()));
            }
            // On an underlay the physical network carries it (the uplink's default flow).
            Place::Remote(_) if cx.underlay => {}
            Place::Remote(h) => {
                let mut acts = to_tunnel(vni, h.spec.tunnel_ip).to_vec();
                acts.push(Action::set_field(Field::Reg(REG_OUT_PORT), cx.view.tunnel_port));
                let m = net_match(vni).reg(REG_FROM_TUNNEL, Origin::Local.reg_value()).eth_dst(mac);
                out.add(Table::L2Lookup, priority::OBJECT, m, |f| f.apply(acts).goto(next.id()));
            }
            Place::Unplugged | Place::Unknown => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_written_by_a_feature_or_passes_packets_on() {
        for t in Table::ALL {
            let written = FEATURES.iter().filter(|f| f.name() != MissFlows.name()).any(|f| f.tables().contains(&t));
            assert!(written || t.spec().miss != Miss::Drop, "{t} drops every packet: no feature writes to it");
        }
    }
}
