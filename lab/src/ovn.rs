//! OVN beside a lab, as a baseline to measure Plexus against: its northbound and southbound
//! databases, `ovn-northd`, and an `ovn-controller` on every lab host's Open vSwitch. OVN's
//! integration bridge is [`BRIDGE`], so it never touches Plexus's `br-int`. Every daemon runs
//! in the foreground as a child of this process and is ended by its pid when dropped.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::sh::run;
use crate::{LabError, LabHost};

/// OVN's integration bridge on every lab host.
pub const BRIDGE: &str = "br-ovn";

/// Programs OVN needs, with the Debian package of each.
const TOOLS: &[(&str, &str)] = &[("ovn-northd", "ovn-central"), ("ovn-controller", "ovn-host"), ("ovn-nbctl", "ovn-common"), ("ovn-sbctl", "ovn-common")];

const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";
const SB_SCHEMA: &str = "/usr/share/ovn/ovn-sb.ovsschema";

/// How long a daemon may take to come up.
const READY: Duration = Duration::from_secs(20);

/// A running OVN control plane over a lab's hosts.
#[derive(Debug)]
pub struct Ovn {
    dir: PathBuf,
    /// Each daemon's name and process, in the order they started.
    children: Vec<(String, Child)>,
}

impl Ovn {
    /// Starts OVN in `dir` (created) with one chassis per host in `hosts`, each named after
    /// its host and encapsulating with Geneve from its underlay address, and waits until
    /// every chassis has registered.
    pub fn start(dir: &Path, hosts: &[LabHost]) -> Result<Ovn, LabError> {
        crate::sh::require(TOOLS)?;
        std::fs::create_dir_all(dir).map_err(|e| LabError::Io(format!("create {}: {e}", dir.display())))?;
        let mut ovn = Ovn { dir: dir.to_path_buf(), children: Vec::new() };
        for (db, schema) in [("nb", NB_SCHEMA), ("sb", SB_SCHEMA)] {
            let file = dir.join(format!("{db}.db"));
            let _ = std::fs::remove_file(&file);
            run(Command::new("ovsdb-tool").arg("create").arg(&file).arg(schema))?;
            let mut c = Command::new("ovsdb-server");
            c.arg(&file)
                .arg(format!("--remote=punix:{}", ovn.sock(db).display()))
                .arg(format!("--unixctl={}", dir.join(format!("{db}.ctl")).display()))
                .arg(format!("--log-file={}", dir.join(format!("{db}.log")).display()))
                .arg("-vconsole:off");
            ovn.spawn(&format!("ovsdb-server ({db})"), c, dir)?;
            ovn.wait_for(&ovn.sock(db))?;
        }
        ovn.nbctl(&["init"])?;
        run(Command::new("ovn-sbctl").arg(format!("--db=unix:{}", ovn.sock("sb").display())).arg("init"))?;
        let mut c = Command::new("ovn-northd");
        c.arg(format!("--ovnnb-db=unix:{}", ovn.sock("nb").display()))
            .arg(format!("--ovnsb-db=unix:{}", ovn.sock("sb").display()))
            .arg(format!("--unixctl={}", dir.join("northd.ctl").display()))
            .arg(format!("--log-file={}", dir.join("northd.log").display()))
            .arg("-vconsole:off");
        ovn.spawn("ovn-northd", c, dir)?;
        for h in hosts {
            ovn.add_chassis(h)?;
        }
        let t = Instant::now();
        loop {
            let names =
                run(Command::new("ovn-sbctl").arg(format!("--db=unix:{}", ovn.sock("sb").display())).args(["--bare", "--columns=name", "list", "chassis"]))?;
            let names: Vec<&str> = names.split_whitespace().collect();
            if hosts.iter().all(|h| names.contains(&h.name.as_str())) {
                break;
            }
            if t.elapsed() > READY {
                return Err(LabError::Command {
                    cmd: "ovn-controller".into(),
                    reason: format!("chassis registered after {READY:?}: {names:?} (logs in {})", dir.display()),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(ovn)
    }

    /// `--db=` for `ovn-nbctl`.
    fn nb(&self) -> String {
        format!("--db=unix:{}", self.sock("nb").display())
    }

    /// The socket of database `db` (`nb` or `sb`).
    pub fn sock(&self, db: &str) -> PathBuf {
        self.dir.join(format!("{db}.sock"))
    }

    /// Starts a daemon as a child, with `ovs_rundir` as the Open vSwitch run directory it
    /// looks for sockets in.
    fn spawn(&mut self, name: &str, mut c: Command, ovs_rundir: &Path) -> Result<(), LabError> {
        let child = c
            .env("OVS_RUNDIR", ovs_rundir)
            .env("OVN_RUNDIR", &self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| LabError::Command { cmd: name.into(), reason: e.to_string() })?;
        tracing::debug!(daemon = name, pid = child.id(), "OVN daemon started");
        self.children.push((name.to_string(), child));
        Ok(())
    }

    fn wait_for(&mut self, path: &Path) -> Result<(), LabError> {
        let t = Instant::now();
        while !path.exists() {
            let dir = self.dir.display().to_string();
            for (name, c) in self.children.iter_mut() {
                if !matches!(c.try_wait(), Ok(None)) {
                    return Err(LabError::Command { cmd: name.clone(), reason: format!("exited at once (logs in {dir})") });
                }
            }
            if t.elapsed() > READY {
                return Err(LabError::Command { cmd: path.display().to_string(), reason: format!("did not appear within {READY:?}") });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Makes `h` a chassis: OVN's settings in its Open vSwitch, its integration bridge (in
    /// the userspace datapath, as the lab's), and its `ovn-controller`.
    fn add_chassis(&mut self, h: &LabHost) -> Result<(), LabError> {
        let db = format!("--db=unix:{}", h.ovs.db_sock().display());
        let ip: Ipv4Addr = h.underlay_ip;
        run(Command::new("ovs-vsctl").arg(&db).args([
            "--timeout=10",
            "--",
            "--may-exist",
            "add-br",
            BRIDGE,
            "--",
            "set",
            "bridge",
            BRIDGE,
            "datapath_type=netdev",
            "fail_mode=secure",
            "other_config:disable-in-band=true",
            "--",
            "set",
            "open_vswitch",
            ".",
            &format!("external_ids:system-id={}", h.name),
            &format!("external_ids:ovn-remote=unix:{}", self.sock("sb").display()),
            "external_ids:ovn-encap-type=geneve",
            &format!("external_ids:ovn-encap-ip={ip}"),
            &format!("external_ids:ovn-bridge={BRIDGE}"),
            "external_ids:ovn-bridge-datapath-type=netdev",
        ]))?;
        let mut c = Command::new("ovn-controller");
        // (No --unixctl: ovn-controller takes none, and names its socket by its pid.)
        c.arg(format!("unix:{}", h.ovs.db_sock().display()))
            .arg(format!("--log-file={}", self.dir.join(format!("controller-{}.log", h.name)).display()))
            .arg("-vconsole:off");
        // It finds the bridge's OpenFlow socket under OVS_RUNDIR: the host's, not OVN's.
        self.spawn(&format!("ovn-controller ({})", h.name), c, &h.ovs.rundir)
    }

    /// Runs `ovn-nbctl` against the northbound database; returns what it printed.
    pub fn nbctl(&self, args: &[&str]) -> Result<String, LabError> {
        run(Command::new("ovn-nbctl").arg(self.nb()).args(args))
    }

    /// Where the daemons' logs are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Ovn {
    fn drop(&mut self) {
        // The controllers first, the databases last: nothing reconnects in a loop meanwhile.
        for (_, c) in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
