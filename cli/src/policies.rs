//! `plexus policy …`: which traffic may reach and leave a network's endpoints.
//!
//! Rules on the command line read as a firewall line:
//! `[allow|deny] [tcp|udp|icmp|any][/PORTS] [from|to PEER]… [priority N]`, where PORTS is
//! `5432` or `8000-8080,9000` and PEER is a label selector (`app=api`), a selector in another
//! network (`app=api@blue`), a whole network (`@blue`) or a CIDR (`10.0.0.0/8`, optionally
//! followed by `except CIDR`). `none` alone covers the direction with no rule (deny all).

use anyhow::{bail, Context};
use clap::Subcommand;
use plexus_api::{Peer, Policy, PolicySpec, Protocol, Rule, RuleAction};

use crate::resources::{labels, print, ApiOpts};

#[derive(Subcommand)]
pub(crate) enum PolicyCmd {
    /// Create a policy, from flags or from a JSON file (`-` for standard input).
    Create {
        /// Name (DNS label); taken from the file with --file.
        #[arg(required_unless_present = "file")]
        name: Option<String>,
        /// The network whose endpoints it governs.
        #[arg(long, required_unless_present = "file")]
        network: Option<String>,
        /// Label selector of the governed endpoints (default: all of the network's).
        #[arg(long, default_value = "")]
        select: String,
        /// An ingress rule (repeat for more), e.g. "allow tcp/5432 from app=api"; "none"
        /// covers ingress with no rule (everything in is dropped).
        #[arg(long = "ingress")]
        ingress: Vec<String>,
        /// An egress rule (repeat for more), e.g. "allow udp/53 to 10.0.0.0/8"; "none"
        /// covers egress with no rule.
        #[arg(long = "egress")]
        egress: Vec<String>,
        /// Labels of the policy, KEY=VALUE.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Read the whole policy (the API's JSON) from this file instead.
        #[arg(long, conflicts_with_all = ["network", "ingress", "egress"])]
        file: Option<String>,
    },
    /// List policies.
    List,
    /// Show one policy with its rules.
    Show {
        /// Name.
        name: String,
    },
    /// What a policy did: each rule's decisions and its endpoints' drops, from the switches.
    Counters {
        /// Name.
        name: String,
    },
    /// Delete a policy.
    Delete {
        /// Name.
        name: String,
    },
}

/// Parses one command-line rule of direction `egress`.
pub(crate) fn parse_rule(text: &str, egress: bool) -> anyhow::Result<Rule> {
    let (want, other) = if egress { ("to", "from") } else { ("from", "to") };
    let mut r = Rule::allow();
    let mut words = text.split_whitespace().peekable();
    while let Some(w) = words.next() {
        match w {
            "allow" => r.action = RuleAction::Allow,
            "deny" => r.action = RuleAction::Deny,
            "priority" => {
                let n = words.next().context("priority needs a number (1..=1000)")?;
                r.priority = n.parse().with_context(|| format!("priority {n:?} is not a number"))?;
            }
            w if w == want => {
                let p = words.next().with_context(|| format!("{want} needs a peer (app=api, app=api@blue, @blue or a CIDR)"))?;
                let mut peer = parse_peer(p)?;
                while words.peek() == Some(&"except") {
                    words.next();
                    let x = words.next().context("except needs a CIDR")?;
                    if peer.cidr.is_none() {
                        bail!("except follows a CIDR peer only, not {p:?}");
                    }
                    peer.except.push(x.to_string());
                }
                r.peers.push(peer);
            }
            w if w == other => bail!("{} rules name their peers with {want:?}, not {other:?}", if egress { "egress" } else { "ingress" }),
            w => {
                let (proto, ports) = w.split_once('/').map_or((w, None), |(a, b)| (a, Some(b)));
                r.protocol = match proto {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    "icmp" => Protocol::Icmp,
                    "any" => Protocol::Any,
                    _ => bail!("{w:?} is not allow, deny, a protocol (tcp, udp, icmp, any, with /PORTS for tcp and udp), {want} PEER or priority N"),
                };
                if let Some(p) = ports {
                    r.ports = p.split(',').map(str::to_string).collect();
                }
            }
        }
    }
    Ok(r)
}

fn parse_peer(p: &str) -> anyhow::Result<Peer> {
    if p.starts_with(|c: char| c.is_ascii_digit()) && p.contains('/') {
        return Ok(Peer { cidr: Some(p.to_string()), ..Peer::default() });
    }
    let (select, network) = p.split_once('@').map_or((p, None), |(s, n)| (s, Some(n.to_string())));
    if network.as_deref() == Some("") {
        bail!("{p:?}: a network name follows '@'");
    }
    Ok(Peer { select: (!select.is_empty()).then(|| select.to_string()), network, ..Peer::default() })
}

fn rules(v: &[String], egress: bool) -> anyhow::Result<Option<Vec<Rule>>> {
    match v {
        [] => Ok(None),
        [only] if only.trim() == "none" => Ok(Some(Vec::new())),
        _ => {
            let flag = if egress { "--egress" } else { "--ingress" };
            v.iter().map(|t| parse_rule(t, egress).with_context(|| format!("{flag} {t:?}"))).collect::<anyhow::Result<Vec<_>>>().map(Some)
        }
    }
}

