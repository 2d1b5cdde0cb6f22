//! Underlay networks (issue 12): every lab agent maps `physnet1` to its host's underlay link.
//! Containers on VLAN 100 on h1 and h3 talk across the physical network with the tag on the
//! wire; VLAN 200 cannot reach them even with addresses in the same subnet; a machine on the
//! underlay that is not a Plexus host reaches a container on the flat (untagged) network;
//! an underlay network's containers get the link's whole MTU. Bad input is refused with the
//! field.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use plexus_api::{NetworkKind, NetworkSpec};
use plexus_lab::{probe, ControlPlane, Lab, LabConfig};

fn plexus(cp: &ControlPlane, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plexus")).args(args).envs(cp.envs().expect("credentials")).output().expect("plexus");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn underlay(name: &str, subnet: &str, vlan: Option<u16>) -> NetworkSpec {
    NetworkSpec { kind: NetworkKind::Underlay { physical_network: "physnet1".into(), vlan }, ..NetworkSpec::overlay(name, subnet) }
}

/// `ping -M do -s SIZE` from a container: whether it was answered, and what it said.
fn df_ping(ns: &str, to: Ipv4Addr, size: u32) -> (bool, String) {
    let out = plexus_agent::netns::exec(ns, &["ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", &size.to_string(), &to.to_string()]).expect("ping");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread")]
async fn vlan_and_flat_networks_carry_containers_on_the_physical_network() {
    let lab = Lab::up(&LabConfig::owned(&plexus_tests::unique_name('u'), 3)).expect("lab");
    let cp = lab.start_control_plane(Path::new(env!("CARGO_BIN_EXE_plexus"))).expect("control plane");
    let api = cp.client().expect("client");
    // The agents register physnet1 once they have mapped it.
    let t = Instant::now();
    loop {
        let hosts = api.hosts().await.unwrap_or_default();
        if hosts.len() == 3 && hosts.iter().all(|h| h.spec.physical_networks == ["physnet1"]) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "hosts did not register physnet1: {hosts:?} (logs in {})", lab.dir.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.create_network(&underlay("v100", "10.100.0.0/24", Some(100))).await.expect("VLAN 100");
    // The same subnet on another VLAN: only the tag keeps them apart.
    api.create_network(&underlay("v200", "10.100.0.0/24", Some(200))).await.expect("VLAN 200");
    api.create_network(&underlay("flat", "192.168.77.0/24", None)).await.expect("flat");

    // Through the CLI, which gives each container its network's MTU: the link's whole 1500.
    let run = |host: &str, name: &str, net: &str, ip: &str| {
        let (ok, out) = plexus(&cp, &["lab", "run", "--name", &lab.name, host, name, "--network", net, "--ip", ip]);
        assert!(ok, "lab run {name}: {out}");
        assert!(out.contains("mtu 1500"), "an underlay container gets the link's MTU: {out}");
    };
    run("h1", "a1", "v100", "10.100.0.11");
    run("h3", "a3", "v100", "10.100.0.13");
    run("h1", "b1", "v200", "10.100.0.21");
    run("h2", "f2", "flat", "192.168.77.12");
    let ns = |c: &str| format!("plx-{}-{c}", lab.name);
    let (a3, f2) = (Ipv4Addr::new(10, 100, 0, 13), Ipv4Addr::new(192, 168, 77, 12));

    // VLAN 100 across hosts, with the tag on the wire between h1 and the underlay switch.
    let ul = lab.underlay_netns();
    let dump = std::thread::spawn(move || {
        plexus_agent::netns::exec(&ul, &["timeout", "10", "tcpdump", "-i", "h1", "-e", "-n", "-c", "2", "vlan", "100", "and", "icmp"])
            .expect("tcpdump (install tcpdump)")
    });
    std::thread::sleep(Duration::from_millis(700));
    let (from, to) = (ns("a1"), a3);
    let r = tokio::task::spawn_blocking(move || probe::wait_ping(&from, to, Duration::from_secs(10))).await.unwrap();
    assert!(r.is_ok(), "a1 (h1) -> a3 (h3) on VLAN 100: {r:?} (logs in {})", lab.dir.display());
    let dump = dump.join().expect("tcpdump");
    let seen = String::from_utf8_lossy(&dump.stdout);
    assert!(seen.contains("vlan 100"), "the underlay link carries VLAN 100 frames: {seen:?} {}", String::from_utf8_lossy(&dump.stderr));
    let tr = probe::tcp_transfer(&ns("a1"), &ns("a3"), a3, 4 << 20).expect("tcp");
    assert!(tr.intact, "4 MB of TCP across VLAN 100: {} bytes", tr.bytes);
    // The full-size DF packet crosses; one byte more is refused at the sender.
    let (ok, out) = df_ping(&ns("a1"), a3, 1500 - 28);
    assert!(ok, "1472-byte DF ping across hosts: {out}");
    let (ok, out) = df_ping(&ns("a1"), a3, 1500 - 27);
    assert!(!ok && out.contains("message too long"), "one byte more: {out}");

    // VLAN 200 is apart, even in the same subnet.
    assert_eq!(probe::ping(&ns("b1"), a3, 3, Duration::from_millis(200)).expect("ping"), 0, "VLAN 200 reaches nothing on VLAN 100");

    // A machine on the physical network that Plexus does not know reaches the flat network.
    let outsider = lab.add_outsider("o", 200).expect("outsider");
    plexus_agent::netns::exec(&outsider.netns, &["ip", "addr", "add", "192.168.77.200/24", "dev", "eth0"]).expect("address");
    let (from, to) = (outsider.netns.clone(), f2);
    let r = tokio::task::spawn_blocking(move || probe::wait_ping(&from, to, Duration::from_secs(10))).await.unwrap();
    assert!(r.is_ok(), "the underlay machine reaches f2 on the flat network: {r:?}");
    // ... but not a tagged network's container (its frames are untagged).
    plexus_agent::netns::exec(&outsider.netns, &["ip", "addr", "add", "10.100.0.200/24", "dev", "eth0"]).expect("address");
    assert_eq!(probe::ping(&outsider.netns, a3, 3, Duration::from_millis(200)).expect("ping"), 0, "untagged frames do not reach VLAN 100");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_underlay_networks_are_refused_with_the_field() {
    let lab = Lab::up(&LabConfig::owned(&plexus_tests::unique_name('u'), 1)).expect("lab");
    let cp = lab.start_control_plane(Path::new(env!("CARGO_BIN_EXE_plexus"))).expect("control plane");
    let api = cp.client().expect("client");
    let t = Instant::now();
    while !api.hosts().await.unwrap_or_default().iter().any(|h| !h.spec.physical_networks.is_empty()) {
        assert!(t.elapsed() < Duration::from_secs(30), "h1 did not register physnet1");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.create_network(&underlay("v100", "10.100.0.0/24", Some(100))).await.expect("VLAN 100");
    let http = cp.http().expect("http");
    for (body, want) in [
        (
            serde_json::json!({"name": "x", "kind": {"type": "underlay", "physical_network": "physnet9"}, "subnet": "10.9.0.0/24"}),
            (422, "kind.physical_network"),
        ),
        (
            serde_json::json!({"name": "x", "kind": {"type": "underlay", "physical_network": "physnet1", "vlan": 4095}, "subnet": "10.9.0.0/24"}),
            (422, "kind.vlan"),
        ),
        (
            serde_json::json!({"name": "x", "kind": {"type": "underlay", "physical_network": "physnet1", "vlan": 100}, "subnet": "10.9.0.0/24"}),
            (409, "kind.vlan"),
        ),
        (serde_json::json!({"name": "x", "kind": {"type": "underlay", "physical_network": "physnet1"}, "subnet": "10.9.0.0/24", "mtu": 9000}), (422, "mtu")),
    ] {
        let r = http.post(format!("{}/v1/networks", cp.api)).json(&body).send().await.expect("post");
        let status = r.status().as_u16();
        let p: serde_json::Value = r.json().await.unwrap_or_default();
        assert_eq!((status, p["field"].as_str()), (want.0, Some(want.1)), "{body}: {p}");
    }
    assert_eq!(api.networks().await.expect("networks").len(), 1, "nothing else was stored");
    // Policies and routers stay with overlays.
    let (ok, out) = plexus(&cp, &["router", "create", "r", "--network", "v100"]);
    assert!(!ok && out.contains("not an overlay"), "{out}");
}
