//! What the lab waits on after starting the control plane: controllers ready, agents
//! registered, tunnel neighbour caches seeded. Plain blocking I/O: the lab runs without an
//! async runtime of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::control::ControlPlane;
use super::{Lab, LabError};

/// What every GET to a controller needs, made once per wait rather than once per request.
struct Controller {
    tls: Arc<rustls::ClientConfig>,
    token: String,
}

impl Controller {
    fn new(cp: &ControlPlane) -> Option<Controller> {
        let creds = cp.credentials().ok()?;
        let tls = plexus_pki::api_client_config(creds.ca_pem.as_deref()?).ok()?;
        Some(Controller { tls: Arc::new(tls), token: creds.token.unwrap_or_default() })
    }
}

/// A bare HTTPS GET (HTTP/1.0) of `path` at `addr` with the lab's credentials (the lab waits
/// on controllers without an async runtime): the status code and the body, or `None` if
/// nothing answered.
fn https_get(addr: SocketAddr, path: &str, c: &Controller) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let name = rustls::pki_types::ServerName::from(addr.ip());
    let conn = rustls::ClientConnection::new(c.tls.clone(), name).ok()?;
    let tcp = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(format!("GET {path} HTTP/1.0\r\nAuthorization: Bearer {}\r\n\r\n", c.token.trim()).as_bytes()).ok()?;
    let mut text = String::new();
    // A server may close without TLS's close_notify once it has answered: keep what came.
    let _ = s.read_to_string(&mut text);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// Waits until the controller at `addr` answers `/readyz` with 200: a leader known and its
/// state applied (an open port alone may still be a node that has not formed its cluster).
pub(crate) fn wait_ready(addr: SocketAddr, cp: &ControlPlane) -> Result<(), LabError> {
    let c = Controller::new(cp).ok_or_else(|| LabError::Io("the lab's CA or admin token cannot be read".into()))?;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if https_get(addr, "/readyz", &c).is_some_and(|(status, _)| status == 200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(LabError::Command { cmd: format!("controller at {addr}"), reason: "not ready within 20 s (see its log in the lab directory)".into() })
}

impl Lab {
    /// Waits (up to 10 s) until every host's agent reports every other host in its switch's
    /// tunnel neighbour cache, so a first packet right after `lab up` is not lost to OVS
    /// ARPing. Not reaching it is logged, not fatal: the lab still works, a first packet may
    /// take a second.
    pub(crate) fn wait_tunnels_seeded(&self) {
        // Every other registered host is a peer: the lab's hosts, and the Docker host if any.
        let peers = (self.hosts.len() + usize::from(self.docker)).saturating_sub(1);
        let t = Instant::now();
        let mut pending: Vec<&super::LabHost> = self.hosts.iter().collect();
        while !pending.is_empty() && t.elapsed() < Duration::from_secs(10) {
            pending.retain(|h| {
                let m = agent_metrics(&h.netns).unwrap_or_default();
                let gauge = |name: &str| m.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<usize>().ok());
                !(gauge("plexus_agent_tunnel_peers") == Some(peers) && gauge("plexus_agent_tunnel_peers_unseeded") == Some(0))
            });
            std::thread::sleep(Duration::from_millis(50));
        }
        for h in pending {
            tracing::warn!(lab = %self.name, host = %h.name, "its switch does not know every peer yet: a first packet may wait for OVS to ARP");
        }
    }
}

/// An agent's `/metrics` (its health port, 127.0.0.1:6544 in its host's namespace).
fn agent_metrics(netns: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut c = plexus_agent::netns::connect_tcp(netns, SocketAddr::from(([127, 0, 0, 1], 6544))).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    c.read_to_string(&mut text).ok()?;
    Some(text)
}

/// Waits until every host in `names` is registered with the controller at `addr`.
pub(crate) fn wait_registered(addr: SocketAddr, cp: &ControlPlane, names: &[&str]) -> Result<(), LabError> {
    let c = Controller::new(cp).ok_or_else(|| LabError::Io("the lab's CA or admin token cannot be read".into()))?;
    let t = Instant::now();
    let mut missing: Vec<&str> = names.to_vec();
    while t.elapsed() < Duration::from_secs(30) {
        if let Some((200, body)) = https_get(addr, "/v1/hosts", &c) {
            let hosts = serde_json::from_str::<Vec<plexus_api::Host>>(&body).unwrap_or_default();
            missing.retain(|n| !hosts.iter().any(|h| h.spec.name == *n));
            if missing.is_empty() {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(LabError::Command {
        cmd: format!("agents of {}", missing.join(", ")),
        reason: "not registered within 30 s (see their logs in the lab directory)".into(),
    })
}
