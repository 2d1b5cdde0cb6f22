//! Traffic probes between lab namespaces: ping, and a TCP stream whose content is checked
//! end to end (ping alone misses the checksum-offload failure DESIGN.md describes).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::LabError;
use plexus_agent::netns;

/// Pings `dst` from namespace `ns`: `count` echo requests, `interval` apart; returns how many
/// were answered.
pub fn ping(ns: &str, dst: Ipv4Addr, count: u32, interval: Duration) -> Result<u32, LabError> {
    let out = netns::exec(ns, &["ping", "-n", "-q", "-c", &count.to_string(), "-i", &format!("{:.3}", interval.as_secs_f64()), "-W", "1", &dst.to_string()])
        .map_err(|e| LabError::Command { cmd: "ping".into(), reason: format!("{e} (install iputils-ping)") })?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "3 packets transmitted, 3 received, 0% packet loss"
    let received = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| LabError::Command { cmd: "ping".into(), reason: format!("unexpected output: {text} {}", String::from_utf8_lossy(&out.stderr)) })?;
    Ok(received)
}

/// Pings until one reply comes or `timeout` passes; returns the time to the first reply.
pub fn wait_ping(ns: &str, dst: Ipv4Addr, timeout: Duration) -> Result<Duration, LabError> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if ping(ns, dst, 1, Duration::from_millis(200))? == 1 {
            return Ok(t.elapsed());
        }
    }
    Err(LabError::Command { cmd: format!("ping {dst} from {ns}"), reason: format!("no reply within {timeout:?}") })
}

/// Result of a TCP transfer.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    /// Bytes received.
    pub bytes: usize,
    /// Whether every byte arrived as sent.
    pub intact: bool,
    /// Wall time.
    pub elapsed: Duration,
}

