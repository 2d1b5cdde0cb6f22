//! Starting a controller node: storage, Raft, HTTP server, and cluster formation.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;

use plexus_api::Member;

use crate::server::{self, AppState};
use crate::store::{HttpNetwork, LogStore, Raft, SharedState, StateMachine};

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory cannot be used.
    #[error("data directory {dir}: {reason}")]
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// Raft refused to start or to form the cluster.
    #[error("raft: {0}")]
    Raft(String),
    /// Joining an existing cluster failed.
    #[error("joining through {via}: {reason}")]
    Join {
        /// The node asked.
        via: String,
        /// Why.
        reason: String,
    },
    /// The configuration is inconsistent.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node id, unique in the cluster (1 and up).
    pub id: u64,
    /// Where the REST API listens.
    pub listen: SocketAddr,
    /// Where the cluster port listens: Raft, membership and forwarded requests between
    /// nodes, over mutual TLS.
    pub cluster_listen: SocketAddr,
    /// The cluster address other nodes reach this one at (defaults to `cluster_listen`).
    pub advertise: Option<String>,
    /// Where the cluster's CA and this node's certificate live (`data_dir/pki` if absent).
    /// A directory without a CA gets one: the first node of a cluster makes it; the others
    /// must be given the same directory's CA (copied, or shared on one machine).
    pub pki_dir: Option<PathBuf>,
    /// Where the log and snapshots live.
    pub data_dir: PathBuf,
    /// A static cluster: every member's id and cluster address, this node included. The member with
    /// the lowest id forms the cluster on first start.
    pub peers: BTreeMap<u64, String>,
    /// Join an existing cluster through any of its nodes' cluster address.
    pub join: Option<String>,
    /// With `join` and no CA in the PKI directory: trade this join token for the cluster's
    /// CA and token key at [`NodeConfig::join_api`], trusting the CA certificate in
    /// [`NodeConfig::join_ca`].
    pub join_token: Option<String>,
    /// The API of a member (`https://HOST:PORT`), for the join token.
    pub join_api: Option<String>,
    /// The cluster CA's certificate (PEM), for the join token.
    pub join_ca: Option<String>,
    /// Take a snapshot (and compact the log) every this many entries.
    pub snapshot_every: u64,
    /// Where switches connect over OpenFlow (none: this node programs no switch).
    pub openflow_listen: Option<SocketAddr>,
    /// Serve the API over plain HTTP instead of HTTPS: only on a loopback address, and only
    /// when asked for (benchmarks measuring what TLS costs).
    pub insecure_http: bool,
    /// Further names (DNS names or IP addresses) the API's certificate carries, besides the
    /// listen address.
    pub api_names: Vec<String>,
}

/// The file in the PKI directory that holds an admin token, written on a cluster's first
/// start so its operator has a way in.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// A running node.
pub struct Node {
    /// The Raft node.
    pub raft: Raft,
    /// The replicated state.
    pub state: SharedState,
    /// The API address bound.
    pub addr: SocketAddr,
    /// The cluster port bound.
    pub cluster_addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    cluster_server: tokio::task::JoinHandle<()>,
    /// Raft, the cluster port and the switch-master assigner run here, on a thread of its
    /// own: a node busy programming a thousand switches must still answer heartbeats and
    /// health probes on time, or its peers take it for dead and move its switches (which
    /// makes more work, and more missed probes). One thread: every hand-over between their
    /// tasks is then a task switch, not a wake-up of another thread, and a write makes a
    /// dozen of them.
    _cluster_rt: ClusterRuntime,
}

/// The runtime of a node's cluster duties (see [`Node`]), shut down without waiting when the
/// node goes: dropping a runtime from async code would panic.
struct ClusterRuntime {
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl ClusterRuntime {
    fn new(id: u64) -> Result<ClusterRuntime, NodeError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("cluster-{id}"))
            .enable_all()
            .build()
            .map_err(|e| NodeError::Raft(format!("cannot start the cluster runtime: {e}")))?;
        Ok(ClusterRuntime { handle: rt.handle().clone(), rt: Some(rt) })
    }
}

