//! The agent's own health and metrics over HTTP (`--listen`, default `127.0.0.1:6544`):
//! `/healthz` answers 200 while the agent is registered, its heartbeats reach the controller
//! and its switch is as it should be, 503 with the reason otherwise; `/metrics` gives the
//! counters in Prometheus's text format.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Docker plugin calls by method and result (`Join` is the endpoint's plumbing: its veth, its
/// port on `br-int`, the flows it waits for).
pub static PLUGIN_CALLS: std::sync::LazyLock<plexus_api::histogram::Family> = std::sync::LazyLock::new(Default::default);

/// What the agent reports about itself.
#[derive(Debug, Default)]
pub struct Health {
    heartbeat_ms: u64,
    registered: AtomicBool,
    switch_ok: AtomicBool,
    last_heartbeat_ok_ms: AtomicU64,
    heartbeats_ok: AtomicU64,
    heartbeats_failed: AtomicU64,
    switch_checks: AtomicU64,
    switch_check_failures: AtomicU64,
    tunnel_peers: AtomicU64,
    tunnel_peers_unseeded: AtomicU64,
    unseeded: std::sync::Mutex<Vec<std::net::Ipv4Addr>>,
    edge_error: std::sync::Mutex<Option<String>>,
    edge_applies: AtomicU64,
    edge_failures: AtomicU64,
    published_ports: AtomicU64,
    mappings_failed: AtomicU64,
}

impl Health {
    /// Health for an agent that heartbeats every `heartbeat`.
    pub fn new(heartbeat: Duration) -> Arc<Health> {
        Arc::new(Health { heartbeat_ms: heartbeat.as_millis() as u64, ..Default::default() })
    }

    /// The host is registered.
    pub fn registered(&self) {
        self.registered.store(true, Ordering::Relaxed);
        self.last_heartbeat_ok_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A heartbeat's outcome.
    pub fn heartbeat(&self, ok: bool) {
        if ok {
            self.heartbeats_ok.fetch_add(1, Ordering::Relaxed);
            self.last_heartbeat_ok_ms.store(now_ms(), Ordering::Relaxed);
        } else {
            self.heartbeats_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A check (and repair) of the switch's configuration.
    pub fn switch_check(&self, ok: bool) {
        self.switch_checks.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.switch_check_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.switch_ok.store(ok, Ordering::Relaxed);
    }

    /// How many on-link tunnel peers there are, and which OVS's neighbour cache lacks.
    pub fn tunnel_peers(&self, total: usize, missing: &[std::net::Ipv4Addr]) {
        self.tunnel_peers.store(total as u64, Ordering::Relaxed);
        self.tunnel_peers_unseeded.store(missing.len() as u64, Ordering::Relaxed);
        *self.unseeded.lock().unwrap_or_else(|e| e.into_inner()) = missing.to_vec();
    }

    /// An apply of the host's edge: why it failed, or how many ports it publishes.
    pub fn edge(&self, error: Option<String>, published: usize) {
        let counter = if error.is_some() { &self.edge_failures } else { &self.edge_applies };
        counter.fetch_add(1, Ordering::Relaxed);
        if error.is_none() {
            self.published_ports.store(published as u64, Ordering::Relaxed);
        }
        *self.edge_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// How many bridge mappings cannot be made (a missing interface): reported, not fatal.
    pub fn mappings_failed(&self, n: usize) {
        self.mappings_failed.store(n as u64, Ordering::Relaxed);
    }

    /// Peers OVS's tunnel neighbour cache lacks: a first packet to them would wait for OVS
    /// to ARP. Reported, not fatal (a peer may be down).
    pub fn unseeded(&self) -> Vec<std::net::Ipv4Addr> {
        self.unseeded.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why the agent is not healthy, if it is not.
    pub fn problem(&self) -> Option<String> {
        if !self.registered.load(Ordering::Relaxed) {
            return Some("not registered with the controller yet".into());
        }
        let since = now_ms().saturating_sub(self.last_heartbeat_ok_ms.load(Ordering::Relaxed));
        if since > 3 * self.heartbeat_ms.max(1000) {
            return Some(format!("no heartbeat has reached the controller for {since} ms"));
        }
        if !self.switch_ok.load(Ordering::Relaxed) {
            return Some("the last check of the switch's configuration failed (see the log)".into());
        }
        if let Some(e) = self.edge_error.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Some(format!("the host's edge (external access, published ports) could not be applied: {e}"));
        }
        None
    }

    fn metrics(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "# TYPE plexus_agent_heartbeats_total counter\nplexus_agent_heartbeats_total{{result=\"ok\"}} {}\nplexus_agent_heartbeats_total{{result=\"failed\"}} {}\n\
             # TYPE plexus_agent_switch_checks_total counter\nplexus_agent_switch_checks_total {}\n\
             # TYPE plexus_agent_switch_check_failures_total counter\nplexus_agent_switch_check_failures_total {}\n\
             # TYPE plexus_agent_healthy gauge\nplexus_agent_healthy {}\n\
             # TYPE plexus_agent_tunnel_peers gauge\nplexus_agent_tunnel_peers {}\n\
             # TYPE plexus_agent_tunnel_peers_unseeded gauge\nplexus_agent_tunnel_peers_unseeded {}\n\
             # TYPE plexus_agent_edge_applies_total counter\nplexus_agent_edge_applies_total{{result=\"ok\"}} {}\nplexus_agent_edge_applies_total{{result=\"failed\"}} {}\n\
             # TYPE plexus_agent_published_ports gauge\nplexus_agent_published_ports {}\n\
             # TYPE plexus_agent_bridge_mappings_failed gauge\nplexus_agent_bridge_mappings_failed {}\n",
            g(&self.heartbeats_ok),
            g(&self.heartbeats_failed),
            g(&self.switch_checks),
            g(&self.switch_check_failures),
            u8::from(self.problem().is_none()),
            g(&self.tunnel_peers),
            g(&self.tunnel_peers_unseeded),
            g(&self.edge_applies),
            g(&self.edge_failures),
            g(&self.published_ports),
            g(&self.mappings_failed)
        ) + &{
            let mut out = String::from("# HELP plexus_agent_plugin_call_seconds Docker plugin calls by method and result.\n# TYPE plexus_agent_plugin_call_seconds histogram\n");
            PLUGIN_CALLS.render("plexus_agent_plugin_call_seconds", &mut out);
            out
        } + &crate::dns::metrics()
    }
}

/// Serves `/healthz` and `/metrics` on `listener`.
pub async fn serve(listener: tokio::net::TcpListener, health: Arc<Health>) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/healthz",
            get(|State(h): State<Arc<Health>>| async move {
                let unseeded = h.unseeded();
                match h.problem() {
                    None if unseeded.is_empty() => (StatusCode::OK, "ok".to_string()),
                    None => (StatusCode::OK, format!("ok; not yet in OVS's tunnel neighbour cache: {unseeded:?}")),
                    Some(p) => (StatusCode::SERVICE_UNAVAILABLE, p),
                }
            }),
        )
        .route("/metrics", get(|State(h): State<Arc<Health>>| async move { ([("content-type", "text/plain; version=0.0.4")], h.metrics()).into_response() }))
        .with_state(health);
    axum::serve(listener, app).await
}
