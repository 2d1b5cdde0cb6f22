//! Bridge mappings against a real OVS: a physical network mapped to the underlay interface
//! (on `br-phy` already) or to a bridge is patched to `br-int`; one mapped to an interface on
//! no bridge gets a bridge of its own; one mapped to an interface that does not exist is
//! reported with the reason and the others are made all the same. Applying again changes
//! nothing.

use std::collections::BTreeMap;

use plexus_agent::agent::mappings::{ensure, Host};
use plexus_api::network::{uplink_peer, uplink_port};
use plexus_lab::wire;
use plexus_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn mappings_patch_physical_networks_to_br_int_and_a_missing_interface_is_reported() {
    let lab = lab('m', 1);
    let h = &lab.hosts[0];
    let vs = wire::vswitch(h).await.expect("ovsdb");
    wire::prepare_host(h, &vs).await.expect("br-int and br-phy");
    h.exec(&["ip", "link", "add", "ext1", "type", "veth", "peer", "name", "ext1p"]).expect("a spare interface");
    let mappings: BTreeMap<String, String> = [("physnet1", "eth0"), ("physnet2", "ext1"), ("physnet3", "nope0"), ("physnet4", "br-phy")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let ns = plexus_agent::netns::path(&h.netns);
    let host = Host { netns: Some(&ns), datapath_type: "netdev" };
    let got = ensure(host, &vs, &mappings).await;
    assert_eq!(got.ok, ["physnet1", "physnet2", "physnet4"]);
    assert_eq!(got.failed.len(), 1, "{:?}", got.failed);
    assert!(got.failed[0].starts_with("physnet3=nope0") && got.failed[0].contains("no interface or OVS bridge nope0"), "{:?}", got.failed);
    let int = vs.ports("br-int").await.expect("br-int's ports");
    for p in ["physnet1", "physnet2", "physnet4"] {
        assert!(int.contains(&uplink_port(p)), "br-int has {p}'s uplink: {int:?}");
    }
    assert!(!int.contains(&uplink_port("physnet3")), "no uplink for a mapping that failed");
    let phy = vs.ports("br-phy").await.expect("br-phy's ports");
    assert!(phy.contains(&uplink_peer("physnet1")) && phy.contains(&uplink_peer("physnet4")), "{phy:?}");
    // ext1 was on no bridge: it got one of its own, patched to br-int.
    let own = vs.bridges().await.expect("bridges").into_iter().find(|b| b.starts_with("plx-b")).expect("a bridge for ext1");
    let ports = vs.ports(&own).await.expect("its ports");
    assert!(ports.contains(&"ext1".to_string()) && ports.contains(&uplink_peer("physnet2")), "{ports:?}");
    for p in ["physnet1", "physnet2"] {
        vs.wait_ofport(&uplink_port(p), std::time::Duration::from_secs(10)).await.expect("the patch is up in ovs-vswitchd");
    }
    // Again: the same outcome, nothing new.
    let bridges = vs.bridges().await.expect("bridges").len();
    assert_eq!(ensure(host, &vs, &mappings).await, got);
    assert_eq!(vs.bridges().await.expect("bridges").len(), bridges);
}
