//! The reconnecting OVSDB client: one task owns the connection, the outstanding requests and
//! the monitors; callers talk to it over a channel.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::error::OvsdbError;
use super::jsonrpc::{self, Framer, Incoming};
use super::monitor::{Monitor, MonitorRequest, MonitorState};
use super::ops::{OpResult, Operation};
use super::schema::DbSchema;
use crate::openflow::Transport;

/// Where `ovsdb-server` listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `tcp:IP:PORT`.
    Tcp(std::net::SocketAddr),
    /// `ssl:IP:PORT`: TCP wrapped in TLS by [`ClientOptions::tls`].
    Ssl(std::net::SocketAddr),
}

/// A TLS handshake under way: the session once it is made.
pub type TlsHandshake = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Box<dyn Transport>>> + Send>>;

/// Wraps a TCP connection in TLS for `ssl:` targets. The caller brings the TLS library and
/// its credentials (the agent: the host's certificate and the cluster's CA), so this crate
/// stays free of one.
pub trait TlsConnector: Send + Sync + fmt::Debug {
    /// Performs the client's TLS handshake over `tcp`.
    fn connect(&self, tcp: TcpStream) -> TlsHandshake;
}

impl FromStr for Target {
    type Err = OvsdbError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(OvsdbError::Invalid { field: "target", reason: "unix: needs a socket path".into() });
            }
            return Ok(Target::Unix(p.into()));
        }
        let addr = |a: &str| a.parse().map_err(|e| OvsdbError::Invalid { field: "target", reason: format!("{a:?} is not IP:PORT ({e})") });
        if let Some(a) = s.strip_prefix("tcp:") {
            return addr(a).map(Target::Tcp);
        }
        if let Some(a) = s.strip_prefix("ssl:") {
            return addr(a).map(Target::Ssl);
        }
        Err(OvsdbError::Invalid { field: "target", reason: format!("{s:?} must start with unix:, tcp: or ssl:") })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
            Target::Tcp(a) => write!(f, "tcp:{a}"),
            Target::Ssl(a) => write!(f, "ssl:{a}"),
        }
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Idle time after which an echo is sent; a further interval without any message from
    /// the server means it is dead and the connection is dropped and re-made.
    pub probe_interval: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Time allowed for a reply.
    pub request_timeout: Duration,
    /// TLS for `ssl:` targets (required by them, unused by others).
    pub tls: Option<Arc<dyn TlsConnector>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            probe_interval: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(4),
            request_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// Connection state, observable through [`Client::state`].
#[derive(Debug, Clone, PartialEq)]
pub enum ConnState {
    /// Trying to connect; `last_error` says why the last attempt or connection failed.
    Connecting {
        /// Attempts since the last successful connection.
        attempt: u32,
        /// Why the previous connection or attempt ended.
        last_error: String,
    },
    /// Connected; `generation` counts successful connections.
    Connected {
        /// 1 for the first connection, 2 after the first reconnect, …
        generation: u64,
    },
}

enum Cmd {
    Call { method: String, params: Value, reply: oneshot::Sender<Result<Value, OvsdbError>> },
    AddMonitor { state: MonitorState, reply: oneshot::Sender<Result<(), OvsdbError>> },
}

struct Inner {
    cmd: mpsc::UnboundedSender<Cmd>,
    state: watch::Receiver<ConnState>,
    target: Target,
    opts: ClientOptions,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("target", &self.inner.target).finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A reconnecting OVSDB client. Cheap to clone; the connection closes when the last clone
/// is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Starts a client for `target`; it connects in the background and keeps reconnecting.
    pub fn start(target: Target, opts: ClientOptions) -> Client {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(ConnState::Connecting { attempt: 0, last_error: "not connected yet".into() });
        let task = tokio::spawn(supervise(target.clone(), opts.clone(), cmd_rx, state_tx));
        Client { inner: Arc::new(Inner { cmd: cmd_tx, state: state_rx, target, opts, task }) }
    }

