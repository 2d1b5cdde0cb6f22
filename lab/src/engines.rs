//! A Docker engine inside each lab host: cross-host Docker for real, on one machine.
//!
//! Each engine runs in its host's network namespace (entered with `nsenter`: `ip netns exec`
//! remounts `/sys` and hides the cgroups dockerd needs) and in a mount namespace of its own,
//! where the host's directory is bind-mounted over Docker's hard-coded plugin directory
//! (`/run/docker/plugins`, where the host's agent serves the plugin) and over `/etc/docker`
//! (the engine's identity). Data root, exec root, socket and pid file are the host's own;
//! no iptables, no default bridge.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Lab, LabError, LabHost};

impl Lab {
    /// Host `h`'s Docker engine directory.
    pub fn engine_dir(&self, h: &LabHost) -> PathBuf {
        h.ovs.rundir.join("docker")
    }

    /// Host `h`'s Docker API socket.
    pub fn engine_socket(&self, h: &LabHost) -> PathBuf {
        self.engine_dir(h).join("docker.sock")
    }

    /// `docker` talking to host `h`'s engine.
    pub fn engine_client(&self, h: &LabHost) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H").arg(format!("unix://{}", self.engine_socket(h).display()));
        c
    }

    /// The agent arguments that make host `h`'s agent serve its engine.
    pub(crate) fn engine_agent_args(&self, h: &LabHost) -> Vec<String> {
        let dir = self.engine_dir(h);
        vec![
            "--docker".into(),
            "--docker-plugin-dir".into(),
            dir.join("plugins").display().to_string(),
            "--docker-socket".into(),
            self.engine_socket(h).display().to_string(),
            "--state-dir".into(),
            dir.join("agent").display().to_string(),
        ]
    }

    /// Starts host `h`'s engine; returns once it answers, with the test image imported.
    pub fn start_engine(&self, h: &LabHost) -> Result<(), LabError> {
        let dir = self.engine_dir(h);
        let io = |e: std::io::Error| LabError::Io(format!("{}: {e}", dir.display()));
        for d in ["plugins", "etc-docker", "data", "exec", "agent"] {
            std::fs::create_dir_all(dir.join(d)).map_err(io)?;
        }
        // Mount points of the bind mounts, in the root mount namespace (which the engine's
        // copies from).
        for d in ["/run/docker/plugins", "/etc/docker"] {
            std::fs::create_dir_all(d).map_err(|e| LabError::Io(format!("{d}: {e}")))?;
        }
        let script = format!(
            "mount --bind {d}/plugins /run/docker/plugins && mount --bind {d}/etc-docker /etc/docker && exec dockerd --data-root {d}/data \
             --exec-root {d}/exec --pidfile {d}/pid -H unix://{d}/docker.sock --iptables=false --ip6tables=false --bridge=none",
            d = dir.display()
        );
        let log = std::fs::File::create(dir.join("dockerd.log")).map_err(io)?;
        Command::new("nsenter")
            .arg(format!("--net={}", plexus_agent::netns::path(&h.netns).display()))
            .args(["unshare", "-m", "--propagation", "slave", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| LabError::Command { cmd: "nsenter … dockerd".into(), reason: format!("{e} (install docker.io and util-linux)") })?;
        let t = Instant::now();
        loop {
            let v = self.engine_client(h).args(["version", "--format", "{{.Server.Version}}"]).output();
            if v.is_ok_and(|o| o.status.success()) {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                return Err(LabError::Io(format!("the Docker engine of {} did not answer within 30 s (see {}/dockerd.log)", h.name, dir.display())));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        tracing::info!(lab = %self.name, host = %h.name, "Docker engine started");
        crate::control::import_test_image(|| self.engine_client(h))
    }

    /// Stops host `h`'s engine, if it runs (SIGTERM, then SIGKILL), and unmounts what it
    /// leaves mounted.
    pub(crate) fn stop_engine(&self, h: &LabHost) {
        let dir = self.engine_dir(h);
        // dockerd stops its containers and its containerd first: it gets longer than others.
        self.stop_pidfile_within(&dir.join("pid"), Duration::from_secs(10));
        unmount_under(&dir);
    }
}

/// Unmounts whatever is mounted at or under `dir` (the engine's netns mounts), deepest first.
fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return };
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|p| p.starts_with(&prefix)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(p).output();
    }
}
