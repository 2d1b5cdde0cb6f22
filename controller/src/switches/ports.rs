//! Which endpoint each of a switch's ports belongs to.

use std::collections::HashMap;

use plexus_api::EndpointKey;

use crate::model::Subject;

/// Which endpoint of one host each OVS port name belongs to, kept up to date from the
/// model's change log so that matching a switch's ports to endpoints costs what the switch
/// has, not what the whole model has.
#[derive(Debug, Default)]
pub(super) struct PortIndex {
    host: String,
    revision: Option<u64>,
    pub(super) by_port: HashMap<String, EndpointKey>,
}

impl PortIndex {
    pub(super) fn refresh(&mut self, model: &crate::model::Model, host: &str) {
        let incremental = self.host == host && self.revision.is_some_and(|r| model.has_changes_since(r));
        if incremental {
            for c in model.changes_after(self.revision.unwrap_or_default()) {
                let Subject::Endpoint(k) = &c.subject else { continue };
                let local = model.endpoints.get(&*k.network).and_then(|e| e.get(&*k.id)).is_some_and(|e| e.host == host);
                if local {
                    self.by_port.insert(k.port_name(), k.clone());
                } else {
                    self.by_port.remove(&k.port_name());
                }
            }
        } else {
            self.host = host.to_string();
            self.by_port = model.all_endpoints().filter(|e| e.host == host).map(|e| (e.key().port_name(), e.key())).collect();
        }
        self.revision = Some(model.revision);
    }
}
