//! The OpenFlow pipeline of `br-int`, declared once. Each table is a variant of [`Table`] with
//! its stage, its miss action and the paths of packets that visit it; its number follows from
//! the declaration order and is written nowhere else, so a table added later renumbers nothing
//! by hand and a misspelt table does not compile.
//!
//! Three paths run through the pipeline ([`Origin`]): a packet a local endpoint sent visits
//! every table; a packet that came out of a tunnel was checked and routed by the sending host,
//! so it skips the sender-side stages but still meets conntrack and ingress policy before
//! output; a packet the host's own stack sent in through the external port (answers to
//! source-NATed connections, published ports) is routed to its endpoint and meets conntrack
//! and ingress policy too.

/// A pipeline stage, in packet order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Where a packet came from: which endpoint or tunnel, which network.
    Classify,
    /// Port security: a local endpoint may only send with its own addresses.
    Validate,
    /// ARP and IPv6 Neighbor Discovery answered in the switch.
    Arp,
    /// Connection tracking, where a policy needs it.
    Conntrack,
    /// Egress policy (conntrack).
    EgressSecurity,
    /// L3 between networks of one routing domain.
    Routing,
    /// L2: destination MAC to a local port or a tunnel; broadcast replication.
    Switching,
    /// Ingress policy (conntrack).
    IngressSecurity,
    /// Committing new connections a policy let through.
    Commit,
    /// Sending the packet to the port the switching stage chose.
    Output,
}

/// What a table does with a packet no flow matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// Drop it (OpenFlow 1.3's default): the table only passes what a feature allows.
    Drop,
    /// Pass it to the next table on its path: the table only acts on what a feature matches.
    Next,
    /// Send it to the controller through the [`HOLD_METER`], which holds it and runs it through
    /// the pipeline again once the switch's flows change: for tables whose misses are mostly
    /// flows not installed yet (a port whose endpoint was just created, a destination whose
    /// endpoint is on its way), so the first packet is late rather than lost.
    Hold,
}

/// The meter every held packet passes before it reaches the controller: a flood of unknown
/// packets costs the controller at most [`HOLD_RATE`] packets a second per switch, and the
/// rest is dropped in the switch's datapath.
pub const HOLD_METER: u32 = 1;
/// Packets a second a switch may send to be held.
pub const HOLD_RATE: u32 = 500;
/// Burst above [`HOLD_RATE`] a switch may send at once.
pub const HOLD_BURST: u32 = 200;

/// Where a packet entered the switch, which decides the tables it visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Sent by an endpoint plugged into this switch.
    Local,
    /// Received from another host's switch through a tunnel.
    Tunnel,
    /// Sent by the host's own stack through the external port (`plx-ext`).
    External,
}

impl Origin {
    /// Every origin.
    pub const ALL: [Origin; 3] = [Origin::Local, Origin::Tunnel, Origin::External];

    /// The value of [`REG_FROM_TUNNEL`] for packets of this origin.
    pub const fn reg_value(self) -> u32 {
        match self {
            Origin::Local => 0,
            Origin::Tunnel => 1,
            Origin::External => 2,
        }
    }
}

/// A table of the pipeline. The variants' order is the packet order and gives the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Port or tunnel to network; anything unknown is held (its endpoint may be on its way).
    Classify,
    /// Source MAC and address of a local endpoint must be its own.
    PortSecurity,
    /// ARP requests and IPv6 Neighbor Solicitations for known addresses answered in the
    /// switch; others held.
    ArpResponder,
    /// The second half of a Neighbor Advertisement built from a solicitation: its target
    /// link-layer option (OVS lets a flow write that option only where its match says
    /// "advertisement", so the answer is matched again here).
    NdReply,
    /// IPv4 in a routing domain that policies govern is sent through conntrack (zone in
    /// [`REG_ZONE`]) and comes back to the next table with its connection state.
    Conntrack,
    /// Egress policy.
    EgressPolicy,
    /// The network's gateway: ICMP echo to it answered in the switch; IPv4 sent to its MAC
    /// handed to routing with the routing domain in [`REG_DOMAIN`].
    Gateway,
    /// Routing between the networks of a routing domain: destination address to the
    /// endpoint's network, MAC and the TTL decremented.
    Routing,
    /// Destination MAC to the output port (kept in [`REG_OUT_PORT`]), or broadcast; an
    /// unknown destination is held.
    L2Lookup,
    /// Ingress policy, for local and tunnelled packets alike.
    IngressPolicy,
    /// New connections that came through the policy tables are committed to conntrack, so
    /// that their replies (and later packets) are known as established.
    CtCommit,
    /// Output to the port in [`REG_OUT_PORT`].
    Output,
}

/// What the declaration says of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSpec {
    /// Its name, for humans, docs and `plexus` output.
    pub name: &'static str,
    /// Its stage.
    pub stage: Stage,
    /// What it does with a packet no flow matches.
    pub miss: Miss,
    /// Whether packets from tunnels visit it (local packets visit every table).
    pub tunnel: bool,
    /// Whether packets from the external port visit it.
    pub external: bool,
}

/// Spacing between table numbers: room for tables inserted later without moving the others.
pub const TABLE_STRIDE: u8 = 10;

impl Table {
    /// Every table, in packet order.
    pub const ALL: [Table; 12] = [
        Table::Classify,
        Table::PortSecurity,
        Table::ArpResponder,
        Table::NdReply,
        Table::Conntrack,
        Table::EgressPolicy,
        Table::Gateway,
        Table::Routing,
        Table::L2Lookup,
        Table::IngressPolicy,
        Table::CtCommit,
        Table::Output,
    ];

