//! A filesystem of a test's own: a small ext4 image on a loop device, mounted where a node
//! keeps its data, which the test can freeze (`fsfreeze`) to stall every write to it as a
//! stuck disk would.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted image; thawed and unmounted when dropped, also when the test fails.
#[derive(Debug)]
pub struct LoopFs {
    mount: PathBuf,
    image: PathBuf,
    frozen: bool,
}

/// Mounts left by tests whose process is gone (killed before their guards ran).
fn sweep_stale() {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else { return };
    for point in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        let Some(rest) = point.split("/plexus-cluster-").nth(1) else { continue };
        let pid: Option<i32> = rest.split('-').next().and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = Command::new("fsfreeze").args(["-u", point]).output();
            let _ = Command::new("umount").args(["-l", point]).output();
        }
    }
}

impl LoopFs {
    /// A new 256 MiB ext4 mounted at `mount` (created if missing); its image lies beside it.
    pub fn new(mount: &Path) -> LoopFs {
        sweep_stale();
        let image = mount.with_extension("img");
        let (m, i) = (mount.to_string_lossy(), image.to_string_lossy());
        std::fs::create_dir_all(mount).expect("the mount point");
        let f = std::fs::File::create(&image).expect("the image file");
        f.set_len(256 << 20).expect("a sparse image");
        drop(f);
        crate::run_from("mkfs.ext4", &["-q", "-F", &i], "e2fsprogs");
        // (Root and loop devices too: `modprobe loop`.)
        crate::run_from("mount", &["-o", "loop", &i, &m], "mount");
        LoopFs { mount: mount.to_path_buf(), image, frozen: false }
    }

    /// Stalls every write to the filesystem until [`LoopFs::thaw`].
    pub fn freeze(&mut self) {
        crate::run_from("fsfreeze", &["-f", &self.mount.to_string_lossy()], "util-linux");
        self.frozen = true;
    }

    /// Lets writes through again.
    pub fn thaw(&mut self) {
        crate::run_from("fsfreeze", &["-u", &self.mount.to_string_lossy()], "util-linux");
        self.frozen = false;
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.frozen {
            let _ = Command::new("fsfreeze").arg("-u").arg(&self.mount).output();
        }
        // Lazily: a process still using it (a node not yet ended) keeps it until it exits;
        // the loop device goes with the last user.
        let _ = Command::new("umount").arg("-l").arg(&self.mount).output();
        let _ = std::fs::remove_file(&self.image);
    }
}
