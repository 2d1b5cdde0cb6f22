//! Policy enforcement, stateful, in every host's switch.
//!
//! IPv4 (and, on a dual-stack network, IPv6) of a routing domain in which any network has a
//! policy goes through conntrack (one zone per domain, so a routed connection is one
//! connection) on the way in from an endpoint or a tunnel. Neighbor Discovery is never
//! policed, as ARP is not: without it no policy could let anything through. In the policy tables a packet of a connection conntrack knows (established or
//! related) passes at once; anything else meets the rules. Egress rules are weighed at the
//! sending host, ingress rules at the host of the receiving endpoint — for local, tunnelled
//! and routed packets alike — and a new connection that passed is committed before output.
//!
//! A rule is a conjunctive match (OVS `conjunction`) of two or three dimensions: the
//! endpoints it governs on this switch (by port), its peers (address prefixes: endpoints'
//! addresses, CIDRs less their exceptions) and its service (protocol, port ranges as masked
//! prefixes). Flows therefore grow with members plus peers plus ports, never with their
//! product. A governed endpoint ends with a default-deny flow per covered direction. Flows of
//! different rules that match the same thing at the same priority are one flow with several
//! `conjunction` actions, so the units are cut along what such flows match: what a network's
//! policies share ([`compile_shared`]: conntrack, services, decisions, CIDR prefixes wider
//! than one address), each governed endpoint of the switch ([`compile_governed`]: matched by
//! its port) and each peer address ([`compile_peer`]: by selector or as a `/32` CIDR, one flow
//! either way). A label change recompiles the endpoint's units and its address's only.
//!
//! A rule's priority (1..=1000, lower first; deny before allow at the same number) becomes
//! the OpenFlow priority [`rule_priority`]; its decision flow (`conj_id`) carries a cookie of
//! its own ([`rule_cookie`]), whose counters are the rule's, and each default-deny flow one
//! per endpoint and direction ([`drop_cookie`]), whose counters are that endpoint's drops.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use plexus_api::network::Cidr;
use plexus_api::{EndpointKey, Policy, Protocol, Rule, RuleAction, Selector};
use plexus_ovs::openflow::{Action, Ct, CtZone, Field, Match, NX_CT_F_COMMIT};

use super::compile::{cookie, CookieKind, SwitchView};
use super::features::{Feature, Flows};
use super::pipeline::{priority, Origin, Table, REG_FROM_TUNNEL, REG_NETWORK, REG_OUT_PORT, REG_ZONE};
use crate::model::Model;

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
/// ICMPv6 Router Solicitation up to Redirect: Neighbor Discovery.
const ND_TYPES: std::ops::RangeInclusive<u8> = 133..=137;

/// The Ethernet types a network's policies cover: IPv4, and IPv6 on a dual-stack network.
fn families(model: &Model, network: &str) -> &'static [u16] {
    if model.networks.get(network).is_some_and(|n| n.spec.subnet6.is_some()) {
        &[ETH_IPV4, ETH_IPV6]
    } else {
        &[ETH_IPV4]
    }
}
/// `ct_state` bits.
const CT_NEW: u32 = 0x01;
const CT_EST: u32 = 0x02;
const CT_REL: u32 = 0x04;
const CT_TRK: u32 = 0x20;

/// The policy feature: its glue (established connections pass, new ones are committed);
/// its other flows come from [`compile_shared`], [`compile_governed`] and [`compile_peer`].
#[derive(Debug)]
pub struct Policies;

impl Feature for Policies {
    fn name(&self) -> &'static str {
        "policy"
    }
    fn tables(&self) -> &'static [Table] {
        &[Table::Conntrack, Table::EgressPolicy, Table::IngressPolicy, Table::CtCommit]
    }
    fn glue(&self, _view: &super::SwitchView, out: &mut Flows) {
        for t in [Table::EgressPolicy, Table::IngressPolicy] {
            // Every path through a policy table goes on to the same next table whatever its
            // origin (egress is visited by local packets only).
            let Some(next) = t.next(Origin::Local) else { continue };
            for eth in [ETH_IPV4, ETH_IPV6] {
                for bit in [CT_EST, CT_REL] {
                    let m = Match::new().eth_type(eth).masked(Field::CtState, CT_TRK | bit, CT_TRK | bit);
                    out.add(t, priority::POLICY_ESTABLISHED, m, |f| f.goto(next.id()));
                }
            }
            for nd in ND_TYPES {
                out.add(t, priority::POLICY_ESTABLISHED, Match::new().with(Field::Icmpv6Type, nd), |f| f.goto(next.id()));
            }
        }
        let Some(next) = Table::CtCommit.next(Origin::Local) else { return };
        for eth in [ETH_IPV4, ETH_IPV6] {
            let new = Match::new().eth_type(eth).masked(Field::CtState, CT_TRK | CT_NEW, CT_TRK | CT_NEW);
            let commit = Action::Ct(Ct { flags: NX_CT_F_COMMIT, zone: zone_reg(), table: None, alg: 0, actions: Vec::new() });
            out.add(Table::CtCommit, priority::DEFAULT, new, |f| f.apply(vec![commit]).goto(next.id()));
        }
    }
}