impl Drop for ClusterRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Node {
    /// Starts a node and, on first start, forms or joins its cluster.
    pub async fn start(cfg: NodeConfig) -> Result<Node, NodeError> {
        if cfg.id == 0 {
            return Err(NodeError::Invalid { field: "id", reason: "node ids start at 1".into() });
        }
        if !cfg.peers.is_empty() && !cfg.peers.contains_key(&cfg.id) {
            return Err(NodeError::Invalid { field: "peers", reason: format!("the peer list does not name this node ({})", cfg.id) });
        }
        if !cfg.peers.is_empty() && cfg.join.is_some() {
            return Err(NodeError::Invalid { field: "join", reason: "give either a static peer list or an address to join, not both".into() });
        }
        let dd = |e: &dyn std::fmt::Display| NodeError::DataDir { dir: cfg.data_dir.clone(), reason: e.to_string() };
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| dd(&e))?;
        let log = LogStore::open(&cfg.data_dir, cfg.id).map_err(|e| dd(&e))?;
        let on_disk = log.on_disk();
        let sm = StateMachine::open(&cfg.data_dir, on_disk.clone()).map_err(|e| dd(&e))?;
        let state = sm.state();
        let revisions = sm.revisions();
        let config = openraft::Config {
            cluster_name: "plexus".into(),
            // A leader's death costs at least the vote refusal (openraft's leader lease, the
            // timeout's upper bound) plus a candidate's second try: about 1 s with these. The
            // failover bench's soak (both cores busy for 10 minutes) is what shows they cause
            // no needless elections on a loaded two-core machine.
            heartbeat_interval: 100,
            election_timeout_min: 300,
            election_timeout_max: 600,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: (cfg.snapshot_every / 5).max(1),
            purge_batch_size: 1,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(|e| NodeError::Raft(e.to_string()))?);
        let cluster_listener =
            tokio::net::TcpListener::bind(cfg.cluster_listen).await.map_err(|e| NodeError::Listen { addr: cfg.cluster_listen, reason: e.to_string() })?;
        let cluster_addr = cluster_listener.local_addr().map_err(|e| NodeError::Listen { addr: cfg.cluster_listen, reason: e.to_string() })?;
        let advertise = cfg.advertise.clone().unwrap_or_else(|| cluster_addr.to_string());
        // This node's certificate names it and the address its peers dial.
        let pki_dir = cfg.pki_dir.clone().unwrap_or_else(|| cfg.data_dir.join("pki"));
        let pki = pki_dir.clone();
        let host = advertise.rsplit_once(':').map_or(advertise.as_str(), |(h, _)| h).trim_matches(['[', ']']).to_string();
        if let Some(token) = &cfg.join_token {
            fetch_cluster_secrets(&cfg, token, &pki_dir).await?;
        }
        // File I/O, and a short wait when another node is writing the CA: off the runtime.
        let name = format!("node-{}", cfg.id);
        let identity = tokio::task::spawn_blocking(move || plexus_pki::Ca::identity_in(&pki_dir, &name, &[host], plexus_pki::Usage::Node))
            .await
            .map_err(|e| NodeError::Invalid { field: "pki_dir", reason: e.to_string() })?
            .map_err(|e| NodeError::Invalid { field: "pki_dir", reason: e.to_string() })?;
        let tls = identity.server_config(Some(plexus_pki::CLUSTER_ROLE)).map_err(|e| NodeError::Invalid { field: "pki_dir", reason: e.to_string() })?;
        let local = Some(cluster_addr.ip()).filter(|ip| !ip.is_unspecified());
        let http = crate::store::cluster_client_from(&identity, local).map_err(|e| NodeError::Invalid { field: "pki_dir", reason: e })?;
        // Raft's own client, so that its connections live on the cluster runtime too.
        let raft_http = crate::store::cluster_client_from(&identity, local).map_err(|e| NodeError::Invalid { field: "pki_dir", reason: e })?;
        let cluster_rt = ClusterRuntime::new(cfg.id)?;
        let rt = cluster_rt.handle.clone();
        // Raft spawns its core where it is created.
        let (id, network) = (cfg.id, HttpNetwork::new(raft_http.clone(), on_disk));
        let raft = rt
            .spawn(async move { Raft::new(id, config, network, log, sm).await })
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?
            .map_err(|e| NodeError::Raft(e.to_string()))?;

