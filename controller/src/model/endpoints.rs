//! Endpoints and cluster-mode IPAM: an address is handed out by the state machine, so it is
//! never given twice, whichever node received the request and however leadership moves.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use plexus_api::network::Cidr6;
use plexus_api::{Endpoint, EndpointSpec, IpamMode, Mac, PublishedPort, Valid};

use super::{check_revision, Model, Object, Refusal, Subject};

/// Addresses and MACs in use, by network: derived from the endpoints so that allocating one
/// costs a lookup, not a pass over the network. Not stored (snapshots carry the endpoints
/// only); rebuilt for a network the first time it is needed after a load.
#[derive(Debug, Clone, Default)]
pub(crate) struct UsedIndex(imbl::HashMap<String, Used>);

#[derive(Debug, Clone, Default)]
struct Used {
    ips: imbl::OrdSet<u32>,
    ips6: imbl::OrdSet<u128>,
    macs: imbl::HashSet<Mac>,
}

impl PartialEq for UsedIndex {
    /// Derived data: two models with the same endpoints are equal whatever their indexes hold.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Model {
    fn used(&mut self, network: &str) -> &mut Used {
        let eps = &self.endpoints;
        self.used.0.entry(network.to_string()).or_insert_with(|| {
            let mut u = Used::default();
            for e in eps.get(network).into_iter().flat_map(|m| m.values()) {
                u.ips.insert(u32::from(e.ip));
                if let Some(ip6) = e.ip6 {
                    u.ips6.insert(u128::from(ip6));
                }
                u.macs.insert(e.mac);
            }
            u
        })
    }

    /// Forgets a network's index (its endpoints went wholesale).
    pub(crate) fn forget_used(&mut self, network: &str) {
        self.used.0.remove(network);
    }

