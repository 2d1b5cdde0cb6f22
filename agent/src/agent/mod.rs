//! The host agent: registers its host with the controller and heartbeats, and makes the
//! host's Open vSwitch what Plexus needs — `br-int` with the tunnel port and the controller
//! targets, and for the userspace datapath `br-phy` holding the underlay interface and its
//! address. It re-checks the switch whenever OVSDB reports a change, and periodically, and
//! puts back whatever drifted.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use plexus_api::{Client, Encap, HostSpec};
use plexus_ovs::ovsdb::{BridgeSpec, Client as Ovsdb, ClientOptions, InterfaceType, MonitorRequest, PortSpec, Target, VSwitch};

pub mod health;
pub mod mappings;
mod neigh;
mod trace;

/// The integration bridge.
pub const BR_INT: &str = "br-int";
/// The underlay bridge of the userspace datapath.
pub use crate::underlay::BR_PHY;

/// Agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Host name (as registered).
    pub name: String,
    /// Controller API URL(s).
    pub controller: String,
    /// The CA the API's certificate chains to, and this host's agent token.
    pub credentials: plexus_api::Credentials,
    /// TLS for an `ssl:` OVSDB target.
    pub ovsdb_tls: Option<std::sync::Arc<dyn plexus_ovs::ovsdb::TlsConnector>>,
    /// OpenFlow targets of every controller node, e.g. `tcp:10.0.0.1:6653`.
    pub openflow: Vec<String>,
    /// This host's OVSDB.
    pub ovsdb: Target,
    /// Underlay address tunnels use.
    pub tunnel_ip: Ipv4Addr,
    /// Its prefix length (for moving it onto `br-phy`).
    pub tunnel_prefix: u8,
    /// `system` (kernel datapath, the default) or `netdev` (userspace).
    pub datapath_type: String,
    /// Encapsulation.
    pub encap: Encap,
    /// With `netdev`: the underlay interface to put on `br-phy` (its address moves there).
    pub underlay_iface: Option<String>,
    /// Physical network name to the interface or OVS bridge that carries it
    /// (`--bridge-mapping physnet1=eth1`): where underlay networks' frames leave.
    pub bridge_mappings: BTreeMap<String, String>,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Serve Docker's plugin protocols and mirror networks into the local Docker.
    pub docker: Option<crate::docker::DockerConfig>,
    /// Where `/healthz` and `/metrics` answer (none: nowhere).
    pub listen: Option<std::net::SocketAddr>,
    /// The identity OVS presents on `ssl:` OpenFlow targets (needed with any).
    pub switch_tls: Option<SwitchTls>,
    /// Answer containers' DNS on their gateways, forwarding names outside Plexus to these
    /// resolvers (`None`: do not answer).
    pub dns_upstreams: Option<Vec<std::net::SocketAddr>>,
}

/// Errors of the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// OVSDB refused or failed.
    // Inner errors are in the message, not chained as sources: a chain of causes says each
    // thing once.
    #[error("ovsdb: {0}")]
    Ovsdb(plexus_ovs::ovsdb::OvsdbError),
    /// The controller refused.
    #[error("controller: {0}")]
    Controller(plexus_api::ClientError),
    /// A system command failed.
    #[error("{0}")]
    System(String),
    /// The underlay could not be moved onto br-phy.
    #[error("underlay: {0}")]
    Underlay(crate::underlay::UnderlayError),
}

impl From<plexus_ovs::ovsdb::OvsdbError> for AgentError {
    fn from(e: plexus_ovs::ovsdb::OvsdbError) -> Self {
        AgentError::Ovsdb(e)
    }
}

impl From<plexus_api::ClientError> for AgentError {
    fn from(e: plexus_api::ClientError) -> Self {
        AgentError::Controller(e)
    }
}

impl From<crate::underlay::UnderlayError> for AgentError {
    fn from(e: crate::underlay::UnderlayError) -> Self {
        AgentError::Underlay(e)
    }
}

/// An encapsulation's name on the command line and in OVS (`vxlan`, `geneve`).
pub fn encap_name(encap: Encap) -> &'static str {
    match encap {
        Encap::Vxlan => "vxlan",
        Encap::Geneve => "geneve",
    }
}

