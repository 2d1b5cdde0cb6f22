//! The replicated model and the commands that change it. `Model::apply` is deterministic:
//! every node applies the same commands in the same order and reaches the same state, so
//! anything that must be unique (names, VNIs, VLANs, addresses) is decided here, never by
//! the API node that received the request.

mod endpoints;
mod hosts;
mod leases;
mod names;
mod networks;
#[cfg(test)]
mod replicas;
mod routing;
mod subject;
#[cfg(test)]
pub(crate) mod testing;

use std::collections::BTreeMap;

use imbl::{OrdMap, Vector};

use plexus_api::{
    Endpoint, EndpointLabels, EndpointPublish, EndpointSpec, FieldError, Host, HostSpec, Lease, Network, NetworkSpec, Policy, PolicySpec, Router, RouterSpec,
    Valid,
};
use serde::{Deserialize, Serialize};

pub use subject::{ChangeKind, ChangeRecord, Subject};

pub use networks::AUTO_VNI_START;

/// A change to the model, as written to the Raft log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Creates a network (`create`: refuse if it exists) or replaces it.
    PutNetwork {
        /// The validated spec.
        spec: Valid<NetworkSpec>,
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
        /// Refuse unless the network was made by this host's agent (see [`OWNER_LABEL`]):
        /// an agent's credential may delete only what its Docker made.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// Creates an endpoint, allocating its address.
    CreateEndpoint {
        /// Network name.
        network: String,
        /// The validated spec.
        spec: Valid<EndpointSpec>,
        /// When the API node received it (for host-subnet leases).
        now_ms: u64,
    },
    /// Assigns each host's switch a master node (written by the leader). A host whose node
    /// changes gets a new generation: the revision of this change.
    SetMasters {
        /// Node by host.
        masters: BTreeMap<String, u64>,
    },
    /// Deletes an endpoint, freeing its address.
    DeleteEndpoint {
        /// Network name.
        network: String,
        /// Endpoint id.
        id: String,
        /// Refuse unless the endpoint is on this host (an agent deletes only its own).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_host: Option<String>,
    },
    /// Replaces an endpoint's labels.
    SetEndpointLabels {
        /// Network name.
        network: String,
        /// Endpoint id.
        id: String,
        /// The new labels.
        labels: Valid<EndpointLabels>,
        /// Refuse unless the endpoint is at this revision.
        if_match: Option<u64>,
        /// Refuse unless the endpoint is on this host (an agent labels only its own).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_host: Option<String>,
    },
    /// Replaces an endpoint's published ports.
    SetEndpointPublish {
        /// Network name.
        network: String,
        /// Endpoint id.
        id: String,
        /// The new ports.
        publish: Valid<EndpointPublish>,
        /// Refuse unless the endpoint is at this revision.
        if_match: Option<u64>,
        /// Refuse unless the endpoint is on this host (an agent publishes only its own).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_host: Option<String>,
    },
    /// Creates or replaces a router.
    PutRouter {
        /// The spec.
        spec: Valid<RouterSpec>,
        /// Refuse if a router of that name exists.
        create: bool,
        /// Refuse unless the router is at this revision.
        if_match: Option<u64>,
    },
    /// Deletes a router.
    DeleteRouter {
        /// Its name.
        name: String,
    },
    /// Creates or replaces a policy.
    PutPolicy {
        /// The spec.
        spec: Valid<PolicySpec>,
        /// Refuse if a policy of that name exists.
        create: bool,
        /// Refuse unless the policy is at this revision.
        if_match: Option<u64>,
    },
    /// Deletes a policy.
    DeletePolicy {
        /// Its name.
        name: String,
    },
    /// Applies commands in order, all or nothing: the first refusal refuses the whole batch
    /// (naming the operation) and leaves the model as it was.
    Batch {
        /// The commands (no batches, hosts, tokens or masters among them).
        commands: Vec<Command>,
    },
    /// Independent commands that arrived together, in one log entry (group commit): each is
    /// applied on its own, refused on its own, and answered on its own. Made only by the
    /// proposer ([`crate::store::Proposer`]); the state machine unpacks it.
    Group {
        /// The commands (no groups among them).
        commands: Vec<Command>,
    },
    /// Spends a one-time token: refused if it was spent before, so only one request anywhere
    /// in the cluster gets what it grants.
    SpendToken {
        /// The token's nonce.
        nonce: String,
        /// When the token expires (ms since the epoch); it is remembered until then.
        expires_ms: u64,
        /// When the API node received it (spent tokens past their expiry are forgotten).
        now_ms: u64,
    },
    /// Registers a host or records its heartbeat.
    PutHost {
        /// The validated registration.
        spec: Valid<HostSpec>,
        /// When the API node received it (ms since the epoch): the state machine must not
        /// read clocks, so the time travels in the command.
        now_ms: u64,
    },
}