    pub(crate) fn create_endpoint(&mut self, network: &str, spec: Valid<EndpointSpec>, now_ms: u64) -> Result<Endpoint, Refusal> {
        let spec = spec.into_inner();
        let Some(net) = self.networks.get(network) else {
            return Err(Refusal::new(404, Some("network"), format!("no network named {network}")));
        };
        if !self.hosts.contains_key(&spec.host) {
            return Err(Refusal::new(422, Some("host"), format!("host {} is not registered", spec.host)));
        }
        let (Some(cidr), Some(gw)) = (net.spec.cidr(), net.spec.gateway) else {
            return Err(Refusal::new(500, None, format!("network {network} has no valid subnet")));
        };
        // The range addresses come from: the whole subnet, or the host's leased block.
        let (mut first, mut last) = (u32::from(cidr.addr) + 1, u32::from(cidr.broadcast()) - 1);
        let mut block_text = None;
        if net.spec.ipam == IpamMode::HostSubnet {
            let block = self.lease_for(network, &spec.host, now_ms)?;
            // Leave each block's first and last address unused, as a per-host /N would.
            first = first.max(u32::from(block.addr) + 1);
            last = last.min(u32::from(block.broadcast()) - 1);
            block_text = Some(format!("{}/{}", block.addr, block.len));
        }
        let Some(net) = self.networks.get(network) else {
            return Err(Refusal::new(404, Some("network"), format!("no network named {network}")));
        };
        if let Some(id) = &spec.id {
            if self.endpoints.get(network).is_some_and(|m| m.contains_key(id)) {
                return Err(Refusal::new(409, Some("id"), format!("endpoint {id} already exists in {network}")));
            }
        }
        let net = net.clone();
        if let Some((physnet, _)) = net.underlay() {
            let maps = self.hosts.get(&spec.host).is_some_and(|h| h.spec.physical_networks.iter().any(|p| p == physnet));
            if !maps {
                return Err(Refusal::new(
                    422,
                    Some("host"),
                    format!("host {} does not map physical network {physnet} (its agent's --bridge-mapping), so it cannot carry network {network}", spec.host),
                ));
            }
        }
        self.check_publish(network, &spec.host, &spec.publish, None)?;
        let wants_derived_mac = spec.mac.is_none();
        let Used { ips: used, macs, .. } = &*self.used(network);
        let ip = match spec.ip {
            Some(ip) => {
                if !cidr.contains(ip) {
                    return Err(Refusal::new(422, Some("ip"), format!("{ip} is outside {}", net.spec.subnet)));
                }
                if ip == gw {
                    return Err(Refusal::new(409, Some("ip"), format!("{ip} is the gateway of {network}")));
                }
                if !(first..=last).contains(&u32::from(ip)) {
                    return Err(Refusal::new(
                        422,
                        Some("ip"),
                        match &block_text {
                            Some(b) => format!("{ip} is outside {b}, the block {} leases in {network}", spec.host),
                            None => format!("{ip} is the network or broadcast address of {}", net.spec.subnet),
                        },
                    ));
                }
                if used.contains(&u32::from(ip)) {
                    return Err(Refusal::new(409, Some("ip"), format!("{ip} is already taken in {network}")));
                }
                ip
            }
            None => {
                // The first free address whose derived MAC nobody claimed for another address:
                // a claimed MAC skips one address, it never blocks the network.
                let mut from = first;
                loop {
                    match first_free(used, from, last, u32::from(gw)) {
                        Some(a) if wants_derived_mac && macs.contains(&Mac::from_ipv4(Ipv4Addr::from(a))) => match a.checked_add(1) {
                            Some(next) => from = next,
                            None => break None,
                        },
                        found => break found,
                    }
                }
                .map(Ipv4Addr::from)
                .ok_or_else(|| {
                    let range = block_text.clone().unwrap_or_else(|| net.spec.subnet.clone());
                    Refusal::new(409, Some("ip"), format!("no address left in {range} ({} endpoints use all of it)", used.len()))
                })?
            }
        };
        let v6 = match (net.spec.cidr6(), net.spec.gateway6) {
            (Some(c), Some(gw6)) => Some((self.allocate_v6(network, &net, spec.ip6, u32::from(ip) - u32::from(cidr.addr), c, gw6)?, c.len, gw6)),
            _ => match spec.ip6 {
                Some(ip6) => return Err(Refusal::new(422, Some("ip6"), format!("{ip6} asked for, but network {network} has no IPv6 subnet (subnet6)"))),
                None => None,
            },
        };
        let mac = match &spec.mac {
            Some(m) => Mac::parse("mac", m)?,
            None => Mac::from_ipv4(ip),
        };
        if self.used(network).macs.contains(&mac) {
            return Err(Refusal::new(409, Some("mac"), format!("{mac} is already used in {network}")));
        }
        let id = match spec.id {
            Some(id) => id,
            None => {
                self.next_endpoint += 1;
                format!("ep{:06}", self.next_endpoint)
            }
        };
        self.revision += 1;
        let ep = Endpoint {
            id: id.clone(),
            network: network.to_string(),
            host: spec.host,
            ip,
            prefix_len: cidr.len,
            gateway: gw,
            ip6: v6.map(|v| v.0),
            prefix_len6: v6.map(|v| v.1),
            gateway6: v6.map(|v| v.2),
            mac,
            owner: spec.owner,
            labels: spec.labels,
            publish: spec.publish,
            revision: self.revision,
        };
        let u = self.used(network);
        u.ips.insert(u32::from(ip));
        if let Some(ip6) = ep.ip6 {
            u.ips6.insert(u128::from(ip6));
        }
        u.macs.insert(ep.mac);
        self.endpoints.entry(network.to_string()).or_default().insert(id.clone(), ep.clone());
        self.count_member(network, &ep.host, true);
        self.record(Subject::Endpoint(ep.key()), Some(Object::Endpoint(ep.clone())));
        Ok(ep)
    }

