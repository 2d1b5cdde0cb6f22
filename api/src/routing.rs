//! Routers: L3 between networks.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

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
