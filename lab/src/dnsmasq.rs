//! dnsmasq as a stand-in resolver: the outside world's in tests, the baseline in the DNS
//! benchmark. Ended by pid when dropped.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::LabError;

/// A running dnsmasq, killed (by its pid) when dropped.
#[derive(Debug)]
pub struct Dnsmasq(Child);

impl Dnsmasq {
    /// Starts dnsmasq on `listen`:53 (inside namespace `ns`, if given) answering only from
    /// `records` (dnsmasq options such as `--address=/outside.test/198.51.100.7` or
    /// `--host-record=web,10.0.0.5`): no upstreams, no hosts file, no configuration file.
    pub fn start(ns: Option<&str>, listen: Ipv4Addr, records: &[String]) -> Result<Dnsmasq, LabError> {
        let bin = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| LabError::Command { cmd: "dnsmasq".into(), reason: "missing: apt-get install dnsmasq-base".into() })?;
        let mut c = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin]);
                c
            }
            None => Command::new(bin),
        };
        let child = c
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--bind-interfaces",
                "--port=53",
                "--user=root",
                "--pid-file=",
            ])
            .arg(format!("--listen-address={listen}"))
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| LabError::Command { cmd: bin.into(), reason: e.to_string() })?;
        let mut d = Dnsmasq(child);
        std::thread::sleep(Duration::from_millis(200));
        if !matches!(d.0.try_wait(), Ok(None)) {
            return Err(LabError::Command { cmd: bin.into(), reason: format!("exited at once: is port 53 of {listen} taken?") });
        }
        Ok(d)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
