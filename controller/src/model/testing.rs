//! Commands for tests, built from the few values a test cares about.

use std::net::Ipv4Addr;

use plexus_api::{EndpointSpec, HostSpec, NetworkKind, NetworkSpec, Valid};

use super::Command;

/// Registers host `name` with tunnel address `10.0.0.0 + n`, mapping physical network
/// `physnet1`.
pub(crate) fn host(name: &str, n: u32) -> Command {
    let spec = HostSpec { physical_networks: vec!["physnet1".into()], ..HostSpec::new(name, Ipv4Addr::from(0x0a00_0000 + n)) };
    Command::PutHost { spec: Valid::new(spec).expect("a valid host"), now_ms: 0 }
}

/// Creates overlay `name` on `subnet`, with `vni` or one the model picks.
pub(crate) fn overlay(name: &str, subnet: &str, vni: Option<u32>) -> Command {
    let spec = NetworkSpec { kind: NetworkKind::Overlay { vni }, ..NetworkSpec::overlay(name, subnet) };
    Command::PutNetwork { spec: Valid::new(spec).expect("a valid network"), create: true, if_match: None }
}

/// Creates dual-stack overlay `name` on `subnet` and `subnet6`.
pub(crate) fn dual(name: &str, subnet: &str, subnet6: &str) -> Command {
    let spec = NetworkSpec { subnet6: Some(subnet6.into()), ..NetworkSpec::overlay(name, subnet) };
    Command::PutNetwork { spec: Valid::new(spec).expect("a valid network"), create: true, if_match: None }
}

/// Creates underlay `name` on `subnet`, VLAN `vlan` of `physnet1`.
pub(crate) fn underlay(name: &str, subnet: &str, vlan: Option<u16>) -> Command {
    let spec = NetworkSpec { kind: NetworkKind::Underlay { physical_network: "physnet1".into(), vlan }, ..NetworkSpec::overlay(name, subnet) };
    Command::PutNetwork { spec: Valid::new(spec).expect("a valid network"), create: true, if_match: None }
}

/// Creates endpoint `id` of `network` on `host`, with an allocated address.
pub(crate) fn endpoint(network: &str, id: &str, host: &str) -> Command {
    endpoint_with(network, EndpointSpec::on(host).id(id))
}

/// Creates an endpoint of `network` from `spec`.
pub(crate) fn endpoint_with(network: &str, spec: EndpointSpec) -> Command {
    Command::CreateEndpoint { network: network.into(), spec: Valid::new(spec).expect("a valid endpoint"), now_ms: 0 }
}
