//! A typed HTTP client for the controller's REST API, used by the CLI and the agent. It is
//! given every controller node's URL and moves on to the next when one does not answer.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Endpoint, EndpointLabels, EndpointSpec, Host, HostSpec, Network, NetworkSpec, Policy, PolicySpec, Problem, Router, RouterSpec};

/// One member of the controller cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Member {
    /// Node id.
    pub id: u64,
    /// API and Raft address.
    pub addr: String,
}

/// Which controller node masters a host's switch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Mastership {
    /// The host.
    pub host: String,
    /// The node that masters its switch.
    pub node: u64,
    /// OpenFlow role generation id of that choice: it only grows, so a switch refuses an
    /// older master.
    pub generation: u64,
}

/// `GET /v1/cluster`: one node's view of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ClusterStatus {
    /// The node answering.
    pub id: u64,
    /// Its role: Leader, Follower, Candidate, Learner.
    pub state: String,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Current term.
    pub term: u64,
    /// Voting members.
    pub members: Vec<Member>,
    /// Non-voting members catching up.
    #[serde(default)]
    pub learners: Vec<Member>,
    /// Index of the last entry applied here.
    pub applied_index: Option<u64>,
    /// Index of the last entry in this node's log.
    pub last_log_index: Option<u64>,
    /// Store revision of the model here.
    pub revision: u64,
    /// Index of the last log entry in this node's snapshot.
    pub snapshot_index: Option<u64>,
    /// Index up to which this node's log has been compacted away.
    pub purged_index: Option<u64>,
    /// Which node masters which switch.
    #[serde(default)]
    pub masters: Vec<Mastership>,
}

/// `GET /v1/cluster/state`: a digest of one node's replica.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct StateDigest {
    /// The node answering.
    pub node: u64,
    /// The revision of its model.
    pub revision: u64,
    /// SHA-256 of its model's serialized form (hex).
    pub sha256: String,
}

/// `POST /v1/bootstrap/agent`: what a host's agent gets for its bootstrap token.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AgentCredentials {
    /// The host.
    pub host: String,
    /// Its agent token.
    pub token: String,
    /// Its switch certificate (PEM), naming `HOST.hosts.plexus`.
    pub certificate_pem: String,
    /// The certificate's private key (PEM).
    pub private_key_pem: String,
    /// The cluster CA's certificate (PEM).
    pub ca_pem: String,
}

/// `POST /v1/bootstrap/node`: what a joining controller node gets for its join token.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct NodeCredentials {
    /// The cluster CA's certificate (PEM).
    pub ca_pem: String,
    /// The cluster CA's private key (PEM).
    pub ca_key_pem: String,
    /// The token key (hex).
    pub token_key: String,
}

// Secrets: Debug shows neither keys nor tokens.
impl std::fmt::Debug for AgentCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCredentials").field("host", &self.host).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCredentials").finish_non_exhaustive()
    }
}

/// Errors of the API client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The controller refused the request.
    #[error("{} ({}){}", .0.detail, .0.status, .0.field.as_deref().map(|f| format!(" [field {f}]")).unwrap_or_default())]
    Problem(Problem),
    /// No controller node answered.
    #[error("no controller answered: {0}")]
    Unreachable(String),
    /// The answer was not what the API documents.
    #[error("unexpected answer from {url}: {reason}")]
    Decode {
        /// The URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The URL list is unusable.
    #[error("invalid API URL {0:?}: use https://HOST:PORT[,https://HOST:PORT…]")]
    BadUrl(String),
    /// The CA or the token cannot be used.
    #[error("credentials: {0}")]
    Credentials(String),
}

/// The client.
#[derive(Debug, Clone)]
pub struct Client {
    bases: Vec<String>,
    http: reqwest::Client,
}

/// A builder for any HTTP client in Plexus. Plexus's TLS uses the `ring` provider only, and
/// reqwest refuses to build a client until a provider is installed, so this installs it first.
/// Plexus trusts no system roots (its channels are under its own CA), and a minimal container
/// may have none to load, so the client starts with a TLS configuration that trusts nothing;
/// a caller that speaks TLS replaces it (`use_preconfigured_tls`) with one holding its CA.
pub fn http_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let none = rustls::ClientConfig::builder().with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth();
    reqwest::Client::builder().use_preconfigured_tls(none)
}

