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
        let current = leases.get(host).map(|l| Cidr::parse(&l.block));
        match current {
            Some(Ok(b)) if b.len == hp && subnet.contains(b.addr) => {
                if let Some(l) = leases.get_mut(host) {
                    l.expires_ms = now_ms + ttl_ms;
                }
                return Ok(b);
            }
            // A block of another layout (the subnet or host prefix changed since): lease afresh.
            Some(_) => {
                leases.remove(host);
            }
            None => {}
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

#[cfg(test)]
mod tests {
    use plexus_api::{EndpointSpec, IpamMode, NetworkSpec, Valid};

    use crate::model::testing::{endpoint_with, host};
    use crate::model::{Command, Model, Object};

    fn flat(ttl: u32) -> Command {
        let spec =
            NetworkSpec { ipam: IpamMode::HostSubnet, host_prefix: Some(26), lease_ttl_seconds: Some(ttl), ..NetworkSpec::overlay("flat", "10.60.0.0/24") };
        Command::PutNetwork { spec: Valid::new(spec).unwrap(), create: true, if_match: None }
    }

    fn create(m: &mut Model, host: &str, now_ms: u64) -> Result<std::net::Ipv4Addr, u16> {
        let Command::CreateEndpoint { network, spec, .. } = endpoint_with("flat", EndpointSpec::on(host)) else { unreachable!() };
        match m.apply(Command::CreateEndpoint { network, spec, now_ms }) {
            Ok(Some(Object::Endpoint(e))) => Ok(e.ip),
            Ok(_) => Err(0),
            Err(r) => Err(r.status),
        }
    }

    #[test]
    fn a_host_keeps_its_block_and_an_expired_one_moves_only_when_empty() {
        let mut m = Model::default();
        for i in 1..=5 {
            m.apply(host(&format!("h{i}"), i)).unwrap();
        }
        m.apply(flat(10)).unwrap();
        // Four /26 blocks; each host's endpoints come from its own block, and stay there.
        let a = create(&mut m, "h1", 0).unwrap();
        let b = create(&mut m, "h2", 0).unwrap();
        // .1 is the gateway, in h1's block.
        assert_eq!((a.to_string().as_str(), b.to_string().as_str()), ("10.60.0.2", "10.60.0.65"));
        assert_eq!(create(&mut m, "h1", 1_000).unwrap().to_string(), "10.60.0.3", "h1 keeps its block");
        create(&mut m, "h3", 0).unwrap();
        create(&mut m, "h4", 0).unwrap();
        // Every block is leased to a live host: h5 gets none, and nothing is left behind.
        assert_eq!(create(&mut m, "h5", 5_000), Err(409));
        assert!(!m.leases["flat"].contains_key("h5"));
        // h2's lease expires but its block still holds an endpoint: it is never handed on.
        assert_eq!(create(&mut m, "h5", 60_000), Err(409));
        // Once the endpoint is gone, the expired block goes to h5.
        let ep = m.endpoints["flat"].values().find(|e| e.host == "h2").unwrap().id.clone();
        m.apply(Command::DeleteEndpoint { network: "flat".into(), id: ep, on_host: None }).unwrap();
        assert_eq!(create(&mut m, "h5", 60_000).unwrap().to_string(), "10.60.0.65");
        assert!(!m.leases["flat"].contains_key("h2"));
    }

    #[test]
    fn a_heartbeat_renews_every_lease_of_its_host() {
        let mut m = Model::default();
        m.apply(host("h1", 1)).unwrap();
        m.apply(flat(10)).unwrap();
        create(&mut m, "h1", 0).unwrap();
        assert_eq!(m.leases["flat"]["h1"].expires_ms, 10_000);
        let Command::PutHost { spec, .. } = host("h1", 1) else { unreachable!() };
        m.apply(Command::PutHost { spec, now_ms: 7_000 }).unwrap();
        assert_eq!(m.leases["flat"]["h1"].expires_ms, 17_000);
    }
}
