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

use super::{OnDisk, TypeConfig};

/// Creates one HTTP client per peer.
#[derive(Debug, Clone)]
pub struct HttpNetwork {
    client: reqwest::Client,
    in_flight: std::collections::HashMap<u64, std::sync::Arc<tokio::sync::Semaphore>>,
    on_disk: OnDisk,
}

impl HttpNetwork {
    /// A network over `client`, which must present this node's certificate and trust only
    /// the cluster's CA ([`cluster_client`]); the commit index it tells followers never runs
    /// ahead of `on_disk`, this node's log on its disk.
    pub fn new(client: reqwest::Client, on_disk: OnDisk) -> HttpNetwork {
        HttpNetwork { client, in_flight: Default::default(), on_disk }
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
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
    on_disk: OnDisk,
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        // One budget per peer, shared by every stream openraft opens to it.
        let in_flight = self.in_flight.entry(target).or_insert_with(|| std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT))).clone();
        Peer { target, addr: node.addr.clone(), client: self.client.clone(), in_flight, on_disk: self.on_disk.clone() }
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

/// How long a request sent to a peer may go on after openraft stopped waiting for it.
const LINGER: Duration = Duration::from_secs(5);
/// Requests to one peer still going on at once (openraft's own and those left to finish).
const IN_FLIGHT: usize = 8;
/// How long an append waits for the leader's own flush of the commit index it carries
/// before it carries the last index on disk instead (the next append brings the rest). The
/// flush started before the entry was sent, so it has nearly always ended; a stalled disk
/// must not stop the heartbeats, or the followers would elect another leader for no reason.
const COMMIT_WAIT: Duration = Duration::from_millis(20);

