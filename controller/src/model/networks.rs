//! Networks: names, VNIs and VLANs decided deterministically.

use plexus_api::{Network, NetworkKind, NetworkSpec, Valid};

use super::{check_revision, put_rules, Model, Object, Refusal, Subject};

/// Overlay VNIs the controller picks from when a network names none.
pub const AUTO_VNI_START: u32 = 1000;

impl Model {
    pub(crate) fn delete_network(&mut self, name: &str, if_match: Option<u64>, force: bool) -> Result<(), Refusal> {
        let Some(n) = self.networks.get(name) else {
            return Err(Refusal::new(404, Some("name"), format!("no network named {name}")));
        };
        check_revision(n.revision, if_match)?;
        if let Some(r) = self.routers.values().find(|r| r.spec.networks.iter().any(|n| n == name)) {
            return Err(Refusal::new(409, None, format!("router {} routes network {name}; change the router first", r.spec.name)));
        }
        let policies: Vec<String> = self.policies.values().filter(|p| p.spec.network == name).map(|p| p.spec.name.clone()).collect();
        if !policies.is_empty() && !force {
            return Err(Refusal::new(
                409,
                None,
                format!(
                    "policies {} govern network {name}; delete them first or force the deletion (?force=true in the API, --force in the CLI)",
                    policies.join(", ")
                ),
            ));
        }
        let eps = self.endpoints.get(name).map(|m| m.len()).unwrap_or(0);
        if eps > 0 && !force {
            return Err(Refusal::new(
                409,
                None,
                format!("network {name} still has {eps} endpoint(s); delete them first or force the deletion (?force=true in the API, --force in the CLI)"),
            ));
        }
        self.networks.remove(name);
        self.leases.remove(name);
        let gone = self.endpoints.remove(name).unwrap_or_default();
        self.forget_used(name);
        self.members.remove(name);
        self.revision += 1;
        for e in gone.values() {
            self.record_gone(e);
        }
        for p in policies {
            self.policies.remove(&p);
            self.record(Subject::Policy(p), None);
        }
        self.record(Subject::Network(name.to_string()), None);
        Ok(())
    }

    /// The largest MTU an overlay's endpoints can have on every registered host: the smallest
    /// underlay MTU the hosts report (1500 for a host that reports none, or with no hosts yet)
    /// less the encapsulation's overhead.
    pub(crate) fn overlay_path_mtu(&self) -> u32 {
        let underlay = self.hosts.values().map(|h| h.spec.underlay_mtu.unwrap_or(1500)).min().unwrap_or(1500);
        underlay.saturating_sub(plexus_api::Encap::MAX_OVERHEAD)
    }

