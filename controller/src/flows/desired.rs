//! A switch's desired flows kept by [`Unit`], so that a model change recompiles only the units
//! it touches and the switch is sent only the difference — without reading its flows back.
//! What touches what: the model's change log (which objects changed since the revision these
//! flows reflect) and the switch's port changes. Whatever the log cannot answer (it was
//! trimmed, or a host or a network changed) falls back to compiling everything.

use std::collections::{BTreeMap, BTreeSet};

use plexus_api::EndpointKey;
use plexus_ovs::openflow::{FlowMod, Message};

use super::compile::{carries, compile_unit, compile_units, SwitchView, Unit};
use super::engine::{leaves_alone, peer_units, touched, Input, Touched};
use super::reconcile::{diff, Diff};
use crate::model::{Model, Subject};

/// The desired flows of one switch, by unit, as of a model revision and a view of its ports.
#[derive(Debug, Clone)]
pub struct DesiredFlows {
    units: BTreeMap<Unit, Packed>,
    revision: u64,
    view: SwitchView,
    len: usize,
}

/// What [`DesiredFlows::update`] recompiled, and what the switch must be sent.
#[derive(Debug, Clone, Default)]
pub struct Update {
    /// Everything was recompiled.
    pub full: bool,
    /// Units recompiled.
    pub units: usize,
    /// The difference between the flows before and now.
    pub diff: Diff,
}

impl DesiredFlows {
    /// Compiles every unit. The view is kept (to tell what the next update changes), so it is
    /// taken by value: a switch's view holds all its ports, and cloning it per pass would cost
    /// what the whole incremental update costs.
    pub fn new(model: &Model, view: SwitchView) -> DesiredFlows {
        let units: BTreeMap<Unit, Packed> = compile_units(model, &view).into_iter().map(|(u, f)| (u, Packed::new(f))).collect();
        let len = units.values().map(Packed::len).sum();
        DesiredFlows { units, revision: model.revision, view, len }
    }