/// The label a network made by a host's agent (for Docker) carries: the host's name.
pub const OWNER_LABEL: &str = "plexus.io/made-by-host";

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Object {
    /// A network.
    Network(Network),
    /// An endpoint.
    Endpoint(Endpoint),
    /// A host.
    Host(Host),
    /// A router.
    Router(Router),
    /// A policy.
    Policy(Policy),
    /// The objects of a batch's operations, in order (null for a deletion).
    #[schema(no_recursion, value_type = Vec<Object>)]
    Batch(Vec<Option<Object>>),
}

/// The outcome of applying a command: the object as it now is (None after a delete).
pub type CommandResult = Result<Option<Object>, Refusal>;

/// Everything the controller knows. Its maps are persistent (structure-sharing), so a clone
/// is a snapshot that costs O(1): readers such as the switch manager take one and work from
/// it while the state machine goes on applying.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Incremented by every change; each object records the revision of its last change.
    pub revision: u64,
    /// Networks by name.
    pub networks: OrdMap<String, Network>,
    /// Endpoints by network, then id.
    pub endpoints: OrdMap<String, OrdMap<String, Endpoint>>,
    /// Hosts by name.
    pub hosts: OrdMap<String, Host>,
    /// Routers by name.
    pub routers: OrdMap<String, Router>,
    /// Policies by name.
    pub policies: OrdMap<String, Policy>,
    /// host-subnet leases by network, then host.
    pub leases: OrdMap<String, OrdMap<String, Lease>>,
    /// Counter for generated endpoint ids.
    pub next_endpoint: u64,
    /// The most recent changes, oldest first, for watchers.
    pub changes: Vector<Change>,
    /// Which node masters each host's switch, and the generation of that choice.
    #[serde(default)]
    pub masters: OrdMap<String, (u64, u64)>,
    /// One-time tokens already used (bootstrap, join), by nonce, until they expire (ms).
    #[serde(default)]
    pub spent: OrdMap<String, u64>,
    /// Addresses and MACs in use (derived, not stored).
    #[serde(skip)]
    pub(crate) used: endpoints::UsedIndex,
    /// Host names by datapath id (derived, not stored).
    #[serde(skip)]
    pub(crate) by_datapath: imbl::HashMap<String, String>,
    /// How many endpoints each host has in each network, by network then host (derived, not
    /// stored): the hosts a network's broadcast goes to, without a pass over its endpoints.
    #[serde(skip)]
    pub(crate) members: OrdMap<String, OrdMap<String, u32>>,
}

/// How many changes the model keeps for watchers; one further behind must list again.
pub const CHANGES_KEPT: usize = 10_000;

/// One change, as a watcher sees it: on the wire `{revision, kind, key, object, gone}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "subject::ChangeRecord", try_from = "subject::ChangeRecord")]
pub struct Change {
    /// The revision the change produced.
    pub revision: u64,
    /// What changed.
    pub subject: Subject,
    /// The object after the change; absent when it was deleted.
    pub object: Option<Object>,
    /// A deleted endpoint's addresses (IPv4, IPv6): the switches' peer units of a policy to
    /// recompile, which no replica can look up once the endpoint is gone (watchers see them
    /// too).
    pub gone: Option<(std::net::Ipv4Addr, Option<std::net::Ipv6Addr>)>,
}

/// What applying one log entry gave: one command's result, or each of a group's in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Applied {
    /// A command's result.
    One(CommandResult),
    /// A group's results.
    Group(Vec<CommandResult>),
}

impl Model {
    /// Applies a log entry's command: a group command by command, anything else as itself.
    pub fn apply_entry(&mut self, cmd: Command) -> Applied {
        match cmd {
            Command::Group { commands } => Applied::Group(commands.into_iter().map(|c| self.apply(c)).collect()),
            c => Applied::One(self.apply(c)),
        }
    }

