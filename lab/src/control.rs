//! A lab's control plane: a controller in the root namespace, joined to the lab's underlay
//! by a veth (so both the agents and the user's shell reach it), and an agent in every host
//! namespace. They run as `plexus` processes whose pids the lab records and ends at `down`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::sh::{delete_netns, ip, tx_offload_off};
use super::waits::{wait_ready, wait_registered};
use super::{daemons, Lab, LabError};

/// Port of the controller's API.
pub const API_PORT: u16 = 6543;
/// The admin token's file in the lab's PKI directory (as a controller names it).
const ADMIN_TOKEN_FILE: &str = "admin.token";
/// Port of the controller's cluster port (Raft, membership; mutual TLS).
pub const CLUSTER_PORT: u16 = 6545;
/// Port switches connect to.
pub const OPENFLOW_PORT: u16 = 6653;
/// The Docker host's name.
pub const DOCKER_HOST: &str = "docker";
/// Where Docker discovers plugins.
pub const PLUGIN_DIR: &str = "/run/docker/plugins";
/// The physical network every lab agent maps to its host's underlay link.
pub const LAB_PHYSNET: &str = "physnet1";

/// Where the control plane answers.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// API URL (reachable from the root namespace and from every host).
    pub api: String,
    /// OpenFlow target the switches use.
    pub openflow: String,
    /// The cluster's CA certificate, which the API's certificate chains to.
    pub ca: PathBuf,
    /// The file holding an admin token.
    pub admin_token: PathBuf,
}

impl ControlPlane {
    /// What an admin's client presents and trusts.
    pub fn credentials(&self) -> Result<plexus_api::Credentials, plexus_api::ClientError> {
        let token = std::fs::read_to_string(&self.admin_token)
            .map_err(|e| plexus_api::ClientError::Credentials(format!("admin token {}: {e}", self.admin_token.display())))?;
        plexus_api::Credentials::from_files(Some(&self.ca), Some(&token))
    }

    /// An admin's client of every node's API.
    pub fn client(&self) -> Result<plexus_api::Client, plexus_api::ClientError> {
        self.client_for(&self.api)
    }

    /// An admin's client of the API at `urls` (some of the nodes, say).
    pub fn client_for(&self, urls: &str) -> Result<plexus_api::Client, plexus_api::ClientError> {
        plexus_api::Client::new(urls, &self.credentials()?)
    }

    /// An admin's raw HTTP client (for what the typed client does not cover).
    pub fn http(&self) -> Result<reqwest::Client, plexus_api::ClientError> {
        self.credentials()?.http()?.build().map_err(|e| plexus_api::ClientError::Credentials(e.to_string()))
    }

    /// The environment the CLI takes this control plane and an admin's credentials from.
    pub fn envs(&self) -> Result<Vec<(&'static str, String)>, plexus_api::ClientError> {
        let token = self.credentials()?.token.unwrap_or_default();
        Ok(vec![("PLEXUS_API", self.api.clone()), ("PLEXUS_CA", self.ca.display().to_string()), ("PLEXUS_TOKEN", token)])
    }

    /// The lines a shell needs to use this control plane with the CLI.
    pub fn exports(&self) -> Result<String, plexus_api::ClientError> {
        Ok(self.envs()?.iter().map(|(k, v)| format!("export {k}={v}")).collect::<Vec<_>>().join("\n"))
    }
}

impl Lab {
    /// The controller's address: `.1` of the underlay.
    pub fn controller_ip(&self) -> Ipv4Addr {
        let o = self.hosts[0].underlay_ip.octets();
        Ipv4Addr::new(o[0], o[1], o[2], 1)
    }

    /// The root-namespace end of the veth into the underlay.
    pub fn root_link(&self) -> String {
        format!("pl-{}", self.name)
    }

