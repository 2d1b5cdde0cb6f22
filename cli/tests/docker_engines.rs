//! Cross-host Docker for real: a Docker engine inside each of two lab hosts, each served by its
//! host's agent. A network made on one engine appears on the other, containers on the two
//! talk and find each other by name, and a network removed on one goes from the other.
//!
//! Needs docker.io (dockerd and the client) and busybox-static; the engines are the lab's own
//! (not this machine's dockerd), so these tests run beside the others.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use plexus_lab::control::TEST_IMAGE;
use plexus_lab::{Lab, LabConfig, LabHost};

const PLEXUS: &str = env!("CARGO_BIN_EXE_plexus");

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn docker(lab: &Lab, h: &LabHost, args: &[&str]) -> Output {
    lab.engine_client(h).args(args).output().expect("running docker (apt-get install docker.io)")
}

fn ok(lab: &Lab, h: &LabHost, args: &[&str]) -> String {
    let o = docker(lab, h, args);
    assert!(o.status.success(), "docker on {} {args:?}: {}", h.name, text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn networks(lab: &Lab, h: &LabHost) -> Vec<String> {
    ok(lab, h, &["network", "ls", "--format", "{{.Name}}"]).lines().map(str::to_string).collect()
}

/// Waits until `cond` holds, or fails with `what` after 15 s (agents mirror every 2 s).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(15), "{what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn networks_and_containers_span_two_docker_engines() {
    let name = plexus_tests::unique_name('g');
    let lab = Lab::up(&LabConfig { docker_engines: true, ..LabConfig::owned(&name, 2) }).expect("lab");
    let cp = lab.start_control_plane(Path::new(PLEXUS)).expect("control plane with an engine in each host");
    let api = cp.client().unwrap();
    let (h1, h2) = (lab.host("h1").unwrap().clone(), lab.host("h2").unwrap().clone());

    // Made on either engine, seen on the other (through the controller).
    ok(&lab, &h1, &["network", "create", "-d", "plexus", "--ipam-driver", "plexus", "--subnet", "10.52.0.0/24", "red"]);
    ok(&lab, &h2, &["network", "create", "-d", "plexus", "--ipam-driver", "plexus", "--subnet", "10.53.0.0/24", "blue"]);
    eventually("red, made on h1's engine, never showed on h2's", || networks(&lab, &h2).contains(&"red".to_string()));
    eventually("blue, made on h2's engine, never showed on h1's", || networks(&lab, &h1).contains(&"blue".to_string()));
    let names: Vec<String> = api.networks().await.unwrap().into_iter().map(|n| n.spec.name).collect();
    assert!(names.contains(&"red".to_string()) && names.contains(&"blue".to_string()), "{names:?}");

    // Containers on the two engines talk: ping, and TCP with busybox's nc.
    // c1 names the gateway as its DNS server (as docs/dns.md tells Docker users): Docker's
    // embedded resolver answers its own engine's containers and forwards the rest there.
    ok(&lab, &h1, &["run", "-d", "--name", "c1", "--network", "red", "--dns", "10.52.0.1", "--dns-search", "red", TEST_IMAGE, "sleep", "100000"]);
    ok(&lab, &h2, &["run", "-d", "--name", "c2", "--network", "red", TEST_IMAGE, "sleep", "100000"]);
    let ip2 = ok(&lab, &h2, &["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "c2"]);
    assert!(ip2.starts_with("10.52.0."), "{ip2}");
    let o = docker(&lab, &h1, &["exec", "c1", "ping", "-c", "3", "-W", "2", &ip2]);
    assert!(o.status.success(), "c1 on h1's engine cannot ping c2 on h2's: {}", text(&o));
    // c2 is on another engine: its name comes from Plexus (the agent copies Docker's container
    // name to the endpoint), through Docker's resolver in c1.
    eventually("c1 could not resolve c2 (on the other engine) by name", || {
        let o = docker(&lab, &h1, &["exec", "c1", "busybox", "nslookup", "c2"]);
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&ip2)
    });
    ok(&lab, &h2, &["exec", "-d", "c2", "sh", "-c", "nc -l -p 7000 > /got"]);
    // The listener starts detached: the first attempts may find nothing listening yet.
    let send = format!("echo across-engines | nc -w 2 {ip2} 7000");
    eventually("c1 could not open TCP to c2", || docker(&lab, &h1, &["exec", "c1", "sh", "-c", &send]).status.success());
    eventually("c2 never got c1's TCP stream", || docker(&lab, &h2, &["exec", "c2", "cat", "/got"]).stdout.starts_with(b"across-engines"));

    // Removed on one engine, gone from the other and from the controller.
    ok(&lab, &h1, &["rm", "-f", "c1"]);
    ok(&lab, &h2, &["rm", "-f", "c2"]);
    ok(&lab, &h1, &["network", "rm", "red"]);
    eventually("red, removed on h1's engine, stayed on h2's", || !networks(&lab, &h2).contains(&"red".to_string()));
    let names: Vec<String> = api.networks().await.unwrap().into_iter().map(|n| n.spec.name).collect();
    assert!(!names.contains(&"red".to_string()) && names.contains(&"blue".to_string()), "{names:?}");
}
