//! The flow compiler: the desired flows of one switch as a pure function of the model and of
//! what that switch's ports are. Nothing here talks to a switch; the switch manager diffs the
//! result against what a switch holds. The flows themselves come from the pipeline's
//! [features](super::features); this module decides which units exist and asks them.

use std::collections::BTreeMap;

use plexus_api::EndpointKey;
use plexus_ovs::openflow::FlowMod;

use super::features::{EndpointCx, Flows, NetworkCx, Place, FEATURES};
use crate::model::Model;

/// What the compiler needs to know about one switch besides the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchView {
    /// The host whose `br-int` this is.
    pub host: String,
    /// OpenFlow port of the flow-based tunnel.
    pub tunnel_port: u32,
    /// OpenFlow port of the host's external port ([`plexus_api::routing::EXTERNAL_PORT`]),
    /// once the agent made it.
    pub external_port: Option<u32>,
    /// OpenFlow port of the patch to each physical network the host maps
    /// ([`plexus_api::network::uplink_port`]).
    pub uplinks: BTreeMap<String, u32>,
    /// OpenFlow port of each endpoint of this host that is plugged in; only endpoints that
    /// exist and live on this host.
    pub ports: BTreeMap<EndpointKey, u32>,
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
    /// The policies of a network (their shared flows).
    Policies = 4,
    /// One rule of a policy (its decision flow, whose counters are the rule's).
    PolicyRule = 5,
    /// An endpoint's default-deny flow in one direction (its counters are the drops).
    PolicyDrop = 6,
    /// The rules' flows for one endpoint policies govern on a switch.
    PolicyGoverned = 7,
    /// The rules' flows for one peer address.
    PolicyPeer = 8,
}

/// Top byte: the kind; the rest: a hash of the object's key. Deleting by cookie with mask
/// `u64::MAX` removes exactly one object's flows.
pub fn cookie(kind: CookieKind, key: &str) -> u64 {
    kind_bits(kind) | (plexus_api::ids::fnv1a(key) & HASH_BITS)
}

/// The cookie of a unit's flows.
pub fn unit_cookie(unit: &Unit) -> u64 {
    match unit {
        Unit::Glue => cookie(CookieKind::Pipeline, "pipeline"),
        Unit::Network(n) => cookie(CookieKind::Network, n),
        Unit::Policies(n) => cookie(CookieKind::Policies, n),
        Unit::Governed(k) => kind_bits(CookieKind::PolicyGoverned) | (plexus_api::ids::fnv1a_parts(&[&k.network, "/", &k.id]) & HASH_BITS),
        Unit::PeerAddr(n, ip) => cookie(CookieKind::PolicyPeer, &format!("{n}/{ip}")),
        Unit::Endpoint(k) => kind_bits(CookieKind::Endpoint) | (plexus_api::ids::fnv1a_parts(&[&k.network, "/", &k.id]) & HASH_BITS),
    }
}

const HASH_BITS: u64 = 0x00ff_ffff_ffff_ffff;

const fn kind_bits(kind: CookieKind) -> u64 {
    (kind as u64) << 56
}

/// What a group of flows comes from. A switch's desired flows are the union of its units';
/// a change to the model recompiles only the units it touches ([`super::engine`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    /// The pipeline's own glue.
    Glue,
    /// A network's shared flows on this switch: tunnel classification, gateway ARP, ARP
    /// defaults, broadcast.
    Network(String),
    /// What a network's policies share on this switch: conntrack for its routing domain,
    /// each rule's service and decision flows, CIDR peers ([`super::policy`]).
    Policies(String),
    /// The rules' flows for one plugged-in endpoint of this switch that policies govern.
    Governed(EndpointKey),
    /// The rules' flows for one peer address of a network's policies.
    PeerAddr(String, std::net::IpAddr),
    /// One endpoint's flows: port classification and security and unicast for a local one;
    /// ARP answer and unicast to the tunnel for a remote one.
    Endpoint(EndpointKey),
}

