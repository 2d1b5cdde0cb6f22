//! `plexus bench policy`: what policies cost the control plane. N endpoints over 3 hosts
//! carry two labels, `team` and `role`, each with ten values (10% of the endpoints each);
//! P policies each govern one team and allow one TCP port from one role. Figures, each
//! against the same endpoints without policies: flows per switch and the compile time of a
//! whole switch; then one label change at that size (units compiled, flows changed,
//! incremental against full compile, and in a live lab the time until every switch has it).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use plexus_api::{EndpointKey, EndpointSpec, NetworkSpec, PolicySpec, Rule, Valid};
use plexus_controller::flows::{DesiredFlows, SwitchView};
use plexus_controller::model::{Command, Model};

use super::scale::{wait_programmed, Populated, ScaleLab};

const NET: &str = "pol";

fn labels(i: usize) -> BTreeMap<String, String> {
    [("team".to_string(), format!("t{}", i % 10)), ("role".to_string(), format!("r{}", (i / 10) % 10))].into()
}

/// Label changes to time, each made and undone: an endpoint local to h1 moves to another
/// role (a peer of 10 policies) and team (governed by 10 others), and back.
fn label_changes(n: usize, changes: usize) -> Vec<(String, BTreeMap<String, String>)> {
    let mut v = Vec::new();
    for i in 0..changes.max(1) {
        let id = format!("e{}", (i * 3) % n.max(1));
        let mut moved = labels(i * 3);
        moved.insert("role".into(), "r-moved".into());
        moved.insert("team".into(), "t-moved".into());
        v.push((id.clone(), moved));
        v.push((id, labels(i * 3)));
    }
    v
}

fn policy(k: usize) -> PolicySpec {
    let rule = Rule {
        protocol: plexus_api::Protocol::Tcp,
        ports: vec![(1000 + k).to_string()],
        peers: vec![plexus_api::Peer { select: Some(format!("role=r{}", k % 10)), ..Default::default() }],
        ..Rule::allow()
    };
    PolicySpec {
        name: format!("p{k}"),
        network: NET.into(),
        select: format!("team=t{}", k % 10),
        ingress: Some(vec![rule]),
        egress: None,
        labels: BTreeMap::new(),
    }
}

pub(super) async fn run(n: usize, policies: usize, changes: usize, compiler_only: bool) -> Result<()> {
    compiler(n, policies, changes)?;
    if !compiler_only {
        live(n, policies, changes).await?;
    }
    Ok(())
}

/// The model the lab would hold, in this process: h1's switch compiled whole (median of 5,
/// µs) and its flow count.
fn compile_h1(m: &Model, view: &SwitchView) -> (f64, usize) {
    let mut times = Vec::new();
    let mut len = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let d = DesiredFlows::new(m, view.clone());
        times.push(t.elapsed().as_secs_f64() * 1e6);
        len = d.len();
    }
    (super::median(times), len)
}

fn compiler(n: usize, policies: usize, changes: usize) -> Result<()> {
    let mut m = Model::default();
    for i in 0..3u8 {
        let spec = Valid::new(plexus_api::HostSpec::new(&format!("h{}", i + 1), std::net::Ipv4Addr::new(192, 0, 2, i + 1)))?;
        let _ = m.apply(Command::PutHost { spec, now_ms: 0 });
    }
    let _ = m.apply(Command::PutNetwork { spec: Valid::new(NetworkSpec::overlay(NET, "10.96.0.0/17"))?, create: true, if_match: None });
    let mut view = SwitchView { host: "h1".into(), tunnel_port: 1, external_port: None, uplinks: Default::default(), ports: Default::default() };
    for i in 0..n {
        let spec = EndpointSpec { labels: labels(i), ..EndpointSpec::on(&format!("h{}", i % 3 + 1)).id(&format!("e{i}")) };
        let _ = m.apply(Command::CreateEndpoint { network: NET.into(), spec: Valid::new(spec)?, now_ms: 0 });
        if i % 3 == 0 {
            view.ports.insert(EndpointKey::new(NET, format!("e{i}")), 10 + i as u32);
        }
    }
    let (bare_us, bare_flows) = compile_h1(&m, &view);
    for k in 0..policies {
        m.apply(Command::PutPolicy { spec: Valid::new(policy(k))?, create: true, if_match: None }).map_err(|r| anyhow::anyhow!("policy p{k}: {}", r.reason))?;
    }
    let (pol_us, pol_flows) = compile_h1(&m, &view);
    println!("policy: {n} endpoints over 3 hosts, {policies} policies each governing 10% and allowing one port from another 10%; h1's switch, compiler alone:");
    println!("  flows: {pol_flows} with the policies vs {bare_flows} without ({:.2}x)", pol_flows as f64 / bare_flows.max(1) as f64);
    println!("  full compile: {:.1} ms with the policies vs {:.1} ms without ({:.2}x), medians of 5", pol_us / 1e3, bare_us / 1e3, pol_us / bare_us.max(1.0));
    // One label change: an endpoint local to h1 changes role (a peer of 10 policies) and
    // team (governed by 10 others), and back.
    let mut d = DesiredFlows::new(&m, view.clone());
    let (mut us, mut units, mut flows) = (Vec::new(), Vec::new(), Vec::new());
    for (id, labels) in label_changes(n, changes) {
        let _ = m.apply(Command::SetEndpointLabels {
            network: NET.into(),
            id: id.clone(),
            labels: Valid::new(plexus_api::EndpointLabels { labels })?,
            if_match: None,
            on_host: None,
        });
        let t = Instant::now();
        let u = d.update(&m, view.clone());
        us.push(t.elapsed().as_secs_f64() * 1e6);
        units.push(u.units as f64);
        flows.push(u.diff.len() as f64);
    }
    let inc = super::median(us);
    println!(
        "  one label change: {:.0} units compiled, {:.0} flows changed, {:.2} ms incremental vs {:.1} ms full ({:.0}x), medians of {}",
        super::median(units),
        super::median(flows),
        inc / 1e3,
        pol_us / 1e3,
        pol_us / inc.max(1.0),
        label_changes(n, changes).len()
    );
    Ok(())
}