    /// Starts a client and waits until it is connected (or `timeout` passes).
    pub async fn connect(target: Target, opts: ClientOptions, timeout: Duration) -> Result<Client, OvsdbError> {
        let c = Client::start(target, opts);
        c.wait_connected(timeout).await?;
        Ok(c)
    }

    /// The current connection state.
    pub fn state(&self) -> ConnState {
        self.inner.state.borrow().clone()
    }

    /// A receiver that sees every state change.
    pub fn watch_state(&self) -> watch::Receiver<ConnState> {
        self.inner.state.clone()
    }

    /// Waits until connected.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<u64, OvsdbError> {
        let mut rx = self.inner.state.clone();
        let res = tokio::time::timeout(timeout, rx.wait_for(|s| matches!(s, ConnState::Connected { .. }))).await;
        match res {
            Ok(Ok(s)) => match &*s {
                ConnState::Connected { generation } => Ok(*generation),
                _ => Err(OvsdbError::Shutdown),
            },
            Ok(Err(_)) => Err(OvsdbError::Shutdown),
            Err(_) => Err(self.not_connected()),
        }
    }

    fn not_connected(&self) -> OvsdbError {
        let reason = match self.state() {
            ConnState::Connecting { last_error, .. } => last_error,
            ConnState::Connected { .. } => "connected".into(),
        };
        OvsdbError::NotConnected { target: self.inner.target.to_string(), reason }
    }

    /// Calls a JSON-RPC method and returns its result.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, OvsdbError> {
        let (tx, rx) = oneshot::channel();
        self.inner.cmd.send(Cmd::Call { method: method.into(), params, reply: tx }).map_err(|_| OvsdbError::Shutdown)?;
        match tokio::time::timeout(self.inner.opts.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(OvsdbError::Shutdown),
            Err(_) => Err(OvsdbError::Timeout(self.inner.opts.request_timeout)),
        }
    }

    /// The server's databases.
    pub async fn list_dbs(&self) -> Result<Vec<String>, OvsdbError> {
        let v = self.call("list_dbs", json!([])).await?;
        serde_json::from_value(v).map_err(|e| OvsdbError::Protocol(format!("list_dbs: {e}")))
    }

    /// A database's schema.
    pub async fn get_schema(&self, db: &str) -> Result<DbSchema, OvsdbError> {
        DbSchema::parse(&self.call("get_schema", json!([db])).await?)
    }

    /// Runs a transaction. If any operation fails, the server rolls back the whole
    /// transaction and this returns [`OvsdbError::Transaction`] naming the operation.
    pub async fn transact(&self, db: &str, ops: &[Operation]) -> Result<Vec<OpResult>, OvsdbError> {
        let mut params = vec![json!(db)];
        params.extend(ops.iter().map(Operation::to_json));
        let v = self.call("transact", Value::Array(params)).await?;
        let results = v.as_array().ok_or_else(|| OvsdbError::Protocol("transact result is not an array".into()))?;
        for (i, r) in results.iter().enumerate() {
            if let Some(err) = r.get("error").and_then(Value::as_str) {
                return Err(OvsdbError::Transaction {
                    op_index: (i < ops.len()).then_some(i),
                    error: err.to_string(),
                    details: r.get("details").and_then(Value::as_str).map(str::to_string),
                });
            }
        }
        Ok(results.iter().map(OpResult::from_json).collect())
    }

    /// Starts monitoring: the first batch holds the current rows as inserts; after each
    /// reconnect the monitor is re-established and the batch holds only what changed.
    /// Uses `monitor_cond` (with `update2` differences) and falls back to `monitor`.
    pub async fn monitor(&self, db: &str, requests: Vec<MonitorRequest>) -> Result<Monitor, OvsdbError> {
        let schema = self.get_schema(db).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let state = MonitorState::new(db.to_string(), requests, schema, tx)?;
        let (rtx, rrx) = oneshot::channel();
        self.inner.cmd.send(Cmd::AddMonitor { state, reply: rtx }).map_err(|_| OvsdbError::Shutdown)?;
        match tokio::time::timeout(self.inner.opts.request_timeout, rrx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(OvsdbError::Shutdown),
            Err(_) => return Err(OvsdbError::Timeout(self.inner.opts.request_timeout)),
        }
        Ok(Monitor { rx })
    }
}

