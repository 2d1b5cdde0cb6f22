//! DNS for containers on a lab: names resolve on every host as soon as the endpoint exists
//! and stop when it goes, stay inside their routing domain, reverse lookups answer, names
//! outside Plexus reach the host's resolvers (dnsmasq on the lab's underlay stands in for the
//! outside), and what a container sends that is not DNS changes nothing.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use plexus_api::EndpointSpec;
use plexus_lab::Lab;

/// `getent hosts NAME` in a container, through `ip netns exec` (which mounts the container's
/// resolv.conf over /etc/resolv.conf): the line it prints, if the name resolved.
fn getent(netns: &str, name: &str) -> Option<String> {
    let out =
        Command::new("ip").args(["netns", "exec", netns, "getent", "hosts", name]).output().expect("ip netns exec getent (apt-get install iproute2 libc-bin)");
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Polls `getent hosts NAME` until `want(answer)` holds; how long it took, or `None` after
/// `within`.
fn wait_for(netns: &str, name: &str, within: Duration, want: impl Fn(Option<&str>) -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        if want(getent(netns, name).as_deref()) {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Sends raw bytes to `gw:53` from inside a container.
fn send_raw(netns: &str, gw: Ipv4Addr, hex: &str) {
    let py = format!("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(bytes.fromhex('{hex}'), ('{gw}', 53))");
    let out = Command::new("ip").args(["netns", "exec", netns, "python3", "-c", &py]).output().expect("python3 (apt-get install python3)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_resolve_each_other_by_name_across_hosts_and_nothing_across_networks() {
    let lab: Lab = plexus_tests::lab('d', 2);
    let cp = lab.start_control_plane(Path::new(env!("CARGO_BIN_EXE_plexus"))).expect("control plane");
    // On the underlay's .1, which exists once the control plane runs.
    let _outside =
        plexus_lab::dnsmasq::Dnsmasq::start(None, lab.controller_ip(), &["--address=/outside.test/198.51.100.7".into()]).unwrap_or_else(|e| panic!("{e}"));
    let api = cp.client().unwrap();
    let t = Instant::now();
    while api.hosts().await.map(|h| h.len()).unwrap_or(0) < 2 {
        assert!(t.elapsed() < Duration::from_secs(20), "hosts did not register (logs in {})", lab.dir.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (name, subnet) in [("blue", "10.31.0.0/24"), ("red", "10.32.0.0/24")] {
        api.create_network(&plexus_api::NetworkSpec::overlay(name, subnet)).await.unwrap();
    }
    let spec = |id: &str, host: &str| EndpointSpec { id: Some(id.into()), host: host.into(), ..EndpointSpec::on(host) };
    let (h1, h2) = (lab.hosts[0].name.clone(), lab.hosts[1].name.clone());
    let alpha = api.create_endpoint("blue", &spec("alpha", &h1)).await.unwrap();
    let a = lab.attach(&alpha, "alpha", 1450).await.unwrap();
    let carol = api.create_endpoint("red", &spec("carol", &h1)).await.unwrap();
    let c = lab.attach(&carol, "carol", 1450).await.unwrap();
    // The responder answers on the gateway once its names are in.
    let ready = wait_for(&a.netns, "alpha", Duration::from_secs(20), |a| a.is_some());
    assert!(ready.is_some(), "alpha never resolved its own name (logs in {})", lab.dir.display());

    // A name on another host resolves within a second of its endpoint's creation.
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("name".to_string(), "web".to_string());
    let bravo = api.create_endpoint("blue", &EndpointSpec { labels, ..spec("bravo", &h2) }).await.unwrap();
    let took = wait_for(&a.netns, "bravo", Duration::from_secs(5), |a| a.is_some_and(|l| l.starts_with(&format!("{} ", bravo.ip))));
    let took = took.unwrap_or_else(|| panic!("bravo did not resolve within 5 s (logs in {})", lab.dir.display()));
    eprintln!("bravo resolved from another host {} ms after its creation returned", took.as_millis());
    assert!(took < Duration::from_secs(1), "bravo took {took:?} to resolve");
    let b = lab.attach(&bravo, "bravo", 1450).await.unwrap();
    let _ = b;
    // Every spelling of it, and the reverse.
    assert!(getent(&a.netns, "web").is_some_and(|l| l.starts_with(&bravo.ip.to_string())), "its name label resolves");
    assert!(getent(&a.netns, "bravo.blue").is_some_and(|l| l.starts_with(&bravo.ip.to_string())), "NAME.NETWORK resolves");
    let rev = getent(&a.netns, &bravo.ip.to_string()).unwrap_or_default();
    assert!(rev.contains(".blue"), "a reverse lookup names it: {rev:?}");
    // Ping by name, which is what a user does.
    let out = Command::new("ip").args(["netns", "exec", &a.netns, "ping", "-c", "1", "-W", "2", "bravo"]).output().unwrap();
    assert!(out.status.success(), "ping bravo: {}", String::from_utf8_lossy(&out.stdout));

    // Red is another tenant: none of blue's names, by any spelling.
    assert_eq!(getent(&c.netns, "bravo"), None, "a name of another network resolved");
    assert_eq!(getent(&c.netns, "bravo.blue"), None, "a name of another network resolved with its network");
    assert_eq!(getent(&c.netns, &bravo.ip.to_string()), None, "a reverse lookup into another network answered");
    assert!(getent(&c.netns, "carol").is_some(), "red's own names resolve");

    // Names outside Plexus go to the host's resolvers.
    assert_eq!(
        getent(&a.netns, "www.outside.test").as_deref().and_then(|l| l.split_whitespace().next()),
        Some("198.51.100.7"),
        "an outside name was not forwarded"
    );

    // Garbage, a response, a compressed name, a truncated header: refused, nothing breaks.
    let gw = alpha.gateway;
    for hex in ["00", "0001810000010000000000000161000001000100", "00010100000100000000000 0c00c00010001".replace(' ', "").as_str(), "000101000001"] {
        send_raw(&a.netns, gw, hex);
    }
    assert!(getent(&a.netns, "bravo").is_some(), "the responder stopped answering after bad input");

    // Deleted: gone everywhere within a second.
    api.delete_endpoint("blue", "bravo").await.unwrap();
    let gone = wait_for(&a.netns, "bravo", Duration::from_secs(5), |a| a.is_none());
    let gone = gone.unwrap_or_else(|| panic!("bravo still resolves 5 s after deletion"));
    eprintln!("bravo stopped resolving {} ms after its deletion returned", gone.as_millis());
    assert!(gone < Duration::from_secs(1), "bravo took {gone:?} to stop resolving");
}
