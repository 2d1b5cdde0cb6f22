//! The replicated model and the commands that change it. `Model::apply` is deterministic:
//! every node applies the same commands in the same order and reaches the same state, so
//! anything that must be unique (names, VNIs, VLANs, addresses) is decided here, never by
//! the API node that received the request.

mod endpoints;
mod hosts;
mod networks;

use std::collections::BTreeMap;

use plexus_api::{Endpoint, EndpointSpec, FieldError, Host, HostSpec, Network, NetworkSpec};
use serde::{Deserialize, Serialize};

pub use networks::AUTO_VNI_START;

/// A change to the model, as written to the Raft log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Creates a network (`create`: refuse if it exists) or replaces it.
    PutNetwork {
        /// The validated spec.
        spec: NetworkSpec,
        /// Refuse if a network of that name exists.
        create: bool,
        /// Refuse unless the network is at this revision.
        if_match: Option<u64>,
    },
    /// Deletes a network.
    DeleteNetwork {
        /// Its name.
        name: String,
        /// Refuse unless the network is at this revision.
        if_match: Option<u64>,
        /// Delete its endpoints too instead of refusing.
        force: bool,
    },
    /// Creates an endpoint, allocating its address.
    CreateEndpoint {
        /// Network name.
        network: String,
        /// The validated spec.
        spec: EndpointSpec,
    },
    /// Deletes an endpoint, freeing its address.
    DeleteEndpoint {
        /// Network name.
        network: String,
        /// Endpoint id.
        id: String,
    },
    /// Registers a host or records its heartbeat.
    PutHost {
        /// The validated registration.
        spec: HostSpec,
        /// When the API node received it (ms since the epoch): the state machine must not
        /// read clocks, so the time travels in the command.
        now_ms: u64,
    },
}

/// Why a command was refused when applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    /// HTTP status that describes it (404, 409, 412, 422, 501).
    pub status: u16,
    /// The field at fault, if one.
    pub field: Option<String>,
    /// Why.
    pub reason: String,
}

impl Refusal {
    pub(crate) fn new(status: u16, field: Option<&str>, reason: impl Into<String>) -> Refusal {
        Refusal { status, field: field.map(str::to_string), reason: reason.into() }
    }
}

impl From<FieldError> for Refusal {
    fn from(e: FieldError) -> Self {
        Refusal { status: 422, field: Some(e.field.clone()), reason: e.to_string() }
    }
}

/// An object a command produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Object {
    /// A network.
    Network(Network),
    /// An endpoint.
    Endpoint(Endpoint),
    /// A host.
    Host(Host),
}

/// The outcome of applying a command: the object as it now is (None after a delete).
pub type CommandResult = Result<Option<Object>, Refusal>;

/// Everything the controller knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Incremented by every change; each object records the revision of its last change.
    pub revision: u64,
    /// Networks by name.
    pub networks: BTreeMap<String, Network>,
    /// Endpoints by network, then id.
    pub endpoints: BTreeMap<String, BTreeMap<String, Endpoint>>,
    /// Hosts by name.
    pub hosts: BTreeMap<String, Host>,
    /// Counter for generated endpoint ids.
    pub next_endpoint: u64,
}

impl Model {
    /// Applies a command.
    pub fn apply(&mut self, cmd: Command) -> CommandResult {
        match cmd {
            Command::PutNetwork { spec, create, if_match } => self.put_network(spec, create, if_match).map(|n| Some(Object::Network(n))),
            Command::DeleteNetwork { name, if_match, force } => self.delete_network(&name, if_match, force).map(|_| None),
            Command::CreateEndpoint { network, spec } => self.create_endpoint(&network, spec).map(|e| Some(Object::Endpoint(e))),
            Command::DeleteEndpoint { network, id } => self.delete_endpoint(&network, &id).map(|_| None),
            Command::PutHost { spec, now_ms } => self.put_host(spec, now_ms).map(|h| Some(Object::Host(h))),
        }
    }

    /// Every endpoint of every network.
    pub fn all_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values().flat_map(|m| m.values())
    }
}

pub(crate) fn check_revision(current: u64, if_match: Option<u64>) -> Result<(), Refusal> {
    match if_match {
        Some(r) if r != current => Err(Refusal::new(412, None, format!("revision is {current}, not {r}"))),
        _ => Ok(()),
    }
}
