//! Endpoint plumbing, the Pipework feature: a veth pair whose one end goes into a container's
//! network namespace under the name the user asked for, with the endpoint's MAC, address, MTU
//! and (for its first interface) a default route via the network's gateway. Everything is done
//! over rtnetlink; the other end stays in the host's namespace, ready to be added to `br-int`.
//!
//! Each step that touches a namespace runs on a thread of its own that has entered that
//! namespace, with a netlink socket opened there, so the calling thread's namespace never
//! changes. A failure part-way removes the veth again: a failed attach leaves nothing behind.

use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::packet_route::route::RouteAttribute;
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// What to build for one endpoint.
#[derive(Debug, Clone)]
pub struct Plumbing {
    /// The host's namespace, where the host end stays; `None` for the caller's own.
    pub host_netns: Option<PathBuf>,
    /// The container's namespace: `/proc/PID/ns/net`, `/run/netns/NAME`, or a bind mount.
    pub netns: PathBuf,
    /// Interface name inside the container.
    pub ifname: String,
    /// The host end's name (the OVS port's name).
    pub host_if: String,
    /// MAC address of the container's interface.
    pub mac: [u8; 6],
    /// Address.
    pub ip: Ipv4Addr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Gateway for a default route, added only when the container has no default route yet
    /// (so only its first interface gets one).
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 side of a dual-stack endpoint.
    pub v6: Option<PlumbingV6>,
    /// MTU of both ends.
    pub mtu: u32,
    /// Turn TX checksum offload off on both ends. The userspace datapath needs this: it
    /// forwards veth frames whose checksum the kernel left for hardware that never fills it.
    pub checksum_offload_off: bool,
}

/// The IPv6 address of a dual-stack endpoint, added without duplicate address detection (the
/// controller keeps addresses unique, and a tentative address could not be used for a second).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlumbingV6 {
    /// Address.
    pub ip: Ipv6Addr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Gateway for a default route, added like the IPv4 one (only when there is none).
    pub gateway: Option<Ipv6Addr>,
}

/// What [`plumb`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plumbed {
    /// Whether the default route was added.
    pub default_route: bool,
}

/// Errors of plumbing.
#[derive(Debug, thiserror::Error)]
pub enum PlumbError {
    /// A namespace file cannot be opened.
    #[error("network namespace {path}: {err}")]
    Netns {
        /// Its path.
        path: PathBuf,
        /// Why.
        err: std::io::Error,
    },
    /// An argument is unusable.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A netlink request failed.
    #[error("{step}: {err}")]
    Netlink {
        /// What was being done.
        step: String,
        /// The kernel's answer.
        err: String,
    },
}

pub(crate) fn nl(step: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> PlumbError {
    let step = step.into();
    move |e| PlumbError::Netlink { err: describe(&e), step }
}

/// The kernel's errno as text where there is one ("File exists" beats "NetlinkError(…)").
fn describe(e: &rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    }
}

fn check_ifname(field: &'static str, name: &str) -> Result<(), PlumbError> {
    let ok = !name.is_empty() && name.len() <= 15 && name != "." && name != ".." && !name.contains(['/', ':']) && !name.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(PlumbError::Invalid { field, reason: format!("{name:?} is not an interface name (1 to 15 characters, no '/', ':' or spaces)") })
    }
}

fn open_ns(path: &Path) -> Result<File, PlumbError> {
    let f = File::open(path).map_err(|err| PlumbError::Netns { path: path.to_path_buf(), err })?;
    // A regular file here would let setns fail later with a less helpful message.
    let meta = f.metadata().map_err(|err| PlumbError::Netns { path: path.to_path_buf(), err })?;
    if meta.is_dir() {
        return Err(PlumbError::Netns { path: path.to_path_buf(), err: std::io::Error::other("is a directory, not a namespace") });
    }
    Ok(f)
}

/// Runs `f` with a netlink handle opened inside `ns` (the caller's namespace for `None`), on a
/// thread of its own with its own runtime: callers may be async or not.
pub(crate) fn netlink_in<T, F, Fut>(ns: Option<&Path>, f: F) -> Result<T, PlumbError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, PlumbError>>,
{
    let ns_file = ns.map(open_ns).transpose()?;
    let ns_path = ns.map(Path::to_path_buf);
    std::thread::spawn(move || -> Result<T, PlumbError> {
        if let (Some(file), Some(path)) = (&ns_file, &ns_path) {
            // SAFETY: setns changes only this thread's network namespace; the fd stays valid
            // for the call because `file` outlives it.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(PlumbError::Netns { path: path.clone(), err: std::io::Error::last_os_error() });
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PlumbError::Netlink { step: "starting a runtime".into(), err: e.to_string() })?;
        rt.block_on(async move {
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|e| PlumbError::Netlink { step: "opening a netlink socket".into(), err: e.to_string() })?;
            tokio::spawn(conn);
            f(handle).await
        })
    })
    .join()
    .map_err(|_| PlumbError::Netlink { step: "netlink worker".into(), err: "panicked".into() })?
}

