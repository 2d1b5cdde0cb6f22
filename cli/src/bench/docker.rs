//! `plexus bench docker`: from `docker run` to the first ping reply, for a container on a
//! Plexus network pinging a container on another host, against a container on Docker's own
//! bridge network pinging one on the same host. Both are whole `docker run --rm` commands
//! whose container pings until the first reply and exits.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use plexus_api::{EndpointSpec, NetworkSpec};
use plexus_lab::{Lab, LabConfig};

use plexus_lab::control::{docker_client as docker, ensure_test_image, TEST_IMAGE as IMAGE};

fn docker_ok(args: &[&str]) -> anyhow::Result<String> {
    let o = docker().args(args).output().context("running docker")?;
    if !o.status.success() {
        bail!("docker {args:?}: {}", String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Milliseconds of `docker run --rm --network NET IMAGE` pinging `target` until it answers.
fn run_and_ping(network: &str, target: &str) -> anyhow::Result<f64> {
    let script = format!("until ping -c 1 -W 1 {target} >/dev/null; do :; done");
    let t = Instant::now();
    docker_ok(&["run", "--rm", "--network", network, IMAGE, "sh", "-c", &script])?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

pub(super) async fn run(rounds: usize) -> anyhow::Result<()> {
    docker_ok(&["version"]).context("no Docker engine answers (scripts/dockerd start)")?;
    ensure_test_image().context("making the test image")?;
    let name = format!("bd{}", std::process::id() % 10_000_000);
    let cfg = LabConfig { docker: true, ..LabConfig::owned(&name, 1) };
    let lab = tokio::task::spawn_blocking(move || Lab::up(&cfg)).await?.context("starting a lab with a Docker host")?;
    let cp = lab.start_control_plane(&std::env::current_exe()?).context("starting the control plane")?;
    let api = cp.client()?;
    api.create_network(&NetworkSpec::overlay("bench", "10.89.0.0/16")).await?;
    let t = Instant::now();
    while docker_ok(&["network", "inspect", "bench"]).is_err() {
        if t.elapsed() > Duration::from_secs(20) {
            bail!("Docker never showed network bench");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The peer on the other host: a namespace container on h1.
    let e = api.create_endpoint("bench", &EndpointSpec::on("h1").id("peer")).await?;
    lab.attach(&e, "peer", plexus_lab::wire::CONTAINER_MTU).await?;
    // The baseline's peer: a container on Docker's bridge.
    let peer = format!("{name}peer");
    docker_ok(&["run", "-d", "--name", &peer, IMAGE, "sleep", "100000"])?;
    let bridge_ip = docker_ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &peer])?;
    let result = (|| -> anyhow::Result<(f64, f64)> {
        eprintln!("{rounds} rounds each: docker run on a Plexus network pinging h1, and on Docker's bridge pinging a local container ...");
        let (mut plexus, mut bridge) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            plexus.push(run_and_ping("bench", &e.ip.to_string())?);
            bridge.push(run_and_ping("bridge", &bridge_ip)?);
        }
        Ok((super::median(plexus), super::median(bridge)))
    })();
    let _ = docker_ok(&["rm", "-f", &peer]);
    let (p, b) = result?;
    println!("docker run to the first ping reply, median of {rounds} each:");
    println!("  Docker bridge network, peer on the same host:  {b:.0} ms");
    println!("  Plexus network, peer on another host:          {p:.0} ms ({:.2}x the bridge)", p / b);
    // Where Plexus's share goes: the plugin calls Docker waited on, from the agent's log.
    let log = std::fs::read_to_string(lab.dir.join("agent-docker.log")).unwrap_or_default();
    let mut calls: std::collections::BTreeMap<String, Vec<f64>> = std::collections::BTreeMap::new();
    for l in log.lines().filter(|l| l.contains("plugin call served")) {
        let field = |k: &str| l.split(&format!("{k}=")).nth(1).and_then(|r| r.split_whitespace().next()).map(|v| v.trim_matches('"').to_string());
        if let (Some(m), Some(ms)) = (field("method"), field("ms").and_then(|v| v.parse::<f64>().ok())) {
            calls.entry(m).or_default().push(ms);
        }
    }
    let per_run: f64 = calls.values().map(|v| super::median(v.clone()) * v.len() as f64 / rounds as f64).sum();
    println!("  plugin calls Docker waited on (median ms; {per_run:.1} ms a run in all):");
    for (m, v) in calls {
        println!("    {m:<16} {:>6.1} ms  ({} calls)", super::median(v.clone()), v.len());
    }
    drop(lab);
    Ok(())
}
