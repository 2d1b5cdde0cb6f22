//! Distributed routing: every switch routes between the networks of a routing domain itself,
//! so a packet from one network to another never hair-pins through a central node.
//!
//! A network's gateway is a router interface that exists in every switch carrying the
//! network: its MAC is [`gateway_mac`] (derived from its address, so containers' ARP caches
//! never go stale when routers change), the ARP responder answers for it, and the
//! [`Table::Gateway`] table answers ICMP echo to it. IPv4 sent to the gateway's MAC is marked
//! with the network's routing domain ([`REG_DOMAIN`]) and handed to [`Table::Routing`], which
//! holds one flow per endpoint of the domain: its address in, the endpoint's network, MAC and
//! the gateway's MAC as source out, TTL decremented. The packet then goes on to L2 lookup in
//! the destination network, which delivers it locally or tunnels it with that network's VNI.
//! A destination no endpoint of the domain has is held for its flows (like any miss that may
//! be a race with the controller) and dropped when none come: networks on no common router
//! stay apart. Flows grow with endpoints plus networks, never with their product.

use plexus_ovs::openflow::{Action, Field, FlowMod, Match, OFPP_IN_PORT};

use super::features::{gateway_mac, hold, net_match, EndpointCx, Feature, Flows, NetworkCx, Place};
use super::pipeline::{priority, Table, REG_DOMAIN, REG_NETWORK};

/// ICMP echo request and reply types.
const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;

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
        &[Table::Gateway, Table::Routing]
    }
    fn network(&self, cx: &NetworkCx<'_>, out: &mut Flows) {
        let Some(gw) = cx.network.spec.gateway else { return };
        let mac = gateway_mac(gw);
        let to_gw = || net_match(cx.vni).eth_dst(mac.octets());
        // The gateway answers ping itself: the request turned around.
        let echo = to_gw().ipv4_dst(gw).with(Field::Icmpv4Type, ECHO_REQUEST);
        let reply = vec![
            Action::RegMove { src: Field::EthSrc, src_ofs: 0, dst: Field::EthDst, dst_ofs: 0, n_bits: 48 },
            Action::set_field(Field::EthSrc, plexus_ovs::openflow::mac_u128(mac.octets())),
            Action::RegMove { src: Field::Ipv4Src, src_ofs: 0, dst: Field::Ipv4Dst, dst_ofs: 0, n_bits: 32 },
            Action::set_field(Field::Ipv4Src, u32::from(gw)),
            Action::set_field(Field::Icmpv4Type, ECHO_REPLY),
            Action::output(OFPP_IN_PORT),
        ];
        out.add(Table::Gateway, priority::OBJECT, echo, |f| f.apply(reply));
        // Anything else sent to the gateway is routed in its domain, or dropped when no
        // router joins the network.
        let ipv4 = to_gw().eth_type(0x0800);
        match cx.domain {
            Some(d) => {
                let Some(next) = Table::Gateway.next(super::pipeline::Origin::Local) else { return };
                out.add(Table::Gateway, priority::NETWORK, ipv4, |f| f.apply(vec![Action::set_field(Field::Reg(REG_DOMAIN), d)]).goto(next.id()));
                // A destination that no endpoint of the domain has (yet): held, like any packet
                // that may have raced its endpoint's flows, and dropped when none come. One
                // flow per domain, from the network whose VNI names it (every switch that
                // carries one network of a domain carries them all).
                if d == cx.vni {
                    out.add(Table::Routing, priority::NETWORK, Match::new().reg(REG_DOMAIN, d), hold);
                }
            }
            None => out.add(Table::Gateway, priority::NETWORK, ipv4, drop_it),
        }
    }
    fn endpoint(&self, cx: &EndpointCx<'_>, out: &mut Flows) {
        let (Some(d), e) = (cx.domain, cx.endpoint) else { return };
        if matches!(cx.place, Place::Unknown) {
            return;
        }
        let Some(next) = Table::Routing.next(super::pipeline::Origin::Local) else { return };
        let m = Match::new().reg(REG_DOMAIN, d).ipv4_dst(e.ip);
        let acts = vec![
            Action::set_field(Field::EthSrc, plexus_ovs::openflow::mac_u128(gateway_mac(e.gateway).octets())),
            Action::set_field(Field::EthDst, plexus_ovs::openflow::mac_u128(e.mac.octets())),
            Action::DecNwTtl,
            Action::set_field(Field::Reg(REG_NETWORK), cx.vni),
            Action::set_field(Field::Reg(REG_DOMAIN), 0u32),
        ];
        out.add(Table::Routing, priority::OBJECT, m, |f| f.apply(acts).goto(next.id()));
    }
}