    /// The IPv6 address of a new endpoint of a dual-stack network: the one wanted, checked; or
    /// the one at the same offset in `subnet6` as its IPv4 address in `subnet` (so `10.1.0.5`
    /// goes with `fd00::5`), or the first free one when a wanted address took that.
    fn allocate_v6(
        &mut self,
        network: &str,
        net: &plexus_api::Network,
        wanted: Option<Ipv6Addr>,
        offset: u32,
        c: Cidr6,
        gw: Ipv6Addr,
    ) -> Result<Ipv6Addr, Refusal> {
        let used = &self.used(network).ips6;
        let subnet6 = net.spec.subnet6.as_deref().unwrap_or_default();
        if let Some(ip) = wanted {
            if !c.contains(ip) {
                return Err(Refusal::new(422, Some("ip6"), format!("{ip} is outside {subnet6}")));
            }
            if ip == c.addr {
                return Err(Refusal::new(422, Some("ip6"), format!("{ip} is the subnet-router anycast address of {subnet6}")));
            }
            if ip == gw {
                return Err(Refusal::new(409, Some("ip6"), format!("{ip} is the IPv6 gateway of {network}")));
            }
            if used.contains(&u128::from(ip)) {
                return Err(Refusal::new(409, Some("ip6"), format!("{ip} is already taken in {network}")));
            }
            return Ok(ip);
        }
        let (base, last, gw) = (u128::from(c.addr), u128::from(c.last()), u128::from(gw));
        let derived = base + u128::from(offset);
        let free = |a: u128| a != base && a != gw && a <= last && !used.contains(&a);
        if free(derived) {
            return Ok(Ipv6Addr::from(derived));
        }
        let mut a = base + 1;
        for taken in used.range(base + 1..=last).copied().chain(std::iter::once(u128::MAX)) {
            while a < taken && a <= last {
                if free(a) {
                    return Ok(Ipv6Addr::from(a));
                }
                a += 1;
            }
            a = taken.saturating_add(1);
            if a > last {
                break;
            }
        }
        Err(Refusal::new(409, Some("ip6"), format!("no address left in {subnet6}")))
    }

