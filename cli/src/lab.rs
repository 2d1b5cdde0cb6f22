//! `plexus lab …`.

use crate::resources::Output;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use plexus_lab::{probe, Lab, LabConfig};

#[derive(Args)]
pub(crate) struct LabCmd {
    /// Lab name (1 to 10 lowercase letters or digits).
    #[arg(long, global = true, default_value = "lab")]
    name: String,
    #[command(subcommand)]
    cmd: Sub,
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
        /// Controllers to run (0: OVS only, no control plane; 1: a controller and an agent
        /// on every host; 3: a Raft cluster, each node in a namespace of its own).
        #[arg(long, default_value_t = 1)]
        controllers: u8,
        /// Encapsulation between hosts.
        #[arg(long, default_value = "vxlan", value_parser = ["vxlan", "geneve"])]
        encap: String,
        /// Add this machine's Docker as a host (needs a running dockerd): its own OVS and an
        /// agent serving Docker's plugin protocols in the root namespace.
        #[arg(long)]
        docker: bool,
        /// Run a Docker engine inside every host (its own data root, socket and plugin
        /// directory, in the host's namespace), served by the host's agent: cross-host Docker
        /// on one machine. `docker -H unix:///run/plexus/LAB/hN/docker/docker.sock` reaches one.
        #[arg(long)]
        docker_engines: bool,
    },
    /// Stop a lab and remove everything it made.
    Down,
    /// Show a lab's hosts.
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Show containers talk: a network and an endpoint on the first and the last host through
    /// the controller, containers plugged in, ping and a checked 10 MB TCP stream.
    Demo,
    /// Make a container namespace on a host and attach it to a network through the controller.
    Run {
        /// Host (h1, h2, …).
        host: String,
        /// Container name (1 to 12 lowercase letters or digits).
        #[arg(value_name = "NAME")]
        container: String,
        /// Network.
        #[arg(long)]
        network: String,
        /// Address wanted.
        #[arg(long)]
        ip: Option<std::net::Ipv4Addr>,
        /// Labels of its endpoint, KEY=VALUE (repeat for more): what policies select it by.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// A port to publish on its host's addresses, HOST_PORT:PORT[/tcp|/udp] (repeat for
        /// more; the network must be on a router with external access).
        #[arg(long = "publish", short = 'p', value_parser = crate::resources::parse_publish)]
        publish: Vec<plexus_api::PublishedPort>,
    },
    /// Run a command inside a container: plexus lab exec NAME -- CMD ARGS…
    Exec {
        /// Container name.
        #[arg(value_name = "NAME")]
        container: String,
        /// The command.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
}

