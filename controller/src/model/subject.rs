//! What a change is about, typed: the model records a [`Subject`] with every change, and
//! everything that follows changes (the flow engine, the switch manager's port index, watchers)
//! matches on it instead of on strings.

use plexus_api::EndpointKey;
use serde::{Deserialize, Serialize};

use super::{Change, Object};

/// The kind of object a change is about: the `kind` watchers see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// A network.
    Network,
    /// An endpoint.
    Endpoint,
    /// A host.
    Host,
    /// A router.
    Router,
    /// A policy.
    Policy,
    /// The assignment of switches to controller nodes.
    Mastership,
}

/// The object a change is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A network, by name.
    Network(String),
    /// An endpoint.
    Endpoint(EndpointKey),
    /// A host, by name.
    Host(String),
    /// A router, by name.
    Router(String),
    /// A policy, by name.
    Policy(String),
    /// The assignment of switches to controller nodes (one object for the whole cluster).
    Mastership,
}

impl Subject {
    /// Its kind.
    pub fn kind(&self) -> ChangeKind {
        match self {
            Subject::Network(_) => ChangeKind::Network,
            Subject::Endpoint(_) => ChangeKind::Endpoint,
            Subject::Host(_) => ChangeKind::Host,
            Subject::Router(_) => ChangeKind::Router,
            Subject::Policy(_) => ChangeKind::Policy,
            Subject::Mastership => ChangeKind::Mastership,
        }
    }

    /// Its key as watchers see it: the name, `network/id` for an endpoint, empty for the
    /// mastership.
    pub fn key(&self) -> String {
        match self {
            Subject::Network(n) | Subject::Host(n) | Subject::Router(n) | Subject::Policy(n) => n.clone(),
            Subject::Endpoint(k) => k.to_string(),
            Subject::Mastership => String::new(),
        }
    }

    /// The subject of `kind` with `key`, if the key has the form that kind needs.
    pub fn parse(kind: ChangeKind, key: &str) -> Result<Subject, String> {
        Ok(match kind {
            ChangeKind::Network => Subject::Network(key.to_string()),
            ChangeKind::Endpoint => Subject::Endpoint(key.parse().map_err(|e: plexus_api::ids::BadEndpointKey| e.to_string())?),
            ChangeKind::Host => Subject::Host(key.to_string()),
            ChangeKind::Router => Subject::Router(key.to_string()),
            ChangeKind::Policy => Subject::Policy(key.to_string()),
            ChangeKind::Mastership => Subject::Mastership,
        })
    }
}

/// A change as watchers (and snapshots) see it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Change)]
pub struct ChangeRecord {
    /// The revision the change produced.
    pub revision: u64,
    /// What kind of object changed.
    pub kind: ChangeKind,
    /// Its key: the name, or `network/id` for endpoints (empty for the mastership).
    pub key: String,
    /// The object after the change; absent when it was deleted.
    #[schema(value_type = Option<Object>)]
    pub object: Option<Object>,
    /// A deleted endpoint's addresses: IPv4, and IPv6 or `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Option<String>>>)]
    pub gone: Option<(std::net::Ipv4Addr, Option<std::net::Ipv6Addr>)>,
}

impl From<Change> for ChangeRecord {
    fn from(c: Change) -> ChangeRecord {
        ChangeRecord { revision: c.revision, kind: c.subject.kind(), key: c.subject.key(), object: c.object, gone: c.gone }
    }
}

impl TryFrom<ChangeRecord> for Change {
    type Error = String;

    fn try_from(c: ChangeRecord) -> Result<Change, String> {
        Ok(Change { revision: c.revision, subject: Subject::parse(c.kind, &c.key)?, object: c.object, gone: c.gone })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_keep_their_wire_form() {
        let c = Change { revision: 7, subject: Subject::Endpoint(EndpointKey::new("red", "c1")), object: None, gone: None };
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json, serde_json::json!({"revision": 7, "kind": "endpoint", "key": "red/c1", "object": null}));
        assert_eq!(serde_json::from_value::<Change>(json).unwrap(), c);
        let bad = serde_json::json!({"revision": 7, "kind": "endpoint", "key": "no-slash", "object": null});
        assert!(serde_json::from_value::<Change>(bad).is_err());
        for s in [Subject::Network("n".into()), Subject::Host("h".into()), Subject::Router("r".into()), Subject::Policy("p".into()), Subject::Mastership] {
            assert_eq!(Subject::parse(s.kind(), &s.key()), Ok(s));
        }
    }
}
