//! A clustered control plane: three controller nodes, each in a namespace of its own on the
//! lab's underlay, and three hosts whose switches have every node as an OpenFlow target.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use plexus_agent::lab::{probe, wire, Lab, LabConfig};
use plexus_api::{Client, EndpointSpec, NetworkSpec};

const PLEXUS: &str = env!("CARGO_BIN_EXE_plexus");

/// Pings `count` times at 10 per second from `ns`; returns (sent, received).
fn ping_bg(ns: String, to: Ipv4Addr, count: u32) -> std::thread::JoinHandle<(u32, u32)> {
    std::thread::spawn(move || {
        let o = Command::new("ip").args(["netns", "exec", &ns, "ping", "-i", "0.1", "-W", "1", "-c", &count.to_string(), &to.to_string()]).output().expect("ping");
        let out = String::from_utf8_lossy(&o.stdout);
        let line = out.lines().find(|l| l.contains("packets transmitted")).unwrap_or_default().to_string();
        let num = |word: &str| line.split(',').find(|p| p.contains(word)).and_then(|p| p.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0);
        (num("transmitted"), num("received"))
    })
}

async fn masters(api: &Client) -> HashMap<String, (u64, u64)> {
    match api.cluster().await {
        Ok(c) => c.masters.into_iter().map(|m| (m.host, (m.node, m.generation))).collect(),
        Err(_) => HashMap::new(),
    }
}

/// Flow packet counters by (table, priority, match, cookie).
async fn counters(lab: &Lab, host: usize) -> HashMap<String, u64> {
    let of = wire::openflow(&lab.hosts[host]).await.unwrap();
    of.dump_flows(Default::default()).await.unwrap().into_iter().map(|f| (format!("{} {} {:?} {:x}", f.table_id, f.priority, f.match_, f.cookie), f.packet_count)).collect()
}

