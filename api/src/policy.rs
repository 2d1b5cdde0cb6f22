//! Policies: which traffic may reach and leave a network's endpoints, in the spirit of
//! Kubernetes' NetworkPolicy, with the deny rules and priorities firewalls have.
//!
//! A policy selects endpoints of one network by their labels. Each direction it lists
//! (`ingress`, `egress`) becomes default-deny for the endpoints it selects; its rules then say
//! what passes (or, with `"action": "deny"`, what never does). Rules of every policy that
//! selects an endpoint are weighed together: the lowest `priority` number first, a deny before
//! an allow of the same priority, and the first rule that matches decides. Endpoints no policy
//! selects, and directions no policy covers, stay open. Replies of an allowed connection pass
//! both ways (connection tracking).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::network::{check_name, Cidr};
use crate::problem::FieldError;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Let the connection through.
    #[default]
    Allow,
    /// Drop it, whatever rules of a later priority say.
    Deny,
}

/// Protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Any IPv4 traffic.
    #[default]
    Any,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP.
    Icmp,
}

/// The other side of a rule: endpoints by labels (in the policy's network or another one), a
/// whole network, or addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Label selector of endpoints (`app=api`, `tier!=web`, `env`, `!debug`, comma-separated
    /// terms that must all hold); all endpoints of the network if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<String>,
    /// The network of the selected endpoints; the policy's own if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// IPv4 addresses instead of endpoints, in CIDR form (IPv6 peers are named by
    /// selector; an IPv6 CIDR is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// Parts of `cidr` left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Allow (the default) or deny.
    #[serde(default)]
    pub action: RuleAction,
    /// 1..=1000, lower first; 500 if absent.
    #[serde(default = "default_priority")]
    #[schema(minimum = 1, maximum = 1000)]
    pub priority: u16,
    /// Who is on the other side (any of these); anyone if empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
    /// Protocol.
    #[serde(default)]
    pub protocol: Protocol,
    /// Destination ports or ranges (`"5432"`, `"8000-8080"`), TCP and UDP only; all if empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
}

fn default_priority() -> u16 {
    Rule::DEFAULT_PRIORITY
}

impl Rule {
    /// The priority of a rule that names none.
    pub const DEFAULT_PRIORITY: u16 = 500;
    /// The highest priority number (evaluated last).
    pub const MAX_PRIORITY: u16 = 1000;

    /// An allow rule for anyone, any protocol.
    pub fn allow() -> Rule {
        Rule { action: RuleAction::Allow, priority: Rule::DEFAULT_PRIORITY, peers: Vec::new(), protocol: Protocol::Any, ports: Vec::new() }
    }

    /// The rule as a firewall line (what `plexus policy` reads and writes):
    /// `allow tcp/5432 from app=api from 10.0.0.0/8 except 10.1.0.0/16 priority 10`.
    pub fn describe(&self, egress: bool) -> String {
        let mut s = format!("{:?} {:?}", self.action, self.protocol).to_lowercase();
        if !self.ports.is_empty() {
            s.push('/');
            s.push_str(&self.ports.join(","));
        }
        for p in &self.peers {
            s.push_str(if egress { " to " } else { " from " });
            match (&p.cidr, &p.select, &p.network) {
                (Some(c), _, _) => {
                    s.push_str(c);
                    for x in &p.except {
                        s.push_str(" except ");
                        s.push_str(x);
                    }
                }
                (None, sel, net) => {
                    s.push_str(sel.as_deref().unwrap_or(""));
                    if let Some(n) = net {
                        s.push('@');
                        s.push_str(n);
                    }
                }
            }
        }
        if self.priority != Rule::DEFAULT_PRIORITY {
            s.push_str(&format!(" priority {}", self.priority));
        }
        s
    }

    /// The rule's port ranges, parsed (validated specs always parse).
    pub fn port_ranges(&self) -> Vec<(u16, u16)> {
        self.ports.iter().filter_map(|p| parse_ports(p).ok()).collect()
    }
}

