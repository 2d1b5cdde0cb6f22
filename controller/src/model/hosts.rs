//! Hosts: registration doubles as heartbeat.

use plexus_api::{Host, HostSpec, Valid};

use super::{Model, Object, Refusal, Subject};

/// The datapath id of a host's `br-int`, as the hex string the API shows.
pub(super) fn datapath_id(name: &str) -> String {
    format!("{:016x}", plexus_api::ids::datapath_id(name))
}

impl Model {
    pub(crate) fn put_host(&mut self, spec: Valid<HostSpec>, now_ms: u64) -> Result<Host, Refusal> {
        let spec = spec.into_inner();
        if let Some(other) = self.hosts.values().find(|h| h.spec.tunnel_ip == spec.tunnel_ip && h.spec.name != spec.name) {
            return Err(Refusal::new(409, Some("tunnel_ip"), format!("{} is the tunnel address of host {}", spec.tunnel_ip, other.spec.name)));
        }
        let changed = self.hosts.get(&spec.name).is_none_or(|h| h.spec != spec);
        let revision = if changed {
            self.revision += 1;
            self.revision
        } else {
            self.hosts.get(&spec.name).map(|h| h.revision).unwrap_or(self.revision)
        };
        self.renew_leases(&spec.name, now_ms);
        let host = Host { datapath_id: datapath_id(&spec.name), spec, last_seen_ms: now_ms, revision };
        self.hosts.insert(host.spec.name.clone(), host.clone());
        self.by_datapath.insert(host.datapath_id.clone(), host.spec.name.clone());
        if changed {
            self.record(Subject::Host(host.spec.name.clone()), Some(Object::Host(host.clone())));
        }
        Ok(host)
    }
}