    /// Refuses ports an endpoint cannot publish: on a network whose routing domain does not
    /// leave Plexus (nothing would carry the answers out), or taken on its host already.
    fn check_publish(&self, network: &str, host: &str, publish: &[PublishedPort], itself: Option<&str>) -> Result<(), Refusal> {
        if publish.is_empty() {
            return Ok(());
        }
        if !self.external_domain(network) {
            return Err(Refusal::new(
                422,
                Some("publish"),
                format!("network {network} is on no router with external access, so nothing would carry answers out; add it to a router with external: true (plexus router create NAME --network {network} --external)"),
            ));
        }
        // Publishing endpoints are few; walking them costs nothing next to the rest.
        for (i, p) in publish.iter().enumerate() {
            let taken = self.all_endpoints().find(|e| {
                e.host == host
                    && !(e.network == network && Some(e.id.as_str()) == itself)
                    && e.publish.iter().any(|q| q.host_port == p.host_port && q.protocol == p.protocol)
            });
            if let Some(e) = taken {
                return Err(Refusal::new(
                    409,
                    Some(&format!("publish[{i}].host_port")),
                    format!("port {}/{} of host {host} is already published by endpoint {}/{}", p.host_port, p.protocol, e.network, e.id),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn set_endpoint_labels(
        &mut self,
        network: &str,
        id: &str,
        labels: BTreeMap<String, String>,
        if_match: Option<u64>,
        on_host: Option<&str>,
    ) -> Result<Endpoint, Refusal> {
        self.update_endpoint(network, id, if_match, on_host, "label", |_, ep| Ok((ep.labels != labels).then(|| Endpoint { labels, ..ep.clone() })))
    }

    pub(crate) fn set_endpoint_publish(
        &mut self,
        network: &str,
        id: &str,
        publish: Vec<PublishedPort>,
        if_match: Option<u64>,
        on_host: Option<&str>,
    ) -> Result<Endpoint, Refusal> {
        self.update_endpoint(network, id, if_match, on_host, "publish", |m, ep| {
            if ep.publish == publish {
                return Ok(None);
            }
            m.check_publish(network, &ep.host, &publish, Some(id))?;
            Ok(Some(Endpoint { publish, ..ep.clone() }))
        })
    }

    /// Changes one endpoint in place: `change` returns the endpoint as it should be, or `None`
    /// when it already is. An agent (`on_host`) may `verb` only its own host's endpoints.
    fn update_endpoint(
        &mut self,
        network: &str,
        id: &str,
        if_match: Option<u64>,
        on_host: Option<&str>,
        verb: &str,
        change: impl FnOnce(&Model, &Endpoint) -> Result<Option<Endpoint>, Refusal>,
    ) -> Result<Endpoint, Refusal> {
        let Some(ep) = self.endpoints.get(network).and_then(|m| m.get(id)) else {
            return Err(Refusal::new(404, Some("id"), format!("no endpoint {id} in network {network}")));
        };
        if let Some(h) = on_host.filter(|h| *h != ep.host) {
            return Err(Refusal::new(403, Some("id"), format!("endpoint {id} is not on host {h}, whose agent may {verb} only its own")));
        }
        check_revision(ep.revision, if_match)?;
        let Some(changed) = change(self, ep)? else { return Ok(ep.clone()) };
        self.revision += 1;
        let ep = Endpoint { revision: self.revision, ..changed };
        self.endpoints.entry(network.to_string()).or_default().insert(id.to_string(), ep.clone());
        self.record(Subject::Endpoint(ep.key()), Some(Object::Endpoint(ep.clone())));
        Ok(ep)
    }

    pub(crate) fn delete_endpoint(&mut self, network: &str, id: &str) -> Result<(), Refusal> {
        let removed = self.endpoints.get_mut(network).and_then(|m| m.remove(id));
        let Some(removed) = removed else {
            return Err(Refusal::new(404, Some("id"), format!("no endpoint {id} in network {network}")));
        };
        self.count_member(network, &removed.host, false);
        let u = self.used(network);
        u.ips.remove(&u32::from(removed.ip));
        if let Some(ip6) = removed.ip6 {
            u.ips6.remove(&u128::from(ip6));
        }
        u.macs.remove(&removed.mac);
        if self.endpoints.get(network).is_some_and(|m| m.is_empty()) {
            self.endpoints.remove(network);
        }
        self.revision += 1;
        self.record_gone(&removed);
        Ok(())
    }
}

/// The lowest address in `first..=last` that is neither used nor the gateway: a walk over the
/// used addresses in order, which stops at the first gap. An empty range has none.
fn first_free(used: &imbl::OrdSet<u32>, first: u32, last: u32, gw: u32) -> Option<u32> {
    if first > last {
        return None;
    }
    let mut a = first;
    let mut taken = used.range(first..=last).peekable();
    while a <= last {
        if a == gw || taken.peek() == Some(&&a) {
            if taken.peek() == Some(&&a) {
                taken.next();
            }
            a = a.checked_add(1)?;
            continue;
        }
        return Some(a);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{endpoint_with, host, overlay};
    use crate::model::Model;

    fn set(v: &[u32]) -> imbl::OrdSet<u32> {
        v.iter().copied().collect()
    }

    #[test]
    fn first_free_skips_the_gateway_and_used_addresses_and_stops_at_the_end() {
        assert_eq!(first_free(&set(&[]), 1, 10, 1), Some(2));
        assert_eq!(first_free(&set(&[2, 3, 5]), 1, 10, 1), Some(4));
        assert_eq!(first_free(&set(&[2, 3, 4, 5]), 2, 5, 1), None);
        assert_eq!(first_free(&set(&[9]), 9, 9, 1), None);
        // Used addresses outside the range do not count.
        assert_eq!(first_free(&set(&[1, 2, 50]), 3, 10, 0), Some(3));
        // An empty range (a block outside the subnet) has no address, and no panic.
        assert_eq!(first_free(&set(&[]), 10, 9, 0), None);
        assert_eq!(first_free(&set(&[]), u32::MAX, u32::MAX, 0), Some(u32::MAX));
    }

    #[test]
    fn addresses_are_never_handed_out_twice_and_freed_ones_come_back() {
        let mut m = Model::default();
        m.apply(host("h1", 1)).unwrap();
        m.apply(overlay("red", "10.9.0.0/29", None)).unwrap();
        // .1 is the gateway; .2 to .6 are the five host addresses.
        let mut ips = Vec::new();
        for i in 0..5 {
            let Ok(Some(crate::model::Object::Endpoint(e))) = m.apply(endpoint_with("red", EndpointSpec::on("h1").id(&format!("e{i}")))) else {
                panic!("endpoint {i}")
            };
            ips.push(e.ip.to_string());
        }
        assert_eq!(ips, ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]);
        let full = m.apply(endpoint_with("red", EndpointSpec::on("h1"))).unwrap_err();
        assert_eq!((full.status, full.field.as_deref()), (409, Some("ip")), "{full}");
        m.apply(crate::model::Command::DeleteEndpoint { network: "red".into(), id: "e2".into(), on_host: None }).unwrap();
        let Ok(Some(crate::model::Object::Endpoint(e))) = m.apply(endpoint_with("red", EndpointSpec::on("h1"))) else { panic!("reuse") };
        assert_eq!(e.ip.to_string(), "10.9.0.4");
        // A MAC another endpoint wears is refused, naming the field.
        let taken = e.mac.to_string();
        m.apply(crate::model::Command::DeleteEndpoint { network: "red".into(), id: "e4".into(), on_host: None }).unwrap();
        let clash = m.apply(endpoint_with("red", EndpointSpec::on("h1").mac(&taken))).unwrap_err();
        assert_eq!((clash.status, clash.field.as_deref()), (409, Some("mac")), "{clash}");
    }

    #[test]
    fn ipv6_addresses_follow_the_ipv4_offset_and_a_wanted_one_displaces_nothing() {
        let mut m = Model::default();
        m.apply(host("h1", 1)).unwrap();
        m.apply(crate::model::testing::dual("red", "10.9.0.0/29", "fd00:9::/64")).unwrap();
        let make = |m: &mut Model, spec: EndpointSpec| match m.apply(endpoint_with("red", spec)) {
            Ok(Some(crate::model::Object::Endpoint(e))) => Ok(e),
            Ok(other) => panic!("{other:?}"),
            Err(r) => Err(r),
        };
        let a = make(&mut m, EndpointSpec::on("h1").id("a")).unwrap();
        assert_eq!(
            (a.ip6.map(|i| i.to_string()), a.prefix_len6, a.gateway6.map(|g| g.to_string())),
            (Some("fd00:9::2".into()), Some(64), Some("fd00:9::1".into()))
        );
        // A wanted address that another endpoint's offset would give: that one gets the
        // first free address instead, never the same.
        let w = make(&mut m, EndpointSpec::on("h1").id("w").ip6("fd00:9::4".parse().unwrap())).unwrap();
        assert_eq!((w.ip.to_string(), w.ip6.map(|i| i.to_string())), ("10.9.0.3".into(), Some("fd00:9::4".into())));
        let c = make(&mut m, EndpointSpec::on("h1").id("c")).unwrap();
        assert_eq!((c.ip.to_string(), c.ip6.map(|i| i.to_string())), ("10.9.0.4".into(), Some("fd00:9::3".into())));
        // Refusals name the field and change nothing.
        let rev = m.revision;
        for (ip6, status) in [("fd00:9::4", 409), ("fd00:9::1", 409), ("fd00:9::", 422), ("fd00:8::5", 422)] {
            let r = make(&mut m, EndpointSpec::on("h1").ip6(ip6.parse().unwrap())).unwrap_err();
            assert_eq!((r.status, r.field.as_deref()), (status, Some("ip6")), "{ip6}: {r}");
        }
        assert_eq!(m.revision, rev, "a refused endpoint changed the model");
        // Freed with its endpoint.
        m.apply(crate::model::Command::DeleteEndpoint { network: "red".into(), id: "w".into(), on_host: None }).unwrap();
        let again = make(&mut m, EndpointSpec::on("h1").id("again").ip6("fd00:9::4".parse().unwrap())).unwrap();
        assert_eq!(again.ip6.map(|i| i.to_string()), Some("fd00:9::4".into()));
    }
}
