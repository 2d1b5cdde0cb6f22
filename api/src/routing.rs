//! Routers (L3 between networks) and policies (allow rules with a default per network).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::network::{check_name, Cidr};
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
    /// Next hop for traffic leaving the domain, if any.
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

/// What a policy does with traffic no rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    /// Allow everything (rules are then informative).
    #[default]
    Allow,
    /// Drop what no rule allows.
    Deny,
}

/// Direction of a rule, seen from the network's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Traffic to the endpoints.
    Ingress,
    /// Traffic from the endpoints.
    Egress,
}

/// Protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Any IP traffic.
    #[default]
    Any,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP.
    Icmp,
}

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Direction.
    pub direction: Direction,
    /// Protocol.
    #[serde(default)]
    pub protocol: Protocol,
    /// Port range `[first, last]` (TCP/UDP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<[u16; 2]>,
    /// The other side, as a CIDR (`0.0.0.0/0` for anyone).
    pub peer: String,
}

/// What a client sends to create or replace a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Name (DNS label).
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)]
    pub name: String,
    /// The network whose endpoints it governs.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)]
    pub network: String,
    /// What happens to traffic no rule allows.
    #[serde(default)]
    pub default: DefaultAction,
    /// Allow rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Policy {
    /// The spec.
    #[serde(flatten)]
    pub spec: PolicySpec,
    /// Store revision of the last change.
    pub revision: u64,
}

impl RouterSpec {
    /// Checks what does not depend on other objects.
    pub fn validated(mut self) -> Result<RouterSpec, FieldError> {
        check_name("name", &self.name)?;
        if self.external_gateway.is_some() {
            // Stored but not acted on would be a lie on the wire: refused until it is built.
            return Err(FieldError::new("external_gateway", "routing out of Plexus (SNAT towards an external gateway) is not built yet; leave it out"));
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

impl PolicySpec {
    /// Checks what does not depend on other objects.
    pub fn validated(self) -> Result<PolicySpec, FieldError> {
        check_name("name", &self.name)?;
        check_name("network", &self.network)?;
        if self.rules.len() > 1000 {
            return Err(FieldError::new("rules", "at most 1000 rules"));
        }
        for (i, r) in self.rules.iter().enumerate() {
            Cidr::parse(&r.peer).map_err(|e| FieldError::new(format!("rules[{i}].peer"), e))?;
            if let Some([a, b]) = r.ports {
                if !matches!(r.protocol, Protocol::Tcp | Protocol::Udp) {
                    return Err(FieldError::new(format!("rules[{i}].ports"), "ports apply to tcp and udp only"));
                }
                if a == 0 || a > b {
                    return Err(FieldError::new(format!("rules[{i}].ports"), format!("[{a}, {b}] is not a range of ports 1..=65535")));
                }
            }
        }
        Ok(self)
    }
}
