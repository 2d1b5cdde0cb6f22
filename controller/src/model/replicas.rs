//! The state machine under random command sequences, refused ones included: it never panics,
//! two replicas (one reading each command back from its log form, JSON) give the same results
//! and end identical, and no address or MAC is ever held twice.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use plexus_api::network::Cidr;
use plexus_api::{EndpointSpec, IpamMode, NetworkKind, NetworkSpec, RouterSpec, Valid};
use proptest::prelude::*;

use super::testing::host;
use super::{Command, Model};

const NETS: [&str; 2] = ["red", "blue"];
const SUBNETS: [&str; 3] = ["10.1.0.0/24", "10.1.0.0/28", "10.2.0.0/24"];

fn network(name: usize, subnet: usize, host_subnet: bool, gateway: Option<u8>, create: bool) -> Option<Command> {
    let base = NetworkSpec::overlay(NETS[name], SUBNETS[subnet]);
    let cidr = Cidr::parse(SUBNETS[subnet]).ok()?;
    let gateway = gateway.map(|g| Ipv4Addr::from(u32::from(cidr.addr) + g as u32));
    let spec = NetworkSpec {
        ipam: if host_subnet { IpamMode::HostSubnet } else { IpamMode::Cluster },
        host_prefix: host_subnet.then_some(if cidr.len == 24 { 26 } else { 30 }),
        gateway,
        kind: NetworkKind::Overlay { vni: None },
        ..base
    };
    // A spec that does not validate cannot become a command (the API refuses it first).
    Some(Command::PutNetwork { spec: Valid::new(spec).ok()?, create, if_match: None })
}

fn endpoint(net: usize, id: u8, host: u8, ip: Option<u8>, mac: Option<u8>) -> Option<Command> {
    let mut spec = EndpointSpec::on(&format!("h{host}")).id(&format!("e{id}"));
    // Addresses in and out of every subnet above, the gateways among them.
    spec.ip = ip.map(|i| Ipv4Addr::new(10, 1 + i % 2, 0, i / 2));
    // MACs a derived MAC may collide with.
    spec.mac = mac.map(|m| format!("0a:58:0a:01:00:{m:02x}"));
    Some(Command::CreateEndpoint { network: NETS[net].into(), spec: Valid::new(spec).ok()?, now_ms: 0 })
}

fn command() -> impl Strategy<Value = Option<Command>> {
    prop_oneof![
        3 => (0..2usize, 0..3usize, any::<bool>(), proptest::option::of(1..20u8), any::<bool>())
            .prop_map(|(n, s, hs, gw, create)| network(n, s, hs, gw, create)),
        6 => (0..2usize, 0..8u8, 0..3u8, proptest::option::of(0..40u8), proptest::option::of(0..20u8))
            .prop_map(|(n, id, h, ip, mac)| endpoint(n, id, h, ip, mac)),
        2 => (0..2usize, 0..8u8, proptest::option::of(0..3u8)).prop_map(|(n, id, h)| Some(Command::DeleteEndpoint {
            network: NETS[n].into(),
            id: format!("e{id}"),
            on_host: h.map(|h| format!("h{h}"))
        })),
        1 => (0..2usize, any::<bool>(), proptest::option::of(0..3u8))
            .prop_map(|(n, force, h)| Some(Command::DeleteNetwork { name: NETS[n].into(), if_match: None, force, owner: h.map(|h| format!("h{h}")) })),
        1 => (proptest::collection::vec(0..2usize, 0..3), any::<bool>()).prop_map(|(nets, create)| {
            let spec = RouterSpec { name: "r".into(), networks: nets.into_iter().map(|n| NETS[n].to_string()).collect(), external: false, external_gateway: None, labels: BTreeMap::new() };
            Valid::new(spec).ok().map(|spec| Command::PutRouter { spec, create, if_match: None })
        }),
        1 => Just(Some(Command::DeleteRouter { name: "r".into() })),
        1 => (0..3u32, 0..3u64).prop_map(|(h, t)| {
            let Command::PutHost { spec, .. } = host(&format!("h{h}"), h + 1) else { return None };
            Some(Command::PutHost { spec, now_ms: t * 400_000 })
        }),
    ]
}

