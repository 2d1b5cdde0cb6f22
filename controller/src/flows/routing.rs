//! Distributed routing: every switch routes between the networks of a routing domain itself,
//! so a packet from one network to another never hair-pins through a central node.
//!
//! A network's gateway is a router interface that exists in every switch carrying the
//! network: its MAC is [`gateway_mac`] (derived from its address, so containers' ARP caches
//! never go stale when routers change), the ARP responder answers for it, and the
//! [`Table::Gateway`] table answers ICMP echo to it (and sends DNS to it up to the host
//! agent's responder, [`plexus_api::names`]). IPv4 sent to the gateway's MAC is marked
//! with the network's routing domain ([`REG_DOMAIN`]) and handed to [`Table::Routing`], which
//! holds one flow per endpoint of the domain: its address in, the endpoint's network, MAC and
//! the gateway's MAC as source out, TTL decremented. The packet then goes on to L2 lookup in
//! the destination network, which delivers it locally or tunnels it with that network's VNI.
//! A destination no endpoint of the domain has is held for its flows (like any miss that may
//! be a race with the controller) and dropped when none come: networks on no common router
//! stay apart. Flows grow with endpoints plus networks, never with their product.
//!
//! The way out and in: a domain that a router with `external` is in sends what is addressed
//! outside all of its subnets to the host's own stack through the external port
//! ([`plexus_api::routing::EXTERNAL_PORT`]), routed like any other hop (source MAC the switch's, destination the
//! host side's MAC, TTL decremented); the host source-NATs it to its own address and sends it
//! on through its routes. The host routes the domain's subnets back to the switch side of
//! that port ([`EXTERNAL_NEXT_HOP`], whose ARP the switch answers), and what comes in there
//! for a subnet of an external domain is routed to its endpoint, through conntrack and
//! ingress policy like any routed packet: answers to NATed connections and published ports.

use plexus_api::network::Cidr;
use plexus_api::routing::{EXTERNAL_HOST_MAC, EXTERNAL_NEXT_HOP, EXTERNAL_ROUTER_MAC};
use plexus_ovs::openflow::{mac_u128, Action, Field, FlowMod, Match, ARP_REQUEST, OFPP_IN_PORT};

use super::features::{arp_reply, gateway_mac, hold, net_match, EndpointCx, Feature, Flows, NetworkCx, Place};
use super::pipeline::{priority, Origin, Table, REG_DOMAIN, REG_FROM_TUNNEL, REG_NETWORK, REG_OUT_PORT};
use super::SwitchView;

/// ICMP echo request and reply types.
const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;
/// ICMPv6 echo request and reply types.
const ECHO6_REQUEST: u8 = 128;
const ECHO6_REPLY: u8 = 129;

/// The routing feature.
#[derive(Debug)]
pub struct Routing;

fn drop_it(f: FlowMod) -> FlowMod {
    f
}

