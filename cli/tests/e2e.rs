//! End to end on a lab: a controller joined to the underlay, an agent in every host
//! namespace, networks and endpoints made through the API, containers that talk.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use plexus_agent::lab::{probe, Lab, LabConfig};
use plexus_api::{Client, EndpointSpec};

fn ping(from: String, to: Ipv4Addr) -> tokio::task::JoinHandle<Result<Duration, plexus_agent::lab::LabError>> {
    tokio::task::spawn_blocking(move || probe::wait_ping(&from, to, Duration::from_secs(20)))
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_and_a_controller_connect_containers_on_three_hosts() {
    let name = format!("e{}", std::process::id() % 10_000_000);
    let lab = Lab::up(&LabConfig::owned(&name, 3)).expect("lab");
    let cp = lab.start_control_plane(Path::new(env!("CARGO_BIN_EXE_plexus"))).expect("control plane");
    let api = Client::new(&cp.api).unwrap();
    let t = Instant::now();
    while api.hosts().await.map(|h| h.len()).unwrap_or(0) < 3 {
        assert!(t.elapsed() < Duration::from_secs(20), "hosts did not register (logs in {})", lab.dir.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_plexus")).args(["network", "create", "red", "--subnet", "10.10.0.0/24", "--api", &cp.api]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut cs = Vec::new();
    for h in &lab.hosts {
        let e = api.create_endpoint("red", &EndpointSpec { id: None, host: h.name.clone(), ip: None, mac: None, owner: None, labels: Default::default() }).await.unwrap();
        cs.push(lab.attach(&e, 1450).await.unwrap());
    }
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        let ok = ping(cs[a].netns.clone(), cs[b].ip).await.unwrap();
        assert!(ok.is_ok(), "h{} -> h{}: {ok:?} (logs in {})", a + 1, b + 1, lab.dir.display());
    }
    for h in &lab.hosts {
        let st: serde_json::Value = reqwest::get(format!("{}/v1/hosts/{}/flows", cp.api, h.name)).await.unwrap().json().await.unwrap();
        assert_eq!((st["connected"].as_bool(), st["in_sync"].as_bool()), (Some(true), Some(true)), "{st}");
    }
    // Someone deletes the tunnel port: the agent puts it back and traffic recovers.
    let h1 = &lab.hosts[0];
    let out = Command::new("ovs-vsctl").arg(format!("--db=unix:{}", h1.ovs.db_sock().display())).args(["del-port", "br-int", "vxlan0"]).output().unwrap();
    assert!(out.status.success());
    let ok = ping(cs[0].netns.clone(), cs[2].ip).await.unwrap();
    assert!(ok.is_ok(), "traffic recovers after the tunnel port is deleted: {ok:?}");
    // Down ends the control plane's processes and removes the root-namespace link.
    let pids: Vec<i32> = std::fs::read_dir(&lab.dir).unwrap().flatten().filter(|e| e.path().extension().is_some_and(|x| x == "pid")).filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok()).collect();
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
