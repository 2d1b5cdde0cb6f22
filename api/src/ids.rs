//! Identifiers derived from names, computed alike by the controller and the agents so that
//! neither has to ask the other: a host's datapath id, an endpoint's OVS port name, and the
//! key that names an endpoint across the whole model.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// FNV-1a, 64 bits: stable across releases and machines (unlike `std`'s hasher).
pub fn fnv1a(s: &str) -> u64 {
    fnv1a_bytes(s.as_bytes())
}

/// FNV-1a of bytes.
pub fn fnv1a_bytes(bytes: &[u8]) -> u64 {
    fnv1a_fold(bytes.iter().copied())
}

fn fnv1a_fold(bytes: impl Iterator<Item = u8>) -> u64 {
    bytes.fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// FNV-1a of the concatenation of `parts`, without building it.
pub fn fnv1a_parts(parts: &[&str]) -> u64 {
    fnv1a_fold(parts.iter().flat_map(|p| p.bytes()))
}

/// The datapath id of a host's `br-int`: 48 bits of the name's hash, never 0.
pub fn datapath_id(host: &str) -> u64 {
    (fnv1a(host) & 0x0000_ffff_ffff_ffff).max(1)
}

/// The OVS port name of an endpoint: `p` and eleven hex digits of a hash of `network/id`
/// (device names are at most 15 bytes).
pub fn port_name(network: &str, id: &str) -> String {
    format!("p{:011x}", fnv1a(&format!("{network}/{id}")) & 0xfff_ffff_ffff)
}

/// An endpoint's identity in the whole model: its network and its id in that network. Shown
/// (and stored in OVS's `external_ids`) as `network/id`; network names never hold a `/`.
/// Cloning one costs two reference counts, not two allocations: keys are copied into every
/// switch's view, index and compile units on every pass.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    /// The network's name.
    pub network: Arc<str>,
    /// The endpoint's id in that network.
    pub id: Arc<str>,
}

impl EndpointKey {
    /// The key of endpoint `id` in `network`.
    pub fn new(network: impl AsRef<str>, id: impl AsRef<str>) -> EndpointKey {
        EndpointKey { network: network.as_ref().into(), id: id.as_ref().into() }
    }

    /// The smallest key of `network`: where a range over one network's keys starts.
    pub fn first_in(network: &str) -> EndpointKey {
        EndpointKey { network: network.into(), id: "".into() }
    }

    /// The endpoint's OVS port name.
    pub fn port_name(&self) -> String {
        port_name(&self.network, &self.id)
    }
}

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.id)
    }
}

/// A string that is not `network/id`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an endpoint key of the form network/id")]
pub struct BadEndpointKey(pub String);

impl FromStr for EndpointKey {
    type Err = BadEndpointKey;

    fn from_str(s: &str) -> Result<EndpointKey, BadEndpointKey> {
        match s.split_once('/') {
            Some((n, id)) if !n.is_empty() && !id.is_empty() => Ok(EndpointKey::new(n, id)),
            _ => Err(BadEndpointKey(s.to_string())),
        }
    }
}

crate::serde_as_str!(EndpointKey);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keys_round_trip_and_sort_by_network_first() {
        let k = EndpointKey::new("red", "c1");
        assert_eq!(k.to_string(), "red/c1");
        assert_eq!("red/c1".parse::<EndpointKey>().unwrap(), k);
        assert_eq!(k.port_name(), port_name("red", "c1"));
        for bad in ["red", "/c1", "red/", ""] {
            assert!(bad.parse::<EndpointKey>().is_err(), "{bad}");
        }
        assert!(EndpointKey::first_in("red") < EndpointKey::new("red", "0"));
        assert!(EndpointKey::new("red", "zz") < EndpointKey::first_in("reda"));
        assert_eq!(serde_json::to_string(&k).unwrap(), "\"red/c1\"");
    }

    #[test]
    fn ids_are_stable_and_fit_device_names() {
        // Pinned: agents and controllers of different builds must agree.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_parts(&["red", "/", "c1"]), fnv1a("red/c1"));
        let p = port_name("red", "ep000001");
        assert_eq!(p.len(), 12);
        assert_ne!(p, port_name("blue", "ep000001"));
        assert_ne!(datapath_id("h1"), datapath_id("h2"));
    }
}
