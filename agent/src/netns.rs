//! Network namespaces: running code and commands inside a named namespace.
//!
//! A socket keeps the namespace it was created in, so a listener bound inside a host's
//! namespace from a short-lived thread serves that namespace for its whole life. This is how a
//! test in the root namespace talks to switches whose loopback is their own.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Errors of namespace operations.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace does not exist.
    #[error("network namespace {0} does not exist")]
    Missing(String),
    /// setns(2) failed.
    #[error("cannot enter network namespace {ns}: {err}")]
    Enter {
        /// Namespace.
        ns: String,
        /// OS error.
        err: std::io::Error,
    },
    /// The work thread panicked.
    #[error("thread running inside {0} panicked")]
    Panicked(String),
}

/// Path of a named namespace (`ip netns add NAME`).
pub fn path(ns: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(ns)
}

/// Runs `f` on a fresh thread that has entered network namespace `ns`.
pub fn run_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetnsError> {
    let file = File::open(path(ns)).map_err(|_| NetnsError::Missing(ns.to_string()))?;
    let name = ns.to_string();
    let handle = std::thread::spawn(move || -> Result<T, NetnsError> {
        // SAFETY: setns only changes this thread's network namespace; the fd is valid for the
        // duration of the call because `file` lives until the end of this closure.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(NetnsError::Enter { ns: name, err: std::io::Error::last_os_error() });
        }
        Ok(f())
    });
    handle.join().map_err(|_| NetnsError::Panicked(ns.to_string()))?
}

/// Binds a TCP listener inside namespace `ns`.
pub fn bind_tcp(ns: &str, addr: std::net::SocketAddr) -> Result<std::net::TcpListener, NetnsError> {
    let ns2 = ns.to_string();
    run_in(ns, move || std::net::TcpListener::bind(addr))?.map_err(|err| NetnsError::Enter { ns: ns2, err })
}

/// Connects a TCP stream from inside namespace `ns`.
pub fn connect_tcp(ns: &str, addr: std::net::SocketAddr) -> Result<std::net::TcpStream, NetnsError> {
    let ns2 = ns.to_string();
    run_in(ns, move || std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5)))?.map_err(|err| NetnsError::Enter { ns: ns2, err })
}

/// A command that runs inside namespace `ns` (through `ip netns exec`).
pub fn command(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// Runs a command inside `ns` and returns its output.
pub fn exec(ns: &str, args: &[&str]) -> std::io::Result<Output> {
    let (prog, rest) = args.split_first().ok_or_else(|| std::io::Error::other("empty command"))?;
    command(ns, prog).args(rest).output()
}

/// Names of all named network namespaces.
pub fn list() -> Vec<String> {
    std::fs::read_dir("/run/netns").map(|d| d.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect()).unwrap_or_default()
}