        if cfg.insecure_http && !cfg.listen.ip().is_loopback() {
            return Err(NodeError::Invalid { field: "insecure_http", reason: format!("plain HTTP is allowed only on a loopback address, not {}", cfg.listen) });
        }
        let (api_tls, tokens) = api_credentials(&cfg).await?;
        let listener = tokio::net::TcpListener::bind(cfg.listen).await.map_err(|e| NodeError::Listen { addr: cfg.listen, reason: e.to_string() })?;
        let addr = listener.local_addr().map_err(|e| NodeError::Listen { addr: cfg.listen, reason: e.to_string() })?;
        let (lease, proposer) = {
            let _on = rt.enter();
            (crate::mastership::Lease::new(cfg.id, raft.clone()), crate::store::Proposer::spawn(raft.clone()))
        };
        let switches = match cfg.openflow_listen {
            Some(a) => {
                let l = plexus_ovs::openflow::Listener::bind_tcp(a).await.map_err(|e| NodeError::Listen { addr: a, reason: e.to_string() })?;
                tracing::info!(addr = ?l.local_addr(), "switches connect here over OpenFlow");
                {
                    let _on = rt.enter();
                    crate::mastership::spawn_assigner(cfg.id, raft.clone(), state.clone(), raft_http.clone());
                }
                // Switches connect with TLS (`ssl:` targets) and a certificate naming their host.
                let of_tls = identity.server_config(None).map_err(|e| NodeError::Invalid { field: "pki_dir", reason: e.to_string() })?;
                Some(crate::switches::SwitchManager::spawn(l, state.clone(), revisions.clone(), Duration::from_secs(10), Some(lease.clone()), Some(of_tls)))
            }
            None => None,
        };
        let st = AppState {
            id: cfg.id,
            raft: raft.clone(),
            proposer,
            state: state.clone(),
            revisions,
            http: http.clone(),
            switches,
            lease,
            tokens,
            apply_watch: Default::default(),
            pki_dir: pki,
            traces: Default::default(),
            watch_cache: Default::default(),
        };
        let cluster_app = server::cluster_router(st.clone());
        let app = server::router(st);
        let server = tokio::spawn(crate::serve::serve(listener, api_tls, app));
        // The listener moves to the cluster runtime's reactor, or its accepts would wait for
        // the busy one's.
        let cluster_listener = cluster_listener.into_std().map_err(|e| NodeError::Listen { addr: cluster_addr, reason: e.to_string() })?;
        let cluster_server = rt.spawn(async move {
            match tokio::net::TcpListener::from_std(cluster_listener) {
                Ok(l) => crate::serve::serve(l, Some(tls), cluster_app).await,
                Err(e) => tracing::error!(error = %e, "cannot serve the cluster port"),
            }
        });
        tracing::info!(id = cfg.id, %addr, %cluster_addr, data_dir = %cfg.data_dir.display(), "controller node listening");

        let initialized = raft.is_initialized().await.map_err(|e| NodeError::Raft(e.to_string()))?;
        if !initialized {
            if let Some(via) = &cfg.join {
                join(&http, via, cfg.id, &advertise).await?;
            } else if cfg.peers.is_empty() {
                let members = BTreeMap::from([(cfg.id, BasicNode { addr: advertise.clone() })]);
                raft.initialize(members).await.map_err(|e| NodeError::Raft(e.to_string()))?;
                tracing::info!(id = cfg.id, "formed a one-node cluster");
            } else if cfg.peers.keys().next() == Some(&cfg.id) {
                let members = cfg.peers.iter().map(|(id, a)| (*id, BasicNode { addr: a.clone() })).collect::<BTreeMap<_, _>>();
                raft.initialize(members).await.map_err(|e| NodeError::Raft(e.to_string()))?;
                tracing::info!(id = cfg.id, members = cfg.peers.len(), "formed the cluster from the static peer list");
            }
        }
        Ok(Node { raft, state, addr, cluster_addr, server, cluster_server, _cluster_rt: cluster_rt })
    }

    /// Stops the node (the data directory keeps everything).
    pub async fn shutdown(self) {
        let _ = self.raft.shutdown().await;
        self.server.abort();
        self.cluster_server.abort();
    }
}

