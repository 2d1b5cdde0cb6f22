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
    /// Where the API and Raft RPCs listen.
    pub listen: SocketAddr,
    /// The address other nodes and clients use (defaults to `listen`).
    pub advertise: Option<String>,
    /// Where the log and snapshots live.
    pub data_dir: PathBuf,
    /// A static cluster: every member's id and address, this node included. The member with
    /// the lowest id forms the cluster on first start.
    pub peers: BTreeMap<u64, String>,
    /// Join an existing cluster through any of its nodes.
    pub join: Option<String>,
    /// Take a snapshot (and compact the log) every this many entries.
    pub snapshot_every: u64,
    /// Where switches connect over OpenFlow (none: this node programs no switch).
    pub openflow_listen: Option<SocketAddr>,
}

/// A running node.
pub struct Node {
    /// The Raft node.
    pub raft: Raft,
    /// The replicated state.
    pub state: SharedState,
    /// The address bound.
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
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
        let log = LogStore::open(&cfg.data_dir).map_err(|e| dd(&e))?;
        let sm = StateMachine::open(&cfg.data_dir).map_err(|e| dd(&e))?;
        let state = sm.state();
        let revisions = sm.revisions();
        let config = openraft::Config {
            cluster_name: "plexus".into(),
            // Loaded two-core machines delay heartbeats by hundreds of milliseconds; shorter
            // timeouts than these cause needless elections there.
            heartbeat_interval: 150,
            election_timeout_min: 1000,
            election_timeout_max: 2000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: (cfg.snapshot_every / 5).max(1),
            purge_batch_size: 1,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(|e| NodeError::Raft(e.to_string()))?);
        let raft = Raft::new(cfg.id, config, HttpNetwork::new(), log, sm).await.map_err(|e| NodeError::Raft(e.to_string()))?;

        let listener = tokio::net::TcpListener::bind(cfg.listen).await.map_err(|e| NodeError::Listen { addr: cfg.listen, reason: e.to_string() })?;
        let addr = listener.local_addr().map_err(|e| NodeError::Listen { addr: cfg.listen, reason: e.to_string() })?;
        let advertise = cfg.advertise.clone().unwrap_or_else(|| addr.to_string());
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(1)).build().unwrap_or_default();
        let lease = crate::mastership::Lease::new(cfg.id, raft.clone());
        let switches = match cfg.openflow_listen {
            Some(a) => {
                let l = plexus_ovs::openflow::Listener::bind_tcp(a).await.map_err(|e| NodeError::Listen { addr: a, reason: e.to_string() })?;
                tracing::info!(addr = ?l.local_addr(), "switches connect here over OpenFlow");
                crate::mastership::spawn_assigner(cfg.id, raft.clone(), state.clone(), http.clone());
                Some(crate::switches::SwitchManager::spawn(l, state.clone(), revisions.clone(), Duration::from_secs(10), Some(lease.clone())))
            }
            None => None,
        };
        let app = server::router(AppState { id: cfg.id, raft: raft.clone(), state: state.clone(), revisions, http: http.clone(), switches, lease });
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "http server stopped");
            }
        });
        tracing::info!(id = cfg.id, %addr, data_dir = %cfg.data_dir.display(), "controller node listening");

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
        Ok(Node { raft, state, addr, server })
    }

    /// Stops the node (the data directory keeps everything).
    pub async fn shutdown(self) {
        let _ = self.raft.shutdown().await;
        self.server.abort();
    }
}

async fn join(http: &reqwest::Client, via: &str, id: u64, addr: &str) -> Result<(), NodeError> {
    let url = format!("http://{via}/v1/cluster/members");
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
