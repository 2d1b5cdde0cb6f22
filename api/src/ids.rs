//! Identifiers derived from names, computed alike by the controller and the agents so that
//! neither has to ask the other: a host's datapath id, an endpoint's OVS port name.

/// FNV-1a, 64 bits: stable across releases and machines (unlike `std`'s hasher).
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_fit_device_names() {
        // Pinned: agents and controllers of different builds must agree.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        let p = port_name("red", "ep000001");
        assert_eq!(p.len(), 12);
        assert_ne!(p, port_name("blue", "ep000001"));
        assert_ne!(datapath_id("h1"), datapath_id("h2"));
    }
}
