//! Routers: L3 between networks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::mac::Mac;
use crate::network::check_name;
use crate::problem::FieldError;

/// What a client sends to create or replace a router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouterSpec {
    /// Name (DNS label).
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)]
    pub name: String,
    /// Networks it routes between. Networks joined by routers form one routing domain, in
    /// which subnets must not overlap.
    pub networks: Vec<String>,
    /// Containers on the networks of this router's routing domain reach addresses outside
    /// Plexus (their host, the underlay and beyond, through the host's routes), source-NATed
    /// by their own host to its address; endpoints of the domain may publish ports.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    /// A fixed next hop for traffic leaving the domain: not built (traffic leaves through each
    /// host's own routes with `external`); refused if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Ipv4)]
    pub external_gateway: Option<Ipv4Addr>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A stored router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Router {
    /// The spec.
    #[serde(flatten)]
    pub spec: RouterSpec,
    /// Store revision of the last change.
    pub revision: u64,
}

impl RouterSpec {
    /// Checks what does not depend on other objects.
    pub fn validated(mut self) -> Result<RouterSpec, FieldError> {
        check_name("name", &self.name)?;
        if self.external_gateway.is_some() {
            // Stored but not acted on would be a lie on the wire: refused until it is built.
            return Err(FieldError::new(
                "external_gateway",
                "a fixed external next hop is not built; leave it out and set external: true, which sends traffic out through each host's own routes",
            ));
        }
        if self.networks.is_empty() {
            return Err(FieldError::new("networks", "a router joins at least one network"));
        }
        for (i, n) in self.networks.iter().enumerate() {
            check_name(&format!("networks[{i}]"), n)?;
        }
        let mut sorted = self.networks.clone();
        sorted.sort();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(FieldError::new("networks", format!("{} is listed twice", w[0])));
        }
        self.networks = sorted;
        Ok(self)
    }
}

/// The networks reachable from `start` through `routers`: `start`'s routing domain (every
/// network a router joins to another is in the other's domain).
pub fn routing_domain<'a>(routers: &[&'a RouterSpec], start: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    let mut seen: BTreeSet<String> = start.into_iter().cloned().collect();
    loop {
        let before = seen.len();
        for r in routers {
            if r.networks.iter().any(|n| seen.contains(n)) {
                seen.extend(r.networks.iter().cloned());
            }
        }
        if seen.len() == before {
            return seen;
        }
    }
}

/// The networks whose traffic may leave Plexus: the routing domains of routers with
/// `external`.
pub fn external_networks(routers: &[&RouterSpec]) -> BTreeSet<String> {
    routing_domain(routers, routers.iter().filter(|r| r.external).flat_map(|r| r.networks.iter()))
}

/// The internal port of `br-int` through which a host's own stack meets its containers: the
/// way out (source NAT by the host) and in (published ports).
pub const EXTERNAL_PORT: &str = "plx-ext";
/// The switch's side of [`EXTERNAL_PORT`]: the next hop the host routes external networks'
/// subnets to (the switch answers ARP for it).
pub const EXTERNAL_NEXT_HOP: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);
/// The host's address on [`EXTERNAL_PORT`].
pub const EXTERNAL_HOST_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 2);
/// The prefix length of the link between the two.
pub const EXTERNAL_PREFIX: u8 = 30;
/// The MAC the switch answers for [`EXTERNAL_NEXT_HOP`] with and routes out from (derived
/// from the address, like a gateway's).
pub const EXTERNAL_ROUTER_MAC: Mac = Mac::from_ipv4(EXTERNAL_NEXT_HOP);
/// The MAC of the host's side of [`EXTERNAL_PORT`] (the agent sets it).
pub const EXTERNAL_HOST_MAC: Mac = Mac::from_ipv4(EXTERNAL_HOST_ADDR);

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, nets: &[&str], external: bool) -> RouterSpec {
        RouterSpec { name: name.into(), networks: nets.iter().map(|n| n.to_string()).collect(), external, external_gateway: None, labels: BTreeMap::new() }
    }

    #[test]
    fn external_access_spreads_over_a_routing_domain_and_no_further() {
        let (a, b, c) = (r("a", &["red", "blue"], true), r("b", &["blue", "green"], false), r("c", &["pink"], false));
        let ext = external_networks(&[&a, &b, &c]);
        assert_eq!(ext.into_iter().collect::<Vec<_>>(), ["blue", "green", "red"]);
        assert!(external_networks(&[&b, &c]).is_empty());
    }
}