pub(crate) async fn link_index(h: &Handle, name: &str) -> Result<Option<u32>, PlumbError> {
    match h.link().get().match_name(name).execute().try_next().await {
        Ok(Some(m)) => Ok(Some(m.header.index)),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == libc::ENODEV => Ok(None),
        Err(e) => Err(nl(format!("looking up {name}"))(e)),
    }
}

/// Turns TX checksum offload off on `dev` in the calling thread's namespace (SIOCETHTOOL).
pub(crate) fn tx_checksum_off(dev: &str) -> Result<(), PlumbError> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    const ETHTOOL_STXCSUM: u32 = 0x17;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let mut value = EthtoolValue { cmd: ETHTOOL_STXCSUM, data: 0 };
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], data: &mut value, _pad: [0; 16] };
    req.name[..dev.len()].copy_from_slice(dev.as_bytes());
    let err = |e: std::io::Error| PlumbError::Netlink { step: format!("turning TX checksum offload off on {dev}"), err: e.to_string() };
    // SAFETY: a plain datagram socket, closed by OwnedFd; the ioctl reads `req` and writes
    // only through `req.data`, which points at `value`, alive for the call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        let fd = <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd);
        if libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL as _, &mut req) != 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Builds the veth pair and configures the container's end. On failure nothing is left.
pub fn plumb(p: &Plumbing) -> Result<Plumbed, PlumbError> {
    check_ifname("ifname", &p.ifname)?;
    check_ifname("host_if", &p.host_if)?;
    if p.prefix_len > 32 {
        return Err(PlumbError::Invalid { field: "prefix_len", reason: format!("{} is more than 32", p.prefix_len) });
    }
    if p.v6.as_ref().is_some_and(|v| v.prefix_len > 128) {
        return Err(PlumbError::Invalid { field: "prefix_len6", reason: "more than 128".into() });
    }
    if !(68..=65535).contains(&p.mtu) {
        return Err(PlumbError::Invalid { field: "mtu", reason: format!("{} is outside 68..=65535", p.mtu) });
    }
    let container = open_ns(&p.netns)?;
    // The container's end is created in its namespace, named, addressed and sized at once:
    // moving an interface between namespaces afterwards costs the kernel tens of
    // milliseconds (an RCU grace period), most of an attach.
    let (host_if, ifname, mac, mtu, off) = (p.host_if.clone(), p.ifname.clone(), p.mac, p.mtu, p.checksum_offload_off);
    let fd = container.as_raw_fd();
    netlink_in(p.host_netns.as_deref(), move |h| async move { make_pair(&h, &host_if, &ifname, Some(fd), mac, mtu, off).await })?;
    drop(container);
    let (ifname, ip, prefix, gateway, v6) = (p.ifname.clone(), p.ip, p.prefix_len, p.gateway, p.v6.clone());
    let inside = netlink_in(Some(&p.netns), move |h| async move {
        let lo = link_index(&h, "lo").await?.ok_or_else(|| PlumbError::Netlink { step: "finding lo".into(), err: "missing".into() })?;
        h.link().set(LinkUnspec::new_with_index(lo).up().build()).execute().await.map_err(nl("bringing lo up"))?;
        let pi =
            link_index(&h, &ifname).await?.ok_or_else(|| PlumbError::Netlink { step: format!("finding {ifname} in the container"), err: "missing".into() })?;
        if off {
            tx_checksum_off(&ifname)?;
        }
        h.address().add(pi, IpAddr::V4(ip), prefix).execute().await.map_err(nl(format!("adding {ip}/{prefix} to {ifname}")))?;
        if let Some(v6) = &v6 {
            enable_ipv6(&ifname)?;
            let mut add = h.address().add(pi, IpAddr::V6(v6.ip), v6.prefix_len);
            add.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
            add.execute().await.map_err(nl(format!("adding {}/{} to {ifname}", v6.ip, v6.prefix_len)))?;
        }
        h.link().set(LinkUnspec::new_with_index(pi).up().build()).execute().await.map_err(nl(format!("bringing {ifname} up")))?;
        let mut default_route = false;
        if let Some(gw) = gateway {
            if !has_default_route(&h).await? {
                let r = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(Ipv4Addr::UNSPECIFIED, 0).gateway(gw).output_interface(pi).build();
                h.route().add(r).execute().await.map_err(nl(format!("adding the default route via {gw}")))?;
                default_route = true;
            }
        }
        if let Some(gw) = v6.as_ref().and_then(|v| v.gateway) {
            if !has_default_route6(&h).await? {
                let r = RouteMessageBuilder::<Ipv6Addr>::new().destination_prefix(Ipv6Addr::UNSPECIFIED, 0).gateway(gw).output_interface(pi).build();
                h.route().add(r).execute().await.map_err(nl(format!("adding the IPv6 default route via {gw}")))?;
            }
        }
        Ok(Plumbed { default_route })
    });
    if inside.is_err() {
        let host_if = p.host_if.clone();
        let _ = netlink_in(p.host_netns.as_deref(), move |h| async move {
            remove_link(&h, &host_if).await;
            Ok(())
        });
    }
    inside
}