pub(crate) async fn run(c: LabCmd) -> anyhow::Result<()> {
    match c.cmd {
        Sub::Up { hosts, enable_dummy, controllers, encap, docker, docker_engines } => {
            if ![0, 1, 3].contains(&controllers) {
                bail!("--controllers {controllers}: 0, 1 or 3");
            }
            let encap = if encap == "geneve" { plexus_api::Encap::Geneve } else { plexus_api::Encap::Vxlan };
            if (docker || docker_engines) && controllers == 0 {
                bail!("--docker and --docker-engines need a controller (--controllers 1 or 3)");
            }
            let cfg = LabConfig { name: c.name.clone(), hosts, owned: false, enable_dummy, encap, docker, controllers: controllers.max(1), docker_engines };
            let lab = tokio::task::spawn_blocking(move || Lab::up(&cfg)).await?.with_context(|| format!("lab up {}", c.name))?;
            if controllers > 0 {
                let exe = std::env::current_exe().context("finding the plexus binary")?;
                let cp = match lab.start_control_plane(&exe) {
                    Ok(cp) => cp,
                    Err(e) => {
                        lab.down();
                        return Err(e).context("starting the control plane");
                    }
                };
                print_status(&lab, Output::Table)?;
                println!("# for the CLI in this shell (the token is the lab cluster's admin):\n{}", cp.exports()?);
            } else {
                print_status(&lab, Output::Table)?;
            }
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
        Sub::Run { host, container: name, network, ip, labels, publish } => {
            let labels = crate::resources::labels(&labels)?;
            let lab = Lab::load(&c.name)?;
            if lab.status().api.is_none() {
                bail!("lab {} runs no controller", lab.name);
            }
            let api = lab.control_plane().client()?;
            if lab.host(&host).is_none() {
                bail!("lab {} has no host {host}", lab.name);
            }
            // The network's MTU, within what the lab's tunnels carry.
            let net = api.network(&network).await?;
            let mtu = plexus_agent::attach::effective_mtu(net.spec.mtu, plexus_agent::attach::network_path(&net, plexus_lab::wire::CONTAINER_MTU));
            let e = api
                .create_endpoint(
                    &network,
                    &plexus_api::EndpointSpec {
                        id: Some(name.clone()),
                        host,
                        ip,
                        ip6: None,
                        mac: None,
                        owner: Some(format!("lab container {name}")),
                        labels,
                        publish,
                    },
                )
                .await?;
            match lab.attach(&e, &name, mtu).await {
                Ok(ct) => println!("{name}: {}/{} {} on {} in network {network} (namespace {}, mtu {mtu})", e.ip, e.prefix_len, e.mac, e.host, ct.netns),
                Err(err) => {
                    // Leave no endpoint behind for a container that could not be made.
                    let _ = api.delete_endpoint(&network, &e.id).await;
                    return Err(err.into());
                }
            }
        }
        Sub::Exec { container: name, cmd } => {
            let lab = Lab::load(&c.name)?;
            if !lab.status().containers.contains(&name) {
                bail!("lab {} has no container {name}", lab.name);
            }
            let ns = format!("plx-{}-{name}", lab.name);
            let st = std::process::Command::new("ip").args(["netns", "exec", &ns]).args(&cmd).status().with_context(|| format!("running {cmd:?}"))?;
            std::process::exit(st.code().unwrap_or(1));
        }
    }
    Ok(())
}

fn print_status(lab: &Lab, output: Output) -> anyhow::Result<()> {
    let s = lab.status();
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&s)?),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(&s)?),
        Output::Table => {
            if let Some(api) = &s.api {
                println!("controller: {api}");
            }
            println!("{:<7} {:<20} {:<18} {:<8} OVSDB", "HOST", "NETNS", "UNDERLAY", "OVS");
            for h in &s.hosts {
                let netns = if h.netns.is_empty() { "(root)" } else { h.netns.as_str() };
                println!("{:<7} {:<20} {:<18} {:<8} {}", h.name, netns, h.underlay_ip, if h.running { "running" } else { "DOWN" }, h.ovsdb);
            }
        }
    }
    Ok(())
}

/// The owner the demo's endpoints carry, so a later run finds and replaces them.
const DEMO_OWNER: &str = "plexus lab demo";