fn zone_reg() -> CtZone {
    CtZone::Field { field: Field::Reg(REG_ZONE), ofs: 0, n_bits: 16 }
}

/// The conntrack zone of a routing domain (or lone network) with this id: 1..=65535.
pub fn zone(id: u32) -> u16 {
    (id.saturating_sub(1) % 0xffff + 1) as u16
}

/// The OpenFlow priority of a rule: lower rule numbers above higher ones, and a deny just
/// above an allow of the same number.
pub fn rule_priority(r: &Rule) -> u16 {
    let p = r.priority.clamp(1, Rule::MAX_PRIORITY);
    priority::POLICY_RULES + (Rule::MAX_PRIORITY - p) * 2 + u16::from(r.action == RuleAction::Deny)
}

/// The conjunction id of rule `index` of a policy in a direction: unique on a switch, since
/// policy ids are unique and a direction holds at most [`plexus_api::policy::MAX_RULES`].
pub fn conj_id(policy_id: u32, egress: bool, index: usize) -> u32 {
    (policy_id << 10) | (u32::from(egress) << 9) | (index as u32 & 0x1ff)
}

/// The cookie of a rule's decision flow.
pub fn rule_cookie(policy: &str, egress: bool, index: usize) -> u64 {
    cookie(CookieKind::PolicyRule, &format!("{policy}/{}/{index}", direction(egress)))
}

/// The cookie of an endpoint's default-deny flow in a direction.
pub fn drop_cookie(key: &EndpointKey, egress: bool) -> u64 {
    cookie(CookieKind::PolicyDrop, &format!("{}/{}/{}", key.network, key.id, direction(egress)))
}

/// `"ingress"` or `"egress"`.
pub fn direction(egress: bool) -> &'static str {
    if egress {
        "egress"
    } else {
        "ingress"
    }
}

/// Whether the routing domain of `network` (its networks: `domain`) has a policy, so its
/// packets go through conntrack.
pub fn tracked(model: &Model, domain: &BTreeSet<String>) -> bool {
    model.policies.values().any(|p| domain.contains(&p.spec.network))
}

/// Flows of one compile unit, merged by (table, priority, match): dimensions several rules
/// share become one flow with each rule's `conjunction` action.
#[derive(Default)]
pub(crate) struct Merged {
    order: Vec<Key>,
    flows: HashMap<Key, Pending>,
}

/// A flow's identity in a switch.
type Key = (Table, u16, Match);

/// A flow being built: its cookie, its actions and the table it goes on to, if any.
struct Pending {
    cookie: u64,
    actions: Vec<Action>,
    goto: Option<u8>,
}

impl Merged {
    fn conj(&mut self, table: Table, prio: u16, m: Match, cookie: u64, a: Action) {
        let key = (table, prio, m);
        match self.flows.get_mut(&key) {
            Some(f) => f.actions.push(a),
            None => {
                self.order.push(key.clone());
                self.flows.insert(key, Pending { cookie, actions: vec![a], goto: None });
            }
        }
    }
    fn single(&mut self, table: Table, prio: u16, m: Match, cookie: u64, actions: Vec<Action>, goto: Option<u8>) {
        let key = (table, prio, m);
        if self.flows.insert(key.clone(), Pending { cookie, actions, goto }).is_none() {
            self.order.push(key);
        }
    }
    pub(crate) fn emit(self, out: &mut Flows) {
        let Merged { order, mut flows } = self;
        for key in order {
            let Some(Pending { cookie, actions, goto }) = flows.remove(&key) else { continue };
            let (table, prio, m) = key;
            out.add_with_cookie(table, prio, m, cookie, |f| {
                let f = if actions.is_empty() { f } else { f.apply(actions) };
                match goto {
                    Some(t) => f.goto(t),
                    None => f,
                }
            });
        }
    }
}