type Rd = Box<dyn AsyncRead + Send + Unpin>;
type Wr = Box<dyn AsyncWrite + Send + Unpin>;

async fn dial(target: &Target, tls: Option<&Arc<dyn TlsConnector>>) -> std::io::Result<(Rd, Wr)> {
    Ok(match target {
        Target::Unix(p) => {
            let (r, w) = UnixStream::connect(p).await?.into_split();
            (Box::new(r), Box::new(w))
        }
        Target::Tcp(a) => {
            let s = TcpStream::connect(a).await?;
            s.set_nodelay(true)?;
            let (r, w) = s.into_split();
            (Box::new(r), Box::new(w))
        }
        Target::Ssl(a) => {
            let tls =
                tls.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "an ssl: target needs TLS settings (a certificate and the CA)"))?;
            let s = TcpStream::connect(a).await?;
            s.set_nodelay(true)?;
            let (r, w) = tokio::io::split(tls.connect(s).await?);
            (Box::new(r), Box::new(w))
        }
    })
}

enum PendingKind {
    Call { method: String, reply: oneshot::Sender<Result<Value, OvsdbError>> },
    MonitorInit { mon: u64, cond: bool, reply: Option<oneshot::Sender<Result<(), OvsdbError>>> },
    Echo,
}

async fn supervise(target: Target, opts: ClientOptions, mut cmd_rx: mpsc::UnboundedReceiver<Cmd>, state: watch::Sender<ConnState>) {
    let mut monitors: HashMap<u64, MonitorState> = HashMap::new();
    let mut next_mon = 1u64;
    let mut generation = 0u64;
    let mut attempt = 0u32;
    let mut backoff = opts.backoff_min;
    loop {
        // Connect, failing commands at once while disconnected: a caller is better served by
        // a clear "not connected" than by a request that hangs.
        let conn = {
            let dialing = dial(&target, opts.tls.as_ref());
            tokio::pin!(dialing);
            loop {
                tokio::select! {
                    r = &mut dialing => break r,
                    c = cmd_rx.recv() => match c {
                        None => return,
                        Some(c) => refuse(c, &target, &state),
                    }
                }
            }
        };
        let (rd, wr) = match conn {
            Ok(c) => c,
            Err(e) => {
                attempt += 1;
                let last_error = format!("connect to {target}: {e}");
                if attempt == 1 || attempt.is_multiple_of(50) {
                    tracing::debug!(%target, attempt, error = %e, "ovsdb connect failed; retrying");
                }
                state.send_replace(ConnState::Connecting { attempt, last_error });
                let sleep = tokio::time::sleep(backoff);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        c = cmd_rx.recv() => match c {
                            None => return,
                            Some(c) => refuse(c, &target, &state),
                        }
                    }
                }
                backoff = (backoff * 2).min(opts.backoff_max);
                continue;
            }
        };
        generation += 1;
        attempt = 0;
        backoff = opts.backoff_min;
        tracing::info!(%target, generation, "connected to ovsdb-server");
        let mut session = Session { wr, pending: HashMap::new(), next_id: 1, monitors: &mut monitors };
        let reason = session.run(rd, &mut cmd_rx, &mut next_mon, &opts, &state, generation).await;
        let Some(reason) = reason else { return };
        tracing::warn!(%target, %reason, "ovsdb connection lost; reconnecting");
        state.send_replace(ConnState::Connecting { attempt: 0, last_error: reason });
    }
}