async fn demo(lab: &Lab) -> anyhow::Result<()> {
    if lab.hosts.len() < 2 {
        bail!("the demo needs a lab of at least 2 hosts (plexus lab up --hosts 3)");
    }
    if lab.status().api.is_none() {
        bail!("lab {} runs no controller: start it with `plexus lab up --controllers 1`", lab.name);
    }
    let api = lab.control_plane().client()?;
    let (a, b) = (&lab.hosts[0], &lab.hosts[lab.hosts.len() - 1]);
    // Agents register within a moment of the lab coming up.
    for _ in 0..100 {
        if api.hosts().await.map(|h| h.len() == lab.hosts.len()).unwrap_or(false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let spec = plexus_api::NetworkSpec::overlay("demo", "10.77.0.0/24");
    match api.create_network(&spec).await {
        Ok(n) => println!("network demo created: {} (overlay, VNI {})", n.spec.subnet, n.vni().map(|v| v.to_string()).unwrap_or_else(|| "-".into())),
        Err(plexus_api::ClientError::Problem(p)) if p.status == 409 => println!("network demo exists"),
        Err(e) => return Err(e.into()),
    }
    // An earlier demo's containers: removed (their ports, namespaces and endpoints) so the
    // demo can run again on the same lab.
    for e in api.endpoints("demo").await?.into_iter().filter(|e| e.owner.as_deref() == Some(DEMO_OWNER)) {
        if let Some(h) = lab.host(&e.host) {
            let vs = plexus_lab::wire::vswitch(h).await?;
            vs.delete_port(plexus_lab::wire::BR_INT, &plexus_api::ids::port_name(&e.network, &e.id)).await?;
        }
        api.delete_endpoint("demo", &e.id).await?;
        println!("removed endpoint {} of an earlier demo", e.id);
    }
    for c in ["c1", "c2"] {
        let ns = format!("plx-{}-{c}", lab.name);
        if plexus_agent::netns::path(&ns).exists() {
            // The container's end of its veth goes with the namespace, and the host's end with it.
            let _ = std::process::Command::new("ip").args(["netns", "delete", &ns]).status();
        }
    }
    let (mut cs, mut ids) = (Vec::new(), Vec::new());
    for (h, cname) in [(a, "c1"), (b, "c2")] {
        let e = api
            .create_endpoint(
                "demo",
                &plexus_api::EndpointSpec {
                    id: None,
                    host: h.name.clone(),
                    ip: None,
                    ip6: None,
                    mac: None,
                    owner: Some(DEMO_OWNER.into()),
                    labels: Default::default(),
                    publish: Vec::new(),
                },
            )
            .await?;
        println!("endpoint {} on {}: {}/{} {}", e.id, e.host, e.ip, e.prefix_len, e.mac);
        ids.push(e.id.clone());
        match lab.attach(&e, cname, plexus_lab::wire::CONTAINER_MTU).await {
            Ok(c) => cs.push(c),
            Err(err) => {
                // Leave no endpoint behind for a container that could not be made.
                let _ = api.delete_endpoint("demo", &e.id).await;
                return Err(err.into());
            }
        }
    }
    let (n1, n2, ip2) = (cs[0].netns.clone(), cs[1].netns.clone(), cs[1].ip);
    let first = tokio::task::spawn_blocking(move || probe::wait_ping(&n1, ip2, Duration::from_secs(20))).await??;
    println!("first ping reply from {} to {} after {:.0} ms", a.name, b.name, first.as_secs_f64() * 1e3);
    let n1 = cs[0].netns.clone();
    let got = tokio::task::spawn_blocking(move || probe::ping(&n1, ip2, 5, Duration::from_millis(200))).await??;
    println!("ping {} -> {}: {got}/5 replies", a.name, b.name);
    let n1 = cs[0].netns.clone();
    let t = tokio::task::spawn_blocking(move || probe::tcp_transfer(&n1, &n2, ip2, 10 << 20)).await??;
    println!("TCP: {} bytes in {:.2} s ({:.0} Mbit/s), intact: {}", t.bytes, t.elapsed.as_secs_f64(), t.mbit_per_s(), t.intact);
    if got != 5 || !t.intact {
        bail!("the data plane does not work: {got}/5 pings, TCP intact = {}", t.intact);
    }
    println!("containers on {} and {} talk through flows the Plexus controller computed and programmed", a.name, b.name);
    // By name too: the container's resolv.conf names its gateway, which h1's agent answers.
    let (n1, peer) = (cs[0].netns.clone(), ids[1].clone());
    let found = tokio::task::spawn_blocking(move || {
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            let o = std::process::Command::new("ip").args(["netns", "exec", &n1, "getent", "hosts", &peer]).output();
            if let Some(o) = o.ok().filter(|o| o.status.success()) {
                return Some(String::from_utf8_lossy(&o.stdout).trim().to_string());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    })
    .await?;
    match found {
        Some(line) => println!("DNS from the container on {}: {line}", a.name),
        None => bail!("the container on {} could not resolve {} by name (its gateway answers DNS)", a.name, ids[1]),
    }
    Ok(())
}
