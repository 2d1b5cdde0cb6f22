//! The names a host's responder knows, indexed for answering, and what it answers: a pure
//! function of the table and the question, so the rules about what one network may learn of
//! another live in one place.

use std::collections::HashMap;
use std::net::IpAddr;

use plexus_api::{HostNames, NameZone};

use super::wire::{reverse_v4, reverse_v6, Data, Query, Rcode, TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_PTR};

/// The answer to a question, or that it is not ours to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Answered here.
    Local(Rcode, Vec<Data>),
    /// A name outside Plexus: ask the host's resolvers.
    Forward,
}

/// The names, by zone.
#[derive(Debug, Default)]
pub struct Table {
    zones: HashMap<u32, NameZone>,
    /// Network, then name, to addresses (nested so that lookups borrow the question's text).
    names: HashMap<String, HashMap<String, Vec<IpAddr>>>,
    /// Network, then address, to the name a reverse lookup gives.
    reverse: HashMap<String, HashMap<IpAddr, String>>,
    /// Names held.
    count: usize,
    /// The digest it was built from.
    pub digest: String,
}

impl Table {
    /// Indexes what the controller sent.
    pub fn new(h: &HostNames) -> Table {
        let mut t = Table { digest: h.digest.clone(), ..Table::default() };
        for z in &h.zones {
            t.zones.insert(z.vni, z.clone());
        }
        for r in &h.records {
            let ips = t.names.entry(r.network.clone()).or_default().entry(r.name.clone()).or_default();
            if ips.is_empty() {
                t.count += 1;
            }
            let addrs: Vec<IpAddr> = std::iter::once(IpAddr::V4(r.ip)).chain(r.ip6.map(IpAddr::V6)).collect();
            ips.extend(&addrs);
            // Records are sorted: the first name of an address is the one a reverse lookup
            // gives.
            let rev = t.reverse.entry(r.network.clone()).or_default();
            for a in addrs {
                rev.entry(a).or_insert_with(|| r.name.clone());
            }
        }
        t
    }

    /// The zone of the network with `vni`, if this host serves it.
    pub fn zone(&self, vni: u32) -> Option<&NameZone> {
        self.zones.get(&vni)
    }

