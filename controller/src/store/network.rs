//! Raft RPCs between controller nodes: JSON over HTTPS with mutual TLS to each node's cluster
//! port (`POST /raft/append|vote|snapshot`). A node that cannot be reached is reported as
//! unreachable so openraft backs off instead of retrying in a tight loop.

use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::TypeConfig;

/// Creates one HTTP client per peer.
#[derive(Debug, Clone)]
pub struct HttpNetwork {
    client: reqwest::Client,
}

impl HttpNetwork {
    /// A network over `client`, which must present this node's certificate and trust only
    /// the cluster's CA ([`cluster_client`]).
    pub fn new(client: reqwest::Client) -> HttpNetwork {
        HttpNetwork { client }
    }
}

/// An HTTPS client for the cluster port: TLS 1.3, the cluster's CA as the only root, `id` as
/// its client certificate.
pub fn cluster_client(id: &plexus_pki::Identity) -> Result<reqwest::Client, String> {
    cluster_client_from(id, None)
}

/// [`cluster_client`] whose connections leave from `local` (a node's own cluster address):
/// peers and firewalls then see a node's traffic under the address it is known by, not
/// whichever address the route would pick.
pub fn cluster_client_from(id: &plexus_pki::Identity, local: Option<std::net::IpAddr>) -> Result<reqwest::Client, String> {
    let tls = id.client_config().map_err(|e| e.to_string())?;
    plexus_api::client::http_builder()
        .use_preconfigured_tls(tls)
        .local_address(local)
        .connect_timeout(Duration::from_millis(500))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())
}

/// The connection to one peer.
#[derive(Debug)]
pub struct Peer {
    target: u64,
    addr: String,
    client: reqwest::Client,
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer { target, addr: node.addr.clone(), client: self.client.clone() }
    }
}

#[derive(Debug)]
struct Msg(String);
impl std::fmt::Display for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Msg {}

impl Peer {
    async fn call<Req, Resp, E>(&self, path: &str, req: &Req, option: &RPCOption) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = format!("https://{}/raft/{path}", self.addr);
        let resp = self.client.post(&url).timeout(option.hard_ttl()).json(req).send().await.map_err(|e| {
            if e.is_connect() {
                RPCError::Unreachable(Unreachable::new(&Msg(format!("{url}: {e}"))))
            } else {
                RPCError::Network(NetworkError::new(&Msg(format!("{url}: {e}"))))
            }
        })?;
        let res: Result<Resp, RaftError<u64, E>> = resp.json().await.map_err(|e| RPCError::Network(NetworkError::new(&Msg(format!("{url}: {e}")))))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call("vote", &rpc, &option).await
    }
}