    /// Every desired flow.
    pub fn flows(&self) -> Vec<FlowMod> {
        let mut out = Vec::with_capacity(self.len);
        for p in self.units.values() {
            p.unpack_into(&mut out);
        }
        out
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

    /// Brings the flows to `model` and `view`, recompiling only what changed, and returns the
    /// difference to send (computed without reading the switch back).
    pub fn update(&mut self, model: &Model, view: SwitchView) -> Update {
        let plan = self.plan(model, &view);
        self.update_with(model, view, plan)
    }

    /// Marks these flows current with `model` if no change since their revision touches them,
    /// the switch's ports unchanged ([`leaves_alone`]), and says whether it did: then there is
    /// nothing to compile or send. A cheap look (a lookup per change), so that a change wakes
    /// a thousand switches' sessions for a moment each, and only the few it touches compile.
    pub fn catch_up(&mut self, model: &Model) -> bool {
        if !model.has_changes_since(self.revision) {
            return false;
        }
        let view = &self.view;
        if !leaves_alone(model, &view.host, model.changes_after(self.revision).map(|c| &c.subject), |n| carries(model, view, n).is_some()) {
            return false;
        }
        self.revision = model.revision;
        true
    }

    /// The host these flows are for.
    pub fn host(&self) -> &str {
        &self.view.host
    }

    /// [`DesiredFlows::update`] with the units [`DesiredFlows::plan`] found for the same
    /// `model` and `view`: a caller can look at the plan's size before it commits to the work.
    pub fn update_with(&mut self, model: &Model, view: SwitchView, plan: Option<BTreeSet<Unit>>) -> Update {
        match plan {
            Some(units) => {
                // Each unit's flows are diffed against what that unit had, so no flow is copied
                // but those that go into the difference. A flow that moves between two units
                // becomes a delete and an add, which the bundle applies in that order.
                let mut d = Diff::default();
                let n = units.len();
                for unit in units {
                    let flows = compile_unit(model, &view, &unit);
                    let before = self.units.remove(&unit).map(|p| p.unpack()).unwrap_or_default();
                    self.len -= before.len();
                    d.extend(diff(&before, &flows));
                    if !flows.is_empty() {
                        self.len += flows.len();
                        self.units.insert(unit, Packed::new(flows));
                    }
                }
                self.revision = model.revision;
                self.view = view;
                Update { full: false, units: n, diff: d }
            }
            None => {
                let old = self.flows();
                *self = DesiredFlows::new(model, view);
                Update { full: true, units: self.units.len(), diff: diff(&old, &self.flows()) }
            }
        }
    }

    /// The units a move to `model` and `view` touches; `None` for "everything" (a full
    /// recompile).
    pub fn plan(&self, model: &Model, view: &SwitchView) -> Option<BTreeSet<Unit>> {
        let mut units = BTreeSet::new();
        let mut add = |t: Touched| match t {
            Touched::Units(u) => {
                units.extend(u);
                Some(())
            }
            Touched::Everything => None,
        };
        if view.host != self.view.host
            || view.tunnel_port != self.view.tunnel_port
            || view.external_port != self.view.external_port
            || view.uplinks != self.view.uplinks
            || !model.has_changes_since(self.revision)
        {
            add(touched(Input::Switch))?;
        }
        for c in model.changes_after(self.revision) {
            add(touched(Input::Model(&c.subject)))?;
            if let Subject::Endpoint(k) = &c.subject {
                // Its addresses now, or as it had them when it went (an endpoint's addresses
                // never change while it lives).
                let now = model.endpoints.get(&*k.network).and_then(|m| m.get(&*k.id)).map(|e| (e.ip, e.ip6));
                let ips: Vec<std::net::IpAddr> =
                    c.gone.into_iter().chain(now).flat_map(|(v4, v6)| std::iter::once(v4.into()).chain(v6.map(Into::into))).collect();
                add(Touched::Units(peer_units(model, &ips)))?;
            }
        }
        if self.view.ports != view.ports {
            for k in changed_keys(&self.view.ports, &view.ports) {
                add(touched(Input::Port(k)))?;
            }
        }
        // A network this switch starts or stops carrying touches every one of its units; an
        // endpoint plugged into one network can start the carrying of its whole routing domain.
        let mut nets: BTreeSet<String> = units.iter().filter_map(|u| if let Unit::Network(n) = u { Some(n.clone()) } else { None }).collect();
        for net in nets.clone() {
            if let Some((_, domain)) = model.routed_domain(&net) {
                nets.extend(domain);
            }
        }
        for net in nets {
            let before = self.units.contains_key(&Unit::Network(net.clone()));
            let after = carries(model, view, &net).is_some();
            if before != after {
                if model.policies.values().any(|p| p.spec.network == net) {
                    // Its peer addresses' units are many; recompile everything instead.
                    return None;
                }
                units.insert(Unit::Network(net.clone()));
                units.insert(Unit::Policies(net.clone()));
                units.extend(self.units.keys().filter(|u| matches!(u, Unit::Endpoint(k) | Unit::Governed(k) if *k.network == *net)).cloned());
                if let Some(eps) = model.endpoints.get(&net) {
                    units.extend(eps.keys().map(|id| Unit::Endpoint(EndpointKey::new(&net, id))));
                }
            }
        }
        Some(units)
    }
}

/// One unit's flows in their wire form, one buffer for the unit. As values, flows take
/// several times the memory (every match field and set-field action holds a 128-bit value
/// and mask), and a node keeps the flows of every switch it masters: at a thousand switches of
/// a hundred thousand endpoints, gigabytes.
#[derive(Debug, Clone, Default)]
struct Packed {
    /// Flow-mod messages, one after another (each says its length in its header).
    wire: Box<[u8]>,
    /// Flows that do not encode (a switch would refuse them too): kept as they are, so that
    /// nothing desired is lost from view.
    plain: Vec<FlowMod>,
    count: usize,
}

impl Packed {
    fn new(flows: Vec<FlowMod>) -> Packed {
        let count = flows.len();
        let (mut wire, mut plain) = (Vec::new(), Vec::new());
        for f in flows {
            let m = Message::FlowMod(f);
            if m.encode_into(0, &mut wire).is_err() {
                if let Message::FlowMod(f) = m {
                    plain.push(f);
                }
            }
        }
        let p = Packed { wire: wire.into_boxed_slice(), plain, count };
        debug_assert_eq!(p.unpack().len(), count, "every packed flow unpacks");
        p
    }

