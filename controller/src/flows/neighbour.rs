//! IPv6 Neighbor Discovery answered in the switch, the ARP responder's twin: a Neighbor
//! Solicitation for an address the model knows (an endpoint's, its link-local one, the
//! gateway's) is turned into the Advertisement that answers it and sent back out of the port
//! it came in by, so no solicitation for a known address is flooded or crosses a tunnel.
//! Solicitations for anything else are held for their flows, like ARP requests.
//!
//! The answer is built in two tables: [`Table::ArpResponder`] swaps the addresses, makes the
//! message an advertisement and turns its source link-layer option into a target link-layer
//! option; [`Table::NdReply`] writes that option's MAC, which OVS allows only in a flow whose
//! match says "advertisement". A register mark ([`ND_REPLY_MARK`] in `REG_OUT_PORT`, which
//! nothing else sets before L2 lookup) keeps a container's own advertisements out of the
//! second step.

use std::net::Ipv6Addr;

use plexus_api::Mac;
use plexus_ovs::openflow::{mac_u128, Action, Field, Match, ND_ADVERT, ND_OPT_TARGET_LL, ND_SOLICIT, OFPP_IN_PORT};

use super::features::{gateway_mac, hold, net_match, EndpointCx, Feature, Flows, NetworkCx};
use super::pipeline::{priority, Table, REG_OUT_PORT};
use super::SwitchView;

/// What [`REG_OUT_PORT`] holds for an advertisement the switch is building.
pub const ND_REPLY_MARK: u32 = 0xffff_fff8;

/// Neighbor Advertisement flags: router, solicited, override.
const NA_ROUTER: u32 = 0x8000_0000;
const NA_SOLICITED: u32 = 0x4000_0000;
const NA_OVERRIDE: u32 = 0x2000_0000;

/// The ND responder feature.
#[derive(Debug)]
pub struct NdResponder;

fn solicitation(vni: u32, target: Ipv6Addr) -> Match {
    net_match(vni).with(Field::Icmpv6Type, ND_SOLICIT).with(Field::NdTarget, u128::from(target))
}

/// The first step of an advertisement answering for `ip` at `mac`: the solicitation turned
/// around (Ethernet and IPv6 addresses), retyped, flagged, its option retyped; then
/// [`Table::NdReply`].
fn advertisement(ip: Ipv6Addr, mac: Mac, router: bool) -> Vec<Action> {
    let flags = NA_SOLICITED | NA_OVERRIDE | if router { NA_ROUTER } else { 0 };
    vec![
        Action::RegMove { src: Field::EthSrc, src_ofs: 0, dst: Field::EthDst, dst_ofs: 0, n_bits: 48 },
        Action::set_field(Field::EthSrc, mac_u128(mac.octets())),
        Action::RegMove { src: Field::Ipv6Src, src_ofs: 0, dst: Field::Ipv6Dst, dst_ofs: 0, n_bits: 128 },
        Action::set_field(Field::Ipv6Src, u128::from(ip)),
        Action::set_field(Field::Icmpv6Type, ND_ADVERT),
        Action::set_field(Field::NdReserved, flags),
        Action::set_field(Field::NdOptionsType, ND_OPT_TARGET_LL),
        Action::set_field(Field::Reg(REG_OUT_PORT), ND_REPLY_MARK),
    ]
}

fn answer(out: &mut Flows, vni: u32, ip: Ipv6Addr, mac: Mac, router: bool) {
    out.add(Table::ArpResponder, priority::OBJECT, solicitation(vni, ip), |f| f.apply(advertisement(ip, mac, router)).goto(Table::NdReply.id()));
}

