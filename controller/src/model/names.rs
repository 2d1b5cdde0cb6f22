//! What a host's DNS responder serves ([`plexus_api::HostNames`]), computed from the model.

use std::collections::BTreeSet;

use plexus_api::names::{is_dns_label, NAME_LABEL};
use plexus_api::{HostNames, NameRecord, NameZone};

use super::Model;

impl Model {
    /// The zones of the overlay networks with endpoints on `host` (an underlay's gateway is a
    /// physical router, which the switch does not stand in for), and the names of every network
    /// those zones may see.
    pub fn host_names(&self, host: &str) -> HostNames {
        let mut zones = Vec::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for (name, eps) in &self.endpoints {
            if !eps.values().any(|e| e.host == host) {
                continue;
            }
            let Some(n) = self.networks.get(name) else { continue };
            let (Some(vni), Some(gateway)) = (n.vni(), n.spec.gateway) else { continue };
            let visible: Vec<String> = self.domain_of(name).into_iter().collect();
            seen.extend(visible.iter().cloned());
            zones.push(NameZone { network: name.clone(), vni, gateway, visible });
        }
        let mut records = Vec::new();
        for network in &seen {
            for e in self.endpoints.get(network).into_iter().flat_map(|m| m.values()) {
                let names = std::iter::once(e.id.as_str()).chain(e.labels.get(NAME_LABEL).map(String::as_str));
                for n in names.filter(|n| is_dns_label(n)) {
                    records.push(NameRecord { network: network.clone(), name: n.to_ascii_lowercase(), ip: e.ip, ip6: e.ip6 });
                }
            }
        }
        zones.sort();
        records.sort();
        records.dedup();
        HostNames::new(zones, records)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{endpoint, host, overlay};
    use super::*;

    #[test]
    fn zones_follow_local_endpoints_and_names_stay_in_their_domain() {
        let mut m = Model::default();
        for c in [host("h1", 1), host("h2", 2), overlay("a", "10.1.0.0/24", None), overlay("b", "10.2.0.0/24", None)] {
            m.apply(c).unwrap();
        }
        m.apply(endpoint("a", "web", "h1")).unwrap();
        m.apply(endpoint("b", "db", "h2")).unwrap();
        let h1 = m.host_names("h1");
        assert_eq!(h1.zones.iter().map(|z| z.network.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(h1.records.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["web"], "b is in no router with a: its names stay out");
        assert!(m.host_names("h3").zones.is_empty());
    }
}
