//! The Plexus resource model shared by the controller, the agent and the CLI: what NetOps
//! create (networks, endpoints, …), how it is validated, and what the lab reports.

#![forbid(unsafe_code)]

pub mod client;
pub mod endpoint;
pub mod ids;
pub mod mac;
pub mod network;
pub mod problem;
pub mod routing;
pub mod valid;

pub use client::{Client, ClientError, ClusterStatus, Mastership, Member};
pub use endpoint::{Encap, Endpoint, EndpointSpec, Host, HostSpec, Lease};
pub use ids::EndpointKey;
pub use mac::Mac;
pub use network::{IpamMode, Network, NetworkKind, NetworkSpec};
pub use problem::{FieldError, Problem};
pub use routing::{DefaultAction, Direction, Policy, PolicySpec, Protocol, Router, RouterSpec, Rule};
pub use valid::{Valid, Validate};
