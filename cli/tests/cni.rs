//! Plexus as a CNI plugin: podman (Debian 12's uses CNI) runs containers on two lab hosts
//! through `plexus-cni`, and they talk to each other and to a lab container; the plugin is
//! also driven by hand as a runtime would, for CHECK, DEL and bad input.
//!
//! Needs `podman` and `containernetworking-plugins` (`scripts/deps` installs them) and
//! busybox-static (the image is a `podman import` of it); podman runs with a configuration of
//! its own ([`plexus_lab::podman`]).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use plexus_api::NetworkSpec;
use plexus_lab::podman::{Podman, IMAGE};
use plexus_lab::{probe, Lab, LabConfig};

const PLEXUS: &str = env!("CARGO_BIN_EXE_plexus");

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The lab's podman, with the containers it ran removed when dropped, even when the test fails.
struct Pods {
    pm: Podman,
    containers: Vec<String>,
}

impl Pods {
    fn ok(&self, args: &[&str]) -> String {
        self.pm.ok(args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn run(&self, args: &[&str]) -> Output {
        self.pm.run(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs a container on CNI network `net`; returns its id.
    fn container(&mut self, name: &str, net: &str) -> String {
        self.containers.push(name.to_string());
        self.ok(&["run", "-d", "--name", name, "--network", net, IMAGE, "sleep", "100000"])
    }

    /// The container's network namespace, by the name `ip netns exec` takes.
    fn netns(&self, name: &str) -> String {
        let key = self.ok(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", name]);
        key.rsplit('/').next().unwrap_or_default().to_string()
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = self.pm.run(&["rm", "-f", "-t", "0", c]);
        }
    }
}

/// Runs the plugin as a runtime does: `vars` and the configuration on stdin.
fn cni(plugin: &Path, vars: &[(&str, &str)], conf: &serde_json::Value) -> (bool, serde_json::Value) {
    let o = plexus_lab::podman::invoke(plugin, vars, conf).unwrap_or_else(|e| panic!("{e}"));
    let out = String::from_utf8_lossy(&o.stdout);
    let v = if out.trim().is_empty() { serde_json::Value::Null } else { serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&o))) };
    (o.status.success(), v)
}

fn first_ip(v: &serde_json::Value) -> Ipv4Addr {
    let a = v["ips"][0]["address"].as_str().unwrap_or_else(|| panic!("no address in {v}"));
    a.split('/').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_containers_on_two_hosts_talk_through_the_cni_plugin_and_leave_nothing() {
    let name = plexus_tests::unique_name('n');
    let lab = Lab::up(&LabConfig::owned(&name, 2)).expect("lab");
    let cp = lab.start_control_plane(Path::new(PLEXUS)).expect("control plane");
    let api = cp.client().unwrap();
    // Dual stack: CNI configures both families.
    api.create_network(&NetworkSpec { subnet6: Some("fd00:40::/64".into()), ..NetworkSpec::overlay("red", "10.40.0.0/24") }).await.unwrap();
    let podman = Podman::new(&lab.dir.join("podman"), Path::new(PLEXUS)).unwrap_or_else(|e| panic!("{e}"));
    let plugin = podman.plugin();
    let (n1, n2) = (format!("{name}-h1"), format!("{name}-h2"));
    podman.network(&n1, &lab.cni_conf(&cp, "h1", "red").unwrap()).unwrap();
    podman.network(&n2, &lab.cni_conf(&cp, "h2", "red").unwrap()).unwrap();
    let mut pm = Pods { pm: podman, containers: Vec::new() };

    // podman → plexus-cni → controller and h1's/h2's switches.
    let (p1, p2) = (format!("{name}-p1"), format!("{name}-p2"));
    let id1 = pm.container(&p1, &n1);
    pm.container(&p2, &n2);
    let ip_of = |c: &str| -> Ipv4Addr { pm.ok(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", c]).parse().unwrap() };
    let (ip1, ip2) = (ip_of(&p1), ip_of(&p2));
    let eps = api.endpoints("red").await.unwrap();
    assert!(eps.iter().any(|e| e.ip == ip1 && e.host == "h1" && e.owner.as_deref() == Some(&format!("cni:{id1}"))), "{eps:?}");
    assert!(eps.iter().any(|e| e.ip == ip2 && e.host == "h2"), "{eps:?}");
    // A lab container on the same network, beside them.
    let o = Command::new(PLEXUS).args(["lab", "run", "--name", &name, "--network", "red", "h2", "c3"]).envs(cp.envs().unwrap()).output().unwrap();
    assert!(o.status.success(), "lab run: {}", text(&o));
    let ip3 = api.endpoints("red").await.unwrap().into_iter().find(|e| e.id == "c3").map(|e| e.ip).expect("c3's endpoint");

    let o = pm.run(&["exec", &p1, "ping", "-c", "3", "-W", "2", &ip2.to_string()]);
    assert!(o.status.success(), "podman on h1 → podman on h2: {}", text(&o));
    let o = pm.run(&["exec", &p1, "ping", "-c", "2", "-W", "2", &ip3.to_string()]);
    assert!(o.status.success(), "podman on h1 → lab container on h2: {}", text(&o));
    let p2_v6 = eps.iter().find(|e| e.ip == ip2).and_then(|e| e.ip6).expect("p2's endpoint has an IPv6 address");
    let o = pm.run(&["exec", &p1, "ping", "-6", "-c", "2", "-W", "2", &p2_v6.to_string()]);
    assert!(o.status.success(), "podman on h1 → podman on h2 over IPv6: {}", text(&o));
    // DNS: podman wrote the plugin's answer (the gateway) into resolv.conf, and the gateway
    // answers the other containers' names: podman's container name, and the lab container's.
    let o = pm.run(&["exec", &p1, "cat", "/etc/resolv.conf"]);
    assert!(text(&o).contains("nameserver 10.40.0.1"), "podman's resolv.conf does not name the gateway: {}", text(&o));
    for (other, ip) in [(p2.as_str(), ip2), ("c3", ip3)] {
        let o = pm.run(&["exec", &p1, "busybox", "nslookup", other]);
        assert!(o.status.success() && text(&o).contains(&ip.to_string()), "nslookup {other} from p1: {}", text(&o));
    }
    // TCP across hosts, between the podman containers' namespaces.
    let (ns1, ns2) = (pm.netns(&p1), pm.netns(&p2));
    let t = probe::tcp_transfer(&ns1, &ns2, ip2, 1 << 20).expect("TCP from p1 to p2");
    assert!(t.bytes == 1 << 20 && t.intact, "{t:?}");

    // The plugin driven by hand, as a runtime: ADD, CHECK, a port removed behind its back,
    // DEL twice. Its own namespace stands in for a container.
    let k = format!("plx-{name}-k1");
    assert!(Command::new("ip").args(["netns", "add", &k]).status().unwrap().success());
    let kpath = format!("/run/netns/{k}");
    let mut conf = lab.cni_conf(&cp, "h1", "red").unwrap();
    conf["cniVersion"] = "1.0.0".into();
    conf["name"] = "by-hand".into();
    let vars = |cmd: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", cmd.into()),
            ("CNI_CONTAINERID", "byhand1".into()),
            ("CNI_NETNS", kpath.clone()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_PATH", "/usr/lib/cni".into()),
        ]
    };
    let run = |cmd: &'static str, conf: &serde_json::Value| {
        let v = vars(cmd);
        let pairs: Vec<(&str, &str)> = v.iter().map(|(a, b)| (*a, b.as_str())).collect();
        cni(&plugin, &pairs, conf)
    };
    let (ok, added) = run("ADD", &conf);
    assert!(ok, "ADD: {added}");
    assert_eq!(added["cniVersion"], "1.0.0");
    assert_eq!(added["interfaces"][1]["sandbox"], kpath.as_str(), "{added}");
    assert_eq!(added["routes"][0]["dst"], "0.0.0.0/0", "{added}");
    assert!(added["ips"][1]["address"].as_str().is_some_and(|a| a.starts_with("fd00:40::") && a.ends_with("/64")), "{added}");
    assert_eq!(added["routes"][1]["dst"], "::/0", "{added}");
    let kip = first_ip(&added);
    assert!(probe::wait_ping(&k, ip2, Duration::from_secs(5)).is_ok(), "the hand-added namespace cannot reach p2");
    let mut checked = conf.clone();
    checked["prevResult"] = added.clone();
    let (ok, out) = run("CHECK", &checked);
    assert!(ok, "CHECK of a healthy ADD failed: {out}");
    // The same container added twice: refused, and the first stays whole.
    let (ok, out) = run("ADD", &conf);
    assert!(!ok && out["code"] == 100, "{out}");
    assert!(run("CHECK", &checked).0, "a refused second ADD broke the first");
    let port = plexus_api::ids::port_name("red", &format!("byhand1-{:012x}", plexus_api::ids::fnv1a_parts(&["byhand1", "eth0"]) & 0xffff_ffff_ffff));
    let h1 = lab.host("h1").unwrap();
    plexus_tests::vsctl(h1, &["del-port", "br-int", &port]);
    let (ok, out) = run("CHECK", &checked);
    assert!(!ok && out["code"] == 101 && out["msg"].as_str().unwrap_or_default().contains(&port), "CHECK after the port went: {out}");
    for round in 1..=2 {
        let (ok, out) = run("DEL", &checked);
        assert!(ok, "DEL #{round}: {out}");
    }
    assert!(!api.endpoints("red").await.unwrap().iter().any(|e| e.ip == kip), "DEL left the endpoint");
    assert!(!String::from_utf8_lossy(&Command::new("ip").args(["netns", "exec", &h1.netns, "ip", "-o", "link"]).output().unwrap().stdout).contains(&port));
    assert!(!String::from_utf8_lossy(&Command::new("ip").args(["netns", "exec", &k, "ip", "-o", "link"]).output().unwrap().stdout).contains("eth0"));

    // Bad input: an error object naming the problem, nothing made.
    let before = api.endpoints("red").await.unwrap().len();
    let mut no_net = conf.clone();
    no_net.as_object_mut().unwrap().remove("network");
    let (ok, out) = run("ADD", &no_net);
    assert!(!ok && out["code"] == 7 && out["msg"].as_str().unwrap_or_default().starts_with("network"), "{out}");
    let mut old = conf.clone();
    old["cniVersion"] = "0.1.0".into();
    let (ok, out) = run("ADD", &old);
    assert!(!ok && out["code"] == 1, "{out}");
    let (ok, out) = cni(&plugin, &[("CNI_COMMAND", "FROB")], &conf);
    assert!(!ok && out["code"] == 4, "{out}");
    let gone = [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "nons"), ("CNI_NETNS", "/run/netns/plx-no-such"), ("CNI_IFNAME", "eth0")];
    let (ok, out) = cni(&plugin, &gone, &conf);
    assert!(!ok && out["code"] == 3, "{out}");
    let never = [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "never-added"), ("CNI_IFNAME", "eth0")];
    assert!(cni(&plugin, &never, &conf).0, "DEL of something never added must succeed");
    let (ok, out) = cni(&plugin, &[("CNI_COMMAND", "VERSION")], &serde_json::json!({"cniVersion": "1.0.0"}));
    assert!(ok && out["supportedVersions"].as_array().is_some_and(|v| v.iter().any(|x| x == "1.0.0")), "{out}");
    assert_eq!(api.endpoints("red").await.unwrap().len(), before, "refused requests changed the network");
    let _ = Command::new("ip").args(["netns", "delete", &k]).status();

    // podman rm -f frees everything: endpoints, ports, veths.
    let ports: Vec<String> = api.endpoints("red").await.unwrap().iter().filter(|e| e.id != "c3").map(|e| plexus_api::ids::port_name("red", &e.id)).collect();
    assert_eq!(ports.len(), 2);
    pm.ok(&["rm", "-f", "-t", "0", &p1, &p2]);
    pm.containers.clear();
    let left: Vec<String> = api.endpoints("red").await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(left, vec!["c3".to_string()], "podman rm -f left endpoints behind");
    for h in ["h1", "h2"] {
        let host = lab.host(h).unwrap();
        let on_switch = plexus_tests::vsctl(host, &["list-ports", "br-int"]);
        let links = String::from_utf8_lossy(&Command::new("ip").args(["netns", "exec", &host.netns, "ip", "-o", "link"]).output().unwrap().stdout).into_owned();
        for p in &ports {
            assert!(!on_switch.contains(p.as_str()) && !links.contains(p.as_str()), "{p} left on {h}");
        }
    }
}
