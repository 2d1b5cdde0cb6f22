//! Bridge mappings: a physical network name to the interface or OVS bridge that carries it on
//! this host (`--bridge-mapping physnet1=eth1`). Each mapped bridge is joined to `br-int` by a
//! patch pair ([`plexus_api::network::uplink_port`]), through which underlay networks' frames
//! leave (tagged with their VLAN by `br-int`'s flows) and arrive. A mapping to an interface on
//! no bridge gets a bridge of its own; a mapping to an interface that does not exist is
//! reported and skipped, and the host registers only the physical networks it really maps.

use std::collections::BTreeMap;

use plexus_api::network::{uplink_peer, uplink_port};
use plexus_ovs::ovsdb::{BridgeSpec, InterfaceType, PortSpec, VSwitch};

use super::BR_INT;

/// What became of the mappings: the physical networks mapped, and why the others are not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapped {
    /// Mapped physical networks, sorted.
    pub ok: Vec<String>,
    /// `physnet: reason` for each mapping that failed.
    pub failed: Vec<String>,
}

/// The bridge `target` names, or that holds it; `None` if OVS knows neither.
async fn bridge_of(vs: &VSwitch, target: &str) -> Result<Option<String>, plexus_ovs::ovsdb::OvsdbError> {
    let bridges = vs.bridges().await?;
    if bridges.iter().any(|b| b == target) {
        return Ok(Some(target.to_string()));
    }
    for b in bridges.iter().filter(|b| *b != BR_INT) {
        if vs.ports(b).await?.iter().any(|p| p == target) {
            return Ok(Some(b.clone()));
        }
    }
    Ok(None)
}

/// Where the mapped interfaces live and what bridges for them are made of.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    /// The host's network namespace (the caller's for `None`, as for the agent itself).
    pub netns: Option<&'a std::path::Path>,
    /// The datapath type of a bridge made for an interface.
    pub datapath_type: &'a str,
}

async fn map_one(host: Host<'_>, vs: &VSwitch, physnet: &str, target: &str) -> Result<(), String> {
    let bridge = match bridge_of(vs, target).await.map_err(|e| e.to_string())? {
        Some(b) => b,
        None => {
            let (name, ns) = (target.to_string(), host.netns.map(std::path::Path::to_path_buf));
            let exists =
                tokio::task::spawn_blocking(move || crate::plumb::netlink_in(ns.as_deref(), move |h| async move { crate::plumb::link_index(&h, &name).await }))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?
                    .is_some();
            if !exists {
                return Err(format!("there is no interface or OVS bridge {target} on this host"));
            }
            // An interface of its own: a bridge for it (kept short: a device name).
            let bridge = format!("plx-b{:08x}", plexus_api::ids::fnv1a(physnet) as u32);
            let spec = BridgeSpec { name: bridge.clone(), datapath_type: host.datapath_type.to_string(), ..Default::default() };
            vs.ensure_bridge(&spec).await.map_err(|e| e.to_string())?;
            vs.add_port(&bridge, &PortSpec::new(target, InterfaceType::System)).await.map_err(|e| e.to_string())?;
            bridge
        }
    };
    let (up, down) = (uplink_port(physnet), uplink_peer(physnet));
    vs.add_port(BR_INT, &PortSpec::new(&up, InterfaceType::Patch).option("peer", &down)).await.map_err(|e| e.to_string())?;
    vs.add_port(&bridge, &PortSpec::new(&down, InterfaceType::Patch).option("peer", &up)).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Makes every mapping of `mappings` real; idempotent (it doubles as drift repair).
pub async fn ensure(host: Host<'_>, vs: &VSwitch, mappings: &BTreeMap<String, String>) -> Mapped {
    let mut out = Mapped::default();
    for (physnet, target) in mappings {
        match map_one(host, vs, physnet, target).await {
            Ok(()) => out.ok.push(physnet.clone()),
            Err(e) => out.failed.push(format!("{physnet}={target}: {e}")),
        }
    }
    out
}
