//! The lab on real Open vSwitch: namespaced hosts whose containers talk through a VXLAN
//! tunnel that test code wires with the `ovs` crate alone.

use std::time::Duration;

use plexus_agent::netns;
use plexus_lab::{probe, wire, Daemon, Lab, LabConfig};
use plexus_tests::*;

fn pids(lab: &Lab) -> Vec<i32> {
    lab.hosts.iter().flat_map(|h| [h.ovs.pid(Daemon::OvsdbServer), h.ovs.pid(Daemon::Vswitchd)]).flatten().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_on_h1_and_h3_ping_and_carry_10mb_of_tcp_intact() {
    let lab = lab('l', 3);
    let (h1, h3) = (&lab.hosts[0], &lab.hosts[2]);
    let (c1, c3) = wire::connect_pair(&lab, h1, "c1", h3, "c3", 5001).await.expect("wiring through the ovs crate");
    let (n1, n3, ip1, ip3) = (c1.netns.clone(), c3.netns.clone(), c1.ip, c3.ip);
    let report = tokio::task::spawn_blocking(move || {
        probe::wait_ping(&n1, ip3, Duration::from_secs(10))?;
        let there = probe::ping(&n1, ip3, 5, Duration::from_millis(100))?;
        let back = probe::ping(&n3, ip1, 5, Duration::from_millis(100))?;
        let t = probe::tcp_transfer(&n1, &n3, ip3, 10 << 20)?;
        Ok::<_, plexus_lab::LabError>((there, back, t))
    })
    .await
    .unwrap()
    .expect("probes run");
    assert_eq!((report.0, report.1), (5, 5), "every ping answered both ways");
    println!("transfer: {:?} ({:.0} Mbit/s)", report.2, report.2.mbit_per_s());
    assert_eq!(report.2.bytes, 10 << 20);
    assert!(report.2.intact, "the 10 MB stream arrived intact");
    // The traffic really crossed the tunnel: the tunnel flow on h1 counted it.
    // (The userspace datapath folds its counters into the flows about once a second.)
    let of = wire::openflow(h1).await.unwrap();
    let mut counted = 0;
    for _ in 0..50 {
        counted = of.dump_flows(Default::default()).await.unwrap().iter().map(|f| f.byte_count).sum::<u64>();
        if counted > 10 << 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(counted > 10 << 20, "only {counted} bytes counted by the tunnel flows");

    // Down leaves nothing behind: no namespace, no daemon, no state.
    let (name, dir, running) = (lab.name.clone(), lab.dir.clone(), pids(&lab));
    assert_eq!(running.len(), 6);
    lab.down();
    let prefix = format!("plx-{name}-");
    assert!(netns::list().iter().all(|n| !n.starts_with(&prefix)), "namespaces left: {:?}", netns::list());
    for pid in running {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.contains(") Z")).unwrap_or(true),
            "process {pid} still runs"
        );
    }
    assert!(!dir.exists(), "state directory left");
    let root_links = run("ip", &["-o", "link", "show"]);
    assert!(!root_links.contains("c1@") && !root_links.contains("c3@"), "a veth leaked into the root namespace: {root_links}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_labs_run_side_by_side() {
    let a = lab('l', 2);
    let b = lab('l', 2);
    assert_ne!(a.hosts[0].underlay_ip, b.hosts[0].underlay_ip, "labs get different underlays");
    for l in [&a, &b] {
        assert!(l.hosts.iter().all(|h| h.ovs.running()));
        let (from, to) = (l.hosts[0].netns.clone(), l.hosts[1].underlay_ip);
        let got = tokio::task::spawn_blocking(move || probe::ping(&from, to, 3, Duration::from_millis(100))).await.unwrap().unwrap();
        assert_eq!(got, 3, "underlay of lab {} works", l.name);
        vsctl(&l.hosts[0], &["add-br", "brx", "--", "set", "bridge", "brx", "datapath_type=netdev"]);
    }
    // Each lab has its own database: a bridge added in one does not show in the other's.
    assert_eq!(vsctl(&a.hosts[0], &["list-br"]).trim(), "brx");
    assert_eq!(vsctl(&a.hosts[1], &["list-br"]).trim(), "");
    drop(a);
    assert!(b.hosts.iter().all(|h| h.ovs.running()), "removing one lab leaves the other running");
}

#[test]
fn bad_lab_parameters_are_refused_and_build_nothing() {
    init_tracing();
    let before = netns::list();
    for (name, hosts, field) in [("Bad-Name", 1, "lab name"), ("waytoolongname", 1, "lab name"), ("ok", 0, "hosts"), ("ok", 17, "hosts")] {
        match Lab::up(&LabConfig::owned(name, hosts)) {
            Err(plexus_lab::LabError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{name}/{hosts}: expected an invalid {field}, got {other:?}"),
        }
    }
    let name = unique_name('l');
    let first = Lab::up(&LabConfig::owned(&name, 1)).unwrap();
    assert!(matches!(Lab::up(&LabConfig::owned(&name, 1)), Err(plexus_lab::LabError::Exists(_))));
    assert!(first.hosts[0].ovs.running(), "a refused duplicate does not harm the original");
    drop(first);
    let after = netns::list();
    assert!(after.iter().all(|n| before.contains(n) || !n.contains(&name)), "{after:?}");
}

/// The MAC a host's OVS sends tunnel packets to for `peer`, from `tnl/neigh/show`.
fn tunnel_neighbour(host: &plexus_lab::LabHost, peer: std::net::Ipv4Addr) -> Option<String> {
    let table = host.ovs.appctl(&["tnl/neigh/show"]).expect("ovs-appctl tnl/neigh/show");
    table.lines().find_map(|l| {
        let mut cols = l.split_whitespace();
        (cols.next() == Some(&peer.to_string())).then(|| cols.next().map(str::to_string)).flatten()
    })
}

fn mac_of(ns: &str, dev: &str) -> String {
    let mac = plexus_agent::underlay::link_mac(Some(&netns::path(ns)), dev).unwrap_or_else(|e| panic!("{dev}'s MAC in {ns}: {e}"));
    plexus_api::mac::format_mac(mac)
}

/// A peer that met a host before the host's address moved onto `br-phy` learned the underlay
/// interface's MAC. The host must still be reachable through the tunnel, at once: `br-phy`
/// wears that same MAC, and the interface answers no ARP of its own that could tell peers
/// otherwise.
#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_met_the_host_before_its_address_moved_still_reaches_it() {
    let lab = lab('m', 2);
    let (h1, h2) = (&lab.hosts[0], &lab.hosts[1]);
    let c1 = lab.add_container(h1, "c1", std::net::Ipv4Addr::new(10, 0, 0, 1), 1450).unwrap();
    let c2 = lab.add_container(h2, "c2", std::net::Ipv4Addr::new(10, 0, 0, 2), 1450).unwrap();
    let (vs1, vs2) = (wire::vswitch(h1).await.unwrap(), wire::vswitch(h2).await.unwrap());
    let tun1 = wire::prepare_host(h1, &vs1).await.unwrap();
    // h1 talks to h2 while h2's address is still on its eth0: h1's kernel and OVS learn it.
    let (from, to) = (h1.netns.clone(), h2.underlay_ip);
    tokio::task::spawn_blocking(move || probe::wait_ping(&from, to, Duration::from_secs(5))).await.unwrap().expect("underlay ping h1 -> h2");
    let early = tunnel_neighbour(h1, h2.underlay_ip).expect("h1's OVS learned h2 from the early ping");
    assert_eq!(early, mac_of(&h2.netns, "eth0"));

    let tun2 = wire::prepare_host(h2, &vs2).await.unwrap();
    assert_eq!(mac_of(&h2.netns, "br-phy"), early, "br-phy wears the underlay interface's MAC");
    for (host, vs, c, tun, remote) in [(h1, &vs1, &c1, tun1, h2.underlay_ip), (h2, &vs2, &c2, tun2, h1.underlay_ip)] {
        let port = wire::plug(vs, c).await.unwrap();
        wire::openflow(host).await.unwrap().bundle(&wire::p2p_flows(port, tun, 5002, remote, 0x1)).await.unwrap();
    }
    let (n1, ip2) = (c1.netns.clone(), c2.ip);
    let first = tokio::task::spawn_blocking(move || probe::wait_ping(&n1, ip2, Duration::from_secs(5))).await.unwrap();
    assert!(first.is_ok(), "c1 -> c2 through the tunnel: {first:?}; h1 sends h2's tunnel packets to {:?}", tunnel_neighbour(h1, h2.underlay_ip));
    assert_eq!(tunnel_neighbour(h1, h2.underlay_ip).as_deref(), Some(early.as_str()));

    // The host's kernel takes one copy of each frame, through br-phy only.
    let out = run("ip", &["netns", "exec", &h1.netns, "ping", "-n", "-c", "5", "-i", "0.1", &h2.underlay_ip.to_string()]);
    assert!(out.contains("5 received") && !out.contains("DUP"), "underlay ping h1 -> h2 after the move: {out}");
}