    /// The declaration of this table.
    pub const fn spec(self) -> TableSpec {
        const fn t(name: &'static str, stage: Stage, miss: Miss, tunnel: bool, external: bool) -> TableSpec {
            TableSpec { name, stage, miss, tunnel, external }
        }
        match self {
            Table::Classify => t("classify", Stage::Classify, Miss::Hold, true, true),
            Table::PortSecurity => t("port-security", Stage::Validate, Miss::Drop, false, false),
            Table::ArpResponder => t("arp-responder", Stage::Arp, Miss::Next, false, false),
            Table::NdReply => t("nd-reply", Stage::Arp, Miss::Next, false, false),
            Table::Conntrack => t("conntrack", Stage::Conntrack, Miss::Next, true, true),
            Table::EgressPolicy => t("egress-policy", Stage::EgressSecurity, Miss::Next, false, false),
            Table::Gateway => t("gateway", Stage::Routing, Miss::Next, false, false),
            Table::Routing => t("routing", Stage::Routing, Miss::Next, false, true),
            Table::L2Lookup => t("l2-lookup", Stage::Switching, Miss::Hold, true, true),
            Table::IngressPolicy => t("ingress-policy", Stage::IngressSecurity, Miss::Next, true, true),
            Table::CtCommit => t("ct-commit", Stage::Commit, Miss::Next, true, true),
            Table::Output => t("output", Stage::Output, Miss::Drop, true, true),
        }
    }

    /// The OpenFlow table number.
    pub const fn id(self) -> u8 {
        self as u8 * TABLE_STRIDE
    }

    /// Its name.
    pub const fn name(self) -> &'static str {
        self.spec().name
    }

    /// Its stage.
    pub const fn stage(self) -> Stage {
        self.spec().stage
    }

    /// The table an OpenFlow table number names, if any.
    pub fn from_id(id: u8) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.id() == id)
    }

    /// Whether packets of `origin` visit this table.
    pub const fn on_path(self, origin: Origin) -> bool {
        match origin {
            Origin::Local => true,
            Origin::Tunnel => self.spec().tunnel,
            Origin::External => self.spec().external,
        }
    }

    /// The table a packet of `origin` visits after this one; `None` after the last.
    pub fn next(self, origin: Origin) -> Option<Table> {
        Table::ALL.into_iter().filter(|t| *t > self).find(|t| t.on_path(origin))
    }

    /// The first table after classification for packets of `origin`.
    pub fn after_classify(origin: Origin) -> Table {
        // Classify is followed by at least the output table on every path.
        Table::Classify.next(origin).unwrap_or(Table::Output)
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (table {})", self.name(), self.id())
    }
}

/// Flow priorities, by what a flow stands for: more specific objects win.
pub mod priority {
    /// A flow for one object's own address or port (an endpoint, a gateway).
    pub const OBJECT: u16 = 100;
    /// A network-wide rule (broadcast, ARP requests nobody answers).
    pub const NETWORK: u16 = 50;
    /// A switch-wide rule a feature sets (output to the chosen port).
    pub const DEFAULT: u16 = 10;
    /// A table's miss flow.
    pub const MISS: u16 = 0;
    /// Policy tables: packets of a connection conntrack knows pass before any rule.
    pub const POLICY_ESTABLISHED: u16 = 60000;
    /// Policy tables: the lowest rule priority (rule priorities count up from here).
    pub const POLICY_RULES: u16 = 2000;
    /// Policy tables: what no rule decided, for an endpoint a policy selects, is dropped.
    pub const POLICY_DEFAULT_DENY: u16 = 1000;
}

/// Register holding the network's VNI once classified.
pub const REG_NETWORK: u8 = 0;
/// Register: 1 if the packet came in through a tunnel ([`Origin::reg_value`]).
pub const REG_FROM_TUNNEL: u8 = 1;
/// Register holding the port the switching stage chose, read by the output table.
pub const REG_OUT_PORT: u8 = 2;
/// Register holding the routing domain of a packet sent to its gateway (0: not routed).
pub const REG_DOMAIN: u8 = 3;
/// Register holding the conntrack zone (low 16 bits) of a packet that went through conntrack.
pub const REG_ZONE: u8 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_numbered_by_declaration_order_and_stages_ascend() {
        for (i, t) in Table::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i, "Table::ALL lists {t:?} out of declaration order");
            assert_eq!(Table::from_id(t.id()), Some(*t));
        }
        assert_eq!(Table::Classify.id(), 0);
        assert_eq!(Table::PortSecurity.id(), TABLE_STRIDE);
        assert!(Table::ALL.windows(2).all(|w| w[0].stage() <= w[1].stage()));
        let mut names: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Table::ALL.len());
    }

    #[test]
    fn tunnelled_packets_skip_sender_stages_but_meet_ingress_policy() {
        assert_eq!(Table::after_classify(Origin::Local), Table::PortSecurity);
        assert_eq!(Table::after_classify(Origin::Tunnel), Table::Conntrack);
        assert_eq!(Table::Conntrack.next(Origin::Tunnel), Some(Table::L2Lookup));
        assert_eq!(Table::Conntrack.next(Origin::Local), Some(Table::EgressPolicy));
        assert_eq!(Table::L2Lookup.next(Origin::Tunnel), Some(Table::IngressPolicy));
        assert_eq!(Table::IngressPolicy.next(Origin::Tunnel), Some(Table::CtCommit));
        assert_eq!(Table::CtCommit.next(Origin::Tunnel), Some(Table::Output));
        assert_eq!(Table::Output.next(Origin::Local), None);
        let path: Vec<Table> = std::iter::successors(Some(Table::Classify), |t| t.next(Origin::Tunnel)).collect();
        assert_eq!(path, [Table::Classify, Table::Conntrack, Table::L2Lookup, Table::IngressPolicy, Table::CtCommit, Table::Output]);
    }
}
