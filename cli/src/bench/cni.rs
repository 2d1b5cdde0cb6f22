//! `plexus bench cni`: Plexus's CNI plugin against Debian's reference plugins (`bridge` with
//! `host-local` IPAM) on the same host: `podman run` to the first ping of the gateway, and
//! the latency of `ADD` and `DEL` run as a runtime runs them. Rounds interleave the two.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use plexus_api::NetworkSpec;
use plexus_lab::podman::{Podman, CNI_PLUGINS, IMAGE};
use plexus_lab::{Lab, LabConfig};

/// Milliseconds of `podman run --rm --network NET` pinging `gateway` until it answers.
fn run_and_ping(pm: &Podman, network: &str, gateway: &str) -> anyhow::Result<f64> {
    let script = format!("until ping -c 1 -W 1 {gateway} >/dev/null; do :; done");
    let t = Instant::now();
    pm.ok(&["run", "--rm", "--network", network, IMAGE, "sh", "-c", &script])?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// Runs `plugin` as a runtime would for `command`; milliseconds it took.
fn invoke(plugin: &Path, command: &str, container: &str, netns: &str, conf: &serde_json::Value) -> anyhow::Result<f64> {
    let netns = format!("/run/netns/{netns}");
    let vars = [("CNI_COMMAND", command), ("CNI_CONTAINERID", container), ("CNI_NETNS", &netns), ("CNI_IFNAME", "eth0"), ("CNI_PATH", CNI_PLUGINS)];
    let t = Instant::now();
    let o = plexus_lab::podman::invoke(plugin, &vars, conf)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !o.status.success() {
        bail!("{} {command}: {}{}", plugin.display(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
    Ok(ms)
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let o = Command::new("ip").args(args).output().context("running ip (apt-get install iproute2)")?;
    if !o.status.success() {
        bail!("ip {args:?}: {}", String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(())
}

/// One ADD and DEL of `plugin` for a fresh namespace: their milliseconds.
fn add_del(plugin: &Path, conf: &serde_json::Value, tag: &str) -> anyhow::Result<(f64, f64)> {
    let ns = format!("plx-{tag}");
    ip(&["netns", "add", &ns])?;
    let r = (|| {
        let add = invoke(plugin, "ADD", tag, &ns, conf)?;
        let del = invoke(plugin, "DEL", tag, &ns, conf)?;
        Ok((add, del))
    })();
    let _ = ip(&["netns", "delete", &ns]);
    r
}

pub(super) async fn run(rounds: usize) -> anyhow::Result<()> {
    let name = format!("bc{}", std::process::id() % 10_000_000);
    let cfg = LabConfig::owned(&name, 1);
    let lab = tokio::task::spawn_blocking(move || Lab::up(&cfg)).await?.context("starting a lab")?;
    let cp = lab.start_control_plane(&std::env::current_exe()?).context("starting the control plane")?;
    cp.client()?.create_network(&NetworkSpec::overlay("bench", "10.88.0.0/16")).await?;
    let pm = Podman::new(&lab.dir.join("podman"), &std::env::current_exe()?).context("setting podman up")?;
    let plexus_conf = lab.cni_conf(&cp, "h1", "bench")?;
    // The baseline: a Linux bridge of its own with host-local addresses, as podman's default
    // network is made.
    let bridge_conf = serde_json::json!({
        "type": "bridge",
        "bridge": format!("plxbr{}", std::process::id() % 100_000),
        "isGateway": true,
        "ipMasq": false,
        "ipam": {"type": "host-local", "subnet": "10.87.0.0/16", "dataDir": lab.dir.join("host-local"), "routes": [{"dst": "0.0.0.0/0"}]},
    });
    let (plexus_net, bridge_net) = (format!("{name}-plexus"), format!("{name}-bridge"));
    pm.network(&plexus_net, &plexus_conf)?;
    pm.network(&bridge_net, &bridge_conf)?;
    let with_meta = |c: &serde_json::Value, n: &str| {
        let mut c = c.clone();
        c["cniVersion"] = "1.0.0".into();
        c["name"] = n.into();
        c
    };
    let (pconf, bconf) = (with_meta(&plexus_conf, &plexus_net), with_meta(&bridge_conf, &bridge_net));
    let bridge_plugin = Path::new(CNI_PLUGINS).join("bridge");
    eprintln!("{rounds} rounds each, interleaved: podman run pinging the gateway, then ADD and DEL by hand ...");
    let (mut p_run, mut b_run, mut p_add, mut b_add, mut p_del, mut b_del) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..rounds {
        p_run.push(run_and_ping(&pm, &plexus_net, "10.88.0.1")?);
        b_run.push(run_and_ping(&pm, &bridge_net, "10.87.0.1")?);
        let (a, d) = add_del(&pm.plugin(), &pconf, &format!("{name}p{i}"))?;
        p_add.push(a);
        p_del.push(d);
        let (a, d) = add_del(&bridge_plugin, &bconf, &format!("{name}b{i}"))?;
        b_add.push(a);
        b_del.push(d);
    }
    let bridge_dev = bridge_conf["bridge"].as_str().unwrap_or_default().to_string();
    let _ = ip(&["link", "delete", &bridge_dev]);
    let m = super::median;
    let (pr, br, pa, ba, pd, bd) = (m(p_run), m(b_run), m(p_add), m(b_add), m(p_del), m(b_del));
    println!("CNI, median of {rounds} each (Plexus on a lab host; the reference bridge + host-local on the root host):");
    println!("  podman run to the first ping of the gateway: bridge {br:.0} ms, Plexus {pr:.0} ms ({:.2}x)", pr / br);
    println!("  ADD: bridge {ba:.1} ms, Plexus {pa:.1} ms ({:.2}x)", pa / ba);
    println!("  DEL: bridge {bd:.1} ms, Plexus {pd:.1} ms ({:.2}x)", pd / bd);
    println!("  (Plexus's ADD includes the controller's endpoint write and waiting until the switch has the port's flows)");
    Ok(())
}
