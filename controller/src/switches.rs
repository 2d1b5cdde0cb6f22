//! The switch manager: every switch that connects is identified by its datapath id, its
//! ports are learned from port description and port status, and its flows are kept equal to
//! what the compiler makes of the model — on connect, on every model change, on every port
//! change, and on a periodic audit that undoes tampering.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexus_ovs::openflow::{Connection, ConnectionOptions, Events, Listener, Message};
use serde::Serialize;
use tokio::sync::watch;

use crate::flows::{compile, reconcile, SwitchView};
use crate::store::SharedState;

/// Names of the flow-based tunnel ports the agent creates, one per encapsulation.
pub const TUNNEL_PORTS: [&str; 2] = ["vxlan0", "geneve0"];

pub use plexus_api::ids::port_name;

/// What the manager knows of one switch (`GET /v1/hosts/{name}/flows`).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SwitchStatus {
    /// Datapath id, hex.
    pub datapath_id: String,
    /// The host it belongs to, if a registered host has that datapath id.
    pub host: Option<String>,
    /// Whether a session is up.
    pub connected: bool,
    /// Whether its flows equal the desired flows as of the last pass.
    pub in_sync: bool,
    /// Flows desired for it.
    pub desired_flows: usize,
    /// Changes sent by the last pass that found a difference: adds, modifies, replaces, deletes.
    pub last_changes: [usize; 4],
    /// Passes that had to change something.
    pub corrections: u64,
    /// The last error, if the last pass failed.
    pub last_error: Option<String>,
}

/// Keeps switches in their desired state.
pub struct SwitchManager {
    state: SharedState,
    revisions: watch::Receiver<u64>,
    audit_every: Duration,
    status: Mutex<BTreeMap<String, SwitchStatus>>,
}

impl SwitchManager {
    /// Starts accepting switches on `listener`.
    pub fn spawn(listener: Listener, state: SharedState, revisions: watch::Receiver<u64>, audit_every: Duration) -> Arc<SwitchManager> {
        let m = Arc::new(SwitchManager { state, revisions, audit_every, status: Mutex::new(BTreeMap::new()) });
        let mm = m.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept(ConnectionOptions::default()).await {
                    Ok((conn, events)) => {
                        let mm = mm.clone();
                        tokio::spawn(async move { mm.serve(conn, events).await });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "a switch failed the OpenFlow handshake");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        m
    }

    /// Every switch seen, by datapath id.
    pub fn status(&self) -> BTreeMap<String, SwitchStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, dpid: &str, f: impl FnOnce(&mut SwitchStatus)) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let e = s.entry(dpid.to_string()).or_insert_with(|| SwitchStatus { datapath_id: dpid.to_string(), ..Default::default() });
        f(e);
    }

    async fn serve(&self, conn: Connection, mut events: Events) {
        let dpid = format!("{:016x}", conn.datapath_id());
        tracing::info!(%dpid, "switch connected");
        self.update(&dpid, |s| s.connected = true);
        let mut ports: HashMap<String, u32> = match conn.port_desc().await {
            Ok(p) => p.into_iter().map(|p| (p.name, p.port_no)).collect(),
            Err(e) => {
                self.update(&dpid, |s| {
                    s.connected = false;
                    s.last_error = Some(e.to_string());
                });
                return;
            }
        };
        let mut revisions = self.revisions.clone();
        let mut audit = tokio::time::interval(self.audit_every);
        loop {
            self.pass(&conn, &dpid, &ports).await;
            tokio::select! {
                r = revisions.changed() => if r.is_err() { break },
                _ = audit.tick() => {}
                ev = events.recv() => match ev {
                    None => break,
                    Some(ev) => {
                        if let Message::PortStatus(ps) = ev.message {
                            if ps.reason == 1 {
                                ports.remove(&ps.port.name);
                            } else {
                                ports.insert(ps.port.name, ps.port.port_no);
                            }
                        }
                    }
                },
            }
        }
        let why = conn.closed_reason().unwrap_or_else(|| "closed".into());
        tracing::info!(%dpid, reason = %why, "switch disconnected");
        self.update(&dpid, |s| s.connected = false);
    }

    /// Compiles the switch's flows from the current model and reconciles.
    async fn pass(&self, conn: &Connection, dpid: &str, ports: &HashMap<String, u32>) {
        let t = Instant::now();
        let (host, desired) = {
            let st = self.state.read().await;
            let model = &st.model;
            let Some(host) = model.hosts.values().find(|h| h.datapath_id == dpid) else {
                self.update(dpid, |s| {
                    s.host = None;
                    s.last_error = Some(format!("no registered host has datapath id {dpid}"));
                });
                return;
            };
            let Some(tunnel_port) = TUNNEL_PORTS.iter().find_map(|n| ports.get(*n)).copied() else {
                self.update(dpid, |s| s.last_error = Some("the switch has no tunnel port yet".into()));
                return;
            };
            let mut eports = BTreeMap::new();
            for (net, eps) in &model.endpoints {
                for e in eps.values().filter(|e| e.host == host.spec.name) {
                    if let Some(p) = ports.get(&port_name(net, &e.id)) {
                        eports.insert(format!("{net}/{}", e.id), *p);
                    }
                }
            }
            let view = SwitchView { host: host.spec.name.clone(), tunnel_port, ports: eports };
            (host.spec.name.clone(), compile(model, &view))
        };
        let res = reconcile(conn, &desired).await;
        self.update(dpid, |s| {
            s.host = Some(host.clone());
            s.desired_flows = desired.len();
            match &res {
                Ok(d) => {
                    s.in_sync = true;
                    s.last_error = None;
                    if !d.is_empty() {
                        s.corrections += 1;
                        s.last_changes = [d.add.len(), d.modify.len(), d.replace.len(), d.delete.len()];
                    }
                }
                Err(e) => {
                    s.in_sync = false;
                    s.last_error = Some(e.to_string());
                }
            }
        });
        if let Ok(d) = &res {
            if !d.is_empty() {
                tracing::info!(%host, %dpid, ms = t.elapsed().as_millis() as u64, "switch reconciled");
            }
        }
    }
}