async fn create_endpoint(api: &Client, host: &str, id: &str) -> plexus_api::Endpoint {
    // Writes fail while the cluster elects a new leader: try again for a while.
    let t = Instant::now();
    loop {
        match api.create_endpoint("red", &EndpointSpec { id: Some(id.into()), host: host.into(), ip: None, mac: None, owner: None, labels: Default::default() }).await {
            Ok(e) => return e,
            Err(plexus_api::ClientError::Problem(p)) if p.status == 409 => {
                return api.endpoints("red").await.unwrap().into_iter().find(|e| e.id == id).unwrap();
            }
            Err(e) => {
                assert!(t.elapsed() < Duration::from_secs(15), "creating {id}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// A three-controller lab whose switches all have masters, network red, and containers on
/// h1 and h3 that ping each other.
struct World {
    lab: Lab,
    cp: plexus_agent::lab::control::ControlPlane,
    api: Client,
    e3: plexus_api::Endpoint,
    c1: plexus_agent::lab::Container,
    c3: plexus_agent::lab::Container,
}

async fn world(tag: char) -> World {
    let name = format!("{tag}{}", std::process::id() % 10_000_000);
    let lab = Lab::up(&LabConfig { controllers: 3, ..LabConfig::owned(&name, 3) }).expect("lab");
    let cp = lab.start_control_plane(Path::new(PLEXUS)).expect("a three-node control plane");
    let api = Client::new(&cp.api).unwrap();
    let t = Instant::now();
    while masters(&api).await.len() < 3 {
        assert!(t.elapsed() < Duration::from_secs(30), "switches got no masters: {:?} (logs in {})", api.cluster().await, lab.dir.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.create_network(&NetworkSpec::overlay("red", "10.10.0.0/24")).await.unwrap();
    let (e1, e3) = (create_endpoint(&api, "h1", "a1").await, create_endpoint(&api, "h3", "a3").await);
    let c1 = lab.attach(&e1, "a1", 1450).await.unwrap();
    let c3 = lab.attach(&e3, "a3", 1450).await.unwrap();
    let (ns, to) = (c1.netns.clone(), e3.ip);
    let r = tokio::task::spawn_blocking(move || probe::wait_ping(&ns, to, Duration::from_secs(20))).await.unwrap();
    assert!(r.is_ok(), "h1 -> h3 before anything is killed: {r:?}");
    World { lab, cp, api, e3, c1, c3 }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_a_switch_master_or_the_leader_loses_no_ping_and_changes_still_arrive() {
    let World { lab, cp, api, e3, c1, c3 } = world('f').await;
    let before = counters(&lab, 0).await;
    let m = masters(&api).await;
    let (victim, old_gen) = m["h1"];
    eprintln!("masters before: {m:?}; killing node {victim}, master of h1's switch");

    // 10 pings a second, for 12 seconds, across the kill.
    let pinger = ping_bg(c1.netns.clone(), e3.ip, 120);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = Instant::now();
    assert!(lab.signal_process(&lab.controller_tag(victim as u8), libc::SIGKILL));
    // A change after the kill reaches every switch: a new endpoint on h2 that h1 reaches.
    let e2 = create_endpoint(&api, "h2", "a2").await;
    lab.attach(&e2, "a2", 1450).await.unwrap();
    let ns = c1.netns.clone();
    let to = e2.ip;
    let r = tokio::task::spawn_blocking(move || probe::wait_ping(&ns, to, Duration::from_secs(15))).await.unwrap();
    assert!(r.is_ok(), "a change made after the kill did not arrive: {r:?} (logs in {})", lab.dir.display());
    eprintln!("new endpoint reachable {:?} after the kill", killed_at.elapsed());
    let (ns, to) = (c3.netns.clone(), e2.ip);
    let r = tokio::task::spawn_blocking(move || probe::wait_ping(&ns, to, Duration::from_secs(10))).await.unwrap();
    assert!(r.is_ok(), "h3 does not reach the endpoint made after the kill: {r:?}");
    let (sent, received) = tokio::task::spawn_blocking(move || pinger.join().unwrap()).await.unwrap();
    assert!(sent >= 100 && received == sent, "pings across the kill: {received}/{sent}");

    // h1's switch has another master, at a newer generation; unchanged flows kept counting.
    let t = Instant::now();
    loop {
        let m = masters(&api).await;
        if m.get("h1").is_some_and(|(n, g)| *n != victim && *g > old_gen) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "h1's switch was not given a new master: {m:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = counters(&lab, 0).await;
    let kept: Vec<&String> = before.keys().filter(|k| after.contains_key(*k)).collect();
    assert!(!kept.is_empty());
    for k in kept {
        assert!(after[k] >= before[k], "flow {k}: counter went from {} to {}", before[k], after[k]);
    }
    let out = Command::new(PLEXUS).args(["cluster", "status", "--api", &cp.api]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("masters:") && text.contains("h1→"), "{text}");

    // The killed node comes back; then the Raft leader itself is killed, under the same ping.
    lab.start_controller_node(victim as u8, Path::new(PLEXUS)).unwrap();
    let leader = api.cluster().await.unwrap().leader.expect("a leader");
    let pinger = ping_bg(c1.netns.clone(), e3.ip, 120);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(lab.signal_process(&lab.controller_tag(leader as u8), libc::SIGKILL));
    let e4 = create_endpoint(&api, "h2", "a4").await;
    lab.attach(&e4, "a4", 1450).await.unwrap();
    let (ns, to) = (c1.netns.clone(), e4.ip);
    let r = tokio::task::spawn_blocking(move || probe::wait_ping(&ns, to, Duration::from_secs(15))).await.unwrap();
    assert!(r.is_ok(), "a change made after the leader died did not arrive: {r:?}");
    let (sent, received) = tokio::task::spawn_blocking(move || pinger.join().unwrap()).await.unwrap();
    assert!(sent >= 100 && received == sent, "pings across the leader's death: {received}/{sent}");
    let t = Instant::now();
    while masters(&api).await.values().any(|(n, _)| *n == leader) {
        assert!(t.elapsed() < Duration::from_secs(10), "the dead leader still masters switches");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The role column of a host's Controller rows: how many targets the switch sees as master.
fn switch_masters(lab: &Lab, host: usize) -> usize {
    let h = &lab.hosts[host];
    let o = Command::new("ovs-vsctl").arg(format!("--db=unix:{}", h.ovs.db_sock().display())).args(["--columns=role", "--bare", "list", "controller"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).split_whitespace().filter(|r| *r == "master").count()
}

fn iptables(lab: &Lab, node: u8, args: &[&str]) {
    let ns = lab.controller_netns(node);
    let o = Command::new("ip").args(["netns", "exec", &ns, "iptables"]).args(args).output().expect("iptables (apt-get install iptables)");
    assert!(o.status.success(), "iptables {args:?} in {ns}: {}", String::from_utf8_lossy(&o.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controller_cut_off_stops_mastering_and_the_majority_takes_over() {
    let World { lab, api, e3, c1, .. } = world('p').await;
    let (victim, old_gen) = masters(&api).await["h1"];
    let before = counters(&lab, 0).await;
    let ips = lab.controller_ips();
    // Clients of the majority only: the cut node would make every call wait for a timeout.
    let majority: Vec<String> = (1..=3u64).filter(|n| *n != victim).map(|n| format!("http://{}:6543", ips[n as usize - 1])).collect();
    let api = Client::new(&majority.join(",")).unwrap();
    let victim_api = Client::new(&format!("http://{}:6543", ips[victim as usize - 1])).unwrap();

    let pinger = ping_bg(c1.netns.clone(), e3.ip, 120);
    tokio::time::sleep(Duration::from_secs(1)).await;
    iptables(&lab, victim as u8, &["-A", "INPUT", "-j", "DROP"]);
    iptables(&lab, victim as u8, &["-A", "OUTPUT", "-j", "DROP"]);
    // No switch ever sees two masters, while the majority moves h1's switch elsewhere.
    let t = Instant::now();
    let mut moved = None;
    while t.elapsed() < Duration::from_secs(8) {
        for h in 0..3 {
            assert!(switch_masters(&lab, h) <= 1, "h{}'s switch sees two masters", h + 1);
        }
        let m = masters(&api).await;
        if moved.is_none() && m.get("h1").is_some_and(|(n, g)| *n != victim && *g > old_gen) {
            moved = Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let moved = moved.unwrap_or_else(|| panic!("the majority did not take h1's switch over (logs in {})", lab.dir.display()));
    eprintln!("h1's switch had a new master {moved:?} after the cut");
    // A change on the majority side arrives.
    let e2 = create_endpoint(&api, "h2", "a2").await;
    lab.attach(&e2, "a2", 1450).await.unwrap();
    let (ns, to) = (c1.netns.clone(), e2.ip);
    assert!(tokio::task::spawn_blocking(move || probe::wait_ping(&ns, to, Duration::from_secs(15))).await.unwrap().is_ok(), "a change after the cut did not arrive");
    // The cut-off node knew by itself to stop: its lease ran out and it stepped down.
    let log = std::fs::read_to_string(lab.dir.join(format!("{}.log", lab.controller_tag(victim as u8)))).unwrap_or_default();
    assert!(log.contains("no longer master of the switch"), "the cut-off node did not step down:\n{log}");

    // Healed: the node rejoins as a follower and catches up.
    iptables(&lab, victim as u8, &["-F"]);
    let t = Instant::now();
    loop {
        let (v, l) = (victim_api.cluster().await, api.cluster().await);
        if let (Ok(v), Ok(l)) = (v, l) {
            if v.state == "Follower" && v.revision == l.revision {
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(20), "the healed node did not rejoin as a follower");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (sent, received) = tokio::task::spawn_blocking(move || pinger.join().unwrap()).await.unwrap();
    assert!(sent >= 100 && received == sent, "pings across the partition: {received}/{sent}");
    let after = counters(&lab, 0).await;
    for (k, v) in &before {
        if let Some(a) = after.get(k) {
            assert!(a >= v, "flow {k}: counter went from {v} to {a}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_of_every_controller_loses_no_ping() {
    let World { lab, api, e3, c1, .. } = world('o').await;
    let before = counters(&lab, 0).await;
    let pinger = ping_bg(c1.netns.clone(), e3.ip, 300);
    let ips = lab.controller_ips();
    for node in 1..=3u8 {
        assert!(lab.signal_process(&lab.controller_tag(node), libc::SIGTERM));
        tokio::time::sleep(Duration::from_secs(1)).await;
        lab.start_controller_node(node, Path::new(PLEXUS)).unwrap();
        let me = Client::new(&format!("http://{}:6543", ips[node as usize - 1])).unwrap();
        let t = Instant::now();
        loop {
            let (m, l) = (me.cluster().await, api.cluster().await);
            if let (Ok(m), Ok(l)) = (m, l) {
                if m.leader.is_some() && m.revision == l.revision {
                    break;
                }
            }
            assert!(t.elapsed() < Duration::from_secs(20), "node {node} did not catch up after its restart");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Every switch in sync under its master.
    let m = masters(&api).await;
    for h in ["h1", "h2", "h3"] {
        let (node, _) = m[h];
        let url = format!("http://{}:6543/v1/hosts/{h}/flows", ips[node as usize - 1]);
        let t = Instant::now();
        loop {
            let st: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
            if st["in_sync"] == true && st["role"].as_str().is_some_and(|r| r.starts_with("master")) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "{h}: {st}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (sent, received) = tokio::task::spawn_blocking(move || pinger.join().unwrap()).await.unwrap();
    assert!(received == sent, "pings across the rolling restart: {received}/{sent}");
    let after = counters(&lab, 0).await;
    for (k, v) in &before {
        if let Some(a) = after.get(k) {
            assert!(a >= v, "flow {k}: counter went from {v} to {a}");
        }
    }
}
