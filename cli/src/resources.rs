//! `plexus network|endpoint|host|cluster …`: NetOps commands against the REST API.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use plexus_api::{Client, EndpointSpec, IpamMode, NetworkKind, NetworkSpec};
use serde::Serialize;

/// Where the API is and how to print.
#[derive(Args, Clone)]
pub(crate) struct ApiOpts {
    /// Controller API URL(s), comma-separated; the next is tried when one does not answer.
    #[arg(long, global = true, env = "PLEXUS_API", default_value = "https://127.0.0.1:6543")]
    pub(crate) api: String,
    #[command(flatten)]
    pub(crate) auth: AuthOpts,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value = "table")]
    pub(crate) output: Output,
}

/// The credentials every API call carries.
#[derive(Args, Clone)]
pub(crate) struct AuthOpts {
    /// The cluster CA's certificate (ca.crt in the controller's PKI directory): the only
    /// issuer the API's certificate is trusted from.
    #[arg(long, global = true, env = "PLEXUS_CA")]
    ca: Option<std::path::PathBuf>,
    /// A bearer token (`plexus pki token` issues one; `plexus lab up` prints an admin's).
    #[arg(long, global = true, env = "PLEXUS_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl AuthOpts {
    /// A client for `api` with these credentials.
    pub(crate) fn client(&self, api: &str) -> anyhow::Result<Client> {
        let creds = plexus_api::Credentials::from_files(self.ca.as_deref(), self.token.as_deref()).context("--ca/--token")?;
        Client::new(api, &creds).context("--api")
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Output {
    /// Tables for people.
    Table,
    /// JSON, as the API speaks it.
    Json,
    /// YAML, the same documents as JSON.
    Yaml,
}

#[derive(Subcommand)]
pub(crate) enum NetworkCmd {
    /// Create a network.
    Create {
        /// Name (DNS label).
        name: String,
        /// IPv4 subnet, e.g. 10.10.0.0/24.
        #[arg(long)]
        subnet: String,
        /// Overlay VNI (chosen by the controller if absent).
        #[arg(long, conflicts_with = "underlay")]
        vni: Option<u32>,
        /// Make it an underlay on this physical network.
        #[arg(long)]
        underlay: Option<String>,
        /// VLAN of an underlay.
        #[arg(long, requires = "underlay")]
        vlan: Option<u16>,
        /// Gateway (default: first address).
        #[arg(long)]
        gateway: Option<Ipv4Addr>,
        /// IPv6 subnet beside the IPv4 one (dual stack), e.g. fd00:10::/64.
        #[arg(long)]
        subnet6: Option<String>,
        /// IPv6 gateway (default: the IPv6 subnet's first address).
        #[arg(long, requires = "subnet6")]
        gateway6: Option<std::net::Ipv6Addr>,
        /// Endpoint MTU.
        #[arg(long)]
        mtu: Option<u32>,
        /// IPAM mode.
        #[arg(long, default_value = "cluster", value_parser = ["cluster", "host-subnet"])]
        ipam: String,
        /// Labels, KEY=VALUE.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// List networks.
    List,
    /// Show one network.
    Show {
        /// Name.
        name: String,
    },
    /// Delete a network.
    Delete {
        /// Name.
        name: String,
        /// Delete its endpoints too.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum EndpointCmd {
    /// Create an endpoint (allocates its address).
    Create {
        /// Network.
        #[arg(long)]
        network: String,
        /// Host it lives on.
        #[arg(long)]
        host: String,
        /// Address wanted.
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        /// IPv6 address wanted, on a dual-stack network.
        #[arg(long)]
        ip6: Option<std::net::Ipv6Addr>,
        /// MAC wanted.
        #[arg(long)]
        mac: Option<String>,
        /// Id wanted.
        #[arg(long)]
        id: Option<String>,
        /// Owner (container id, namespace).
        #[arg(long)]
        owner: Option<String>,
        /// Labels, KEY=VALUE (repeat for more): what policies select it by.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// A port to publish on its host's addresses, HOST_PORT:PORT[/tcp|/udp] (repeat for
        /// more; the network must be on a router with external access).
        #[arg(long = "publish", short = 'p', value_parser = crate::resources::parse_publish)]
        publish: Vec<plexus_api::PublishedPort>,
    },
    /// Replace an endpoint's labels (policies that select by them apply at once).
    Label {
        /// Network.
        #[arg(long)]
        network: String,
        /// Endpoint id.
        id: String,
        /// The new labels, KEY=VALUE (none: remove them all).
        labels: Vec<String>,
    },
    /// Replace the ports an endpoint publishes on its host's addresses (none: publish none).
    Publish {
        /// Network.
        #[arg(long)]
        network: String,
        /// Endpoint id.
        id: String,
        /// The ports, HOST_PORT:PORT[/tcp|/udp].
        #[arg(value_parser = parse_publish)]
        publish: Vec<plexus_api::PublishedPort>,
    },
    /// List endpoints: a network's, or every network's.
    List {
        /// Network (default: all of them).
        #[arg(long)]
        network: Option<String>,
    },
    /// Delete an endpoint.
    Delete {
        /// Network.
        #[arg(long)]
        network: String,
        /// Endpoint id.
        id: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum HostCmd {
    /// List registered hosts.
    List,
}

#[derive(Subcommand)]
pub(crate) enum ClusterCmd {
    /// Every node's view: role, leader, term, applied index.
    Status,
    /// Make a running node (started alone or with --join) a voting member.
    AddNode {
        /// Its id.
        #[arg(long)]
        id: u64,
        /// Its cluster address, HOST:PORT.
        #[arg(long)]
        addr: String,
        #[command(flatten)]
        via: ClusterPort,
    },
    /// Remove a node from the cluster.
    RemoveNode {
        /// Its id.
        id: u64,
        #[command(flatten)]
        via: ClusterPort,
    },
}

/// Membership changes go to a node's cluster port, with a certificate of the cluster's CA.
#[derive(clap::Args)]
pub(crate) struct ClusterPort {
    /// The cluster address (HOST:PORT) of any member.
    #[arg(long)]
    cluster: String,
    /// The cluster's PKI directory (its CA issues this command an operator certificate).
    #[arg(long, env = "PLEXUS_PKI_DIR")]
    pki_dir: std::path::PathBuf,
}

impl ClusterPort {
    fn client(&self) -> anyhow::Result<reqwest::Client> {
        let id = plexus_pki::Ca::identity_in(&self.pki_dir, "operator", &[], plexus_pki::Usage::Operator)
            .with_context(|| format!("an operator certificate from {}", self.pki_dir.display()))?;
        plexus_controller::store::cluster_client(&id).map_err(|e| anyhow::anyhow!("a client for the cluster port: {e}"))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<()> {
        let r = req.send().await.with_context(|| format!("the cluster port at {}", self.cluster))?;
        if !r.status().is_success() {
            let status = r.status();
            let p: plexus_api::Problem = r.json().await.unwrap_or_else(|_| plexus_api::Problem::new(status.as_u16(), "error", status.to_string()));
            bail!("{} ({})", p.detail, p.status);
        }
        Ok(())
    }
}

pub(crate) fn print<T: Serialize>(o: Output, v: &T, table: impl FnOnce()) -> anyhow::Result<()> {
    match o {
        Output::Json => println!("{}", serde_json::to_string_pretty(v)?),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(v)?),
        Output::Table => table(),
    }
    Ok(())
}

/// Parses a `--publish` value (clap's value parser: the error names the flag).
pub(crate) fn parse_publish(s: &str) -> Result<plexus_api::PublishedPort, String> {
    plexus_api::PublishedPort::parse("--publish", s).map_err(|e| e.reason)
}

pub(crate) fn labels(v: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    v.iter().map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).with_context(|| format!("label {l:?} is not KEY=VALUE"))).collect()
}

fn kind_text(k: &NetworkKind) -> String {
    match k {
        NetworkKind::Overlay { vni } => format!("overlay vni={}", vni.map(|v| v.to_string()).unwrap_or_default()),
        NetworkKind::Underlay { physical_network, vlan } => format!("underlay {physical_network}{}", vlan.map(|v| format!(" vlan={v}")).unwrap_or_default()),
    }
}

pub(crate) async fn network(o: ApiOpts, c: NetworkCmd) -> anyhow::Result<()> {
    let api = o.auth.client(&o.api)?;
    let table = |nets: &[plexus_api::Network]| {
        println!("{:<20} {:<24} {:<18} {:<15} {:<12} REV", "NAME", "KIND", "SUBNET", "GATEWAY", "IPAM");
        for n in nets {
            let ipam = if n.spec.ipam == IpamMode::Cluster { "cluster" } else { "host-subnet" };
            let gw = n.spec.gateway.map(|g| g.to_string()).unwrap_or_default();
            let subnet = match &n.spec.subnet6 {
                Some(s6) => format!("{},{s6}", n.spec.subnet),
                None => n.spec.subnet.clone(),
            };
            println!("{:<20} {:<24} {:<18} {:<15} {:<12} {}", n.spec.name, kind_text(&n.spec.kind), subnet, gw, ipam, n.revision);
        }
    };
    match c {
        NetworkCmd::Create { name, subnet, vni, underlay, vlan, gateway, subnet6, gateway6, mtu, ipam, labels: l } => {
            let kind = match underlay {
                Some(p) => NetworkKind::Underlay { physical_network: p, vlan },
                None => NetworkKind::Overlay { vni },
            };
            let ipam = if ipam == "host-subnet" { IpamMode::HostSubnet } else { IpamMode::Cluster };
            let spec =
                NetworkSpec { name, kind, subnet, gateway, subnet6, gateway6, mtu, ipam, host_prefix: None, lease_ttl_seconds: None, labels: labels(&l)? };
            let n = api.create_network(&spec).await?;
            print(o.output, &n, || table(std::slice::from_ref(&n)))?;
        }
        NetworkCmd::List => {
            let v = api.networks().await?;
            print(o.output, &v, || table(&v))?;
        }
        NetworkCmd::Show { name } => {
            let n = api.network(&name).await?;
            print(o.output, &n, || table(std::slice::from_ref(&n)))?;
        }
        NetworkCmd::Delete { name, force } => {
            api.delete_network(&name, force).await?;
            println!("network {name} deleted");
        }
    }
    Ok(())
}

pub(crate) async fn endpoint(o: ApiOpts, c: EndpointCmd) -> anyhow::Result<()> {
    let api = o.auth.client(&o.api)?;
    let table = |eps: &[plexus_api::Endpoint]| {
        println!("{:<16} {:<16} {:<12} {:<18} {:<18} {:<20} OWNER", "ID", "NETWORK", "HOST", "IP", "MAC", "PUBLISHED");
        for e in eps {
            let published: Vec<String> = e.publish.iter().map(|p| p.to_string()).collect();
            println!(
                "{:<16} {:<16} {:<12} {:<18} {:<18} {:<20} {}",
                e.id,
                e.network,
                e.host,
                match e.ip6 {
                    Some(ip6) => format!("{}/{},{ip6}/{}", e.ip, e.prefix_len, e.prefix_len6.unwrap_or(64)),
                    None => format!("{}/{}", e.ip, e.prefix_len),
                },
                e.mac,
                if published.is_empty() { "-".to_string() } else { published.join(",") },
                e.owner.as_deref().unwrap_or("-")
            );
        }
    };
    match c {
        EndpointCmd::Create { network, host, ip, ip6, mac, id, owner, labels: l, publish } => {
            let e = api.create_endpoint(&network, &EndpointSpec { id, host, ip, ip6, mac, owner, labels: labels(&l)?, publish }).await?;
            print(o.output, &e, || table(std::slice::from_ref(&e)))?;
        }
        EndpointCmd::Label { network, id, labels: l } => {
            let e = api.set_endpoint_labels(&network, &id, &labels(&l)?).await?;
            print(o.output, &e, || table(std::slice::from_ref(&e)))?;
        }
        EndpointCmd::Publish { network, id, publish } => {
            let e = api.set_endpoint_publish(&network, &id, &publish).await?;
            print(o.output, &e, || table(std::slice::from_ref(&e)))?;
        }
        EndpointCmd::List { network } => {
            let networks = match network {
                Some(n) => vec![n],
                None => api.networks().await?.into_iter().map(|n| n.spec.name).collect(),
            };
            let mut v = Vec::new();
            for n in networks {
                v.extend(api.endpoints(&n).await?);
            }
            print(o.output, &v, || table(&v))?;
        }
        EndpointCmd::Delete { network, id } => {
            api.delete_endpoint(&network, &id).await?;
            println!("endpoint {id} deleted from {network}");
        }
    }
    Ok(())
}

pub(crate) async fn host(o: ApiOpts, c: HostCmd) -> anyhow::Result<()> {
    let api = o.auth.client(&o.api)?;
    match c {
        HostCmd::List => {
            let v = api.hosts().await?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
            print(o.output, &v, || {
                println!("{:<16} {:<16} {:<7} {:<17} LAST SEEN", "NAME", "TUNNEL IP", "ENCAP", "DATAPATH ID");
                for h in &v {
                    let ago = now.saturating_sub(h.last_seen_ms) as f64 / 1000.0;
                    println!(
                        "{:<16} {:<16} {:<7} {:<17} {ago:.0}s ago",
                        h.spec.name,
                        h.spec.tunnel_ip,
                        format!("{:?}", h.spec.encap).to_lowercase(),
                        h.datapath_id
                    );
                }
            })?;
        }
    }
    Ok(())
}

pub(crate) async fn cluster(o: ApiOpts, c: ClusterCmd) -> anyhow::Result<()> {
    match c {
        ClusterCmd::AddNode { id, addr, via } => {
            let url = format!("https://{}/cluster/members", via.cluster);
            via.send(via.client()?.post(url).json(&plexus_api::Member { id, addr: addr.clone() })).await?;
            println!("node {id} ({addr}) is a member");
        }
        ClusterCmd::RemoveNode { id, via } => {
            via.send(via.client()?.delete(format!("https://{}/cluster/members/{id}", via.cluster))).await?;
            println!("node {id} removed from the cluster");
        }
        ClusterCmd::Status => {
            let all = o.auth.client(&o.api)?.cluster_all().await;
            if all.iter().all(|(_, r)| r.is_err()) {
                let why: Vec<String> = all.iter().map(|(u, r)| format!("{u}: {}", r.as_ref().err().map(|e| e.to_string()).unwrap_or_default())).collect();
                bail!("no controller answered:\n  {}", why.join("\n  "));
            }
            let ok: Vec<&plexus_api::ClusterStatus> = all.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
            print(o.output, &ok, || {
                if let Some(first) = ok.first() {
                    let members: Vec<String> = first.members.iter().map(|m| format!("{}={}", m.id, m.addr)).collect();
                    println!("members: {}", members.join(", "));
                    println!("leader:  {}", first.leader.map(|l| l.to_string()).unwrap_or_else(|| "none".into()));
                    // The leader's view of mastership is the authoritative one.
                    let lead = ok.iter().find(|s| Some(s.id) == s.leader).unwrap_or(first);
                    if !lead.masters.is_empty() {
                        let m: Vec<String> = lead.masters.iter().map(|m| format!("{}→{} (gen {})", m.host, m.node, m.generation)).collect();
                        println!("masters: {}", m.join(", "));
                    }
                }
                println!("{:<28} {:<4} {:<10} {:<6} {:<8} {:<8} REVISION", "API", "ID", "STATE", "TERM", "APPLIED", "LOG");
                for (url, r) in &all {
                    match r {
                        Ok(s) => println!(
                            "{url:<28} {:<4} {:<10} {:<6} {:<8} {:<8} {}",
                            s.id,
                            s.state,
                            s.term,
                            s.applied_index.map(|i| i.to_string()).unwrap_or_default(),
                            s.last_log_index.map(|i| i.to_string()).unwrap_or_default(),
                            s.revision
                        ),
                        Err(e) => println!("{url:<28} unreachable: {e}"),
                    }
                }
            })?;
        }
    }
    Ok(())
}
