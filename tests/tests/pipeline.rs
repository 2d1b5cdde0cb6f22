//! The flow compiler on real switches: a model compiled into each lab host's flows makes
//! endpoints of one network talk across hosts, and keeps networks with the same subnet apart.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use plexus_api::{EndpointKey, EndpointSpec, HostSpec, NetworkKind, NetworkSpec, Valid};
use plexus_controller::flows::pipeline::priority;
use plexus_controller::flows::{compile, reconcile, unit_cookie, SwitchView, Table, Unit};
use plexus_controller::model::{Command, Model, Object};
use plexus_lab::{probe, wire, Container, Lab};
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
        let spec = Valid::new(HostSpec::new(&h.name, h.underlay_ip)).unwrap();
        m.apply(Command::PutHost { spec, now_ms: 0 }).unwrap();
    }
    for net in ["red", "blue"] {
        let spec = Valid::new(NetworkSpec::overlay(net, "10.10.0.0/24")).unwrap();
        m.apply(Command::PutNetwork { spec, create: true, if_match: None }).unwrap();
    }
    let mut placed = Vec::new();
    for (cname, net, host) in eps {
        // b3 asks for .50: an address (and so a MAC) only blue has.
        let ip = (*cname == "b3").then(|| Ipv4Addr::new(10, 10, 0, 50));
        let spec = Valid::new(EndpointSpec { ip, ..EndpointSpec::on(host).id(cname) }).unwrap();
        let Some(Object::Endpoint(e)) = m.apply(Command::CreateEndpoint { network: net.to_string(), spec, now_ms: 0 }).unwrap() else { panic!() };
        placed.push((cname.to_string(), net.to_string(), e));
    }
    (m, placed)
}

/// Hosts prepared for tunnels, one container per endpoint with the address and MAC the model
/// gave it, plugged into `br-int`.
async fn setup(lab: &Lab, model: &Model, endpoints: &[(String, String, plexus_api::Endpoint)]) -> (BTreeMap<String, Placed>, BTreeMap<String, SwitchView>) {
    let _ = model;
    let mut placed: BTreeMap<String, Placed> = BTreeMap::new();
    let mut views = BTreeMap::new();
    for h in &lab.hosts {
        let vs = wire::vswitch(h).await.unwrap();
        let tunnel_port = wire::prepare_host(h, &vs).await.unwrap();
        // The switch manager's part: the hold flows name the hold meter.
        plexus_controller::flows::ensure_hold_meter(&wire::openflow(h).await.unwrap(), true).await.expect("the hold meter");
        let mut ports = BTreeMap::new();
        for (cname, net, e) in endpoints.iter().filter(|(_, _, e)| e.host == h.name) {
            let c = lab.add_container_with(h, cname, e.ip, e.prefix_len, Some(&e.mac.to_string()), 1450).unwrap();
            ports.insert(EndpointKey::new(net, &e.id), wire::plug(&vs, &c).await.unwrap());
            placed.insert(cname.clone(), Placed { container: c, ip: e.ip, mac: e.mac.to_string() });
        }
        views.insert(h.name.clone(), SwitchView { host: h.name.clone(), tunnel_port, external_port: None, uplinks: Default::default(), ports });
    }
    (placed, views)
}

