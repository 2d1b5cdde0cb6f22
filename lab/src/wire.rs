//! Hand wiring of lab hosts through the `ovs` crate alone: the userspace-tunnel arrangement
//! (underlay address on `br-phy`, a flow-based VXLAN port on `br-int`) and point-to-point
//! flows between two containers. The agent and the controller do this for real; tests that
//! exercise the compiler or the data plane without them use this wiring.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use plexus_ovs::openflow::{Action, Connection, ConnectionOptions, Field, FlowMod, Match, Message};
use plexus_ovs::ovsdb::{BridgeSpec, Client, ClientOptions, InterfaceType, PortSpec, VSwitch};

use super::{Container, LabError, LabHost};

/// The integration bridge.
pub use plexus_agent::agent::BR_INT;
/// The bridge holding the underlay interface and address.
pub use plexus_agent::underlay::BR_PHY;
/// The flow-based VXLAN port.
pub const VXLAN_PORT: &str = plexus_api::Encap::Vxlan.port_name();
/// The MTU of the lab's containers: the lab's 1500-byte underlay less VXLAN's overhead.
pub const CONTAINER_MTU: u32 = 1500 - plexus_api::Encap::Vxlan.overhead();

fn ovs_err(e: impl std::fmt::Display) -> LabError {
    LabError::Command { cmd: "ovs".into(), reason: e.to_string() }
}

/// Connects to a host's database.
pub async fn vswitch(host: &LabHost) -> Result<VSwitch, LabError> {
    let c = Client::connect(host.ovsdb_target(), ClientOptions::default(), Duration::from_secs(10)).await.map_err(ovs_err)?;
    Ok(VSwitch::new(c))
}

/// Prepares a host for userspace tunnels: `br-phy` (netdev) takes `eth0`, its MAC and address,
/// and `br-int` (netdev, fail_mode secure, OpenFlow 1.3) gets a VXLAN port with
/// `remote_ip=flow key=flow`. Returns the VXLAN port's OpenFlow number.
pub async fn prepare_host(host: &LabHost, vs: &VSwitch) -> Result<u32, LabError> {
    let int = BridgeSpec {
        name: BR_INT.into(),
        datapath_type: "netdev".into(),
        fail_mode: Some("secure".into()),
        protocols: vec!["OpenFlow13".into()],
        // The id the controller expects for a host of this name.
        datapath_id: Some(plexus_api::ids::datapath_id(&host.name)),
        other_config: BTreeMap::new(),
        external_ids: BTreeMap::new(),
    };
    vs.ensure_bridge(&int).await.map_err(ovs_err)?;
    let vx = PortSpec::new(VXLAN_PORT, InterfaceType::Vxlan).option("remote_ip", "flow").option("key", "flow");
    vs.add_port(BR_INT, &vx).await.map_err(ovs_err)?;
    let ns = plexus_agent::netns::path(&host.netns);
    plexus_agent::underlay::adopt(vs, Some(&ns), "eth0", host.underlay_ip, 24).await.map_err(ovs_err)?;
    vs.wait_ofport(VXLAN_PORT, Duration::from_secs(10)).await.map_err(ovs_err)
}

/// Plugs a container's host-side veth into `br-int`; returns its OpenFlow port.
pub async fn plug(vs: &VSwitch, c: &Container) -> Result<u32, LabError> {
    vs.add_port(BR_INT, &PortSpec::new(&c.host_if, InterfaceType::System).external_id("plexus-lab", "container")).await.map_err(ovs_err)?;
    vs.wait_ofport(&c.host_if, Duration::from_secs(10)).await.map_err(ovs_err)
}

/// Opens an OpenFlow session to a host's `br-int` over its management socket.
pub async fn openflow(host: &LabHost) -> Result<Connection, LabError> {
    openflow_to(host, BR_INT).await
}

/// Opens an OpenFlow session to one of a host's bridges over its management socket.
pub async fn openflow_to(host: &LabHost, bridge: &str) -> Result<Connection, LabError> {
    let (c, _events) = Connection::connect_unix(host.ovs.mgmt_sock(bridge), ConnectionOptions::default()).await.map_err(ovs_err)?;
    Ok(c)
}

/// The two flows that join a local port to a remote host through the tunnel with `vni`.
pub fn p2p_flows(local_port: u32, tunnel_port: u32, vni: u64, remote: Ipv4Addr, cookie: u64) -> Vec<Message> {
    vec![
        Message::FlowMod(FlowMod::add(0, 100, Match::new().in_port(local_port)).cookie(cookie).apply(vec![
            Action::set_field(Field::TunnelId, vni),
            Action::set_tun_dst(remote),
            Action::output(tunnel_port),
        ])),
        Message::FlowMod(FlowMod::add(0, 100, Match::new().in_port(tunnel_port).tunnel_id(vni)).cookie(cookie).apply(vec![Action::output(local_port)])),
    ]
}

/// Builds the foundation's data-plane proof: container `name_a` on host `a` and `name_b` on
/// host `b` (addresses `10.0.0.1` and `10.0.0.2`), both hosts prepared for userspace
/// tunnels, and flows through the codec joining the two over VXLAN `vni`.
pub async fn connect_pair(lab: &super::Lab, a: &LabHost, name_a: &str, b: &LabHost, name_b: &str, vni: u64) -> Result<(Container, Container), LabError> {
    let mtu = CONTAINER_MTU;
    let ca = lab.add_container(a, name_a, Ipv4Addr::new(10, 0, 0, 1), mtu)?;
    let cb = lab.add_container(b, name_b, Ipv4Addr::new(10, 0, 0, 2), mtu)?;
    for (host, local, remote) in [(a, &ca, b), (b, &cb, a)] {
        let vs = vswitch(host).await?;
        let tun = prepare_host(host, &vs).await?;
        let port = plug(&vs, local).await?;
        let of = openflow(host).await?;
        of.bundle(&p2p_flows(port, tun, vni, remote.underlay_ip, 0x1)).await.map_err(ovs_err)?;
        tracing::info!(host = %host.name, port, tunnel = tun, "point-to-point flows installed");
    }
    Ok((ca, cb))
}
