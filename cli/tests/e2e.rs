//! End to end on a lab: a controller joined to the underlay, an agent in every host
//! namespace, networks and endpoints made through the API, containers that talk.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use plexus_api::EndpointSpec;
use plexus_lab::{probe, ControlPlane, Lab, LabConfig};

/// `GET PATH` from an agent's health port inside its host's namespace: (status line, body).
fn agent_http(netns: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 6544));
    let Ok(mut c) = plexus_agent::netns::connect_tcp(netns, addr) else { return (String::new(), String::new()) };
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = c.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

fn ping(from: String, to: Ipv4Addr) -> tokio::task::JoinHandle<Result<Duration, plexus_lab::LabError>> {
    tokio::task::spawn_blocking(move || probe::wait_ping(&from, to, Duration::from_secs(20)))
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_and_a_controller_connect_containers_on_three_hosts() {
    let name = plexus_tests::unique_name('e');
    let lab = Lab::up(&LabConfig::owned(&name, 3)).expect("lab");
    let cp = lab.start_control_plane(Path::new(env!("CARGO_BIN_EXE_plexus"))).expect("control plane");
    let api = cp.client().unwrap();
    let t = Instant::now();
    while api.hosts().await.map(|h| h.len()).unwrap_or(0) < 3 {
        assert!(t.elapsed() < Duration::from_secs(20), "hosts did not register (logs in {})", lab.dir.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out =
        Command::new(env!("CARGO_BIN_EXE_plexus")).args(["network", "create", "red", "--subnet", "10.10.0.0/24"]).envs(cp.envs().unwrap()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut cs = Vec::new();
    for h in &lab.hosts {
        let e = api.create_endpoint("red", &EndpointSpec::on(&h.name)).await.unwrap();
        cs.push(lab.attach(&e, &format!("c{}", cs.len() + 1), 1450).await.unwrap());
    }
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        let ok = ping(cs[a].netns.clone(), cs[b].ip).await.unwrap();
        assert!(ok.is_ok(), "h{} -> h{}: {ok:?} (logs in {})", a + 1, b + 1, lab.dir.display());
    }
    for h in &lab.hosts {
        let st: serde_json::Value = cp.http().unwrap().get(format!("{}/v1/hosts/{}/flows", cp.api, h.name)).send().await.unwrap().json().await.unwrap();
        assert_eq!((st["connected"].as_bool(), st["in_sync"].as_bool()), (Some(true), Some(true)), "{st}");
    }
    // Someone deletes the tunnel port: the agent puts it back and traffic recovers.
    let h1 = &lab.hosts[0];
    let out = Command::new("ovs-vsctl").arg(format!("--db=unix:{}", h1.ovs.db_sock().display())).args(["del-port", "br-int", "vxlan0"]).output().unwrap();
    assert!(out.status.success());
    let ok = ping(cs[0].netns.clone(), cs[2].ip).await.unwrap();
    assert!(ok.is_ok(), "traffic recovers after the tunnel port is deleted: {ok:?}");
    // Down ends the control plane's processes and removes the root-namespace link.
    let pids: Vec<i32> = std::fs::read_dir(&lab.dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 4, "a controller and three agents");
    let link = lab.root_link();
    lab.down();
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z"), "process {pid} still runs");
    }
    let links = String::from_utf8_lossy(&Command::new("ip").args(["-o", "link", "show"]).output().unwrap().stdout).into_owned();
    assert!(!links.contains(&format!(" {link}@")) && !links.contains(&format!(" {link}:")), "{link} left behind");
}

async fn in_sync(cp: &ControlPlane, host: &str) -> bool {
    let Ok(r) = cp.http().unwrap().get(format!("{}/v1/hosts/{host}/flows", cp.api)).send().await else { return false };
    let Ok(v) = r.json::<serde_json::Value>().await else { return false };
    v["connected"] == true && v["in_sync"] == true
}

async fn wait_in_sync(cp: &ControlPlane, hosts: &[&str]) {
    let t = Instant::now();
    for h in hosts {
        while !in_sync(cp, h).await {
            assert!(t.elapsed() < Duration::from_secs(30), "{h}'s switch did not get back in sync");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn ping_n(from: String, to: Ipv4Addr, n: u32) -> tokio::task::JoinHandle<u32> {
    tokio::task::spawn_blocking(move || probe::ping(&from, to, n, Duration::from_millis(100)).unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn traffic_survives_and_recovers_from_restarts_of_every_part() {
    let name = plexus_tests::unique_name('r');
    let lab = Lab::up(&LabConfig::owned(&name, 2)).expect("lab");
    let plexus = Path::new(env!("CARGO_BIN_EXE_plexus"));
    let cp = lab.start_control_plane(plexus).expect("control plane");
    let api = cp.client().unwrap();
    let t = Instant::now();
    while api.hosts().await.map(|h| h.len()).unwrap_or(0) < 2 {
        assert!(t.elapsed() < Duration::from_secs(20), "hosts did not register");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.create_network(&plexus_api::NetworkSpec::overlay("red", "10.10.0.0/24")).await.unwrap();
    let mut cs = Vec::new();
    for h in &lab.hosts {
        let e = api.create_endpoint("red", &EndpointSpec::on(&h.name)).await.unwrap();
        cs.push(lab.attach(&e, &format!("c{}", cs.len() + 1), 1450).await.unwrap());
    }
    assert!(ping(cs[0].netns.clone(), cs[1].ip).await.unwrap().is_ok());

    // Every agent reports itself healthy, with counters.
    let (status, body) = agent_http(&lab.hosts[0].netns, "/healthz");
    assert!(status.contains("200"), "{status} {body}");
    let (_, metrics) = agent_http(&lab.hosts[0].netns, "/metrics");
    assert!(metrics.contains("plexus_agent_heartbeats_total{result=\"ok\"}") && metrics.contains("plexus_agent_healthy 1"), "{metrics}");

    // The controller dies: installed flows keep forwarding (fail_mode secure).
    assert!(lab.signal_process("controller", libc::SIGKILL));
    assert_eq!(ping_n(cs[0].netns.clone(), cs[1].ip, 10).await.unwrap(), 10, "endpoints keep talking while the controller is down");
    // The agents notice: no heartbeat gets through (their period is 2 s).
    let t = Instant::now();
    loop {
        let (status, body) = agent_http(&lab.hosts[0].netns, "/healthz");
        if status.contains("503") && body.contains("no heartbeat") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "the agent still says it is healthy: {status} {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    lab.start_controller(plexus).unwrap();
    wait_in_sync(&cp, &["h1", "h2"]).await;
    assert_eq!(ping_n(cs[0].netns.clone(), cs[1].ip, 5).await.unwrap(), 5);

    // An agent restarts: nothing to repair, traffic unaffected.
    assert!(lab.signal_process("agent-h2", libc::SIGKILL));
    lab.start_agent("h2", plexus).unwrap();
    assert_eq!(ping_n(cs[0].netns.clone(), cs[1].ip, 5).await.unwrap(), 5);

    // ovs-vswitchd restarts and comes back empty: the agent restores br-phy's address, the
    // controller the flows, and the switch ends with exactly the desired flows.
    let h2 = &lab.hosts[1];
    assert!(h2.ovs.signal(plexus_lab::Daemon::Vswitchd, libc::SIGKILL));
    h2.ovs.start_daemon(plexus_lab::Daemon::Vswitchd).unwrap();
    assert!(ping(cs[0].netns.clone(), cs[1].ip).await.unwrap().is_ok(), "traffic recovers after ovs-vswitchd restarts (logs in {})", lab.dir.display());
    wait_in_sync(&cp, &["h2"]).await;
    let st: serde_json::Value = cp.http().unwrap().get(format!("{}/v1/hosts/h2/flows", cp.api)).send().await.unwrap().json().await.unwrap();
    let of = plexus_lab::wire::openflow(h2).await.unwrap();
    assert_eq!(of.dump_flows(Default::default()).await.unwrap().len() as u64, st["desired_flows"].as_u64().unwrap(), "exactly the desired flows, no leftovers");
}