#[tokio::test(flavor = "multi_thread")]
async fn compiled_flows_join_a_network_across_hosts_and_keep_networks_apart() {
    let lab = lab('p', 3);
    let eps = [("r1", "red", "h1"), ("r2", "red", "h2"), ("r3", "red", "h3"), ("b1", "blue", "h1"), ("b3", "blue", "h3")];
    let (model, endpoints) = model_for(&lab, &eps);
    let (placed, views) = setup(&lab, &model, &endpoints).await;
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
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &r1, "ping", "-c", "3", "-i", "0.1", "-W", "1", "-I", "10.10.0.99", &ip("r2").to_string()])
        .output()
        .unwrap();
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
    // ARP is answered on the local switch and never reaches the tunnel: while r2 resolves
    // r3 afresh, h2's responder counts the request and its broadcast flow (the only way a
    // broadcast leaves for a tunnel) counts nothing.
    let of2 = wire::openflow(&lab.hosts[1]).await.unwrap();
    let (arp_table, l2) = (Table::ArpResponder.id(), Table::L2Lookup.id());
    let counters = |flows: &[plexus_ovs::openflow::FlowStats]| {
        let arp: u64 = flows.iter().filter(|f| f.table_id == arp_table && f.priority == priority::OBJECT).map(|f| f.packet_count).sum();
        let bcast: u64 = flows.iter().filter(|f| f.table_id == l2 && f.priority == priority::NETWORK).map(|f| f.packet_count).sum();
        (arp, bcast)
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = counters(&of2.dump_flows(Default::default()).await.unwrap());
    let r2 = ns("r2");
    run("ip", &["netns", "exec", &r2, "ip", "neigh", "flush", "all"]);
    assert_eq!(ping(r2.clone(), ip("r3"), 2).await.unwrap(), 2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = counters(&of2.dump_flows(Default::default()).await.unwrap());
    assert!(after.0 > before.0, "h2 answered the ARP request itself: {before:?} -> {after:?}");
    assert_eq!(after.1, before.1, "no broadcast left h2 for the tunnel: {before:?} -> {after:?}");

    // Broadcast in blue reaches h3 (which has a blue endpoint) and never h2 (which has none).
    let rx = |h: &plexus_lab::LabHost| -> u64 {
        let out = run("ovs-ofctl", &["-O", "OpenFlow13", "dump-ports", &format!("unix:{}", h.ovs.mgmt_sock(wire::BR_INT).display()), "vxlan0"]);
        out.split("rx pkts=").nth(1).and_then(|r| r.split(',').next()).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (h2_before, h3_before) = (rx(&lab.hosts[1]), rx(&lab.hosts[2]));
    let b1 = ns("b1");
    let _ = std::process::Command::new("ip").args(["netns", "exec", &b1, "ping", "-b", "-c", "20", "-i", "0.05", "-W", "1", "10.10.0.255"]).output();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (h2_after, h3_after) = (rx(&lab.hosts[1]), rx(&lab.hosts[2]));
    assert!(h3_after >= h3_before + 20, "blue broadcast reached h3: {h3_before} -> {h3_after}");
    assert_eq!(h2_after, h2_before, "blue broadcast never reached h2, which has no blue endpoint");
}

async fn wait_ping(from: String, to: Ipv4Addr) -> bool {
    tokio::task::spawn_blocking(move || probe::wait_ping(&from, to, Duration::from_secs(10)).is_ok()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn reconciliation_sends_only_the_difference_and_undoes_tampering() {
    let lab = lab('p', 3);
    let eps = [("r1", "red", "h1"), ("r3", "red", "h3")];
    let (mut model, endpoints) = model_for(&lab, &eps);
    let (placed, mut views) = setup(&lab, &model, &endpoints).await;
    let conns = {
        let mut v = BTreeMap::new();
        for h in &lab.hosts {
            v.insert(h.name.clone(), wire::openflow(h).await.unwrap());
        }
        v
    };
    for h in &lab.hosts {
        let d = reconcile(&conns[&h.name], &compile(&model, &views[&h.name])).await.unwrap();
        assert!(d.delete.is_empty() && d.modify.is_empty(), "a fresh switch only gets adds: {d:?}");
    }
    let (r1, r3ip) = (placed["r1"].container.netns.clone(), placed["r3"].ip);
    assert!(wait_ping(r1.clone(), r3ip).await, "r1 reaches r3");
    // Compiled flows are exactly what the switch reports back: nothing left to do.
    for h in &lab.hosts {
        let d = reconcile(&conns[&h.name], &compile(&model, &views[&h.name])).await.unwrap();
        assert!(d.is_empty(), "{}: {d:?}", h.name);
    }
    // Someone deletes a Plexus flow and adds a foreign one: both are put right, and the
    // flows nobody touched keep their counters.
    let h1 = &lab.hosts[0];
    let mgmt = format!("unix:{}", h1.ovs.mgmt_sock(wire::BR_INT).display());
    let before = conns["h1"].dump_flows(Default::default()).await.unwrap();
    let counted: u64 = before.iter().map(|f| f.packet_count).sum();
    assert!(counted > 0);
    let r3mac = plexus_ovs::openflow::mac_u128(plexus_api::Mac::parse("mac", &placed["r3"].mac).unwrap().octets());
    let victim =
        before.iter().find(|f| f.match_.get(plexus_ovs::openflow::Field::EthDst).is_some_and(|m| m.value == r3mac)).expect("h1's flow towards r3").clone();
    run(
        "ovs-ofctl",
        &["-O", "OpenFlow13", "del-flows", &mgmt, &format!("table={},reg0={:#x},dl_dst={}", victim.table_id, model_vni(&model), placed["r3"].mac)],
    );
    run("ovs-ofctl", &["-O", "OpenFlow13", "add-flow", &mgmt, &format!("table={},priority=7,in_port=99,actions=drop", Table::Classify.id())]);
    let d = reconcile(&conns["h1"], &compile(&model, &views["h1"])).await.unwrap();
    assert_eq!((d.add.len(), d.delete.len(), d.modify.len(), d.replace.len()), (1, 1, 0, 0), "{d:?}");
    assert_eq!(d.add[0].match_, victim.match_);
    let after = conns["h1"].dump_flows(Default::default()).await.unwrap();
    for f in before.iter().filter(|f| f.match_ != victim.match_) {
        let g = after.iter().find(|g| g.table_id == f.table_id && g.priority == f.priority && g.match_ == f.match_).expect("still there");
        assert!(g.packet_count >= f.packet_count && g.duration_sec >= f.duration_sec, "an untouched flow was not re-added: {f:?} -> {g:?}");
    }
    assert!(wait_ping(r1.clone(), r3ip).await, "r1 reaches r3 again");

    // Deleting an endpoint removes its flows from every switch; re-creating it with the same
    // address brings them back.
    let r3 = endpoints.iter().find(|(c, _, _)| c == "r3").unwrap().2.clone();
    model.apply(Command::DeleteEndpoint { network: "red".into(), id: "r3".into(), on_host: None }).unwrap();
    views.get_mut("h3").unwrap().ports.remove(&EndpointKey::new("red", "r3"));
    for h in &lab.hosts {
        reconcile(&conns[&h.name], &compile(&model, &views[&h.name])).await.unwrap();
        let gone = unit_cookie(&Unit::Endpoint(EndpointKey::new("red", "r3")));
        assert!(conns[&h.name].dump_flows(Default::default()).await.unwrap().iter().all(|f| f.cookie != gone), "r3's flows left {}", h.name);
    }
    let out = std::process::Command::new("ip").args(["netns", "exec", &r1, "ping", "-c", "2", "-W", "1", &r3ip.to_string()]).output().unwrap();
    assert!(!out.status.success(), "r3 is unreachable once deleted");
    let spec = Valid::new(EndpointSpec::on("h3").id("r3").ip(r3.ip)).unwrap();
    model.apply(Command::CreateEndpoint { network: "red".into(), spec, now_ms: 0 }).unwrap();
    let port = wire::vswitch(&lab.hosts[2]).await.unwrap().ofport("r3").await.unwrap().unwrap() as u32;
    views.get_mut("h3").unwrap().ports.insert(EndpointKey::new("red", "r3"), port);
    for h in &lab.hosts {
        reconcile(&conns[&h.name], &compile(&model, &views[&h.name])).await.unwrap();
    }
    assert!(wait_ping(r1, r3ip).await, "re-created with the same address, r3 is reachable");
}

fn model_vni(m: &Model) -> u32 {
    match &m.networks["red"].spec.kind {
        NetworkKind::Overlay { vni: Some(v) } => *v,
        _ => unreachable!(),
    }
}