    fn spawn(&self, ns: Option<&str>, tag: &str, plexus: &Path, args: &[String]) -> Result<(), LabError> {
        let log = std::fs::File::create(self.dir.join(format!("{tag}.log"))).map_err(|e| LabError::Io(e.to_string()))?;
        let mut c = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(plexus);
                c
            }
            None => Command::new(plexus),
        };
        let child = c
            .args(args)
            // PLEXUS_LAB_LOG gives the lab's daemons another log filter (e.g. to debug one).
            .env("PLEXUS_LOG", std::env::var("PLEXUS_LAB_LOG").unwrap_or_else(|_| "info,openraft=warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| LabError::Command { cmd: format!("{} {args:?}", plexus.display()), reason: e.to_string() })?;
        // `ip netns exec` execs the program: the pid is plexus's own.
        std::fs::write(self.dir.join(format!("{tag}.pid")), child.id().to_string()).map_err(|e| LabError::Io(e.to_string()))?;
        tracing::info!(lab = %self.name, %tag, pid = child.id(), "started");
        Ok(())
    }

    /// Starts the control plane with the `plexus` binary at `plexus`; returns once the API
    /// answers.
    pub fn start_control_plane(&self, plexus: &Path) -> Result<ControlPlane, LabError> {
        self.make_pki()?;
        let (ul, link, ctl) = (self.underlay_netns(), self.root_link(), self.controller_ip());
        ip(Some(&ul), &["link", "add", "root", "type", "veth", "peer", "name", &link])?;
        ip(Some(&ul), &["link", "set", &link, "netns", "1"])?;
        ip(Some(&ul), &["link", "set", "root", "master", "br0"])?;
        ip(Some(&ul), &["link", "set", "root", "up"])?;
        ip(None, &["addr", "add", &format!("{ctl}/{}", self.underlay_prefix_len()), "dev", &link])?;
        ip(None, &["link", "set", &link, "up"])?;
        tx_offload_off(&ul, "root")?;
        if self.controllers > 1 {
            self.controller_namespaces()?;
        }
        self.start_controller(plexus)?;
        if self.docker_engines {
            // An engine takes seconds to start: all at once.
            std::thread::scope(|sc| {
                let started: Vec<_> = self.hosts.iter().map(|h| sc.spawn(move || self.start_engine(h))).collect();
                started.into_iter().try_for_each(|t| t.join().unwrap_or_else(|_| Err(LabError::Io("starting an engine panicked".into()))))
            })?;
        }
        for h in &self.hosts {
            self.start_agent(&h.name, plexus)?;
        }
        if self.docker {
            self.start_docker_host(plexus)?;
        }
        // Usable means every host's agent has registered: a `lab run` right after must find
        // its host.
        let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
        let cp = self.control_plane();
        wait_registered(SocketAddr::new(self.controller_ips().first().copied().unwrap_or(ctl).into(), API_PORT), &cp, &names)?;
        self.wait_tunnels_seeded();
        Ok(cp)
    }

    /// The Docker host: this machine's root namespace, with an OVS instance of its own (run
    /// directory in the lab's) and an agent serving Docker's plugin protocols. It shares the
    /// controller's link into the underlay: its `br-phy` takes that link and the `.1`
    /// address, so the root namespace keeps one way into the underlay.
    pub fn docker_host(&self) -> Option<super::LabHost> {
        self.docker.then(|| super::LabHost {
            name: DOCKER_HOST.into(),
            netns: String::new(),
            underlay_ip: self.controller_ip(),
            ovs: super::OvsInstance { netns: String::new(), rundir: self.dir.join(DOCKER_HOST), enable_dummy: false },
        })
    }

    /// The Docker host agent's arguments (after `plexus`), for running it as a process or
    /// as a container.
    pub fn docker_agent_args(&self) -> Result<Vec<String>, LabError> {
        let h = self.docker_host().ok_or_else(|| LabError::Invalid { field: "docker", reason: "not a Docker lab".into() })?;
        let mut args = self.agent_args(&h, &self.root_link())?;
        args.extend([
            "--docker".into(),
            "--docker-plugin-dir".into(),
            PLUGIN_DIR.into(),
            "--state-dir".into(),
            self.dir.join("docker-agent").display().to_string(),
        ]);
        Ok(args)
    }

    /// The arguments every lab agent runs with: its host, the control plane, its switch, its
    /// underlay interface, the lab's encapsulation.
    fn agent_args(&self, h: &super::LabHost, underlay_iface: &str) -> Result<Vec<String>, LabError> {
        let cp = self.control_plane();
        // As on a real host: the agent has its own PKI directory with only the cluster's CA
        // certificate, and a one-time bootstrap token (an hour) it trades on first start for
        // its agent token and switch certificate. No host sees the CA's key.
        let err = |e: plexus_pki::PkiError| LabError::Io(e.to_string());
        let key = plexus_pki::TokenKey::open(&self.pki_dir()).map_err(err)?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let token = key.issue_until(&plexus_pki::Role::Bootstrap(h.name.clone()), Some(now + 3600)).map_err(err)?;
        let pki = self.agent_pki_dir(h);
        std::fs::create_dir_all(&pki).map_err(|e| LabError::Io(format!("{}: {e}", pki.display())))?;
        std::fs::copy(self.pki_dir().join("ca.crt"), pki.join("ca.crt")).map_err(|e| LabError::Io(format!("the lab's CA certificate: {e}")))?;
        Ok(vec![
            "agent".to_string(),
            "--name".into(),
            h.name.clone(),
            "--controller".into(),
            cp.api,
            "--openflow".into(),
            cp.openflow,
            "--ovsdb".into(),
            format!("unix:{}", h.ovs.db_sock().display()),
            "--tunnel-ip".into(),
            format!("{}/{}", h.underlay_ip, self.underlay_prefix_len()),
            "--datapath-type".into(),
            "netdev".into(),
            "--underlay-iface".into(),
            underlay_iface.into(),
            // Underlay networks on `physnet1` leave through the host's underlay link.
            "--bridge-mapping".into(),
            format!("{LAB_PHYSNET}={underlay_iface}"),
            "--heartbeat".into(),
            "2".into(),
            "--encap".into(),
            plexus_agent::agent::encap_name(self.encap).into(),
            "--pki-dir".into(),
            pki.display().to_string(),
            "--bootstrap-token".into(),
            token,
            // The lab's stand-in for the outside world's resolvers: the underlay's .1 (serve
            // something there, e.g. dnsmasq, to resolve names outside Plexus).
            "--dns-upstream".into(),
            self.controller_ip().to_string(),
        ])
    }

    /// Host `h`'s agent's PKI directory: the cluster's CA certificate, and what its bootstrap
    /// brought (its agent token, its switch certificate).
    pub fn agent_pki_dir(&self, h: &super::LabHost) -> PathBuf {
        h.ovs.rundir.join("pki")
    }

    /// The lab cluster's CA, token key and admin token, made before any node starts (the
    /// lab then knows them without waiting for a node).
    fn make_pki(&self) -> Result<(), LabError> {
        let dir = self.pki_dir();
        let err = |e: plexus_pki::PkiError| LabError::Io(e.to_string());
        plexus_pki::Ca::open_or_create(&dir).map_err(err)?;
        let key = plexus_pki::TokenKey::open_or_create(&dir).map_err(err)?;
        let admin = dir.join(ADMIN_TOKEN_FILE);
        if !admin.exists() {
            plexus_pki::write_secret(&admin, &key.issue(&plexus_pki::Role::Admin).map_err(err)?).map_err(err)?;
        }
        Ok(())
    }

    fn start_docker_host(&self, plexus: &Path) -> Result<(), LabError> {
        let sock = plexus_agent::docker::plugin_socket(Path::new(PLUGIN_DIR));
        if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
            return Err(LabError::Invalid {
                field: "docker",
                reason: format!("another Plexus agent serves Docker on {} (one lab with --docker at a time)", sock.display()),
            });
        }
        let out = Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .map_err(|e| LabError::Command { cmd: "docker version".into(), reason: format!("{e} (install docker.io)") })?;
        if !out.status.success() {
            return Err(LabError::Command {
                cmd: "docker version".into(),
                reason: format!("no Docker engine answers: {} (start dockerd)", String::from_utf8_lossy(&out.stderr).trim()),
            });
        }
        let h = self.docker_host().ok_or_else(|| LabError::Invalid { field: "docker", reason: "not a Docker lab".into() })?;
        h.ovs.start()?;
        self.start_docker_agent(plexus)
    }

    /// Starts (or restarts) the Docker host's agent; returns once it serves the plugin socket.
    pub fn start_docker_agent(&self, plexus: &Path) -> Result<(), LabError> {
        let sock = plexus_agent::docker::plugin_socket(Path::new(PLUGIN_DIR));
        let _ = std::fs::remove_file(&sock);
        let args = self.docker_agent_args()?;
        self.spawn(None, &format!("agent-{DOCKER_HOST}"), plexus, &args)?;
        self.wait_plugin()
    }

    /// Waits until something serves the plugin socket.
    pub fn wait_plugin(&self) -> Result<(), LabError> {
        let sock = plexus_agent::docker::plugin_socket(Path::new(PLUGIN_DIR));
        let t = Instant::now();
        // The agent registers and sets up its switch before it serves Docker; on a box loaded
        // by earlier work that can take a while.
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if t.elapsed() > Duration::from_secs(45) {
                // The lab's directory goes with the lab: say here what the agent said.
                let log = super::postmortem::tail(&self.dir.join(format!("agent-{DOCKER_HOST}.log")), 15).join("\n  ");
                return Err(LabError::Io(format!("the Docker host's agent did not serve {} within 45 s; the end of its log:\n  {log}", sock.display())));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Gives Docker back as it was: every network of the Plexus driver goes (its containers
    /// disconnected first), with the controller already stopped so that nothing mirrors
    /// them back.
    fn clean_docker(&self) {
        let docker = |args: &[&str]| {
            Command::new("docker")
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        for net in docker(&["network", "ls", "-q", "--filter", "driver=plexus"]).split_whitespace() {
            for c in docker(&["network", "inspect", "-f", "{{range $k, $v := .Containers}}{{$k}} {{end}}", net]).split_whitespace() {
                docker(&["network", "disconnect", "-f", net, c]);
            }
            docker(&["network", "rm", net]);
        }
    }

    /// The lab cluster's PKI directory (its CA, the nodes' certificates).
    pub fn pki_dir(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// Where the control plane answers: every node's API (comma-separated, as clients take
    /// them) and OpenFlow target.
    pub fn control_plane(&self) -> ControlPlane {
        let ips = self.controller_ips();
        ControlPlane {
            api: ips.iter().map(|ip| format!("https://{ip}:{API_PORT}")).collect::<Vec<_>>().join(","),
            openflow: ips.iter().map(|ip| format!("ssl:{ip}:{OPENFLOW_PORT}")).collect::<Vec<_>>().join(","),
            ca: self.pki_dir().join("ca.crt"),
            admin_token: self.pki_dir().join(ADMIN_TOKEN_FILE),
        }
    }

    /// The controllers' addresses: `.1` in the root namespace for one controller; `.2`, `.3`,
    /// `.4` in namespaces of their own (so their traffic can be cut) for three.
    pub fn controller_ips(&self) -> Vec<Ipv4Addr> {
        if self.controllers <= 1 {
            return vec![self.controller_ip()];
        }
        let o = self.hosts[0].underlay_ip.octets();
        (1..=self.controllers).map(|i| Ipv4Addr::new(o[0], o[1], o[2], 1 + i)).collect()
    }

    /// Controller `i`'s (1-based) namespace in a clustered lab.
    pub fn controller_netns(&self, i: u8) -> String {
        format!("{}{}-ctl-{i}", super::NS_PREFIX, self.name)
    }

    /// The pid-file tag of controller `i` (1-based): `controller` alone, `controller-I` in a
    /// cluster.
    pub fn controller_tag(&self, i: u8) -> String {
        if self.controllers <= 1 {
            "controller".into()
        } else {
            format!("controller-{i}")
        }
    }

    /// Starts (or restarts) every controller from its data directory; returns once each
    /// answers.
    pub fn start_controller(&self, plexus: &Path) -> Result<(), LabError> {
        // All first, then wait: a cluster's first node has no leader until a majority runs.
        for i in 1..=self.controllers.max(1) {
            self.spawn_controller_node(i, plexus)?;
        }
        for ip in self.controller_ips() {
            wait_ready(SocketAddr::new(ip.into(), API_PORT), &self.control_plane())?;
        }
        Ok(())
    }

    /// Starts (or restarts) controller `i` (1-based); returns once it answers with a leader
    /// known and its state applied.
    pub fn start_controller_node(&self, i: u8, plexus: &Path) -> Result<(), LabError> {
        let ip = self.spawn_controller_node(i, plexus)?;
        wait_ready(SocketAddr::new(ip.into(), API_PORT), &self.control_plane())
    }

    fn spawn_controller_node(&self, i: u8, plexus: &Path) -> Result<Ipv4Addr, LabError> {
        let ips = self.controller_ips();
        let ip = *ips.get(usize::from(i) - 1).ok_or_else(|| LabError::Invalid { field: "controller", reason: format!("no controller {i}") })?;
        // One CA for the lab's cluster: the first node to start makes it in the lab's
        // directory, and every node's certificate comes from it.
        let mut args = vec![
            "controller".to_string(),
            "--listen".into(),
            format!("{ip}:{API_PORT}"),
            "--cluster-listen".into(),
            format!("{ip}:{CLUSTER_PORT}"),
            "--openflow-listen".into(),
            format!("{ip}:{OPENFLOW_PORT}"),
            "--pki-dir".into(),
            self.pki_dir().display().to_string(),
        ];
        if self.controllers <= 1 {
            args.extend(["--data-dir".into(), self.dir.join("controller").display().to_string()]);
            self.spawn(None, "controller", plexus, &args)?;
        } else {
            let peers = ips.iter().enumerate().map(|(k, a)| format!("{}={a}:{CLUSTER_PORT}", k + 1)).collect::<Vec<_>>().join(",");
            args.extend([
                "--id".into(),
                i.to_string(),
                "--peers".into(),
                peers,
                "--data-dir".into(),
                self.dir.join(format!("controller-{i}")).display().to_string(),
            ]);
            self.spawn(Some(&self.controller_netns(i)), &self.controller_tag(i), plexus, &args)?;
        }
        Ok(ip)
    }

    /// Makes the namespaces of a clustered lab's controllers, each joined to the underlay.
    fn controller_namespaces(&self) -> Result<(), LabError> {
        let ul = self.underlay_netns();
        for (k, addr) in self.controller_ips().into_iter().enumerate() {
            let i = k as u8 + 1;
            let ns = self.controller_netns(i);
            let peer = format!("ctl{i}");
            ip(None, &["netns", "add", &ns])?;
            ip(Some(&ul), &["link", "add", &peer, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(Some(&ul), &["link", "set", &peer, "master", "br0"])?;
            ip(Some(&ul), &["link", "set", &peer, "up"])?;
            ip(Some(&ns), &["addr", "add", &format!("{addr}/{}", self.underlay_prefix_len()), "dev", "eth0"])?;
            ip(Some(&ns), &["link", "set", "eth0", "up"])?;
            ip(Some(&ns), &["link", "set", "lo", "up"])?;
            tx_offload_off(&ul, &peer)?;
            tx_offload_off(&ns, "eth0")?;
        }
        Ok(())
    }

    /// Starts (or restarts) the agent of host `name`.
    pub fn start_agent(&self, name: &str, plexus: &Path) -> Result<(), LabError> {
        let h = self.host(name).ok_or_else(|| LabError::Invalid { field: "host", reason: format!("no host {name}") })?;
        let mut args = self.agent_args(h, "eth0")?;
        if self.docker_engines {
            args.extend(self.engine_agent_args(h));
        }
        self.spawn(Some(&h.netns), &format!("agent-{name}"), plexus, &args)
    }

    /// Kills a control-plane process (`controller` or `agent-hN`) with `signal`, by its
    /// recorded pid; returns whether it ran.
    pub fn signal_process(&self, tag: &str, signal: i32) -> bool {
        let p = self.dir.join(format!("{tag}.pid"));
        let Some(pid) = std::fs::read_to_string(&p).ok().and_then(|s| s.trim().parse::<i32>().ok()) else { return false };
        if !daemons::alive(pid) {
            return false;
        }
        daemons::kill(pid, signal);
        let t = Instant::now();
        while signal == libc::SIGKILL && daemons::alive(pid) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Ends the control plane's processes (by their recorded pids) and removes the veth.
    pub(crate) fn stop_control_plane(&self) {
        if self.docker {
            for i in 1..=self.controllers.max(1) {
                self.stop_pidfile(&self.dir.join(format!("{}.pid", self.controller_tag(i))));
            }
            self.clean_docker();
        }
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return };
        for e in dir.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "pid")
                && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("agent-") || n.to_string_lossy().starts_with("controller"))
            {
                self.stop_pidfile(&p);
            }
        }
        if let Some(h) = self.docker_host() {
            h.ovs.stop();
            // The userspace datapath's taps are persistent: in a host's namespace they go
            // with it, in the root namespace they must be removed.
            for tap in ["br-int", "br-phy", "ovs-netdev"] {
                let d = Command::new("ip")
                    .args(["-d", "link", "show", tap])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains("tun type tap"))
                    .unwrap_or(false);
                if d {
                    let _ = ip(None, &["link", "del", tap]);
                }
            }
            let _ = std::fs::remove_file(plexus_agent::docker::plugin_socket(Path::new(PLUGIN_DIR)));
        }
        let _ = ip(None, &["link", "del", &self.root_link()]);
    }
}

impl Lab {
    /// Ends the process a pid file names (SIGTERM, then SIGKILL after 3 s) and removes the file.
    fn stop_pidfile(&self, p: &Path) {
        self.stop_pidfile_within(p, Duration::from_secs(3));
    }

    /// [`Lab::stop_pidfile`] with `grace` between SIGTERM and SIGKILL.
    pub(crate) fn stop_pidfile_within(&self, p: &Path, grace: Duration) {
        if let Some(pid) = std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
            if daemons::alive(pid) {
                daemons::kill(pid, libc::SIGTERM);
                let t = Instant::now();
                while daemons::alive(pid) && t.elapsed() < grace {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if daemons::alive(pid) {
                    daemons::kill(pid, libc::SIGKILL);
                }
            }
        }
        let _ = std::fs::remove_file(p);
    }
}

impl Lab {
    /// Plugs an endpoint the controller created into its host: a container namespace
    /// `plx-LAB-NAME` with the endpoint's address and MAC, its veth named after the endpoint's
    /// port and added to `br-int` (the agent made it) with `external_ids` naming the endpoint.
    pub async fn attach(&self, e: &plexus_api::Endpoint, name: &str, mtu: u32) -> Result<super::Container, LabError> {
        self.attach_with(e, name, mtu, true).await
    }

    /// Like [`Lab::attach`]; with `wait` false it returns without waiting for the controller
    /// to program the port (for a container plugged in before its endpoint exists).
    pub async fn attach_with(&self, e: &plexus_api::Endpoint, name: &str, mtu: u32, wait: bool) -> Result<super::Container, LabError> {
        let host = self.host(&e.host).ok_or_else(|| LabError::Invalid { field: "host", reason: format!("no host {} in lab {}", e.host, self.name) })?;
        let vs = super::wire::vswitch(host).await?;
        let t = Instant::now();
        while !vs.bridges().await.map_err(|e| LabError::Io(e.to_string()))?.iter().any(|b| b == super::wire::BR_INT) {
            if t.elapsed() > Duration::from_secs(20) {
                return Err(LabError::Io(format!("no br-int on {} after 20 s: is its agent running?", host.name)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let netns = self.new_container_netns(name)?;
        match plexus_agent::attach::plug(
            &vs,
            e,
            Some(plexus_agent::netns::path(&host.netns)),
            plexus_agent::netns::path(&netns),
            "eth0",
            mtu,
            wait.then(|| host.ovs.mgmt_sock(super::wire::BR_INT)),
        )
        .await
        {
            Ok((port, _)) => {
                // `ip netns exec` mounts this over the container's /etc/resolv.conf.
                let etc = std::path::Path::new("/etc/netns").join(&netns);
                let conf = plexus_agent::dns::resolv_conf(e.gateway, &e.network);
                std::fs::create_dir_all(&etc)
                    .and_then(|_| std::fs::write(etc.join("resolv.conf"), conf))
                    .map_err(|err| LabError::Io(format!("{}: {err}", etc.display())))?;
                let mac = e.mac.octets();
                Ok(super::Container { netns, host_if: port, ip: e.ip, mac })
            }
            Err(err) => {
                let _ = delete_netns(&netns);
                Err(LabError::Io(format!("attaching {name}: {err}")))
            }
        }
    }
}

pub use crate::image::{docker_client, ensure_test_image, import_busybox, import_test_image, TEST_IMAGE};