impl Feature for NdResponder {
    fn name(&self) -> &'static str {
        "ND responder"
    }
    fn tables(&self) -> &'static [Table] {
        &[Table::ArpResponder, Table::NdReply]
    }
    fn glue(&self, _view: &SwitchView, out: &mut Flows) {
        // The answer's target link-layer address is its Ethernet source, set in step one.
        let m = Match::new().with(Field::Icmpv6Type, ND_ADVERT).reg(REG_OUT_PORT, ND_REPLY_MARK);
        let acts = vec![Action::RegMove { src: Field::EthSrc, src_ofs: 0, dst: Field::NdTll, dst_ofs: 0, n_bits: 48 }, Action::output(OFPP_IN_PORT)];
        out.add(Table::NdReply, priority::OBJECT, m, |f| f.apply(acts));
    }
    fn network(&self, cx: &NetworkCx<'_>, out: &mut Flows) {
        // An underlay's neighbours answer for themselves (as for ARP); a network without an
        // IPv6 subnet carries no IPv6 at all (port security lets none in).
        let (Some(gw6), Some(gw)) = (cx.network.spec.gateway6, cx.network.spec.gateway) else { return };
        if cx.network.vni().is_none() {
            return;
        }
        let mac = gateway_mac(gw);
        answer(out, cx.vni, gw6, mac, true);
        answer(out, cx.vni, mac.link_local(), mac, true);
        out.add(Table::ArpResponder, priority::NETWORK, net_match(cx.vni).with(Field::Icmpv6Type, ND_SOLICIT), hold);
    }
    fn endpoint(&self, cx: &EndpointCx<'_>, out: &mut Flows) {
        let e = cx.endpoint;
        let Some(ip6) = e.ip6 else { return };
        answer(out, cx.vni, ip6, e.mac, false);
        answer(out, cx.vni, e.mac.link_local(), e.mac, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::compile::{compile, SwitchView};
    use crate::model::testing::{dual, endpoint, host, overlay};
    use crate::model::Model;
    use plexus_api::EndpointKey;

    fn view(ports: &[(&str, &str, u32)]) -> SwitchView {
        SwitchView {
            host: "h1".into(),
            tunnel_port: 1,
            external_port: None,
            uplinks: Default::default(),
            ports: ports.iter().map(|(n, k, p)| (EndpointKey::new(n, *k), *p)).collect(),
        }
    }

    fn targets(flows: &[plexus_ovs::openflow::FlowMod]) -> Vec<Ipv6Addr> {
        let mut v: Vec<Ipv6Addr> = flows
            .iter()
            .filter(|f| f.table_id == Table::ArpResponder.id())
            .filter_map(|f| f.match_.get(Field::NdTarget).map(|t| Ipv6Addr::from(t.value)))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_switch_answers_for_every_address_and_link_local_of_a_dual_stack_network_only() {
        let mut m = Model::default();
        m.apply(host("h1", 1)).unwrap();
        m.apply(host("h2", 2)).unwrap();
        m.apply(dual("red", "10.1.0.0/24", "fd00:1::/64")).unwrap();
        m.apply(overlay("blue", "10.2.0.0/24", None)).unwrap();
        for (n, id, h) in [("red", "a", "h1"), ("red", "b", "h2"), ("blue", "c", "h1")] {
            m.apply(endpoint(n, id, h)).unwrap();
        }
        let flows = compile(&m, &view(&[("red", "a", 5), ("blue", "c", 6)]));
        let eps = &m.endpoints["red"];
        let gw = plexus_api::Mac::from_ipv4("10.1.0.1".parse().unwrap());
        let mut want: Vec<Ipv6Addr> = vec!["fd00:1::1".parse().unwrap(), gw.link_local()];
        for e in eps.values() {
            want.extend([e.ip6.unwrap(), e.mac.link_local()]);
        }
        want.sort();
        // Remote b included; nothing for blue, which has no IPv6.
        assert_eq!(targets(&flows), want);
        // Port security: a's two sources, the advertisements it may send, the rest dropped;
        // c (IPv4 only) sends no IPv6 at all.
        let v6_from = |port: u32| {
            flows
                .iter()
                .filter(|f| f.table_id == Table::PortSecurity.id() && f.match_.get(Field::InPort).is_some_and(|p| p.value == u128::from(port)))
                .filter(|f| f.match_.get(Field::EthType).is_some_and(|t| t.value == 0x86dd))
                .count()
        };
        assert_eq!((v6_from(5), v6_from(6)), (5, 0));
        // One glue flow finishes every answer, marked so a container's own advertisement
        // never takes it.
        let finish: Vec<_> = flows.iter().filter(|f| f.table_id == Table::NdReply.id() && f.priority != priority::MISS).collect();
        assert_eq!(finish.len(), 1);
        assert!(finish[0].match_.get(Field::Reg(REG_OUT_PORT)).is_some_and(|r| r.value == u128::from(ND_REPLY_MARK)));
    }
}
