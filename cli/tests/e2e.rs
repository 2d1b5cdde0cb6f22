//! End to end on a lab: a controller in the underlay namespace, an agent in every host
//! namespace, networks and endpoints made through the CLI, and containers that talk.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plexus_agent::lab::{probe, wire, Lab, LabConfig};
use plexus_api::ids::port_name;
use serde_json::Value;

/// Processes started in namespaces, killed by pid when the test ends however it ends.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_in(ns: &str, args: &[&str], log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new("ip").args(["netns", "exec", ns, env!("CARGO_BIN_EXE_plexus")]).args(args).stdout(Stdio::null()).stderr(log).spawn().expect("spawn plexus")
}

fn cli(ns: &str, api: &str, args: &[&str]) -> Value {
    let out = Command::new("ip").args(["netns", "exec", ns, env!("CARGO_BIN_EXE_plexus")]).args(args).args(["--api", api, "-o", "json"]).output().unwrap();
    assert!(out.status.success(), "plexus {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_and_a_controller_connect_containers_on_three_hosts() {
    let name = format!("e{}", std::process::id() % 10_000_000);
    let lab = Lab::up(&LabConfig::owned(&name, 3)).expect("lab");
    let ul = lab.underlay_netns();
    let o = lab.hosts[0].underlay_ip.octets();
    let ctl = Ipv4Addr::new(o[0], o[1], o[2], 1);
    let st = Command::new("ip").args(["-n", &ul, "addr", "add", &format!("{ctl}/24"), "dev", "br0"]).status().unwrap();
    assert!(st.success());
    let api = format!("http://{ctl}:6543");
    let data = lab.dir.join("controller");
    let mut procs = Procs(vec![spawn_in(
        &ul,
        &["controller", "--data-dir", data.to_str().unwrap(), "--listen", &format!("{ctl}:6543"), "--openflow-listen", &format!("{ctl}:6653")],
        &lab.dir.join("controller.log"),
    )]);
    for h in &lab.hosts {
        let db = format!("unix:{}", h.ovs.db_sock().display());
        let tip = format!("{}/24", h.underlay_ip);
        procs.0.push(spawn_in(
            &h.netns,
            &["agent", "--name", &h.name, "--controller", &api, "--openflow", &format!("tcp:{ctl}:6653"), "--ovsdb", &db, "--tunnel-ip", &tip, "--datapath-type", "netdev", "--underlay-iface", "eth0", "--heartbeat", "1"],
            &lab.dir.join(format!("agent-{}.log", h.name)),
        ));
    }
    // Every host registers.
    let t = Instant::now();
    loop {
        let out = Command::new("ip").args(["netns", "exec", &ul, env!("CARGO_BIN_EXE_plexus"), "host", "list", "--api", &api, "-o", "json"]).output().unwrap();
        let n = serde_json::from_slice::<Value>(&out.stdout).ok().and_then(|v| v.as_array().map(Vec::len)).unwrap_or(0);
        if n == 3 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "hosts did not register (logs in {})", lab.dir.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cli(&ul, &api, &["network", "create", "red", "--subnet", "10.10.0.0/24"]);
    let mut cs = Vec::new();
    for h in &lab.hosts {
        let e = cli(&ul, &api, &["endpoint", "create", "--network", "red", "--host", &h.name]);
        let (id, ip, mac) = (e["id"].as_str().unwrap(), e["ip"].as_str().unwrap().parse::<Ipv4Addr>().unwrap(), e["mac"].as_str().unwrap());
        let c = lab.add_container_with(h, &port_name("red", id), ip, 24, Some(mac), 1450).unwrap();
        let vs = wire::vswitch(h).await.unwrap();
        let t = Instant::now();
        while vs.bridges().await.unwrap().iter().all(|b| b != "br-int") {
            assert!(t.elapsed() < Duration::from_secs(20), "the agent did not create br-int on {}", h.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        vs.add_port("br-int", &plexus_ovs::ovsdb::PortSpec::new(&c.host_if, plexus_ovs::ovsdb::InterfaceType::System).external_id("plexus-endpoint", &format!("red/{id}"))).await.unwrap();
        cs.push(c);
    }
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        let (from, to) = (cs[a].netns.clone(), cs[b].ip);
        let ok = tokio::task::spawn_blocking(move || probe::wait_ping(&from, to, Duration::from_secs(20))).await.unwrap();
        assert!(ok.is_ok(), "h{} -> h{}: {ok:?} (logs in {})", a + 1, b + 1, lab.dir.display());
    }
    // Someone deletes the tunnel port: the agent puts it back and traffic recovers.
    let h1 = &lab.hosts[0];
    let out = Command::new("ovs-vsctl").arg(format!("--db=unix:{}", h1.ovs.db_sock().display())).args(["del-port", "br-int", "vxlan0"]).output().unwrap();
    assert!(out.status.success());
    let (from, to) = (cs[0].netns.clone(), cs[2].ip);
    let ok = tokio::task::spawn_blocking(move || probe::wait_ping(&from, to, Duration::from_secs(20))).await.unwrap();
    assert!(ok.is_ok(), "traffic recovers after the tunnel port is deleted: {ok:?}");
    drop(procs);
}

