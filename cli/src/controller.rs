//! `plexus controller`: run a controller node.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use plexus_controller::node::{Node, NodeConfig};

#[derive(Args)]
pub(crate) struct ControllerCmd {
    /// This node's id (1 and up, unique in the cluster).
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// Address for the REST API.
    #[arg(long, default_value = "127.0.0.1:6543")]
    listen: SocketAddr,
    /// Address of the cluster port: Raft, membership and forwarded requests between nodes,
    /// over mutual TLS with certificates of the cluster's CA.
    #[arg(long, default_value = "127.0.0.1:6545")]
    cluster_listen: SocketAddr,
    /// Cluster address other nodes reach this one at (default: --cluster-listen).
    #[arg(long)]
    advertise: Option<String>,
    /// The cluster's CA and this node's certificate (default: DATA_DIR/pki). The first node
    /// makes the CA; give the others a copy of that directory's ca.crt and ca.key (or the
    /// same directory, on one machine).
    #[arg(long, env = "PLEXUS_PKI_DIR")]
    pki_dir: Option<PathBuf>,
    /// Where the Raft log and snapshots are kept.
    #[arg(long)]
    data_dir: PathBuf,
    /// Static cluster, this node included, by cluster address: ID=HOST:PORT,ID=HOST:PORT,...
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Join the cluster that the node whose cluster port is HOST:PORT belongs to.
    #[arg(long)]
    join: Option<String>,
    /// A join token (`plexus pki token --role join`): with --join-api and --ca, fetches the
    /// cluster's CA and token key on first start, so no files need copying.
    #[arg(long, env = "PLEXUS_JOIN_TOKEN", hide_env_values = true, requires_all = ["join", "join_api", "ca"])]
    join_token: Option<String>,
    /// A member's API (https://HOST:PORT), where the join token is presented.
    #[arg(long)]
    join_api: Option<String>,
    /// The cluster CA's certificate (its ca.crt), to trust the member the join token goes to.
    #[arg(long, env = "PLEXUS_CA")]
    ca: Option<PathBuf>,
    /// Snapshot the state and compact the log every this many entries.
    #[arg(long, default_value_t = 5000)]
    snapshot_every: u64,
    /// Where switches connect over OpenFlow, e.g. 0.0.0.0:6653.
    #[arg(long)]
    openflow_listen: Option<SocketAddr>,
    /// Serve the API over plain HTTP, not HTTPS: refused unless --listen is a loopback
    /// address. Tokens then cross it in the clear.
    #[arg(long)]
    insecure_http: bool,
    /// A further name (DNS name or IP address) for the API's certificate; repeat for more.
    #[arg(long = "api-name")]
    api_names: Vec<String>,
}

fn parse_peers(v: &[String]) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut m = BTreeMap::new();
    for p in v {
        let (id, addr) = p.split_once('=').with_context(|| format!("--peers: {p:?} is not ID=HOST:PORT"))?;
        let id: u64 = id.parse().with_context(|| format!("--peers: node id {id:?} is not a number"))?;
        if addr.parse::<SocketAddr>().is_err() {
            bail!("--peers: {addr:?} is not HOST:PORT");
        }
        if m.insert(id, addr.to_string()).is_some() {
            bail!("--peers: node id {id} appears twice");
        }
    }
    Ok(m)
}

pub(crate) async fn run(c: ControllerCmd) -> anyhow::Result<()> {
    let cfg = NodeConfig {
        id: c.id,
        listen: c.listen,
        cluster_listen: c.cluster_listen,
        advertise: c.advertise,
        pki_dir: c.pki_dir,
        data_dir: c.data_dir,
        peers: parse_peers(&c.peers)?,
        join: c.join,
        join_token: c.join_token,
        join_api: c.join_api,
        join_ca: c.ca.as_ref().map(|p| std::fs::read_to_string(p).with_context(|| format!("--ca {}", p.display()))).transpose()?,
        snapshot_every: c.snapshot_every,
        openflow_listen: c.openflow_listen,
        insecure_http: c.insecure_http,
        api_names: c.api_names,
    };
    let node = Node::start(cfg).await?;
    let scheme = if c.insecure_http { "http" } else { "https" };
    println!("plexus controller {} listening on {scheme}://{} (cluster port {})", c.id, node.addr, node.cluster_addr);
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}
