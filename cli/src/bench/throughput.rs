//! `plexus bench throughput`: cross-host TCP between two containers (iperf3) through Plexus's
//! pipeline, with and without a policy that allows the test (so conntrack runs on both hosts),
//! against plain OVS (a `NORMAL` bridge with the same VXLAN tunnel, the same containers'
//! veths moved over to it) and against a bare veth pair, interleaved, one stream and many. The datapath's flow count after each Plexus and plain run is shown too: a
//! pipeline that defeats megaflow wildcarding shows up there before it shows up in Gbit/s.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use plexus_agent::netns;
use plexus_api::{EndpointSpec, NetworkSpec};
use plexus_lab::{probe, wire, Lab, LabConfig, LabHost};
use plexus_ovs::ovsdb::{BridgeSpec, InterfaceType, PortSpec};

const PLAIN: &str = "br-plain";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Plexus,
    /// Plexus with a policy governing the server that allows the client's TCP.
    Policy,
    Plain,
    Veth,
}

/// An iperf3 server for one test in `ns`, ended by pid.
struct Server(Child);

impl Server {
    fn start(ns: &str) -> anyhow::Result<Server> {
        let c = netns::command(ns, "iperf3").args(["-s", "-1"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("iperf3 (install iperf3)")?;
        Ok(Server(c))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Gbit/s received by an iperf3 test from `from` to `to` with `streams` connections.
pub(super) fn iperf(from: &str, to_ns: &str, to: Ipv4Addr, streams: usize, secs: u64) -> anyhow::Result<f64> {
    let _server = Server::start(to_ns)?;
    for _ in 0..50 {
        let out = netns::exec(from, &["iperf3", "-c", &to.to_string(), "-t", &secs.to_string(), "-P", &streams.to_string(), "-J"])?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(bps) = v.pointer("/end/sum_received/bits_per_second").and_then(|b| b.as_f64()) {
            return Ok(bps / 1e9);
        }
        // The server may not listen yet.
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("iperf3 from {from} to {to} gave no result")
}

/// Datapath flows on `h` now (`dpctl/dump-flows`): all of them, and those that carried the
/// test (1,000 packets or more). The first count includes the host's own chatter (IPv6
/// multicast, underlay ARP, the agent's heartbeats); the second is where a pipeline that
/// defeats wildcarding shows: a megaflow per connection instead of one per direction.
fn dp_flows(h: &LabHost) -> (usize, usize) {
    let text = h.ovs.appctl(&["dpctl/dump-flows"]).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("flow-dump")).collect();
    let packets = |l: &str| l.split("packets:").nth(1).and_then(|r| r.split(',').next()).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (lines.len(), lines.iter().filter(|l| packets(l) >= 1000).count())
}

pub(super) async fn run(secs: u64, reps: usize, streams: usize, endpoints: usize) -> anyhow::Result<()> {
    let name = format!("bt{}", std::process::id() % 10_000_000);
    // A third host holds the many endpoints whose flows the first two must carry.
    let cfg = LabConfig::owned(&name, 3);
    let lab = tokio::task::spawn_blocking(move || Lab::up(&cfg)).await?.context("starting a 2-host lab")?;
    let cp = lab.start_control_plane(&std::env::current_exe()?).context("starting the control plane")?;
    let api = cp.client()?;
    // Room for the many endpoints of the second part, in the same network (a switch carries
    // flows for the endpoints of the networks it has ports in).
    api.create_network(&NetworkSpec::overlay("tp", "10.90.0.0/16")).await?;
    let (h1, h2) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    let mut cs = Vec::new();
    for h in [&h1, &h2] {
        let e = api.create_endpoint("tp", &EndpointSpec::on(&h.name)).await?;
        let port = plexus_api::ids::port_name(&e.network, &e.id);
        cs.push((lab.attach(&e, &format!("t{}", h.name), wire::CONTAINER_MTU).await?, port, format!("{}/{}", e.network, e.id)));
    }
    let (a, b) = (cs[0].0.clone(), cs[1].0.clone());
    let ids: Vec<String> = cs.iter().map(|c| c.2.rsplit('/').next().unwrap_or_default().to_string()).collect();
    for (id, app) in ids.iter().zip(["client", "server"]) {
        api.set_endpoint_labels("tp", id, &[("app".to_string(), app.to_string())].into()).await?;
    }
    let http = cp.http()?;
    // Waits until h1's and h2's switches are in sync at `revision` or later.
    let in_sync = |revision: u64| {
        let (http, url, hosts) = (http.clone(), cp.api.clone(), [h1.name.clone(), h2.name.clone()]);
        async move {
            let t = Instant::now();
            for h in hosts {
                loop {
                    let st: serde_json::Value = http.get(format!("{url}/v1/hosts/{h}/flows")).send().await?.json().await?;
                    if st["in_sync"] == true && st["revision"].as_u64().unwrap_or(0) >= revision {
                        break;
                    }
                    if t.elapsed() > Duration::from_secs(30) {
                        bail!("{h}'s switch did not take revision {revision}: {st}");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            anyhow::Ok(())
        }
    };
    let allow = plexus_api::PolicySpec {
        name: "tp-allow".into(),
        network: "tp".into(),
        select: "app=server".into(),
        ingress: Some(vec![plexus_api::Rule {
            protocol: plexus_api::Protocol::Tcp,
            peers: vec![plexus_api::Peer { select: Some("app=client".into()), ..Default::default() }],
            ..plexus_api::Rule::allow()
        }]),
        egress: None,
        labels: Default::default(),
    };
    // Plain OVS on each host: a standalone NORMAL bridge with a VXLAN port to the other host.
    for (h, peer) in [(&h1, &h2), (&h2, &h1)] {
        let vs = wire::vswitch(h).await?;
        vs.ensure_bridge(&BridgeSpec { name: PLAIN.into(), datapath_type: "netdev".into(), fail_mode: Some("standalone".into()), ..Default::default() })
            .await?;
        let tunnel = PortSpec::new("vxplain", InterfaceType::Vxlan).option("remote_ip", &peer.underlay_ip.to_string()).option("key", "4242");
        vs.add_port(PLAIN, &tunnel).await?;
    }
    // The bare veth pair, same MTU, in two namespaces of the lab's.
    let (va, vb) = (format!("plx-{name}-va"), format!("plx-{name}-vb"));
    let sh = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("ip").args(args).output()?;
        if !out.status.success() {
            bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    let mtu = wire::CONTAINER_MTU.to_string();
    sh(&["netns", "add", &va])?;
    sh(&["netns", "add", &vb])?;
    sh(&["link", "add", "tpva", "netns", &va, "mtu", &mtu, "type", "veth", "peer", "name", "tpvb", "netns", &vb, "mtu", &mtu])?;
    for (ns, dev, ip) in [(&va, "tpva", "10.91.0.1/24"), (&vb, "tpvb", "10.91.0.2/24")] {
        sh(&["-n", ns, "addr", "add", ip, "dev", dev])?;
        sh(&["-n", ns, "link", "set", dev, "up"])?;
        sh(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    let vb_ip = Ipv4Addr::new(10, 91, 0, 2);

    // Moves both containers' veths to `bridge` and waits until they talk over it.
    let move_to = |to: &'static str, from: &'static str| {
        let (h1, h2, cs, a, b) = (h1.clone(), h2.clone(), cs.clone(), a.clone(), b.clone());
        async move {
            for (h, (_, port, endpoint)) in [(&h1, &cs[0]), (&h2, &cs[1])] {
                let vs = wire::vswitch(h).await?;
                vs.delete_port(from, port).await?;
                vs.add_port(to, &PortSpec::new(port, InterfaceType::System).external_id(plexus_agent::attach::ENDPOINT_KEY, endpoint)).await?;
            }
            let (ns, ip) = (a.netns.clone(), b.ip);
            tokio::task::spawn_blocking(move || probe::wait_ping(&ns, ip, Duration::from_secs(30))).await??;
            anyhow::Ok(())
        }
    };
    let (ns_a, ns_b, ip_b) = (a.netns.clone(), b.netns.clone(), b.ip);
    tokio::task::spawn_blocking({
        let (ns, ip) = (ns_a.clone(), ip_b);
        move || probe::wait_ping(&ns, ip, Duration::from_secs(30))
    })
    .await??;
    eprintln!("{reps} interleaved repetitions of {secs} s tests, 1 and {streams} streams, Plexus / Plexus with a policy / plain OVS / veth ...");
    let mut results: Vec<(Path, usize, f64)> = Vec::new();
    let mut flows: Vec<(Path, (usize, usize))> = Vec::new();
    let t = Instant::now();
    for rep in 0..reps {
        for path in [Path::Plexus, Path::Policy, Path::Plain, Path::Veth] {
            match path {
                Path::Plain => {
                    // The policy really was in the path: its rule let the tests' connections in.
                    let c = api.policy_counters(&allow.name).await?;
                    if c.rules.iter().map(|r| r.packets).sum::<u64>() == 0 {
                        bail!("the allow policy's rule counted nothing: the tests did not go through it ({c:?})");
                    }
                    api.delete_policy(&allow.name).await?;
                    move_to(PLAIN, wire::BR_INT).await?
                }
                Path::Plexus if rep > 0 => move_to(wire::BR_INT, PLAIN).await?,
                Path::Policy => {
                    let p = api.create_policy(&allow).await?;
                    in_sync(p.revision).await?;
                }
                _ => {}
            }
            for n in [1, streams] {
                let (from, to_ns, to) = match path {
                    Path::Veth => (va.clone(), vb.clone(), vb_ip),
                    _ => (ns_a.clone(), ns_b.clone(), ip_b),
                };
                // Each path's megaflows, not the last one's leftovers, are counted after its test.
                if path != Path::Veth {
                    let _ = h1.ovs.appctl(&["dpctl/del-flows"]);
                }
                let g = tokio::task::spawn_blocking(move || iperf(&from, &to_ns, to, n, secs)).await??;
                if path != Path::Veth {
                    flows.push((path, dp_flows(&h1)));
                }
                eprintln!("  rep {rep} {path:?} {n} stream(s): {g:.2} Gbit/s");
                results.push((path, n, g));
            }
        }
    }
    let mut with_many: Vec<(Path, usize, f64)> = Vec::new();
    if endpoints > 0 {
        // Many endpoints elsewhere: h1's and h2's switches carry a flow for each.
        let h3 = lab.hosts[2].name.clone();
        eprintln!("adding {endpoints} endpoints on {h3} ...");
        move_to(wire::BR_INT, PLAIN).await?;
        let mut last = 0;
        for _ in 0..endpoints {
            last = api.create_endpoint("tp", &EndpointSpec::on(&h3)).await?.revision;
        }
        let t = Instant::now();
        loop {
            let st: serde_json::Value = http.get(format!("{}/v1/hosts/{}/flows", cp.api, h1.name)).send().await?.json().await?;
            // In sync at the revision of the last endpoint: every one's flow is in.
            if st["in_sync"] == true && st["revision"].as_u64().unwrap_or(0) >= last {
                eprintln!("h1's switch holds {} flows", st["desired_flows"]);
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!("h1's switch did not take the flows of {endpoints} endpoints: {st}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for rep in 0..reps {
            for path in [Path::Plexus, Path::Plain] {
                match path {
                    Path::Plain => move_to(PLAIN, wire::BR_INT).await?,
                    _ if rep > 0 => move_to(wire::BR_INT, PLAIN).await?,
                    _ => {}
                }
                for n in [1, streams] {
                    let (from, to_ns, to) = (ns_a.clone(), ns_b.clone(), ip_b);
                    let _ = h1.ovs.appctl(&["dpctl/del-flows"]);
                    let g = tokio::task::spawn_blocking(move || iperf(&from, &to_ns, to, n, secs)).await??;
                    flows.push((path, dp_flows(&h1)));
                    eprintln!("  rep {rep} {path:?} {n} stream(s), {endpoints} endpoints' flows: {g:.2} Gbit/s");
                    with_many.push((path, n, g));
                }
            }
        }
    }
    let med = |p: Path, n: usize| super::median(results.iter().filter(|r| r.0 == p && r.1 == n).map(|r| r.2).collect());
    let maxf = |p: Path| {
        let of = || flows.iter().filter(|f| f.0 == p);
        (of().map(|f| f.1 .0).max().unwrap_or(0), of().map(|f| f.1 .1).max().unwrap_or(0))
    };
    println!("cross-host TCP between two containers (iperf3, {secs} s per test, median of {reps}, {:.0} s in all):", t.elapsed().as_secs_f64());
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>12} {:>14} {:>12} {:>15}",
        "streams", "plexus", "w/ policy", "plain OVS", "veth pair", "plexus/plain", "plexus/veth", "policy/plexus"
    );
    for n in [1, streams] {
        let (x, y, p, v) = (med(Path::Plexus, n), med(Path::Policy, n), med(Path::Plain, n), med(Path::Veth, n));
        println!("{:<10} {:>7.2} Gb/s {:>7.2} Gb/s {:>7.2} Gb/s {:>7.2} Gb/s {:>13.2}x {:>11.2}x {:>14.2}x", n, x, y, p, v, x / p, x / v, y / x);
    }
    if endpoints > 0 {
        let m = |p: Path, n: usize| super::median(with_many.iter().filter(|r| r.0 == p && r.1 == n).map(|r| r.2).collect());
        println!("with {endpoints} more endpoints' flows on the switches (Plexus) and nothing more on plain OVS:");
        for n in [1, streams] {
            let (x, p) = (m(Path::Plexus, n), m(Path::Plain, n));
            println!("{:<10} {:>7.2} Gb/s {:>7.2} Gb/s {:>13.2}x", n, x, p, x / p);
        }
    }
    let (xa, xb) = maxf(Path::Plexus);
    let (pa, pb) = maxf(Path::Plain);
    println!("datapath flows on h1 after a test (most seen): carrying the test plexus {xb}, plain OVS {pb}; all (with the host's own chatter) plexus {xa}, plain OVS {pa}");
    drop(lab);
    Ok(())
}
