//! The replicated model and the commands that change it. `Model::apply` is deterministic:
//! every node applies the same commands in the same order and reaches the same state, so
//! anything that must be unique (names, VNIs, VLANs) is decided here, not by the API node.

use std::collections::BTreeMap;

use plexus_api::{FieldError, Network, NetworkKind, NetworkSpec};
use serde::{Deserialize, Serialize};

/// Overlay VNIs the controller picks from when a network names none.
pub const AUTO_VNI_START: u32 = 1000;

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
    },
}

/// Why a command was refused when applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    /// HTTP status that describes it (404, 409, 412, 422).
    pub status: u16,
    /// The field at fault, if one.
    pub field: Option<String>,
    /// Why.
    pub reason: String,
}

impl Refusal {
    fn new(status: u16, field: Option<&str>, reason: impl Into<String>) -> Refusal {
        Refusal { status, field: field.map(str::to_string), reason: reason.into() }
    }
}

impl From<FieldError> for Refusal {
    fn from(e: FieldError) -> Self {
        Refusal { status: 422, field: Some(e.field.clone()), reason: e.to_string() }
    }
}

/// The outcome of applying a command: the object as it now is (None after a delete).
pub type CommandResult = Result<Option<Network>, Refusal>;

/// Everything the controller knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Incremented by every change; each object records the revision of its last change.
    pub revision: u64,
    /// Networks by name.
    pub networks: BTreeMap<String, Network>,
}

impl Model {
    /// Applies a command.
    pub fn apply(&mut self, cmd: Command) -> CommandResult {
        match cmd {
            Command::PutNetwork { spec, create, if_match } => self.put_network(spec, create, if_match),
            Command::DeleteNetwork { name, if_match } => {
                let Some(n) = self.networks.get(&name) else {
                    return Err(Refusal::new(404, Some("name"), format!("no network named {name}")));
                };
                check_revision(n.revision, if_match)?;
                self.networks.remove(&name);
                self.revision += 1;
                Ok(None)
            }
        }
    }

    fn put_network(&mut self, spec: NetworkSpec, create: bool, if_match: Option<u64>) -> CommandResult {
        let mut spec = spec.validated()?;
        let existing = self.networks.get(&spec.name);
        match existing {
            Some(_) if create => return Err(Refusal::new(409, Some("name"), format!("network {} already exists", spec.name))),
            Some(n) => check_revision(n.revision, if_match)?,
            None if if_match.is_some() => return Err(Refusal::new(412, None, format!("network {} does not exist", spec.name))),
            None => {}
        }
        let others = || self.networks.values().filter(|n| n.spec.name != spec.name);
        match &mut spec.kind {
            NetworkKind::Overlay { vni } => {
                let used: Vec<u32> = others().filter_map(|n| match n.spec.kind {
                    NetworkKind::Overlay { vni } => vni,
                    _ => None,
                }).collect();
                match vni {
                    Some(v) if used.contains(v) => return Err(Refusal::new(409, Some("kind.vni"), format!("VNI {v} is used by another network"))),
                    Some(_) => {}
                    None => {
                        // Keep the VNI a network already had, so a PUT without one is idempotent.
                        let kept = existing.and_then(|n| match n.spec.kind {
                            NetworkKind::Overlay { vni } => vni,
                            _ => None,
                        });
                        *vni = Some(kept.unwrap_or_else(|| (AUTO_VNI_START..).find(|v| !used.contains(v)).unwrap_or(AUTO_VNI_START)));
                    }
                }
            }
            NetworkKind::Underlay { physical_network, vlan } => {
                let clash = others().any(|n| matches!(&n.spec.kind, NetworkKind::Underlay { physical_network: p, vlan: v } if p == physical_network && v == vlan));
                if clash {
                    let what = vlan.map(|v| format!("VLAN {v}")).unwrap_or_else(|| "the untagged network".into());
                    return Err(Refusal::new(409, Some("kind.vlan"), format!("{what} on {physical_network} is used by another network")));
                }
            }
        }
        if let Some(n) = existing {
            if n.spec == spec {
                return Ok(Some(n.clone()));
            }
        }
        self.revision += 1;
        let n = Network { spec, revision: self.revision };
        self.networks.insert(n.spec.name.clone(), n.clone());
        Ok(Some(n))
    }
}

fn check_revision(current: u64, if_match: Option<u64>) -> Result<(), Refusal> {
    match if_match {
        Some(r) if r != current => Err(Refusal::new(412, None, format!("revision is {current}, not {r}"))),
        _ => Ok(()),
    }
}
