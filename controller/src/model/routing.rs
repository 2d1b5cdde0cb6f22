//! Routers and policies. Networks joined by routers form a routing domain; inside one,
//! subnets must not overlap (two networks apart may reuse a subnet: they never meet).

use std::collections::BTreeSet;

use plexus_api::network::Cidr;
use plexus_api::{Policy, PolicySpec, Router, RouterSpec, Valid};

use super::{put_rules, Model, Object, Refusal, Subject};

/// The largest policy number: flows number a policy's rules after it
/// ([`crate::flows::policy`]), in 32 bits.
pub(crate) const MAX_POLICY_ID: u32 = (1 << 22) - 1;

impl Model {
    /// The networks reachable from `start` through routers (`replace` stands in for the
    /// router of the same name, as if it were already stored).
    fn domain(&self, start: &[String], replace: Option<&RouterSpec>) -> BTreeSet<String> {
        let routers: Vec<&RouterSpec> = self.routers.values().map(|r| &r.spec).filter(|r| replace.is_none_or(|x| x.name != r.name)).chain(replace).collect();
        plexus_api::routing::routing_domain(&routers, start)
    }

    /// Refuses a domain in which two subnets overlap; `subnet_of` may override a network's
    /// subnet (a PUT that changes it).
    pub(crate) fn check_domain(&self, domain: &BTreeSet<String>, override_net: Option<&plexus_api::NetworkSpec>, field: &str) -> Result<(), Refusal> {
        let mut subnets: Vec<(&str, String, Cidr)> = Vec::new();
        let mut subnets6: Vec<(&str, String, plexus_api::network::Cidr6)> = Vec::new();
        for name in domain {
            let spec = match override_net {
                Some(s) if s.name == *name => s,
                _ => match self.networks.get(name) {
                    Some(n) => &n.spec,
                    None => continue,
                },
            };
            let overlap = |subnet: &str, other: &str, os: &str| {
                Refusal::new(422, Some(field), format!("subnet {subnet} of {name} overlaps {os} of {other}, and routers join them into one routing domain"))
            };
            if let Some(c) = spec.cidr() {
                if let Some((other, os, _)) = subnets.iter().find(|(_, _, oc)| oc.overlaps(&c)) {
                    return Err(overlap(&spec.subnet, other, os));
                }
                subnets.push((name, spec.subnet.clone(), c));
            }
            if let (Some(c), Some(text)) = (spec.cidr6(), &spec.subnet6) {
                if let Some((other, os, _)) = subnets6.iter().find(|(_, _, oc)| oc.overlaps(&c)) {
                    return Err(overlap(text, other, os));
                }
                subnets6.push((name, text.clone(), c));
            }
        }
        Ok(())
    }

    pub(crate) fn put_router(&mut self, spec: Valid<RouterSpec>, create: bool, if_match: Option<u64>) -> Result<Router, Refusal> {
        let spec = spec.into_inner();
        let stored = self.routers.get(&spec.name);
        if put_rules("router", &spec.name, stored.map(|r| (&r.spec, r.revision)), &spec, create, if_match)? {
            return Ok(stored.cloned().unwrap_or(Router { spec, revision: self.revision }));
        }
        if let Some(missing) = spec.networks.iter().find(|n| !self.networks.contains_key(*n)) {
            return Err(Refusal::new(422, Some("networks"), format!("no network named {missing}")));
        }
        if let Some(n) = spec.networks.iter().filter_map(|n| self.networks.get(n)).find(|n| n.vni().is_none()) {
            return Err(Refusal::new(422, Some("networks"), format!("{} is not an overlay network; routers join overlay networks", n.spec.name)));
        }
        let domain = self.domain(&spec.networks, Some(&spec));
        self.check_domain(&domain, None, "networks")?;
        self.revision += 1;
        let r = Router { spec, revision: self.revision };
        self.routers.insert(r.spec.name.clone(), r.clone());
        self.record(Subject::Router(r.spec.name.clone()), Some(Object::Router(r.clone())));
        Ok(r)
    }

    pub(crate) fn delete_router(&mut self, name: &str) -> Result<(), Refusal> {
        if self.routers.remove(name).is_none() {
            return Err(Refusal::new(404, Some("name"), format!("no router named {name}")));
        }
        self.revision += 1;
        self.record(Subject::Router(name.to_string()), None);
        Ok(())
    }

