//! `plexus trace`: a packet built from an endpoint, run through the real pipeline of its
//! host's switch (and of the host it is tunnelled to), explained in the operator's terms.

use serde::{Deserialize, Serialize};

use crate::network::check_name;
use crate::problem::FieldError;

/// The protocol of a traced packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TraceProtocol {
    /// An ICMP echo request.
    #[default]
    Icmp,
    /// A TCP SYN to `port`.
    Tcp,
    /// A UDP datagram to `port`.
    Udp,
}

/// What to trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceRequest {
    /// The sending endpoint's network.
    pub network: String,
    /// The sending endpoint's id.
    pub from: String,
    /// The destination: an IPv4 address, or an endpoint as `NETWORK/ID`.
    pub to: String,
    /// The protocol.
    #[serde(default)]
    pub protocol: TraceProtocol,
    /// Destination port (TCP and UDP only, required for them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
}

impl TraceRequest {
    /// Checks what does not depend on the model.
    pub fn validated(self) -> Result<TraceRequest, FieldError> {
        check_name("network", &self.network)?;
        if self.from.is_empty() || self.from.len() > 64 {
            return Err(FieldError::new("from", "an endpoint id of 1 to 64 characters"));
        }
        if self.to.parse::<std::net::Ipv4Addr>().is_err() {
            let ok = self.to.split_once('/').is_some_and(|(n, id)| check_name("to", n).is_ok() && !id.is_empty() && id.len() <= 64);
            if !ok {
                return Err(FieldError::new("to", format!("{:?} is neither an IPv4 address nor NETWORK/ENDPOINT", self.to)));
            }
        }
        match (self.protocol, self.port) {
            (TraceProtocol::Icmp, Some(_)) => return Err(FieldError::new("port", "icmp takes no port")),
            (TraceProtocol::Tcp | TraceProtocol::Udp, None) => return Err(FieldError::new("port", "tcp and udp need a destination port")),
            (_, Some(0)) => return Err(FieldError::new("port", "0 is not a port")),
            _ => {}
        }
        Ok(self)
    }
}

/// One flow the packet matched, in the operator's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TraceStep {
    /// The host whose switch it is.
    pub host: String,
    /// The table's number.
    pub table: u8,
    /// The table's name (`classify`, `ingress-policy`, …).
    pub table_name: String,
    /// What the flow came from: "endpoint web-1 on red", "policy db-only ingress rule 0
    /// (allow tcp/5432 from app=api)", "router: red -> blue", "tunnel to h3", ….
    pub object: String,
    /// The flow's match, as OVS printed it.
    pub matched: String,
    /// What it did, as OVS printed it.
    pub actions: Vec<String>,
}

/// The packet as one switch got it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TracedPacket {
    /// The host.
    pub host: String,
    /// The packet in OVS's flow syntax (what `ovs-appctl ofproto/trace br-int` was given).
    pub flow: String,
}

/// The answer of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Trace {
    /// The packet as each switch on its way got it: the sender's, then the receiver's if it
    /// went through the tunnel.
    pub packets: Vec<TracedPacket>,
    /// Every flow it matched, host after host.
    pub steps: Vec<TraceStep>,
    /// Whether it reached an endpoint.
    pub delivered: bool,
    /// The verdict in plain words: "delivered to db-1 on h3", "dropped by policy db-only: no
    /// rule allows tcp/80 from 10.1.0.3", ….
    pub verdict: String,
}

/// A trace an agent is asked to run on its switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TraceJob {
    /// Its id, to answer with.
    pub id: u64,
    /// The packet, in OVS's flow syntax (`ovs-appctl ofproto/trace br-int FLOW`).
    pub flow: String,
}

/// An agent's answer to a [`TraceJob`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceOutput {
    /// What `ofproto/trace` printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Why it could not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TraceOutput {
    /// Checks the size: an agent's answer is bounded like any request body.
    pub fn validated(self) -> Result<TraceOutput, FieldError> {
        if self.output.as_ref().is_some_and(|o| o.len() > 512 * 1024) {
            return Err(FieldError::new("output", "at most 512 KiB"));
        }
        if self.error.as_ref().is_some_and(|o| o.len() > 4096) {
            return Err(FieldError::new("error", "at most 4 KiB"));
        }
        Ok(self)
    }
}
