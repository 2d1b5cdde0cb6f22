//! Running the lab's setup commands with errors that say what failed and what to install.

use std::process::Command;

use super::LabError;

/// Programs the lab needs, with the Debian package that provides each.
pub(crate) const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ethtool", "ethtool"),
    ("ovsdb-tool", "openvswitch-switch"),
    ("ovsdb-server", "openvswitch-switch"),
    ("ovs-vswitchd", "openvswitch-switch"),
    ("ovs-vsctl", "openvswitch-switch"),
    ("ovs-appctl", "openvswitch-switch"),
];

/// Fails with the package to install if a needed program is missing.
pub(crate) fn check_tools() -> Result<(), LabError> {
    require(TOOLS)?;
    if !nix_is_root() {
        return Err(LabError::NotRoot);
    }
    Ok(())
}

/// Fails with the package to install if one of `tools` (program, Debian package) is not on
/// the `PATH` or in the system's program directories.
pub(crate) fn require(tools: &[(&'static str, &'static str)]) -> Result<(), LabError> {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs: Vec<&str> = path.split(':').chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"]).collect();
    for (tool, pkg) in tools {
        if !dirs.iter().any(|d| std::path::Path::new(d).join(tool).is_file()) {
            return Err(LabError::MissingTool { tool, package: pkg });
        }
    }
    Ok(())
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command; a non-zero exit is an error carrying its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<String, LabError> {
    let shown = format!("{cmd:?}").replace('"', "");
    tracing::trace!(cmd = %shown, "lab");
    let out = cmd.output().map_err(|e| LabError::Command { cmd: shown.clone(), reason: e.to_string() })?;
    if !out.status.success() {
        return Err(LabError::Command { cmd: shown, reason: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()) });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deletes namespace `ns` and the files `ip netns exec` mounts into it (`/etc/netns/NS`, a
/// container's `resolv.conf`).
pub(crate) fn delete_netns(ns: &str) -> Result<String, LabError> {
    let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(ns));
    ip(None, &["netns", "delete", ns])
}

/// Runs `ip ARGS` (in the root namespace, or in `ns` with `-n`).
pub(crate) fn ip(ns: Option<&str>, args: &[&str]) -> Result<String, LabError> {
    let mut c = Command::new("ip");
    if let Some(ns) = ns {
        c.args(["-n", ns]);
    }
    run(c.args(args))
}

/// Runs a program inside a namespace.
pub(crate) fn in_ns(ns: &str, args: &[&str]) -> Result<String, LabError> {
    let mut c = Command::new("ip");
    run(c.args(["netns", "exec", ns]).args(args))
}

/// Turns off TX checksum offload: the userspace datapath forwards the partial checksums a
/// veth would leave for hardware, so TCP fails while ping works (DESIGN.md).
pub(crate) fn tx_offload_off(ns: &str, dev: &str) -> Result<(), LabError> {
    in_ns(ns, &["ethtool", "-K", dev, "tx", "off"]).map(|_| ())
}