async fn live(n: usize, policies: usize, changes: usize) -> Result<()> {
    let sl = ScaleLab::start("bp").await?;
    sl.api.create_network(&NetworkSpec::overlay(NET, "10.96.0.0/17")).await?;
    eprintln!("{n} labelled endpoints over 3 hosts (dummy ports) ...");
    let Populated { plugged, revision, .. } = sl.populate(NET, n, labels).await?;
    wait_programmed((&sl.http, &sl.cp.api), &plugged, revision, Duration::from_secs(300)).await?;
    let bare = sl.held().await?;
    eprintln!("{policies} policies ...");
    let t = Instant::now();
    let mut revision = 0;
    for k in 0..policies {
        revision = sl.api.create_policy(&policy(k)).await?.revision;
    }
    let st = wait_programmed((&sl.http, &sl.cp.api), &plugged, revision, Duration::from_secs(300)).await?;
    let took = t.elapsed();
    let with = sl.held().await?;
    println!("policy, live lab (3 hosts, userspace datapath, dummy ports):");
    for h in &sl.hosts {
        let desired = st[h]["desired_flows"].as_u64().unwrap_or(0);
        println!("  {h}: {} flows held with the policies vs {} without ({:.2}x); {desired} desired", with[h], bare[h], with[h] as f64 / bare[h].max(1) as f64);
    }
    println!("  {policies} policies created one by one and on every switch after {:.2} s", took.as_secs_f64());
    let (mut ms, mut units, mut sent) = (Vec::new(), Vec::new(), Vec::new());
    for (id, labels) in label_changes(n, changes) {
        let t = Instant::now();
        let e = sl.api.set_endpoint_labels(NET, &id, &labels).await?;
        let st = wait_programmed((&sl.http, &sl.cp.api), &plugged, e.revision, Duration::from_secs(30)).await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        let p = &st["h1"]["last_pass"];
        if p["revision"].as_u64() == Some(e.revision) {
            units.push(p["units"].as_f64().unwrap_or(0.0));
            sent.push(p["flows_sent"].as_f64().unwrap_or(0.0));
        }
    }
    println!(
        "  one label change: API call to every switch in sync {:.1} ms; on h1 {:.0} units compiled, {:.0} flows sent; medians of {}",
        super::median(ms),
        super::median(units),
        super::median(sent),
        label_changes(n, changes).len()
    );
    trace_latency(&sl, changes.max(5)).await
}

/// `plexus trace` of a cross-host path (e12 on h1 to e1 on h2, TCP to the port a policy
/// lets role r1 reach team t1 on) against running OVS's `ofproto/trace` on the same two
/// switches directly.
async fn trace_latency(sl: &ScaleLab, rounds: usize) -> Result<()> {
    let req = plexus_api::TraceRequest {
        network: NET.into(),
        from: "e12".into(),
        to: format!("{NET}/e1"),
        protocol: plexus_api::TraceProtocol::Tcp,
        port: Some(1001),
    };
    let first = sl.api.trace(&req).await?;
    if first.packets.len() != 2 || !first.delivered {
        anyhow::bail!("the trace did not cross to the second host and get in: {first:?}");
    }
    let (mut via, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        sl.api.trace(&req).await?;
        via.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        for p in &first.packets {
            let h = sl.lab.host(&p.host).ok_or_else(|| anyhow::anyhow!("no host {}", p.host))?;
            let rundir = h.ovs.db_sock().parent().map(|d| d.to_path_buf()).unwrap_or_default();
            let ctl = plexus_ovs::unixctl::vswitchd_ctl(&rundir).ok_or_else(|| anyhow::anyhow!("no ovs-vswitchd control socket in {}", rundir.display()))?;
            plexus_ovs::unixctl::call(&ctl, "ofproto/trace", &["br-int", &p.flow], Duration::from_secs(5)).await?;
        }
        direct.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (v, d) = (super::median(via), super::median(direct));
    println!(
        "  plexus trace of a cross-host path ({}): {v:.1} ms vs {d:.1} ms for ofproto/trace run directly on both switches ({:.1}x), medians of {rounds}",
        first.verdict,
        v / d.max(1e-9)
    );
    Ok(())
}