/// What must hold after every command, whatever was refused.
fn check_invariants(m: &Model) -> Result<(), TestCaseError> {
    for (name, eps) in &m.endpoints {
        let net = m.networks.get(name).ok_or_else(|| TestCaseError::fail(format!("endpoints of a missing network {name}")))?;
        let cidr = net.spec.cidr().ok_or_else(|| TestCaseError::fail("a stored network without a subnet"))?;
        let (mut ips, mut macs) = (HashSet::new(), HashSet::new());
        for e in eps.values() {
            prop_assert!(ips.insert(e.ip), "{} handed out twice in {name}", e.ip);
            prop_assert!(macs.insert(e.mac), "{} worn twice in {name}", e.mac);
            prop_assert!(cidr.contains(e.ip) && e.ip != cidr.addr && e.ip != cidr.broadcast(), "{} outside {}", e.ip, net.spec.subnet);
            prop_assert!(Some(e.ip) != net.spec.gateway, "{} is {name}'s gateway", e.ip);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn replicas_applying_the_same_log_never_panic_and_never_diverge(cmds in proptest::collection::vec(command(), 1..60)) {
        let (mut a, mut b) = (Model::default(), Model::default());
        for h in 0..3 {
            a.apply(host(&format!("h{h}"), h + 1)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            b.apply(host(&format!("h{h}"), h + 1)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        for cmd in cmds.into_iter().flatten() {
            // Replica b reads the command back from the log's form.
            let logged: Command = serde_json::from_str(&serde_json::to_string(&cmd).map_err(|e| TestCaseError::fail(e.to_string()))?)
                .map_err(|e| TestCaseError::fail(format!("a logged command does not read back: {e}")))?;
            let (ra, rb) = (a.apply(cmd), b.apply(logged));
            prop_assert_eq!(&ra, &rb);
            check_invariants(&a)?;
        }
        prop_assert_eq!(&a, &b);
        let mut loaded: Model = serde_json::from_value(serde_json::to_value(&a).map_err(|e| TestCaseError::fail(e.to_string()))?)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        loaded.reindex();
        prop_assert_eq!(&loaded, &a, "a snapshot reloads to the same model");
    }
}

#[test]
fn a_network_re_subnetted_under_a_live_lease_allocates_from_the_new_subnet() {
    let mut m = Model::default();
    m.apply(host("h1", 1)).unwrap();
    m.apply(network(0, 0, true, None, true).unwrap()).unwrap();
    // h1 leases a block of 10.1.0.0/24; its only endpoint goes, the lease stays.
    m.apply(endpoint(0, 1, 1, None, None).unwrap()).unwrap();
    m.apply(Command::DeleteEndpoint { network: "red".into(), id: "e1".into(), on_host: None }).unwrap();
    // The subnet moves to 10.2.0.0/24 while h1 still holds its old block.
    m.apply(network(0, 2, true, None, false).unwrap()).unwrap();
    let Ok(Some(super::Object::Endpoint(e))) = m.apply(endpoint(0, 2, 1, None, None).unwrap()) else { panic!("the next endpoint is refused") };
    assert!(Cidr::parse("10.2.0.0/24").unwrap().contains(e.ip), "{} is outside the new subnet", e.ip);
}

#[test]
fn a_gateway_cannot_move_onto_an_endpoint_and_a_claimed_mac_skips_one_address() {
    let mut m = Model::default();
    m.apply(host("h1", 1)).unwrap();
    m.apply(network(0, 0, false, None, true).unwrap()).unwrap();
    m.apply(endpoint(0, 1, 1, None, None).unwrap()).unwrap(); // 10.1.0.2
    let err = m.apply(network(0, 0, false, Some(2), false).unwrap()).unwrap_err();
    assert_eq!((err.status, err.field.as_deref()), (409, Some("gateway")), "{err}");
    // e2 at .9 claims the MAC .3 would derive; the next automatic address skips .3 and
    // allocation goes on.
    m.apply(endpoint(0, 2, 1, Some(18), Some(3)).unwrap()).unwrap();
    let Ok(Some(super::Object::Endpoint(e))) = m.apply(endpoint(0, 3, 1, None, None).unwrap()) else { panic!("allocation is blocked") };
    assert_eq!(e.ip.to_string(), "10.1.0.4");
    let Ok(Some(super::Object::Endpoint(e))) = m.apply(endpoint(0, 4, 1, None, None).unwrap()) else { panic!("allocation is blocked") };
    assert_eq!(e.ip.to_string(), "10.1.0.5");
}
