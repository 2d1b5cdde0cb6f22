//! The userspace datapath's underlay: the host's address moves from its underlay interface to
//! `br-phy`, the bridge holding that interface, because OVS's native tunnelling only finds
//! routes and neighbours through an address on one of its own bridges.
//!
//! `br-phy` takes the underlay interface's MAC. With a MAC of its own, a peer could learn
//! either MAC for the tunnel address: the interface's, from before the move or from the
//! kernel answering ARP on the interface as well as on the bridge. OVS keeps the first
//! answer in its tunnel neighbour cache and sends every tunnel packet there, where nothing
//! decapsulates it; a host stayed unreachable for as long as the entry lived. With one MAC,
//! every answer is right. The interface itself is then told to answer no ARP and accept no
//! IP (`arp_ignore=1`, `rp_filter=1`): the bridge receives all of it, and the kernel would
//! otherwise take a second copy of every frame through the interface.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::TryStreamExt;
use plexus_ovs::ovsdb::{BridgeSpec, InterfaceType, OvsdbError, PortSpec, VSwitch};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec};

use crate::plumb::{link_index, netlink_in, nl, PlumbError};

/// The bridge holding the underlay interface and the tunnel address.
pub const BR_PHY: &str = "br-phy";

/// How long OVS may take to give `br-phy` the interface's MAC.
const MAC_WAIT: Duration = Duration::from_secs(5);

/// Errors of moving the underlay onto `br-phy`.
#[derive(Debug, thiserror::Error)]
pub enum UnderlayError {
    /// OVSDB refused or failed.
    // Inner errors are in the message, not chained as sources (each said once).
    #[error("ovsdb: {0}")]
    Ovsdb(OvsdbError),
    /// A netlink step failed.
    #[error("{0}")]
    Netlink(PlumbError),
}

impl From<OvsdbError> for UnderlayError {
    fn from(e: OvsdbError) -> Self {
        UnderlayError::Ovsdb(e)
    }
}

impl From<PlumbError> for UnderlayError {
    fn from(e: PlumbError) -> Self {
        UnderlayError::Netlink(e)
    }
}

/// Puts `iface` on `br-phy` (netdev, with `iface`'s MAC) and moves `addr/prefix` from `iface`
/// to `br-phy`, in `netns` (the caller's namespace for `None`). Idempotent; returns whether
/// anything about the address changed.
pub async fn adopt(vs: &VSwitch, netns: Option<&Path>, iface: &str, addr: Ipv4Addr, prefix: u8) -> Result<bool, UnderlayError> {
    let (name, ns) = (iface.to_string(), netns.map(Path::to_path_buf));
    let mac = off_runtime(move || link_mac(ns.as_deref(), &name)).await?;
    let phy = BridgeSpec {
        name: BR_PHY.into(),
        datapath_type: "netdev".into(),
        other_config: BTreeMap::from([("hwaddr".to_string(), plexus_api::mac::format_mac(mac))]),
        ..Default::default()
    };
    vs.ensure_bridge(&phy).await?;
    vs.add_port(BR_PHY, &PortSpec::new(iface, InterfaceType::System)).await?;
    vs.wait_ofport(iface, Duration::from_secs(10)).await?;
    // br-phy's own device appears when OVS has opened it; until then the address has nowhere
    // to go and the interface must keep it.
    vs.wait_ofport(BR_PHY, Duration::from_secs(10)).await?;
    let (name, ns) = (iface.to_string(), netns.map(Path::to_path_buf));
    let moved = off_runtime(move || move_address(ns.as_deref(), &name, mac, addr, prefix)).await?;
    if moved {
        tracing::info!(%addr, prefix, "underlay address moved to br-phy");
    }
    Ok(moved)
}

/// Runs a netlink step (which joins a thread of its own) without holding up the runtime.
async fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> Result<T, PlumbError> + Send + 'static) -> Result<T, PlumbError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| PlumbError::Netlink { step: "netlink worker".into(), err: e.to_string() })?
}

/// The MAC of `iface` in `netns`.
pub fn link_mac(netns: Option<&Path>, iface: &str) -> Result<[u8; 6], PlumbError> {
    let name = iface.to_string();
    netlink_in(netns, move |h| async move {
        let i = link_index(&h, &name).await?.ok_or_else(|| PlumbError::Invalid { field: "underlay_iface", reason: format!("there is no interface {name}") })?;
        mac_of(&h, i).await?.ok_or_else(|| PlumbError::Invalid { field: "underlay_iface", reason: format!("{name} has no Ethernet address") })
    })
}

