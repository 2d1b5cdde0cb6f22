//! Policies enforced in the switches (issue 13), on a 3-host lab driven through the `plexus`
//! CLI: a deny-by-default policy on `app=db` with one rule allowing tcp/5432 from `app=api`
//! lets api reach db on another host and on the same one, and nothing else in (other ports,
//! other peers, ping); db still opens connections outward and gets the replies; a peer in
//! another network behind a router is allowed by a rule naming that network; a forged source
//! address of an allowed peer is still dropped; an endpoint that loses its label loses its
//! access for new connections at once; deleting the policy opens everything again.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use plexus_api::{EndpointSpec, NetworkSpec};
use plexus_lab::probe::{self, TcpServer};
use plexus_lab::{wire, Container, ControlPlane, Lab, LabConfig};

fn plexus(cp: &ControlPlane, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plexus")).args(args).envs(cp.envs().expect("credentials")).output().expect("plexus");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

const QUICK: Duration = Duration::from_millis(700);

fn tcp(from: &Container, to: &Container, port: u16) -> bool {
    probe::tcp_reaches(&from.netns, SocketAddr::new(to.ip.into(), port), QUICK).expect("tcp probe")
}

fn pings(from: &Container, to: Ipv4Addr) -> bool {
    probe::ping(&from.netns, to, 2, Duration::from_millis(200)).expect("ping") > 0
}

/// An endpoint of `net` on `host` labelled `app=APP`, its container plugged in; its id.
async fn labelled(lab: &Lab, api: &plexus_api::Client, net: &str, name: &str, host: &str, app: &str) -> (String, Container) {
    let spec = EndpointSpec { labels: [("app".to_string(), app.to_string())].into(), ..EndpointSpec::on(host) };
    let e = api.create_endpoint(net, &spec).await.expect("endpoint");
    (e.id.clone(), lab.attach(&e, name, wire::CONTAINER_MTU).await.expect("attach"))
}

/// Polls `f` until it holds or `limit` passes; the time it took.
fn until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        let start = t.elapsed();
        if f() {
            return Some(start);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deny_by_default_policy_lets_in_only_what_its_rules_allow() {
    let lab = Lab::up(&LabConfig::owned(&plexus_tests::unique_name('y'), 3)).expect("lab");
    let cp = lab.start_control_plane(Path::new(env!("CARGO_BIN_EXE_plexus"))).expect("control plane");
    let api = cp.client().expect("client");
    api.create_network(&NetworkSpec::overlay("red", "10.1.0.0/24")).await.expect("red");
    api.create_network(&NetworkSpec::overlay("blue", "10.2.0.0/24")).await.expect("blue");
    let mut c = std::collections::BTreeMap::new();
    let mut ids = std::collections::BTreeMap::new();
    for (name, net, host, app) in [
        ("db", "red", "h3", "db"),
        ("api", "red", "h1", "api"),
        ("api3", "red", "h3", "api"),
        ("web", "red", "h2", "web"),
        ("bapi", "blue", "h2", "api"),
        ("bweb", "blue", "h1", "web"),
    ] {
        let (id, container) = labelled(&lab, &api, net, name, host, app).await;
        ids.insert(name, format!("{net}/{id}"));
        c.insert(name, container);
    }
    let (ok, out) = plexus(&cp, &["router", "create", "r", "--network", "red", "--network", "blue"]);
    assert!(ok, "router: {out}");
    let db = c["db"].clone();
    let _servers: Vec<TcpServer> =
        [5432u16, 80].iter().map(|p| TcpServer::start(&db.netns, SocketAddr::new(db.ip.into(), *p)).expect("server in db")).collect();
    let _outward = TcpServer::start(&c["web"].netns, SocketAddr::new(c["web"].ip.into(), 8080)).expect("server in web");
    // Before any policy everything is open (so the refusals below are the policy's doing).
    for (from, port) in [("api", 5432), ("web", 5432), ("api", 80), ("bweb", 5432)] {
        assert!(until(Duration::from_secs(10), || tcp(&c[from], &db, port)).is_some(), "{from} -> db:{port} before any policy");
    }
    assert!(pings(&c["web"], db.ip));

    let (ok, out) =
        plexus(&cp, &["policy", "create", "db-only", "--network", "red", "--select", "app=db", "--ingress", "allow tcp/5432 from app=api from app=api@blue"]);
    assert!(ok, "policy create: {out}");
    assert!(out.contains("ingress[0]  allow tcp/5432 from app=api from app=api@blue"), "{out}");
    let took = until(Duration::from_secs(10), || !tcp(&c["web"], &db, 5432)).expect("web -> db:5432 is refused once the policy is in");
    println!("policy in force after {took:?}");

    // Allowed: api on another host, api on db's own host, api in blue through the router.
    for from in ["api", "api3", "bapi"] {
        assert!(tcp(&c[from], &db, 5432), "{from} -> db:5432 is allowed");
    }
    // Refused: another peer on the allowed port, an allowed peer on another port, ping, and
    // a peer in blue without the label.
    assert!(!tcp(&c["web"], &db, 5432), "web -> db:5432");
    assert!(!tcp(&c["api"], &db, 80), "api -> db:80");
    assert!(!tcp(&c["bweb"], &db, 5432), "bweb -> db:5432 (routed, not app=api)");
    assert!(!pings(&c["api"], db.ip), "ping api -> db obeys the policy too");
    // Only ingress is covered: db opens connections outward and the replies come back, and
    // its pings are answered.
    assert!(tcp(&db, &c["web"], 8080), "db -> web:8080 (egress is open, replies return)");
    assert!(pings(&db, c["api"].ip), "db pings api");
    // Everyone else is untouched: web and api still talk.
    assert!(pings(&c["web"], c["api"].ip));

    // plexus trace, side by side with the traffic: its verdict agrees with what happened, and
    // it names the rule, the policy, the router and the tunnel.
    let trace = |from: &str, to: &str, port: Option<u16>| {
        let (network, id) = ids[from].split_once('/').expect("net/id");
        let req = plexus_api::TraceRequest {
            network: network.into(),
            from: id.into(),
            to: ids[to].clone(),
            protocol: if port.is_some() { plexus_api::TraceProtocol::Tcp } else { plexus_api::TraceProtocol::Icmp },
            port,
        };
        let api = api.clone();
        async move { api.trace(&req).await.expect("trace") }
    };
    let names = |t: &plexus_api::Trace| t.steps.iter().map(|s| s.object.clone()).collect::<Vec<_>>().join(" | ");
    for (from, to, port) in [
        ("api", "db", Some(5432)),
        ("api3", "db", Some(5432)),
        ("bapi", "db", Some(5432)),
        ("web", "db", Some(5432)),
        ("api", "db", Some(80)),
        ("bweb", "db", Some(5432)),
        ("api", "db", None),
        ("db", "web", Some(8080)),
    ] {
        let real = match port {
            Some(p) => tcp(&c[from], &c[to], p),
            None => pings(&c[from], c[to].ip),
        };
        let t = trace(from, to, port).await;
        println!("trace {from} -> {to} {port:?}: {} [{}]", t.verdict, names(&t));
        assert_eq!(t.delivered, real, "trace {from} -> {to} {port:?} says {}, the traffic {}", t.verdict, if real { "passed" } else { "did not" });
        let objects = names(&t);
        match (from, to, port) {
            ("api", "db", Some(5432)) => {
                assert!(objects.contains("policy db-only ingress rule 0 (allow tcp/5432") && objects.contains("tunnel to h3"), "{objects}")
            }
            ("bapi", "db", _) => {
                assert!(objects.contains("router r: blue -> red") && objects.contains("tunnel to h3") && objects.contains("ingress rule 0"), "{objects}")
            }
            ("api3", "db", _) => assert!(!objects.contains("tunnel to") && objects.contains("ingress rule 0"), "{objects}"),
            (_, "db", _) => assert!(t.verdict.contains("dropped by policy db-only"), "{}", t.verdict),
            _ => assert!(t.verdict.starts_with("delivered to"), "{}", t.verdict),
        }
    }
    // Through the CLI, as JSON for machines; an unknown destination is explained too.
    let (ok, out) = plexus(&cp, &["trace", "--from", &ids["api"], "--to", &ids["db"], "--tcp", "80", "-o", "json"]);
    let t: plexus_api::Trace = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(ok && !t.delivered && t.verdict.contains("no rule lets tcp/80"), "{out}");
    let (ok, out) = plexus(&cp, &["trace", "--from", &ids["api"], "--to", "10.1.0.250"]);
    assert!(ok && out.contains("unknown destination"), "{out}");
    assert!(!pings(&c["api"], "10.1.0.250".parse().expect("ip")));

    // Counters: five new connections from api are five decisions of the allow rule (later
    // packets of a connection pass as established); three attempts from web are three drops
    // at db (no retransmission comes within the probe's timeout).
    let counters = || async { api.policy_counters("db-only").await.expect("counters") };
    let before = counters().await;
    for _ in 0..5 {
        assert!(tcp(&c["api"], &db, 5432));
    }
    for _ in 0..3 {
        assert!(!tcp(&c["web"], &db, 5432));
    }
    let after = counters().await;
    assert_eq!(after.switches, 3, "every switch answered: {after:?}");
    let rule = |c: &plexus_api::PolicyCounters| c.rules.iter().find(|r| r.direction == "ingress" && r.index == 0).map(|r| r.packets).expect("rule 0");
    let dropped = |c: &plexus_api::PolicyCounters| c.drops.iter().find(|d| d.direction == "ingress").map(|d| d.packets).expect("db's drops");
    let (allowed, refused) = (rule(&after) - rule(&before), dropped(&after) - dropped(&before));
    println!("allow rule counted {allowed} for 5 connections; db dropped {refused} for 3 attempts");
    assert!((5..=6).contains(&allowed), "the allow rule counted {allowed} packets for 5 connections");
    assert!((3..=6).contains(&refused), "db's ingress drops grew by {refused} for 3 refused attempts");
    // The same figures in /metrics, and through the CLI.
    let metrics = cp.http().expect("http").get(format!("{}/metrics", cp.api.split(',').next().unwrap_or_default())).send().await.expect("metrics");
    let text = metrics.text().await.expect("metrics text");
    let line =
        text.lines().find(|l| l.starts_with("plexus_policy_rule_packets_total{policy=\"db-only\",direction=\"ingress\",rule=\"0\"}")).expect("rule metric");
    let value: u64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number");
    assert!(value >= rule(&after), "{line}");
    let (ok, out) = plexus(&cp, &["policy", "counters", "db-only"]);
    assert!(ok && out.contains("allow tcp/5432 from app=api"), "{out}");

    // A forged source: web sends from api's address (a route with that source), which the
    // policy would allow; port security drops it before policy is consulted.
    let web = &c["web"];
    for args in [
        vec!["ip", "addr", "add", &format!("{}/32", c["api"].ip), "dev", "eth0"],
        vec!["ip", "route", "add", &format!("{}/32", db.ip), "dev", "eth0", "src", &c["api"].ip.to_string()],
    ] {
        let out = plexus_agent::netns::exec(&web.netns, &args).expect("ip");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(!tcp(web, &db, 5432), "web forging api's address is dropped");

    // api loses its label: its new connections are cut at once.
    let api_id = api.endpoints("red").await.expect("endpoints").into_iter().find(|e| e.ip == c["api"].ip).expect("api's endpoint").id;
    let (ok, out) = plexus(&cp, &["endpoint", "label", "--network", "red", &api_id, "app=old"]);
    assert!(ok, "label: {out}");
    let cut = until(Duration::from_secs(5), || !tcp(&c["api"], &db, 5432)).expect("api without its label is refused");
    println!("label change cut new connections after {cut:?}");
    assert!(cut < Duration::from_secs(1), "the label change took {cut:?} to cut new connections");
    assert!(tcp(&c["api3"], &db, 5432), "api3 keeps its access");

    // Deleting the policy opens everything again.
    let (ok, out) = plexus(&cp, &["policy", "delete", "db-only"]);
    assert!(ok, "{out}");
    assert!(until(Duration::from_secs(10), || tcp(&c["api"], &db, 80)).is_some(), "open again without the policy");
    assert!(pings(&c["api"], db.ip));
}

/// Tries `from` -> `to:port` over and over until `stop` is set; how many got through.
fn hammer(from: Container, to: SocketAddr, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<(u32, u32)> {
    std::thread::spawn(move || {
        let (mut tries, mut through) = (0, 0);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            tries += 1;
            through += u32::from(probe::tcp_reaches(&from.netns, to, Duration::from_millis(150)).unwrap_or(false));
        }
        (tries, through)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn open_connections_live_on_and_enforcement_fails_closed_through_restarts() {
    let lab = Lab::up(&LabConfig::owned(&plexus_tests::unique_name('y'), 2)).expect("lab");
    let plexus_bin = Path::new(env!("CARGO_BIN_EXE_plexus"));
    let cp = lab.start_control_plane(plexus_bin).expect("control plane");
    let api = cp.client().expect("client");
    api.create_network(&NetworkSpec::overlay("red", "10.1.0.0/24")).await.expect("red");
    let mut c = std::collections::BTreeMap::new();
    for (name, host, app) in [("db", "h2", "db"), ("api", "h1", "api"), ("api2", "h1", "api"), ("web", "h1", "web")] {
        c.insert(name, labelled(&lab, &api, "red", name, host, app).await.1);
    }
    let db = c["db"].clone();
    let addr = SocketAddr::new(db.ip.into(), 5432);
    let _server = TcpServer::start(&db.netns, addr).expect("server in db");
    let (ok, out) = plexus(&cp, &["policy", "create", "db-only", "--network", "red", "--select", "app=db", "--ingress", "allow tcp/5432 from app=api"]);
    assert!(ok, "{out}");
    until(Duration::from_secs(10), || !tcp(&c["web"], &db, 5432)).expect("the policy is in force");

    // A connection open when api loses its label lives on (Kubernetes' choice, documented);
    // a new one is refused.
    let mut open = probe::tcp_open(&c["api"].netns, addr, Duration::from_secs(2)).expect("api -> db opens");
    let id = api.endpoints("red").await.expect("endpoints").into_iter().find(|e| e.ip == c["api"].ip).expect("api").id;
    let (ok, out) = plexus(&cp, &["endpoint", "label", "--network", "red", &id, "app=old"]);
    assert!(ok, "{out}");
    until(Duration::from_secs(5), || !tcp(&c["api"], &db, 5432)).expect("a new connection from the relabelled api is refused");
    assert!(probe::tcp_echoes(&mut open, b"still here"), "the connection opened before the change carries on");

    // Restarts: web keeps trying all along and never gets through; api2 is let in after each.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = hammer(c["web"].clone(), addr, stop.clone());
    let h2 = lab.host("h2").expect("h2").clone();
    // ovs-vswitchd on db's host: it comes back without flows and drops everything (fail_mode
    // secure) until the controller restores them all in one bundle.
    assert!(h2.ovs.signal(plexus_lab::Daemon::Vswitchd, libc::SIGKILL));
    h2.ovs.start_daemon(plexus_lab::Daemon::Vswitchd).expect("ovs-vswitchd restarts");
    until(Duration::from_secs(30), || tcp(&c["api2"], &db, 5432)).expect("api2 gets in after ovs-vswitchd restarted");
    // The controller: installed flows keep enforcing while it is away.
    assert!(lab.signal_process("controller", libc::SIGKILL));
    for _ in 0..3 {
        assert!(tcp(&c["api2"], &db, 5432), "api2 gets in while the controller is down");
    }
    lab.start_controller(plexus_bin).expect("controller restarts");
    // The agent of db's host.
    assert!(lab.signal_process("agent-h2", libc::SIGKILL));
    lab.start_agent("h2", plexus_bin).expect("agent restarts");
    assert!(until(Duration::from_secs(30), || tcp(&c["api2"], &db, 5432)).is_some(), "api2 gets in after the restarts");
    assert!(!tcp(&c["api"], &db, 5432), "the relabelled api stays out after the restarts");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (tries, through) = h.join().expect("hammer");
    println!("web tried {tries} times through the restarts");
    assert!(tries > 15, "web tried only {tries} times");
    assert_eq!(through, 0, "web got through {through} of {tries} times while daemons restarted");
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_rules_cidrs_with_exceptions_and_deny_priorities_hold_statefully() {
    let lab = Lab::up(&LabConfig::owned(&plexus_tests::unique_name('y'), 2)).expect("lab");
    let cp = lab.start_control_plane(Path::new(env!("CARGO_BIN_EXE_plexus"))).expect("control plane");
    let api = cp.client().expect("client");
    api.create_network(&NetworkSpec::overlay("red", "10.1.0.0/24")).await.expect("red");
    let mut c = std::collections::BTreeMap::new();
    for (name, host, app) in [("web", "h1", "web"), ("db", "h2", "db"), ("api", "h2", "api"), ("cache", "h1", "cache")] {
        c.insert(name, labelled(&lab, &api, "red", name, host, app).await.1);
    }
    let servers: Vec<TcpServer> = ["db", "api", "cache", "web"]
        .iter()
        .flat_map(|n| [5432u16, 6379].map(|p| TcpServer::start(&c[n].netns, SocketAddr::new(c[n].ip.into(), p)).expect("server")))
        .collect();
    // web may open connections only to red's subnet less api's address, and never to
    // tcp/6379 (a deny of a lower priority number than the allow).
    let api_ip = format!("{}/32", c["api"].ip);
    let (ok, out) = plexus(
        &cp,
        &[
            "policy",
            "create",
            "web-out",
            "--network",
            "red",
            "--select",
            "app=web",
            "--egress",
            &format!("allow tcp to 10.1.0.0/24 except {api_ip}"),
            "--egress",
            "deny tcp/6379 to 10.1.0.0/24 priority 10",
        ],
    );
    assert!(ok, "{out}");
    until(Duration::from_secs(10), || !tcp(&c["web"], &c["api"], 5432)).expect("web -> api refused once the policy is in");
    assert!(tcp(&c["web"], &c["db"], 5432), "web -> db:5432 (cross-host) is allowed");
    assert!(tcp(&c["web"], &c["cache"], 5432), "web -> cache:5432 (same host) is allowed");
    assert!(!tcp(&c["web"], &c["db"], 6379), "web -> db:6379 is denied at a higher priority");
    assert!(!tcp(&c["web"], &c["api"], 5432), "api's address is excepted");
    assert!(!pings(&c["web"], c["db"].ip), "only tcp is allowed out");
    // Stateful: web's ingress is open, and its replies to connections others open go out as
    // established, though no egress rule allows them.
    assert!(tcp(&c["api"], &c["web"], 5432), "api -> web, replies from web pass");
    assert!(pings(&c["db"], c["web"].ip), "db pings web and the replies come back");
    drop(servers);
}
