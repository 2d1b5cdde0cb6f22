//! The Plexus resource model shared by the controller, the agent and the CLI: what NetOps
//! create (networks, endpoints, …), how it is validated, and what the lab reports.

#![forbid(unsafe_code)]

/// Serializes a type as its `Display` text and deserializes it through its `FromStr`, so
/// that the wire form and the parser (with its error naming the field) are the type's own.
#[macro_export]
#[doc(hidden)]
macro_rules! serde_as_str {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod batch;
pub mod client;
pub mod edge;
pub mod endpoint;
pub mod histogram;
pub mod ids;
pub mod mac;
pub mod names;
pub mod network;
pub mod policy;
pub mod problem;
pub mod routing;
pub mod trace;
pub mod valid;

pub use batch::{Batch, Operation};
pub use client::{AgentCredentials, Client, ClientError, ClusterStatus, Credentials, Mastership, Member, NodeCredentials, StateDigest};
pub use edge::{HostEdge, PublishedTarget};
pub use endpoint::{Encap, Endpoint, EndpointLabels, EndpointPublish, EndpointSpec, Host, HostSpec, Lease, PortProtocol, PublishedPort};
pub use ids::EndpointKey;
pub use mac::Mac;
pub use names::{HostNames, NameRecord, NameZone};
pub use network::{IpamMode, Network, NetworkKind, NetworkSpec};
pub use policy::{DropCounters, Peer, Policy, PolicyCounters, PolicySpec, Protocol, Rule, RuleAction, RuleCounters, Selector};
pub use problem::{FieldError, Problem};
pub use routing::{Router, RouterSpec};
pub use trace::{Trace, TraceJob, TraceOutput, TraceProtocol, TraceRequest, TraceStep, TracedPacket};
pub use valid::{Valid, Validate};
