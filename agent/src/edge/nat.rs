//! The host's NAT and forwarding rules for Plexus, as `iptables-restore` input: chains of
//! Plexus's own, replaced whole on every apply (declaring a chain in `iptables-restore
//! --noflush` empties it), and one jump into each from the built-in chain it extends.

use std::io::Write;
use std::process::{Command, Stdio};

use plexus_api::routing::EXTERNAL_PORT;
use plexus_api::HostEdge;

/// Plexus's chains and the built-in chain that jumps to each, by table.
pub(crate) const CHAINS: [(&str, &str, &str); 4] = [
    ("nat", "PREROUTING", "PLEXUS-PREROUTING"),
    ("nat", "OUTPUT", "PLEXUS-OUTPUT"),
    ("nat", "POSTROUTING", "PLEXUS-POSTROUTING"),
    ("filter", "FORWARD", "PLEXUS-FORWARD"),
];

/// The `iptables-restore` input for `edge`.
///
/// Out: what an external network's container sends anywhere but back into the switch is
/// masqueraded to the address of the interface it leaves by (the host's). In: a published
/// port on any of the host's own addresses is forwarded to its endpoint, from outside and
/// from the host itself; a container reaching a published port through its host's address
/// (hairpin) is masqueraded too, so the answer comes back the way it went. Forwarding: what
/// the switch sends the host may leave, never straight back into the switch (that would join
/// routing domains the routers keep apart) unless a published port sent it; into the switch
/// go only answers and published ports.
pub(crate) fn rules(edge: &HostEdge) -> String {
    let ext = EXTERNAL_PORT;
    let mut out = String::from("*nat\n:PLEXUS-PREROUTING - [0:0]\n:PLEXUS-OUTPUT - [0:0]\n:PLEXUS-POSTROUTING - [0:0]\n");
    for p in &edge.published {
        let proto = p.protocol.as_str();
        let to = format!("-p {proto} -m {proto} --dport {} -j DNAT --to-destination {}:{}", p.host_port, p.ip, p.port);
        out.push_str(&format!("-A PLEXUS-PREROUTING -m addrtype --dst-type LOCAL {to}\n"));
        out.push_str(&format!("-A PLEXUS-OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL {to}\n"));
    }
    for s in &edge.external_subnets {
        out.push_str(&format!("-A PLEXUS-POSTROUTING -s {s} ! -o {ext} -j MASQUERADE\n"));
        out.push_str(&format!("-A PLEXUS-POSTROUTING -s {s} -o {ext} -m conntrack --ctstate DNAT -j MASQUERADE\n"));
    }
    out.push_str("COMMIT\n*filter\n:PLEXUS-FORWARD - [0:0]\n");
    out.push_str(&format!("-A PLEXUS-FORWARD -i {ext} -o {ext} -m conntrack ! --ctstate DNAT -j DROP\n"));
    out.push_str(&format!("-A PLEXUS-FORWARD -i {ext} -j ACCEPT\n"));
    out.push_str(&format!("-A PLEXUS-FORWARD -o {ext} -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT\n"));
    out.push_str(&format!("-A PLEXUS-FORWARD -o {ext} -j DROP\n"));
    out.push_str("COMMIT\n");
    out
}

/// Errors of applying the rules.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    /// The tool is not installed.
    #[error("{0} is not installed (Debian: apt-get install iptables)")]
    Missing(&'static str),
    /// The tool refused.
    #[error("{cmd}: {reason}")]
    Failed {
        /// The command.
        cmd: String,
        /// What it said.
        reason: String,
    },
}

/// Where `name` is: the system directories first (a daemon's PATH may lack `/usr/sbin`).
fn tool(name: &str) -> std::path::PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].iter().map(|d| std::path::Path::new(d).join(name)).find(|p| p.exists()).unwrap_or_else(|| name.into())
}

fn run(cmd: &'static str, args: &[&str], stdin: Option<&str>) -> Result<std::process::Output, NatError> {
    let failed = |e: std::io::Error| NatError::Failed { cmd: cmd.into(), reason: e.to_string() };
    let mut c = Command::new(tool(cmd));
    c.args(args).stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| if e.kind() == std::io::ErrorKind::NotFound { NatError::Missing(cmd) } else { failed(e) })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(failed)?;
    }
    child.wait_with_output().map_err(failed)
}

fn refused(cmd: &str, args: &[&str], out: &std::process::Output) -> NatError {
    NatError::Failed { cmd: format!("{cmd} {}", args.join(" ")), reason: String::from_utf8_lossy(&out.stderr).trim().to_string() }
}

/// Whether Plexus's chains exist (an earlier edge made them).
pub(crate) fn present() -> bool {
    run("iptables", &["-w", "-t", "nat", "-S", "PLEXUS-POSTROUTING"], None).is_ok_and(|o| o.status.success())
}

/// Replaces Plexus's chains with `edge`'s rules (atomically per table) and makes sure each
/// built-in chain jumps to its Plexus chain first.
pub(crate) fn apply(edge: &HostEdge) -> Result<(), NatError> {
    let args = ["--noflush", "--wait"];
    let out = run("iptables-restore", &args, Some(&rules(edge)))?;
    if !out.status.success() {
        return Err(refused("iptables-restore", &args, &out));
    }
    for (table, builtin, chain) in CHAINS {
        let check = ["-w", "-t", table, "-C", builtin, "-j", chain];
        // `-C` exits 1 when the rule is missing.
        let out = run("iptables", &check, None)?;
        match out.status.code() {
            Some(0) => continue,
            Some(1) => {}
            _ => return Err(refused("iptables", &check, &out)),
        }
        let insert = ["-w", "-t", table, "-I", builtin, "1", "-j", chain];
        let out = run("iptables", &insert, None)?;
        if !out.status.success() {
            return Err(refused("iptables", &insert, &out));
        }
        tracing::info!(table, chain = builtin, "jump to {chain} added");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_api::{PortProtocol, PublishedTarget};

    #[test]
    fn rules_nat_each_external_subnet_and_forward_each_published_port() {
        let p = PublishedTarget { host_port: 8080, protocol: PortProtocol::Tcp, ip: "10.1.0.5".parse().unwrap(), port: 80, endpoint: "red/a".into() };
        let r = rules(&HostEdge::new(vec!["10.1.0.0/24".into()], vec![p]));
        assert!(r.contains("-A PLEXUS-POSTROUTING -s 10.1.0.0/24 ! -o plx-ext -j MASQUERADE\n"), "{r}");
        assert!(r.contains("-A PLEXUS-PREROUTING -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.1.0.5:80\n"), "{r}");
        assert_eq!(r.matches("COMMIT\n").count(), 2);
        // Nothing external: the chains are declared (so emptied) all the same.
        let empty = rules(&HostEdge::default());
        assert!(!empty.contains("MASQUERADE") && !empty.contains("DNAT --to") && empty.contains(":PLEXUS-POSTROUTING"), "{empty}");
    }
}
