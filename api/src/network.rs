//! Networks: overlays (a VNI over the tunnel mesh) and underlays (flat or VLAN on a named
//! physical network), each with one IPv4 subnet and, for dual stack, one IPv6 subnet.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::problem::FieldError;

/// How addresses are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IpamMode {
    /// The controller assigns every address.
    #[default]
    Cluster,
    /// Each host leases a block of the subnet (Flannel-style).
    HostSubnet,
}

/// Overlay or underlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum NetworkKind {
    /// A virtual L2 network carried in tunnels with this VNI (1..=16777215).
    Overlay {
        /// VXLAN/Geneve network identifier; chosen by the controller if absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(minimum = 1, maximum = 16777215)]
        vni: Option<u32>,
    },
    /// A physical network, untagged or on a VLAN.
    Underlay {
        /// Name of the physical network (a bridge mapping on every host).
        physical_network: String,
        /// VLAN id (1..=4094), or untagged.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(minimum = 1, maximum = 4094)]
        vlan: Option<u16>,
    },
}

/// What a client sends to create or replace a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// DNS label: 1 to 63 lowercase letters, digits and '-', not starting or ending with '-'.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)]
    pub name: String,
    /// Overlay or underlay.
    pub kind: NetworkKind,
    /// IPv4 subnet in CIDR form, e.g. `10.10.0.0/24` (prefix 8..=30).
    pub subnet: String,
    /// Gateway address inside the subnet; the first host address if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Ipv4)]
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 subnet beside the IPv4 one (dual stack), e.g. `fd00:10::/64`: prefix /32 to /120
    /// (/64 to /120 with host-subnet IPAM), with at least as many addresses as `subnet`.
    /// Every endpoint then gets an address of each family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    /// IPv6 gateway inside `subnet6`; its first address after the subnet's own if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Ipv6)]
    pub gateway6: Option<Ipv6Addr>,
    /// MTU of endpoints (576..=9000); derived from the underlay if absent. An overlay's MTU
    /// may not exceed the smallest underlay MTU the hosts report less 50 for the tunnel's
    /// headers, and an endpoint on a host whose underlay carries less gets less.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 576, maximum = 9000)]
    pub mtu: Option<u32>,
    /// Address assignment.
    #[serde(default)]
    pub ipam: IpamMode,
    /// host-subnet IPAM: prefix length of each host's block (default: the subnet's + 8, at
    /// most 28).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 30)]
    pub host_prefix: Option<u8>,
    /// host-subnet IPAM: seconds a lease lasts without a heartbeat from its host (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86400)]
    pub lease_ttl_seconds: Option<u32>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A stored network: the spec as accepted (defaults filled in) and its revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Network {
    /// The spec, with `vni` and `gateway` decided.
    #[serde(flatten)]
    pub spec: NetworkSpec,
    /// Store revision of the last change to this network (for `If-Match`).
    pub revision: u64,
}

impl Network {
    /// Its VNI, if it is an overlay network (a stored one always has its VNI decided).
    pub fn vni(&self) -> Option<u32> {
        match self.spec.kind {
            NetworkKind::Overlay { vni } => vni,
            NetworkKind::Underlay { .. } => None,
        }
    }

    /// Its physical network and VLAN, if it is an underlay network.
    pub fn underlay(&self) -> Option<(&str, Option<u16>)> {
        match &self.spec.kind {
            NetworkKind::Overlay { .. } => None,
            NetworkKind::Underlay { physical_network, vlan } => Some((physical_network, *vlan)),
        }
    }

    /// What switches call the network: its VNI for an overlay; for an underlay, a number
    /// above every VNI made of its physical network's and its VLAN's (0: untagged).
    pub fn segment(&self) -> Option<u32> {
        match &self.spec.kind {
            NetworkKind::Overlay { vni } => *vni,
            NetworkKind::Underlay { physical_network, vlan } => Some(underlay_segment(physical_network, *vlan)),
        }
    }

    /// The bytes its packets carry between hosts on top of a container's frame: the tunnel's
    /// for an overlay, none for an underlay (the physical network carries the frame as it is).
    pub fn overhead(&self) -> u32 {
        overhead(self.underlay().is_some())
    }
}

/// The bytes between hosts on top of a container's frame: the tunnel's for an overlay, none
/// for an underlay network.
pub const fn overhead(underlay: bool) -> u32 {
    if underlay {
        0
    } else {
        crate::Encap::MAX_OVERHEAD
    }
}

