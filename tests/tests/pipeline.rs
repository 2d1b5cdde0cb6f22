//! The flow compiler on real switches: a model compiled into each lab host's flows makes
//! endpoints of one network talk across hosts, and keeps networks with the same subnet apart.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use plexus_agent::lab::{probe, wire, Container, Lab};
use plexus_api::{EndpointSpec, HostSpec, NetworkKind, NetworkSpec};
use plexus_controller::flows::{compile, SwitchView};
use plexus_controller::model::{Command, Model, Object};
use plexus_ovs::openflow::Message;
use plexus_tests::*;

struct Placed {
    container: Container,
    ip: Ipv4Addr,
    mac: String,
}

fn model_for(lab: &Lab, eps: &[(&str, &str, &str)]) -> (Model, Vec<(String, String, plexus_api::Endpoint)>) {
    let mut m = Model::default();
    for h in &lab.hosts {
        let spec = HostSpec { name: h.name.clone(), tunnel_ip: h.underlay_ip, encap: Default::default(), labels: Default::default() };
        m.apply(Command::PutHost { spec, now_ms: 0 }).unwrap();
    }
    for net in ["red", "blue"] {
        let spec = NetworkSpec {
            name: net.into(),
            kind: NetworkKind::Overlay { vni: None },
            subnet: "10.10.0.0/24".into(),
            gateway: None,
            mtu: None,
            ipam: Default::default(),
            host_prefix: None,
            lease_ttl_seconds: None,
            labels: Default::default(),
        };
        m.apply(Command::PutNetwork { spec, create: true, if_match: None }).unwrap();
    }
    let mut placed = Vec::new();
    for (cname, net, host) in eps {
        // b3 asks for .50: an address (and so a MAC) only blue has.
        let ip = (*cname == "b3").then(|| Ipv4Addr::new(10, 10, 0, 50));
        let spec = EndpointSpec { id: Some(cname.to_string()), host: host.to_string(), ip, mac: None, owner: None, labels: Default::default() };
        let Some(Object::Endpoint(e)) = m.apply(Command::CreateEndpoint { network: net.to_string(), spec, now_ms: 0 }).unwrap() else { panic!() };
        placed.push((cname.to_string(), net.to_string(), e));
    }
    (m, placed)
}