/// A rule's counters: the new connections (first packets) it decided, on every switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RuleCounters {
    /// `ingress` or `egress`.
    pub direction: String,
    /// The rule's index in its direction.
    pub index: usize,
    /// The rule, as `plexus policy` writes it.
    pub rule: String,
    /// Packets it decided (one per new connection, plus retransmitted openings).
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// An endpoint's drops for want of an allowing rule, in one direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DropCounters {
    /// The endpoint's network.
    pub network: String,
    /// The endpoint.
    pub endpoint: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// Packets dropped.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What a policy did, read from the switches' flow statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyCounters {
    /// The policy.
    pub policy: String,
    /// Each rule's counters.
    pub rules: Vec<RuleCounters>,
    /// Drops of the endpoints it governs (what no rule of any policy allowed).
    pub drops: Vec<DropCounters>,
    /// Switches that answered.
    pub switches: usize,
    /// Switches that did not (their counts are missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unanswered: Vec<String>,
}

/// What a client sends to create or replace a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Name (DNS label).
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)]
    pub name: String,
    /// The network whose endpoints it governs.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)]
    pub network: String,
    /// Label selector of the endpoints it governs; all of the network's if empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub select: String,
    /// Rules for traffic to the selected endpoints. Present (even empty): what no rule
    /// allows is dropped. Absent: this policy leaves ingress alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<Rule>>,
    /// Rules for traffic from the selected endpoints, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<Rule>>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Policy {
    /// The spec.
    #[serde(flatten)]
    pub spec: PolicySpec,
    /// A number the controller gives the policy for as long as it exists: its rules' flows
    /// carry it, so counters and traces find their rule.
    pub id: u32,
    /// Store revision of the last change.
    pub revision: u64,
}

/// Most rules a policy may have in one direction (their ids must fit the flows' numbering).
pub const MAX_RULES: usize = 512;

impl PolicySpec {
    /// Checks what does not depend on other objects.
    pub fn validated(self) -> Result<PolicySpec, FieldError> {
        check_name("name", &self.name)?;
        check_name("network", &self.network)?;
        Selector::parse(&self.select).map_err(|e| FieldError::new("select", e))?;
        if self.ingress.is_none() && self.egress.is_none() {
            return Err(FieldError::new("ingress", "a policy covers ingress, egress or both: give at least one of them (an empty list denies everything)"));
        }
        for (dir, rules) in [("ingress", &self.ingress), ("egress", &self.egress)] {
            let Some(rules) = rules else { continue };
            if rules.len() > MAX_RULES {
                return Err(FieldError::new(dir, format!("at most {MAX_RULES} rules")));
            }
            for (i, r) in rules.iter().enumerate() {
                check_rule(&format!("{dir}[{i}]"), r)?;
            }
        }
        Ok(self)
    }

    /// The rules of one direction with their index, if the policy covers it.
    pub fn rules(&self, egress: bool) -> Option<&[Rule]> {
        if egress {
            self.egress.as_deref()
        } else {
            self.ingress.as_deref()
        }
    }
}