/// What a client proves and trusts: the cluster's CA (whose certificates the API's HTTPS
/// server presents) and a bearer token.
#[derive(Clone, Default)]
pub struct Credentials {
    /// The cluster CA's certificate (PEM): the only issuer the client trusts.
    pub ca_pem: Option<String>,
    /// The bearer token sent with every request.
    pub token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Credentials").field("ca", &self.ca_pem.is_some()).field("token", &self.token.is_some()).finish()
    }
}

impl Credentials {
    /// From the CA file at `ca` and the token `token` (as the CLI takes them, from flags or
    /// `PLEXUS_CA` and `PLEXUS_TOKEN`).
    pub fn from_files(ca: Option<&std::path::Path>, token: Option<&str>) -> Result<Credentials, ClientError> {
        let ca_pem = ca.map(|p| std::fs::read_to_string(p).map_err(|e| ClientError::Credentials(format!("CA file {}: {e}", p.display())))).transpose()?;
        let token = token.map(str::trim).filter(|t| !t.is_empty()).map(str::to_string);
        Ok(Credentials { ca_pem, token })
    }

    /// An HTTP client that trusts only the CA (if given) and sends the token (if given).
    pub fn http(&self) -> Result<reqwest::ClientBuilder, ClientError> {
        let mut b = http_builder();
        if let Some(ca) = &self.ca_pem {
            let tls = plexus_pki::api_client_config(ca).map_err(|e| ClientError::Credentials(e.to_string()))?;
            b = b.use_preconfigured_tls(tls);
        }
        if let Some(t) = &self.token {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| ClientError::Credentials("the token holds characters no HTTP header may".into()))?;
            v.set_sensitive(true);
            b = b.default_headers(reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, v)]));
        }
        Ok(b)
    }
}

impl Client {
    /// A client for `urls` (one or more comma-separated `https://HOST:PORT`) with `creds`.
    pub fn new(urls: &str, creds: &Credentials) -> Result<Client, ClientError> {
        let bases: Vec<String> = urls.split(',').map(|u| u.trim().trim_end_matches('/').to_string()).filter(|u| !u.is_empty()).collect();
        if bases.is_empty() || bases.iter().any(|b| !b.starts_with("http://") && !b.starts_with("https://")) {
            return Err(ClientError::BadUrl(urls.into()));
        }
        if bases.iter().any(|b| b.starts_with("https://")) && creds.ca_pem.is_none() {
            return Err(ClientError::Credentials("an https:// API needs the cluster's CA certificate: give --ca or PLEXUS_CA".into()));
        }
        let http = creds
            .http()?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        Ok(Client { bases, http })
    }

    async fn call<T: DeserializeOwned>(&self, method: reqwest::Method, path: &str, body: Option<&(impl Serialize + ?Sized)>) -> Result<Option<T>, ClientError> {
        self.call_if(method, path, body, None).await
    }

