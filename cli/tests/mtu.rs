//! MTU that holds (issue 12): a network's MTU, bounded by what the tunnels carry (or, for an
//! underlay network, by the link), is what a container gets however it joins (`plexus attach`, `plexus lab run`), full-size packets
//! cross hosts without fragmentation, one byte more is refused at the sender, and a network
//! whose MTU the tunnels could not carry is refused.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use plexus_api::NetworkSpec;
use plexus_lab::{ControlPlane, Lab, LabConfig};

const PLEXUS: &str = env!("CARGO_BIN_EXE_plexus");

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `plexus ARGS` in host `h`'s namespace, as an operator on that host would run it.
fn plexus_on(lab: &Lab, h: &str, cp: &ControlPlane, args: &[&str]) -> Output {
    let host = lab.host(h).expect("host");
    Command::new("ip")
        .args(["netns", "exec", &host.netns, PLEXUS])
        .args(args)
        .envs(cp.envs().expect("credentials"))
        .env("PLEXUS_HOST", h)
        .env("PLEXUS_OVSDB", format!("unix:{}", host.ovs.db_sock().display()))
        .output()
        .expect("plexus")
}

fn in_ns(ns: &str, args: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", ns]).args(args).output().expect("ip netns exec")
}

fn mtu_of(ns: &str) -> u32 {
    String::from_utf8_lossy(&in_ns(ns, &["cat", "/sys/class/net/eth0/mtu"]).stdout).trim().parse().expect("eth0's mtu")
}

/// One ping of `size` bytes of payload with fragmentation forbidden.
fn ping_df(ns: &str, to: &str, size: u32) -> Output {
    in_ns(ns, &["ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", &size.to_string(), to])
}