impl Peer {
    /// Sends one RPC. openraft gives up on an append after one heartbeat interval (100 ms)
    /// and drops the future, and a request dropped mid-flight takes its connection with it.
    /// On a loaded machine the next connection's TLS handshake could then take longer than
    /// 100 ms too, and every heartbeat after it: a new leader never reached its followers. So
    /// a request that is dropped or times out is left to finish (up to [`LINGER`]) in a task
    /// of its own, and its connection goes back to the pool for the next one. One that answers
    /// in time (nearly all) runs where it was called: a task of its own for every request
    /// would cost every write another thread hop.
    async fn call<Req, Resp, E>(&self, path: &str, req: &Req, option: &RPCOption) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = format!("https://{}/raft/{path}", self.addr);
        let net = |e: &dyn std::fmt::Display| RPCError::Network(NetworkError::new(&Msg(format!("{url}: {e}"))));
        let body = serde_json::to_vec(req).map_err(|e| net(&e))?;
        let ttl = option.hard_ttl();
        let permit = tokio::time::timeout(ttl, self.in_flight.clone().acquire_owned())
            .await
            .map_err(|_| net(&format!("{IN_FLIGHT} requests to this peer are still going on")))?
            .map_err(|e| net(&e))?;
        let request = self.client.post(&url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body).timeout(ttl.max(LINGER));
        let mut sent = Lingering(Some(Box::pin(async move {
            let _permit = permit;
            match request.send().await {
                Ok(r) => read_answer(r).await,
                Err(e) if e.is_connect() => Err(Failure::Connect(e.to_string())),
                Err(e) => Err(Failure::Other(e.to_string())),
            }
        })));
        let bytes = match tokio::time::timeout(ttl, &mut sent).await {
            Err(_) => return Err(net(&format!("no answer within {ttl:?}"))),
            Ok(Err(Failure::Connect(e))) => return Err(RPCError::Unreachable(Unreachable::new(&Msg(format!("{url}: {e}"))))),
            Ok(Err(Failure::Other(e))) => return Err(net(&e)),
            Ok(Ok(b)) => b,
        };
        let res: Result<Resp, RaftError<u64, E>> = serde_json::from_slice(&bytes).map_err(|e| net(&e))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

type Answer = Result<Vec<u8>, Failure>;

/// Why a request got no answer.
#[derive(Debug)]
enum Failure {
    /// No connection to the peer.
    Connect(String),
    /// Anything else.
    Other(String),
}

/// The most a peer's answer may hold. Answers are small (a vote, an append's outcome); a
/// bigger one is no honest peer's, and is not read into memory whole.
const MAX_ANSWER: usize = 1 << 20;

async fn read_answer(mut r: reqwest::Response) -> Answer {
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| Failure::Other(e.to_string()))? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(Failure::Other(format!("the peer's answer is over {MAX_ANSWER} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A request that, dropped before it finished, finishes in a task of its own.
struct Lingering(Option<std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>>);

impl std::future::Future for Lingering {
    type Output = Answer;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Answer> {
        let Some(f) = self.0.as_mut() else { return std::task::Poll::Pending };
        let out = std::task::ready!(f.as_mut().poll(cx));
        self.0 = None;
        std::task::Poll::Ready(out)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let (Some(f), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) else { return };
        let started = std::time::Instant::now();
        rt.spawn(async move {
            let done = tokio::time::timeout(LINGER, f).await;
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                ok = matches!(done, Ok(Ok(_))),
                "a Raft request finished after openraft stopped waiting"
            );
        });
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        // A follower applies what it is told is committed: only what is on this leader's disk
        // too (see `OnDisk`). The last entry on disk is an entry of this leader's log, so the
        // smaller of the two is a committed entry of it.
        if let Some(c) = rpc.leader_commit {
            let covered = matches!(tokio::time::timeout(COMMIT_WAIT, self.on_disk.covers(c.index)).await, Ok(Ok(())));
            if let Some((stalled, first)) = self.on_disk.stalled(covered) {
                let e = format!("this node's disk has not flushed what it committed for {stalled:?}: it stops leading");
                if first {
                    tracing::error!("{e}");
                }
                return Err(RPCError::Network(NetworkError::new(&Msg(e))));
            }
            rpc.leader_commit = rpc.leader_commit.min(self.on_disk.last());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A peer with the cluster's certificate that answers a vote with `body`, and how many
    /// bytes of it it managed to write.
    async fn peer_answering(ca: &plexus_pki::Ca, body: Vec<u8>) -> (String, tokio::task::JoinHandle<usize>) {
        let id = ca.issue("node-2", &["127.0.0.1".into()], plexus_pki::Usage::Node).unwrap();
        let tls = tokio_rustls::TlsAcceptor::from(id.server_config(Some(plexus_pki::CLUSTER_ROLE)).unwrap());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let served = tokio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            let mut s = tls.accept(tcp).await.unwrap();
            let mut req = vec![0u8; 64 << 10];
            let _ = s.read(&mut req).await;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
            let mut sent = 0;
            if s.write_all(head.as_bytes()).await.is_ok() {
                for c in body.chunks(16 << 10) {
                    if s.write_all(c).await.is_err() {
                        break;
                    }
                    sent += c.len();
                }
            }
            sent
        });
        (addr, served)
    }

    /// A peer is trusted with the cluster's certificate, not with the node's memory: an answer
    /// bigger than any honest one is refused once it passes the bound, not read whole.
    #[tokio::test]
    async fn an_oversized_answer_from_a_peer_is_refused_not_read_whole() {
        plexus_pki::install_crypto_provider();
        let ca = plexus_pki::Ca::create().unwrap();
        let me = ca.issue("node-1", &["127.0.0.1".into()], plexus_pki::Usage::Node).unwrap();
        let mut net = HttpNetwork::new(cluster_client(&me).unwrap(), super::super::ondisk::channel(None).1);
        let option = RPCOption::new(Duration::from_secs(5));
        let vote = VoteRequest { vote: openraft::Vote::new(1, 1), last_log_id: None };

        let (addr, served) = peer_answering(&ca, vec![b' '; 64 << 20]).await;
        let mut peer = net.new_client(2, &BasicNode { addr }).await;
        let e = peer.vote(vote.clone(), option.clone()).await.unwrap_err();
        assert!(e.to_string().contains("over 1048576 bytes"), "{e}");
        let sent = served.await.unwrap();
        assert!(sent < 16 << 20, "the node stopped reading early: the peer got {sent} bytes of 64 MiB out");

        // An honest answer of the same peer still goes through.
        let honest = serde_json::to_vec(&Ok::<_, RaftError<u64>>(VoteResponse::new(openraft::Vote::new(1, 2), None, false))).unwrap();
        let (addr, _served) = peer_answering(&ca, honest).await;
        let mut peer = net.new_client(2, &BasicNode { addr }).await;
        let r = peer.vote(vote, option).await.unwrap();
        assert!(!r.vote_granted);
    }
}
