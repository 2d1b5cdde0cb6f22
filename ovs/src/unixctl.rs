//! `ovs-appctl` without the process: OVS daemons answer JSON-RPC on their control socket
//! (`ovs-vswitchd.PID.ctl`). Used for what OVSDB does not cover, such as seeding the userspace
//! tunnel code's neighbour cache (`tnl/neigh/set`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// A longer answer is refused (the commands used here answer a line).
const MAX_REPLY: usize = 1 << 20;

/// What can go wrong calling a daemon.
#[derive(Debug, thiserror::Error)]
pub enum UnixctlError {
    /// The socket could not be reached or the exchange broke off.
    #[error("{path}: {reason}")]
    Io {
        /// The control socket.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The daemon did not answer in time.
    #[error("{0}: no answer in time")]
    Timeout(PathBuf),
    /// The daemon answered with an error.
    #[error("{method}: {error}")]
    Command {
        /// The command.
        method: String,
        /// What the daemon said.
        error: String,
    },
}

/// Runs `method` with `params` on the daemon at `ctl`; what it printed.
pub async fn call(ctl: &Path, method: &str, params: &[&str], timeout: Duration) -> Result<String, UnixctlError> {
    match tokio::time::timeout(timeout, exchange(ctl, method, params)).await {
        Ok(r) => r,
        Err(_) => Err(UnixctlError::Timeout(ctl.to_path_buf())),
    }
}

async fn exchange(ctl: &Path, method: &str, params: &[&str]) -> Result<String, UnixctlError> {
    let io = |e: &dyn std::fmt::Display| UnixctlError::Io { path: ctl.to_path_buf(), reason: e.to_string() };
    let mut s = UnixStream::connect(ctl).await.map_err(|e| io(&e))?;
    let req = json!({"method": method, "params": params, "id": 0});
    s.write_all(req.to_string().as_bytes()).await.map_err(|e| io(&e))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| io(&e))?;
        if n == 0 {
            return Err(io(&"closed before answering"));
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if buf.len() > MAX_REPLY {
            return Err(io(&"answer too long"));
        }
        // One JSON object is the whole answer.
        let mut stream = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
        match stream.next() {
            Some(Ok(v)) => {
                if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
                    return Err(UnixctlError::Command { method: method.into(), error: e.as_str().unwrap_or_default().trim().to_string() });
                }
                return Ok(v.get("result").and_then(Value::as_str).unwrap_or_default().to_string());
            }
            Some(Err(e)) if e.is_eof() => continue,
            Some(Err(e)) => return Err(io(&e)),
            None => continue,
        }
    }
}

/// The control socket of the `ovs-vswitchd` whose run directory is `rundir`: the one named
/// on its command line (`ovs-vswitchd.ctl`) if there, else the default `ovs-vswitchd.PID.ctl`.
pub fn vswitchd_ctl(rundir: &Path) -> Option<PathBuf> {
    let named = rundir.join("ovs-vswitchd.ctl");
    if named.exists() {
        return Some(named);
    }
    let pid = std::fs::read_to_string(rundir.join("ovs-vswitchd.pid")).ok()?;
    let ctl = rundir.join(format!("ovs-vswitchd.{}.ctl", pid.trim()));
    ctl.exists().then_some(ctl)
}
