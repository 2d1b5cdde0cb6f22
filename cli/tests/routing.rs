//! Distributed routing (issue 12): a router joins networks, and every host's switch routes
//! between them itself, across hosts and on one host; gateways answer ping; the TTL drops by
//! one per routed hop; a network on no common router stays apart; taking a network off the
//! router cuts it and putting it back restores it, each in one flow change. Driven through the
//! `plexus router` CLI against a real controller and real switches.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use plexus_api::{EndpointSpec, NetworkSpec};
use plexus_lab::{probe, wire, Container, ControlPlane, Lab, LabConfig};

fn plexus(cp: &ControlPlane, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plexus")).args(args).envs(cp.envs().expect("credentials")).output().expect("plexus");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The TTL of the reply to one ping (`ttl=N`), if one came.
fn reply_ttl(from: &Container, to: Ipv4Addr) -> Option<u8> {
    let out = plexus_agent::netns::exec(&from.netns, &["ping", "-n", "-c", "1", "-W", "2", &to.to_string()]).expect("ping (install iputils-ping)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("ttl=").nth(1)?.split_whitespace().next()?.parse().ok()
}

fn reaches(from: &Container, to: Ipv4Addr) -> bool {
    probe::wait_ping(&from.netns, to, Duration::from_secs(5)).is_ok()
}

fn cut_off(from: &Container, to: Ipv4Addr) -> bool {
    probe::ping(&from.netns, to, 3, Duration::from_millis(200)).expect("ping") == 0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_router_routes_between_its_networks_in_every_switch() {
    let lab = Lab::up(&LabConfig::owned(&plexus_tests::unique_name('r'), 3)).expect("lab");
    let cp = lab.start_control_plane(Path::new(env!("CARGO_BIN_EXE_plexus"))).expect("control plane");
    let api = cp.client().expect("client");
    for (n, subnet) in [("red", "10.1.0.0/24"), ("blue", "10.2.0.0/24"), ("green", "10.3.0.0/24")] {
        api.create_network(&NetworkSpec::overlay(n, subnet)).await.expect("network");
    }
    let mut c = std::collections::BTreeMap::new();
    for (name, net, host) in [("r1", "red", "h1"), ("b3", "blue", "h3"), ("b1", "blue", "h1"), ("g2", "green", "h2")] {
        let e = api.create_endpoint(net, &EndpointSpec::on(host)).await.expect("endpoint");
        c.insert(name, lab.attach(&e, name, wire::CONTAINER_MTU).await.expect("attach"));
    }
    let ip = |n: &str| c[n].ip;
    // Before any router: networks are apart, and a gateway answers ping in its network.
    assert!(reaches(&c["r1"], Ipv4Addr::new(10, 1, 0, 1)), "red's gateway answers r1");
    assert!(reaches(&c["b3"], Ipv4Addr::new(10, 2, 0, 1)), "blue's gateway answers b3");
    assert!(cut_off(&c["r1"], ip("b3")), "red and blue are apart before the router");

    let (ok, out) = plexus(&cp, &["router", "create", "r", "--network", "red", "--network", "blue"]);
    assert!(ok, "router create: {out}");
    // Across hosts (h1 -> h3) and on one host (h1 -> h1), both ways.
    for (from, to) in [("r1", "b3"), ("r1", "b1"), ("b3", "r1"), ("b1", "r1")] {
        let (f, t) = (c[from].netns.clone(), ip(to));
        tokio::task::spawn_blocking(move || probe::wait_ping(&f, t, Duration::from_secs(10)))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{from} -> {to} routed: {e}"));
    }
    // The reply crossed one router: its TTL is one less than a switched reply's.
    let switched = reply_ttl(&c["b1"], ip("b3")).expect("b1 -> b3 answers");
    let routed = reply_ttl(&c["r1"], ip("b3")).expect("r1 -> b3 answers");
    assert_eq!(routed + 1, switched, "routed reply ttl={routed}, switched ttl={switched}");
    // 10 MB of TCP, every byte checked, routed across hosts and on one host.
    for to in ["b3", "b1"] {
        let (f, tn, t) = (c["r1"].netns.clone(), c[to].netns.clone(), ip(to));
        let tr = tokio::task::spawn_blocking(move || probe::tcp_transfer(&f, &tn, t, 10 << 20)).await.unwrap().expect("tcp");
        assert!(tr.intact, "r1 -> {to}: {} bytes, intact={}", tr.bytes, tr.intact);
    }
    // Green is on no router: unreachable from red and blue, its own gateway still answers.
    assert!(cut_off(&c["r1"], ip("g2")), "green stays apart");
    assert!(cut_off(&c["b3"], ip("g2")), "green stays apart");
    assert!(reaches(&c["g2"], Ipv4Addr::new(10, 3, 0, 1)));
    // The other network's gateway is not an address red routes to.
    assert!(cut_off(&c["g2"], ip("r1")));

    // Off the router: cut; back on: restored.
    let (ok, out) = plexus(&cp, &["router", "remove", "r", "blue"]);
    assert!(ok, "router remove: {out}");
    let (f, t) = (c["r1"].clone(), ip("b3"));
    assert!(tokio::task::spawn_blocking(move || { (0..20).any(|_| cut_off(&f, t)) }).await.unwrap(), "blue off the router is cut from red");
    let (ok, out) = plexus(&cp, &["router", "add", "r", "blue"]);
    assert!(ok, "router add: {out}");
    assert!(reaches(&c["r1"], ip("b3")), "blue back on the router is reached again");
    let (ok, out) = plexus(&cp, &["router", "list"]);
    assert!(ok && out.contains("blue,red"), "router list: {out}");

    // Routes come back after the controller, h3's agent and h3's ovs-vswitchd restart (the
    // last comes back with no flows and no meters at all).
    let bin = Path::new(env!("CARGO_BIN_EXE_plexus"));
    assert!(lab.signal_process("controller", libc::SIGKILL));
    lab.start_controller(bin).expect("controller restarts");
    assert!(reaches(&c["r1"], ip("b3")), "routed after the controller restarted");
    assert!(lab.signal_process("agent-h3", libc::SIGKILL));
    lab.start_agent("h3", bin).expect("agent restarts");
    assert!(reaches(&c["r1"], ip("b3")), "routed after h3's agent restarted");
    let h3 = lab.host("h3").expect("h3");
    assert!(h3.ovs.signal(plexus_lab::Daemon::Vswitchd, libc::SIGKILL));
    h3.ovs.start_daemon(plexus_lab::Daemon::Vswitchd).expect("ovs-vswitchd restarts");
    let (f, t) = (c["b3"].netns.clone(), ip("r1"));
    let back = tokio::task::spawn_blocking(move || probe::wait_ping(&f, t, Duration::from_secs(30))).await.unwrap();
    assert!(back.is_ok(), "routed after h3's ovs-vswitchd restarted: {back:?} (logs in {})", lab.dir.display());
    assert!(reaches(&c["b3"], Ipv4Addr::new(10, 2, 0, 1)), "blue's gateway answers on the restarted switch");
}

/// What routers cannot do yet, or may not, is refused with the field and the reason, and
/// changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn bad_routers_are_refused_with_the_field_and_nothing_changes() {
    let lab = Lab::up(&LabConfig::owned(&plexus_tests::unique_name('r'), 1)).expect("lab");
    let cp = lab.start_control_plane(Path::new(env!("CARGO_BIN_EXE_plexus"))).expect("control plane");
    let api = cp.client().expect("client");
    for (n, subnet) in [("red", "10.1.0.0/24"), ("blue", "10.2.0.0/24"), ("same", "10.1.0.0/25")] {
        api.create_network(&NetworkSpec::overlay(n, subnet)).await.expect("network");
    }
    let http = cp.http().expect("http");
    let post = |body: serde_json::Value| {
        let http = http.clone();
        let url = format!("{}/v1/routers", cp.api);
        async move {
            let r = http.post(url).json(&body).send().await.expect("post");
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    for (body, field) in [
        (serde_json::json!({"name": "r", "networks": ["red", "nope"]}), "networks"),
        (serde_json::json!({"name": "r", "networks": ["red", "red"]}), "networks"),
        (serde_json::json!({"name": "r", "networks": ["red", "same"]}), "networks"),
        (serde_json::json!({"name": "r", "networks": ["red"], "external_gateway": "192.0.2.1"}), "external_gateway"),
        (serde_json::json!({"name": "r", "networks": []}), "networks"),
    ] {
        let (status, p) = post(body.clone()).await;
        assert_eq!((status, p["field"].as_str()), (422, Some(field)), "{body}: {p}");
    }
    assert!(api.routers().await.expect("routers").is_empty(), "nothing was stored");
    // The CLI says what is wrong, once, and changes nothing.
    let (ok, out) = plexus(&cp, &["router", "add", "r", "blue"]);
    assert!(!ok && out.contains("router r"), "{out}");
    let (ok, out) = plexus(&cp, &["router", "create", "r", "--network", "red"]);
    assert!(ok, "{out}");
    let (ok, out) = plexus(&cp, &["router", "add", "r", "red"]);
    assert!(!ok && out.contains("already joins red"), "{out}");
    let (ok, out) = plexus(&cp, &["router", "remove", "r", "red"]);
    assert!(!ok && out.contains("delete the router instead"), "{out}");
    // A router joins overlay networks only: an underlay network on it is refused (once the
    // agent has registered the physical network it maps).
    let t = std::time::Instant::now();
    while !api.hosts().await.unwrap_or_default().iter().any(|h| !h.spec.physical_networks.is_empty()) {
        assert!(t.elapsed() < Duration::from_secs(30), "h1 did not register physnet1");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = http
        .post(format!("{}/v1/networks", cp.api))
        .json(&serde_json::json!({"name": "phys", "kind": {"type": "underlay", "physical_network": "physnet1"}, "subnet": "10.9.0.0/24"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 201, "the lab maps physnet1");
    let (status, p) = post(serde_json::json!({"name": "r2", "networks": ["phys"]})).await;
    assert_eq!((status, p["field"].as_str()), (422, Some("networks")), "{p}");
}
