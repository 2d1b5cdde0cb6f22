//! A host's names: what its agent's DNS responder answers. The controller computes it from the
//! model for the networks that have endpoints on the host (and the networks routed to them);
//! the agent waits for it to change, as it does for the edge.
//!
//! Each endpoint is known by its id and, when it has one, by the value of its
//! [`NAME_LABEL`] label (a container's name): `NAME` in its own network, `NAME.NETWORK` from
//! any network of its routing domain. Nothing of a network outside the querier's routing
//! domain is ever answered: such names are as unknown as any.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The controller id the agent's responder takes on its host's `br-int` (its management
/// socket): the switch sends DNS queries to the gateway there and to no remote controller.
pub const DNS_CONTROLLER_ID: u16 = 53;
/// The DNS port.
pub const DNS_PORT: u16 = 53;

/// The label whose value is an endpoint's DNS name besides its id.
pub const NAME_LABEL: &str = "name";

/// One network a host's responder serves: where it answers and which networks' names it may
/// give out there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NameZone {
    /// The network.
    pub network: String,
    /// Its VNI, as the switch marks the queries it sends up.
    pub vni: u32,
    /// Its gateway, the address the responder answers on.
    #[schema(value_type = String, format = Ipv4)]
    pub gateway: Ipv4Addr,
    /// The networks (itself included) whose endpoints a query from it may learn: its routing
    /// domain, sorted.
    pub visible: Vec<String>,
}

/// One name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NameRecord {
    /// The endpoint's network.
    pub network: String,
    /// The name, lower case (the endpoint's id or its name label).
    pub name: String,
    /// The endpoint's address.
    #[schema(value_type = String, format = Ipv4)]
    pub ip: Ipv4Addr,
    /// Its IPv6 address, on a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Ipv6)]
    pub ip6: Option<std::net::Ipv6Addr>,
}

/// What one host's DNS responder serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostNames {
    /// The networks with endpoints on the host, sorted.
    pub zones: Vec<NameZone>,
    /// The names of every network some zone may see, sorted.
    pub records: Vec<NameRecord>,
    /// A digest of both: a poll that names it returns when it changes.
    pub digest: String,
}

impl HostNames {
    /// Names with their digest computed.
    pub fn new(zones: Vec<NameZone>, records: Vec<NameRecord>) -> HostNames {
        let mut h = crate::ids::fnv1a("names");
        for z in &zones {
            h = h.rotate_left(5) ^ crate::ids::fnv1a(&format!("{}/{}/{}/{}", z.network, z.vni, z.gateway, z.visible.join(",")));
        }
        for r in &records {
            h = h.rotate_left(7) ^ crate::ids::fnv1a(&format!("{}/{}/{}/{:?}", r.network, r.name, r.ip, r.ip6));
        }
        HostNames { zones, records, digest: format!("{h:016x}") }
    }
}

/// Whether `name` can be asked for in DNS: a label of letters, digits and hyphens, not
/// starting or ending with a hyphen, at most 63 bytes. Other ids still work everywhere else;
/// they only have no name.
pub fn is_dns_label(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b.len() <= 63 && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') && b[0] != b'-' && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(is_dns_label("web-1"));
        assert!(!is_dns_label("-web"));
        assert!(!is_dns_label("a.b"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }

    #[test]
    fn digest_follows_content() {
        let z = NameZone { network: "n".into(), vni: 5, gateway: Ipv4Addr::new(10, 0, 0, 1), visible: vec!["n".into()] };
        let r = NameRecord { network: "n".into(), name: "a".into(), ip: Ipv4Addr::new(10, 0, 0, 2), ip6: None };
        let a = HostNames::new(vec![z.clone()], vec![r.clone()]);
        let b = HostNames::new(vec![z], vec![NameRecord { ip: Ipv4Addr::new(10, 0, 0, 3), ..r }]);
        assert_ne!(a.digest, b.digest);
    }
}
