//! IPv6 and dual stack on a lab: containers of a dual-stack network on two hosts ping6 and
//! talk TCP over IPv6, by their addresses and their link-local ones; neighbours are answered
//! in the switch (no Neighbor Solicitation ever reaches a container); a router carries IPv6
//! between networks; a forged IPv6 source is dropped; policies govern IPv6 as they do IPv4;
//! and what the API refuses for IPv6 it refuses with the field named, leaving nothing behind.

use std::net::Ipv6Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use plexus_api::{ClientError, EndpointSpec, NetworkSpec, RouterSpec};
use plexus_lab::{probe, Container, Lab};

/// Runs `args` in namespace `ns`; whether it succeeded, and what it printed.
fn in_ns(ns: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip").args(["netns", "exec", ns]).args(args).output().expect("ip netns exec (apt-get install iproute2)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// One ICMPv6 echo to `dst` (an address, or `fe80::…%eth0`), optionally from `src`.
fn ping6(from: &Container, dst: &str, src: Option<Ipv6Addr>) -> bool {
    let src = src.map(|s| s.to_string());
    let mut args = vec!["ping", "-6", "-n", "-c", "1", "-W", "1"];
    if let Some(s) = &src {
        args.extend(["-I", s.as_str()]);
    }
    args.push(dst);
    in_ns(&from.netns, &args).0
}

/// Polls [`ping6`] until one is answered; how long it took, or `None` after `within`.
fn wait_ping6(from: &Container, dst: &str, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        if ping6(from, dst, None) {
            return Some(t.elapsed());
        }
    }
    None
}

/// A counter of the namespace's IPv6 stack (`/proc/net/snmp6`).
fn snmp6(ns: &str, counter: &str) -> u64 {
    let (ok, text) = in_ns(ns, &["cat", "/proc/net/snmp6"]);
    assert!(ok, "reading /proc/net/snmp6 in {ns}: {text}");
    text.lines().find_map(|l| l.strip_prefix(counter).and_then(|v| v.trim().parse().ok())).unwrap_or_else(|| panic!("no {counter} in {ns}: {text}"))
}

