//! `plexus attach` and `plexus detach`: Pipework for Plexus networks.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use plexus_agent::attach::{self, AttachRequest};
use plexus_ovs::ovsdb::{Client as Ovsdb, ClientOptions, VSwitch};

/// Where the host's pieces are.
#[derive(Args)]
pub(crate) struct HostOpts {
    /// Controller API URL(s), comma-separated.
    #[arg(long, env = "PLEXUS_API", default_value = "https://127.0.0.1:6543")]
    api: String,
    #[command(flatten)]
    auth: crate::resources::AuthOpts,
    /// This host's name as its agent registered it (default: the system's host name).
    #[arg(long, env = "PLEXUS_HOST")]
    host: Option<String>,
    /// This host's OVSDB.
    #[arg(long, env = "PLEXUS_OVSDB", default_value = "unix:/var/run/openvswitch/db.sock")]
    ovsdb: String,
}

/// `plexus attach`.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["netns", "pid"])))]
pub(crate) struct AttachCmd {
    #[command(flatten)]
    host: HostOpts,
    /// The container's network namespace file (/run/netns/NAME, /proc/PID/ns/net, …).
    #[arg(long)]
    netns: Option<PathBuf>,
    /// A process in the container (its network namespace is used).
    #[arg(long)]
    pid: Option<u32>,
    /// Network to attach to.
    #[arg(long)]
    network: String,
    /// Address wanted (default: the network's IPAM picks one).
    #[arg(long)]
    ip: Option<Ipv4Addr>,
    /// IPv6 address wanted, on a dual-stack network (default: the network's IPAM picks one).
    #[arg(long)]
    ip6: Option<std::net::Ipv6Addr>,
    /// MAC address wanted (default: derived from the address).
    #[arg(long)]
    mac: Option<String>,
    /// Interface name inside the container.
    #[arg(long, default_value = "eth0")]
    ifname: String,
    /// Endpoint id (default: generated).
    #[arg(long)]
    id: Option<String>,
    /// MTU (default: the underlay's MTU less the encapsulation's overhead).
    #[arg(long)]
    mtu: Option<u32>,
    /// Labels of the endpoint, KEY=VALUE (repeat for more): what policies select it by.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// A port to publish on its host's addresses, HOST_PORT:PORT[/tcp|/udp] (repeat for
    /// more; the network must be on a router with external access).
    #[arg(long = "publish", short = 'p', value_parser = crate::resources::parse_publish)]
    publish: Vec<plexus_api::PublishedPort>,
}

/// `plexus detach`.
#[derive(Args)]
pub(crate) struct DetachCmd {
    #[command(flatten)]
    host: HostOpts,
    /// Network of the endpoint.
    #[arg(long)]
    network: String,
    /// Endpoint id (as `plexus attach` printed it).
    id: String,
}

impl HostOpts {
    fn host(&self) -> anyhow::Result<String> {
        if let Some(h) = &self.host {
            return Ok(h.clone());
        }
        let h = std::fs::read_to_string("/proc/sys/kernel/hostname").context("reading the host name (or give --host)")?;
        Ok(h.trim().to_string())
    }

    async fn connect(&self) -> anyhow::Result<(plexus_api::Client, VSwitch)> {
        let api = self.auth.client(&self.api)?;
        let target = self.ovsdb.parse().context("--ovsdb")?;
        let db = Ovsdb::connect(target, ClientOptions::default(), std::time::Duration::from_secs(5))
            .await
            .with_context(|| format!("connecting to OVSDB at {} (is Open vSwitch running? --ovsdb names it)", self.ovsdb))?;
        Ok((api, VSwitch::new(db)))
    }
}

pub(crate) async fn attach(c: AttachCmd) -> anyhow::Result<()> {
    let netns = match (c.netns, c.pid) {
        (Some(p), _) => p,
        (None, Some(pid)) => {
            let p = PathBuf::from(format!("/proc/{pid}/ns/net"));
            if !p.exists() {
                bail!("--pid {pid}: no such process");
            }
            p
        }
        (None, None) => bail!("give --netns or --pid"),
    };
    let labels = crate::resources::labels(&c.labels)?;
    let host = c.host.host()?;
    let (api, vs) = c.host.connect().await?;
    let mgmt = attach::mgmt_socket(&c.host.ovsdb);
    let req = AttachRequest {
        network: c.network,
        host,
        id: c.id,
        ip: c.ip,
        ip6: c.ip6,
        mac: c.mac,
        ifname: c.ifname,
        netns,
        host_netns: None,
        mtu: c.mtu,
        owner: "plexus attach".into(),
        labels,
        publish: c.publish,
        mgmt,
    };
    let a = attach::attach(&api, &vs, &req).await?;
    let e = &a.endpoint;
    println!(
        "attached {} ({}/{}{} {}) to network {} as {} (mtu {}{}); `plexus detach --network {} {}` removes it",
        e.id,
        e.ip,
        e.prefix_len,
        e.ip6.map(|ip6| format!(" {ip6}/{}", e.prefix_len6.unwrap_or(64))).unwrap_or_default(),
        e.mac,
        e.network,
        req.ifname,
        a.mtu,
        if a.default_route { format!(", default route via {}", e.gateway) } else { String::new() },
        e.network,
        e.id
    );
    Ok(())
}

pub(crate) async fn detach(c: DetachCmd) -> anyhow::Result<()> {
    let (api, vs) = c.host.connect().await?;
    let d = attach::detach(&api, &vs, None, &c.network, &c.id).await?;
    if d == attach::Detached::default() {
        bail!("nothing to detach: no endpoint {} in network {}, and no port or veth of it on this host", c.id, c.network);
    }
    println!("detached {} from network {} (port removed: {}, veth removed: {}, endpoint deleted: {})", c.id, c.network, d.port, d.veth, d.endpoint);
    Ok(())
}
