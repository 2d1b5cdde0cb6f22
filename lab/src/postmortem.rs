//! What a failed test leaves behind: when a lab is dropped while its owner panics, the tail of
//! every daemon's log and each switch's flows go to stderr before the lab is removed, so a CI
//! failure can be read from the test's output alone.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;

use super::Lab;

/// Lines kept from the end of each log.
const TAIL: usize = 40;
/// Flows printed per switch.
const FLOWS: usize = 80;

/// Prints the lab's logs and flows to stderr.
pub(super) fn report(lab: &Lab) {
    eprintln!("==== post-mortem of lab {} ({})", lab.name, lab.dir.display());
    let mut logs = Vec::new();
    collect_logs(&lab.dir, 0, &mut logs);
    logs.sort();
    for log in logs {
        eprintln!("---- last {TAIL} lines of {}", log.display());
        for line in tail(&log, TAIL) {
            eprintln!("{line}");
        }
    }
    for h in &lab.hosts {
        let sock = h.ovs.mgmt_sock(super::wire::BR_INT);
        let out = Command::new("ovs-ofctl").args(["-O", "OpenFlow13", "--names", "dump-flows"]).arg(format!("unix:{}", sock.display())).output();
        match out {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout);
                let n = text.lines().count();
                eprintln!("---- {} br-int: {n} flow lines{}", h.name, if n > FLOWS { format!(", first {FLOWS}") } else { String::new() });
                for line in text.lines().take(FLOWS) {
                    eprintln!("{line}");
                }
                if !o.status.success() {
                    eprintln!("ovs-ofctl: {}", String::from_utf8_lossy(&o.stderr).trim());
                }
            }
            Err(e) => eprintln!("---- {}: ovs-ofctl did not run: {e}", h.name),
        }
        // Where this switch sends tunnel packets: a wrong MAC here drops them all.
        match h.ovs.appctl(&["tnl/neigh/show"]) {
            Ok(t) => eprintln!("---- {} tunnel neighbours\n{}", h.name, t.trim_end()),
            Err(e) => eprintln!("---- {} tunnel neighbours: {e}", h.name),
        }
    }
    eprintln!("==== end of post-mortem of lab {}", lab.name);
}

fn collect_logs(dir: &Path, depth: u32, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() && depth < 2 {
            collect_logs(&p, depth + 1, out);
        } else if p.extension().is_some_and(|x| x == "log") {
            out.push(p);
        }
    }
}

/// The last `n` lines of a file, reading at most its final 256 KiB.
pub(crate) fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else { return vec![] };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(256 * 1024)));
    let lines: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}