impl Feature for Routing {
    fn name(&self) -> &'static str {
        "routing"
    }
    fn tables(&self) -> &'static [Table] {
        &[Table::Classify, Table::Gateway, Table::Routing]
    }
    fn glue(&self, view: &SwitchView, out: &mut Flows) {
        let Some(ext) = view.external_port else { return };
        // The host resolves the next hop it routes external networks to; anything else its
        // stack sends into the port (IPv6, other neighbours) is dropped, never held.
        let arp = Match::new().in_port(ext).with(Field::ArpOp, ARP_REQUEST).with(Field::ArpTpa, u32::from(EXTERNAL_NEXT_HOP));
        out.add(Table::Classify, priority::OBJECT, arp, |f| f.apply(arp_reply(EXTERNAL_NEXT_HOP, EXTERNAL_ROUTER_MAC)));
        out.add(Table::Classify, priority::DEFAULT, Match::new().in_port(ext), drop_it);
    }
    fn network(&self, cx: &NetworkCx<'_>, out: &mut Flows) {
        // An underlay's gateway is a physical router's address, answered by that router.
        let Some(gw) = cx.network.spec.gateway.filter(|_| cx.network.underlay().is_none()) else { return };
        let mac = gateway_mac(gw);
        let to_gw = || net_match(cx.vni).eth_dst(mac.octets());
        // The gateway answers ping itself (ping6 too): the request turned around.
        let echo = to_gw().ipv4_dst(gw).with(Field::Icmpv4Type, ECHO_REQUEST);
        let reply = echo_reply(mac, (Field::Ipv4Src, Field::Ipv4Dst, u128::from(u32::from(gw))), (Field::Icmpv4Type, ECHO_REPLY));
        out.add(Table::Gateway, priority::OBJECT, echo, |f| f.apply(reply));
        if let Some(gw6) = cx.network.spec.gateway6 {
            let echo = to_gw().ipv6_dst(gw6).with(Field::Icmpv6Type, ECHO6_REQUEST);
            let reply = echo_reply(mac, (Field::Ipv6Src, Field::Ipv6Dst, u128::from(gw6)), (Field::Icmpv6Type, ECHO6_REPLY));
            out.add(Table::Gateway, priority::OBJECT, echo, |f| f.apply(reply));
        }
        // DNS to the gateway goes up to the host agent's responder, which answers from the
        // names it watches (the packet-in carries the network in REG_NETWORK).
        let dns = to_gw().ipv4_dst(gw).with(Field::IpProto, 17u8).with(Field::UdpDst, plexus_api::names::DNS_PORT);
        out.add(Table::Gateway, priority::OBJECT, dns, |f| f.apply(vec![Action::controller_id(plexus_api::names::DNS_CONTROLLER_ID)]));
        // Anything else sent to the gateway is routed in its domain, or dropped when no
        // router joins the network; IPv6 likewise on a dual-stack network (external access
        // is IPv4's only).
        let dual = cx.network.spec.gateway6.is_some();
        let families = [Some(0x0800u16), dual.then_some(0x86dd)];
        let to_gw_ip = || families.into_iter().flatten().map(|t| to_gw().eth_type(t));
        match cx.domain {
            Some(d) => {
                let Some(next) = Table::Gateway.next(super::pipeline::Origin::Local) else { return };
                for m in to_gw_ip() {
                    out.add(Table::Gateway, priority::NETWORK, m, |f| f.apply(vec![Action::set_field(Field::Reg(REG_DOMAIN), d)]).goto(next.id()));
                }
                let external = cx.view.external_port.filter(|_| cx.model.external_domain(&cx.network.spec.name));
                if let (Some(ext), Some(subnet)) = (external, cx.network.spec.cidr()) {
                    from_outside(cx, ext, subnet, d, out);
                }
                // A destination that no endpoint of the domain has (yet): held, like any packet
                // that may have raced its endpoint's flows, and dropped when none come. One
                // flow per domain, from the network whose VNI names it (every switch that
                // carries one network of a domain carries them all). In a domain that leaves
                // Plexus, only its own subnets' misses are held; the rest goes out.
                if d == cx.vni {
                    match external {
                        None => out.add(Table::Routing, priority::NETWORK, Match::new().reg(REG_DOMAIN, d), hold),
                        Some(ext) => to_outside(cx, ext, d, out),
                    }
                }
            }
            None => {
                for m in to_gw_ip() {
                    out.add(Table::Gateway, priority::NETWORK, m, drop_it);
                }
            }
        }
    }
    fn endpoint(&self, cx: &EndpointCx<'_>, out: &mut Flows) {
        let (Some(d), e) = (cx.domain, cx.endpoint) else { return };
        if matches!(cx.place, Place::Unknown) {
            return;
        }
        let Some(next) = Table::Routing.next(super::pipeline::Origin::Local) else { return };
        let acts = vec![
            Action::set_field(Field::EthSrc, plexus_ovs::openflow::mac_u128(gateway_mac(e.gateway).octets())),
            Action::set_field(Field::EthDst, plexus_ovs::openflow::mac_u128(e.mac.octets())),
            Action::DecNwTtl,
            Action::set_field(Field::Reg(REG_NETWORK), cx.vni),
            Action::set_field(Field::Reg(REG_DOMAIN), 0u32),
        ];
        let by_dst = std::iter::once(Match::new().reg(REG_DOMAIN, d).ipv4_dst(e.ip)).chain(e.ip6.map(|ip6| Match::new().reg(REG_DOMAIN, d).ipv6_dst(ip6)));
        for m in by_dst {
            let acts = acts.clone();
            out.add(Table::Routing, priority::OBJECT, m, |f| f.apply(acts).goto(next.id()));
        }
    }
}