    /// Names known.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no names are known.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// What to answer `q` from a container of `zone`. `NAME` is looked up in the zone's own
    /// network, `NAME.NETWORK` in any network the zone may see; a single label that is not
    /// there does not exist (it is not sent to the host's resolvers, as in dnsmasq's
    /// `domain-needed`); anything else is forwarded. Reverse lookups answer for the addresses
    /// of networks the zone may see and forward the rest.
    pub fn resolve(&self, zone: &NameZone, q: &Query) -> Resolution {
        if q.qtype == TYPE_PTR {
            if let Some(ip) = reverse_v4(&q.name).map(IpAddr::V4).or_else(|| reverse_v6(&q.name).map(IpAddr::V6)) {
                if let Some((net, name)) = zone.visible.iter().find_map(|n| self.reverse.get(n)?.get(&ip).map(|name| (n, name))) {
                    return Resolution::Local(Rcode::NoError, vec![Data::Ptr(format!("{name}.{net}"))]);
                }
            }
            return Resolution::Forward;
        }
        let (name, network) = match q.name.split_once('.') {
            None => (q.name.as_str(), zone.network.as_str()),
            Some((name, net)) if zone.visible.iter().any(|v| v == net) => (name, net),
            Some(_) => return Resolution::Forward,
        };
        match self.names.get(network).and_then(|m| m.get(name)) {
            // The name exists: its addresses of the type asked (none, for other types).
            Some(ips) => {
                let data = ips.iter().filter_map(|ip| match (ip, q.qtype) {
                    (IpAddr::V4(a), TYPE_A | TYPE_ANY) => Some(Data::A(*a)),
                    (IpAddr::V6(a), TYPE_AAAA | TYPE_ANY) => Some(Data::Aaaa(*a)),
                    _ => None,
                });
                Resolution::Local(Rcode::NoError, data.collect())
            }
            None => Resolution::Local(Rcode::NxDomain, Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::{parse_query, CLASS_IN, TYPE_AAAA};
    use super::*;
    use plexus_api::NameRecord;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn q(name: &str, qtype: u16) -> Query {
        let mut m = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend(l.as_bytes());
        }
        m.push(0);
        m.extend(qtype.to_be_bytes());
        m.extend(CLASS_IN.to_be_bytes());
        parse_query(&m).unwrap()
    }

    fn table() -> (Table, NameZone, NameZone) {
        let blue = NameZone { network: "blue".into(), vni: 1, gateway: Ipv4Addr::new(10, 1, 0, 1), visible: vec!["blue".into(), "green".into()] };
        let red = NameZone { network: "red".into(), vni: 2, gateway: Ipv4Addr::new(10, 2, 0, 1), visible: vec!["red".into()] };
        let rec = |n: &str, name: &str, ip: [u8; 4]| NameRecord { network: n.into(), name: name.into(), ip: ip.into(), ip6: None };
        let dual = NameRecord { ip6: Some("fd00:3::5".parse().unwrap()), ..rec("green", "db", [10, 3, 0, 5]) };
        let h = HostNames::new(vec![blue.clone(), red.clone()], vec![rec("blue", "web", [10, 1, 0, 5]), dual, rec("red", "secret", [10, 2, 0, 9])]);
        (Table::new(&h), blue, red)
    }

    #[test]
    fn answers_its_networks_and_nothing_of_others() {
        let (t, blue, red) = table();
        assert_eq!(t.resolve(&blue, &q("web", TYPE_A)), Resolution::Local(Rcode::NoError, vec![Data::A(Ipv4Addr::new(10, 1, 0, 5))]));
        assert_eq!(t.resolve(&blue, &q("db.green", TYPE_A)), Resolution::Local(Rcode::NoError, vec![Data::A(Ipv4Addr::new(10, 3, 0, 5))]));
        assert_eq!(t.resolve(&blue, &q("db", TYPE_A)), Resolution::Local(Rcode::NxDomain, vec![]), "db is in green, not blue");
        assert_eq!(t.resolve(&blue, &q("web", TYPE_AAAA)), Resolution::Local(Rcode::NoError, vec![]));
        // Red's names never reach blue, by any spelling.
        assert_eq!(t.resolve(&blue, &q("secret", TYPE_A)), Resolution::Local(Rcode::NxDomain, vec![]));
        assert_eq!(t.resolve(&blue, &q("secret.red", TYPE_A)), Resolution::Forward);
        assert_eq!(t.resolve(&blue, &q("9.0.2.10.in-addr.arpa", TYPE_PTR)), Resolution::Forward);
        assert_eq!(t.resolve(&red, &q("web.blue", TYPE_A)), Resolution::Forward);
        assert_eq!(t.resolve(&blue, &q("5.0.1.10.in-addr.arpa", TYPE_PTR)), Resolution::Local(Rcode::NoError, vec![Data::Ptr("web.blue".into())]));
        assert_eq!(t.resolve(&blue, &q("example.org", TYPE_A)), Resolution::Forward);
        // A dual-stack name has both; its IPv6 address reverses too.
        let v6: Ipv6Addr = "fd00:3::5".parse().unwrap();
        assert_eq!(t.resolve(&blue, &q("db.green", TYPE_AAAA)), Resolution::Local(Rcode::NoError, vec![Data::Aaaa(v6)]));
        let ptr6 = "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(t.resolve(&blue, &q(ptr6, TYPE_PTR)), Resolution::Local(Rcode::NoError, vec![Data::Ptr("db.green".into())]));
        assert_eq!(t.resolve(&red, &q(ptr6, TYPE_PTR)), Resolution::Forward, "red may not learn green's names");
    }
}