fn refuse(c: Cmd, target: &Target, state: &watch::Sender<ConnState>) {
    let reason = match &*state.borrow() {
        ConnState::Connecting { last_error, .. } => last_error.clone(),
        ConnState::Connected { .. } => "reconnecting".into(),
    };
    let err = OvsdbError::NotConnected { target: target.to_string(), reason };
    match c {
        Cmd::Call { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Cmd::AddMonitor { reply, .. } => {
            let _ = reply.send(Err(err));
        }
    }
}

struct Session<'a> {
    wr: Wr,
    pending: HashMap<u64, PendingKind>,
    next_id: u64,
    monitors: &'a mut HashMap<u64, MonitorState>,
}

impl Session<'_> {
    /// Runs one connection; returns why it ended, or `None` if the client was dropped.
    async fn run(
        &mut self,
        mut rd: Rd,
        cmd_rx: &mut mpsc::UnboundedReceiver<Cmd>,
        next_mon: &mut u64,
        opts: &ClientOptions,
        state: &watch::Sender<ConnState>,
        generation: u64,
    ) -> Option<String> {
        let mut framer = Framer::default();
        let mut chunk = vec![0u8; 1 << 16];
        let mut last_rx = Instant::now();
        let mut echo_sent: Option<Instant> = None;
        let mut tick = tokio::time::interval((opts.probe_interval / 4).max(Duration::from_millis(50)));
        // Re-establish monitors before announcing the connection, so that a caller who saw
        // "connected" and then changes the database sees those changes after the resync.
        let ids: Vec<u64> = self.monitors.keys().copied().collect();
        for id in ids {
            if let Err(e) = self.send_monitor(id, true, None).await {
                return Some(self.fail_all(format!("write failed: {e}")));
            }
        }
        state.send_replace(ConnState::Connected { generation });
        let reason = loop {
            tokio::select! {
                r = rd.read(&mut chunk) => match r {
                    Ok(0) => break "server closed the connection".to_string(),
                    Err(e) => break format!("read failed: {e}"),
                    Ok(n) => {
                        last_rx = Instant::now();
                        echo_sent = None;
                        framer.push(chunk.get(..n).unwrap_or_default());
                        let mut err = None;
                        loop {
                            match framer.next() {
                                Ok(Some(m)) => if let Err(e) = self.handle(m).await { err = Some(e); break },
                                Ok(None) => break,
                                Err(e) => { err = Some(e.to_string()); break }
                            }
                        }
                        if let Some(e) = err { break e }
                    }
                },
                c = cmd_rx.recv() => {
                    let c = c?;
                    let res = match c {
                        Cmd::Call { method, params, reply } => {
                            let id = self.id();
                            let bytes = jsonrpc::request(&method, &params, &json!(id));
                            self.pending.insert(id, PendingKind::Call { method, reply });
                            self.wr.write_all(&bytes).await
                        }
                        Cmd::AddMonitor { state, reply } => {
                            let id = *next_mon;
                            *next_mon += 1;
                            self.monitors.insert(id, state);
                            self.send_monitor(id, true, Some(reply)).await
                        }
                    };
                    if let Err(e) = res { break format!("write failed: {e}") }
                }
                _ = tick.tick() => {
                    if last_rx.elapsed() < opts.probe_interval { continue }
                    match echo_sent {
                        Some(t) if t.elapsed() >= opts.probe_interval => {
                            break format!("server dead: nothing received for {:.1}s, echo unanswered", last_rx.elapsed().as_secs_f64());
                        }
                        Some(_) => {}
                        None => {
                            let id = self.id();
                            self.pending.insert(id, PendingKind::Echo);
                            echo_sent = Some(Instant::now());
                            if let Err(e) = self.wr.write_all(&jsonrpc::request("echo", &json!([]), &json!(id))).await {
                                break format!("write failed: {e}");
                            }
                        }
                    }
                }
            }
        };
        Some(self.fail_all(reason))
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn fail_all(&mut self, reason: String) -> String {
        for (_, p) in self.pending.drain() {
            match p {
                PendingKind::Call { reply, .. } => {
                    let _ = reply.send(Err(OvsdbError::Disconnected(reason.clone())));
                }
                PendingKind::MonitorInit { mon, reply: Some(reply), .. } => {
                    // A monitor that was never established is not kept for the next
                    // connection: its caller gets the error instead.
                    self.monitors.remove(&mon);
                    let _ = reply.send(Err(OvsdbError::Disconnected(reason.clone())));
                }
                _ => {}
            }
        }
        reason
    }

    async fn send_monitor(&mut self, mon: u64, cond: bool, reply: Option<oneshot::Sender<Result<(), OvsdbError>>>) -> std::io::Result<()> {
        let Some(m) = self.monitors.get(&mon) else { return Ok(()) };
        let params = json!([m.db, mon, m.request_json()]);
        let id = self.id();
        let bytes = jsonrpc::request(if cond { "monitor_cond" } else { "monitor" }, &params, &json!(id));
        self.pending.insert(id, PendingKind::MonitorInit { mon, cond, reply });
        self.wr.write_all(&bytes).await
    }

    async fn handle(&mut self, m: Incoming) -> Result<(), String> {
        match m {
            Incoming::Request { method, params, id } => match method.as_str() {
                "echo" => self.wr.write_all(&jsonrpc::response(&id, &params)).await.map_err(|e| format!("write failed: {e}"))?,
                "update" | "update2" => {
                    let (Some(mon), Some(updates)) = (params.get(0).and_then(Value::as_u64), params.get(1)) else {
                        return Err(format!("malformed {method} notification"));
                    };
                    if let Some(state) = self.monitors.get_mut(&mon) {
                        state.on_update(updates, method == "update2").map_err(|e| e.to_string())?;
                        if state.is_closed() {
                            self.monitors.remove(&mon);
                            let id = self.id();
                            self.wr
                                .write_all(&jsonrpc::request("monitor_cancel", &json!([mon]), &json!(id)))
                                .await
                                .map_err(|e| format!("write failed: {e}"))?;
                            self.pending.insert(id, PendingKind::Echo);
                        }
                    }
                }
                other => tracing::debug!(method = other, "ignoring ovsdb notification"),
            },
            Incoming::Response { id, result, error } => {
                let Some(p) = id.as_u64().and_then(|i| self.pending.remove(&i)) else { return Ok(()) };
                match p {
                    PendingKind::Echo => {}
                    PendingKind::Call { method, reply } => {
                        let r = if error.is_null() { Ok(result) } else { Err(OvsdbError::Rpc { method, error: error_text(&error) }) };
                        let _ = reply.send(r);
                    }
                    PendingKind::MonitorInit { mon, cond, reply } => {
                        if !error.is_null() {
                            let text = error_text(&error);
                            if cond && text.contains("unknown method") {
                                // An old server without monitor_cond: use plain monitor.
                                return self.send_monitor(mon, false, reply).await.map_err(|e| format!("write failed: {e}"));
                            }
                            self.monitors.remove(&mon);
                            if let Some(r) = reply {
                                let _ = r.send(Err(OvsdbError::Rpc { method: "monitor_cond".into(), error: text }));
                            }
                            return Ok(());
                        }
                        if let Some(state) = self.monitors.get_mut(&mon) {
                            state.on_initial(&result, cond);
                        }
                        if let Some(r) = reply {
                            let _ = r.send(Ok(()));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn error_text(e: &Value) -> String {
    match e {
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            let tag = o.get("error").and_then(Value::as_str).unwrap_or("error");
            match o.get("details").and_then(Value::as_str) {
                Some(d) => format!("{tag}: {d}"),
                None => tag.to_string(),
            }
        }
        other => other.to_string(),
    }
}
