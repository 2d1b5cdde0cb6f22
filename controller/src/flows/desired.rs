//! A switch's desired flows kept by [`Unit`], so that a model change recompiles only the units
//! it touches and the switch is sent only the difference — without reading its flows back.
//! What touches what: the model's change log (which objects changed since the revision these
//! flows reflect) and the switch's port changes. Whatever the log cannot answer (it was
//! trimmed, or a host or a network changed) falls back to compiling everything.

use std::collections::{BTreeMap, BTreeSet};

use plexus_ovs::openflow::FlowMod;

use super::compile::{affected, carries, compile_unit, compile_units, SwitchView, Unit};
use crate::model::Model;

/// The desired flows of one switch, by unit, as of a model revision and a view of its ports.
#[derive(Debug, Clone)]
pub struct DesiredFlows {
    units: BTreeMap<Unit, Vec<FlowMod>>,
    revision: u64,
    view: SwitchView,
    len: usize,
}

/// What [`DesiredFlows::update`] recompiled.
#[derive(Debug, Clone, Default)]
pub struct Update {
    /// Everything was recompiled.
    pub full: bool,
    /// Units recompiled.
    pub units: usize,
    /// Their flows before.
    pub old: Vec<FlowMod>,
    /// Their flows now.
    pub new: Vec<FlowMod>,
}

impl DesiredFlows {
    /// Compiles every unit.
    pub fn new(model: &Model, view: &SwitchView) -> DesiredFlows {
        let units = compile_units(model, view);
        let len = units.values().map(Vec::len).sum();
        DesiredFlows { units, revision: model.revision, view: view.clone(), len }
    }

    /// Every desired flow.
    pub fn flows(&self) -> Vec<FlowMod> {
        self.units.values().flatten().cloned().collect()
    }

    /// How many flows are desired.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no flow is desired.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The model revision these flows reflect.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Brings the flows to `model` and `view`, recompiling only what changed.
    pub fn update(&mut self, model: &Model, view: &SwitchView) -> Update {
        match self.touched(model, view) {
            Some(units) => {
                let mut u = Update { units: units.len(), ..Default::default() };
                for unit in units {
                    let new = compile_unit(model, view, &unit);
                    if let Some(old) = self.units.remove(&unit) {
                        self.len -= old.len();
                        u.old.extend(old);
                    }
                    if !new.is_empty() {
                        self.len += new.len();
                        u.new.extend(new.iter().cloned());
                        self.units.insert(unit, new);
                    }
                }
                self.revision = model.revision;
                self.view = view.clone();
                u
            }
            None => {
                let old = self.flows();
                *self = DesiredFlows::new(model, view);
                Update { full: true, units: self.units.len(), old, new: self.flows() }
            }
        }
    }

    /// The units a move to `model` and `view` touches; `None` for "anything".
    fn touched(&self, model: &Model, view: &SwitchView) -> Option<BTreeSet<Unit>> {
        if view.host != self.view.host || view.tunnel_port != self.view.tunnel_port {
            return None;
        }
        let mut touched = BTreeSet::new();
        if !model.has_changes_since(self.revision) {
            return None;
        }
        for c in model.changes_after(self.revision) {
            touched.extend(affected(&c.kind, &c.key)?);
        }
        // A port that came, went or moved touches its endpoint and its network's broadcast.
        if self.view.ports != view.ports {
            for k in changed_keys(&self.view.ports, &view.ports) {
                let net = k.split_once('/').map(|(n, _)| n.to_string())?;
                touched.insert(Unit::Network(net));
                touched.insert(Unit::Endpoint(k.to_string()));
            }
        }
        // A network this switch starts or stops carrying touches every one of its units.
        let nets: Vec<String> = touched.iter().filter_map(|u| if let Unit::Network(n) = u { Some(n.clone()) } else { None }).collect();
        for net in nets {
            let before = self.units.contains_key(&Unit::Network(net.clone()));
            let after = carries(model, view, &net).is_some();
            if before != after {
                let prefix = format!("{net}/");
                touched.extend(self.units.keys().filter(|u| matches!(u, Unit::Endpoint(k) if k.starts_with(&prefix))).cloned());
                if let Some(eps) = model.endpoints.get(&net) {
                    touched.extend(eps.keys().map(|id| Unit::Endpoint(format!("{net}/{id}"))));
                }
            }
        }
        Some(touched)
    }
}