/// Trades a join token for the cluster's CA and token key, written to `dir` (unless it has
/// a CA already: a restarted node keeps what it has).
async fn fetch_cluster_secrets(cfg: &NodeConfig, token: &str, dir: &std::path::Path) -> Result<(), NodeError> {
    let bad = |field: &'static str, reason: String| NodeError::Invalid { field, reason };
    if dir.join("ca.key").exists() {
        return Ok(());
    }
    let api = cfg.join_api.as_deref().ok_or_else(|| bad("join_api", "a join token needs the API of a member to present it to".into()))?;
    let ca = cfg.join_ca.clone().ok_or_else(|| bad("join_ca", "a join token needs the cluster CA's certificate, to trust the member".into()))?;
    let creds = plexus_api::Credentials { ca_pem: Some(ca), token: Some(token.to_string()) };
    let http =
        creds.http().and_then(|b| b.build().map_err(|e| plexus_api::ClientError::Credentials(e.to_string()))).map_err(|e| bad("join_ca", e.to_string()))?;
    let url = format!("{}/v1/bootstrap/node", api.trim_end_matches('/'));
    let r = http.post(&url).timeout(Duration::from_secs(30)).send().await.map_err(|e| NodeError::Join { via: api.into(), reason: e.to_string() })?;
    if !r.status().is_success() {
        let reason = format!("{}: {}", r.status(), r.text().await.unwrap_or_default());
        return Err(NodeError::Join { via: api.into(), reason });
    }
    let got: plexus_api::NodeCredentials = r.json().await.map_err(|e| NodeError::Join { via: api.into(), reason: e.to_string() })?;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || plexus_pki::Ca::install(&dir, &got.ca_pem, &got.ca_key_pem, &got.token_key))
        .await
        .map_err(|e| bad("pki_dir", e.to_string()))?
        .map_err(|e| bad("pki_dir", e.to_string()))?;
    tracing::info!(via = api, "joined with a join token: the cluster's CA and token key are in the PKI directory");
    Ok(())
}

/// The API's TLS configuration (none when plain HTTP was asked for) and the cluster's token
/// key; on a cluster's first start, an admin token in [`ADMIN_TOKEN_FILE`].
async fn api_credentials(cfg: &NodeConfig) -> Result<(Option<Arc<tokio_rustls::rustls::ServerConfig>>, Arc<plexus_pki::TokenKey>), NodeError> {
    let bad = |e: &dyn std::fmt::Display| NodeError::Invalid { field: "pki_dir", reason: e.to_string() };
    let dir = cfg.pki_dir.clone().unwrap_or_else(|| cfg.data_dir.join("pki"));
    let mut names = cfg.api_names.clone();
    if cfg.listen.ip().is_unspecified() {
        names.extend(["localhost".to_string(), "127.0.0.1".into(), "::1".into()]);
    } else {
        names.push(cfg.listen.ip().to_string());
    }
    let (name, insecure) = (format!("api-{}", cfg.id), cfg.insecure_http);
    tokio::task::spawn_blocking(move || {
        let tokens = plexus_pki::TokenKey::open_or_create(&dir).map_err(|e| bad(&e))?;
        let admin = dir.join(ADMIN_TOKEN_FILE);
        if !admin.exists() {
            let t = tokens.issue(&plexus_pki::Role::Admin).map_err(|e| bad(&e))?;
            match plexus_pki::write_secret(&admin, &t) {
                Ok(()) => tracing::info!(file = %admin.display(), "wrote an admin token"),
                // Another node starting at the same moment wrote it first: theirs stands.
                Err(_) if admin.exists() => {}
                Err(e) => return Err(bad(&e)),
            }
        }
        let tls = if insecure {
            tracing::warn!("the API serves plain HTTP on loopback, as asked: tokens cross it in the clear");
            None
        } else {
            Some(plexus_pki::Ca::identity_in(&dir, &name, &names, plexus_pki::Usage::Api).and_then(|id| id.api_server_config()).map_err(|e| bad(&e))?)
        };
        Ok((tls, Arc::new(tokens)))
    })
    .await
    .map_err(|e| bad(&e))?
}

async fn join(http: &reqwest::Client, via: &str, id: u64, addr: &str) -> Result<(), NodeError> {
    let url = format!("https://{via}/cluster/members");
    let mut last = String::new();
    for _ in 0..50 {
        match http.post(&url).json(&Member { id, addr: addr.to_string() }).timeout(Duration::from_secs(30)).send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(id, via, "joined the cluster");
                return Ok(());
            }
            Ok(r) => last = format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(NodeError::Join { via: via.to_string(), reason: last })
}

// openraft's `Raft` has no `Debug`: show what identifies this value.
impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").finish_non_exhaustive()
    }
}
