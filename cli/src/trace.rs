//! `plexus trace`: why a packet goes where it goes, in the operator's terms.

use anyhow::{bail, Context};
use clap::Args;
use plexus_api::{TraceProtocol, TraceRequest};

use crate::resources::{print, ApiOpts};

/// `plexus trace`.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("proto").args(["tcp", "udp", "icmp"])))]
pub(crate) struct TraceCmd {
    #[command(flatten)]
    api: ApiOpts,
    /// The sending endpoint, NETWORK/ID.
    #[arg(long)]
    from: String,
    /// The destination: an IPv4 address or an endpoint, NETWORK/ID.
    #[arg(long)]
    to: String,
    /// A TCP SYN to this port.
    #[arg(long, value_name = "PORT")]
    tcp: Option<u16>,
    /// A UDP datagram to this port.
    #[arg(long, value_name = "PORT")]
    udp: Option<u16>,
    /// An ICMP echo request (the default).
    #[arg(long)]
    icmp: bool,
}

pub(crate) async fn trace(c: TraceCmd) -> anyhow::Result<()> {
    let Some((network, from)) = c.from.split_once('/') else { bail!("--from {:?}: give the endpoint as NETWORK/ID", c.from) };
    let (protocol, port) = match (c.tcp, c.udp) {
        (Some(p), _) => (TraceProtocol::Tcp, Some(p)),
        (_, Some(p)) => (TraceProtocol::Udp, Some(p)),
        _ => (TraceProtocol::Icmp, None),
    };
    let req = TraceRequest { network: network.into(), from: from.into(), to: c.to.clone(), protocol, port };
    let api = c.api.auth.client(&c.api.api)?;
    let t = api.trace(&req).await.context("trace")?;
    print(c.api.output, &t, || {
        for p in &t.packets {
            println!("packet into {}'s switch: {}", p.host, p.flow);
        }
        let mut host = String::new();
        for s in &t.steps {
            if s.host != host {
                println!("on {}:", s.host);
                host = s.host.clone();
            }
            println!("  {:>3} {:<15} {}", s.table, s.table_name, s.object);
        }
        println!("verdict: {}", t.verdict);
    })
}