    /// Applies a command.
    pub fn apply(&mut self, cmd: Command) -> CommandResult {
        match cmd {
            Command::PutNetwork { spec, create, if_match } => self.put_network(spec, create, if_match).map(|n| Some(Object::Network(n))),
            Command::DeleteNetwork { name, if_match, force, owner } => {
                if let Some(owner) = owner {
                    let made_by = self.networks.get(&name).and_then(|n| n.spec.labels.get(OWNER_LABEL));
                    if made_by != Some(&owner) {
                        return Err(Refusal::new(
                            403,
                            Some("name"),
                            format!("network {name} was not made by host {owner}'s agent, which may delete only those"),
                        ));
                    }
                }
                self.delete_network(&name, if_match, force).map(|_| None)
            }
            Command::CreateEndpoint { network, spec, now_ms } => {
                // A refused endpoint must not leave a lease behind.
                let leases = self.leases.get(&network).cloned();
                let r = self.create_endpoint(&network, spec, now_ms);
                if r.is_err() {
                    match leases {
                        Some(l) => self.leases.insert(network, l),
                        None => self.leases.remove(&network),
                    };
                }
                r.map(|e| Some(Object::Endpoint(e)))
            }
            Command::DeleteEndpoint { network, id, on_host } => {
                if let Some(h) = on_host {
                    let on = self.endpoints.get(&network).and_then(|m| m.get(&id)).map(|e| e.host.as_str());
                    if on.is_some_and(|on| on != h) {
                        return Err(Refusal::new(403, Some("id"), format!("endpoint {id} is not on host {h}, whose agent may delete only its own")));
                    }
                }
                self.delete_endpoint(&network, &id).map(|_| None)
            }
            Command::SetEndpointLabels { network, id, labels, if_match, on_host } => {
                self.set_endpoint_labels(&network, &id, labels.into_inner().labels, if_match, on_host.as_deref()).map(|e| Some(Object::Endpoint(e)))
            }
            Command::SetEndpointPublish { network, id, publish, if_match, on_host } => {
                self.set_endpoint_publish(&network, &id, publish.into_inner().publish, if_match, on_host.as_deref()).map(|e| Some(Object::Endpoint(e)))
            }
            Command::Batch { commands } => {
                // The model's maps share structure: trying the batch on a copy costs little,
                // and a refusal leaves `self` untouched.
                let mut next = self.clone();
                let mut out = Vec::with_capacity(commands.len());
                for (i, c) in commands.into_iter().enumerate() {
                    if matches!(
                        c,
                        Command::Batch { .. } | Command::Group { .. } | Command::SpendToken { .. } | Command::PutHost { .. } | Command::SetMasters { .. }
                    ) {
                        return Err(Refusal::new(
                            422,
                            Some(&format!("operations[{i}]")),
                            "batches hold changes to networks, endpoints, routers and policies only",
                        ));
                    }
                    match next.apply(c) {
                        Ok(o) => out.push(o),
                        Err(r) => {
                            let field = Some(match r.field {
                                Some(f) => format!("operations[{i}].{f}"),
                                None => format!("operations[{i}]"),
                            });
                            return Err(Refusal { field, reason: format!("operation {i}: {}; nothing in the batch was applied", r.reason), ..r });
                        }
                    }
                }
                *self = next;
                Ok(Some(Object::Batch(out)))
            }
            Command::SetMasters { masters } => {
                self.set_masters(masters);
                Ok(None)
            }
            // The state machine applies a group's commands one by one ([`Model::apply_entry`]);
            // one reaching here came from elsewhere.
            Command::Group { .. } => Err(Refusal::new(422, None, "a group of commands is applied command by command, not as one")),
            Command::PutHost { spec, now_ms } => self.put_host(spec, now_ms).map(|h| Some(Object::Host(h))),
            Command::PutRouter { spec, create, if_match } => self.keeping_publishers(|m| m.put_router(spec, create, if_match).map(|r| Some(Object::Router(r)))),
            Command::DeleteRouter { name } => self.keeping_publishers(|m| m.delete_router(&name).map(|_| None)),
            Command::PutPolicy { spec, create, if_match } => self.put_policy(spec, create, if_match).map(|p| Some(Object::Policy(p))),
            Command::DeletePolicy { name } => self.delete_policy(&name).map(|_| None),
            Command::SpendToken { nonce, expires_ms, now_ms } => {
                // An expired token is refused before it gets here; forgetting it is safe.
                let stale: Vec<String> = self.spent.iter().filter(|(_, exp)| **exp <= now_ms).map(|(n, _)| n.clone()).collect();
                for n in stale {
                    self.spent.remove(&n);
                }
                if self.spent.contains_key(&nonce) {
                    return Err(Refusal::new(409, None, "this one-time token has been used already"));
                }
                self.spent.insert(nonce, expires_ms);
                Ok(None)
            }
        }
    }

