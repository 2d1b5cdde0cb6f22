//! A host's edge: what its own stack does for its containers' traffic leaving and entering
//! Plexus (source NAT out, published ports in). The controller computes it from the model;
//! the host's agent waits for it to change and makes the host's routes and NAT rules match.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::endpoint::PortProtocol;

/// A port published on one host: where its stack forwards it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PublishedTarget {
    /// The port on the host's addresses.
    pub host_port: u32,
    /// Its transport.
    pub protocol: PortProtocol,
    /// The endpoint's address.
    #[schema(value_type = String, format = Ipv4)]
    pub ip: Ipv4Addr,
    /// The endpoint's port.
    pub port: u32,
    /// The endpoint, `NETWORK/ID`.
    pub endpoint: String,
}

/// What one host's stack must do for Plexus.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostEdge {
    /// Subnets of the networks whose traffic may leave Plexus (routed to the switch; NATed to
    /// the host's address on the way out), sorted.
    pub external_subnets: Vec<String>,
    /// Ports published by this host's endpoints, sorted.
    pub published: Vec<PublishedTarget>,
    /// A digest of the two: a poll that names it returns when it changes.
    pub digest: String,
}

impl HostEdge {
    /// An edge with its digest computed.
    pub fn new(external_subnets: Vec<String>, published: Vec<PublishedTarget>) -> HostEdge {
        let mut h = crate::ids::fnv1a("edge");
        for s in &external_subnets {
            h = h.rotate_left(5) ^ crate::ids::fnv1a(s);
        }
        for p in &published {
            let text = format!("{}/{}>{}:{}@{}", p.host_port, p.protocol, p.ip, p.port, p.endpoint);
            h = h.rotate_left(7) ^ crate::ids::fnv1a(&text);
        }
        HostEdge { external_subnets, published, digest: format!("{h:016x}") }
    }
}