    /// Like `call`, with `If-Match: REVISION` when given: the write applies only to the
    /// object at that revision (409 otherwise), so a read-modify-write loses nobody's change.
    async fn call_if<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        if_match: Option<u64>,
    ) -> Result<Option<T>, ClientError> {
        let mut last = String::new();
        for base in &self.bases {
            let url = format!("{base}{path}");
            let mut req = self.http.request(method.clone(), &url);
            if let Some(r) = if_match {
                req = req.header(reqwest::header::IF_MATCH, r.to_string());
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{url}: {e}");
                    continue;
                }
            };
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| ClientError::Decode { url: url.clone(), reason: e.to_string() })?;
            if status.as_u16() == 503 {
                // This node has no quorum or no leader: another may.
                last = format!("{url}: {}", String::from_utf8_lossy(&bytes));
                continue;
            }
            if !status.is_success() {
                let p: Problem =
                    serde_json::from_slice(&bytes).unwrap_or_else(|_| Problem::new(status.as_u16(), "error", String::from_utf8_lossy(&bytes).into_owned()));
                return Err(ClientError::Problem(p));
            }
            if status.as_u16() == 204 || bytes.is_empty() {
                return Ok(None);
            }
            return serde_json::from_slice(&bytes).map(Some).map_err(|e| ClientError::Decode { url, reason: e.to_string() });
        }
        Err(ClientError::Unreachable(last))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<T>(reqwest::Method::GET, path, None::<&()>).await?.ok_or_else(|| ClientError::Decode { url: path.into(), reason: "empty body".into() })
    }

    async fn send<T: DeserializeOwned>(&self, method: reqwest::Method, path: &str, body: &(impl Serialize + ?Sized)) -> Result<T, ClientError> {
        self.call::<T>(method, path, Some(body)).await?.ok_or_else(|| ClientError::Decode { url: path.into(), reason: "empty body".into() })
    }

    /// All networks.
    pub async fn networks(&self) -> Result<Vec<Network>, ClientError> {
        self.get("/v1/networks").await
    }
    /// One network.
    pub async fn network(&self, name: &str) -> Result<Network, ClientError> {
        self.get(&format!("/v1/networks/{name}")).await
    }
    /// Creates a network.
    pub async fn create_network(&self, spec: &NetworkSpec) -> Result<Network, ClientError> {
        self.send(reqwest::Method::POST, "/v1/networks", spec).await
    }
    /// Deletes a network (with its endpoints if `force`).
    pub async fn delete_network(&self, name: &str, force: bool) -> Result<(), ClientError> {
        self.call::<()>(reqwest::Method::DELETE, &format!("/v1/networks/{name}?force={force}"), None::<&()>).await.map(|_| ())
    }
    /// A network's endpoints.
    pub async fn endpoints(&self, network: &str) -> Result<Vec<Endpoint>, ClientError> {
        self.get(&format!("/v1/networks/{network}/endpoints")).await
    }
    /// One endpoint.
    pub async fn endpoint(&self, network: &str, id: &str) -> Result<Endpoint, ClientError> {
        self.get(&format!("/v1/networks/{network}/endpoints/{id}")).await
    }
    /// Creates an endpoint.
    pub async fn create_endpoint(&self, network: &str, spec: &EndpointSpec) -> Result<Endpoint, ClientError> {
        self.send(reqwest::Method::POST, &format!("/v1/networks/{network}/endpoints"), spec).await
    }
    /// Deletes an endpoint.
    pub async fn delete_endpoint(&self, network: &str, id: &str) -> Result<(), ClientError> {
        self.call::<()>(reqwest::Method::DELETE, &format!("/v1/networks/{network}/endpoints/{id}"), None::<&()>).await.map(|_| ())
    }
    /// Replaces an endpoint's labels.
    pub async fn set_endpoint_labels(&self, network: &str, id: &str, labels: &std::collections::BTreeMap<String, String>) -> Result<Endpoint, ClientError> {
        let body = EndpointLabels { labels: labels.clone() };
        self.send(reqwest::Method::PUT, &format!("/v1/networks/{network}/endpoints/{id}/labels"), &body).await
    }
    /// Replaces an endpoint's published ports.
    pub async fn set_endpoint_publish(&self, network: &str, id: &str, publish: &[crate::PublishedPort]) -> Result<Endpoint, ClientError> {
        let body = crate::EndpointPublish { publish: publish.to_vec() };
        self.send(reqwest::Method::PUT, &format!("/v1/networks/{network}/endpoints/{id}/publish"), &body).await
    }
    /// All policies.
    pub async fn policies(&self) -> Result<Vec<Policy>, ClientError> {
        self.get("/v1/policies").await
    }
    /// One policy.
    pub async fn policy(&self, name: &str) -> Result<Policy, ClientError> {
        self.get(&format!("/v1/policies/{name}")).await
    }
    /// Creates a policy.
    pub async fn create_policy(&self, spec: &PolicySpec) -> Result<Policy, ClientError> {
        self.send(reqwest::Method::POST, "/v1/policies", spec).await
    }
    /// What a policy did, from the switches' counters.
    pub async fn policy_counters(&self, name: &str) -> Result<crate::PolicyCounters, ClientError> {
        self.get(&format!("/v1/policies/{name}/counters")).await
    }
    /// Deletes a policy.
    pub async fn delete_policy(&self, name: &str) -> Result<(), ClientError> {
        self.call::<()>(reqwest::Method::DELETE, &format!("/v1/policies/{name}"), None::<&()>).await.map(|_| ())
    }
    /// Applies a batch, all or nothing; each operation's resulting object (null for a
    /// deletion), in order.
    pub async fn batch(&self, b: &crate::Batch) -> Result<Vec<serde_json::Value>, ClientError> {
        self.send(reqwest::Method::POST, "/v1/batch", b).await
    }
    /// Traces a packet through the switches.
    pub async fn trace(&self, req: &crate::TraceRequest) -> Result<crate::Trace, ClientError> {
        self.send(reqwest::Method::POST, "/v1/trace", req).await
    }
    /// Trace jobs for `host`'s agent, waiting up to `wait_s` seconds for one to come.
    pub async fn trace_jobs(&self, host: &str, wait_s: u64) -> Result<Vec<crate::TraceJob>, ClientError> {
        self.get(&format!("/v1/hosts/{host}/trace-jobs?wait={wait_s}")).await
    }
    /// An agent's answer to a trace job.
    pub async fn trace_answer(&self, host: &str, id: u64, out: &crate::TraceOutput) -> Result<(), ClientError> {
        self.call::<serde_json::Value>(reqwest::Method::POST, &format!("/v1/hosts/{host}/trace-jobs/{id}"), Some(out)).await.map(|_| ())
    }
    /// Host `host`'s edge; with `known` (a digest), waits up to `wait_s` seconds (≤ 25) for it
    /// to differ.
    pub async fn host_edge(&self, host: &str, known: Option<&str>, wait_s: u64) -> Result<crate::HostEdge, ClientError> {
        match known {
            Some(k) => self.get(&format!("/v1/hosts/{host}/edge?known={k}&wait={wait_s}")).await,
            None => self.get(&format!("/v1/hosts/{host}/edge")).await,
        }
    }
    /// What host `host`'s DNS responder serves; with `known` (a digest), waits up to `wait_s`
    /// seconds (≤ 25) for it to differ.
    pub async fn host_names(&self, host: &str, known: Option<&str>, wait_s: u64) -> Result<crate::HostNames, ClientError> {
        match known {
            Some(k) => self.get(&format!("/v1/hosts/{host}/names?known={k}&wait={wait_s}")).await,
            None => self.get(&format!("/v1/hosts/{host}/names")).await,
        }
    }
    /// All routers.
    pub async fn routers(&self) -> Result<Vec<Router>, ClientError> {
        self.get("/v1/routers").await
    }
    /// One router.
    pub async fn router(&self, name: &str) -> Result<Router, ClientError> {
        self.get(&format!("/v1/routers/{name}")).await
    }
    /// Creates a router.
    pub async fn create_router(&self, spec: &RouterSpec) -> Result<Router, ClientError> {
        self.send(reqwest::Method::POST, "/v1/routers", spec).await
    }
    /// Replaces a router; with `if_match`, only if it is still at that revision.
    pub async fn put_router(&self, spec: &RouterSpec, if_match: Option<u64>) -> Result<Router, ClientError> {
        self.call_if(reqwest::Method::PUT, &format!("/v1/routers/{}", spec.name), Some(spec), if_match)
            .await?
            .ok_or_else(|| ClientError::Decode { url: format!("/v1/routers/{}", spec.name), reason: "empty body".into() })
    }
    /// Deletes a router.
    pub async fn delete_router(&self, name: &str) -> Result<(), ClientError> {
        self.call::<()>(reqwest::Method::DELETE, &format!("/v1/routers/{name}"), None::<&()>).await.map(|_| ())
    }
    /// Registered hosts.
    pub async fn hosts(&self) -> Result<Vec<Host>, ClientError> {
        self.get("/v1/hosts").await
    }
    /// Registers a host (or heartbeats).
    pub async fn put_host(&self, spec: &HostSpec) -> Result<Host, ClientError> {
        self.send(reqwest::Method::PUT, &format!("/v1/hosts/{}", spec.name), spec).await
    }
    /// Cluster status as the first reachable node sees it.
    pub async fn cluster(&self) -> Result<ClusterStatus, ClientError> {
        self.get("/v1/cluster").await
    }
    /// Cluster status from every node given.
    pub async fn cluster_all(&self) -> Vec<(String, Result<ClusterStatus, ClientError>)> {
        let mut out = Vec::new();
        for b in &self.bases {
            let one = Client { bases: vec![b.clone()], http: self.http.clone() };
            out.push((b.clone(), one.cluster().await));
        }
        out
    }
}