    fn set_masters(&mut self, masters: BTreeMap<String, u64>) {
        let same = masters.len() == self.masters.len() && masters.iter().all(|(h, n)| self.masters.get(h).is_some_and(|(m, _)| m == n));
        if same {
            return;
        }
        self.revision += 1;
        let rev = self.revision;
        let old = std::mem::take(&mut self.masters);
        for (host, node) in masters {
            let kept = old.get(&host).filter(|(m, _)| *m == node).copied();
            self.masters.insert(host, kept.unwrap_or((node, rev)));
        }
        self.record(Subject::Mastership, None);
    }

    /// Records a change at the current revision.
    pub(crate) fn record(&mut self, subject: Subject, object: Option<Object>) {
        self.record_change(Change { revision: self.revision, subject, object, gone: None });
    }

    /// Records the deletion of endpoint `e`.
    pub(crate) fn record_gone(&mut self, e: &Endpoint) {
        self.record_change(Change { revision: self.revision, subject: Subject::Endpoint(e.key()), object: None, gone: Some((e.ip, e.ip6)) });
    }

    fn record_change(&mut self, c: Change) {
        self.changes.push_back(c);
        while self.changes.len() > CHANGES_KEPT {
            self.changes.pop_front();
        }
    }

    /// Changes after `since`, or `None` if some of them are no longer kept.
    pub fn changes_since(&self, since: u64) -> Option<Vec<Change>> {
        if let Some(first) = self.changes.front() {
            if since + 1 < first.revision {
                return None;
            }
        } else if since < self.revision {
            return None;
        }
        Some(self.changes_after(since).cloned().collect())
    }

    /// The kept changes after `since` (revisions only grow, so this is a binary search).
    pub fn changes_after(&self, since: u64) -> impl Iterator<Item = &Change> {
        let start = match self.changes.binary_search_by(|c| if c.revision <= since { std::cmp::Ordering::Less } else { std::cmp::Ordering::Greater }) {
            Ok(i) | Err(i) => i,
        };
        self.changes.focus().narrow(start..).into_iter()
    }

    /// The host whose switch has datapath id `dpid` (hex, as the API shows it).
    pub fn host_by_datapath(&self, dpid: &str) -> Option<&Host> {
        self.by_datapath.get(dpid).and_then(|name| self.hosts.get(name))
    }

    /// The hosts that have endpoints in `network`.
    pub fn member_hosts(&self, network: &str) -> impl Iterator<Item = &str> {
        self.members.get(network).into_iter().flat_map(|m| m.keys().map(String::as_str))
    }

    /// Rebuilds what is derived rather than stored; called on a model loaded from a snapshot.
    pub fn reindex(&mut self) {
        self.by_datapath = self.hosts.values().map(|h| (h.datapath_id.clone(), h.spec.name.clone())).collect();
        self.members = OrdMap::new();
        let eps: Vec<(String, String)> = self.all_endpoints().map(|e| (e.network.clone(), e.host.clone())).collect();
        for (network, host) in eps {
            self.count_member(&network, &host, true);
        }
    }

    /// Counts an endpoint of `network` on `host` in or out of the member index.
    pub(crate) fn count_member(&mut self, network: &str, host: &str, added: bool) {
        let hosts = self.members.entry(network.to_string()).or_default();
        let n = hosts.get(host).copied().unwrap_or(0);
        match (added, n) {
            (true, n) => {
                hosts.insert(host.to_string(), n + 1);
            }
            (false, 0 | 1) => {
                hosts.remove(host);
            }
            (false, n) => {
                hosts.insert(host.to_string(), n - 1);
            }
        }
        if hosts.is_empty() {
            self.members.remove(network);
        }
    }

    /// Whether every change after `since` is still kept.
    pub fn has_changes_since(&self, since: u64) -> bool {
        match self.changes.front() {
            Some(first) => since + 1 >= first.revision,
            None => since >= self.revision,
        }
    }

    /// Every endpoint of every network.
    pub fn all_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values().flat_map(|m| m.values())
    }
}