/// Creates the veth pair `host_if`–`peer`, both ends `mtu` and the peer with `mac`; the peer
/// is born in the namespace `peer_netns` holds when given (moving it there afterwards costs
/// the kernel an RCU grace period, tens of milliseconds), else beside the host end. Leftovers
/// of the same names (an earlier, interrupted attach) are removed first, and the host end is
/// brought up. On failure nothing is left.
async fn make_pair(
    h: &Handle,
    host_if: &str,
    peer: &str,
    peer_netns: Option<std::os::fd::RawFd>,
    mac: [u8; 6],
    mtu: u32,
    checksum_offload_off: bool,
) -> Result<(), PlumbError> {
    // A peer in another namespace cannot clash here; one already there is refused below.
    let here = if peer_netns.is_some() { &[host_if][..] } else { &[host_if, peer][..] };
    for name in here {
        if let Some(i) = link_index(h, name).await? {
            tracing::info!(%name, "removing a stale veth");
            h.link().del(i).execute().await.map_err(nl(format!("removing stale {name}")))?;
        }
    }
    let mut end = rtnetlink::LinkMessageBuilder::<LinkUnspec>::new().name(peer.to_string()).address(mac.to_vec()).mtu(mtu);
    if let Some(fd) = peer_netns {
        end = end.setns_by_fd(fd);
    }
    let pair = LinkVeth::new(host_if, peer).mtu(mtu).set_info_data(InfoData::Veth(InfoVeth::Peer(end.build()))).build();
    if let Err(e) = h.link().add(pair).execute().await {
        return Err(match &e {
            rtnetlink::Error::NetlinkError(m) if peer_netns.is_some() && m.raw_code().abs() == libc::EEXIST => {
                PlumbError::Invalid { field: "ifname", reason: format!("the container already has an interface {peer}") }
            }
            _ => nl(format!("creating veth {host_if}"))(e),
        });
    }
    let configure = async {
        let hi = link_index(h, host_if).await?.ok_or_else(|| PlumbError::Netlink { step: format!("finding {host_if}"), err: "vanished".into() })?;
        if checksum_offload_off {
            tx_checksum_off(host_if)?;
            if peer_netns.is_none() {
                tx_checksum_off(peer)?;
            }
        }
        h.link().set(LinkUnspec::new_with_index(hi).up().build()).execute().await.map_err(nl(format!("bringing {host_if} up")))
    };
    let r = configure.await;
    if r.is_err() {
        remove_link(h, host_if).await;
    }
    r
}

async fn remove_link(h: &Handle, name: &str) -> bool {
    match link_index(h, name).await {
        Ok(Some(i)) => h.link().del(i).execute().await.is_ok(),
        _ => false,
    }
}

/// Turns IPv6 on for `ifname` in the calling thread's namespace: a runtime may have turned it
/// off for every new interface (Docker does on networks it thinks IPv4-only).
fn enable_ipv6(ifname: &str) -> Result<(), PlumbError> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    match std::fs::read_to_string(&path) {
        Ok(v) if v.trim() == "0" => Ok(()),
        Ok(_) => std::fs::write(&path, "0").map_err(|e| PlumbError::Netlink { step: format!("turning IPv6 on for {ifname}"), err: e.to_string() }),
        Err(e) => Err(PlumbError::Netlink { step: format!("reading {path} (is IPv6 compiled out or disabled at boot?)"), err: e.to_string() }),
    }
}

