//! Podman (Debian 12's, whose network backend is CNI) with a configuration of its own: a CNI
//! configuration directory and a plugin directory holding `plexus-cni`, so tests and
//! benchmarks never touch the machine's `/etc/cni/net.d`. The image is a `podman import` of
//! busybox-static.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::LabError;

/// The image containers run (busybox).
pub const IMAGE: &str = "localhost/plexus-cni-test:latest";

/// Where Debian's reference CNI plugins are.
pub const CNI_PLUGINS: &str = "/usr/lib/cni";

/// Podman configured under one directory.
#[derive(Debug)]
pub struct Podman {
    /// The directory: `containers.conf`, `net.d/`, `bin/plexus-cni`.
    pub dir: PathBuf,
}

impl Podman {
    /// Sets podman up under `dir` with `plexus` (the binary) as the plugin `plexus-cni`, and
    /// makes sure the image exists.
    pub fn new(dir: &Path, plexus: &Path) -> Result<Podman, LabError> {
        let missing = |tool: &'static str, package: &'static str| LabError::MissingTool { tool, package };
        if !Command::new("podman").arg("--version").output().is_ok_and(|o| o.status.success()) {
            return Err(missing("podman", "podman"));
        }
        if !Path::new(CNI_PLUGINS).join("bridge").exists() {
            return Err(missing("/usr/lib/cni/bridge", "containernetworking-plugins"));
        }
        let io = |e: std::io::Error| LabError::Io(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir.join("net.d")).map_err(io)?;
        std::fs::create_dir_all(dir.join("bin")).map_err(io)?;
        let link = dir.join("bin/plexus-cni");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(plexus, &link).map_err(io)?;
        // This sandbox refuses runc's default rlimits; the limits are explicit.
        let conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\n[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"{CNI_PLUGINS}\"]\nnetwork_config_dir = \"{}\"\n",
            dir.join("bin").display(),
            dir.join("net.d").display()
        );
        std::fs::write(dir.join("containers.conf"), conf).map_err(io)?;
        let p = Podman { dir: dir.to_path_buf() };
        crate::image::import_busybox(|| p.cmd(), IMAGE)?;
        Ok(p)
    }

    /// The `plexus-cni` link a runtime runs.
    pub fn plugin(&self) -> PathBuf {
        self.dir.join("bin/plexus-cni")
    }

    /// `podman` with this configuration.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.dir.join("containers.conf")).arg("--network-config-dir").arg(self.dir.join("net.d"));
        c
    }

    /// Runs `podman ARGS`.
    pub fn run(&self, args: &[&str]) -> Result<Output, LabError> {
        self.cmd().args(args).output().map_err(|e| LabError::Command { cmd: format!("podman {args:?}"), reason: e.to_string() })
    }

    /// Runs `podman ARGS`, which must succeed; returns its output.
    pub fn ok(&self, args: &[&str]) -> Result<String, LabError> {
        let o = self.run(args)?;
        if !o.status.success() {
            return Err(LabError::Command { cmd: format!("podman {args:?}"), reason: String::from_utf8_lossy(&o.stderr).trim().to_string() });
        }
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    /// Writes network configuration list `name` with one plugin, `plugin`.
    pub fn network(&self, name: &str, plugin: &serde_json::Value) -> Result<(), LabError> {
        let list = serde_json::json!({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]});
        std::fs::write(self.dir.join("net.d").join(format!("{name}.conflist")), list.to_string()).map_err(|e| LabError::Io(e.to_string()))
    }
}

/// Runs CNI plugin `plugin` as a runtime does: `vars` in its environment, the configuration
/// on stdin; returns what it printed and how it exited.
pub fn invoke(plugin: &Path, vars: &[(&str, &str)], conf: &serde_json::Value) -> Result<Output, LabError> {
    use std::io::Write;
    let failed = |e: std::io::Error| LabError::Command { cmd: plugin.display().to_string(), reason: e.to_string() };
    let mut c = Command::new(plugin)
        .envs(vars.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(failed)?;
    if let Some(mut stdin) = c.stdin.take() {
        stdin.write_all(conf.to_string().as_bytes()).map_err(failed)?;
    }
    c.wait_with_output().map_err(failed)
}

impl crate::Lab {
    /// The `plexus-cni` plugin configuration that puts containers of a runtime in the root
    /// namespace on Plexus network `network` through lab host `host`.
    pub fn cni_conf(&self, cp: &crate::ControlPlane, host: &str, network: &str) -> Result<serde_json::Value, LabError> {
        let h = self.host(host).ok_or_else(|| LabError::Invalid { field: "host", reason: format!("no host {host} in lab {}", self.name) })?;
        Ok(serde_json::json!({
            "type": "plexus-cni",
            "network": network,
            "api": cp.api,
            "host": host,
            "ovsdb": format!("unix:{}", h.ovs.db_sock().display()),
            "pki_dir": self.agent_pki_dir(h),
            "host_netns": plexus_agent::netns::path(&h.netns),
            "capabilities": {"ips": true, "mac": true, "portMappings": true},
        }))
    }
}