/// The addresses of the endpoints a selector picks in a network, each selector resolved once
/// per compile however many rules name it (policies tend to share a few peer groups).
struct Peers<'a> {
    model: &'a Model,
    resolved: HashMap<(String, String), Vec<IpAddr>>,
}

impl<'a> Peers<'a> {
    fn new(model: &'a Model) -> Peers<'a> {
        Peers { model, resolved: HashMap::new() }
    }

    /// The addresses (IPv4, and IPv6 of dual-stack endpoints) of the endpoints `select`
    /// picks in `network`.
    fn of(&mut self, network: &str, select: &str) -> &[IpAddr] {
        let model = self.model;
        self.resolved.entry((network.to_string(), select.to_string())).or_insert_with(|| {
            let sel = Selector::parse(select).unwrap_or_default();
            let picked = model.endpoints.get(network).into_iter().flat_map(|eps| eps.values()).filter(|e| sel.matches(&e.labels));
            picked.flat_map(|e| std::iter::once(IpAddr::V4(e.ip)).chain(e.ip6.map(IpAddr::V6))).collect()
        })
    }
}

/// `c` less every prefix in `except`, as prefixes: halves of `c` are kept whole or split
/// again, so at most 32 prefixes per exception come out.
fn subtract(c: Cidr, except: &[Cidr], out: &mut BTreeSet<(u32, u32)>) {
    if except.iter().any(|x| x.len <= c.len && x.contains(c.addr)) {
        return;
    }
    if !except.iter().any(|x| x.overlaps(&c)) || c.len >= 32 {
        out.insert((u32::from(c.addr), c.mask()));
        return;
    }
    let len = c.len + 1;
    let lo = Cidr { addr: c.addr, len };
    let hi = Cidr { addr: Ipv4Addr::from(u32::from(c.addr) | (1 << (32 - len))), len };
    subtract(lo, except, out);
    subtract(hi, except, out);
}

/// An inclusive port range as masked prefixes (value, mask).
pub fn port_prefixes(lo: u16, hi: u16) -> Vec<(u16, u16)> {
    let (mut a, hi) = (u32::from(lo), u32::from(hi));
    let mut out = Vec::new();
    while a <= hi {
        let mut size = if a == 0 { 1 << 16 } else { 1u32 << a.trailing_zeros() };
        while a + size - 1 > hi {
            size >>= 1;
        }
        out.push((a as u16, !(size as u16 - 1)));
        a += size;
    }
    out
}

/// The service dimension of a rule in each family of `families`: matches on protocol and
/// destination port; `None` for any packet of those families.
fn service(vni: u32, r: &Rule, families: &[u16]) -> Option<Vec<Match>> {
    let (proto, port_field) = match r.protocol {
        Protocol::Any => return None,
        // ICMP is ICMPv6 in IPv6.
        Protocol::Icmp => return Some(families.iter().map(|eth| base(vni, *eth).with(Field::IpProto, if *eth == ETH_IPV6 { 58u8 } else { 1 })).collect()),
        Protocol::Tcp => (6u8, Field::TcpDst),
        Protocol::Udp => (17u8, Field::UdpDst),
    };
    let ranges = r.port_ranges();
    let mut v: Vec<Match> = Vec::new();
    for eth in families {
        if ranges.is_empty() {
            v.push(base(vni, *eth).with(Field::IpProto, proto));
            continue;
        }
        for (lo, hi) in &ranges {
            for (value, mask) in port_prefixes(*lo, *hi) {
                let m = base(vni, *eth).with(Field::IpProto, proto);
                let m = if mask == u16::MAX { m.with(port_field, value) } else { m.masked(port_field, value, mask) };
                if !v.contains(&m) {
                    v.push(m);
                }
            }
        }
    }
    Some(v)
}

fn base(vni: u32, eth: u16) -> Match {
    Match::new().reg(REG_NETWORK, vni).eth_type(eth)
}

/// One rule of a policy of a network, with what its flows share.
struct RuleRef<'a> {
    policy: &'a Policy,
    egress: bool,
    index: usize,
    rule: &'a Rule,
}