/// The segment number of VLAN `vlan` (or untagged) of physical network `physnet`: above the
/// VNIs (bit 24 set), eleven bits of the name's hash and twelve of the VLAN.
pub fn underlay_segment(physnet: &str, vlan: Option<u16>) -> u32 {
    0x0100_0000 | (((crate::ids::fnv1a(physnet) & 0x7ff) as u32) << 12) | u32::from(vlan.unwrap_or(0) & 0xfff)
}

/// The `br-int` port of the patch to the bridge a host maps `physnet` to.
pub fn uplink_port(physnet: &str) -> String {
    format!("plx-u{:08x}", crate::ids::fnv1a(physnet) as u32)
}

/// The other end of [`uplink_port`], on the mapped bridge.
pub fn uplink_peer(physnet: &str) -> String {
    format!("plx-d{:08x}", crate::ids::fnv1a(physnet) as u32)
}

/// A parsed IPv4 CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub len: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`; host bits must be zero.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, l) = s.split_once('/').ok_or_else(|| format!("{s:?} is not in CIDR form a.b.c.d/len"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let len: u8 = l.parse().map_err(|_| format!("prefix length {l:?} is not a number"))?;
        if len > 32 {
            return Err(format!("prefix length {len} is over 32"));
        }
        let c = Cidr { addr, len };
        if u32::from(addr) & !c.mask() != 0 {
            return Err(format!("{s} has host bits set (did you mean {}/{len}?)", Ipv4Addr::from(u32::from(addr) & c.mask())));
        }
        Ok(c)
    }
    /// The netmask.
    pub fn mask(&self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - self.len)
        }
    }
    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }
    /// Whether two subnets share any address.
    pub fn overlaps(&self, o: &Cidr) -> bool {
        let m = self.mask() & o.mask();
        u32::from(self.addr) & m == u32::from(o.addr) & m
    }
    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
}

/// A parsed IPv6 CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr6 {
    /// Network address.
    pub addr: Ipv6Addr,
    /// Prefix length.
    pub len: u8,
}

impl Cidr6 {
    /// Parses `addr/n`; host bits must be zero.
    pub fn parse(s: &str) -> Result<Cidr6, String> {
        let (a, l) = s.split_once('/').ok_or_else(|| format!("{s:?} is not in CIDR form addr/len"))?;
        let addr: Ipv6Addr = a.parse().map_err(|_| format!("{a:?} is not an IPv6 address"))?;
        let len: u8 = l.parse().map_err(|_| format!("prefix length {l:?} is not a number"))?;
        if len > 128 {
            return Err(format!("prefix length {len} is over 128"));
        }
        let c = Cidr6 { addr, len };
        if u128::from(addr) & !c.mask() != 0 {
            return Err(format!("{s} has host bits set (did you mean {}/{len}?)", Ipv6Addr::from(u128::from(addr) & c.mask())));
        }
        Ok(c)
    }
    /// The netmask.
    pub fn mask(&self) -> u128 {
        if self.len == 0 {
            0
        } else {
            u128::MAX << (128 - self.len)
        }
    }
    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & self.mask() == u128::from(self.addr)
    }
    /// Whether two subnets share any address.
    pub fn overlaps(&self, o: &Cidr6) -> bool {
        let m = self.mask() & o.mask();
        u128::from(self.addr) & m == u128::from(o.addr) & m
    }
    /// The last address.
    pub fn last(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) | !self.mask())
    }
}

impl std::fmt::Display for Cidr6 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Checks a DNS label.
pub fn check_name(field: &str, name: &str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(field, format!("{name:?} must be 1 to 63 lowercase letters, digits or '-', not starting or ending with '-'")))
    }
}