fn table(v: &[Policy]) {
    println!("{:<20} {:<16} {:<24} {:<8} {:<8} REV", "NAME", "NETWORK", "SELECT", "INGRESS", "EGRESS");
    let n = |r: &Option<Vec<Rule>>| r.as_ref().map_or("-".to_string(), |r| r.len().to_string());
    for p in v {
        let sel = if p.spec.select.is_empty() { "(all)" } else { &p.spec.select };
        println!("{:<20} {:<16} {:<24} {:<8} {:<8} {}", p.spec.name, p.spec.network, sel, n(&p.spec.ingress), n(&p.spec.egress), p.revision);
    }
}

fn details(p: &Policy) {
    table(std::slice::from_ref(p));
    for egress in [false, true] {
        let Some(rs) = p.spec.rules(egress) else { continue };
        let dir = if egress { "egress" } else { "ingress" };
        println!("{dir}: default deny for what no rule allows");
        for (i, r) in rs.iter().enumerate() {
            println!("  {dir}[{i}]  {}", r.describe(egress));
        }
    }
}

pub(crate) async fn policy(o: ApiOpts, c: PolicyCmd) -> anyhow::Result<()> {
    let api = o.auth.client(&o.api)?;
    match c {
        PolicyCmd::Create { name, network, select, ingress, egress, labels: l, file } => {
            let spec = match file {
                Some(f) => {
                    let text = if f == "-" {
                        std::io::read_to_string(std::io::stdin()).context("reading the policy from standard input")?
                    } else {
                        std::fs::read_to_string(&f).with_context(|| format!("--file {f}"))?
                    };
                    let mut spec: PolicySpec = serde_json::from_str(&text).with_context(|| format!("--file {f}: not a policy"))?;
                    if let Some(n) = name.filter(|n| *n != spec.name) {
                        bail!("the name given ({n}) is not the file's ({})", spec.name);
                    }
                    spec.labels.extend(labels(&l)?);
                    spec
                }
                None => PolicySpec {
                    name: name.unwrap_or_default(),
                    network: network.unwrap_or_default(),
                    select,
                    ingress: rules(&ingress, false)?,
                    egress: rules(&egress, true)?,
                    labels: labels(&l)?,
                },
            };
            if spec.ingress.is_none() && spec.egress.is_none() {
                bail!("give --ingress or --egress (or both): a policy covers at least one direction (\"none\" covers it with no rule)");
            }
            let p = api.create_policy(&spec).await?;
            print(o.output, &p, || details(&p))?;
        }
        PolicyCmd::List => {
            let v = api.policies().await?;
            print(o.output, &v, || table(&v))?;
        }
        PolicyCmd::Show { name } => {
            let p = api.policy(&name).await?;
            print(o.output, &p, || details(&p))?;
        }
        PolicyCmd::Counters { name } => {
            let c = api.policy_counters(&name).await?;
            print(o.output, &c, || {
                println!("{:<10} {:<6} {:>12} {:>14}  RULE", "DIRECTION", "INDEX", "PACKETS", "BYTES");
                for r in &c.rules {
                    println!("{:<10} {:<6} {:>12} {:>14}  {}", r.direction, r.index, r.packets, r.bytes, r.rule);
                }
                println!("{:<10} {:<24} {:>12} {:>14}", "DIRECTION", "DROPPED AT ENDPOINT", "PACKETS", "BYTES");
                for d in &c.drops {
                    println!("{:<10} {:<24} {:>12} {:>14}", d.direction, format!("{}/{}", d.network, d.endpoint), d.packets, d.bytes);
                }
                if !c.unanswered.is_empty() {
                    println!("(switches that did not answer, missing from the counts: {})", c.unanswered.join(", "));
                }
            })?;
        }
        PolicyCmd::Delete { name } => {
            api.delete_policy(&name).await?;
            println!("policy {name} deleted");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_rules_read_as_firewall_lines_and_print_back_the_same() {
        let r = parse_rule("allow tcp/5432,8000-8080 from app=api from @blue from 10.0.0.0/8 except 10.1.0.0/16 priority 10", false).unwrap();
        assert_eq!(r.protocol, Protocol::Tcp);
        assert_eq!(r.ports, ["5432", "8000-8080"]);
        assert_eq!(r.priority, 10);
        assert_eq!(r.peers.len(), 3);
        assert_eq!(r.peers[1].network.as_deref(), Some("blue"));
        assert_eq!(r.peers[2].except, ["10.1.0.0/16"]);
        assert_eq!(parse_rule(&r.describe(false), false).unwrap(), r);
        assert_eq!(parse_rule("deny icmp to app=x@red", true).unwrap().action, RuleAction::Deny);
        assert!(parse_rule("allow tcp/80 to app=x", false).unwrap_err().to_string().contains("\"from\""));
        assert!(parse_rule("allow sctp", false).is_err());
        assert!(parse_rule("allow from app=x except 10.0.0.0/8", false).is_err());
    }
}