/// Keys present in one map only or with different values: one walk over both sorted maps.
fn changed_keys<'a>(a: &'a BTreeMap<String, u32>, b: &'a BTreeMap<String, u32>) -> Vec<&'a str> {
    let (mut x, mut y) = (a.iter().peekable(), b.iter().peekable());
    let mut out = Vec::new();
    loop {
        match (x.peek(), y.peek()) {
            (None, None) => return out,
            (Some((k, _)), None) => {
                out.push(k.as_str());
                x.next();
            }
            (None, Some((k, _))) => {
                out.push(k.as_str());
                y.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    out.push(ka.as_str());
                    x.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push(kb.as_str());
                    y.next();
                }
                std::cmp::Ordering::Equal => {
                    if va != vb {
                        out.push(ka.as_str());
                    }
                    x.next();
                    y.next();
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::compile;
    use crate::model::Command;
    use plexus_api::{EndpointSpec, HostSpec, NetworkSpec};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn sorted(mut v: Vec<FlowMod>) -> Vec<String> {
        let mut s: Vec<String> = v.drain(..).map(|f| format!("{f:?}")).collect();
        s.sort();
        s
    }

    #[derive(Debug, Clone)]
    enum Step {
        Create { net: u8, id: u8, host: u8 },
        Delete { net: u8, id: u8 },
        Plug { net: u8, id: u8 },
        Unplug { net: u8, id: u8 },
        NewHost,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..2u8, 0..6u8, 0..3u8).prop_map(|(net, id, host)| Step::Create { net, id, host }),
            2 => (0..2u8, 0..6u8).prop_map(|(net, id)| Step::Delete { net, id }),
            3 => (0..2u8, 0..6u8).prop_map(|(net, id)| Step::Plug { net, id }),
            1 => (0..2u8, 0..6u8).prop_map(|(net, id)| Step::Unplug { net, id }),
            1 => Just(Step::NewHost),
        ]
    }

    proptest! {
        /// After any sequence of changes, the incrementally kept flows equal a full compile.
        #[test]
        fn incremental_updates_equal_a_full_compile(steps in proptest::collection::vec(step(), 1..40)) {
            let mut m = Model::default();
            let host = |m: &mut Model, i: u8| {
                let spec = HostSpec { name: format!("h{i}"), tunnel_ip: Ipv4Addr::new(192, 0, 2, i + 1), encap: Default::default(), labels: Default::default() };
                m.apply(Command::PutHost { spec, now_ms: 0 }).unwrap();
            };
            for i in 0..3 {
                host(&mut m, i);
            }
            for (i, n) in ["red", "blue"].iter().enumerate() {
                m.apply(Command::PutNetwork { spec: NetworkSpec::overlay(n, &format!("10.{i}.0.0/24")), create: true, if_match: None }).unwrap();
            }
            let mut view = SwitchView { host: "h0".into(), tunnel_port: 1, ports: Default::default() };
            let mut d = DesiredFlows::new(&m, &view);
            let mut hosts = 3;
            for s in steps {
                let net = |n: u8| if n == 0 { "red" } else { "blue" };
                match s {
                    Step::Create { net: n, id, host } => {
                        let spec = EndpointSpec { id: Some(format!("e{id}")), host: format!("h{host}"), ip: None, mac: None, owner: None, labels: Default::default() };
                        let _ = m.apply(Command::CreateEndpoint { network: net(n).into(), spec, now_ms: 0 });
                    }
                    Step::Delete { net: n, id } => {
                        let _ = m.apply(Command::DeleteEndpoint { network: net(n).into(), id: format!("e{id}") });
                    }
                    Step::Plug { net: n, id } => {
                        view.ports.insert(format!("{}/e{id}", net(n)), 10 + id as u32 + 10 * n as u32);
                    }
                    Step::Unplug { net: n, id } => {
                        view.ports.remove(&format!("{}/e{id}", net(n)));
                    }
                    Step::NewHost => {
                        host(&mut m, hosts);
                        hosts += 1;
                    }
                }
                // What the switch manager shows the compiler: plugged ports of endpoints that
                // exist on this host.
                let seen = SwitchView {
                    ports: view.ports.iter().filter(|(k, _)| {
                        let (n, id) = k.split_once('/').unwrap();
                        m.endpoints.get(n).and_then(|e| e.get(id)).is_some_and(|e| e.host == "h0")
                    }).map(|(k, v)| (k.clone(), *v)).collect(),
                    ..view.clone()
                };
                d.update(&m, &seen);
                prop_assert_eq!(sorted(d.flows()), sorted(compile(&m, &seen)));
                prop_assert_eq!(d.len(), d.flows().len());
            }
        }
    }

    #[test]
    fn one_endpoint_change_recompiles_two_units() {
        let mut m = Model::default();
        for i in 0..2u8 {
            let spec = HostSpec { name: format!("h{i}"), tunnel_ip: Ipv4Addr::new(192, 0, 2, i + 1), encap: Default::default(), labels: Default::default() };
            m.apply(Command::PutHost { spec, now_ms: 0 }).unwrap();
        }
        m.apply(Command::PutNetwork { spec: NetworkSpec::overlay("red", "10.0.0.0/16"), create: true, if_match: None }).unwrap();
        let mut view = SwitchView { host: "h0".into(), tunnel_port: 1, ports: Default::default() };
        for i in 0..200 {
            let spec = EndpointSpec { id: Some(format!("e{i}")), host: format!("h{}", i % 2), ip: None, mac: None, owner: None, labels: Default::default() };
            m.apply(Command::CreateEndpoint { network: "red".into(), spec, now_ms: 0 }).unwrap();
            if i % 2 == 0 {
                view.ports.insert(format!("red/e{i}"), 100 + i);
            }
        }
        let mut d = DesiredFlows::new(&m, &view);
        let spec = EndpointSpec { id: Some("new".into()), host: "h1".into(), ip: None, mac: None, owner: None, labels: Default::default() };
        m.apply(Command::CreateEndpoint { network: "red".into(), spec, now_ms: 0 }).unwrap();
        let u = d.update(&m, &view);
        assert!(!u.full);
        // The new endpoint's unit and its network's (broadcast) unit.
        assert_eq!(u.units, 2);
        assert_eq!(sorted(d.flows()), sorted(compile(&m, &view)));
    }
}