    pub(crate) fn put_policy(&mut self, spec: Valid<PolicySpec>, create: bool, if_match: Option<u64>) -> Result<Policy, Refusal> {
        let spec = spec.into_inner();
        let stored = self.policies.get(&spec.name);
        if put_rules("policy", &spec.name, stored.map(|p| (&p.spec, p.revision)), &spec, create, if_match)? {
            return Ok(stored.cloned().unwrap_or(Policy { spec, id: 0, revision: self.revision }));
        }
        match self.networks.get(&spec.network) {
            None => return Err(Refusal::new(422, Some("network"), format!("no network named {}", spec.network))),
            Some(n) if n.vni().is_none() => {
                return Err(Refusal::new(422, Some("network"), format!("{} is an underlay network; policies govern overlay networks", spec.network)))
            }
            Some(_) => {}
        }
        for (dir, rules) in [("ingress", &spec.ingress), ("egress", &spec.egress)] {
            for (i, r) in rules.iter().flatten().enumerate() {
                for (j, p) in r.peers.iter().enumerate() {
                    if let Some(n) = p.network.as_ref().filter(|n| !self.networks.contains_key(*n)) {
                        return Err(Refusal::new(422, Some(&format!("{dir}[{i}].peers[{j}].network")), format!("no network named {n}")));
                    }
                }
            }
        }
        // A policy keeps its number while it exists; a new one takes the smallest free.
        let id = match stored {
            Some(p) => p.id,
            None => {
                let used: BTreeSet<u32> = self.policies.values().map(|p| p.id).collect();
                (1..).find(|i| !used.contains(i)).unwrap_or(u32::MAX)
            }
        };
        if id > MAX_POLICY_ID {
            return Err(Refusal::new(409, None, format!("at most {MAX_POLICY_ID} policies")));
        }
        self.revision += 1;
        let p = Policy { spec, id, revision: self.revision };
        self.policies.insert(p.spec.name.clone(), p.clone());
        self.record(Subject::Policy(p.spec.name.clone()), Some(Object::Policy(p.clone())));
        Ok(p)
    }

    pub(crate) fn delete_policy(&mut self, name: &str) -> Result<(), Refusal> {
        if self.policies.remove(name).is_none() {
            return Err(Refusal::new(404, Some("name"), format!("no policy named {name}")));
        }
        self.revision += 1;
        self.record(Subject::Policy(name.to_string()), None);
        Ok(())
    }

    /// Whether `network`'s traffic may leave Plexus: a router of its routing domain has
    /// `external`.
    pub(crate) fn external_domain(&self, network: &str) -> bool {
        if !self.routers.values().any(|r| r.spec.external) {
            return false;
        }
        let routers: Vec<&RouterSpec> = self.routers.values().map(|r| &r.spec).collect();
        plexus_api::routing::external_networks(&routers).contains(network)
    }

    /// What host `host`'s own stack must do for Plexus: route and NAT the subnets of networks
    /// whose traffic may leave, and forward the ports its endpoints publish.
    pub fn host_edge(&self, host: &str) -> plexus_api::HostEdge {
        let routers: Vec<&RouterSpec> = self.routers.values().map(|r| &r.spec).collect();
        let external = plexus_api::routing::external_networks(&routers);
        let mut subnets = Vec::new();
        let mut published = Vec::new();
        for name in &external {
            let Some(n) = self.networks.get(name) else { continue };
            subnets.push(n.spec.subnet.clone());
            for e in self.endpoints.get(name).into_iter().flat_map(|m| m.values()).filter(|e| e.host == host) {
                for p in &e.publish {
                    let endpoint = format!("{}/{}", e.network, e.id);
                    published.push(plexus_api::PublishedTarget { host_port: p.host_port, protocol: p.protocol, ip: e.ip, port: p.port, endpoint });
                }
            }
        }
        subnets.sort();
        published.sort();
        plexus_api::HostEdge::new(subnets, published)
    }

    /// Applies a router change only if every endpoint that publishes ports stays on a network
    /// whose traffic may leave Plexus; otherwise refuses it, naming one.
    pub(crate) fn keeping_publishers(&mut self, change: impl FnOnce(&mut Model) -> Result<Option<Object>, Refusal>) -> Result<Option<Object>, Refusal> {
        let mut next = self.clone();
        let out = change(&mut next)?;
        let publishing: Vec<&plexus_api::Endpoint> = next.all_endpoints().filter(|e| !e.publish.is_empty()).collect();
        if let Some(e) = publishing.iter().find(|e| !next.external_domain(&e.network)) {
            return Err(Refusal::new(
                409,
                Some("external"),
                format!("endpoint {}/{} publishes ports, which need its network's routing domain to keep external access", e.network, e.id),
            ));
        }
        *self = next;
        Ok(out)
    }

    /// The network's routing domain (itself included).
    pub(crate) fn domain_of(&self, network: &str) -> BTreeSet<String> {
        self.domain(&[network.to_string()], None)
    }

    /// The routing domain `network` is in, when a router joins it: its id as packets carry it
    /// through the pipeline (the smallest VNI among the domain's networks) and its networks.
    pub(crate) fn routed_domain(&self, network: &str) -> Option<(u32, BTreeSet<String>)> {
        if !self.routers.values().any(|r| r.spec.networks.iter().any(|n| n == network)) {
            return None;
        }
        let networks = self.domain_of(network);
        let id = networks.iter().filter_map(|n| self.networks.get(n)?.vni()).min()?;
        Some((id, networks))
    }
}
