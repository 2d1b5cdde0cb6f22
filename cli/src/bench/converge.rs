//! `plexus bench converge`: how long from the API call that creates two endpoints (their
//! containers already plugged in, on two hosts) to the first ping between them, against the
//! round trip of the API call alone.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use plexus_api::{EndpointSpec, NetworkSpec};
use plexus_lab::{probe, Lab, LabConfig};

pub(super) async fn run(rounds: usize) -> anyhow::Result<()> {
    let name = format!("bc{}", std::process::id() % 10_000_000);
    let cfg = LabConfig::owned(&name, 2);
    let lab = tokio::task::spawn_blocking(move || Lab::up(&cfg)).await?.context("starting a 2-host lab")?;
    let cp = lab.start_control_plane(&std::env::current_exe()?).context("starting the control plane")?;
    let api = cp.client()?;
    let t = Instant::now();
    while api.hosts().await.map(|h| h.len()).unwrap_or(0) < 2 {
        if t.elapsed() > Duration::from_secs(30) {
            bail!("the agents did not register");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    api.create_network(&NetworkSpec::overlay("bench", "10.88.0.0/16")).await?;
    let (h1, h2) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    let (mut converge, mut api_only, mut with_arp) = (Vec::new(), Vec::new(), Vec::new());
    eprintln!("{rounds} rounds of each kind: create two endpoints through the API, time the first ping between them ...");
    for i in 0..2 * rounds {
        // Every other round the sender already knows the peer's MAC, so the figure is the time
        // to program the switches; in the others it must ARP, and an ARP request that met no
        // flow used to wait for the kernel's retry a second later (now the switch holds it for
        // the flows). Interleaved, so both kinds see the same number of endpoints.
        let static_neighbor = i % 2 == 0;
        // Endpoints with chosen ids, addresses and MACs, so their containers can be plugged in
        // before the API call (what a runtime does before it asks for the network).
        let mk = |h: &str, k: u8| {
            let ip = Ipv4Addr::new(10, 88, (i / 100) as u8 + 1, (i % 100) as u8 * 2 + k + 1);
            let o = ip.octets();
            let mac = format!("02:88:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
            (
                EndpointSpec {
                    id: Some(format!("c{i}x{k}")),
                    host: h.to_string(),
                    ip: Some(ip),
                    ip6: None,
                    mac: Some(mac),
                    owner: None,
                    labels: Default::default(),
                    publish: Vec::new(),
                },
                ip,
            )
        };
        let ((sa, ipa), (sb, ipb)) = (mk(&h1.name, 0), mk(&h2.name, 1));
        let mut cs = Vec::new();
        for s in [&sa, &sb] {
            let e = plexus_api::Endpoint {
                id: s.id.clone().unwrap_or_default(),
                network: "bench".into(),
                host: s.host.clone(),
                ip: s.ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                prefix_len: 16,
                gateway: Ipv4Addr::new(10, 88, 0, 1),
                ip6: None,
                prefix_len6: None,
                gateway6: None,
                mac: plexus_api::Mac::parse("mac", s.mac.as_deref().unwrap_or_default())?,
                owner: None,
                labels: Default::default(),
                publish: Vec::new(),
                revision: 0,
            };
            // The endpoint does not exist yet: nothing to wait for.
            cs.push(lab.attach_with(&e, &format!("b{i}x{}", cs.len()), plexus_lab::wire::CONTAINER_MTU, false).await?);
        }
        let ns = cs[0].netns.clone();
        if static_neighbor {
            let mac = sb.mac.clone().unwrap_or_default();
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &ns, "ip", "neigh", "replace", &ipb.to_string(), "lladdr", &mac, "dev", "eth0", "nud", "permanent"])
                .output()?;
            if !out.status.success() {
                bail!("setting a neighbor entry: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let t = Instant::now();
        api.create_endpoint("bench", &sa).await?;
        api.create_endpoint("bench", &sb).await?;
        let api_rtt = t.elapsed();
        let _ = ipa;
        let first = tokio::task::spawn_blocking(move || probe::first_reply(&ns, ipb, Duration::from_secs(20))).await??;
        let total = (api_rtt + first).as_secs_f64() * 1e3;
        if total > 500.0 {
            eprintln!("round {i} (peer MAC {}): {total:.0} ms", if static_neighbor { "known" } else { "not known" });
        }
        if static_neighbor {
            converge.push(total);
            api_only.push(api_rtt.as_secs_f64() * 1e3);
        } else {
            with_arp.push(total);
        }
    }
    // A first packet (or ARP request) lost to a race with the flows waits for the sender's
    // retry: a second for ARP, the ping's next packet otherwise. Rounds past 500 ms waited.
    let slow = |v: &[f64]| v.iter().filter(|ms| **ms > 500.0).count();
    let (slow_known, slow_arp) = (slow(&converge), slow(&with_arp));
    let (c, a, w) = (super::median(converge), super::median(api_only), super::median(with_arp));
    println!("convergence, median of {rounds} rounds each, interleaved (2 hosts, userspace datapath):");
    println!("  API call creating the two endpoints:                  {a:.1} ms");
    println!(
        "  API call to the first ping reply (peer MAC known):    {c:.1} ms ({:.1}x the API call alone; {slow_known} of {rounds} rounds waited for a retry)",
        c / a
    );
    println!("  API call to the first ping reply (sender must ARP):   {w:.1} ms ({:.2}x the MAC-known figure; {slow_arp} of {rounds} rounds waited for the kernel's 1 s ARP retry)", w / c);
    drop(lab);
    Ok(())
}
