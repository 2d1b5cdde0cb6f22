//! Attaching a container's namespace to a Plexus network, and detaching it: the endpoint made
//! through the controller's API, the veth plumbed over netlink ([`crate::plumb`]), and its host
//! end added to `br-int` with `external_ids` naming the endpoint, so the switch manager knows
//! the port. Each step undoes the earlier ones when a later one fails.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use plexus_api::{Client, Endpoint, EndpointSpec};
use plexus_ovs::ovsdb::{InterfaceType, PortSpec, VSwitch};

use crate::agent::BR_INT;
use crate::plumb::{self, Plumbing};

/// The `external_ids` key naming a port's endpoint (`NETWORK/ID`).
pub const ENDPOINT_KEY: &str = "plexus-endpoint";

/// What to attach.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    /// Network name.
    pub network: String,
    /// This host's registered name.
    pub host: String,
    /// Endpoint id wanted (generated when `None`).
    pub id: Option<String>,
    /// Address wanted (from IPAM when `None`).
    pub ip: Option<Ipv4Addr>,
    /// IPv6 address wanted on a dual-stack network (from IPAM when `None`).
    pub ip6: Option<std::net::Ipv6Addr>,
    /// MAC address wanted (derived when `None`).
    pub mac: Option<String>,
    /// Interface name inside the container.
    pub ifname: String,
    /// The container's network namespace.
    pub netns: PathBuf,
    /// The namespace where this host's Open vSwitch runs, when it is not the caller's (a lab
    /// host's, for a runtime in the root namespace): the veth's host end goes there.
    pub host_netns: Option<PathBuf>,
    /// MTU; `None` means the underlay's MTU minus the encapsulation's overhead.
    pub mtu: Option<u32>,
    /// Who asked (recorded as the endpoint's owner).
    pub owner: String,
    /// The endpoint's labels (what policies select it by).
    pub labels: std::collections::BTreeMap<String, String>,
    /// Ports it publishes on the host's addresses.
    pub publish: Vec<plexus_api::PublishedPort>,
    /// `br-int`'s OpenFlow management socket: when given, attach returns only once the
    /// controller has programmed the new port (so the first packet is not lost).
    pub mgmt: Option<PathBuf>,
}

/// What [`attach`] made.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Its OVS port (the veth's host end).
    pub port: String,
    /// MTU given to the interface.
    pub mtu: u32,
    /// Whether the container got its default route through this interface.
    pub default_route: bool,
}

impl From<plexus_api::ClientError> for AttachError {
    fn from(e: plexus_api::ClientError) -> Self {
        AttachError::Api(e)
    }
}

impl From<plexus_ovs::ovsdb::OvsdbError> for AttachError {
    fn from(e: plexus_ovs::ovsdb::OvsdbError) -> Self {
        AttachError::Ovsdb(e)
    }
}

impl From<plumb::PlumbError> for AttachError {
    fn from(e: plumb::PlumbError) -> Self {
        AttachError::Plumb(e)
    }
}

/// What [`detach`] found and removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Detached {
    /// The OVS port was removed.
    pub port: bool,
    /// The veth was removed.
    pub veth: bool,
    /// The endpoint was deleted.
    pub endpoint: bool,
}

/// Errors of attaching and detaching.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The controller refused or could not be reached.
    // The inner errors are shown in the message, not chained as sources, so that a chain of
    // causes (`{:#}`) says each thing once.
    #[error("controller: {0}")]
    Api(plexus_api::ClientError),
    /// OVSDB failed.
    #[error("ovsdb: {0}")]
    Ovsdb(plexus_ovs::ovsdb::OvsdbError),
    /// Netlink failed.
    #[error("{0}")]
    Plumb(plumb::PlumbError),
    /// A request field is unusable.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// The MTU for containers on `host`: its tunnel interface's MTU (1500 when no interface in
/// namespace `ns`, the caller's when `None`, holds the tunnel address) less the
/// encapsulation's overhead.
pub fn container_mtu(ns: Option<&std::path::Path>, tunnel_ip: Ipv4Addr) -> Result<u32, AttachError> {
    Ok(path_mtu(tunnel_ip, plumb::mtu_of_address(ns, tunnel_ip)?))
}

/// The MTU for containers behind an underlay of `underlay` bytes (1500 when unknown) less the
/// encapsulation's overhead.
pub fn path_mtu(tunnel_ip: Ipv4Addr, underlay: Option<u32>) -> u32 {
    let underlay = underlay.unwrap_or_else(|| {
        tracing::info!(%tunnel_ip, "no interface here holds the tunnel address; assuming an underlay MTU of 1500");
        1500
    });
    underlay.saturating_sub(plexus_api::Encap::MAX_OVERHEAD).max(68)
}