/// Makes the switch what the agent needs; idempotent, so it doubles as drift repair.
pub async fn ensure_switch(cfg: &AgentConfig, vs: &VSwitch) -> Result<(), AgentError> {
    if let (true, Some(iface)) = (cfg.datapath_type == "netdev", &cfg.underlay_iface) {
        crate::underlay::adopt(vs, None, iface, cfg.tunnel_ip, cfg.tunnel_prefix).await?;
    }
    let int = BridgeSpec {
        name: BR_INT.into(),
        datapath_type: cfg.datapath_type.clone(),
        fail_mode: Some("secure".into()),
        protocols: vec!["OpenFlow13".into()],
        datapath_id: Some(plexus_api::ids::datapath_id(&cfg.name)),
        other_config: BTreeMap::new(),
        external_ids: BTreeMap::from([("plexus-host".to_string(), cfg.name.clone())]),
    };
    vs.ensure_bridge(&int).await?;
    let kind = match cfg.encap {
        Encap::Vxlan => InterfaceType::Vxlan,
        Encap::Geneve => InterfaceType::Geneve,
    };
    vs.add_port(BR_INT, &PortSpec::new(cfg.encap.port_name(), kind).option("remote_ip", "flow").option("key", "flow")).await?;
    // Where the host's own stack meets its containers (external access, published ports).
    vs.add_port(BR_INT, &PortSpec::new(plexus_api::routing::EXTERNAL_PORT, InterfaceType::Internal)).await?;
    if let Some(t) = &cfg.switch_tls {
        vs.set_ssl(&t.private_key, &t.certificate, &t.ca_cert).await?;
    }
    vs.set_controllers(BR_INT, &cfg.openflow).await?;
    Ok(())
}

/// Files `ovs-vswitchd` reads for its one TLS identity (the `SSL` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchTls {
    /// Its private key.
    pub private_key: String,
    /// Its certificate, naming this host.
    pub certificate: String,
    /// The CA controllers' certificates must chain to.
    pub ca_cert: String,
}