impl RuleRef<'_> {
    fn table(&self) -> Table {
        if self.egress {
            Table::EgressPolicy
        } else {
            Table::IngressPolicy
        }
    }
    fn id(&self) -> u32 {
        conj_id(self.policy.id, self.egress, self.index)
    }
    fn clauses(&self) -> u8 {
        2 + u8::from(self.rule.protocol != Protocol::Any)
    }
    fn conj(&self, clause: u8) -> Action {
        Action::Conjunction { id: self.id(), clause, n_clauses: self.clauses() }
    }
    /// The peer dimension's match for one IPv4 prefix of this rule's peers.
    fn peer_match(&self, vni: u32, addr: u32, mask: u32) -> Match {
        let field = if self.egress { Field::Ipv4Dst } else { Field::Ipv4Src };
        let base = base(vni, ETH_IPV4);
        if mask == u32::MAX {
            base.with(field, addr)
        } else {
            base.masked(field, addr, mask)
        }
    }
    /// The peer dimension's match for one address, of either family.
    fn peer_addr(&self, vni: u32, ip: IpAddr) -> Match {
        match ip {
            IpAddr::V4(a) => self.peer_match(vni, u32::from(a), u32::MAX),
            IpAddr::V6(a) => base(vni, ETH_IPV6).with(if self.egress { Field::Ipv6Dst } else { Field::Ipv6Src }, u128::from(a)),
        }
    }
}

/// Every rule of every policy of `network`.
fn rules_of<'a>(model: &'a Model, network: &'a str) -> impl Iterator<Item = RuleRef<'a>> {
    model.policies.values().filter(move |p| p.spec.network == network).flat_map(|p| {
        [false, true]
            .into_iter()
            .flat_map(move |egress| p.spec.rules(egress).into_iter().flatten().enumerate().map(move |(index, rule)| RuleRef { policy: p, egress, index, rule }))
    })
}

/// The flows a network's policies share on a switch (unit `Policies`): conntrack for the
/// routing domain, each rule's service dimension and decision flow, and the peer prefixes
/// wider than one address (a rule for anyone, CIDRs). They depend on policies and routers
/// only, never on endpoints: an endpoint's own flows are in [`compile_governed`] and
/// [`compile_peer`] units.
pub fn compile_shared(model: &Model, network: &str, vni: u32, domain_id: u32, domain: &BTreeSet<String>, out: &mut Flows) {
    if !tracked(model, domain) {
        return;
    }
    let z = zone(domain_id);
    let fams = families(model, network);
    for o in Origin::ALL {
        let Some(next) = Table::Conntrack.next(o) else { continue };
        for eth in fams {
            let m = Match::new().reg(REG_NETWORK, vni).reg(REG_FROM_TUNNEL, o.reg_value()).eth_type(*eth);
            let ct = Action::Ct(Ct { flags: 0, zone: zone_reg(), table: Some(next.id()), alg: 0, actions: Vec::new() });
            out.add(Table::Conntrack, priority::NETWORK, m, |f| f.apply(vec![Action::set_field(Field::Reg(REG_ZONE), u32::from(z)), ct]));
        }
    }
    let mut merged = Merged::default();
    let unit = out.cookie();
    for r in rules_of(model, network) {
        let (table, prio) = (r.table(), rule_priority(r.rule));
        match cidr_prefixes(r.rule) {
            None if r.rule.peers.is_empty() => {
                for eth in fams {
                    merged.conj(table, prio, base(vni, *eth), unit, r.conj(2));
                }
            }
            None => {}
            Some(v) => {
                for (addr, mask) in v.into_iter().filter(|(_, m)| *m != u32::MAX) {
                    merged.conj(table, prio, r.peer_match(vni, addr, mask), unit, r.conj(2));
                }
            }
        }
        for m in service(vni, r.rule, fams).into_iter().flatten() {
            merged.conj(table, prio, m, unit, r.conj(3));
        }
        let goto = match r.rule.action {
            RuleAction::Allow => table.next(Origin::Local).map(|t| t.id()),
            RuleAction::Deny => None,
        };
        let decide = Match::new().with(Field::ConjId, r.id());
        merged.single(table, prio, decide, rule_cookie(&r.policy.spec.name, r.egress, r.index), Vec::new(), goto);
    }
    merged.emit(out);
}

/// The prefixes of a rule's CIDR peers less their exceptions; `None` if it has none.
fn cidr_prefixes(r: &Rule) -> Option<BTreeSet<(u32, u32)>> {
    let mut v = BTreeSet::new();
    let mut any = false;
    for p in &r.peers {
        if let Some(c) = p.cidr.as_deref().and_then(|c| Cidr::parse(c).ok()) {
            let except: Vec<Cidr> = p.except.iter().filter_map(|e| Cidr::parse(e).ok()).collect();
            subtract(c, &except, &mut v);
            any = true;
        }
    }
    any.then_some(v)
}

