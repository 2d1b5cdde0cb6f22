//! `plexus attach` / `plexus detach` on a two-host lab whose hosts tunnel with Geneve: the
//! command runs in a host's namespace like an operator's shell on that host, plumbs a
//! namespace over netlink, and leaves nothing behind when it fails or is undone.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use plexus_api::{Encap, NetworkSpec};
use plexus_lab::{probe, ControlPlane, Lab, LabConfig};

const PLEXUS: &str = env!("CARGO_BIN_EXE_plexus");

/// Runs `plexus ARGS` inside host `h`'s namespace, pointed at that host's OVSDB and the API.
fn plexus_on(lab: &Lab, h: &str, cp: &ControlPlane, args: &[&str]) -> Output {
    let host = lab.host(h).unwrap();
    Command::new("ip")
        .args(["netns", "exec", &host.netns, PLEXUS])
        .args(args)
        .envs(cp.envs().unwrap())
        .env("PLEXUS_HOST", h)
        .env("PLEXUS_OVSDB", format!("unix:{}", host.ovs.db_sock().display()))
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn sh(ns: &str, args: &[&str]) -> String {
    let o = Command::new("ip").args(["netns", "exec", ns]).args(args).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn vsctl(lab: &Lab, h: &str, args: &[&str]) -> String {
    let host = lab.host(h).unwrap();
    let o = Command::new("ovs-vsctl").arg(format!("--db=unix:{}", host.ovs.db_sock().display())).args(args).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn new_netns(lab: &Lab, name: &str) -> String {
    let ns = format!("plx-{}-{name}", lab.name);
    assert!(Command::new("ip").args(["netns", "add", &ns]).status().unwrap().success());
    ns
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_plumbs_a_namespace_over_geneve_and_detach_removes_everything() {
    let name = plexus_tests::unique_name('a');
    let lab = Lab::up(&LabConfig { encap: Encap::Geneve, ..LabConfig::owned(&name, 2) }).expect("lab");
    let cp = lab.start_control_plane(Path::new(PLEXUS)).expect("control plane");
    let api = cp.client().unwrap();
    let t = Instant::now();
    while api.hosts().await.map(|h| h.len()).unwrap_or(0) < 2 {
        assert!(t.elapsed() < Duration::from_secs(20), "hosts did not register (logs in {})", lab.dir.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(api.hosts().await.unwrap().iter().all(|h| h.spec.encap == Encap::Geneve));
    let t = Instant::now();
    while vsctl(&lab, "h1", &["get", "Interface", "geneve0", "type"]) != "geneve" {
        assert!(t.elapsed() < Duration::from_secs(20), "h1's agent made no geneve0 tunnel port");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.create_network(&NetworkSpec::overlay("red", "10.30.0.0/24")).await.unwrap();
    api.create_network(&NetworkSpec::overlay("blue", "10.31.0.0/24")).await.unwrap();
    let (c1, c2) = (new_netns(&lab, "c1"), new_netns(&lab, "c2"));
    let (p1, p2) = (format!("/run/netns/{c1}"), format!("/run/netns/{c2}"));

    let o = plexus_on(&lab, "h1", &cp, &["attach", "--netns", &p1, "--network", "red", "--id", "c1"]);
    assert!(o.status.success(), "attach c1: {}", text(&o));
    assert!(text(&o).contains("default route via 10.30.0.1"), "{}", text(&o));
    let o = plexus_on(&lab, "h2", &cp, &["attach", "--netns", &p2, "--network", "red", "--ip", "10.30.0.77", "--id", "c2"]);
    assert!(o.status.success(), "attach c2: {}", text(&o));
    // A second interface on another network: named as asked, no second default route.
    let o = plexus_on(&lab, "h1", &cp, &["attach", "--netns", &p1, "--network", "blue", "--ifname", "eth1", "--id", "c1b"]);
    assert!(o.status.success(), "attach c1 to blue: {}", text(&o));
    assert!(!text(&o).contains("default route"), "{}", text(&o));

    // MTU is br-phy's 1500 less Geneve's 50; the default route goes via red's gateway.
    assert!(sh(&c1, &["ip", "-o", "link", "show", "eth0"]).contains("mtu 1450"), "{}", sh(&c1, &["ip", "-o", "link"]));
    let route = sh(&c1, &["ip", "route", "show", "default"]);
    assert!(route.starts_with("default via 10.30.0.1 dev eth0"), "{route}");
    assert!(sh(&c1, &["ip", "-o", "-4", "addr", "show", "eth1"]).contains("10.31.0."), "{}", sh(&c1, &["ip", "-o", "addr"]));
    assert!(sh(&c2, &["ip", "-o", "-4", "addr", "show", "eth0"]).contains("10.30.0.77/24"));
    let to = Ipv4Addr::new(10, 30, 0, 77);
    let n1 = c1.clone();
    let r = tokio::task::spawn_blocking(move || probe::wait_ping(&n1, to, Duration::from_secs(20))).await.unwrap();
    assert!(r.is_ok(), "c1 (h1) -> c2 (h2) over Geneve: {r:?} (logs in {})", lab.dir.display());
    // The gateway answers ARP locally, so the default route resolves.
    let n1 = c1.clone();
    let r = tokio::task::spawn_blocking(move || probe::wait_ping(&n1, Ipv4Addr::new(10, 30, 0, 1), Duration::from_secs(1))).await.unwrap();
    let neigh = sh(&c1, &["ip", "neigh", "show", "10.30.0.1"]);
    assert!(neigh.contains("lladdr"), "gateway ARP unanswered: {neigh} ({r:?})");

    // Bad requests fail clearly and leave nothing: no endpoint, no veth, no port.
    let ports = vsctl(&lab, "h1", &["list-ports", "br-int"]);
    let links = sh(&lab.hosts[0].netns, &["ip", "-o", "link"]).lines().count();
    let bad: [(&[&str], &str); 4] = [
        (&["attach", "--pid", "999999", "--network", "red"], "--pid 999999: no such process"),
        (&["attach", "--netns", &p1, "--network", "nope"], "nope"),
        (&["attach", "--netns", &p1, "--network", "red"], "already has an interface eth0"),
        (&["attach", "--netns", &p1, "--network", "red", "--ip", "10.30.0.77"], "10.30.0.77"),
    ];
    for (args, want) in bad {
        let o = plexus_on(&lab, "h1", &cp, args);
        assert!(!o.status.success() && text(&o).contains(want), "{args:?} should fail naming {want:?}: {}", text(&o));
    }
    assert_eq!(api.endpoints("red").await.unwrap().len(), 2, "failed attaches left endpoints");
    assert_eq!(vsctl(&lab, "h1", &["list-ports", "br-int"]), ports, "failed attaches left ports");
    assert_eq!(sh(&lab.hosts[0].netns, &["ip", "-o", "link"]).lines().count(), links, "failed attaches left veths");

    // Detach: port, veth, the container's interface and the endpoint go; traffic stops.
    let port = plexus_api::ids::port_name("red", "c2");
    let o = plexus_on(&lab, "h2", &cp, &["detach", "--network", "red", "c2"]);
    assert!(o.status.success(), "detach: {}", text(&o));
    assert!(!vsctl(&lab, "h2", &["list-ports", "br-int"]).contains(&port));
    assert!(!sh(&lab.hosts[1].netns, &["ip", "-o", "link"]).contains(&port));
    assert!(!sh(&c2, &["ip", "-o", "link"]).contains("eth0"));
    assert!(api.endpoints("red").await.unwrap().iter().all(|e| e.id != "c2"));
    let n1 = c1.clone();
    assert_eq!(tokio::task::spawn_blocking(move || probe::ping(&n1, to, 2, Duration::from_millis(200)).unwrap_or(9)).await.unwrap(), 0);
    let o = plexus_on(&lab, "h2", &cp, &["detach", "--network", "red", "c2"]);
    assert!(!o.status.success() && text(&o).contains("nothing to detach"), "{}", text(&o));
    // Re-attaching with the same address works.
    let o = plexus_on(&lab, "h2", &cp, &["attach", "--netns", &p2, "--network", "red", "--ip", "10.30.0.77", "--id", "c2"]);
    assert!(o.status.success(), "re-attach c2: {}", text(&o));
    let n1 = c1.clone();
    let r = tokio::task::spawn_blocking(move || probe::wait_ping(&n1, to, Duration::from_secs(20))).await.unwrap();
    assert!(r.is_ok(), "after re-attach: {r:?}");
}