/// A two-host lab with its control plane, once both agents have registered.
async fn two_hosts(cfg: LabConfig) -> (Lab, ControlPlane, plexus_api::Client) {
    let lab = Lab::up(&cfg).expect("lab");
    let cp = lab.start_control_plane(Path::new(PLEXUS)).expect("control plane");
    let api = cp.client().expect("client");
    let t = Instant::now();
    while api.hosts().await.map(|h| h.len()).unwrap_or(0) < 2 {
        assert!(t.elapsed() < Duration::from_secs(20), "hosts did not register (logs in {})", lab.dir.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (lab, cp, api)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_networks_mtu_holds_for_every_way_a_container_joins() {
    let (lab, cp, api) = two_hosts(LabConfig::owned(&plexus_tests::unique_name('m'), 2)).await;
    // Each agent reports its underlay's MTU (the lab's links are 1500).
    assert!(api.hosts().await.expect("hosts").iter().all(|h| h.spec.underlay_mtu == Some(1500)), "{:?}", api.hosts().await);
    // More than 1500 less VXLAN's 50 cannot be carried: refused, with the reason, not stored.
    let r = cp
        .http()
        .expect("http")
        .post(format!("{}/v1/networks", cp.api))
        .json(&serde_json::json!({"name": "huge", "kind": {"type": "overlay"}, "subnet": "10.42.0.0/24", "mtu": 1451}))
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    let p: serde_json::Value = r.json().await.unwrap_or_default();
    assert_eq!((status, p["field"].as_str()), (422, Some("mtu")), "{p}");
    assert!(p["detail"].as_str().unwrap_or_default().contains("1450"), "the reason names what the path allows: {p}");
    assert!(api.networks().await.expect("networks").iter().all(|n| n.spec.name != "huge"));

    api.create_network(&NetworkSpec::overlay("wide", "10.40.0.0/24")).await.expect("network");
    api.create_network(&NetworkSpec { mtu: Some(1300), ..NetworkSpec::overlay("narrow", "10.41.0.0/24") }).await.expect("network");
    // An underlay network has no tunnel headers: its containers get the link's whole MTU.
    let t = Instant::now();
    while !api.hosts().await.unwrap_or_default().iter().all(|h| !h.spec.physical_networks.is_empty()) {
        assert!(t.elapsed() < Duration::from_secs(30), "the hosts did not register physnet1");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kind = plexus_api::NetworkKind::Underlay { physical_network: "physnet1".into(), vlan: Some(42) };
    api.create_network(&NetworkSpec { kind, ..NetworkSpec::overlay("phys", "10.43.0.0/24") }).await.expect("network");
    for (net, mtu) in [("wide", 1450), ("narrow", 1300), ("phys", 1500)] {
        let mut ips = Vec::new();
        let mut nss = Vec::new();
        for h in ["h1", "h2"] {
            let ns = format!("plx-{}-{net}{h}", lab.name);
            assert!(Command::new("ip").args(["netns", "add", &ns]).status().expect("ip").success());
            let o = plexus_on(&lab, h, &cp, &["attach", "--netns", &format!("/run/netns/{ns}"), "--network", net, "--id", &format!("{net}{h}")]);
            assert!(o.status.success(), "attach to {net} on {h}: {}", text(&o));
            assert_eq!(mtu_of(&ns), mtu, "{net} on {h}: {}", text(&o));
            let e = api.endpoints(net).await.expect("endpoints").into_iter().find(|e| e.id == format!("{net}{h}")).expect("endpoint");
            ips.push(e.ip.to_string());
            nss.push(ns);
        }
        // The largest packet the MTU allows crosses hosts whole, both ways, once the flows are in.
        let t = Instant::now();
        while !ping_df(&nss[0], &ips[1], mtu - 28).status.success() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{net}: {} bytes with DF set do not cross: {}",
                mtu - 28,
                text(&ping_df(&nss[0], &ips[1], mtu - 28))
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let back = ping_df(&nss[1], &ips[0], mtu - 28);
        assert!(back.status.success(), "{net}: back: {}", text(&back));
        // One byte more does not leave the container.
        let over = ping_df(&nss[0], &ips[1], mtu - 27);
        assert!(!over.status.success() && text(&over).contains("message too long"), "{net}: {}", text(&over));
        for ns in nss {
            let _ = Command::new("ip").args(["netns", "delete", &ns]).status();
        }
    }
    // The lab's own containers get the network's MTU too.
    let o = Command::new(PLEXUS)
        .args(["lab", "run", "--name", &lab.name, "--network", "narrow", "h1", "l1"])
        .envs(cp.envs().expect("credentials"))
        .output()
        .expect("plexus");
    assert!(o.status.success() && text(&o).contains("mtu 1300"), "{}", text(&o));
    assert_eq!(mtu_of(&format!("plx-{}-l1", lab.name)), 1300);
}

/// The same bound over Geneve (without options its header is as long as VXLAN's): the
/// full-size packet crosses hosts with DF set, one byte more is refused at the sender.
#[tokio::test(flavor = "multi_thread")]
async fn the_mtu_holds_over_geneve() {
    let cfg = LabConfig { encap: plexus_api::Encap::Geneve, ..LabConfig::owned(&plexus_tests::unique_name('m'), 2) };
    let (lab, cp, api) = two_hosts(cfg).await;
    assert!(api.hosts().await.expect("hosts").iter().all(|h| h.spec.encap == plexus_api::Encap::Geneve));
    api.create_network(&NetworkSpec::overlay("gen", "10.43.0.0/24")).await.expect("network");
    let mut nss = Vec::new();
    let mut ips = Vec::new();
    for h in ["h1", "h2"] {
        let ns = format!("plx-{}-g{h}", lab.name);
        assert!(Command::new("ip").args(["netns", "add", &ns]).status().expect("ip").success());
        let o = plexus_on(&lab, h, &cp, &["attach", "--netns", &format!("/run/netns/{ns}"), "--network", "gen", "--id", &format!("g{h}")]);
        assert!(o.status.success(), "attach on {h}: {}", text(&o));
        assert_eq!(mtu_of(&ns), 1450, "{h}");
        ips.push(api.endpoints("gen").await.expect("endpoints").into_iter().find(|e| e.id == format!("g{h}")).expect("endpoint").ip.to_string());
        nss.push(ns);
    }
    let t = Instant::now();
    while !ping_df(&nss[0], &ips[1], 1422).status.success() {
        assert!(t.elapsed() < Duration::from_secs(10), "1422 bytes with DF set do not cross over Geneve: {}", text(&ping_df(&nss[0], &ips[1], 1422)));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let over = ping_df(&nss[0], &ips[1], 1423);
    assert!(!over.status.success() && text(&over).contains("message too long"), "{}", text(&over));
}
