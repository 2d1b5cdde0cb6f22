//! `plexus bench dns`: queries per second and latency from one container to its gateway's
//! resolver (the switch, a packet-in, the host agent, a packet-out), against the host's own
//! resolver path to a local server: dnsmasq holding the same names, asked over loopback in
//! the host's namespace. Closed loop, 1 and 16 queries in flight, the two interleaved.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use plexus_api::{EndpointSpec, NetworkSpec};
use plexus_lab::{Lab, LabConfig};

/// Names the bench creates and asks for.
const NAMES: usize = 50;

/// A query for `name`, type A, with `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend(l.as_bytes());
    }
    m.extend([0, 0, 1, 0, 1]);
    m
}

/// A socket made inside namespace `ns`, connected to `to`.
fn socket_in(ns: &str, to: SocketAddr) -> anyhow::Result<tokio::net::UdpSocket> {
    let s = plexus_agent::netns::run_in(ns, move || -> std::io::Result<UdpSocket> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(to)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })??;
    Ok(tokio::net::UdpSocket::from_std(s)?)
}

/// What one run measured.
struct Run {
    qps: f64,
    p50_us: f64,
    p99_us: f64,
    lost: usize,
}

/// `total` queries from `inflight` sockets in `ns` to `to`, each waiting for its answer (a
/// NOERROR with an address) before the next.
async fn run_load(ns: &str, to: SocketAddr, total: usize, inflight: usize) -> anyhow::Result<Run> {
    let mut tasks = Vec::new();
    let t = Instant::now();
    for w in 0..inflight {
        let sock = socket_in(ns, to)?;
        let n = total / inflight;
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut lost) = (Vec::with_capacity(n), 0usize);
            let mut buf = [0u8; 1500];
            for i in 0..n {
                let id = (w * n + i) as u16;
                let q = query(id, &format!("n{}", i % NAMES));
                let sent = Instant::now();
                if sock.send(&q).await.is_err() {
                    lost += 1;
                    continue;
                }
                let answered = loop {
                    match tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
                        Ok(Ok(len)) if len >= 12 && buf[0..2] == id.to_be_bytes() => break buf[3] & 0xf == 0 && buf[7] >= 1,
                        Ok(Ok(_)) => continue,
                        _ => break false,
                    }
                };
                if answered {
                    lat.push(sent.elapsed().as_secs_f64() * 1e6);
                } else {
                    lost += 1;
                }
            }
            (lat, lost)
        }));
    }
    let (mut lat, mut lost) = (Vec::new(), 0);
    for task in tasks {
        let (l, x) = task.await?;
        lat.extend(l);
        lost += x;
    }
    let secs = t.elapsed().as_secs_f64();
    if lat.is_empty() {
        bail!("no query to {to} from {ns} was answered");
    }
    lat.sort_by(f64::total_cmp);
    Ok(Run { qps: lat.len() as f64 / secs, p50_us: super::percentile(&lat, 0.5), p99_us: super::percentile(&lat, 0.99), lost })
}

pub(super) async fn run(queries: usize) -> anyhow::Result<()> {
    let name = format!("bd{}", std::process::id() % 10_000_000);
    let cfg = LabConfig::owned(&name, 1);
    let lab = tokio::task::spawn_blocking(move || Lab::up(&cfg)).await?.context("starting a lab")?;
    let cp = lab.start_control_plane(&std::env::current_exe()?).context("starting the control plane")?;
    let api = cp.client()?;
    api.create_network(&NetworkSpec::overlay("bench", "10.89.0.0/16")).await?;
    let host = lab.hosts[0].clone();
    let mut records = Vec::new();
    for i in 0..NAMES {
        let e = api.create_endpoint("bench", &EndpointSpec::on(&host.name).id(&format!("n{i}"))).await?;
        records.push(format!("--host-record=n{i},{}", e.ip));
    }
    let q = api.create_endpoint("bench", &EndpointSpec::on(&host.name).id("asker")).await?;
    let c = lab.attach(&q, "asker", 1450).await.context("attaching the asking container")?;
    let _dnsmasq = plexus_lab::dnsmasq::Dnsmasq::start(Some(&host.netns), Ipv4Addr::LOCALHOST, &records).context("starting dnsmasq in the host's namespace")?;
    let plexus_dns = SocketAddr::from((q.gateway, 53));
    let local_dns = SocketAddr::from((Ipv4Addr::LOCALHOST, 53));
    // Both answer before anything is timed (the agent's names, dnsmasq's socket).
    for (ns, to) in [(&c.netns, plexus_dns), (&host.netns, local_dns)] {
        let t = Instant::now();
        while run_load(ns, to, 1, 1).await.is_err() {
            if t.elapsed() > Duration::from_secs(20) {
                bail!("{to} does not answer from {ns} (logs in {})", lab.dir.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!("DNS from one container: Plexus (the gateway: switch, agent) against dnsmasq over the host's loopback, {queries} queries per case");
    println!("{:>9} {:>12} {:>12} {:>7} {:>14} {:>14} {:>8}", "in flight", "Plexus q/s", "dnsmasq q/s", "ratio", "p50 µs P/d", "p99 µs P/d", "lost P/d");
    for inflight in [1usize, 16] {
        let n = if inflight == 1 { queries / 4 } else { queries };
        // Interleaved halves, so drift on a shared machine hits both.
        let (p1, d1) = (run_load(&c.netns, plexus_dns, n / 2, inflight).await?, run_load(&host.netns, local_dns, n / 2, inflight).await?);
        let (p2, d2) = (run_load(&c.netns, plexus_dns, n / 2, inflight).await?, run_load(&host.netns, local_dns, n / 2, inflight).await?);
        let mean = |a: &Run, b: &Run| (a.qps + b.qps) / 2.0;
        let (pq, dq) = (mean(&p1, &p2), mean(&d1, &d2));
        println!(
            "{inflight:>9} {pq:>12.0} {dq:>12.0} {:>6.2}× {:>6.0}/{:<7.0} {:>6.0}/{:<7.0} {:>3}/{:<4}",
            pq / dq,
            (p1.p50_us + p2.p50_us) / 2.0,
            (d1.p50_us + d2.p50_us) / 2.0,
            p1.p99_us.max(p2.p99_us),
            d1.p99_us.max(d2.p99_us),
            p1.lost + p2.lost,
            d1.lost + d2.lost
        );
    }
    Ok(())
}
