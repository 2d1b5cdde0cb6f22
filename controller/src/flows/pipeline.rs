//! The OpenFlow pipeline of `br-int`, declared once by name. Tables sit in stages; their
//! numbers follow from the order declared here and are never written anywhere else, so a
//! stage added later renumbers nothing by hand.

/// A pipeline stage, in packet order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Where a packet came from: which endpoint or tunnel, which network.
    Classify,
    /// Port security: a local endpoint may only send with its own addresses.
    Validate,
    /// ARP answered in the switch.
    Arp,
    /// Egress policy (conntrack).
    EgressPolicy,
    /// L3 between networks of one routing domain.
    Routing,
    /// L2: destination MAC to a local port or a tunnel; broadcast replication.
    Switching,
    /// Ingress policy (conntrack) and output.
    IngressPolicy,
}

/// A table of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// Its name, for humans and for `plexus` output.
    pub name: &'static str,
    /// Its stage.
    pub stage: Stage,
}

/// Every table, in packet order. Numbering: the position times [`TABLE_STRIDE`], which
/// leaves room for tables inserted later without moving the ones around them.
pub const TABLES: &[Table] = &[
    Table { name: "classify", stage: Stage::Classify },
    Table { name: "port-security", stage: Stage::Validate },
    Table { name: "arp-responder", stage: Stage::Arp },
    Table { name: "egress-policy", stage: Stage::EgressPolicy },
    Table { name: "routing", stage: Stage::Routing },
    Table { name: "l2-lookup", stage: Stage::Switching },
    Table { name: "ingress-policy", stage: Stage::IngressPolicy },
];

/// Spacing between table numbers.
pub const TABLE_STRIDE: u8 = 10;

/// The OpenFlow table number of a named table.
///
/// # Panics
/// On a name not in [`TABLES`]: a programming error, caught by every test that compiles
/// flows.
pub fn table(name: &str) -> u8 {
    match TABLES.iter().position(|t| t.name == name) {
        Some(i) => i as u8 * TABLE_STRIDE,
        None => panic!("no pipeline table named {name}"),
    }
}

/// The table after `name` in the pipeline.
pub fn next(name: &str) -> u8 {
    table(name) + TABLE_STRIDE
}

/// Register holding the network's VNI once classified.
pub const REG_NETWORK: u8 = 0;
/// Register: 1 if the packet came in through a tunnel.
pub const REG_FROM_TUNNEL: u8 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_numbered_by_declaration_order_and_stages_ascend() {
        assert_eq!(table("classify"), 0);
        assert_eq!(table("port-security"), 10);
        assert_eq!(next("classify"), table("port-security"));
        assert!(TABLES.windows(2).all(|w| w[0].stage <= w[1].stage));
        let mut names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), TABLES.len());
    }
}