/// The desired flows of the switch `view` describes, normalized (as the switch reports them).
pub fn compile(model: &Model, view: &SwitchView) -> Vec<FlowMod> {
    compile_units(model, view).into_values().flatten().collect()
}

/// Every unit's flows on the switch `view` describes; units without flows are left out.
pub fn compile_units(model: &Model, view: &SwitchView) -> BTreeMap<Unit, Vec<FlowMod>> {
    let mut units = BTreeMap::new();
    units.insert(Unit::Glue, compile_unit(model, view, &Unit::Glue));
    // Every network, not only those with endpoints: one routed to a network this switch has
    // endpoints in is carried even while it has none.
    for name in model.networks.keys() {
        let (Some((vni, domain)), Some(network)) = (carried(model, view, name), model.networks.get(name)) else { continue };
        let unit = Unit::Network(name.clone());
        units.insert(unit.clone(), network_unit(model, view, &unit, network, vni, domain));
        let unit = Unit::Policies(name.clone());
        let f = policies_unit(model, &unit, name, vni, domain);
        if !f.is_empty() {
            units.insert(unit, f);
            policy_member_units(model, view, name, vni, &mut units);
        }
        // The network's endpoints straight from the model: no lookup per endpoint.
        for endpoint in model.endpoints.get(name).into_iter().flat_map(|eps| eps.values()) {
            let unit = Unit::Endpoint(endpoint.key());
            let f = endpoint_unit(model, view, &unit, endpoint, vni, domain);
            if !f.is_empty() {
                units.insert(unit, f);
            }
        }
    }
    units
}

/// The flows of an endpoint's unit, the endpoint and its network's VNI in hand.
fn endpoint_unit(model: &Model, view: &SwitchView, unit: &Unit, endpoint: &plexus_api::Endpoint, vni: u32, domain: Option<u32>) -> Vec<FlowMod> {
    let mut out = Flows::new(unit_cookie(unit));
    let place = if endpoint.host == view.host {
        let port = match unit {
            Unit::Endpoint(k) => view.ports.get(k),
            _ => None,
        };
        port.map_or(Place::Unplugged, |p| Place::Local(*p))
    } else {
        model.hosts.get(&endpoint.host).map_or(Place::Unknown, Place::Remote)
    };
    let underlay = model.networks.get(&endpoint.network).is_some_and(|n| n.underlay().is_some());
    let cx = EndpointCx { view, endpoint, vni, domain, place, underlay };
    for f in FEATURES {
        out.for_feature(*f);
        f.endpoint(&cx, &mut out);
    }
    normalized(out.into_vec())
}

/// The VNI of `network` if the switch carries it: an overlay in which the switch has a
/// plugged-in endpoint, or one a router joins to such a network (its endpoints are reached by
/// routing in this switch). A switch with no endpoint in a network's routing domain carries
/// none of its flows; broadcast never reaches it either.
pub(crate) fn carries(model: &Model, view: &SwitchView, network: &str) -> Option<u32> {
    carried(model, view, network).map(|(vni, _)| vni)
}

/// [`carries`], with the network's routing domain id: one walk over the routers for both.
fn carried(model: &Model, view: &SwitchView, network: &str) -> Option<(u32, Option<u32>)> {
    let vni = model.networks.get(network)?.segment()?;
    match model.routed_domain(network) {
        Some((id, nets)) => (has_local(view, network) || nets.iter().any(|n| has_local(view, n))).then_some((vni, Some(id))),
        None => has_local(view, network).then_some((vni, None)),
    }
}

/// Whether the switch has a plugged-in endpoint of `network`.
fn has_local(view: &SwitchView, network: &str) -> bool {
    view.ports.range(EndpointKey::first_in(network)..).next().is_some_and(|(k, _)| *k.network == *network)
}

