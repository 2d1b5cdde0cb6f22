//! `plexus bench failover`: a three-node control plane and three hosts with N endpoints each
//! (dummy ports). First what the controllers cost (memory, CPU for the batch and idle), then
//! rounds of: kill the master of h1's switch, make a change h1's switch must get, and time
//! until h1's switch has a new master and until the change is installed on it — against the
//! same change with every node alive, measured in the same run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use plexus_api::EndpointKey;
use plexus_api::{Client, EndpointSpec, NetworkSpec};
use plexus_controller::flows::{unit_cookie, Unit};
use plexus_lab::{wire, Lab, LabConfig};
use plexus_ovs::openflow::FlowStatsRequest;
use plexus_ovs::ovsdb::{InterfaceType, PortSpec};

use super::scale::usage;

async fn masters(api: &Client) -> BTreeMap<String, u64> {
    api.cluster().await.map(|c| c.masters.into_iter().map(|m| (m.host, m.node)).collect()).unwrap_or_default()
}

/// Creates endpoint `id` on `host` with a dummy port, retrying while the cluster has no leader.
async fn change(lab: &Lab, api: &Client, host: usize, id: &str) -> anyhow::Result<()> {
    let h = &lab.hosts[host];
    let vs = wire::vswitch(h).await?;
    let port = plexus_api::ids::port_name("bench", id);
    vs.add_port(wire::BR_INT, &PortSpec::new(&port, InterfaceType::Dummy).external_id("plexus-endpoint", &format!("bench/{id}"))).await?;
    let t = Instant::now();
    loop {
        let spec = EndpointSpec::on(&h.name).id(id);
        match api.create_endpoint("bench", &spec).await {
            Ok(_) => return Ok(()),
            Err(e) if t.elapsed() > Duration::from_secs(20) => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Waits until h1's switch holds a flow of endpoint `id`; returns when.
async fn installed_on_h1(lab: &Lab, id: &str) -> anyhow::Result<Instant> {
    let of = wire::openflow(&lab.hosts[0]).await?;
    // Only the endpoint's own flows, picked by the switch: not thousands read every 10 ms.
    let req = FlowStatsRequest { cookie: unit_cookie(&Unit::Endpoint(EndpointKey::new("bench", id))), cookie_mask: u64::MAX, ..Default::default() };
    let t = Instant::now();
    loop {
        if !of.dump_flows(req.clone()).await?.is_empty() {
            return Ok(Instant::now());
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("endpoint {id} never reached h1's switch");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Each host's (master, generation), and the Raft term, as the cluster reports them.
async fn assignment(api: &Client) -> Option<(BTreeMap<String, (u64, u64)>, u64)> {
    let c = api.cluster().await.ok()?;
    Some((c.masters.into_iter().map(|m| (m.host, (m.node, m.generation))).collect(), c.term))
}

/// Keeps both cores busy until dropped: the loaded box the soak must not fail over on.
struct Burners(std::sync::Arc<std::sync::atomic::AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl Burners {
    fn start(n: usize) -> Burners {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 1u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        for _ in 0..100_000 {
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        }
                        std::hint::black_box(x);
                    }
                })
            })
            .collect();
        Burners(stop, threads)
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.1.drain(..) {
            let _ = t.join();
        }
    }
}

/// `secs` with every node alive and both cores kept busy: any switch whose master or
/// generation changes, or a new Raft term, is a false failover.
async fn soak(api: &Client, secs: u64) -> anyhow::Result<()> {
    // A rebalance after the last round's restart settles first.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (start, term) = assignment(api).await.context("the cluster status before the soak")?;
    eprintln!("soak: {secs} s, every node alive, two busy threads on this two-core box ...");
    let burners = Burners::start(2);
    let t = Instant::now();
    let (mut moves, mut terms, mut last) = (0usize, 0u64, start.clone());
    let mut last_term = term;
    while t.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some((now, term)) = assignment(api).await else { continue };
        moves += now.iter().filter(|(h, a)| last.get(*h) != Some(a)).count();
        terms += term.saturating_sub(last_term);
        (last, last_term) = (now, term);
    }
    drop(burners);
    println!("soak: {secs} s under load, every node alive: {moves} switch master moves, {terms} new Raft terms (false failovers: {})", moves as u64 + terms);
    Ok(())
}

pub(super) async fn run(rounds: usize, per_host: usize, soak_secs: u64) -> anyhow::Result<()> {
    let name = format!("bf{}", std::process::id() % 10_000_000);
    let cfg = LabConfig { controllers: 3, enable_dummy: true, ..LabConfig::owned(&name, 3) };
    let lab = tokio::task::spawn_blocking(move || Lab::up(&cfg)).await?.context("starting a lab with three controllers")?;
    let cp = lab.start_control_plane(&std::env::current_exe()?).context("starting the control plane")?;
    let api = cp.client()?;
    let t = Instant::now();
    while masters(&api).await.len() < 3 {
        if t.elapsed() > Duration::from_secs(30) {
            bail!("the switches got no masters");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.create_network(&NetworkSpec::overlay("bench", "10.90.0.0/16")).await?;
    let pids: Vec<i32> = (1..=3u8)
        .map(|i| std::fs::read_to_string(lab.dir.join(format!("{}.pid", lab.controller_tag(i)))).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0))
        .collect();
    let before: Vec<(u64, f64)> = pids.iter().map(|p| usage(*p).unwrap_or((0, 0.0))).collect();
    eprintln!("{} endpoints ({per_host} on each of 3 hosts) ...", 3 * per_host);
    for (k, h) in lab.hosts.iter().enumerate() {
        let specs: Vec<PortSpec> = (0..per_host)
            .map(|i| {
                PortSpec::new(&plexus_api::ids::port_name("bench", &format!("e{k}x{i}")), InterfaceType::Dummy)
                    .external_id("plexus-endpoint", &EndpointKey::new("bench", format!("e{k}x{i}")).to_string())
            })
            .collect();
        wire::vswitch(h).await?.add_ports(wire::BR_INT, &specs).await?;
        let mut set = tokio::task::JoinSet::new();
        for i in 0..per_host {
            let (api, host) = (api.clone(), h.name.clone());
            set.spawn(async move { api.create_endpoint("bench", &EndpointSpec::on(&host).id(&format!("e{k}x{i}"))).await });
            if set.len() >= 16 {
                set.join_next().await.context("endpoint task")???;
            }
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
    }
    installed_on_h1(&lab, &format!("e2x{}", per_host - 1)).await?;
    let batch: Vec<(u64, f64)> = pids.iter().map(|p| usage(*p).unwrap_or((0, 0.0))).collect();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle: Vec<(u64, f64)> = pids.iter().map(|p| usage(*p).unwrap_or((0, 0.0))).collect();
    println!("three controllers, 3 switches x {per_host} endpoints (dummy ports, userspace datapath):");
    for i in 0..3 {
        println!(
            "  node {}: RSS {:.1} MiB, CPU {:.2} s for the batch, {:.1}% of a core idle",
            i + 1,
            idle[i].0 as f64 / 1024.0,
            batch[i].1 - before[i].1,
            (idle[i].1 - batch[i].1) / 10.0 * 100.0
        );
    }

    // The baseline: the same kind of change with every node alive.
    let mut normal = Vec::new();
    for r in 0..rounds {
        let id = format!("n{r}");
        let t = Instant::now();
        change(&lab, &api, 1, &id).await?;
        normal.push((installed_on_h1(&lab, &id).await? - t).as_secs_f64() * 1e3);
    }
    eprintln!("{rounds} rounds: kill the master of h1's switch, make a change h1's switch must get ...");
    let (mut to_master, mut to_change, mut returned) = (Vec::new(), Vec::new(), None);
    for r in 0..rounds {
        // After the first round, h1's master is the node the last round saw it return to.
        let victim = match returned {
            Some(v) => v,
            None => masters(&api).await.get("h1").copied().context("h1 has no master")?,
        };
        let was_leader = api.cluster().await.ok().and_then(|c| c.leader) == Some(victim);
        let alive: Vec<String> =
            lab.controller_ips().iter().enumerate().filter(|(k, _)| *k as u64 + 1 != victim).map(|(_, ip)| format!("https://{ip}:6543")).collect();
        let majority = cp.client_for(&alive.join(","))?;
        let watch = majority.clone();
        let t = Instant::now();
        let watcher = tokio::spawn(async move {
            loop {
                if masters(&watch).await.get("h1").is_some_and(|n| *n != victim) {
                    return Some(Instant::now());
                }
                if t.elapsed() > Duration::from_secs(30) {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        lab.signal_process(&lab.controller_tag(victim as u8), libc::SIGKILL);
        let id = format!("f{r}");
        change(&lab, &majority, 1, &id).await?;
        let installed = installed_on_h1(&lab, &id).await?;
        let new_master = watcher.await?.context("h1's switch got no new master")?;
        to_change.push((installed - t).as_secs_f64() * 1e3);
        to_master.push((new_master - t).as_secs_f64() * 1e3);
        eprintln!(
            "  round {r}: node {victim} killed{}: new master after {:.0} ms, change installed after {:.0} ms",
            if was_leader { " (it was also the Raft leader)" } else { "" },
            to_master[r],
            to_change[r]
        );
        lab.start_controller_node(victim as u8, &std::env::current_exe()?).context("restarting the killed node")?;
        // With every node back, h1's switch returns to its first choice; the next round
        // starts from there, not from a rebalance still under way. The restarted node answers
        // from its own state, which may still hold the assignment from before its death (a
        // round then killed a node that mastered nothing and timed 2 ms): ask the others.
        let t = Instant::now();
        while masters(&majority).await.get("h1") != Some(&victim) {
            if t.elapsed() > Duration::from_secs(20) {
                bail!("h1's switch did not return to node {victim} after its restart");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        returned = Some(victim);
    }
    // The range shows a round that timed something else (a node that mastered nothing).
    let range = |v: &[f64]| (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(0.0, f64::max));
    let ((m_lo, m_hi), (c_lo, c_hi)) = (range(&to_master), range(&to_change));
    let (n, m, c) = (super::median(normal), super::median(to_master), super::median(to_change));
    println!("failover, median of {rounds} (the master of h1's switch killed with SIGKILL):");
    println!("  a change reaching h1's switch, every node alive:          {n:.0} ms");
    println!("  death to a new master recorded for h1's switch:           {m:.0} ms (range {m_lo:.0} to {m_hi:.0})");
    println!("  death to a change made after it installed on h1's switch: {c:.0} ms ({:.0}x the change alone; range {c_lo:.0} to {c_hi:.0})", c / n.max(1.0));
    leader_rounds(&lab, &cp, &api, rounds.div_ceil(2).max(3)).await?;
    if soak_secs > 0 {
        soak(&api, soak_secs).await?;
    }
    drop(lab);
    Ok(())
}

/// Rounds that kill the Raft leader itself: the cluster must elect before anything moves.
/// Times the death to a new leader, and to new masters for the switches the leader mastered.
async fn leader_rounds(lab: &Lab, cp: &plexus_lab::ControlPlane, api: &Client, rounds: usize) -> anyhow::Result<()> {
    eprintln!("{rounds} rounds: kill the Raft leader ...");
    let (mut to_leader, mut to_masters) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let victim = api.cluster().await.ok().and_then(|c| c.leader).context("no Raft leader")?;
        let before = masters(api).await;
        let mastered: Vec<String> = before.iter().filter(|(_, n)| **n == victim).map(|(h, _)| h.clone()).collect();
        let alive: Vec<String> =
            lab.controller_ips().iter().enumerate().filter(|(k, _)| *k as u64 + 1 != victim).map(|(_, ip)| format!("https://{ip}:6543")).collect();
        let majority = cp.client_for(&alive.join(","))?;
        let t = Instant::now();
        lab.signal_process(&lab.controller_tag(victim as u8), libc::SIGKILL);
        let (mut leader_at, mut masters_at) = (None, None);
        while leader_at.is_none() || masters_at.is_none() {
            if t.elapsed() > Duration::from_secs(30) {
                bail!("no new leader, or no new masters for {mastered:?}, 30 s after the leader's death");
            }
            if leader_at.is_none() && majority.cluster().await.ok().and_then(|c| c.leader).is_some_and(|l| l != victim) {
                leader_at = Some(t.elapsed());
            }
            if masters_at.is_none() {
                let now = masters(&majority).await;
                if mastered.iter().all(|h| now.get(h).is_some_and(|n| *n != victim)) {
                    masters_at = Some(t.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (l, m) = (leader_at.unwrap_or_default().as_secs_f64() * 1e3, masters_at.unwrap_or_default().as_secs_f64() * 1e3);
        eprintln!("  round {r}: leader {victim} killed: a new leader after {l:.0} ms, new masters for {mastered:?} after {m:.0} ms");
        to_leader.push(l);
        if !mastered.is_empty() {
            to_masters.push(m);
        }
        lab.start_controller_node(victim as u8, &std::env::current_exe()?).context("restarting the killed leader")?;
        // Back to the assignment of before (every node alive), so each round starts alike.
        let t = Instant::now();
        while masters(&majority).await != before {
            if t.elapsed() > Duration::from_secs(20) {
                bail!("the switches did not return to their masters after node {victim}'s restart");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!("the Raft leader killed with SIGKILL, median of {rounds}:");
    println!("  death to a new leader:                                    {:.0} ms", super::median(to_leader));
    match to_masters.len() {
        0 => println!("  (the leader mastered no switch in any round)"),
        k => println!("  death to new masters for the leader's switches:           {:.0} ms (median of {k})", super::median(to_masters)),
    }
    Ok(())
}