impl NetworkSpec {
    /// An overlay network with a controller-chosen VNI, cluster IPAM and defaults for the rest.
    pub fn overlay(name: &str, subnet: &str) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            kind: NetworkKind::Overlay { vni: None },
            subnet: subnet.into(),
            gateway: None,
            subnet6: None,
            gateway6: None,
            mtu: None,
            ipam: IpamMode::Cluster,
            host_prefix: None,
            lease_ttl_seconds: None,
            labels: BTreeMap::new(),
        }
    }

    /// Checks everything that does not depend on other networks, and fills in the gateway.
    pub fn validated(mut self) -> Result<NetworkSpec, FieldError> {
        check_name("name", &self.name)?;
        if self.subnet.contains(':') {
            return Err(FieldError::new(
                "subnet",
                format!("{} is IPv6: subnet is the IPv4 subnet, which every network needs; give an IPv6 subnet as subnet6 (IPv6-only networks are not supported yet)", self.subnet),
            ));
        }
        let c = Cidr::parse(&self.subnet).map_err(|r| FieldError::new("subnet", r))?;
        if !(8..=30).contains(&c.len) {
            return Err(FieldError::new("subnet", format!("prefix length {} is outside 8..=30", c.len)));
        }
        let link = Cidr { addr: crate::routing::EXTERNAL_NEXT_HOP, len: crate::routing::EXTERNAL_PREFIX };
        if c.overlaps(&link) {
            return Err(FieldError::new(
                "subnet",
                format!("{} overlaps 169.254.0.0/30, the link between each host and its switch (external access)", self.subnet),
            ));
        }
        let first = Ipv4Addr::from(u32::from(c.addr) + 1);
        let gw = self.gateway.unwrap_or(first);
        if !c.contains(gw) || gw == c.addr || gw == c.broadcast() {
            return Err(FieldError::new("gateway", format!("{gw} is not a host address of {}", self.subnet)));
        }
        self.gateway = Some(gw);
        if let Some(m) = self.mtu {
            if !(576..=9000).contains(&m) {
                return Err(FieldError::new("mtu", format!("{m} is outside 576..=9000")));
            }
        }
        match &self.kind {
            NetworkKind::Overlay { vni: Some(v) } if *v == 0 || *v > 0xff_ffff => {
                return Err(FieldError::new("kind.vni", format!("{v} is outside 1..=16777215")));
            }
            NetworkKind::Underlay { physical_network, vlan } => {
                check_name("kind.physical_network", physical_network)?;
                if let Some(v) = vlan {
                    if *v == 0 || *v > 4094 {
                        return Err(FieldError::new("kind.vlan", format!("{v} is outside 1..=4094")));
                    }
                }
            }
            _ => {}
        }
        match self.ipam {
            IpamMode::Cluster => {
                if self.host_prefix.is_some() || self.lease_ttl_seconds.is_some() {
                    return Err(FieldError::new("ipam", "host_prefix and lease_ttl_seconds apply to host-subnet IPAM only"));
                }
            }
            IpamMode::HostSubnet => {
                let hp = self.host_prefix.unwrap_or((c.len + 8).min(28));
                if hp <= c.len || hp > 30 {
                    return Err(FieldError::new("host_prefix", format!("/{hp} must be longer than the subnet's /{} and at most /30", c.len)));
                }
                if c.contains(gw) && u32::from(gw) & (u32::MAX << (32 - hp)) != u32::from(c.addr) {
                    return Err(FieldError::new("gateway", format!("with host-subnet IPAM the gateway must lie in the first /{hp} block")));
                }
                let ttl = self.lease_ttl_seconds.unwrap_or(300);
                if !(1..=86_400).contains(&ttl) {
                    return Err(FieldError::new("lease_ttl_seconds", format!("{ttl} is outside 1..=86400")));
                }
                self.host_prefix = Some(hp);
                self.lease_ttl_seconds = Some(ttl);
            }
        }
        self.validate_v6(&c)?;
        for k in self.labels.keys() {
            if k.is_empty() || k.len() > 63 {
                return Err(FieldError::new("labels", format!("label key {k:?} must be 1 to 63 bytes")));
            }
        }
        Ok(self)
    }

    /// Checks the IPv6 subnet and gateway, and fills in the gateway.
    fn validate_v6(&mut self, v4: &Cidr) -> Result<(), FieldError> {
        let Some(s) = &self.subnet6 else {
            return match self.gateway6 {
                Some(_) => Err(FieldError::new("gateway6", "an IPv6 gateway needs an IPv6 subnet (subnet6)")),
                None => Ok(()),
            };
        };
        let c = Cidr6::parse(s).map_err(|r| FieldError::new("subnet6", r))?;
        let shortest = if self.ipam == IpamMode::HostSubnet { 64 } else { 32 };
        if c.len < shortest {
            let why = if shortest == 64 { " with host-subnet IPAM" } else { "" };
            return Err(FieldError::new("subnet6", format!("prefix /{} is shorter than /{shortest}, the largest IPv6 subnet{why}", c.len)));
        }
        if c.len > 120 {
            return Err(FieldError::new("subnet6", format!("prefix /{} is longer than /120, the smallest IPv6 subnet", c.len)));
        }
        let special = [("fe80::/10", "link-local"), ("ff00::/8", "multicast"), ("::/8", "reserved (loopback, unspecified, IPv4-mapped)")];
        for (net, what) in special {
            let Ok(n) = Cidr6::parse(net) else { continue };
            if n.overlaps(&c) {
                return Err(FieldError::new("subnet6", format!("{s} overlaps {net}, which is {what}")));
            }
        }
        // Every endpoint gets one address of each family, so the IPv6 subnet must hold at
        // least as many as the IPv4 one.
        if 128 - u32::from(c.len) < 32 - u32::from(v4.len) {
            return Err(FieldError::new("subnet6", format!("{s} has fewer addresses than {} (subnet); an endpoint gets one of each", self.subnet)));
        }
        let first = Ipv6Addr::from(u128::from(c.addr) + 1);
        let gw = self.gateway6.unwrap_or(first);
        if !c.contains(gw) || gw == c.addr {
            return Err(FieldError::new("gateway6", format!("{gw} is not a host address of {s}")));
        }
        self.subnet6 = Some(c.to_string());
        self.gateway6 = Some(gw);
        Ok(())
    }

    /// The parsed subnet (valid once [`NetworkSpec::validated`] passed).
    pub fn cidr(&self) -> Option<Cidr> {
        Cidr::parse(&self.subnet).ok()
    }

    /// The parsed IPv6 subnet, if the network is dual stack.
    pub fn cidr6(&self) -> Option<Cidr6> {
        self.subnet6.as_deref().and_then(|s| Cidr6::parse(s).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dual(subnet: &str, subnet6: &str) -> NetworkSpec {
        NetworkSpec { subnet6: Some(subnet6.into()), ..NetworkSpec::overlay("n", subnet) }
    }

    fn refusal(spec: NetworkSpec) -> (String, String) {
        let e = spec.validated().unwrap_err();
        (e.field.clone(), e.reason.clone())
    }

    #[test]
    fn ipv6_subnets_are_checked_and_the_gateway_filled_in() {
        let ok = dual("10.0.0.0/24", "FD00:0:0:0::/64").validated().unwrap();
        assert_eq!((ok.subnet6.as_deref(), ok.gateway6.map(|g| g.to_string())), (Some("fd00::/64"), Some("fd00::1".into())));
        let hs = |s6: &str| NetworkSpec { ipam: IpamMode::HostSubnet, ..dual("10.0.0.0/16", s6) };
        assert!(hs("fd00::/64").validated().is_ok());
        assert_eq!(refusal(hs("fd00::/56")).0, "subnet6", "larger than /64 with host-subnet IPAM");
        assert_eq!(refusal(dual("10.0.0.0/28", "fd00::/121")).0, "subnet6", "smaller than /120");
        assert_eq!(refusal(dual("10.0.0.0/16", "fd00::/120")).0, "subnet6", "fewer addresses than the IPv4 subnet");
        assert_eq!(refusal(dual("10.0.0.0/24", "fe80::/64")).0, "subnet6", "link-local");
        assert_eq!(refusal(dual("10.0.0.0/24", "fd00::1/64")).0, "subnet6", "host bits set");
        assert_eq!(refusal(dual("10.0.0.0/24", "10.1.0.0/24")).0, "subnet6", "not IPv6");
        let outside = NetworkSpec { gateway6: Some("fd01::1".parse().unwrap()), ..dual("10.0.0.0/24", "fd00::/64") };
        assert_eq!(refusal(outside).0, "gateway6");
        let alone = NetworkSpec { gateway6: Some("fd00::1".parse().unwrap()), ..NetworkSpec::overlay("n", "10.0.0.0/24") };
        assert_eq!(refusal(alone).0, "gateway6", "an IPv6 gateway without an IPv6 subnet");
        let v6_only = refusal(NetworkSpec::overlay("n", "fd00::/64"));
        assert!(v6_only.0 == "subnet" && v6_only.1.contains("subnet6"), "{v6_only:?}");
    }
}