/// An echo request turned into its reply from the gateway at `mac`: Ethernet addresses
/// swapped, the IP source `(src, dst, gateway)` moved to the destination and the gateway's
/// address set as source, the ICMP type set to the reply's; out of the port it came in by.
fn echo_reply(mac: plexus_api::Mac, (src, dst, gw): (Field, Field, u128), (icmp_type, reply): (Field, u8)) -> Vec<Action> {
    vec![
        Action::RegMove { src: Field::EthSrc, src_ofs: 0, dst: Field::EthDst, dst_ofs: 0, n_bits: 48 },
        Action::set_field(Field::EthSrc, mac_u128(mac.octets())),
        Action::RegMove { src, src_ofs: 0, dst, dst_ofs: 0, n_bits: src.bits() },
        Action::set_field(src, gw),
        Action::set_field(icmp_type, reply),
        Action::output(OFPP_IN_PORT),
    ]
}

/// What the host's stack sends to `subnet` through the external port: classified into the
/// network's domain and routed to its endpoint (answers to source-NATed connections and
/// published ports, which the host forwards only to its own endpoints).
fn from_outside(cx: &NetworkCx<'_>, ext: u32, subnet: Cidr, domain: u32, out: &mut Flows) {
    let m = Match::new().in_port(ext).eth_type(0x0800).masked(Field::Ipv4Dst, u32::from(subnet.addr), subnet.mask());
    let load = vec![
        Action::set_field(Field::Reg(REG_NETWORK), cx.vni),
        Action::set_field(Field::Reg(REG_FROM_TUNNEL), Origin::External.reg_value()),
        Action::set_field(Field::Reg(REG_DOMAIN), domain),
    ];
    out.add(Table::Classify, priority::OBJECT, m, |f| f.apply(load).goto(Table::after_classify(Origin::External).id()));
}

/// The domain's routing misses: held for its own subnets, sent out through the external port
/// for everything else.
fn to_outside(cx: &NetworkCx<'_>, ext: u32, domain: u32, out: &mut Flows) {
    for net in cx.model.domain_of(&cx.network.spec.name) {
        let Some(c) = cx.model.networks.get(&net).and_then(|n| n.spec.cidr()) else { continue };
        let m = Match::new().reg(REG_DOMAIN, domain).eth_type(0x0800).masked(Field::Ipv4Dst, u32::from(c.addr), c.mask());
        out.add(Table::Routing, priority::NETWORK, m, hold);
    }
    let Some(next) = Table::L2Lookup.next(Origin::Local) else { return };
    let acts = vec![
        Action::set_field(Field::EthSrc, mac_u128(EXTERNAL_ROUTER_MAC.octets())),
        Action::set_field(Field::EthDst, mac_u128(EXTERNAL_HOST_MAC.octets())),
        Action::DecNwTtl,
        Action::set_field(Field::Reg(REG_OUT_PORT), ext),
        Action::set_field(Field::Reg(REG_DOMAIN), 0u32),
    ];
    // Past L2 lookup (the port is chosen) to ingress policy, commit and output, so that a
    // connection an egress policy let out is committed and its answers known.
    out.add(Table::Routing, priority::DEFAULT, Match::new().reg(REG_DOMAIN, domain).eth_type(0x0800), |f| f.apply(acts).goto(next.id()));
}