impl Transfer {
    /// Throughput in Mbit/s.
    pub fn mbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

fn pattern(i: usize) -> u8 {
    // A sequence with no short period, so a lost or repeated segment cannot go unnoticed.
    (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (i >> 20) as u8
}

/// Sends `bytes` over TCP from namespace `from` to `to_ip` (a listener in namespace `to`)
/// and checks every byte.
pub fn tcp_transfer(from: &str, to: &str, to_ip: impl Into<std::net::IpAddr>, bytes: usize) -> Result<Transfer, LabError> {
    let to_ip: std::net::IpAddr = to_ip.into();
    let io = |e: std::io::Error| LabError::Io(format!("tcp transfer {from} -> {to}: {e}"));
    let listener = netns::bind_tcp(to, SocketAddr::new(to_ip, 0)).map_err(|e| LabError::Io(e.to_string()))?;
    let addr = listener.local_addr().map_err(io)?;
    let receiver = std::thread::spawn(move || -> std::io::Result<(usize, bool)> {
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut buf = vec![0u8; 1 << 16];
        let (mut n, mut ok) = (0usize, true);
        loop {
            let r = s.read(&mut buf)?;
            if r == 0 {
                break;
            }
            ok &= buf[..r].iter().enumerate().all(|(i, &b)| b == pattern(n + i));
            n += r;
        }
        Ok((n, ok))
    });
    let t = Instant::now();
    let mut s = netns::connect_tcp(from, addr).map_err(|e| LabError::Io(e.to_string()))?;
    s.set_write_timeout(Some(Duration::from_secs(30))).map_err(io)?;
    let data: Vec<u8> = (0..bytes).map(pattern).collect();
    s.write_all(&data).map_err(io)?;
    s.shutdown(std::net::Shutdown::Write).map_err(io)?;
    let (n, intact) = receiver.join().map_err(|_| LabError::Io("receiver panicked".into()))?.map_err(io)?;
    Ok(Transfer { bytes: n, intact: intact && n == bytes, elapsed: t.elapsed() })
}

/// Time until the first echo reply from `dst`, pinging every 10 ms (one `ping` process, so
/// the figure is not rounded to a ping timeout).
pub fn first_reply(ns: &str, dst: Ipv4Addr, timeout: Duration) -> Result<Duration, LabError> {
    let t = Instant::now();
    let out = netns::exec(ns, &["ping", "-n", "-q", "-c", "1", "-i", "0.01", "-w", &timeout.as_secs().max(1).to_string(), &dst.to_string()])
        .map_err(|e| LabError::Command { cmd: "ping".into(), reason: format!("{e} (install iputils-ping)") })?;
    if !out.status.success() {
        return Err(LabError::Command { cmd: format!("ping {dst} from {ns}"), reason: format!("no reply within {timeout:?}") });
    }
    Ok(t.elapsed())
}

/// The round trip of a single ping (its own `time=` figure, so process start-up is not
/// counted). A first packet that waited for an ARP retry shows as a second or more.
pub fn one_ping_rtt(ns: &str, dst: Ipv4Addr, timeout: Duration) -> Result<Duration, LabError> {
    let out = netns::exec(ns, &["ping", "-n", "-c", "1", "-W", &timeout.as_secs().max(1).to_string(), &dst.to_string()])
        .map_err(|e| LabError::Command { cmd: "ping".into(), reason: format!("{e} (install iputils-ping)") })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ms = text.split("time=").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse::<f64>().ok());
    match (out.status.success(), ms) {
        (true, Some(ms)) => Ok(Duration::from_secs_f64(ms / 1e3)),
        _ => Err(LabError::Command { cmd: format!("ping {dst} from {ns}"), reason: format!("no reply within {timeout:?}: {text}") }),
    }
}

/// A TCP server in a namespace that answers every connection with one byte and then echoes
/// what it reads until the client closes, until dropped: the far end of [`tcp_reaches`] and
/// of long-lived connections.
#[derive(Debug)]
pub struct TcpServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    peers: std::sync::Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl TcpServer {
    /// Listens on `addr` inside namespace `ns`.
    pub fn start(ns: &str, addr: SocketAddr) -> Result<TcpServer, LabError> {
        let listener = netns::bind_tcp(ns, addr).map_err(|e| LabError::Io(format!("listening on {addr} in {ns}: {e}")))?;
        let addr = listener.local_addr().map_err(|e| LabError::Io(e.to_string()))?;
        listener.set_nonblocking(true).map_err(|e| LabError::Io(e.to_string()))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let peers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = peers.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, peer)) => {
                        seen.lock().unwrap_or_else(|e| e.into_inner()).push(peer);
                        std::thread::spawn(move || {
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
                            let _ = s.write_all(b"k");
                            let mut buf = [0u8; 4096];
                            while let Ok(n @ 1..) = s.read(&mut buf) {
                                if s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(TcpServer { stop, thread: Some(thread), peers, addr })
    }

    /// The source address of every connection it accepted, in order: what a NAT made of
    /// its clients.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether a TCP connection from namespace `ns` to `addr` opens and the server's byte comes
/// back within `timeout` (a [`TcpServer`] answers so): traffic both ways, not only a SYN.
pub fn tcp_reaches(ns: &str, addr: SocketAddr, timeout: Duration) -> Result<bool, LabError> {
    let r = netns::run_in(ns, move || -> std::io::Result<bool> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        let mut b = [0u8; 1];
        Ok(s.read(&mut b)? == 1 && b[0] == b'k')
    })
    .map_err(|e| LabError::Io(format!("entering {ns}: {e}")))?;
    Ok(r.unwrap_or(false))
}

/// Opens a TCP connection from namespace `ns` to a [`TcpServer`] at `addr` and reads its
/// greeting; the stream stays usable from any thread (its socket lives in `ns`).
pub fn tcp_open(ns: &str, addr: SocketAddr, timeout: Duration) -> Result<std::net::TcpStream, LabError> {
    let r = netns::run_in(ns, move || -> std::io::Result<std::net::TcpStream> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        Ok(s)
    })
    .map_err(|e| LabError::Io(format!("entering {ns}: {e}")))?;
    r.map_err(|e| LabError::Io(format!("connecting to {addr} from {ns}: {e}")))
}

/// Whether `s` still carries data both ways: `msg` sent comes back echoed.
pub fn tcp_echoes(s: &mut std::net::TcpStream, msg: &[u8]) -> bool {
    let mut back = vec![0u8; msg.len()];
    s.write_all(msg).is_ok() && s.read_exact(&mut back).is_ok() && back == msg
}
