//! What policies did, from the switches' own flow statistics: each rule's decision flow and
//! each governed endpoint's default-deny flow carry a cookie of their own
//! ([`crate::flows::policy`]), so one flow-statistics request per kind and switch, filtered
//! by the cookie's kind byte, reads them all.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

use plexus_api::{DropCounters, Policy, PolicyCounters, RuleCounters, Selector};
use plexus_ovs::openflow::FlowStatsRequest;

use crate::flows::policy::{direction, drop_cookie, rule_cookie};
use crate::flows::CookieKind;
use crate::model::Model;
use crate::switches::SwitchManager;

/// How long one switch may take to answer.
const READ_WAIT: Duration = Duration::from_secs(2);

/// Packets and bytes by cookie, summed over every switch connected to this node.
#[derive(Debug, Default)]
pub struct PolicyStats {
    by_cookie: HashMap<u64, (u64, u64)>,
    /// Switches that answered.
    pub answered: usize,
    /// Datapath ids of those that did not.
    pub unanswered: Vec<String>,
}

impl PolicyStats {
    fn get(&self, cookie: u64) -> (u64, u64) {
        self.by_cookie.get(&cookie).copied().unwrap_or_default()
    }
}

/// Reads the policy flows' statistics from every switch connected to this node.
pub async fn read(mgr: &SwitchManager) -> PolicyStats {
    let mut st = PolicyStats::default();
    for (dpid, conn) in mgr.connections() {
        let mut ok = true;
        for kind in [CookieKind::PolicyRule, CookieKind::PolicyDrop] {
            let req = FlowStatsRequest { cookie: (kind as u64) << 56, cookie_mask: 0xff << 56, ..Default::default() };
            match tokio::time::timeout(READ_WAIT, conn.dump_flows(req)).await {
                Ok(Ok(flows)) => {
                    for f in flows {
                        let e = st.by_cookie.entry(f.cookie).or_default();
                        e.0 += f.packet_count;
                        e.1 += f.byte_count;
                    }
                }
                _ => ok = false,
            }
        }
        if ok {
            st.answered += 1;
        } else {
            st.unanswered.push(dpid);
        }
    }
    st
}

/// The counters of policy `p`: its rules, and the drops of the endpoints it governs.
pub fn policy_counters(model: &Model, p: &Policy, st: &PolicyStats) -> PolicyCounters {
    let mut rules = Vec::new();
    let mut drops = Vec::new();
    for egress in [false, true] {
        let Some(rs) = p.spec.rules(egress) else { continue };
        for (index, r) in rs.iter().enumerate() {
            let (packets, bytes) = st.get(rule_cookie(&p.spec.name, egress, index));
            rules.push(RuleCounters { direction: direction(egress).into(), index, rule: r.describe(egress), packets, bytes });
        }
        let sel = Selector::parse(&p.spec.select).unwrap_or_default();
        for e in model.endpoints.get(&p.spec.network).into_iter().flat_map(|m| m.values()).filter(|e| sel.matches(&e.labels)) {
            let (packets, bytes) = st.get(drop_cookie(&e.key(), egress));
            drops.push(DropCounters { network: e.network.clone(), endpoint: e.id.clone(), direction: direction(egress).into(), packets, bytes });
        }
    }
    PolicyCounters { policy: p.spec.name.clone(), rules, drops, switches: st.answered, unanswered: st.unanswered.clone() }
}

/// The counters of every policy in Prometheus' text format.
pub fn metrics(model: &Model, st: &PolicyStats, out: &mut String) {
    let mut rules = String::new();
    let mut drops = std::collections::BTreeMap::new();
    for p in model.policies.values() {
        let c = policy_counters(model, p, st);
        for r in &c.rules {
            let _ =
                writeln!(rules, "plexus_policy_rule_packets_total{{policy=\"{}\",direction=\"{}\",rule=\"{}\"}} {}", c.policy, r.direction, r.index, r.packets);
        }
        // An endpoint governed by several policies has one drop flow per direction.
        for d in c.drops {
            drops.insert((d.network, d.endpoint, d.direction), d.packets);
        }
    }
    let _ = writeln!(out, "# HELP plexus_policy_rule_packets_total Packets (new connections) a policy rule decided, on the switches connected here.");
    let _ = writeln!(out, "# TYPE plexus_policy_rule_packets_total counter");
    out.push_str(&rules);
    let _ = writeln!(out, "# HELP plexus_policy_drops_total Packets dropped to or from an endpoint because no policy rule allowed them.");
    let _ = writeln!(out, "# TYPE plexus_policy_drops_total counter");
    for ((n, e, d), v) in drops {
        let _ = writeln!(out, "plexus_policy_drops_total{{network=\"{n}\",endpoint=\"{e}\",direction=\"{d}\"}} {v}");
    }
    let _ = writeln!(out, "# HELP plexus_policy_switches_unanswered Switches that did not answer the last read of policy counters.");
    let _ = writeln!(out, "# TYPE plexus_policy_switches_unanswered gauge\nplexus_policy_switches_unanswered {}", st.unanswered.len());
}
