//! The lab: a set of hosts on one machine. Host `hN` of lab `L` is network namespace
//! `plx-L-hN` with its own `ovsdb-server` and `ovs-vswitchd` (userspace datapath), wired by
//! a veth to the underlay switch, a Linux bridge in namespace `plx-L-ul`.
//!
//! A lab's state lives in `ROOT/L/` (`lab.json` plus one run directory per host), so
//! `plexus lab status` and `plexus lab down` find a lab that another process started. A lab
//! created by a test records the test's pid as owner: [`sweep_stale`] removes labs whose
//! owner has died, so a crashed test leaves nothing behind for long.

pub mod control;
mod daemons;
pub mod dnsmasq;
mod engines;
mod image;
pub mod ovn;
pub mod podman;
mod postmortem;
pub mod probe;
mod sh;
mod waits;
pub mod wire;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use control::{ControlPlane, API_PORT, OPENFLOW_PORT};
pub use daemons::{Daemon, OvsInstance};
mod status;
use sh::{delete_netns, in_ns, ip, tx_offload_off};
pub use status::{LabHostStatus, LabStatus};

/// Where labs keep their state unless `PLEXUS_LAB_ROOT` says otherwise. Short, because unix
/// socket paths (bridge `.mgmt` sockets live here) are limited to 107 bytes.
pub const DEFAULT_ROOT: &str = "/run/plexus";

/// The state root every process on this machine uses. It must be one place: the sweep of
/// namespaces that belong to no lab only knows the labs under it.
pub fn root() -> PathBuf {
    std::env::var_os("PLEXUS_LAB_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
}

/// Prefix of every namespace the lab creates.
pub const NS_PREFIX: &str = "plx-";

/// Lab errors.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A program the lab needs is not installed.
    #[error("{tool} not found: install the Debian package {package} (apt-get install {package})")]
    MissingTool {
        /// Program.
        tool: &'static str,
        /// Package providing it.
        package: &'static str,
    },
    /// Namespaces need root.
    #[error("the lab needs root (network namespaces, veth pairs, Open vSwitch daemons)")]
    NotRoot,
    /// A bad lab or host name or count.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which parameter.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A lab of that name exists already.
    #[error("lab {0} already exists (plexus lab down --name {0} removes it)")]
    Exists(String),
    /// No lab of that name.
    #[error("no lab named {0}")]
    NotFound(String),
    /// A setup command failed.
    #[error("command `{cmd}` failed: {reason}")]
    Command {
        /// The command.
        cmd: String,
        /// Exit status and stderr.
        reason: String,
    },
    /// A file operation failed.
    #[error("{0}")]
    Io(String),
}

/// What to build.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Lab name: 1 to 10 lowercase letters and digits (it is part of every namespace name).
    pub name: String,
    /// Number of hosts (1 to 16).
    pub hosts: usize,
    /// Remove the lab when the [`Lab`] value is dropped, and let [`sweep_stale`] remove it if
    /// this process dies (tests); otherwise it lives until `plexus lab down` (the CLI).
    pub owned: bool,
    /// Start ovs-vswitchd with `--enable-dummy`.
    pub enable_dummy: bool,
    /// Encapsulation the hosts' agents register.
    pub encap: plexus_api::Encap,
    /// Add this machine's own Docker as a host: an OVS instance and an agent with the Docker
    /// plugin in the root namespace.
    pub docker: bool,
    /// Controllers the control plane runs: 1 (in the root namespace) or 3 (a Raft cluster,
    /// each node in a namespace of its own).
    pub controllers: u8,
    /// Run a Docker engine inside every host, served by its agent ([`Lab::start_engine`]).
    pub docker_engines: bool,
}

