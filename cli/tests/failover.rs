//! A clustered control plane: three controller nodes, each in a namespace of its own on the
//! lab's underlay, and three hosts whose switches have every node as an OpenFlow target.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use plexus_api::{Client, EndpointSpec, NetworkSpec};
use plexus_lab::{probe, wire, Lab, LabConfig};

const PLEXUS: &str = env!("CARGO_BIN_EXE_plexus");

/// Pings `count` times at 10 per second from `ns`; returns (sent, received).
fn ping_bg(ns: String, to: Ipv4Addr, count: u32) -> std::thread::JoinHandle<(u32, u32)> {
    std::thread::spawn(move || {
        let o =
            Command::new("ip").args(["netns", "exec", &ns, "ping", "-i", "0.1", "-W", "1", "-c", &count.to_string(), &to.to_string()]).output().expect("ping");
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
    of.dump_flows(Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|f| (format!("{} {} {:?} {:x}", f.table_id, f.priority, f.match_, f.cookie), f.packet_count))
        .collect()
}

async fn create_endpoint(api: &Client, host: &str, id: &str) -> plexus_api::Endpoint {
    // Writes fail while the cluster elects a new leader: try again for a while.
    let t = Instant::now();
    loop {
        match api.create_endpoint("red", &EndpointSpec::on(host).id(id)).await {
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
    cp: plexus_lab::control::ControlPlane,
    api: Client,
    e3: plexus_api::Endpoint,
    c1: plexus_lab::Container,
    c3: plexus_lab::Container,
}

async fn world(tag: char) -> World {
    let name = plexus_tests::unique_name(tag);
    let lab = Lab::up(&LabConfig { controllers: 3, ..LabConfig::owned(&name, 3) }).expect("lab");
    let cp = lab.start_control_plane(Path::new(PLEXUS)).expect("a three-node control plane");
    let api = cp.client().unwrap();
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

/// Kills node `victim` with SIGKILL while h1 pings h3 ten times a second, then creates
/// endpoint `id` on h2: h1 and h3 must both reach it, and no ping may be lost.
async fn kill_under_ping(w: &World, victim: u64, id: &str, what: &str) {
    eprintln!("masters: {:?}; killing node {victim}, {what}", masters(&w.api).await);
    // 10 pings a second, for 12 seconds, across the kill.
    let pinger = ping_bg(w.c1.netns.clone(), w.e3.ip, 120);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = Instant::now();
    assert!(w.lab.signal_process(&w.lab.controller_tag(victim as u8), libc::SIGKILL));
    let e = create_endpoint(&w.api, "h2", id).await;
    w.lab.attach(&e, id, 1450).await.unwrap();
    for (from, name) in [(w.c1.netns.clone(), "h1"), (w.c3.netns.clone(), "h3")] {
        let to = e.ip;
        let r = tokio::task::spawn_blocking(move || probe::wait_ping(&from, to, Duration::from_secs(15))).await.unwrap();
        assert!(r.is_ok(), "{name} does not reach {id}, made after {what} died: {r:?} (logs in {})", w.lab.dir.display());
    }
    eprintln!("{id} reachable from h1 and h3 {:?} after {what} died", killed_at.elapsed());
    let (sent, received) = tokio::task::spawn_blocking(move || pinger.join().unwrap()).await.unwrap();
    assert!(sent >= 100 && received == sent, "pings across the death of {what}: {received}/{sent}");
}

/// Starts node `n` again and waits until it has a leader and has caught up with the other
/// nodes: a node answers status reads from its own state, which must be current.
async fn restart_node(lab: &Lab, n: u8) {
    lab.start_controller_node(n, Path::new(PLEXUS)).unwrap();
    let ips = lab.controller_ips();
    let cp = lab.control_plane();
    let client = |i: u8| cp.client_for(&format!("https://{}:6543", ips[i as usize - 1])).unwrap();
    let me = client(n);
    let others: Vec<Client> = (1..=3).filter(|i| *i != n).map(client).collect();
    let t = Instant::now();
    loop {
        let mut newest = None;
        for o in &others {
            if let Ok(c) = o.cluster().await {
                newest = newest.max(Some(c.revision));
            }
        }
        if let (Ok(m), Some(r)) = (me.cluster().await, newest) {
            if m.leader.is_some() && m.revision >= r {
                return;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(20), "node {n} did not catch up after its restart (logs in {})", lab.dir.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `host`'s switch has a master other than `dead`, at a generation past `old`.
async fn wait_new_master(api: &Client, host: &str, dead: u64, old: u64) {
    let t = Instant::now();
    loop {
        let m = masters(api).await;
        if m.get(host).is_some_and(|(n, g)| *n != dead && *g > old) {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{host}'s switch was not given a new master: {m:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_a_switch_master_or_the_leader_loses_no_ping_and_changes_still_arrive() {
    let w = world('f').await;
    let before = counters(&w.lab, 0).await;

    // The master of h1's switch.
    let (victim, old_gen) = masters(&w.api).await["h1"];
    kill_under_ping(&w, victim, "a2", "the master of h1's switch").await;
    wait_new_master(&w.api, "h1", victim, old_gen).await;
    // Unchanged flows kept counting through the change of master.
    let after = counters(&w.lab, 0).await;
    let kept: Vec<&String> = before.keys().filter(|k| after.contains_key(*k)).collect();
    assert!(!kept.is_empty());
    for k in kept {
        assert!(after[k] >= before[k], "flow {k}: counter went from {} to {}", before[k], after[k]);
    }
    let out = Command::new(PLEXUS).args(["cluster", "status"]).envs(w.cp.envs().unwrap()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("masters:") && text.contains("h1→"), "{text}");
    restart_node(&w.lab, victim as u8).await;

    // The master of h3's switch (with these host names another node than h1's).
    let (victim, old_gen) = masters(&w.api).await["h3"];
    kill_under_ping(&w, victim, "a3b", "the master of h3's switch").await;
    wait_new_master(&w.api, "h3", victim, old_gen).await;
    restart_node(&w.lab, victim as u8).await;

    // The Raft leader itself. The other nodes keep the switches they master: their leases
    // lapse until a new leader is elected, which pauses them, but must not make them step
    // down and take every switch back (a role request and a full read-back each).
    let leader = w.api.cluster().await.unwrap().leader.expect("a leader");
    let log_of = |n: u64| w.lab.dir.join(format!("{}.log", w.lab.controller_tag(n as u8)));
    let survivors: Vec<(u64, usize)> = (1..=3u64).filter(|n| *n != leader).map(|n| (n, std::fs::read_to_string(log_of(n)).unwrap_or_default().len())).collect();
    kill_under_ping(&w, leader, "a4", "the Raft leader").await;
    for (n, from) in survivors {
        let log = std::fs::read_to_string(log_of(n)).unwrap_or_default();
        let since = log.get(from..).unwrap_or_default();
        assert!(!since.contains("no longer master of the switch"), "node {n} stepped down from a switch of its own when the leader died:\n{since}");
    }
    let t = Instant::now();
    while masters(&w.api).await.values().any(|(n, _)| *n == leader) {
        assert!(t.elapsed() < Duration::from_secs(10), "the dead leader still masters switches");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The role column of a host's Controller rows: how many targets the switch sees as master.
fn switch_masters(lab: &Lab, host: usize) -> usize {
    let h = &lab.hosts[host];
    let o = Command::new("ovs-vsctl")
        .arg(format!("--db=unix:{}", h.ovs.db_sock().display()))
        .args(["--columns=role", "--bare", "list", "controller"])
        .output()
        .unwrap();
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
    let majority: Vec<String> = (1..=3u64).filter(|n| *n != victim).map(|n| format!("https://{}:6543", ips[n as usize - 1])).collect();
    let cp = lab.control_plane();
    let api = cp.client_for(&majority.join(",")).unwrap();
    let victim_api = cp.client_for(&format!("https://{}:6543", ips[victim as usize - 1])).unwrap();

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
    assert!(
        tokio::task::spawn_blocking(move || probe::wait_ping(&ns, to, Duration::from_secs(15))).await.unwrap().is_ok(),
        "a change after the cut did not arrive"
    );
    // The cut-off node knew by itself to stop: its lease ran out and it stopped programming.
    let victim_log = lab.dir.join(format!("{}.log", lab.controller_tag(victim as u8)));
    let log = std::fs::read_to_string(&victim_log).unwrap_or_default();
    assert!(log.contains("lease lapsed: not programming the switch"), "the cut-off node did not stop programming:\n{log}");

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
    // Caught up, it learns that h1's switch moved. Being live again, it is given the switch
    // back (rendezvous hashing), but only at a newer generation, with the full read-back of a
    // new master: never at the generation it held when it was cut off. Either way, the node the
    // cluster names is the one master, by its own account and by the switch's.
    let http = cp.http().unwrap();
    let role = async |node: u64| -> Option<String> {
        let url = format!("https://{}:6543/v1/hosts/h1/flows", ips[node as usize - 1]);
        let st: serde_json::Value = http.get(&url).send().await.ok()?.json().await.ok()?;
        (st["connected"] == true).then(|| st["role"].as_str().unwrap_or_default().to_string())
    };
    let settled = async || -> Result<(), String> {
        let (master, g) = masters(&api).await.get("h1").copied().ok_or("no master in the cluster status")?;
        if g <= old_gen {
            return Err(format!("h1's switch is at generation {g}, not past {old_gen}"));
        }
        for node in 1..=3u64 {
            let want = if node == master { format!("master (generation {g})") } else { "slave".into() };
            let got = role(node).await;
            if got.as_deref() != Some(&want) {
                return Err(format!("node {node} says {got:?} of h1's switch, not {want:?} (victim: node {victim})"));
            }
        }
        match switch_masters(&lab, 0) {
            1 => Ok(()),
            n => Err(format!("h1's switch sees {n} masters")),
        }
    };
    let t = Instant::now();
    while let Err(e) = settled().await {
        // OVS gives up on an idle controller after two 5 s probes, and retries with a backoff
        // of up to 8 s: a session lost in the cut takes that long to come back.
        assert!(t.elapsed() < Duration::from_secs(20), "after the heal: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..10 {
        if let Err(e) = settled().await {
            panic!("after the heal, settled, then: {e}");
        }
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
    let http = lab.control_plane().credentials().unwrap().http().unwrap().build().unwrap();
    for node in 1..=3u8 {
        assert!(lab.signal_process(&lab.controller_tag(node), libc::SIGTERM));
        tokio::time::sleep(Duration::from_secs(1)).await;
        restart_node(&lab, node).await;
    }
    // Every switch in sync under its master. (Masters may still be moving back to the node
    // restarted last: each look asks who the master is now.)
    for h in ["h1", "h2", "h3"] {
        let t = Instant::now();
        loop {
            assert!(t.elapsed() < Duration::from_secs(10), "{h}: no master in the cluster status");
            let Some((node, _)) = masters(&api).await.get(h).copied() else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let url = format!("https://{}:6543/v1/hosts/{h}/flows", ips[node as usize - 1]);
            let st: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
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