#[tokio::test(flavor = "multi_thread")]
async fn compiled_flows_join_a_network_across_hosts_and_keep_networks_apart() {
    let lab = lab('p', 3);
    let eps = [("r1", "red", "h1"), ("r2", "red", "h2"), ("r3", "red", "h3"), ("b1", "blue", "h1"), ("b3", "blue", "h3")];
    let (model, endpoints) = model_for(&lab, &eps);
    let mut placed: BTreeMap<String, Placed> = BTreeMap::new();
    let mut views = BTreeMap::new();
    for h in &lab.hosts {
        let vs = wire::vswitch(h).await.unwrap();
        let tunnel_port = wire::prepare_host(h, &vs).await.unwrap();
        let mut ports = BTreeMap::new();
        for (cname, net, e) in endpoints.iter().filter(|(_, _, e)| e.host == h.name) {
            let c = lab.add_container_with(h, cname, e.ip, e.prefix_len, Some(&e.mac), 1450).unwrap();
            ports.insert(format!("{net}/{}", e.id), wire::plug(&vs, &c).await.unwrap());
            placed.insert(cname.clone(), Placed { container: c, ip: e.ip, mac: e.mac.clone() });
        }
        views.insert(h.name.clone(), SwitchView { host: h.name.clone(), tunnel_port, ports });
    }
    for h in &lab.hosts {
        let flows = compile(&model, &views[&h.name]);
        let of = wire::openflow(h).await.unwrap();
        of.bundle(&flows.into_iter().map(Message::FlowMod).collect::<Vec<_>>()).await.expect("the switch takes every compiled flow");
    }
    let ns = |c: &str| placed[c].container.netns.clone();
    let ip = |c: &str| placed[c].ip;
    let ping = |from: String, to: Ipv4Addr, n: u32| tokio::task::spawn_blocking(move || probe::ping(&from, to, n, Duration::from_millis(100)).unwrap());
    // Same network, every pair of hosts.
    for (a, b) in [("r1", "r2"), ("r1", "r3"), ("r2", "r3"), ("b1", "b3")] {
        let (from, to) = (ns(a), ip(b));
        tokio::task::spawn_blocking(move || probe::wait_ping(&from, to, Duration::from_secs(10))).await.unwrap().unwrap_or_else(|e| panic!("{a} -> {b}: {e}"));
        assert_eq!(ping(ns(a), ip(b), 3).await.unwrap(), 3, "{a} -> {b}");
    }
    let (f, t, tip) = (ns("r1"), ns("r3"), ip("r3"));
    let tr = tokio::task::spawn_blocking(move || probe::tcp_transfer(&f, &t, tip, 2 << 20)).await.unwrap().unwrap();
    assert!(tr.intact, "TCP between h1 and h3");

    // Isolation. b1 has r1's address (the same subnet in both networks); b3 sits at .50.
    assert_eq!(ip("b1"), ip("r1"));
    // A frame to blue's MAC from a red endpoint goes nowhere.
    let r1 = ns("r1");
    let b3mac = placed["b3"].mac.clone();
    let b3ip = ip("b3");
    run("ip", &["netns", "exec", &r1, "ip", "neigh", "replace", &b3ip.to_string(), "lladdr", &b3mac, "dev", "eth0", "nud", "permanent"]);
    assert_eq!(ping(r1.clone(), b3ip, 3).await.unwrap(), 0, "a forged destination MAC does not cross into blue");
    // A forged source address or MAC is dropped at the port.
    run("ip", &["netns", "exec", &r1, "ip", "neigh", "del", &b3ip.to_string(), "dev", "eth0"]);
    run("ip", &["netns", "exec", &r1, "ip", "addr", "add", "10.10.0.99/24", "dev", "eth0"]);
    let out = std::process::Command::new("ip").args(["netns", "exec", &r1, "ping", "-c", "3", "-i", "0.1", "-W", "1", "-I", "10.10.0.99", &ip("r2").to_string()]).output().unwrap();
    assert!(!out.status.success(), "a forged source address is dropped");
    run("ip", &["netns", "exec", &r1, "ip", "addr", "del", "10.10.0.99/24", "dev", "eth0"]);
    run("ip", &["netns", "exec", &r1, "ip", "link", "set", "eth0", "address", "02:00:00:00:66:66"]);
    run("ip", &["netns", "exec", &r1, "ip", "neigh", "flush", "all"]);
    assert_eq!(ping(r1.clone(), ip("r2"), 3).await.unwrap(), 0, "a forged source MAC is dropped");

    // h2 has no blue endpoint: its switch holds no blue flow, so blue broadcast never reaches it.
    let h2_flows = dump_flows(&lab.hosts[1], wire::BR_INT);
    let blue_vni = match &model.networks["blue"].spec.kind {
        NetworkKind::Overlay { vni: Some(v) } => *v,
        _ => unreachable!(),
    };
    assert!(h2_flows.iter().all(|f| !f.contains(&format!("reg0={blue_vni:#x}")) && !f.contains(&format!("tun_id={blue_vni:#x}"))), "{h2_flows:#?}");
    // ARP was answered on the local switch: the responder's flows on h1 counted requests.
    let of = wire::openflow(&lab.hosts[0]).await.unwrap();
    let arp_table = plexus_controller::flows::pipeline::table("arp-responder");
    let answered: u64 = of.dump_flows(Default::default()).await.unwrap().iter().filter(|f| f.table_id == arp_table && f.priority == 100).map(|f| f.packet_count).sum();
    assert!(answered > 0, "ARP requests were answered in the switch");
}