/// What `network`'s frames may be when an overlay's may be `overlay_path`: the same for an
/// overlay, the underlay link's whole MTU for an underlay network (no tunnel headers).
pub fn network_path(network: &plexus_api::Network, overlay_path: u32) -> u32 {
    path_with_overhead(network.overhead(), overlay_path)
}

/// What frames may be for a network whose packets carry `overhead` bytes between hosts, when
/// an overlay's may be `overlay_path`.
pub fn path_with_overhead(overhead: u32, overlay_path: u32) -> u32 {
    overlay_path + plexus_api::Encap::MAX_OVERHEAD - overhead
}

/// The MTU of an endpoint: its network's, if it has one, and never more than `path` allows
/// (a host whose underlay is smaller than the others' gets the smaller MTU).
pub fn effective_mtu(network_mtu: Option<u32>, path: u32) -> u32 {
    network_mtu.map_or(path, |m| m.min(path))
}

/// Creates the endpoint through the API and plugs it in; on any failure nothing is left
/// behind, neither the endpoint nor a veth nor a port.
pub async fn attach(api: &Client, vs: &VSwitch, req: &AttachRequest) -> Result<Attached, AttachError> {
    // Check everything local before the controller allocates anything.
    if req.mtu.is_some_and(|m| !(68..=65535).contains(&m)) {
        return Err(AttachError::Invalid { field: "mtu", reason: "must lie in 68..=65535".into() });
    }
    if !req.netns.exists() {
        return Err(AttachError::Invalid { field: "netns", reason: format!("{} does not exist", req.netns.display()) });
    }
    if vs.datapath_type(BR_INT).await?.is_none() {
        return Err(AttachError::Invalid { field: "host", reason: format!("this host's switch has no {BR_INT}: is the Plexus agent running?") });
    }
    let hosts = api.hosts().await?;
    let Some(host) = hosts.iter().find(|h| h.spec.name == req.host) else {
        return Err(AttachError::Invalid {
            field: "host",
            reason: format!("no host {:?} is registered with the controller (is its agent running? --host names it)", req.host),
        });
    };
    // The network's MTU, bounded by what this host's tunnels carry; `--mtu` overrides both.
    let network = api.network(&req.network).await?;
    let mtu = match req.mtu {
        Some(m) => m,
        None => effective_mtu(network.spec.mtu, network_path(&network, container_mtu(req.host_netns.as_deref(), host.spec.tunnel_ip)?)),
    };
    let spec = EndpointSpec {
        id: req.id.clone(),
        host: req.host.clone(),
        ip: req.ip,
        ip6: req.ip6,
        mac: req.mac.clone(),
        owner: Some(req.owner.clone()),
        labels: req.labels.clone(),
        publish: req.publish.clone(),
    };
    let endpoint = api.create_endpoint(&req.network, &spec).await?;
    tracing::info!(network = %endpoint.network, id = %endpoint.id, ip = %endpoint.ip, "endpoint created");
    match plug(vs, &endpoint, req.host_netns.clone(), req.netns.clone(), &req.ifname, mtu, req.mgmt.clone()).await {
        Ok((port, default_route)) => Ok(Attached { endpoint, port, mtu, default_route }),
        Err(e) => {
            if let Err(de) = api.delete_endpoint(&endpoint.network, &endpoint.id).await {
                tracing::warn!(error = %de, id = %endpoint.id, "could not delete the endpoint of a failed attach");
            }
            Err(with_hint(e))
        }
    }
}

/// `br-int`'s OpenFlow management socket for the OVSDB target `ovsdb`: OVS keeps it next to
/// its database socket (`None` for a target that is no local socket).
pub fn mgmt_socket(ovsdb: &str) -> Option<PathBuf> {
    ovsdb.strip_prefix("unix:").and_then(|p| std::path::Path::new(p).parent()).map(|d| d.join(format!("{BR_INT}.mgmt")))
}

/// Adds what to do to an error an operator can fix from where they are.
fn with_hint(e: AttachError) -> AttachError {
    match e {
        // OVS opens the host end of the veth by name in its own network namespace: the veth
        // was made in this process's, and they differ.
        AttachError::Ovsdb(plexus_ovs::ovsdb::OvsdbError::NotFound(msg)) if msg.contains("No such device") => AttachError::Invalid {
            field: "netns",
            reason: format!(
                "{msg}. The veth was made in this shell's network namespace, but this host's Open vSwitch runs in another: \
                 run plexus attach in the namespace where ovs-vswitchd runs (for a lab host: ip netns exec plx-LAB-hN plexus attach ...)"
            ),
        },
        e => e,
    }
}