/// Runs the agent until the process ends.
pub async fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    let api = Client::new(&cfg.controller, &cfg.credentials)?;
    let health = health::Health::new(cfg.heartbeat);
    if let Some(addr) = cfg.listen {
        // Health is worth having, not worth refusing to run for.
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                tracing::info!(%addr, "health and metrics");
                let h = health.clone();
                tokio::spawn(async move {
                    if let Err(e) = health::serve(l, h).await {
                        tracing::warn!(error = %e, "health server stopped");
                    }
                });
            }
            Err(e) => tracing::warn!(%addr, error = %e, "cannot serve health and metrics"),
        }
    }
    let ovsdb = Ovsdb::start(cfg.ovsdb.clone(), ClientOptions { tls: cfg.ovsdb_tls.clone(), ..ClientOptions::default() });
    ovsdb.wait_connected(Duration::from_secs(30)).await?;
    let vs = VSwitch::new(ovsdb.clone());
    // The underlay's MTU bounds what overlay networks can carry; the controller checks
    // networks' MTUs against what every host reports.
    let tunnel_ip = cfg.tunnel_ip;
    let underlay = tokio::task::spawn_blocking(move || crate::plumb::mtu_of_address(None, tunnel_ip)).await.map_err(|e| AgentError::System(e.to_string()))?;
    let underlay_mtu = underlay.as_ref().ok().copied().flatten();
    // Physical networks are registered once they are really mapped (below).
    let mut spec =
        HostSpec { name: cfg.name.clone(), tunnel_ip: cfg.tunnel_ip, encap: cfg.encap, underlay_mtu, physical_networks: Vec::new(), labels: BTreeMap::new() };
    // Register first: the controller identifies the switch by the datapath id it expects.
    loop {
        match api.put_host(&spec).await {
            Ok(h) => {
                health.registered();
                tracing::info!(host = %cfg.name, datapath_id = %h.datapath_id, "registered with the controller");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot register yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    // A switch that is still starting up is waited for, not given up on.
    let mut wait = Duration::from_millis(100);
    while let Err(e) = ensure_switch(&cfg, &vs).await {
        health.switch_check(false);
        tracing::warn!(error = %e, "cannot configure the switch yet; retrying");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    let mut mapped = mappings::Mapped::default();
    remap(&cfg, &vs, &mut mapped, &mut spec, &health).await;
    if !spec.physical_networks.is_empty() {
        // Say what the host maps now rather than a heartbeat later.
        if let Err(e) = api.put_host(&spec).await {
            tracing::warn!(error = %e, "cannot register the physical networks yet; the next heartbeat will");
        }
    }
    if let Some(d) = cfg.docker.clone() {
        // The underlay's MTU as read once at start-up, for registration too.
        let mtu = crate::attach::path_mtu(cfg.tunnel_ip, underlay.map_err(|e| AgentError::System(e.to_string()))?);
        let (host, api, vs, netdev) = (cfg.name.clone(), api.clone(), vs.clone(), cfg.datapath_type == "netdev");
        tokio::spawn(async move {
            if let Err(e) = crate::docker::run(d, host, api, vs, mtu, netdev).await {
                tracing::error!(error = %e, "the Docker plugin stopped");
            }
        });
    }
    // `plexus trace` runs on this switch through the control socket next to the OVSDB socket.
    if let plexus_ovs::ovsdb::Target::Unix(db) = &cfg.ovsdb {
        if let Some(rundir) = db.parent() {
            tokio::spawn(trace::serve(api.clone(), cfg.name.clone(), rundir.to_path_buf()));
        }
    }
    // The DNS responder talks to br-int through its management socket, next to the OVSDB one.
    if let Some(upstreams) = cfg.dns_upstreams.clone() {
        match crate::attach::mgmt_socket(&cfg.ovsdb.to_string()) {
            Some(mgmt) => {
                let dns = crate::dns::DnsConfig { host: cfg.name.clone(), mgmt, upstreams };
                tokio::spawn(crate::dns::run(api.clone(), dns));
            }
            None => {
                tracing::warn!(ovsdb = %cfg.ovsdb, "OVSDB is not a local socket, so br-int's management socket is unknown: containers' DNS is not answered")
            }
        }
    }
    let nudge = std::sync::Arc::new(tokio::sync::Notify::new());
    tokio::spawn(crate::edge::run(api.clone(), cfg.name.clone(), nudge.clone(), health.clone()));
    let mut monitor =
        ovsdb.monitor("Open_vSwitch", vec![MonitorRequest::all("Bridge"), MonitorRequest::all("Port"), MonitorRequest::all("Controller")]).await?;
    health.switch_check(true);
    let mut touched: BTreeMap<Ipv4Addr, std::time::Instant> = BTreeMap::new();
    // With the userspace datapath, OVS's tunnel neighbour cache is seeded from the kernel's;
    // its control socket is next to the OVSDB socket.
    let mut seeder = match (&cfg.ovsdb, cfg.datapath_type == "netdev") {
        (plexus_ovs::ovsdb::Target::Unix(db), true) => {
            let ctl = db.parent().and_then(plexus_ovs::unixctl::vswitchd_ctl);
            if ctl.is_none() {
                tracing::warn!(ovsdb = %cfg.ovsdb, "no ovs-vswitchd control socket next to the OVSDB socket: tunnel neighbours are not seeded");
            }
            ctl.map(neigh::Seeder::new)
        }
        _ => None,
    };
    let mut beat = tokio::time::interval(cfg.heartbeat);
    let mut audit = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = beat.tick() => {
                let r = api.put_host(&spec).await;
                health.heartbeat(r.is_ok());
                if let Err(e) = r {
                    tracing::warn!(error = %e, "heartbeat failed");
                }
                if cfg.datapath_type == "netdev" {
                    touch_peers(&api, &cfg, &mut touched, seeder.as_mut(), &health).await;
                }
            }
            batch = monitor.next() => {
                if batch.is_none() {
                    return Err(AgentError::System("the OVSDB monitor ended".into()));
                }
                // Something changed in the switch's configuration: make sure it is still ours,
                // and the host's side of the external port too (a new port loses its routes).
                let r = ensure_switch(&cfg, &vs).await;
                remap(&cfg, &vs, &mut mapped, &mut spec, &health).await;
                nudge.notify_one();
                health.switch_check(r.is_ok());
                if let Err(e) = r {
                    tracing::warn!(error = %e, "repairing the switch failed; will retry");
                }
            }
            _ = audit.tick() => {
                let r = ensure_switch(&cfg, &vs).await;
                remap(&cfg, &vs, &mut mapped, &mut spec, &health).await;
                health.switch_check(r.is_ok());
                if let Err(e) = r {
                    tracing::warn!(error = %e, "switch audit failed");
                }
            }
        }
    }
}

/// Makes the bridge mappings real again and registers the physical networks that are mapped
/// (with the next heartbeat); says once what changed.
async fn remap(cfg: &AgentConfig, vs: &VSwitch, mapped: &mut mappings::Mapped, spec: &mut HostSpec, health: &health::Health) {
    if cfg.bridge_mappings.is_empty() {
        return;
    }
    let host = mappings::Host { netns: None, datapath_type: &cfg.datapath_type };
    let now = mappings::ensure(host, vs, &cfg.bridge_mappings).await;
    if now != *mapped {
        for f in &now.failed {
            tracing::warn!(mapping = %f, "a bridge mapping cannot be made; its physical network is not registered for this host");
        }
        if !now.ok.is_empty() {
            tracing::info!(physical_networks = ?now.ok, "physical networks mapped");
        }
    }
    health.mappings_failed(now.failed.len());
    spec.physical_networks = now.ok.clone();
    *mapped = now;
}

/// The userspace datapath drops a tunnel packet whose remote host's MAC it does not know yet
/// (it learns MACs by watching ARP on `br-phy`), so the first packet to a new host would be
/// lost. A datagram from this host's own stack to every other host's tunnel address, at
/// first sight and then every minute, makes the kernel ARP for it and OVS learn the answer.
async fn touch_peers(
    api: &Client,
    cfg: &AgentConfig,
    touched: &mut BTreeMap<Ipv4Addr, std::time::Instant>,
    seeder: Option<&mut neigh::Seeder>,
    health: &health::Health,
) {
    let hosts = match api.hosts().await {
        Ok(h) => h,
        Err(e) => {
            // Visible, not swallowed: without the list no peer is touched, and first packets
            // to them wait for OVS to ARP.
            tracing::warn!(error = %e, "cannot list the hosts to reach the tunnels' far ends");
            return;
        }
    };
    let peers: Vec<Ipv4Addr> = hosts.iter().filter(|h| h.spec.name != cfg.name).map(|h| h.spec.tunnel_ip).collect();
    let due: Vec<Ipv4Addr> = peers.iter().copied().filter(|ip| touched.get(ip).is_none_or(|t| t.elapsed() >= Duration::from_secs(60))).collect();
    if !due.is_empty() {
        if let Ok(sock) = std::net::UdpSocket::bind((cfg.tunnel_ip, 0)) {
            for &ip in &due {
                // The discard port: nobody answers; the kernel's ARP for it is the point.
                let _ = sock.send_to(b"plexus", (ip, 9));
                touched.insert(ip, std::time::Instant::now());
            }
        }
    }
    // Peers on the underlay's own subnet are reached directly: OVS needs their MACs.
    let mask = u32::MAX.checked_shl(32 - u32::from(cfg.tunnel_prefix)).unwrap_or(0);
    let on_link: Vec<Ipv4Addr> = peers.into_iter().filter(|ip| u32::from(*ip) & mask == u32::from(cfg.tunnel_ip) & mask).collect();
    let Some(seeder) = seeder else { return };
    let mut missing = seeder.seed(&on_link).await;
    // A peer just touched is usually learned within milliseconds: look again shortly.
    for _ in 0..10 {
        if missing.is_empty() || !missing.iter().any(|m| due.contains(m)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        missing = seeder.seed(&on_link).await;
    }
    health.tunnel_peers(on_link.len(), &missing);
}
