//! `plexus lab …`.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use plexus_agent::lab::{probe, wire, Lab, LabConfig};

#[derive(Args)]
pub struct LabCmd {
    /// Lab name (1 to 10 lowercase letters or digits).
    #[arg(long, global = true, default_value = "lab")]
    name: String,
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Sub {
    /// Start a lab: N namespaced hosts with their own Open vSwitch, joined by an underlay.
    Up {
        /// Number of hosts.
        #[arg(long, default_value_t = 3)]
        hosts: usize,
        /// Start ovs-vswitchd with --enable-dummy (dummy ports for scale tests).
        #[arg(long)]
        enable_dummy: bool,
    },
    /// Stop a lab and remove everything it made.
    Down,
    /// Show a lab's hosts.
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Prove the data plane: a container on the first and one on the last host, wired through
    /// a VXLAN tunnel by flows Plexus's codec installs; ping and a checked 10 MB TCP stream.
    Demo,
}

pub async fn run(c: LabCmd) -> anyhow::Result<()> {
    match c.cmd {
        Sub::Up { hosts, enable_dummy } => {
            let cfg = LabConfig { name: c.name.clone(), hosts, owned: false, enable_dummy };
            let lab = tokio::task::spawn_blocking(move || Lab::up(&cfg)).await?.with_context(|| format!("lab up {}", c.name))?;
            print_status(&lab, Output::Table)?;
            println!("lab {} is up; `plexus lab down --name {}` removes it", lab.name, lab.name);
        }
        Sub::Down => {
            let lab = Lab::load(&c.name)?;
            tokio::task::spawn_blocking(move || lab.down()).await?;
            println!("lab {} removed", c.name);
        }
        Sub::Status { output } => {
            if !Lab::list().contains(&c.name) {
                let labs = Lab::list();
                bail!("no lab named {} (labs: {})", c.name, if labs.is_empty() { "none".into() } else { labs.join(", ") });
            }
            print_status(&Lab::load(&c.name)?, output)?;
        }
        Sub::Demo => demo(&Lab::load(&c.name)?).await?,
    }
    Ok(())
}

fn print_status(lab: &Lab, output: Output) -> anyhow::Result<()> {
    let s = lab.status();
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&s)?),
        Output::Table => {
            println!("{:<4} {:<20} {:<18} {:<8} OVSDB", "HOST", "NETNS", "UNDERLAY", "OVS");
            for h in &s.hosts {
                println!("{:<4} {:<20} {:<18} {:<8} {}", h.name, h.netns, h.underlay_ip, if h.running { "running" } else { "DOWN" }, h.ovsdb);
            }
        }
    }
    Ok(())
}

async fn demo(lab: &Lab) -> anyhow::Result<()> {
    if lab.hosts.len() < 2 {
        bail!("the demo needs a lab of at least 2 hosts (plexus lab up --hosts 3)");
    }
    let (a, b) = (&lab.hosts[0], &lab.hosts[lab.hosts.len() - 1]);
    println!("wiring container c1 on {} and c2 on {} through VXLAN 100 ...", a.name, b.name);
    let (c1, c2) = wire::connect_pair(lab, a, "c1", b, "c2", 100).await?;
    let (n1, n2, ip2) = (c1.netns.clone(), c2.netns.clone(), c2.ip);
    let first = tokio::task::spawn_blocking(move || probe::wait_ping(&n1, ip2, Duration::from_secs(10))).await??;
    println!("first ping reply from c2 after {:.0} ms", first.as_secs_f64() * 1e3);
    let n1 = c1.netns.clone();
    let got = tokio::task::spawn_blocking(move || probe::ping(&n1, ip2, 5, Duration::from_millis(200))).await??;
    println!("ping c1 -> c2: {got}/5 replies");
    let n1 = c1.netns.clone();
    let t = tokio::task::spawn_blocking(move || probe::tcp_transfer(&n1, &n2, ip2, 10 << 20)).await??;
    println!("TCP c1 -> c2: {} bytes in {:.2} s ({:.0} Mbit/s), intact: {}", t.bytes, t.elapsed.as_secs_f64(), t.mbit_per_s(), t.intact);
    if got != 5 || !t.intact {
        bail!("the data plane does not work: {got}/5 pings, TCP intact = {}", t.intact);
    }
    println!("containers on {} and {} talk through Open vSwitch flows programmed by Plexus", a.name, b.name);
    Ok(())
}