pub(crate) async fn mac_of(h: &Handle, index: u32) -> Result<Option<[u8; 6]>, PlumbError> {
    let link = h.link().get().match_index(index).execute().try_next().await.map_err(nl("reading a link"))?;
    Ok(link.and_then(|l| {
        l.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(m) => <[u8; 6]>::try_from(m.as_slice()).ok(),
            _ => None,
        })
    }))
}

fn move_address(netns: Option<&Path>, iface: &str, mac: [u8; 6], addr: Ipv4Addr, prefix: u8) -> Result<bool, PlumbError> {
    let iface = iface.to_string();
    netlink_in(netns, move |h| async move {
        let ii = link_index(&h, &iface).await?.ok_or_else(|| PlumbError::Invalid { field: "underlay_iface", reason: format!("{iface} vanished") })?;
        let bi = link_index(&h, BR_PHY).await?.ok_or_else(|| PlumbError::Netlink { step: format!("finding {BR_PHY}"), err: "missing".into() })?;
        // OVS applies hwaddr on its next reconfiguration: the address must not be seen on
        // br-phy before its MAC is the interface's.
        let deadline = tokio::time::Instant::now() + MAC_WAIT;
        while mac_of(&h, bi).await? != Some(mac) {
            if tokio::time::Instant::now() > deadline {
                return Err(PlumbError::Netlink { step: format!("waiting for {BR_PHY} to take {iface}'s MAC"), err: format!("not done within {MAC_WAIT:?}") });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (key, value) in [("arp_ignore", "1"), ("rp_filter", "1")] {
            set_sysctl(&iface, key, value)?;
        }
        let mut moved = false;
        let mut on_iface = h.address().get().set_link_index_filter(ii).execute();
        let mut stale = Vec::new();
        while let Some(a) = on_iface.try_next().await.map_err(nl(format!("listing {iface}'s addresses")))? {
            if a.header.family == AddressFamily::Inet {
                stale.push(a);
            }
        }
        for a in stale {
            h.address().del(a).execute().await.map_err(nl(format!("removing an address from {iface}")))?;
            moved = true;
        }
        let mut on_bridge = h.address().get().set_link_index_filter(bi).execute();
        let mut has = false;
        while let Some(a) = on_bridge.try_next().await.map_err(nl(format!("listing {BR_PHY}'s addresses")))? {
            has |= a.header.prefix_len == prefix
                && a.attributes.iter().any(|x| matches!(x, AddressAttribute::Local(IpAddr::V4(v)) | AddressAttribute::Address(IpAddr::V4(v)) if *v == addr));
        }
        if !has {
            h.address().add(bi, IpAddr::V4(addr), prefix).replace().execute().await.map_err(nl(format!("adding {addr}/{prefix} to {BR_PHY}")))?;
            moved = true;
        }
        h.link().set(LinkUnspec::new_with_index(bi).up().build()).execute().await.map_err(nl(format!("bringing {BR_PHY} up")))?;
        Ok(moved)
    })
}

/// Sets `net.ipv4.conf.IFACE.KEY` in the calling thread's namespace (opened from this thread,
/// /proc/sys/net is the namespace's own). A container sees /proc/sys read-only: there a value
/// already set is fine, and a missing one is a warning naming the command that sets it, not
/// a failure, since one MAC on both devices already keeps tunnels working.
fn set_sysctl(iface: &str, key: &str, value: &str) -> Result<(), PlumbError> {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let path = format!("/proc/sys/net/ipv4/conf/{iface}/{key}");
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    match std::fs::write(&path, value) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EROFS) || e.kind() == std::io::ErrorKind::PermissionDenied => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(%path, error = %e, "cannot set; run `sysctl -w net.ipv4.conf.{iface}.arp_ignore=1 net.ipv4.conf.{iface}.rp_filter=1` on the host, or the kernel answers ARP twice and takes a second copy of every frame on {iface}");
            }
            Ok(())
        }
        Err(e) => Err(PlumbError::Netlink { step: format!("writing {path}"), err: e.to_string() }),
    }
}