/// The flows of one unit, normalized.
pub fn compile_unit(model: &Model, view: &SwitchView, unit: &Unit) -> Vec<FlowMod> {
    let mut out = Flows::new(unit_cookie(unit));
    match unit {
        Unit::Glue => {
            for f in FEATURES {
                out.for_feature(*f);
                f.glue(view, &mut out);
            }
        }
        Unit::Network(name) => {
            let (Some((vni, domain)), Some(network)) = (carried(model, view, name), model.networks.get(name)) else { return Vec::new() };
            return network_unit(model, view, unit, network, vni, domain);
        }
        Unit::Policies(name) => {
            let Some((vni, domain)) = carried(model, view, name) else { return Vec::new() };
            return policies_unit(model, unit, name, vni, domain);
        }
        Unit::Governed(key) => {
            if carried(model, view, &key.network).is_none() {
                return Vec::new();
            }
            out.for_feature(&super::policy::Policies);
            super::policy::compile_governed(model, view, key, &mut out);
        }
        Unit::PeerAddr(name, ip) => {
            let Some((vni, _)) = carried(model, view, name) else { return Vec::new() };
            out.for_feature(&super::policy::Policies);
            super::policy::compile_peer(model, name, vni, *ip, &mut out);
        }
        Unit::Endpoint(key) => {
            let Some(endpoint) = model.endpoints.get(&*key.network).and_then(|eps| eps.get(&*key.id)) else { return Vec::new() };
            let Some((vni, domain)) = carried(model, view, &key.network) else { return Vec::new() };
            return endpoint_unit(model, view, unit, endpoint, vni, domain);
        }
    }
    normalized(out.into_vec())
}

/// The flows a network's policies share.
fn policies_unit(model: &Model, unit: &Unit, network: &str, vni: u32, domain: Option<u32>) -> Vec<FlowMod> {
    let mut out = Flows::new(unit_cookie(unit));
    out.for_feature(&super::policy::Policies);
    let nets = match domain {
        Some(_) => model.domain_of(network),
        None => std::iter::once(network.to_string()).collect(),
    };
    super::policy::compile_shared(model, network, vni, domain.unwrap_or(vni), &nets, &mut out);
    normalized(out.into_vec())
}

/// The units of a policed network's endpoints on this switch: each governed local endpoint's
/// and each peer address's, compiled in bulk (selectors resolved once, not once per unit).
fn policy_member_units(model: &Model, view: &SwitchView, network: &str, vni: u32, units: &mut BTreeMap<Unit, Vec<FlowMod>>) {
    let mut put = |unit: Unit, merged: super::policy::Merged| {
        let mut out = Flows::new(unit_cookie(&unit));
        out.for_feature(&super::policy::Policies);
        merged.emit(&mut out);
        units.insert(unit, normalized(out.into_vec()));
    };
    let governed_cookie = |k: &EndpointKey| unit_cookie(&Unit::Governed(k.clone()));
    for (k, merged) in super::policy::compile_governed_all(model, view, network, governed_cookie) {
        put(Unit::Governed(k), merged);
    }
    let peer_cookie = |ip| unit_cookie(&Unit::PeerAddr(network.to_string(), ip));
    for (ip, merged) in super::policy::compile_peers(model, network, vni, peer_cookie) {
        put(Unit::PeerAddr(network.to_string(), ip), merged);
    }
}

