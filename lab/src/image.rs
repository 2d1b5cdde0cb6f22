//! The image lab and test containers run, and the Docker client that makes it: busybox
//! imported as a one-layer image into an engine (this machine's, or a lab host's own).

use std::path::Path;
use std::process::Command;

use crate::LabError;

/// The image lab and test containers run: busybox (Debian's static build) imported as a
/// one-layer image, since nothing can be pulled here.
pub const TEST_IMAGE: &str = "plexus-test:busybox";

/// The Docker client to run: Debian's matches Debian's engine (a newer client elsewhere on
/// PATH refuses some flags, such as --mac-address, against an older engine).
pub fn docker_client() -> Command {
    Command::new(if Path::new("/usr/bin/docker").exists() { "/usr/bin/docker" } else { "docker" })
}

/// Makes [`TEST_IMAGE`] if the engine lacks it.
pub fn ensure_test_image() -> Result<(), LabError> {
    import_test_image(docker_client)
}

/// Makes [`TEST_IMAGE`] (busybox) in the engine `docker` talks to, if it lacks it.
pub fn import_test_image(docker: impl Fn() -> Command) -> Result<(), LabError> {
    import_busybox(docker, TEST_IMAGE)
}

/// Makes `image`, busybox as one layer, with the engine `docker` (or podman) runs, if it lacks
/// it.
pub fn import_busybox(docker: impl Fn() -> Command, image: &str) -> Result<(), LabError> {
    let has = docker()
        .args(["image", "inspect", image])
        .output()
        .map_err(|e| LabError::Command { cmd: "docker".into(), reason: format!("{e} (install docker.io)") })?;
    if has.status.success() {
        return Ok(());
    }
    let bb = Path::new("/bin/busybox");
    if !bb.exists() {
        return Err(LabError::Command { cmd: "/bin/busybox".into(), reason: "missing: apt-get install busybox-static".into() });
    }
    let io = |e: std::io::Error| LabError::Io(e.to_string());
    // Unique per call: engines of one lab import at the same time.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let root = std::env::temp_dir().join(format!("plexus-image-{}-{call}", std::process::id()));
    std::fs::create_dir_all(root.join("bin")).map_err(io)?;
    std::fs::copy(bb, root.join("bin/busybox")).map_err(io)?;
    for c in ["sh", "ping", "ip", "sleep", "cat", "nc", "ls", "nslookup"] {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(c));
    }
    let tar = root.with_extension("tar");
    let made = Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".").status().map_err(io)?.success()
        && docker().arg("import").arg(&tar).arg(image).output().map_err(io)?.status.success();
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_file(&tar);
    if made {
        Ok(())
    } else {
        Err(LabError::Command { cmd: format!("import {image}"), reason: "failed".into() })
    }
}