    pub(crate) fn put_network(&mut self, spec: Valid<NetworkSpec>, create: bool, if_match: Option<u64>) -> Result<Network, Refusal> {
        let mut spec = spec.into_inner();
        let existing = self.networks.get(&spec.name);
        // Whether it is unchanged is decided below, once the VNI is filled in.
        put_rules("network", &spec.name, existing.map(|n| (&n.spec, n.revision)), &spec, create, if_match)?;
        let others = || self.networks.values().filter(|n| n.spec.name != spec.name);
        match &mut spec.kind {
            NetworkKind::Overlay { vni } => {
                let used: Vec<u32> = others()
                    .filter_map(|n| match n.spec.kind {
                        NetworkKind::Overlay { vni } => vni,
                        _ => None,
                    })
                    .collect();
                match vni {
                    Some(v) if used.contains(v) => return Err(Refusal::new(409, Some("kind.vni"), format!("VNI {v} is used by another network"))),
                    Some(_) => {}
                    None => {
                        // Keep the VNI a network already had, so a PUT without one is idempotent.
                        let kept = existing.and_then(|n| match n.spec.kind {
                            NetworkKind::Overlay { vni } => vni,
                            _ => None,
                        });
                        *vni = Some(kept.unwrap_or_else(|| (AUTO_VNI_START..).find(|v| !used.contains(v)).unwrap_or(AUTO_VNI_START)));
                    }
                }
            }
            NetworkKind::Underlay { physical_network, vlan } => {
                let clash =
                    others().any(|n| matches!(&n.spec.kind, NetworkKind::Underlay { physical_network: p, vlan: v } if p == physical_network && v == vlan));
                if clash {
                    let what = vlan.map(|v| format!("VLAN {v}")).unwrap_or_else(|| "the untagged network".into());
                    return Err(Refusal::new(409, Some("kind.vlan"), format!("{what} on {physical_network} is used by another network")));
                }
                let mapping: Vec<&plexus_api::Host> = self.hosts.values().filter(|h| h.spec.physical_networks.contains(physical_network)).collect();
                if mapping.is_empty() {
                    return Err(Refusal::new(
                        422,
                        Some("kind.physical_network"),
                        format!("no registered host maps physical network {physical_network}; start agents with --bridge-mapping {physical_network}=INTERFACE"),
                    ));
                }
                // Switches tell networks apart by segment number; two physical networks whose
                // names hash alike would share one.
                let seg = plexus_api::network::underlay_segment(physical_network, *vlan);
                if let Some(n) = others().find(|n| n.segment() == Some(seg)) {
                    return Err(Refusal::new(
                        409,
                        Some("kind.physical_network"),
                        format!("{physical_network} and the physical network of {} look alike to the switches; rename one", n.spec.name),
                    ));
                }
                let link = mapping.iter().map(|h| h.spec.underlay_mtu.unwrap_or(1500)).min().unwrap_or(1500);
                if let Some(m) = spec.mtu.filter(|m| *m > link) {
                    return Err(Refusal::new(
                        422,
                        Some("mtu"),
                        format!("{m} is more than {physical_network} carries: {link} (the smallest link MTU of the hosts that map it)"),
                    ));
                }
            }
        }
        if let (Some(m), NetworkKind::Overlay { .. }) = (spec.mtu, &spec.kind) {
            let path = self.overlay_path_mtu();
            if m > path {
                let underlay = path + plexus_api::Encap::MAX_OVERHEAD;
                return Err(Refusal::new(
                    422,
                    Some("mtu"),
                    format!("{m} is more than the tunnels can carry: {path} (the registered hosts' smallest underlay MTU, {underlay}, less {} for the encapsulation)", plexus_api::Encap::MAX_OVERHEAD),
                ));
            }
        }
        // Whether the way addresses are carved changes: then host-subnet leases of the old
        // layout mean nothing (and would hand out addresses outside the new subnet).
        let mut relayout = false;
        if let Some(n) = existing {
            if n.spec == spec {
                return Ok(n.clone());
            }
            let eps = self.endpoints.get(&spec.name);
            let has_endpoints = eps.is_some_and(|m| !m.is_empty());
            relayout = n.spec.subnet != spec.subnet || n.spec.ipam != spec.ipam || n.spec.host_prefix != spec.host_prefix;
            if n.spec.subnet != spec.subnet && has_endpoints {
                return Err(Refusal::new(409, Some("subnet"), "the subnet cannot change while the network has endpoints"));
            }
            if relayout && has_endpoints {
                let field = if n.spec.ipam != spec.ipam { "ipam" } else { "host_prefix" };
                return Err(Refusal::new(409, Some(field), "the IPAM mode and host prefix cannot change while the network has endpoints"));
            }
            if let Some(gw) = spec.gateway.filter(|gw| n.spec.gateway != Some(*gw)) {
                if let Some(e) = eps.and_then(|m| m.values().find(|e| e.ip == gw)) {
                    return Err(Refusal::new(409, Some("gateway"), format!("{gw} is the address of endpoint {} in {}", e.id, spec.name)));
                }
            }
            if (n.spec.subnet6 != spec.subnet6 || n.spec.gateway6 != spec.gateway6) && has_endpoints {
                let field = if n.spec.subnet6 != spec.subnet6 { "subnet6" } else { "gateway6" };
                return Err(Refusal::new(409, Some(field), "the IPv6 subnet and gateway cannot change while the network has endpoints"));
            }
            if n.spec.subnet != spec.subnet || n.spec.subnet6 != spec.subnet6 {
                let field = if n.spec.subnet != spec.subnet { "subnet" } else { "subnet6" };
                self.check_domain(&self.domain_of(&spec.name), Some(&spec), field)?;
            }
        }
        if relayout {
            self.leases.remove(&spec.name);
        }
        self.revision += 1;
        let n = Network { spec, revision: self.revision };
        self.networks.insert(n.spec.name.clone(), n.clone());
        self.record(Subject::Network(n.spec.name.clone()), Some(Object::Network(n.clone())));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use plexus_api::{NetworkSpec, Valid};

    use super::AUTO_VNI_START;
    use crate::model::testing::overlay;
    use crate::model::{Command, Model};

    fn vni(m: &Model, name: &str) -> Option<u32> {
        m.networks[name].vni()
    }

    #[test]
    fn vnis_are_picked_once_kept_on_replace_and_never_shared() {
        let mut m = Model::default();
        m.apply(overlay("a", "10.1.0.0/24", None)).unwrap();
        m.apply(overlay("b", "10.2.0.0/24", Some(AUTO_VNI_START + 1))).unwrap();
        m.apply(overlay("c", "10.3.0.0/24", None)).unwrap();
        assert_eq!((vni(&m, "a"), vni(&m, "c")), (Some(AUTO_VNI_START), Some(AUTO_VNI_START + 2)), "the lowest free VNIs, skipping b's");
        // A replace that names no VNI keeps the one the network has, and changes nothing.
        let rev = m.revision;
        let spec = Valid::new(NetworkSpec::overlay("a", "10.1.0.0/24")).unwrap();
        m.apply(Command::PutNetwork { spec, create: false, if_match: None }).unwrap();
        assert_eq!((vni(&m, "a"), m.revision), (Some(AUTO_VNI_START), rev));
        // Another network's VNI is refused, naming the field.
        let err = m.apply(overlay("d", "10.4.0.0/24", Some(AUTO_VNI_START + 1))).unwrap_err();
        assert_eq!((err.status, err.field.as_deref()), (409, Some("kind.vni")), "{err}");
        assert!(!m.networks.contains_key("d"));
    }
}