fn check_rule(at: &str, r: &Rule) -> Result<(), FieldError> {
    if !(1..=Rule::MAX_PRIORITY).contains(&r.priority) {
        return Err(FieldError::new(format!("{at}.priority"), format!("{} is not in 1..={}", r.priority, Rule::MAX_PRIORITY)));
    }
    if !r.ports.is_empty() && !matches!(r.protocol, Protocol::Tcp | Protocol::Udp) {
        return Err(FieldError::new(format!("{at}.ports"), format!("ports apply to tcp and udp only, and the protocol is {:?}", r.protocol).to_lowercase()));
    }
    if r.ports.len() > 64 {
        return Err(FieldError::new(format!("{at}.ports"), "at most 64 ports or ranges"));
    }
    for (j, p) in r.ports.iter().enumerate() {
        parse_ports(p).map_err(|e| FieldError::new(format!("{at}.ports[{j}]"), e))?;
    }
    if r.peers.len() > 64 {
        return Err(FieldError::new(format!("{at}.peers"), "at most 64 peers"));
    }
    for (j, p) in r.peers.iter().enumerate() {
        let at = format!("{at}.peers[{j}]");
        match (&p.cidr, &p.select, &p.network) {
            (Some(c), None, None) => {
                if c.contains(':') {
                    return Err(FieldError::new(format!("{at}.cidr"), format!("{c}: IPv6 CIDR peers are not supported yet; name IPv6 peers by select")));
                }
                let cidr = Cidr::parse(c).map_err(|e| FieldError::new(format!("{at}.cidr"), e))?;
                if p.except.len() > 32 {
                    return Err(FieldError::new(format!("{at}.except"), "at most 32 exceptions"));
                }
                for (k, e) in p.except.iter().enumerate() {
                    let x = Cidr::parse(e).map_err(|e| FieldError::new(format!("{at}.except[{k}]"), e))?;
                    if x.len < cidr.len || !cidr.contains(x.addr) {
                        return Err(FieldError::new(format!("{at}.except[{k}]"), format!("{e} is not inside {c}")));
                    }
                }
            }
            (Some(_), _, _) => return Err(FieldError::new(format!("{at}.cidr"), "a peer is either addresses (cidr) or endpoints (select, network), not both")),
            (None, select, network) => {
                if !p.except.is_empty() {
                    return Err(FieldError::new(format!("{at}.except"), "except applies to a cidr peer only"));
                }
                if select.is_none() && network.is_none() {
                    return Err(FieldError::new(at, "a peer needs a cidr, a select or a network"));
                }
                if let Some(s) = select {
                    Selector::parse(s).map_err(|e| FieldError::new(format!("{at}.select"), e))?;
                }
                if let Some(n) = network {
                    check_name(&format!("{at}.network"), n)?;
                }
            }
        }
    }
    Ok(())
}

/// Parses `"80"` or `"8000-8080"` into an inclusive range within 1..=65535.
pub fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let num = |x: &str| -> Result<u16, String> {
        match x.trim().parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            _ => Err(format!("{x:?} is not a port number in 1..=65535")),
        }
    };
    match s.split_once('-') {
        None => num(s).map(|p| (p, p)),
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(format!("{s} is reversed (did you mean {b}-{a}?)"));
            }
            Ok((a, b))
        }
    }
}

/// A label selector: terms that must all hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector(Vec<Term>);

/// One term of a [`Selector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// `key=value`.
    Is(String, String),
    /// `key!=value` (true when the key is absent).
    IsNot(String, String),
    /// `key`: the label is present.
    Has(String),
    /// `!key`: the label is absent.
    HasNot(String),
}

fn check_label_part(what: &str, s: &str, term: &str) -> Result<(), String> {
    let ok = !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(format!("in {term:?}: {what} {s:?} must be 1 to 63 letters, digits, '-', '_', '.' or '/'"))
    }
}

/// Checks endpoint labels: keys and values as selectors can name them, at most 64 labels.
pub fn check_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<(), FieldError> {
    if labels.len() > 64 {
        return Err(FieldError::new(field, "at most 64 labels"));
    }
    for (k, v) in labels {
        let term = format!("{k}={v}");
        check_label_part("key", k, &term).map_err(|e| FieldError::new(format!("{field}.{k}"), e))?;
        check_label_part("value", v, &term).map_err(|e| FieldError::new(format!("{field}.{k}"), e))?;
    }
    Ok(())
}