/// The flows of one plugged-in endpoint of this switch that policies govern (unit
/// `Governed`): the first dimension of every rule of every policy selecting it, and its
/// default deny in each direction they cover.
pub fn compile_governed(model: &Model, view: &SwitchView, key: &EndpointKey, out: &mut Flows) {
    let selectors = Selectors::of(model, &key.network);
    if let Some(m) = governed(model, view, key, &selectors, out.cookie()) {
        m.emit(out);
    }
}

/// Every governed endpoint's unit on this switch at once, for a full compile (each policy's
/// selector parsed once): the flows of each, with the cookie `cookie_of` gives its unit.
pub(crate) fn compile_governed_all(model: &Model, view: &SwitchView, network: &str, cookie_of: impl Fn(&EndpointKey) -> u64) -> Vec<(EndpointKey, Merged)> {
    let selectors = Selectors::of(model, network);
    view.ports
        .range(EndpointKey::first_in(network)..)
        .take_while(|(k, _)| *k.network == *network)
        .filter_map(|(k, _)| Some((k.clone(), governed(model, view, k, &selectors, cookie_of(k))?)))
        .collect()
}

/// A network's policies with their selectors parsed.
struct Selectors<'a>(Vec<(&'a Policy, Selector)>);

impl<'a> Selectors<'a> {
    fn of(model: &'a Model, network: &str) -> Selectors<'a> {
        Selectors(model.policies.values().filter(|p| p.spec.network == network).map(|p| (p, Selector::parse(&p.spec.select).unwrap_or_default())).collect())
    }
}

fn governed(model: &Model, view: &SwitchView, key: &EndpointKey, selectors: &Selectors<'_>, unit: u64) -> Option<Merged> {
    let port = *view.ports.get(key)?;
    let e = model.endpoints.get(&*key.network).and_then(|m| m.get(&*key.id))?;
    if e.host != view.host {
        return None;
    }
    let mut merged = Merged::default();
    let mut covered = [false, false];
    let fams = families(model, &key.network);
    for (p, _) in selectors.0.iter().filter(|(_, s)| s.matches(&e.labels)) {
        for egress in [false, true] {
            covered[usize::from(egress)] |= p.spec.rules(egress).is_some();
            for (index, rule) in p.spec.rules(egress).into_iter().flatten().enumerate() {
                let r = RuleRef { policy: p, egress, index, rule };
                for eth in fams {
                    merged.conj(r.table(), rule_priority(rule), applied_to(egress, port, *eth).1, unit, r.conj(1));
                }
            }
        }
    }
    for egress in [false, true] {
        if covered[usize::from(egress)] {
            for eth in fams {
                let (table, m) = applied_to(egress, port, *eth);
                merged.single(table, priority::POLICY_DEFAULT_DENY, m, drop_cookie(key, egress), Vec::new(), None);
            }
        }
    }
    (!merged.order.is_empty()).then_some(merged)
}

/// The flows of one peer address of `network`'s policies (unit `PeerAddr`): its second
/// dimension in every rule whose peers include it whole, by selector or by CIDR.
pub fn compile_peer(model: &Model, network: &str, vni: u32, ip: IpAddr, out: &mut Flows) {
    // The endpoints with that address in each network a rule names (at most one each).
    let mut at: HashMap<&str, Option<&plexus_api::Endpoint>> = HashMap::new();
    let mut merged = Merged::default();
    let unit = out.cookie();
    for r in rules_of(model, network) {
        let by_selector = r.rule.peers.iter().filter(|p| p.cidr.is_none()).any(|p| {
            let net = p.network.as_deref().unwrap_or(network);
            let e = *at
                .entry(net)
                .or_insert_with(|| model.endpoints.get(net).and_then(|m| m.values().find(|e| IpAddr::V4(e.ip) == ip || e.ip6.map(IpAddr::V6) == Some(ip))));
            e.is_some_and(|e| Selector::parse(p.select.as_deref().unwrap_or("")).is_ok_and(|s| s.matches(&e.labels)))
        });
        let by_cidr = || match ip {
            IpAddr::V4(a) => cidr_prefixes(r.rule).is_some_and(|v| v.contains(&(u32::from(a), u32::MAX))),
            IpAddr::V6(_) => false,
        };
        // A dual-stack peer's IPv6 address matters only to a network that has IPv6 itself.
        let family = ip.is_ipv4() || families(model, network).contains(&ETH_IPV6);
        if family && (by_selector || by_cidr()) {
            merged.conj(r.table(), rule_priority(r.rule), r.peer_addr(vni, ip), unit, r.conj(2));
        }
    }
    merged.emit(out);
}

/// Every peer address unit of `network`'s policies at once, for a full compile (one pass over
/// the rules, each selector resolved once): the flows of each address, with the cookie
/// `cookie_of` gives its unit.
pub(crate) fn compile_peers(model: &Model, network: &str, vni: u32, cookie_of: impl Fn(IpAddr) -> u64) -> BTreeMap<IpAddr, Merged> {
    let mut out: BTreeMap<IpAddr, Merged> = BTreeMap::new();
    let mut peers = Peers::new(model);
    let v6 = families(model, network).contains(&ETH_IPV6);
    for r in rules_of(model, network) {
        let mut ips: BTreeSet<IpAddr> = BTreeSet::new();
        for p in r.rule.peers.iter().filter(|p| p.cidr.is_none()) {
            ips.extend(peers.of(p.network.as_deref().unwrap_or(network), p.select.as_deref().unwrap_or("")).iter().filter(|ip| v6 || ip.is_ipv4()));
        }
        ips.extend(cidr_prefixes(r.rule).into_iter().flatten().filter(|(_, m)| *m == u32::MAX).map(|(a, _)| IpAddr::V4(Ipv4Addr::from(a))));
        for ip in ips {
            out.entry(ip).or_default().conj(r.table(), rule_priority(r.rule), r.peer_addr(vni, ip), cookie_of(ip), r.conj(2));
        }
    }
    out
}

/// The table of a direction and the match of one governed endpoint's port in it, for packets
/// of Ethernet type `eth`.
fn applied_to(egress: bool, port: u32, eth: u16) -> (Table, Match) {
    if egress {
        (Table::EgressPolicy, Match::new().in_port(port).eth_type(eth))
    } else {
        (Table::IngressPolicy, Match::new().reg(REG_OUT_PORT, port).eth_type(eth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_become_few_masked_prefixes_that_cover_exactly_the_range() {
        for (lo, hi) in [(1u16, 65535u16), (80, 80), (8000, 8080), (1024, 2047), (3, 9), (65535, 65535)] {
            let v = port_prefixes(lo, hi);
            let covers = |p: u16| v.iter().any(|(val, mask)| p & mask == *val);
            for p in [1u16, 2, 79, 80, 81, 1023, 1024, 2047, 2048, 7999, 8000, 8080, 8081, 65534, 65535] {
                assert_eq!(covers(p), (lo..=hi).contains(&p), "{lo}-{hi} at {p}: {v:?}");
            }
            assert!(v.len() <= 32, "{lo}-{hi}: {} prefixes", v.len());
        }
        assert_eq!(port_prefixes(1024, 2047), vec![(1024, 0xfc00)]);
    }

    #[test]
    fn a_cidr_less_its_exceptions_leaves_the_rest() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        let x = [Cidr::parse("10.1.0.0/16").unwrap(), Cidr::parse("10.200.3.4/32").unwrap()];
        let mut v = BTreeSet::new();
        subtract(c, &x, &mut v);
        let inside = |ip: [u8; 4]| v.iter().any(|(a, m)| u32::from(Ipv4Addr::from(ip)) & m == *a);
        assert!(inside([10, 0, 0, 1]) && inside([10, 2, 0, 1]) && inside([10, 200, 3, 5]));
        assert!(!inside([10, 1, 2, 3]) && !inside([10, 200, 3, 4]) && !inside([11, 0, 0, 1]));
        assert!(v.len() <= 64, "{}", v.len());
    }

    #[test]
    fn deny_sits_above_allow_and_lower_numbers_above_higher() {
        let r = |priority, action| Rule { priority, action, ..Rule::allow() };
        assert!(rule_priority(&r(100, RuleAction::Deny)) > rule_priority(&r(100, RuleAction::Allow)));
        assert!(rule_priority(&r(100, RuleAction::Allow)) > rule_priority(&r(101, RuleAction::Deny)));
        assert!(rule_priority(&r(1000, RuleAction::Allow)) > priority::POLICY_DEFAULT_DENY);
        assert!(rule_priority(&r(1, RuleAction::Deny)) < priority::POLICY_ESTABLISHED);
        assert_ne!(conj_id(1, false, 0), conj_id(1, true, 0));
        assert_ne!(conj_id(1, true, 511), conj_id(2, false, 0));
        assert_eq!(zone(65535), 65535);
        assert_eq!(zone(65536), 1);
        assert_ne!(zone(1000), 0);
    }
}