fn refused(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Problem(p)) => (p.status, p.field.unwrap_or_default()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dual_stack_containers_talk_ipv6_across_hosts_with_neighbours_answered_in_the_switch() {
    let lab: Lab = plexus_tests::lab('6', 2);
    let cp = lab.start_control_plane(Path::new(env!("CARGO_BIN_EXE_plexus"))).expect("control plane");
    let api = cp.client().unwrap();
    let t = Instant::now();
    while api.hosts().await.map(|h| h.len()).unwrap_or(0) < 2 {
        assert!(t.elapsed() < Duration::from_secs(20), "hosts did not register (logs in {})", lab.dir.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (h1, h2) = (lab.hosts[0].name.clone(), lab.hosts[1].name.clone());
    let dual = NetworkSpec { subnet6: Some("fd00:61::/64".into()), ..NetworkSpec::overlay("dual", "10.61.0.0/24") };
    let net = api.create_network(&dual).await.expect("a dual-stack network");
    assert_eq!(net.spec.gateway6, Some("fd00:61::1".parse().unwrap()), "the IPv6 gateway defaults to the first address");

    let alpha = api.create_endpoint("dual", &EndpointSpec::on(&h1).id("alpha")).await.unwrap();
    let bravo = api.create_endpoint("dual", &EndpointSpec::on(&h2).id("bravo")).await.unwrap();
    // Each gets the IPv6 address at its IPv4 address's offset.
    assert_eq!((alpha.ip.to_string(), alpha.ip6.map(|a| a.to_string())), ("10.61.0.2".into(), Some("fd00:61::2".into())));
    assert_eq!(bravo.ip6.map(|a| a.to_string()), Some("fd00:61::3".into()));
    let a = lab.attach(&alpha, "alpha", 1450).await.unwrap();
    let b = lab.attach(&bravo, "bravo", 1450).await.unwrap();
    let b6 = bravo.ip6.expect("bravo's IPv6 address");

    // Across hosts, over the tunnel: ping6 and an intact TCP stream.
    let took = wait_ping6(&a, &b6.to_string(), Duration::from_secs(15));
    assert!(took.is_some(), "alpha cannot ping6 bravo (logs in {})", lab.dir.display());
    let tr = probe::tcp_transfer(&a.netns, &b.netns, b6, 1 << 20).expect("a TCP transfer over IPv6");
    assert!(tr.intact && tr.bytes == 1 << 20, "TCP over IPv6 arrived damaged: {tr:?}");
    // The gateway answers ping6 in the switch.
    assert!(ping6(&a, "fd00:61::1", None), "the IPv6 gateway does not answer ping6");
    // Link-local addresses work too (the switch answers for them as well).
    let b_ll = format!("{}%eth0", bravo.mac.link_local());
    assert!(wait_ping6(&a, &b_ll, Duration::from_secs(10)).is_some(), "alpha cannot ping6 bravo's link-local {b_ll}");

    // Neighbours were answered in the switch: neither container ever received a Neighbor
    // Solicitation (a flooded one would have reached the other host through the tunnel),
    // though each resolved the other.
    for c in [&a, &b] {
        assert!(snmp6(&c.netns, "Icmp6OutNeighborSolicits") > 0, "{} never solicited a neighbour", c.netns);
        assert_eq!(snmp6(&c.netns, "Icmp6InNeighborSolicits"), 0, "a Neighbor Solicitation reached {}", c.netns);
    }
    let (_, neigh) = in_ns(&a.netns, &["ip", "-6", "neigh", "show", &b6.to_string()]);
    assert!(neigh.contains(&bravo.mac.to_string()), "alpha's neighbour entry for bravo names bravo's MAC: {neigh}");

    // Port security: an IPv6 source that is not the endpoint's own is dropped, its own passes.
    let forged: Ipv6Addr = "fd00:61::99".parse().unwrap();
    let (ok, text) = in_ns(&a.netns, &["ip", "-6", "addr", "add", &format!("{forged}/64"), "dev", "eth0", "nodad"]);
    assert!(ok, "adding a second address: {text}");
    assert!(!ping6(&a, &b6.to_string(), Some(forged)), "a forged IPv6 source got through");
    assert!(ping6(&a, &b6.to_string(), alpha.ip6), "the endpoint's own IPv6 source was dropped");
    let (ok, text) = in_ns(&a.netns, &["ip", "-6", "addr", "del", &format!("{forged}/64"), "dev", "eth0"]);
    assert!(ok, "removing the second address: {text}");

    // A router carries IPv6 between two dual-stack networks.
    let other = NetworkSpec { subnet6: Some("fd00:62::/64".into()), ..NetworkSpec::overlay("dual2", "10.62.0.0/24") };
    api.create_network(&other).await.unwrap();
    let router =
        RouterSpec { name: "r6".into(), networks: vec!["dual".into(), "dual2".into()], external: false, external_gateway: None, labels: Default::default() };
    api.create_router(&router).await.unwrap();
    let charlie = api.create_endpoint("dual2", &EndpointSpec::on(&h2).id("charlie")).await.unwrap();
    let c = lab.attach(&charlie, "charlie", 1450).await.unwrap();
    let c6 = charlie.ip6.expect("charlie's IPv6 address").to_string();
    assert!(
        wait_ping6(&a, &c6, Duration::from_secs(10)).is_some(),
        "alpha cannot ping6 charlie in the routed network; alpha's routes: {}",
        in_ns(&a.netns, &["ip", "-6", "route", "show", "table", "all"]).1
    );

    // A policy governs IPv6 too: bravo (app=db) takes TCP/5432 from app=api only, over IPv6
    // as over IPv4; charlie (routed, unlabelled) and other ports are cut, and neighbours
    // are still found (Neighbor Discovery is never policed).
    let label = |app: &str| -> std::collections::BTreeMap<String, String> { [("app".to_string(), app.to_string())].into() };
    api.set_endpoint_labels("dual", "bravo", &label("db")).await.unwrap();
    api.set_endpoint_labels("dual", "alpha", &label("api")).await.unwrap();
    let db = probe::TcpServer::start(&b.netns, std::net::SocketAddr::new(b6.into(), 5432)).expect("a server on bravo's IPv6 address");
    let web = probe::TcpServer::start(&b.netns, std::net::SocketAddr::new(b6.into(), 8080)).expect("a second server");
    let reaches = |c: &Container, s: &probe::TcpServer| probe::tcp_reaches(&c.netns, s.addr, Duration::from_millis(700)).expect("tcp probe");
    assert!(reaches(&a, &web) && reaches(&c, &db), "before any policy everyone reaches bravo");
    let rule = plexus_api::Rule {
        protocol: plexus_api::Protocol::Tcp,
        ports: vec!["5432".into()],
        peers: vec![plexus_api::Peer { select: Some("app=api".into()), ..Default::default() }],
        ..plexus_api::Rule::allow()
    };
    let policy = plexus_api::PolicySpec {
        name: "db-only".into(),
        network: "dual".into(),
        select: "app=db".into(),
        ingress: Some(vec![rule]),
        egress: None,
        labels: Default::default(),
    };
    api.create_policy(&policy).await.expect("a policy on a dual-stack network");
    let t = Instant::now();
    while reaches(&a, &web) {
        assert!(t.elapsed() < Duration::from_secs(10), "the policy never closed bravo's port 8080 to alpha over IPv6");
    }
    for c in [&a, &b] {
        in_ns(&c.netns, &["ip", "-6", "neigh", "flush", "dev", "eth0"]);
    }
    assert!(reaches(&a, &db), "app=api lost TCP/5432 over IPv6 (or its neighbours) under the policy");
    assert!(!reaches(&c, &db), "an unlabelled peer in a routed network reached bravo over IPv6");
    assert!(!ping6(&a, &b6.to_string(), None), "ICMPv6 echo, which no rule allows, got through");
    api.delete_policy("db-only").await.unwrap();
    assert!(wait_ping6(&a, &b6.to_string(), Duration::from_secs(10)).is_some(), "ping6 did not come back with the policy gone");
    drop((db, web));

    // Refused, with the field named, and nothing made.
    let host_subnet =
        NetworkSpec { subnet6: Some("fd00:63::/56".into()), ipam: plexus_api::IpamMode::HostSubnet, ..NetworkSpec::overlay("hs", "10.63.0.0/24") };
    assert_eq!(refused(api.create_network(&host_subnet).await), (422, "subnet6".into()), "a /56 with host-subnet IPAM");
    let tiny = NetworkSpec { subnet6: Some("fd00:64::/124".into()), ..NetworkSpec::overlay("tiny", "10.64.0.0/28") };
    assert_eq!(refused(api.create_network(&tiny).await), (422, "subnet6".into()), "a /124");
    let outside: Ipv6Addr = "fd00:99::5".parse().unwrap();
    assert_eq!(refused(api.create_endpoint("dual", &EndpointSpec::on(&h1).ip6(outside)).await), (422, "ip6".into()), "an address outside subnet6");
    api.create_network(&NetworkSpec::overlay("v4only", "10.65.0.0/24")).await.unwrap();
    assert_eq!(refused(api.create_endpoint("v4only", &EndpointSpec::on(&h1).ip6(outside)).await), (422, "ip6".into()), "ip6 on an IPv4-only network");
    assert_eq!(refused(api.create_endpoint("dual", &EndpointSpec::on(&h1).ip6(b6)).await), (409, "ip6".into()), "a taken address");
    let v6_cidr = plexus_api::Rule { peers: vec![plexus_api::Peer { cidr: Some("fd00::/8".into()), ..Default::default() }], ..plexus_api::Rule::allow() };
    let policy = plexus_api::PolicySpec {
        name: "p".into(),
        network: "dual".into(),
        select: "app=db".into(),
        ingress: Some(vec![v6_cidr]),
        egress: None,
        labels: Default::default(),
    };
    assert_eq!(refused(api.create_policy(&policy).await), (422, "ingress[0].peers[0].cidr".into()), "an IPv6 CIDR peer (not built yet)");
    let names: Vec<String> = api.networks().await.unwrap().into_iter().map(|n| n.spec.name).collect();
    assert_eq!(names, ["dual", "dual2", "v4only"], "a refused network was stored");
    assert_eq!(api.endpoints("dual").await.unwrap().len(), 2, "a refused endpoint was stored");
    assert!(api.policies().await.unwrap().is_empty(), "a refused policy was stored");
}