/// Plumbs an existing endpoint into `netns` and adds its port to `br-int`; returns the port
/// and whether the default route was added. Undoes the veth when the port cannot be added.
/// With `mgmt` (`br-int`'s management socket) it also waits, for a few seconds at most, until
/// the controller has programmed the port.
pub async fn plug(
    vs: &VSwitch,
    e: &Endpoint,
    host_netns: Option<PathBuf>,
    netns: PathBuf,
    ifname: &str,
    mtu: u32,
    mgmt: Option<PathBuf>,
) -> Result<(String, bool), AttachError> {
    let port = plexus_api::ids::port_name(&e.network, &e.id);
    let mac = e.mac.octets();
    let checksum_offload_off = vs.datapath_type(BR_INT).await?.as_deref() == Some("netdev");
    let p = Plumbing {
        host_netns: host_netns.clone(),
        netns,
        ifname: ifname.into(),
        host_if: port.clone(),
        mac,
        ip: e.ip,
        prefix_len: e.prefix_len,
        gateway: Some(e.gateway),
        v6: e.ip6.map(|ip| plumb::PlumbingV6 { ip, prefix_len: e.prefix_len6.unwrap_or(64), gateway: e.gateway6 }),
        mtu,
        checksum_offload_off,
    };
    let plumbed =
        tokio::task::spawn_blocking(move || plumb::plumb(&p)).await.map_err(|err| AttachError::Invalid { field: "netns", reason: err.to_string() })??;
    let spec = PortSpec::new(&port, InterfaceType::System).external_id(ENDPOINT_KEY, &format!("{}/{}", e.network, e.id));
    let added = async {
        vs.add_port(BR_INT, &spec).await?;
        Ok::<_, AttachError>(vs.wait_ofport(&port, Duration::from_secs(10)).await?)
    };
    let ofport = added.await;
    if let (Ok(n), Some(m)) = (&ofport, &mgmt) {
        if !wait_programmed(m, *n, Duration::from_secs(5)).await {
            tracing::warn!(%port, "the controller has not programmed the port yet; traffic starts once it has");
        }
    }
    if let Err(err) = ofport {
        let _ = vs.delete_port(BR_INT, &port).await;
        let p2 = port.clone();
        let _ = tokio::task::spawn_blocking(move || plumb::unplumb(host_netns.as_deref(), &p2)).await;
        return Err(err);
    }
    tracing::info!(%port, ifname, mtu, "endpoint plugged in");
    Ok((port, plumbed.default_route))
}

/// Unplugs an endpoint and deletes it: the OVS port, the veth (and with it the container's
/// interface) and the endpoint. Whatever is already gone is skipped, so a repeated or
/// interrupted detach can simply be run again. `host_netns` is where the veth's host end is,
/// when not in the caller's namespace.
pub async fn detach(api: &Client, vs: &VSwitch, host_netns: Option<&std::path::Path>, network: &str, id: &str) -> Result<Detached, AttachError> {
    let port = plexus_api::ids::port_name(network, id);
    let mut d = Detached { port: vs.delete_port(BR_INT, &port).await?, ..Default::default() };
    let (p2, ns) = (port.clone(), host_netns.map(std::path::Path::to_path_buf));
    d.veth = tokio::task::spawn_blocking(move || plumb::unplumb(ns.as_deref(), &p2))
        .await
        .map_err(|err| AttachError::Invalid { field: "port", reason: err.to_string() })??;
    d.endpoint = match api.delete_endpoint(network, id).await {
        Ok(()) => true,
        Err(plexus_api::ClientError::Problem(p)) if p.status == 404 => false,
        Err(e) => return Err(e.into()),
    };
    Ok(d)
}

/// Whether a flow matching `in_port=ofport` shows on the switch within `timeout`: the
/// controller has classified the port. Best effort: an unreachable socket counts as no.
async fn wait_programmed(mgmt: &std::path::Path, ofport: u32, timeout: Duration) -> bool {
    use plexus_ovs::openflow::{Connection, ConnectionOptions, FlowStatsRequest, Match};
    let Ok((conn, _events)) = Connection::connect_unix(mgmt, ConnectionOptions::default()).await else { return false };
    // The switch picks the port's flows itself: a host with thousands of flows is not read
    // whole every 20 ms.
    let req = FlowStatsRequest { match_: Match::new().in_port(ofport), ..Default::default() };
    let t = std::time::Instant::now();
    // The controller usually programs a port within milliseconds: look again soon, then less
    // often (a fixed 20 ms would cost every attach 20 ms).
    let mut wait = Duration::from_millis(2);
    while t.elapsed() < timeout {
        if conn.dump_flows(req.clone()).await.is_ok_and(|flows| !flows.is_empty()) {
            return true;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(20));
    }
    false
}