/// The flows of a network's unit, the network, its VNI and its routing domain in hand.
fn network_unit(model: &Model, view: &SwitchView, unit: &Unit, network: &plexus_api::Network, vni: u32, domain: Option<u32>) -> Vec<FlowMod> {
    let mut out = Flows::new(unit_cookie(unit));
    let cx = NetworkCx { model, view, network, vni, domain };
    for f in FEATURES {
        out.for_feature(*f);
        f.network(&cx, &mut out);
    }
    normalized(out.into_vec())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::pipeline::{priority, Origin, Table, REG_FROM_TUNNEL};
    use crate::model::testing::{endpoint, host, overlay};
    use plexus_ovs::openflow::{Action, Field, Instruction};

    fn model() -> Model {
        let mut m = Model::default();
        for i in 1..=3 {
            m.apply(host(&format!("h{i}"), i)).unwrap();
        }
        m.apply(overlay("red", "10.1.0.0/24", Some(7))).unwrap();
        for (id, h) in [("a", "h1"), ("b", "h1"), ("c", "h2")] {
            m.apply(endpoint("red", id, h)).unwrap();
        }
        m
    }

    fn view(host: &str, ports: &[(&str, u32)]) -> SwitchView {
        SwitchView {
            host: host.into(),
            tunnel_port: 1,
            external_port: None,
            uplinks: Default::default(),
            ports: ports.iter().map(|(k, v)| (EndpointKey::new("red", *k), *v)).collect(),
        }
    }

    #[test]
    fn a_switch_gets_flows_only_for_networks_it_has_endpoints_in() {
        let m = model();
        let h3 = compile(&m, &view("h3", &[]));
        assert!(h3.iter().all(|f| f.cookie >> 56 == CookieKind::Pipeline as u64), "h3 holds only the pipeline glue");
        let h1 = compile(&m, &view("h1", &[("a", 5), ("b", 6)]));
        // Broadcast from a local port: both local ports and one copy to h2 only.
        let local = Origin::Local.reg_value();
        let flood = h1
            .iter()
            .find(|f| {
                f.table_id == Table::L2Lookup.id()
                    && f.priority == priority::NETWORK
                    && f.match_.get(Field::Reg(REG_FROM_TUNNEL)).is_some_and(|r| r.value == u128::from(local))
            })
            .expect("a broadcast flow for local packets");
        let Some(Instruction::ApplyActions(acts)) = flood.instructions.first() else { panic!("{flood:?}") };
        let tunnels: Vec<&Action> = acts.iter().filter(|a| matches!(a, Action::SetField(mf) if mf.field == Field::TunIpv4Dst)).collect();
        assert_eq!(tunnels.len(), 1, "one copy, to h2: {acts:?}");
        assert!(acts.contains(&Action::output(5)) && acts.contains(&Action::output(6)));
    }

    #[test]
    fn every_flow_of_an_endpoint_carries_its_cookie() {
        let m = model();
        let flows = compile(&m, &view("h1", &[("a", 5), ("b", 6)]));
        let a = unit_cookie(&Unit::Endpoint(EndpointKey::new("red", "a")));
        let mine: Vec<&FlowMod> = flows.iter().filter(|f| f.cookie == a).collect();
        // classify, two port-security, unicast, ARP answer.
        assert_eq!(mine.len(), 5, "{mine:#?}");
        assert_ne!(a, unit_cookie(&Unit::Endpoint(EndpointKey::new("red", "b"))));
        // Pinned: switches keep flows across controller upgrades, and a cookie that changed
        // would make every flow look foreign.
        assert_eq!(a, cookie(CookieKind::Endpoint, "red/a"));
        assert_eq!(unit_cookie(&Unit::Network("red".into())), cookie(CookieKind::Network, "red"));
        // Compiling twice gives the same flows: the compiler is a function.
        assert_eq!(flows, compile(&m, &view("h1", &[("a", 5), ("b", 6)])));
    }

    #[test]
    fn tunnelled_packets_go_through_ingress_policy_to_output() {
        let m = model();
        let flows = compile(&m, &view("h1", &[("a", 5)]));
        let from_tunnel = flows
            .iter()
            .find(|f| f.table_id == Table::Classify.id() && f.match_.get(Field::InPort).is_some_and(|p| p.value == 1))
            .expect("tunnel classification");
        assert!(from_tunnel.instructions.contains(&Instruction::GotoTable(Table::Conntrack.id())), "{from_tunnel:?}");
        // Unicast to a local port goes on to ingress policy rather than straight out.
        let uni = flows
            .iter()
            .find(|f| f.table_id == Table::L2Lookup.id() && f.priority == priority::OBJECT && f.match_.get(Field::Reg(REG_FROM_TUNNEL)).is_none())
            .expect("unicast to a");
        assert!(uni.instructions.contains(&Instruction::GotoTable(Table::IngressPolicy.id())), "{uni:?}");
        for t in [Table::IngressPolicy, Table::Output] {
            assert!(flows.iter().any(|f| f.table_id == t.id()), "{t} has a flow");
        }
    }
}
