//! `plexus bench routing`: routed against switched, in one run. From the API call that creates
//! two endpoints (containers already plugged in) on two hosts to the first ping reply, within
//! one network and across a router; cross-host TCP through the same two paths; and the flows
//! a switch holds for 5,000 endpoints in 10 networks without and with a router joining them
//! (routing must not multiply endpoints by networks); and TCP out to a machine on the
//! underlay through Plexus's source NAT against the same host's kernel masquerading a plain
//! namespace behind a veth (the path without Plexus).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use plexus_api::{Endpoint, EndpointSpec, Mac, NetworkSpec, RouterSpec};
use plexus_lab::{probe, wire, ControlPlane, Lab, LabConfig};

/// An endpoint with a chosen address and MAC, so its container can be plugged in before the
/// API call (what a runtime does).
fn planned(net: &str, subnet_octet: u8, host: &str, i: usize, k: u8) -> anyhow::Result<(EndpointSpec, Endpoint)> {
    let ip = Ipv4Addr::new(10, subnet_octet, (i / 100) as u8 + 1, (i % 100) as u8 * 2 + k + 1);
    let o = ip.octets();
    let mac = format!("02:99:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
    let id = format!("p{i}x{k}");
    let spec = EndpointSpec {
        id: Some(id.clone()),
        host: host.into(),
        ip: Some(ip),
        ip6: None,
        mac: Some(mac.clone()),
        owner: None,
        labels: Default::default(),
        publish: Vec::new(),
    };
    let e = Endpoint {
        id,
        network: net.into(),
        host: host.into(),
        ip,
        prefix_len: 16,
        gateway: Ipv4Addr::new(10, subnet_octet, 0, 1),
        ip6: None,
        prefix_len6: None,
        gateway6: None,
        mac: Mac::parse("mac", &mac)?,
        owner: None,
        labels: Default::default(),
        publish: Vec::new(),
        revision: 0,
    };
    Ok((spec, e))
}

/// Milliseconds from creating the two endpoints to the first reply from the second.
async fn first_ping(lab: &Lab, cp: &ControlPlane, i: usize, to_net: (&str, u8)) -> anyhow::Result<f64> {
    let api = cp.client()?;
    let (sa, ea) = planned("red", 92, "h1", i, 0)?;
    let (sb, eb) = planned(to_net.0, to_net.1, "h2", i, 1)?;
    let a = lab.attach_with(&ea, &format!("fa{i}"), wire::CONTAINER_MTU, false).await?;
    lab.attach_with(&eb, &format!("fb{i}"), wire::CONTAINER_MTU, false).await?;
    let t = Instant::now();
    api.create_endpoint("red", &sa).await?;
    api.create_endpoint(to_net.0, &sb).await?;
    let (ns, ip) = (a.netns.clone(), eb.ip);
    tokio::task::spawn_blocking(move || probe::first_reply(&ns, ip, Duration::from_secs(20))).await??;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// h1's desired flows once its switch is in sync and they stopped changing.
async fn settled_flows(cp: &ControlPlane) -> anyhow::Result<u64> {
    let http = cp.http()?;
    let (mut last, mut same, t) = (u64::MAX, 0, Instant::now());
    loop {
        let st: serde_json::Value = http.get(format!("{}/v1/hosts/h1/flows", cp.api)).send().await?.json().await?;
        let n = st["desired_flows"].as_u64().unwrap_or(0);
        same = if n == last && st["in_sync"] == true { same + 1 } else { 0 };
        if same >= 3 {
            return Ok(n);
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("h1's switch did not settle: {st}");
        }
        last = n;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub(super) async fn run(rounds: usize, secs: u64, reps: usize, endpoints: usize) -> anyhow::Result<()> {
    let name = format!("br{}", std::process::id() % 10_000_000);
    let lab = tokio::task::spawn_blocking(move || Lab::up(&LabConfig::owned(&name, 3))).await?.context("starting a 3-host lab")?;
    let cp = lab.start_control_plane(&std::env::current_exe()?).context("starting the control plane")?;
    let api = cp.client()?;
    let t = Instant::now();
    while api.hosts().await.map(|h| h.len()).unwrap_or(0) < 3 {
        if t.elapsed() > Duration::from_secs(30) {
            bail!("the agents did not register");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    api.create_network(&NetworkSpec::overlay("red", "10.92.0.0/16")).await?;
    api.create_network(&NetworkSpec::overlay("blue", "10.93.0.0/16")).await?;
    api.create_router(&RouterSpec {
        name: "r".into(),
        networks: vec!["red".into(), "blue".into()],
        external: false,
        external_gateway: None,
        labels: Default::default(),
    })
    .await?;

    eprintln!("{rounds} interleaved rounds: two endpoints created, first ping switched (red to red) and routed (red to blue) ...");
    let (mut switched, mut routed) = (Vec::new(), Vec::new());
    for i in 0..2 * rounds {
        if i % 2 == 0 {
            switched.push(first_ping(&lab, &cp, i, ("red", 92)).await?);
        } else {
            routed.push(first_ping(&lab, &cp, i, ("blue", 93)).await?);
        }
    }
    let slow = |v: &[f64]| v.iter().filter(|ms| **ms > 500.0).count();
    let (slow_s, slow_r) = (slow(&switched), slow(&routed));
    let (fs, fr) = (super::median(switched), super::median(routed));

    // Throughput: one container on h1 in red, one on h2 in red and one on h2 in blue.
    let mut cs = Vec::new();
    for (net, host) in [("red", "h1"), ("red", "h2"), ("blue", "h2")] {
        let e = api.create_endpoint(net, &EndpointSpec::on(host)).await?;
        cs.push(lab.attach(&e, &format!("t{net}{host}"), wire::CONTAINER_MTU).await?);
    }
    for to in [&cs[1], &cs[2]] {
        let (ns, ip) = (cs[0].netns.clone(), to.ip);
        tokio::task::spawn_blocking(move || probe::wait_ping(&ns, ip, Duration::from_secs(30))).await??;
    }
    eprintln!("{reps} interleaved repetitions of {secs} s iperf3, switched and routed ...");
    let (mut ts, mut tr) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        for (to, out) in [(&cs[1], &mut ts), (&cs[2], &mut tr)] {
            let (from, to_ns, ip) = (cs[0].netns.clone(), to.netns.clone(), to.ip);
            out.push(tokio::task::spawn_blocking(move || super::throughput::iperf(&from, &to_ns, ip, 1, secs)).await??);
        }
    }
    let (gs, gr) = (super::median(ts), super::median(tr));
    let (gp, gk) = snat(&lab, &api, reps, secs).await?;

    // Flows: N endpoints in 10 networks on h3; h1 has one container in each network, so it
    // carries all ten with or without a router.
    let mut flows = None;
    if endpoints > 0 {
        eprintln!("{endpoints} endpoints in 10 networks on h3, one container per network on h1 ...");
        let nets: Vec<String> = (0..10).map(|k| format!("n{k}")).collect();
        for (k, n) in nets.iter().enumerate() {
            api.create_network(&NetworkSpec::overlay(n, &format!("10.{}.0.0/16", 100 + k))).await?;
            let e = api.create_endpoint(n, &EndpointSpec::on("h1")).await?;
            lab.attach(&e, &format!("f{k}"), wire::CONTAINER_MTU).await?;
        }
        // 16 API calls in flight, as bench scale makes them.
        let per = endpoints.div_ceil(10);
        let (mut next, mut inflight) = (0, tokio::task::JoinSet::new());
        while next < endpoints || !inflight.is_empty() {
            while next < endpoints && inflight.len() < 16 {
                let (api, net) = (api.clone(), nets[next / per].clone());
                inflight.spawn(async move { api.create_endpoint(&net, &EndpointSpec::on("h3")).await });
                next += 1;
            }
            if let Some(r) = inflight.join_next().await {
                r??;
            }
        }
        let without = settled_flows(&cp).await?;
        api.create_router(&RouterSpec { name: "all".into(), networks: nets.clone(), external: false, external_gateway: None, labels: Default::default() })
            .await?;
        let with = settled_flows(&cp).await?;
        flows = Some((without, with));
    }

    println!("routing, in one run (3 hosts, userspace datapath):");
    println!(
        "  API call to the first ping reply, median of {rounds}: switched {fs:.1} ms, routed {fr:.1} ms ({:.2}x; rounds past 500 ms: {slow_s} and {slow_r})",
        fr / fs
    );
    println!("  cross-host TCP (iperf3, 1 stream, {secs} s, median of {reps}): switched {gs:.2} Gb/s, routed {gr:.2} Gb/s ({:.2}x)", gr / gs);
    println!(
        "  TCP out to a machine on the underlay (iperf3, 1 stream, {secs} s, median of {reps}): through Plexus's SNAT {gp:.2} Gb/s, a plain namespace behind the kernel's MASQUERADE on the same host {gk:.2} Gb/s ({:.2}x)",
        gp / gk
    );
    if let Some((without, with)) = flows {
        println!(
            "  h1's flows with {endpoints} endpoints in 10 networks: {without} without a router, {with} with one joining all ten ({:.2}x; {} more, {:.2} per endpoint)",
            with as f64 / without as f64,
            with.saturating_sub(without),
            with.saturating_sub(without) as f64 / endpoints as f64
        );
    }
    drop(lab);
    Ok(())
}

/// Gbit/s out to an iperf3 server on the underlay (not a Plexus host) from a container on h1
/// whose router has external access, and from a plain namespace behind a veth on h1 that the
/// kernel masquerades: interleaved, `reps` each, medians.
async fn snat(lab: &Lab, api: &plexus_api::Client, reps: usize, secs: u64) -> anyhow::Result<(f64, f64)> {
    api.create_network(&NetworkSpec::overlay("ext", "10.94.0.0/16")).await?;
    let out = RouterSpec { name: "out".into(), networks: vec!["ext".into()], external: true, external_gateway: None, labels: Default::default() };
    api.create_router(&out).await?;
    let e = api.create_endpoint("ext", &EndpointSpec::on("h1")).await?;
    let plexus_side = lab.attach(&e, "snat", wire::CONTAINER_MTU).await?;
    let sink = lab.add_outsider("sink", 200)?;
    let h1 = lab.host("h1").context("h1")?;
    let plain = lab.add_container(h1, "masq", Ipv4Addr::new(172, 31, 0, 2), 1500)?;
    h1.exec(&["ip", "addr", "add", "172.31.0.1/24", "dev", "masq"])?;
    h1.exec(&["ip", "link", "set", "masq", "up"])?;
    h1.exec(&["iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-s", "172.31.0.0/24", "-j", "MASQUERADE"])?;
    plexus_agent::netns::exec(&plain.netns, &["ip", "route", "add", "default", "via", "172.31.0.1"])?;
    // The agent applies the edge within a poll; the plain path needs forwarding, which the
    // agent turns on with it.
    for ns in [plexus_side.netns.clone(), plain.netns.clone()] {
        let to = sink.ip;
        tokio::task::spawn_blocking(move || probe::wait_ping(&ns, to, Duration::from_secs(30))).await?.with_context(|| "reaching the underlay machine")?;
    }
    eprintln!("{reps} interleaved repetitions of {secs} s iperf3 out to the underlay, through Plexus's SNAT and through the kernel's ...");
    let (mut p, mut k) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        for (from, out) in [(&plexus_side, &mut p), (&plain, &mut k)] {
            let (from, to_ns, ip) = (from.netns.clone(), sink.netns.clone(), sink.ip);
            out.push(tokio::task::spawn_blocking(move || super::throughput::iperf(&from, &to_ns, ip, 1, secs)).await??);
        }
    }
    Ok((super::median(p), super::median(k)))
}
