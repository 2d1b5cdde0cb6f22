//! The way out and in (issue 12): a router with external access lets its networks'
//! containers reach a machine on the underlay that is not a Plexus host, each NATed by its
//! own host to that host's address; a published port on a host is reached from that machine
//! and from a container elsewhere; a network without external access stays inside; all of
//! it comes back after the controller, an agent and ovs-vswitchd restart. Bad input is
//! refused with the field and changes nothing.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use plexus_api::{EndpointSpec, NetworkSpec, PublishedPort};
use plexus_lab::{probe, wire, Container, ControlPlane, Lab, LabConfig};

fn plexus(cp: &ControlPlane, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plexus")).args(args).envs(cp.envs().expect("credentials")).output().expect("plexus");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Whether a TCP connection from `from` to `to` carries data both ways, trying for up to
/// `within` (the agents apply the edge within a poll).
async fn reaches(from: &Container, to: SocketAddr, within: Duration) -> bool {
    let ns = from.netns.clone();
    tokio::task::spawn_blocking(move || {
        let t = std::time::Instant::now();
        loop {
            if probe::tcp_reaches(&ns, to, Duration::from_secs(1)).unwrap_or(false) {
                return true;
            }
            if t.elapsed() > within {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .expect("probe")
}

async fn refused(from: &Container, to: SocketAddr) -> bool {
    !reaches(from, to, Duration::from_secs(3)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_go_out_through_their_own_host_and_published_ports_come_in() {
    let lab = Lab::up(&LabConfig::owned(&plexus_tests::unique_name('x'), 3)).expect("lab");
    let cp = lab.start_control_plane(Path::new(env!("CARGO_BIN_EXE_plexus"))).expect("control plane");
    let api = cp.client().expect("client");
    for (n, subnet) in [("red", "10.1.0.0/24"), ("blue", "10.2.0.0/24"), ("green", "10.3.0.0/24")] {
        api.create_network(&NetworkSpec::overlay(n, subnet)).await.expect("network");
    }
    let (ok, out) = plexus(&cp, &["router", "create", "out", "--network", "red", "--network", "blue", "--external"]);
    assert!(ok, "router create --external: {out}");
    let mut c = std::collections::BTreeMap::new();
    for (name, net, host) in [("r1", "red", "h1"), ("b3", "blue", "h3"), ("g2", "green", "h2")] {
        let e = api.create_endpoint(net, &EndpointSpec::on(host)).await.expect("endpoint");
        c.insert(name, lab.attach(&e, name, wire::CONTAINER_MTU).await.expect("attach"));
    }
    // A web server's endpoint on h2 publishes host port 8080 to its port 80, through the CLI.
    let (ok, out) = plexus(&cp, &["endpoint", "create", "--network", "red", "--host", "h2", "--id", "w2", "--publish", "8080:80/tcp", "-o", "json"]);
    assert!(ok, "endpoint create --publish: {out}");
    let w2e = api.endpoints("red").await.expect("endpoints").into_iter().find(|e| e.id == "w2").expect("w2");
    assert_eq!(w2e.publish, [PublishedPort { host_port: 8080, port: 80, protocol: plexus_api::PortProtocol::Tcp }]);
    let w2 = lab.attach(&w2e, "w2", wire::CONTAINER_MTU).await.expect("attach w2");
    let web = probe::TcpServer::start(&w2.netns, SocketAddr::new(IpAddr::V4(w2.ip), 80)).expect("web server in w2");

    // A machine on the underlay that is not a Plexus host, listening.
    let outsider = lab.add_outsider("out", 200).expect("outsider");
    let server = probe::TcpServer::start(&outsider.netns, SocketAddr::new(IpAddr::V4(outsider.ip), 0)).expect("listener on the underlay");
    let host_ip = |h: &str| lab.host(h).expect("host").underlay_ip;

    // Out: r1 (on h1) and b3 (on h3) reach it, each seen as its own host's address.
    for (name, host) in [("r1", "h1"), ("b3", "h3")] {
        assert!(reaches(&c[name], server.addr, Duration::from_secs(20)).await, "{name} reaches the underlay listener (logs in {})", lab.dir.display());
        let seen = server.peers().last().map(|p| p.ip());
        assert_eq!(seen, Some(IpAddr::V4(host_ip(host))), "{name}'s connection arrives from {host}'s address");
    }
    assert!(probe::wait_ping(&c["r1"].netns, outsider.ip, Duration::from_secs(5)).is_ok(), "ping goes out and its answer comes back");
    assert!(
        server.peers().iter().all(|p| !matches!(p.ip(), IpAddr::V4(v) if v.octets()[0] == 10)),
        "no container address leaks onto the underlay: {:?}",
        server.peers()
    );
    // Green is on no router with external access: it stays inside.
    assert!(refused(&c["g2"], server.addr).await, "green reaches nothing outside Plexus");

    // In: the published port on h2's address, from the underlay machine and from a container
    // on another host (out through h1, in through h2).
    let published = SocketAddr::new(IpAddr::V4(host_ip("h2")), 8080);
    assert!(reaches(&outsider, published, Duration::from_secs(20)).await, "h2:8080 reaches w2:80 from the underlay");
    assert_eq!(web.peers().last().map(|p| p.ip()), Some(IpAddr::V4(outsider.ip)), "the web server sees the real client");
    assert!(reaches(&c["r1"], published, Duration::from_secs(10)).await, "h2:8080 reaches w2 from r1 on h1");
    // Nothing else of w2 is open from outside: its own address is not routed on the underlay,
    // and another port of h2 forwards nothing.
    assert!(refused(&outsider, SocketAddr::new(IpAddr::V4(host_ip("h2")), 8081)).await);
    let (ok, out) = plexus(&cp, &["router", "list"]);
    assert!(ok && out.contains("yes"), "router list shows external access: {out}");

    // Restarts: the controller, h2's agent, and h1's ovs-vswitchd (which makes the external
    // port anew, without the host's routes through it).
    let bin = Path::new(env!("CARGO_BIN_EXE_plexus"));
    assert!(lab.signal_process("controller", libc::SIGKILL));
    lab.start_controller(bin).expect("controller restarts");
    assert!(reaches(&c["r1"], server.addr, Duration::from_secs(20)).await, "out after the controller restarted");
    assert!(lab.signal_process("agent-h2", libc::SIGKILL));
    lab.start_agent("h2", bin).expect("agent restarts");
    assert!(reaches(&outsider, published, Duration::from_secs(20)).await, "published after h2's agent restarted");
    let h1 = lab.host("h1").expect("h1");
    assert!(h1.ovs.signal(plexus_lab::Daemon::Vswitchd, libc::SIGKILL));
    h1.ovs.start_daemon(plexus_lab::Daemon::Vswitchd).expect("ovs-vswitchd restarts");
    assert!(reaches(&c["r1"], server.addr, Duration::from_secs(40)).await, "out after h1's ovs-vswitchd restarted (logs in {})", lab.dir.display());
    assert_eq!(server.peers().last().map(|p| p.ip()), Some(IpAddr::V4(host_ip("h1"))));

    // Deleting the endpoint takes its published port away.
    api.delete_endpoint("red", "w2").await.expect("delete w2");
    let t = std::time::Instant::now();
    while reaches(&outsider, published, Duration::from_millis(100)).await {
        assert!(t.elapsed() < Duration::from_secs(30), "h2:8080 still forwards after w2 was deleted");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(web);
}

/// Ports that cannot be published, and router changes that would strand published ports,
/// are refused with the field; nothing changes.
#[tokio::test(flavor = "multi_thread")]
async fn bad_published_ports_are_refused_with_the_field_and_nothing_changes() {
    let lab = Lab::up(&LabConfig::owned(&plexus_tests::unique_name('x'), 1)).expect("lab");
    let cp = lab.start_control_plane(Path::new(env!("CARGO_BIN_EXE_plexus"))).expect("control plane");
    let api = cp.client().expect("client");
    for (n, subnet) in [("red", "10.1.0.0/24"), ("green", "10.3.0.0/24")] {
        api.create_network(&NetworkSpec::overlay(n, subnet)).await.expect("network");
    }
    let (ok, out) = plexus(&cp, &["router", "create", "out", "--network", "red", "--external"]);
    assert!(ok, "{out}");
    let http = cp.http().expect("http");
    let post = |net: &str, body: serde_json::Value| {
        let (http, url) = (http.clone(), format!("{}/v1/networks/{net}/endpoints", cp.api));
        async move {
            let r = http.post(url).json(&body).send().await.expect("post");
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let (status, _) = post("red", serde_json::json!({"id": "a", "host": "h1", "publish": [{"host_port": 8080, "port": 80}]})).await;
    assert_eq!(status, 201);
    for (net, body, want) in [
        ("red", serde_json::json!({"host": "h1", "publish": [{"host_port": 8080, "port": 81}]}), (409, "publish[0].host_port")),
        ("red", serde_json::json!({"host": "h1", "publish": [{"host_port": 0, "port": 80}]}), (422, "publish[0].host_port")),
        ("red", serde_json::json!({"host": "h1", "publish": [{"host_port": 9000, "port": 70000}]}), (422, "publish[0].port")),
        ("red", serde_json::json!({"host": "h1", "publish": [{"host_port": 9000, "port": 1}, {"host_port": 9000, "port": 2}]}), (422, "publish[1].host_port")),
        ("red", serde_json::json!({"host": "h1", "publish": [{"host_port": 9000, "port": 1, "protocol": "sctp"}]}), (400, "publish[0].protocol")),
        ("green", serde_json::json!({"host": "h1", "publish": [{"host_port": 9000, "port": 80}]}), (422, "publish")),
    ] {
        let (status, p) = post(net, body.clone()).await;
        assert_eq!((status, p["field"].as_str()), (want.0, Some(want.1)), "{body}: {p}");
    }
    // The same port over UDP is another port.
    let (status, p) = post("red", serde_json::json!({"host": "h1", "publish": [{"host_port": 8080, "port": 80, "protocol": "udp"}]})).await;
    assert_eq!(status, 201, "{p}");
    assert_eq!(api.endpoints("red").await.expect("endpoints").len(), 2, "only the good endpoints were stored");
    assert!(api.endpoints("green").await.expect("endpoints").is_empty());
    // Taking external access away from published ports is refused, and so is deleting the
    // router; both leave it as it was.
    let r = api.router("out").await.expect("router");
    let mut spec = r.spec.clone();
    spec.external = false;
    let e = api.put_router(&spec, None).await.expect_err("external access is needed");
    assert!(e.to_string().contains("publishes ports"), "{e}");
    let (ok, out) = plexus(&cp, &["router", "delete", "out"]);
    assert!(!ok && out.contains("publishes ports"), "{out}");
    assert!(api.router("out").await.expect("router").spec.external);
    // Published ports are replaced as a whole, through the CLI too; a port another endpoint
    // of the host publishes is refused.
    let (ok, out) = plexus(&cp, &["endpoint", "publish", "--network", "red", "a", "9090:90", "8080:80"]);
    assert!(ok && out.contains("9090:90/tcp,8080:80/tcp"), "{out}");
    let other = api.endpoints("red").await.expect("endpoints").into_iter().find(|e| e.id != "a").expect("the udp one");
    let (ok, out) = plexus(&cp, &["endpoint", "publish", "--network", "red", &other.id, "9090:1/tcp"]);
    assert!(!ok && out.contains("already published by endpoint red/a"), "{out}");
    // The CLI checks the flag before anything is sent.
    for bad in ["0:80", "8080:80/sctp", "http"] {
        let (ok, out) = plexus(&cp, &["endpoint", "create", "--network", "red", "--host", "h1", "--publish", bad]);
        assert!(!ok && out.contains("--publish"), "{bad}: {out}");
    }
    assert_eq!(api.endpoints("red").await.expect("endpoints").len(), 2);
}
