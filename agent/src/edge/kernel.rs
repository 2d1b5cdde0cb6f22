//! The host's side of the external port: `plx-ext` (which the agent adds to `br-int`) up,
//! with [`EXTERNAL_HOST_MAC`] (the switch routes out to that MAC) and
//! [`EXTERNAL_HOST_ADDR`], forwarding on, and a route for each external subnet through
//! [`EXTERNAL_NEXT_HOP`] (the switch answers its ARP). Routes are marked with
//! [`ROUTE_PROTOCOL`], so those no longer wanted are found and removed and nobody else's are
//! touched.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use plexus_api::network::Cidr;
use plexus_api::routing::{EXTERNAL_HOST_ADDR, EXTERNAL_HOST_MAC, EXTERNAL_NEXT_HOP, EXTERNAL_PORT, EXTERNAL_PREFIX};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};

use crate::plumb::{link_index, netlink_in, nl, PlumbError};

/// The routing protocol number Plexus's routes carry (`ip route … proto 80`).
pub const ROUTE_PROTOCOL: u8 = 80;

fn write_sysctl(path: &str, value: &str) -> Result<(), PlumbError> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value).map_err(|e| PlumbError::Netlink { step: format!("setting {path} to {value}"), err: e.to_string() })
}

/// Whether the host has the external port yet (the switch makes it).
pub(crate) fn has_port() -> Result<bool, PlumbError> {
    netlink_in(None, |h| async move { Ok(link_index(&h, EXTERNAL_PORT).await?.is_some()) })
}

/// Brings the host's side of the external port and its routes to `subnets`; with none, only
/// removes Plexus's routes (forwarding is left as it is).
pub(crate) fn apply(subnets: &[Cidr]) -> Result<(), PlumbError> {
    if !subnets.is_empty() {
        write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
        // The switch drops whatever else the host sends into the port; IPv6 would only chatter.
        write_sysctl(&format!("/proc/sys/net/ipv6/conf/{EXTERNAL_PORT}/disable_ipv6"), "1")?;
        // The userspace datapath forwards what the kernel hands it as it is: a checksum left
        // to offload would leave the host wrong (see DESIGN.md).
        crate::plumb::tx_checksum_off(EXTERNAL_PORT)?;
    }
    let wanted: Vec<Cidr> = subnets.to_vec();
    netlink_in(None, move |h| async move {
        let idx = link_index(&h, EXTERNAL_PORT)
            .await?
            .ok_or_else(|| PlumbError::Invalid { field: "plx-ext", reason: "the switch has not made the external port yet".into() })?;
        if !wanted.is_empty() {
            if crate::underlay::mac_of(&h, idx).await? != Some(EXTERNAL_HOST_MAC.octets()) {
                let set = LinkUnspec::new_with_index(idx).address(EXTERNAL_HOST_MAC.octets().to_vec()).build();
                h.link().set(set).execute().await.map_err(nl(format!("setting {EXTERNAL_PORT}'s MAC")))?;
            }
            h.link().set(LinkUnspec::new_with_index(idx).up().build()).execute().await.map_err(nl(format!("bringing {EXTERNAL_PORT} up")))?;
            let mut addrs = h.address().get().set_link_index_filter(idx).execute();
            let mut has = false;
            while let Some(a) = addrs.try_next().await.map_err(nl(format!("listing {EXTERNAL_PORT}'s addresses")))? {
                has |= a.header.family == AddressFamily::Inet
                    && a.attributes.iter().any(|x| matches!(x, AddressAttribute::Local(IpAddr::V4(v)) if *v == EXTERNAL_HOST_ADDR));
            }
            if !has {
                let add = h.address().add(idx, IpAddr::V4(EXTERNAL_HOST_ADDR), EXTERNAL_PREFIX).replace();
                add.execute().await.map_err(nl(format!("adding {EXTERNAL_HOST_ADDR}/{EXTERNAL_PREFIX} to {EXTERNAL_PORT}")))?;
            }
        }
        // Plexus's routes as they are.
        let mut have: Vec<(Cidr, RouteMessage)> = Vec::new();
        let mut routes = h.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
        while let Some(r) = routes.try_next().await.map_err(nl("listing routes"))? {
            if r.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) {
                continue;
            }
            let dst = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(*d),
                _ => None,
            });
            let via_port = r.attributes.iter().any(|a| matches!(a, RouteAttribute::Oif(i) if *i == idx));
            if let Some(addr) = dst.filter(|_| via_port) {
                have.push((Cidr { addr, len: r.header.destination_prefix_length }, r));
            } else {
                // Ours, through a port that is gone (ovs-vswitchd made it anew): stale.
                have.push((Cidr { addr: Ipv4Addr::UNSPECIFIED, len: 0 }, r));
            }
        }
        for (c, r) in have.iter().filter(|(c, _)| !wanted.contains(c)) {
            tracing::info!(subnet = %format!("{}/{}", c.addr, c.len), "removing a route to the switch no longer wanted");
            h.route().del(r.clone()).execute().await.map_err(nl("removing a route"))?;
        }
        for c in wanted.iter().filter(|c| !have.iter().any(|(h, _)| h == *c)) {
            let msg = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(c.addr, c.len)
                .gateway(EXTERNAL_NEXT_HOP)
                .output_interface(idx)
                .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
                .build();
            h.route().add(msg).replace().execute().await.map_err(nl(format!("routing {}/{} to the switch", c.addr, c.len)))?;
            tracing::info!(subnet = %format!("{}/{}", c.addr, c.len), "external network routed to the switch");
        }
        Ok(())
    })
}
