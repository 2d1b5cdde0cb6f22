//! host-subnet IPAM: each host leases a block of the network's subnet (Flannel-style). A
//! lease lives as long as its host heartbeats; an expired lease whose block holds no
//! endpoint may go to another host, one whose block still holds endpoints never does, so no
//! address in use is ever handed out again.

use std::net::Ipv4Addr;

use plexus_api::network::Cidr;
use plexus_api::Lease;

use super::{Model, Refusal};

impl Model {
    /// The block `host` leases in `network`, leasing one (or renewing it) at `now_ms`.
    pub(crate) fn lease_for(&mut self, network: &str, host: &str, now_ms: u64) -> Result<Cidr, Refusal> {
        let Some(net) = self.networks.get(network) else {
            return Err(Refusal::new(404, Some("network"), format!("no network named {network}")));
        };
        let (Some(subnet), Some(hp)) = (net.spec.cidr(), net.spec.host_prefix) else {
            return Err(Refusal::new(500, None, format!("network {network} has no host-subnet settings")));
        };
        let ttl_ms = net.spec.lease_ttl_seconds.unwrap_or(300) as u64 * 1000;
        let leases = self.leases.entry(network.to_string()).or_default();
        if let Some(l) = leases.get_mut(host) {
            l.expires_ms = now_ms + ttl_ms;
            return Cidr::parse(&l.block).map_err(|e| Refusal::new(500, None, e));
        }
        let size = 1u32 << (32 - hp);
        let count = 1u32 << (hp - subnet.len);
        let eps = self.endpoints.get(network);
        for i in 0..count {
            let block = Cidr { addr: Ipv4Addr::from(u32::from(subnet.addr) + i * size), len: hp };
            let text = format!("{}/{hp}", block.addr);
            let holder = leases.iter().find(|(_, l)| l.block == text).map(|(h, l)| (h.clone(), l.expires_ms));
            if let Some((other, expires)) = holder {
                let in_use = eps.is_some_and(|m| m.values().any(|e| block.contains(e.ip)));
                if expires > now_ms || in_use {
                    continue;
                }
                tracing::info!(%network, block = %text, from = %other, to = %host, "reclaiming an expired lease");
                leases.remove(&other);
            }
            leases.insert(host.to_string(), Lease { network: network.to_string(), host: host.to_string(), block: text, expires_ms: now_ms + ttl_ms });
            return Ok(block);
        }
        Err(Refusal::new(409, Some("host"), format!("every /{hp} block of {} is leased to a live host or still in use", subnet_text(&subnet))))
    }

    /// A heartbeat from `host` renews all its leases.
    pub(crate) fn renew_leases(&mut self, host: &str, now_ms: u64) {
        let held: Vec<String> = self.leases.iter().filter(|(_, l)| l.contains_key(host)).map(|(n, _)| n.clone()).collect();
        for network in held {
            let ttl = self.networks.get(&network).and_then(|n| n.spec.lease_ttl_seconds).unwrap_or(300) as u64 * 1000;
            if let Some(l) = self.leases.get_mut(&network).and_then(|m| m.get_mut(host)) {
                l.expires_ms = now_ms + ttl;
            }
        }
    }
}

fn subnet_text(c: &Cidr) -> String {
    format!("{}/{}", c.addr, c.len)
}