/// The rules every create-or-replace follows: a create refuses an existing object, `If-Match`
/// must name the stored revision (and an object that exists). Returns whether the stored
/// object already equals the spec, in which case nothing changes.
pub(crate) fn put_rules<S: PartialEq>(
    what: &str,
    name: &str,
    stored: Option<(&S, u64)>,
    spec: &S,
    create: bool,
    if_match: Option<u64>,
) -> Result<bool, Refusal> {
    match stored {
        Some(_) if create => Err(Refusal::new(409, Some("name"), format!("{what} {name} already exists"))),
        Some((s, rev)) => {
            check_revision(rev, if_match)?;
            Ok(s == spec)
        }
        None if if_match.is_some() => Err(Refusal::new(412, None, format!("{what} {name} does not exist"))),
        None => Ok(false),
    }
}

pub(crate) fn check_revision(current: u64, if_match: Option<u64>) -> Result<(), Refusal> {
    match if_match {
        Some(r) if r != current => Err(Refusal::new(412, None, format!("revision is {current}, not {r}"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(i: u32) -> Command {
        testing::host(&format!("h{i}"), i)
    }

    #[test]
    fn a_group_applies_its_commands_one_by_one_as_if_they_came_alone() {
        let cmds = vec![
            host(1),
            testing::overlay("red", "10.1.0.0/24", None),
            // Refused (the network exists): the others still apply.
            testing::overlay("red", "10.9.0.0/24", None),
            testing::endpoint("red", "a", "h1"),
            testing::endpoint("red", "a", "h1"),
            testing::endpoint("red", "b", "h1"),
        ];
        let mut alone = Model::default();
        let want: Vec<CommandResult> = cmds.iter().cloned().map(|c| alone.apply(c)).collect();
        let mut grouped = Model::default();
        let Applied::Group(got) = grouped.apply_entry(Command::Group { commands: cmds }) else { panic!("a group is answered as a group") };
        assert_eq!(got, want);
        assert!(got[2].is_err() && got[4].is_err() && got[5].is_ok());
        assert_eq!(grouped, alone);
        // A group inside a batch, or reaching apply whole, is refused.
        assert!(grouped.apply(Command::Group { commands: vec![] }).is_err());
        assert!(grouped.apply(Command::Batch { commands: vec![Command::Group { commands: vec![] }] }).is_err());
    }

    #[test]
    fn derived_indexes_kept_on_the_way_equal_those_rebuilt_after_a_load() {
        let mut m = Model::default();
        for i in 1..=3 {
            m.apply(host(i)).unwrap();
        }
        m.apply(testing::overlay("red", "10.1.0.0/24", None)).unwrap();
        m.apply(testing::overlay("blue", "10.2.0.0/24", None)).unwrap();
        for (net, id, h) in [("red", "a", "h1"), ("red", "b", "h1"), ("red", "c", "h2"), ("blue", "d", "h3")] {
            m.apply(testing::endpoint(net, id, h)).unwrap();
        }
        m.apply(Command::DeleteEndpoint { network: "red".into(), id: "c".into(), on_host: None }).unwrap();
        m.apply(Command::DeleteNetwork { name: "blue".into(), if_match: None, force: true, owner: None }).unwrap();
        assert_eq!(m.member_hosts("red").collect::<Vec<_>>(), ["h1"], "h2's last endpoint left red");
        assert_eq!(m.member_hosts("blue").count(), 0);
        let mut loaded: Model = serde_json::from_value(serde_json::to_value(&m).unwrap()).unwrap();
        assert!(loaded.host_by_datapath(&m.hosts["h1"].datapath_id).is_none(), "derived state is not stored");
        loaded.reindex();
        assert_eq!((&loaded.members, &loaded.by_datapath), (&m.members, &m.by_datapath));
        assert_eq!(loaded.host_by_datapath(&m.hosts["h2"].datapath_id).map(|h| h.spec.name.as_str()), Some("h2"));
    }

    #[test]
    fn watchers_too_far_behind_are_told_to_list_again() {
        let mut m = Model::default();
        assert_eq!(m.changes_since(0), Some(vec![]));
        for i in 0..(CHANGES_KEPT as u32 + 5) {
            m.apply(host(i)).unwrap();
        }
        assert_eq!(m.changes.len(), CHANGES_KEPT);
        assert_eq!(m.changes_since(0), None, "revisions 1..=5 are gone");
        assert_eq!(m.changes_since(5).map(|c| c.len()), Some(CHANGES_KEPT));
        assert_eq!(m.changes_since(m.revision).map(|c| c.len()), Some(0));
        // A heartbeat that changes nothing is not a change.
        let rev = m.revision;
        m.apply(host(3)).unwrap();
        assert_eq!(m.revision, rev);
    }
}