impl Selector {
    /// Parses `app=db,tier!=web,env,!debug`; the empty string selects everything.
    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(Selector(terms));
        }
        for raw in s.split(',') {
            let t = raw.trim();
            let term = if let Some((k, v)) = t.split_once("!=") {
                Term::IsNot(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once('=') {
                Term::Is(k.trim().into(), v.trim().into())
            } else if let Some(k) = t.strip_prefix('!') {
                Term::HasNot(k.trim().into())
            } else {
                Term::Has(t.into())
            };
            match &term {
                Term::Is(k, v) | Term::IsNot(k, v) => {
                    check_label_part("key", k, t)?;
                    check_label_part("value", v, t)?;
                }
                Term::Has(k) | Term::HasNot(k) => check_label_part("key", k, t)?,
            }
            terms.push(term);
        }
        Ok(Selector(terms))
    }

    /// Whether endpoints with `labels` are selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|t| match t {
            Term::Is(k, v) => labels.get(k) == Some(v),
            Term::IsNot(k, v) => labels.get(k) != Some(v),
            Term::Has(k) => labels.contains_key(k),
            Term::HasNot(k) => !labels.contains_key(k),
        })
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|t| match t {
                Term::Is(k, v) => format!("{k}={v}"),
                Term::IsNot(k, v) => format!("{k}!={v}"),
                Term::Has(k) => k.clone(),
                Term::HasNot(k) => format!("!{k}"),
            })
            .collect();
        if parts.is_empty() {
            f.write_str("(everything)")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selectors_parse_and_match_as_documented() {
        let s = Selector::parse("app=db, tier!=web,env,!debug").unwrap();
        assert!(s.matches(&labels(&[("app", "db"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("env", "prod"), ("tier", "web")])));
        assert!(!s.matches(&labels(&[("app", "db")])), "env must be present");
        assert!(!s.matches(&labels(&[("app", "db"), ("env", "x"), ("debug", "1")])));
        assert!(Selector::parse("").unwrap().matches(&labels(&[])));
        for bad in ["app=", "=db", "a b=c", "app=db,,x", "!"] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn ports_parse_and_bad_ranges_are_named() {
        assert_eq!(parse_ports("5432"), Ok((5432, 5432)));
        assert_eq!(parse_ports("8000-8080"), Ok((8000, 8080)));
        assert!(parse_ports("9000-8000").unwrap_err().contains("reversed"));
        assert!(parse_ports("0").is_err() && parse_ports("65536").is_err() && parse_ports("http").is_err());
    }

    #[test]
    fn bad_policies_name_the_field() {
        let ok = PolicySpec {
            name: "p".into(),
            network: "red".into(),
            select: "app=db".into(),
            ingress: Some(vec![Rule { protocol: Protocol::Tcp, ports: vec!["5432".into()], ..Rule::allow() }]),
            egress: None,
            labels: BTreeMap::new(),
        };
        assert!(ok.clone().validated().is_ok());
        let field = |p: PolicySpec| p.validated().unwrap_err().field;
        assert_eq!(field(PolicySpec { select: "app=".into(), ..ok.clone() }), "select");
        assert_eq!(field(PolicySpec { ingress: None, ..ok.clone() }), "ingress");
        let with = |r: Rule| PolicySpec { ingress: Some(vec![Rule::allow(), r]), ..ok.clone() };
        assert_eq!(field(with(Rule { ports: vec!["80".into()], ..Rule::allow() })), "ingress[1].ports");
        assert_eq!(field(with(Rule { protocol: Protocol::Udp, ports: vec!["9-1".into()], ..Rule::allow() })), "ingress[1].ports[0]");
        assert_eq!(field(with(Rule { priority: 0, ..Rule::allow() })), "ingress[1].priority");
        let peer = |p: Peer| with(Rule { peers: vec![p], ..Rule::allow() });
        assert_eq!(field(peer(Peer { cidr: Some("10.0.0.1/8".into()), ..Peer::default() })), "ingress[1].peers[0].cidr");
        assert_eq!(
            field(peer(Peer { cidr: Some("10.0.0.0/8".into()), except: vec!["11.0.0.0/16".into()], ..Peer::default() })),
            "ingress[1].peers[0].except[0]"
        );
        assert_eq!(field(peer(Peer { select: Some("a=b".into()), except: vec!["10.0.0.0/16".into()], ..Peer::default() })), "ingress[1].peers[0].except");
        assert_eq!(field(peer(Peer::default())), "ingress[1].peers[0]");
        assert_eq!(field(peer(Peer { select: Some("x y".into()), ..Peer::default() })), "ingress[1].peers[0].select");
    }
}
