//! One host's Open vSwitch: its own database, sockets and run directory, daemons started
//! inside the host's namespace and stopped by the pids they wrote.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::sh::run;
use super::LabError;

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// The two daemons of one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// `ovsdb-server`.
    OvsdbServer,
    /// `ovs-vswitchd`.
    Vswitchd,
}

impl Daemon {
    fn name(self) -> &'static str {
        match self {
            Daemon::OvsdbServer => "ovsdb-server",
            Daemon::Vswitchd => "ovs-vswitchd",
        }
    }
}

/// Paths of one host's OVS instance.
#[derive(Debug, Clone)]
pub struct OvsInstance {
    /// Network namespace the daemons run in; empty for the root namespace.
    pub netns: String,
    /// Run directory: database, sockets, pid files, logs, bridge `.mgmt` sockets.
    pub rundir: PathBuf,
    /// Start ovs-vswitchd with `--enable-dummy` (for `type=dummy` scale tests).
    pub enable_dummy: bool,
}

impl OvsInstance {
    /// The database socket.
    pub fn db_sock(&self) -> PathBuf {
        self.rundir.join("db.sock")
    }

    /// A bridge's OpenFlow management socket.
    pub fn mgmt_sock(&self, bridge: &str) -> PathBuf {
        self.rundir.join(format!("{bridge}.mgmt"))
    }

    fn pidfile(&self, d: Daemon) -> PathBuf {
        self.rundir.join(format!("{}.pid", d.name()))
    }

    fn env(&self, c: &mut Command) {
        // Everything OVS would put under /var/run, /etc or /var/log goes to this host's own
        // directory, so instances never share a socket or a lock.
        for k in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
            c.env(k, &self.rundir);
        }
    }

    fn daemon_cmd(&self, d: Daemon) -> Command {
        let mut c = if self.netns.is_empty() {
            Command::new(d.name())
        } else {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.netns, d.name()]);
            c
        };
        self.env(&mut c);
        let r = self.rundir.display();
        let common = [
            format!("--pidfile={}", self.pidfile(d).display()),
            format!("--unixctl={r}/{}.ctl", d.name()),
            format!("--log-file={r}/{}.log", d.name()),
            "--detach".into(),
            "--no-chdir".into(),
            "-vconsole:off".into(),
        ];
        match d {
            Daemon::OvsdbServer => {
                c.arg(format!("{r}/conf.db"));
                c.arg(format!("--remote=punix:{}", self.db_sock().display()));
                c.arg("--remote=db:Open_vSwitch,Open_vSwitch,manager_options");
            }
            Daemon::Vswitchd => {
                c.arg(format!("unix:{}", self.db_sock().display()));
                if self.enable_dummy {
                    c.arg("--enable-dummy");
                }
            }
        }
        c.args(common);
        c
    }

    /// Creates the database (if new) and starts both daemons.
    pub fn start(&self) -> Result<(), LabError> {
        std::fs::create_dir_all(&self.rundir).map_err(|e| LabError::Io(format!("create {}: {e}", self.rundir.display())))?;
        let db = self.rundir.join("conf.db");
        if !db.exists() {
            run(Command::new("ovsdb-tool").arg("create").arg(&db).arg(SCHEMA))?;
        }
        self.start_daemon(Daemon::OvsdbServer)?;
        let mut c = Command::new("ovs-vsctl");
        run(c.arg(format!("--db=unix:{}", self.db_sock().display())).args(["--no-wait", "--timeout=10", "init"]))?;
        self.start_daemon(Daemon::Vswitchd)
    }

    /// Starts one daemon (after a crash test, say). `--detach` returns once it is ready.
    pub fn start_daemon(&self, d: Daemon) -> Result<(), LabError> {
        run(&mut self.daemon_cmd(d))?;
        tracing::debug!(netns = %self.netns, daemon = d.name(), pid = ?self.pid(d), "started");
        Ok(())
    }

    /// The pid a daemon wrote, if it is alive.
    pub fn pid(&self, d: Daemon) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.pidfile(d)).ok()?.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }

    /// Sends `signal` to a daemon and, for terminating signals, waits until it is gone
    /// (escalating to SIGKILL after 5 s). Returns whether it was running.
    pub fn signal(&self, d: Daemon, signal: i32) -> bool {
        let Some(pid) = self.pid(d) else { return false };
        kill(pid, signal);
        if signal == libc::SIGSTOP || signal == libc::SIGCONT {
            return true;
        }
        if !wait_gone(pid, Duration::from_secs(5)) {
            kill(pid, libc::SIGKILL);
            wait_gone(pid, Duration::from_secs(5));
        }
        let _ = std::fs::remove_file(self.pidfile(d));
        true
    }

    /// Stops both daemons.
    pub fn stop(&self) {
        // A stopped (SIGSTOP) daemon would never see SIGTERM.
        for d in [Daemon::Vswitchd, Daemon::OvsdbServer] {
            if let Some(pid) = self.pid(d) {
                kill(pid, libc::SIGCONT);
            }
            self.signal(d, libc::SIGTERM);
        }
    }

    /// Runs an `ovs-appctl` command against this instance's `ovs-vswitchd` (for example
    /// `tnl/neigh/show`) and returns what it printed.
    pub fn appctl(&self, args: &[&str]) -> Result<String, LabError> {
        let ctl = self.rundir.join(format!("{}.ctl", Daemon::Vswitchd.name()));
        run(Command::new("ovs-appctl").arg("-t").arg(ctl).args(args))
    }

    /// Whether both daemons run.
    pub fn running(&self) -> bool {
        self.pid(Daemon::OvsdbServer).is_some() && self.pid(Daemon::Vswitchd).is_some()
    }
}

/// Whether a process exists (and is not a zombie).
pub(crate) fn alive(pid: i32) -> bool {
    // Every thread, not only the first: a killed process's main thread is a zombie while
    // others are still exiting with its files (a store's lock) open.
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|t| {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else { return false };
        // The state follows the parenthesized command name.
        !matches!(stat.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next()), Some('Z') | Some('X') | None)
    })
}

pub(crate) fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid we read from our own pid file; at worst it fails with ESRCH.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !alive(pid)
}

/// Whether the path is inside `dir` (guards recursive removal).
pub(crate) fn is_within(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir) && path != dir
}