impl LabConfig {
    /// A lab owned by this process (torn down on drop).
    pub fn owned(name: &str, hosts: usize) -> LabConfig {
        LabConfig {
            name: name.into(),
            hosts,
            owned: true,
            enable_dummy: false,
            encap: plexus_api::Encap::Vxlan,
            docker: false,
            controllers: 1,
            docker_engines: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LabState {
    name: String,
    hosts: usize,
    owner_pid: Option<u32>,
    underlay: [u8; 3],
    enable_dummy: bool,
    #[serde(default)]
    encap: plexus_api::Encap,
    #[serde(default)]
    docker: bool,
    #[serde(default = "one")]
    controllers: u8,
    #[serde(default)]
    docker_engines: bool,
}

fn one() -> u8 {
    1
}

/// One lab host.
#[derive(Debug, Clone)]
pub struct LabHost {
    /// `h1`, `h2`, …
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Its underlay address (on `eth0`, prefix length 24).
    pub underlay_ip: Ipv4Addr,
    /// Its Open vSwitch.
    pub ovs: OvsInstance,
}

impl LabHost {
    /// The OVSDB target for this host's database.
    pub fn ovsdb_target(&self) -> plexus_ovs::ovsdb::Target {
        plexus_ovs::ovsdb::Target::Unix(self.ovs.db_sock())
    }

    /// Runs a command inside the host's namespace; returns stdout, or an error with stderr.
    pub fn exec(&self, args: &[&str]) -> Result<String, LabError> {
        in_ns(&self.netns, args)
    }
}

/// A "container": a namespace with one veth into a lab host.
#[derive(Debug, Clone)]
pub struct Container {
    /// Its namespace (`plx-LAB-NAME`).
    pub netns: String,
    /// The veth end inside the host's namespace (named after the container), to be plugged
    /// into a bridge.
    pub host_if: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC address (on `eth0`).
    pub mac: [u8; 6],
}

/// A running lab.
#[derive(Debug)]
pub struct Lab {
    /// Name.
    pub name: String,
    /// State directory.
    pub dir: PathBuf,
    /// Hosts.
    pub hosts: Vec<LabHost>,
    /// Encapsulation the hosts' agents register.
    pub encap: plexus_api::Encap,
    /// Whether this machine's Docker is one of the lab's hosts ([`Lab::docker_host`]).
    pub docker: bool,
    /// Controllers in the control plane (1 or 3).
    pub controllers: u8,
    /// Whether every host runs a Docker engine of its own.
    pub docker_engines: bool,
    owned: bool,
}

fn check_name(field: &'static str, name: &str, max: usize) -> Result<(), LabError> {
    if name.is_empty() || name.len() > max || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        return Err(LabError::Invalid { field, reason: format!("{name:?} must be 1 to {max} lowercase letters or digits") });
    }
    Ok(())
}

/// The underlay /24 for a lab: derived from its name so that labs differ, inside
/// 100.64.0.0/10 (shared address space) to keep clear of networks people use.
fn underlay_for(name: &str) -> [u8; 3] {
    let h = plexus_api::ids::fnv1a(name);
    [100, 64 + (h % 64) as u8, (h >> 8) as u8]
}

impl Lab {
    /// Builds a lab. On any failure everything built so far is removed again.
    pub fn up(cfg: &LabConfig) -> Result<Lab, LabError> {
        check_name("lab name", &cfg.name, 10)?;
        if cfg.hosts == 0 || cfg.hosts > 16 {
            return Err(LabError::Invalid { field: "hosts", reason: format!("{} is not between 1 and 16", cfg.hosts) });
        }
        sh::check_tools()?;
        let root = root();
        sweep_stale(&root);
        let dir = root.join(&cfg.name);
        if dir.join("lab.json").exists() || netns_of(&cfg.name).next().is_some() {
            return Err(LabError::Exists(cfg.name.clone()));
        }
        std::fs::create_dir_all(&dir).map_err(|e| LabError::Io(format!("create {}: {e}", dir.display())))?;
        let state = LabState {
            name: cfg.name.clone(),
            hosts: cfg.hosts,
            owner_pid: cfg.owned.then(std::process::id),
            underlay: underlay_for(&cfg.name),
            enable_dummy: cfg.enable_dummy,
            encap: cfg.encap,
            docker: cfg.docker,
            controllers: cfg.controllers,
            docker_engines: cfg.docker_engines,
        };
        // The state file goes first: whoever finds our namespaces can then find the owner.
        let json = serde_json::to_vec_pretty(&state).map_err(|e| LabError::Io(e.to_string()))?;
        std::fs::write(dir.join("lab.json"), json).map_err(|e| LabError::Io(format!("write lab.json: {e}")))?;
        let lab = Lab::from_state(&root, state);
        tracing::info!(lab = %lab.name, hosts = cfg.hosts, "building lab");
        match lab.build() {
            Ok(()) => Ok(lab),
            Err(e) => {
                lab.teardown();
                Err(e)
            }
        }
    }

    /// Finds a lab another process built.
    pub fn load(name: &str) -> Result<Lab, LabError> {
        check_name("lab name", name, 10)?;
        let root = root();
        let root = root.as_path();
        let raw = std::fs::read(root.join(name).join("lab.json")).map_err(|_| LabError::NotFound(name.into()))?;
        let state: LabState = serde_json::from_slice(&raw).map_err(|e| LabError::Io(format!("lab.json of {name}: {e}")))?;
        let mut lab = Lab::from_state(root, state);
        // A loaded lab is never torn down by dropping the value that found it.
        lab.owned = false;
        Ok(lab)
    }

    /// Names of the labs.
    pub fn list() -> Vec<String> {
        Self::list_in(&root())
    }

    fn list_in(root: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root)
            .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.path().join("lab.json").exists()).filter_map(|e| e.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    fn from_state(root: &Path, s: LabState) -> Lab {
        let dir = root.join(&s.name);
        let hosts = (1..=s.hosts)
            .map(|i| {
                let name = format!("h{i}");
                let netns = format!("{NS_PREFIX}{}-{name}", s.name);
                LabHost {
                    underlay_ip: Ipv4Addr::new(s.underlay[0], s.underlay[1], s.underlay[2], 10 + i as u8),
                    ovs: OvsInstance { netns: netns.clone(), rundir: dir.join(&name), enable_dummy: s.enable_dummy },
                    name,
                    netns,
                }
            })
            .collect();
        Lab {
            name: s.name,
            dir,
            hosts,
            owned: s.owner_pid.is_some(),
            encap: s.encap,
            docker: s.docker,
            controllers: s.controllers,
            docker_engines: s.docker_engines,
        }
    }

    /// The underlay switch's namespace.
    pub fn underlay_netns(&self) -> String {
        format!("{NS_PREFIX}{}-ul", self.name)
    }

    /// The underlay subnet's prefix length.
    pub fn underlay_prefix_len(&self) -> u8 {
        24
    }

    /// A host by name (`h1`) or 1-based index.
    pub fn host(&self, name: &str) -> Option<&LabHost> {
        self.hosts.iter().find(|h| h.name == name)
    }

    fn build(&self) -> Result<(), LabError> {
        let ul = self.underlay_netns();
        ip(None, &["netns", "add", &ul])?;
        ip(Some(&ul), &["link", "set", "lo", "up"])?;
        ip(Some(&ul), &["link", "add", "br0", "type", "bridge"])?;
        ip(Some(&ul), &["link", "set", "br0", "up"])?;
        for h in &self.hosts {
            ip(None, &["netns", "add", &h.netns])?;
            ip(Some(&h.netns), &["link", "set", "lo", "up"])?;
            // Created inside the underlay namespace, so parallel labs never clash on names.
            ip(Some(&ul), &["link", "add", &h.name, "type", "veth", "peer", "name", "uplink"])?;
            ip(Some(&ul), &["link", "set", "uplink", "netns", &h.netns])?;
            ip(Some(&h.netns), &["link", "set", "uplink", "name", "eth0"])?;
            ip(Some(&ul), &["link", "set", &h.name, "master", "br0"])?;
            ip(Some(&ul), &["link", "set", &h.name, "up"])?;
            let addr = format!("{}/{}", h.underlay_ip, self.underlay_prefix_len());
            ip(Some(&h.netns), &["addr", "add", &addr, "dev", "eth0"])?;
            ip(Some(&h.netns), &["link", "set", "eth0", "up"])?;
            tx_offload_off(&ul, &h.name)?;
            tx_offload_off(&h.netns, "eth0")?;
            h.ovs.start()?;
            tracing::info!(lab = %self.name, host = %h.name, netns = %h.netns, ip = %h.underlay_ip, "host up");
        }
        Ok(())
    }

    /// Creates a container namespace `plx-LAB-NAME` joined to `host` by a veth pair: `eth0`
    /// inside with `ip/24` and MTU `mtu`, and `NAME` in the host namespace, left for the
    /// caller to plug into a bridge. TX offload is off on both ends.
    pub fn add_container(&self, host: &LabHost, name: &str, ip_addr: Ipv4Addr, mtu: u32) -> Result<Container, LabError> {
        self.add_container_with(host, name, ip_addr, 24, None, mtu)
    }

    /// Like [`Lab::add_container`], with the prefix length and the MAC address an endpoint
    /// was given (`aa:bb:cc:dd:ee:ff`). The veth is plumbed over netlink ([`plexus_agent::plumb`]);
    /// TX checksum offload is off on both ends (the lab's switches are userspace).
    pub fn add_container_with(
        &self,
        host: &LabHost,
        name: &str,
        ip_addr: Ipv4Addr,
        prefix_len: u8,
        mac: Option<&str>,
        mtu: u32,
    ) -> Result<Container, LabError> {
        let mac = mac
            .map(|m| plexus_api::Mac::parse("mac", m).map(plexus_api::Mac::octets).map_err(|e| LabError::Invalid { field: "mac", reason: e.to_string() }))
            .transpose()?;
        let netns = self.new_container_netns(name)?;
        let mac = mac.unwrap_or_else(|| plexus_agent::plumb::mac_for(&netns));
        let p = plexus_agent::plumb::Plumbing {
            host_netns: Some(plexus_agent::netns::path(&host.netns)),
            netns: plexus_agent::netns::path(&netns),
            ifname: "eth0".into(),
            host_if: name.to_string(),
            mac,
            ip: ip_addr,
            prefix_len,
            gateway: None,
            v6: None,
            mtu,
            checksum_offload_off: true,
        };
        match plexus_agent::plumb::plumb(&p) {
            Ok(_) => Ok(Container { netns, host_if: name.to_string(), ip: ip_addr, mac }),
            Err(e) => {
                let _ = delete_netns(&netns);
                Err(LabError::Io(format!("plumbing container {name}: {e}")))
            }
        }
    }

    /// A machine on the lab's underlay that is not a Plexus host: namespace `plx-LAB-NAME`
    /// with `eth0` on the underlay switch at the underlay subnet's address `.octet` (the
    /// hosts have .11 and up), no OVS, no agent. What external access and published ports
    /// are tested against.
    pub fn add_outsider(&self, name: &str, octet: u8) -> Result<Container, LabError> {
        let netns = self.new_container_netns(name)?;
        let ul = self.underlay_netns();
        let port = format!("o-{name}");
        let built = (|| {
            ip(Some(&ul), &["link", "add", &port, "type", "veth", "peer", "name", "o-uplink"])?;
            ip(Some(&ul), &["link", "set", "o-uplink", "netns", &netns])?;
            ip(Some(&netns), &["link", "set", "o-uplink", "name", "eth0"])?;
            ip(Some(&ul), &["link", "set", &port, "master", "br0"])?;
            ip(Some(&ul), &["link", "set", &port, "up"])?;
            let o = self.hosts.first().map(|h| h.underlay_ip.octets()).ok_or(LabError::Invalid { field: "hosts", reason: "the lab has no hosts".into() })?;
            let addr = Ipv4Addr::new(o[0], o[1], o[2], octet);
            ip(Some(&netns), &["addr", "add", &format!("{addr}/{}", self.underlay_prefix_len()), "dev", "eth0"])?;
            ip(Some(&netns), &["link", "set", "eth0", "up"])?;
            ip(Some(&netns), &["link", "set", "lo", "up"])?;
            tx_offload_off(&ul, &port)?;
            tx_offload_off(&netns, "eth0")?;
            let mac = plexus_agent::underlay::link_mac(Some(&plexus_agent::netns::path(&netns)), "eth0").map_err(|e| LabError::Io(e.to_string()))?;
            Ok(Container { netns: netns.clone(), host_if: port.clone(), ip: addr, mac })
        })();
        if built.is_err() {
            let _ = delete_netns(&netns);
            let _ = ip(Some(&ul), &["link", "delete", &port]);
        }
        built
    }

    /// Makes the empty namespace `plx-LAB-NAME` of a new container.
    pub(crate) fn new_container_netns(&self, name: &str) -> Result<String, LabError> {
        check_name("container name", name, 12)?;
        let netns = format!("{NS_PREFIX}{}-{name}", self.name);
        ip(None, &["netns", "add", &netns])?;
        Ok(netns)
    }

    /// What `plexus lab status` shows.
    pub fn status(&self) -> LabStatus {
        let running = |tag: &str| {
            std::fs::read_to_string(self.dir.join(format!("{tag}.pid"))).ok().and_then(|s| s.trim().parse::<i32>().ok()).is_some_and(daemons::alive)
        };
        let ctls = (1..=self.controllers).map(|i| self.controller_netns(i));
        let fixed: Vec<String> = self.hosts.iter().map(|h| h.netns.clone()).chain([self.underlay_netns()]).chain(ctls).collect();
        let prefix = format!("{NS_PREFIX}{}-", self.name);
        let mut containers: Vec<String> = netns_of(&self.name).filter(|n| !fixed.contains(n)).map(|n| n[prefix.len()..].to_string()).collect();
        containers.sort();
        LabStatus {
            containers,
            api: (1..=self.controllers.max(1)).any(|i| running(&self.controller_tag(i))).then(|| self.control_plane().api),
            name: self.name.clone(),
            dir: self.dir.display().to_string(),
            // The Docker host (the root namespace, with an OVS of its own) is a host like the
            // others: `plexus host list` shows it, so the lab's status does too.
            hosts: self
                .hosts
                .iter()
                .cloned()
                .chain(self.docker_host())
                .map(|h| LabHostStatus {
                    name: h.name.clone(),
                    netns: h.netns.clone(),
                    underlay_ip: format!("{}/{}", h.underlay_ip, self.underlay_prefix_len()),
                    ovsdb: h.ovsdb_target().to_string(),
                    running: h.ovs.running(),
                })
                .collect(),
        }
    }

    /// Removes everything: daemons (by their pids), namespaces, the state directory.
    pub fn down(mut self) {
        self.teardown();
        self.owned = false;
    }

    fn teardown(&self) {
        tracing::info!(lab = %self.name, "tearing lab down");
        self.stop_control_plane();
        for h in &self.hosts {
            // Engines go after the agents (nothing mirrors networks back) and before their
            // namespaces.
            self.stop_engine(h);
            h.ovs.stop();
        }
        for ns in netns_of(&self.name) {
            if let Err(e) = delete_netns(&ns) {
                tracing::warn!(netns = %ns, error = %e, "could not delete namespace");
            }
        }
        if daemons::is_within(&self.dir, &self.dir.parent().map(Path::to_path_buf).unwrap_or_default()) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.owned {
            if std::thread::panicking() {
                postmortem::report(self);
            }
            self.teardown();
        }
    }
}

/// Namespaces that belong to lab `name`.
fn netns_of(name: &str) -> impl Iterator<Item = String> {
    let prefix = format!("{NS_PREFIX}{name}-");
    plexus_agent::netns::list().into_iter().filter(move |n| n.starts_with(&prefix))
}

/// Removes labs whose owning process has died, and `plx-*` namespaces that belong to no lab
/// at all. Labs owned by live processes (parallel tests) and CLI labs are left alone.
fn sweep_stale(root: &Path) {
    for name in Lab::list_in(root) {
        let Ok(raw) = std::fs::read(root.join(&name).join("lab.json")) else { continue };
        let Ok(state) = serde_json::from_slice::<LabState>(&raw) else { continue };
        if let Some(pid) = state.owner_pid {
            if !daemons::alive(pid as i32) {
                tracing::info!(lab = %name, owner = pid, "removing stale lab of a dead process");
                let mut lab = Lab::from_state(root, state);
                lab.owned = true;
                drop(lab);
            }
        }
    }
    // A lab writes lab.json before it creates anything, so a namespace or link whose lab.json
    // does not exist *now* (not when a list was taken: a lab may be starting meanwhile)
    // belongs to no lab.
    let has_lab = |lab: &str| root.join(lab).join("lab.json").exists();
    // Root-namespace veths into the underlays of labs that are gone.
    if let Ok(out) = std::process::Command::new("ip").args(["-o", "link", "show"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(name) = line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) else { continue };
            if let Some(lab) = name.strip_prefix("pl-") {
                if !has_lab(lab) {
                    tracing::info!(link = %name, "removing the underlay link of no lab");
                    let _ = ip(None, &["link", "del", name]);
                }
            }
        }
    }
    for ns in plexus_agent::netns::list() {
        let Some(rest) = ns.strip_prefix(NS_PREFIX) else { continue };
        let lab = rest.split('-').next().unwrap_or_default();
        if !has_lab(lab) {
            tracing::info!(netns = %ns, "removing namespace of no lab");
            let _ = delete_netns(&ns);
        }
    }
}