async fn has_default_route6(h: &Handle) -> Result<bool, PlumbError> {
    let mut routes = h.route().get(RouteMessageBuilder::<Ipv6Addr>::new().build()).execute();
    while let Some(r) = routes.try_next().await.map_err(nl("listing IPv6 routes"))? {
        let main = r.header.table == 254 || r.attributes.iter().any(|a| matches!(a, RouteAttribute::Table(254)));
        let via = r.attributes.iter().any(|a| matches!(a, RouteAttribute::Gateway(_)));
        if main && r.header.destination_prefix_length == 0 && via {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn has_default_route(h: &Handle) -> Result<bool, PlumbError> {
    let mut routes = h.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
    while let Some(r) = routes.try_next().await.map_err(nl("listing routes"))? {
        let main = r.attributes.iter().all(|a| !matches!(a, RouteAttribute::Table(t) if *t != 254)) && r.header.table == 254;
        if main && r.header.destination_prefix_length == 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes the host end of an endpoint's veth (the kernel removes the container's end with
/// it). Returns whether there was one.
pub fn unplumb(host_netns: Option<&Path>, host_if: &str) -> Result<bool, PlumbError> {
    check_ifname("host_if", host_if)?;
    let name = host_if.to_string();
    netlink_in(host_netns, move |h| async move {
        match link_index(&h, &name).await? {
            Some(i) => {
                h.link().del(i).execute().await.map_err(nl(format!("removing {name}")))?;
                Ok(true)
            }
            None => Ok(false),
        }
    })
}

/// The MTU of the interface holding `addr` in namespace `ns` (the caller's when `None`): the
/// underlay's MTU when `addr` is the tunnel address, if any interface holds it.
pub fn mtu_of_address(ns: Option<&Path>, addr: Ipv4Addr) -> Result<Option<u32>, PlumbError> {
    netlink_in(ns, move |h| async move {
        let mut addrs = h.address().get().execute();
        let mut index = None;
        while let Some(a) = addrs.try_next().await.map_err(nl("listing addresses"))? {
            if a.attributes.iter().any(|x| matches!(x, AddressAttribute::Address(IpAddr::V4(v)) | AddressAttribute::Local(IpAddr::V4(v)) if *v == addr)) {
                index = Some(a.header.index);
                break;
            }
        }
        let Some(i) = index else { return Ok(None) };
        let mut links = h.link().get().match_index(i).execute();
        let link = links.try_next().await.map_err(nl("reading the underlay interface"))?;
        Ok(link.and_then(|l| l.attributes.iter().find_map(|a| if let LinkAttribute::Mtu(m) = a { Some(*m) } else { None })))
    })
}

/// An interface as a namespace holds it: what `CHECK` compares with what was plumbed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its MAC address.
    pub mac: [u8; 6],
    /// Its IPv4 addresses and prefix lengths.
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// Whether it is up.
    pub up: bool,
}

/// Interface `ifname` in namespace `ns`, if there is one.
pub fn inspect(ns: &Path, ifname: &str) -> Result<Option<Seen>, PlumbError> {
    check_ifname("ifname", ifname)?;
    let name = ifname.to_string();
    netlink_in(Some(ns), move |h| async move {
        let link = match h.link().get().match_name(name.clone()).execute().try_next().await {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(None),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == libc::ENODEV => return Ok(None),
            Err(e) => return Err(nl(format!("looking up {name}"))(e)),
        };
        let mac = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(m) => <[u8; 6]>::try_from(m.as_slice()).ok(),
            _ => None,
        });
        let up = link.header.flags.contains(rtnetlink::packet_route::link::LinkFlags::Up);
        let index = link.header.index;
        let mut addrs = Vec::new();
        let mut list = h.address().get().set_link_index_filter(index).execute();
        while let Some(a) = list.try_next().await.map_err(nl("listing addresses"))? {
            for x in &a.attributes {
                if let AddressAttribute::Address(IpAddr::V4(v)) = x {
                    addrs.push((*v, a.header.prefix_len));
                }
            }
        }
        Ok(Some(Seen { mac: mac.unwrap_or_default(), addrs, up }))
    })
}

/// The MAC address a name hashes to: locally administered, unicast, stable.
pub fn mac_for(name: &str) -> [u8; 6] {
    let h = plexus_api::ids::fnv1a(name).to_be_bytes();
    [0x02, h[3], h[4], h[5], h[6], h[7]]
}

/// A veth pair in the caller's namespace for a runtime that moves one end into the container
/// itself (Docker's `Join`): `host_if` up, `peer` with `mac`, both with `mtu`. On failure
/// nothing is left.
pub fn veth_pair(host_if: &str, peer: &str, mac: [u8; 6], mtu: u32, checksum_offload_off: bool) -> Result<(), PlumbError> {
    check_ifname("host_if", host_if)?;
    check_ifname("peer", peer)?;
    let (host_if, peer) = (host_if.to_string(), peer.to_string());
    netlink_in(None, move |h| async move { make_pair(&h, &host_if, &peer, None, mac, mtu, checksum_offload_off).await })
}