    fn len(&self) -> usize {
        self.count
    }

    fn unpack(&self) -> Vec<FlowMod> {
        let mut out = Vec::with_capacity(self.count);
        self.unpack_into(&mut out);
        out
    }

    fn unpack_into(&self, out: &mut Vec<FlowMod>) {
        let mut rest = &self.wire[..];
        while let [_, _, hi, lo, ..] = *rest {
            let n = usize::from(u16::from_be_bytes([hi, lo]));
            let flow = rest.get(..n).map(Message::decode);
            let Some(Ok((_, Message::FlowMod(f)))) = flow else {
                // Only a codec that cannot read what it wrote gets here.
                tracing::error!(len = n, "a packed desired flow does not decode; the rest of its unit is lost from view");
                break;
            };
            out.push(f);
            rest = &rest[n..];
        }
        out.extend(self.plain.iter().cloned());
    }
}

/// Keys present in one map only or with different values: one walk over both sorted maps.
fn changed_keys<'a>(a: &'a BTreeMap<EndpointKey, u32>, b: &'a BTreeMap<EndpointKey, u32>) -> Vec<&'a EndpointKey> {
    let (mut x, mut y) = (a.iter().peekable(), b.iter().peekable());
    let mut out = Vec::new();
    loop {
        match (x.peek(), y.peek()) {
            (None, None) => return out,
            (Some((k, _)), None) => {
                out.push(*k);
                x.next();
            }
            (None, Some((k, _))) => {
                out.push(*k);
                y.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    out.push(*ka);
                    x.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push(*kb);
                    y.next();
                }
                std::cmp::Ordering::Equal => {
                    if va != vb {
                        out.push(*ka);
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
    use crate::model::testing::{dual, endpoint, host, overlay, underlay};
    use crate::model::Command;
    use plexus_api::{RouterSpec, Valid};
    use proptest::prelude::*;

    fn sorted(mut v: Vec<FlowMod>) -> Vec<String> {
        let mut s: Vec<String> = v.drain(..).map(|f| format!("{f:?}")).collect();
        s.sort();
        s
    }

    #[derive(Debug, Clone)]
    enum Step {
        Create {
            net: u8,
            id: u8,
            host: u8,
        },
        Delete {
            net: u8,
            id: u8,
        },
        Plug {
            net: u8,
            id: u8,
        },
        Unplug {
            net: u8,
            id: u8,
        },
        NewHost,
        /// A router joins red and green (with external access or not), or goes.
        Route(Option<bool>),
        /// The switch's external port appears or goes.
        ExternalPort(bool),
        /// A policy on red (selecting app=db, ingress from app=api in green), or none.
        Policy(bool),
        /// An endpoint's labels change.
        Label {
            net: u8,
            id: u8,
            app: u8,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..4u8, 0..6u8, 0..3u8).prop_map(|(net, id, host)| Step::Create { net, id, host }),
            2 => (0..4u8, 0..6u8).prop_map(|(net, id)| Step::Delete { net, id }),
            3 => (0..4u8, 0..6u8).prop_map(|(net, id)| Step::Plug { net, id }),
            1 => (0..4u8, 0..6u8).prop_map(|(net, id)| Step::Unplug { net, id }),
            1 => Just(Step::NewHost),
            1 => proptest::option::of(any::<bool>()).prop_map(Step::Route),
            1 => any::<bool>().prop_map(Step::ExternalPort),
            1 => any::<bool>().prop_map(Step::Policy),
            2 => (0..3u8, 0..6u8, 0..3u8).prop_map(|(net, id, app)| Step::Label { net, id, app }),
        ]
    }

    fn net(n: u8) -> &'static str {
        ["red", "blue", "green", "grey"][n as usize % 4]
    }

    proptest! {
        /// After any sequence of changes, the incrementally kept flows equal a full compile,
        /// and the difference each update returns turns the old flows into the new ones.
        #[test]
        fn incremental_updates_equal_a_full_compile(steps in proptest::collection::vec(step(), 1..40)) {
            let mut m = Model::default();
            for i in 0..3 {
                m.apply(host(&format!("h{i}"), i + 1)).unwrap();
            }
            // Red (policed) and green (its peers) are dual stack: peers' IPv6 addresses are
            // units too.
            for (i, n) in ["red", "blue", "green"].iter().enumerate() {
                let cmd = if *n == "blue" { overlay(n, &format!("10.{i}.0.0/24"), None) } else { dual(n, &format!("10.{i}.0.0/24"), &format!("fd00:{i}::/64")) };
                m.apply(cmd).unwrap();
            }
            m.apply(underlay("grey", "10.9.0.0/24", Some(7))).unwrap();
            let mut view = SwitchView { host: "h0".into(), tunnel_port: 1, external_port: Some(2), uplinks: [("physnet1".to_string(), 3)].into(), ports: Default::default() };
            let mut d = DesiredFlows::new(&m, view.clone());
            // The switch's ports as of the last update: a session catches up only when they
            // did not change since (its pass is then of the model alone).
            let mut last_ports = view.clone();
            let mut hosts = 3;
            for s in steps {
                match s {
                    Step::Create { net: n, id, host } => {
                        let _ = m.apply(endpoint(net(n), &format!("e{id}"), &format!("h{host}")));
                    }
                    Step::Delete { net: n, id } => {
                        let _ = m.apply(Command::DeleteEndpoint { network: net(n).into(), id: format!("e{id}"), on_host: None });
                    }
                    Step::Plug { net: n, id } => {
                        view.ports.insert(EndpointKey::new(net(n), format!("e{id}")), 10 + id as u32 + 10 * n as u32);
                    }
                    Step::Unplug { net: n, id } => {
                        view.ports.remove(&EndpointKey::new(net(n), format!("e{id}")));
                    }
                    Step::NewHost => {
                        m.apply(host(&format!("h{hosts}"), hosts as u32 + 1)).unwrap();
                        hosts += 1;
                    }
                    Step::Route(Some(external)) => {
                        let spec = RouterSpec { name: "r".into(), networks: vec!["green".into(), "red".into()], external, external_gateway: None, labels: Default::default() };
                        m.apply(Command::PutRouter { spec: Valid::new(spec).unwrap(), create: false, if_match: None }).unwrap();
                    }
                    Step::Route(None) => {
                        let _ = m.apply(Command::DeleteRouter { name: "r".into() });
                    }
                    Step::ExternalPort(on) => view.external_port = on.then_some(2),
                    Step::Policy(true) => {
                        // Peers by selector in another network, a CIDR less an exception (its
                        // pieces next to the exception are single addresses), and an endpoint's
                        // address as a CIDR: an address that is a peer twice over is one flow.
                        let peers = vec![
                            plexus_api::Peer { select: Some("app=api".into()), network: Some("green".into()), ..Default::default() },
                            plexus_api::Peer { cidr: Some("10.0.0.0/24".into()), except: vec!["10.0.0.3/32".into()], ..Default::default() },
                            plexus_api::Peer { cidr: Some("10.2.0.2/32".into()), ..Default::default() },
                        ];
                        let rule = plexus_api::Rule { peers, protocol: plexus_api::Protocol::Tcp, ports: vec!["5432".into()], ..plexus_api::Rule::allow() };
                        let spec = plexus_api::PolicySpec { name: "p".into(), network: "red".into(), select: "app=db".into(), ingress: Some(vec![rule]), egress: Some(vec![]), labels: Default::default() };
                        m.apply(Command::PutPolicy { spec: Valid::new(spec).unwrap(), create: false, if_match: None }).unwrap();
                    }
                    Step::Policy(false) => {
                        let _ = m.apply(Command::DeletePolicy { name: "p".into() });
                    }
                    Step::Label { net: n, id, app } => {
                        let labels: std::collections::BTreeMap<String, String> = [("app".to_string(), ["db", "api", "web"][app as usize % 3].to_string())].into();
                        let labels = Valid::new(plexus_api::EndpointLabels { labels }).unwrap();
                        let _ = m.apply(Command::SetEndpointLabels { network: net(n).into(), id: format!("e{id}"), labels, if_match: None, on_host: None });
                    }
                }
                // What the switch manager shows the compiler: plugged ports of endpoints that
                // exist on this host.
                let seen = SwitchView {
                    ports: view.ports.iter().filter(|(k, _)| {
                        m.endpoints.get(&*k.network).and_then(|e| e.get(&*k.id)).is_some_and(|e| e.host == "h0")
                    }).map(|(k, v)| (k.clone(), *v)).collect(),
                    ..view.clone()
                };
                let before = d.flows();
                // Whatever catching up skips must be nothing: the same update finds no
                // difference. (Which endpoints the ports belong to may have changed: a port
                // plugged in before its endpoint existed.)
                let mut caught = d.clone();
                let skipped = view == last_ports && caught.catch_up(&m);
                let u = d.update(&m, seen.clone());
                last_ports = view.clone();
                if skipped {
                    prop_assert!(u.diff.is_empty(), "catching up skipped a change: {:#?}", u.diff);
                    prop_assert_eq!(caught.revision(), d.revision());
                }
                let full = compile(&m, &seen);
                // No two flows of a switch share a table, priority and match: they would be
                // one flow on the switch.
                let keys: std::collections::HashSet<_> = full.iter().map(|f| (f.table_id, f.priority, f.match_.clone())).collect();
                prop_assert_eq!(keys.len(), full.len());
                prop_assert_eq!(sorted(d.flows()), sorted(full));
                prop_assert_eq!(d.len(), d.flows().len());
                // Applying the returned difference to the old flows gives the new ones.
                let mut applied: Vec<FlowMod> = before.into_iter().filter(|f| {
                    !u.diff.delete.iter().chain(&u.diff.replace).chain(&u.diff.modify).any(|g| (g.table_id, g.priority, &g.match_) == (f.table_id, f.priority, &f.match_))
                }).collect();
                applied.extend(u.diff.add.iter().chain(&u.diff.replace).chain(&u.diff.modify).cloned());
                prop_assert_eq!(sorted(applied), sorted(d.flows()));
            }
        }
    }

    #[test]
    fn a_change_in_a_network_the_switch_does_not_carry_is_caught_up_without_compiling() {
        let mut m = Model::default();
        for i in 0..3u32 {
            m.apply(host(&format!("h{i}"), i + 1)).unwrap();
        }
        m.apply(overlay("red", "10.0.0.0/16", None)).unwrap();
        m.apply(overlay("blue", "10.1.0.0/16", None)).unwrap();
        m.apply(endpoint("red", "mine", "h0")).unwrap();
        let view = SwitchView {
            host: "h0".into(),
            tunnel_port: 1,
            external_port: None,
            uplinks: Default::default(),
            ports: [(EndpointKey::new("red", "mine"), 10)].into(),
        };
        let mut d = DesiredFlows::new(&m, view.clone());
        // Blue is carried elsewhere only: nothing of it is on h0's switch.
        m.apply(endpoint("blue", "far", "h1")).unwrap();
        assert!(d.catch_up(&m), "a network this switch does not carry");
        assert_eq!(d.revision(), m.revision);
        assert_eq!(sorted(d.flows()), sorted(compile(&m, &view)));
        // Red is carried here: a red endpoint elsewhere needs its flows (its unicast, its
        // host in the broadcast), and a blue one with it does not hide that.
        m.apply(endpoint("blue", "far2", "h1")).unwrap();
        m.apply(endpoint("red", "theirs", "h2")).unwrap();
        assert!(!d.catch_up(&m), "a network this switch carries");
        assert!(!d.update(&m, view.clone()).diff.is_empty());
        // A router joining blue to red makes h0 carry blue too.
        let spec =
            RouterSpec { name: "r".into(), networks: vec!["blue".into(), "red".into()], external: false, external_gateway: None, labels: Default::default() };
        m.apply(Command::PutRouter { spec: Valid::new(spec).unwrap(), create: true, if_match: None }).unwrap();
        d.update(&m, view.clone());
        m.apply(endpoint("blue", "far3", "h1")).unwrap();
        assert!(!d.catch_up(&m), "a network of the routing domain this switch carries");
    }

    #[test]
    fn an_endpoint_whose_port_was_plugged_in_first_is_compiled_when_it_is_created() {
        let mut m = Model::default();
        for i in 0..2u32 {
            m.apply(host(&format!("h{i}"), i + 1)).unwrap();
        }
        m.apply(overlay("red", "10.0.0.0/16", None)).unwrap();
        // The runtime plugged the container's port before it asked for the endpoint: the
        // switch has the port, and carries no red flows yet.
        let plugged = EndpointKey::new("red", "early");
        let empty = SwitchView { host: "h0".into(), tunnel_port: 1, external_port: None, uplinks: Default::default(), ports: Default::default() };
        let mut d = DesiredFlows::new(&m, empty);
        m.apply(endpoint("red", "early", "h0")).unwrap();
        assert!(!d.catch_up(&m), "the new endpoint's port is on this switch: it needs its flows");
        let view = SwitchView { ports: [(plugged, 10)].into(), ..d.view.clone() };
        assert!(!d.update(&m, view).diff.is_empty());
    }

    #[test]
    fn one_endpoint_change_recompiles_three_units() {
        let mut m = Model::default();
        for i in 0..2u32 {
            m.apply(host(&format!("h{i}"), i + 1)).unwrap();
        }
        m.apply(overlay("red", "10.0.0.0/16", None)).unwrap();
        let mut view = SwitchView { host: "h0".into(), tunnel_port: 1, external_port: None, uplinks: Default::default(), ports: Default::default() };
        for i in 0..200 {
            m.apply(endpoint("red", &format!("e{i}"), &format!("h{}", i % 2))).unwrap();
            if i % 2 == 0 {
                view.ports.insert(EndpointKey::new("red", format!("e{i}")), 100 + i);
            }
        }
        let mut d = DesiredFlows::new(&m, view.clone());
        m.apply(endpoint("red", "new", "h1")).unwrap();
        let u = d.update(&m, view.clone());
        assert!(!u.full);
        // The new endpoint's unit, its network's (broadcast) unit and its network's policies
        // (which it may be governed by or a peer of).
        assert_eq!(u.units, 3);
        // Its ARP answer and unicast added, the network's broadcast unchanged (h1 already
        // had endpoints).
        assert_eq!((u.diff.add.len(), u.diff.modify.len(), u.diff.replace.len(), u.diff.delete.len()), (2, 0, 0, 0), "{:#?}", u.diff);
        assert_eq!(sorted(d.flows()), sorted(compile(&m, &view)));
    }
}
