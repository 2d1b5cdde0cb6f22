//! Keeping OVS's userspace tunnel code able to send the first packet. With the netdev
//! datapath, OVS builds a tunnel packet's outer Ethernet header from its own neighbour cache
//! on `br-phy`, which learns only from ARP replies and gratuitous ARPs passing through; a
//! peer it has not seen costs the first packet (dropped while OVS ARPs). The kernel learns
//! peers more eagerly (from their requests too), so the agent copies what the kernel knows of
//! each peer on the underlay into OVS's cache (`tnl/neigh/set`) whenever the cache lacks it:
//! at start, when a host joins, after OVS forgot an idle entry or was restarted.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use plexus_ovs::unixctl;

use crate::underlay::BR_PHY;

/// The complete entry for `ip` in the kernel's ARP table (`/proc/net/arp`'s text).
fn parse_arp(table: &str, ip: Ipv4Addr) -> Option<String> {
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (addr, flags, mac) = (f.first()?, f.get(2)?, f.get(3)?);
        // 0x2: complete; an incomplete entry has no address yet.
        let complete = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()? & 0x2 != 0;
        (addr.parse::<Ipv4Addr>().ok()? == ip && complete && *mac != "00:00:00:00:00:00").then(|| mac.to_string())
    })
}

/// The addresses in `tnl/neigh/show`'s table.
fn parse_show(text: &str) -> BTreeSet<Ipv4Addr> {
    text.lines().filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect()
}

/// Seeds OVS's tunnel neighbour cache from the kernel's.
#[derive(Debug)]
pub(crate) struct Seeder {
    ctl: PathBuf,
}

impl Seeder {
    /// For the `ovs-vswitchd` whose control socket is `ctl`.
    pub(crate) fn new(ctl: PathBuf) -> Seeder {
        Seeder { ctl }
    }

    /// Gives OVS every peer in `peers` its cache lacks and the kernel knows; returns the peers
    /// still missing from OVS's cache.
    pub(crate) async fn seed(&mut self, peers: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
        let t = Duration::from_secs(2);
        let known = match unixctl::call(&self.ctl, "tnl/neigh/show", &[], t).await {
            Ok(text) => parse_show(&text),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read OVS's tunnel neighbour cache");
                return peers.to_vec();
            }
        };
        let mut missing = Vec::new();
        // The kernel's table once for all peers, not once each.
        let arp = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
        for &ip in peers.iter().filter(|ip| !known.contains(ip)) {
            let Some(mac) = parse_arp(&arp, ip) else {
                missing.push(ip);
                continue;
            };
            match unixctl::call(&self.ctl, "tnl/neigh/set", &[BR_PHY, &ip.to_string(), &mac], t).await {
                Ok(_) => tracing::debug!(peer = %ip, %mac, "seeded OVS's tunnel neighbour cache"),
                Err(e) => {
                    tracing::warn!(peer = %ip, error = %e, "cannot seed OVS's tunnel neighbour cache");
                    missing.push(ip);
                }
            }
        }
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_complete_entries_only() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 10.0.0.12        0x1         0x2         0a:00:00:00:00:0c     *        br-phy\n\
                 10.0.0.13        0x1         0x0         00:00:00:00:00:00     *        br-phy\n";
        assert_eq!(parse_arp(t, Ipv4Addr::new(10, 0, 0, 12)).as_deref(), Some("0a:00:00:00:00:0c"));
        assert_eq!(parse_arp(t, Ipv4Addr::new(10, 0, 0, 13)), None);
        assert_eq!(parse_arp(t, Ipv4Addr::new(10, 0, 0, 14)), None);
        let show = "IP                                            MAC                 Bridge\n\
                    ==========================================================================\n\
                    10.0.0.12                                     0a:00:00:00:00:0c   br-phy\n";
        assert_eq!(parse_show(show).into_iter().collect::<Vec<_>>(), [Ipv4Addr::new(10, 0, 0, 12)]);
    }
}
