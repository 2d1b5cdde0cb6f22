//! `plexus bench store`: the replicated store under the load a standard etcd benchmark uses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use plexus_controller::node::{Node, NodeConfig};
use serde_json::json;

struct Cluster {
    nodes: Vec<Node>,
    dir: PathBuf,
    /// An admin's client: trusts the cluster's CA, sends an admin token.
    http: reqwest::Client,
    tls: bool,
}

impl Cluster {
    /// A cluster of `size` nodes whose API speaks HTTPS (`tls`) or, to measure what TLS
    /// costs, plain HTTP on loopback; tokens are checked either way.
    async fn start(size: usize, dir: &Path, tls: bool) -> anyhow::Result<Cluster> {
        let mut nodes: Vec<Node> = Vec::new();
        for id in 1..=size as u64 {
            let cfg = NodeConfig {
                id,
                listen: "127.0.0.1:0".parse()?,
                cluster_listen: "127.0.0.1:0".parse()?,
                advertise: None,
                // One CA for the cluster: the first node makes it, the others are issued by it.
                pki_dir: Some(dir.join("pki")),
                data_dir: dir.join(format!("node{id}")),
                peers: BTreeMap::new(),
                // The first node forms a cluster; the others join it live (a membership change).
                join: nodes.first().map(|n| n.cluster_addr.to_string()),
                join_token: None,
                join_api: None,
                join_ca: None,
                snapshot_every: 5000,
                openflow_listen: None,
                insecure_http: !tls,
                api_names: Vec::new(),
            };
            nodes.push(Node::start(cfg).await?);
        }
        let pki = dir.join("pki");
        let token = std::fs::read_to_string(pki.join(plexus_controller::node::ADMIN_TOKEN_FILE))?;
        let http = plexus_api::Credentials::from_files(Some(&pki.join("ca.crt")), Some(&token))?.http()?.build()?;
        let c = Cluster { nodes, dir: dir.to_path_buf(), http, tls };
        for _ in 0..100 {
            let v: serde_json::Value = c.http.get(format!("{}/v1/cluster", c.leader_url())).send().await?.json().await?;
            if v["members"].as_array().map(Vec::len) == Some(size) && v["leader"] == 1 {
                return Ok(c);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the {size}-node cluster did not form")
    }

    fn leader_url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.nodes[0].addr)
    }

    async fn stop(self) {
        for n in self.nodes {
            n.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Figures {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Sends `n` requests with `in_flight` at a time; `make(i)` gives method, path and body.
async fn load(
    http: &reqwest::Client,
    url: &str,
    n: usize,
    in_flight: usize,
    make: Arc<dyn Fn(usize) -> (reqwest::Method, String, serde_json::Value) + Send + Sync>,
) -> anyhow::Result<Figures> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (http, next, make, url) = (http.clone(), next.clone(), make.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let (m, path, body) = make(i);
                let t0 = Instant::now();
                let r = http.request(m, format!("{url}{path}")).json(&body).send().await?;
                if !r.status().is_success() {
                    bail!("write {i} failed: {} {}", r.status(), r.text().await.unwrap_or_default());
                }
                lat.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let secs = t.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(Figures { per_s: n as f64 / secs, p50_ms: super::percentile(&lat, 0.5), p99_ms: super::percentile(&lat, 0.99) })
}

/// Durable single-row commits per second on this disk: the bound for one write in flight.
fn fsync_baseline(dir: &Path) -> anyhow::Result<f64> {
    const T: redb::TableDefinition<'static, u64, &[u8]> = redb::TableDefinition::new("t");
    let db = redb::Database::create(dir.join("baseline.redb"))?;
    let payload = [7u8; 256];
    let n = 300;
    let t = Instant::now();
    for i in 0..n {
        let w = db.begin_write()?;
        w.open_table(T)?.insert(i as u64, payload.as_slice())?;
        w.commit()?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// An etcd cluster (Debian's `etcd-server`, 3.4) on loopback, fsync on, the baseline.
struct Etcd {
    children: Vec<std::process::Child>,
    clients: Vec<String>,
    dir: PathBuf,
}

/// A loopback port nothing listens on now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Etcd {
    async fn start(size: usize, dir: &Path) -> anyhow::Result<Etcd> {
        if std::process::Command::new("etcd").arg("--version").output().is_err() {
            bail!("etcd is missing: apt-get install etcd-server (the baseline of `plexus bench store`)");
        }
        let ports: Vec<(u16, u16)> = (0..size).map(|_| Ok((free_port()?, free_port()?))).collect::<anyhow::Result<_>>()?;
        let cluster: Vec<String> = ports.iter().enumerate().map(|(i, (_, p))| format!("e{i}=http://127.0.0.1:{p}")).collect();
        let mut e = Etcd { children: Vec::new(), clients: Vec::new(), dir: dir.to_path_buf() };
        for (i, (c, p)) in ports.iter().enumerate() {
            let log = std::fs::File::create(dir.join(format!("etcd{i}.log")))?;
            let client = format!("http://127.0.0.1:{c}");
            let child = std::process::Command::new("etcd")
                .args(["--name", &format!("e{i}"), "--data-dir"])
                .arg(dir.join(format!("e{i}")))
                .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}"), "--initial-advertise-peer-urls", &format!("http://127.0.0.1:{p}")])
                .args(["--initial-cluster", &cluster.join(","), "--initial-cluster-state", "new", "--initial-cluster-token", "plexus-bench"])
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting etcd")?;
            e.children.push(child);
            e.clients.push(client);
        }
        Ok(e)
    }

    /// The client URL of the leader, once every member answers healthy.
    async fn leader(&self, http: &reqwest::Client) -> anyhow::Result<String> {
        for _ in 0..200 {
            let mut leader = None;
            let mut healthy = 0;
            for c in &self.clients {
                let Ok(r) = http.post(format!("{c}/v3/maintenance/status")).json(&json!({})).send().await else { continue };
                let Ok(v) = r.json::<serde_json::Value>().await else { continue };
                healthy += 1;
                if v["leader"].is_string() && v["leader"] == v["header"]["member_id"] {
                    leader = Some(c.clone());
                }
            }
            if let (Some(l), true) = (leader, healthy == self.clients.len()) {
                return Ok(l);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the etcd cluster did not elect a leader (logs in {})", self.dir.display())
    }
}

impl Drop for Etcd {
    /// Ends exactly the members this run started, also when a measurement fails.
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Standard base64, for etcd's JSON gateway (keys and values are bytes).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if k <= chunk.len() { A[(n >> shift) as usize & 63] as char } else { '=' });
        }
    }
    out
}

/// The in-flight levels every store is measured at.
const LEVELS: [usize; 3] = [1, 16, 64];

/// How many writes a level sends.
fn writes_at(writes: usize, in_flight: usize) -> usize {
    if in_flight == 1 {
        writes / 4
    } else {
        writes
    }
}

pub(super) async fn run(writes: usize) -> anyhow::Result<()> {
    let base = std::env::temp_dir().join(format!("plexus-bench-store-{}", std::process::id()));
    std::fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
    let fsyncs = fsync_baseline(&base)?;
    println!("baseline: {fsyncs:.0} durable 256-byte commits/s on this disk (redb, one at a time)");
    println!("each size: etcd 3.4 (fsync on, HTTP/JSON gateway, 256-byte values), then Plexus over plain HTTP (loopback, only for this comparison), then over HTTPS; tokens checked both times");
    println!(
        "{:<8} {:>9} {:>10} {:>10} {:>10} {:>12} {:>11} {:>16} {:>16} {:>14}",
        "cluster", "in-flight", "etcd w/s", "http w/s", "https w/s", "http/etcd", "https/etcd", "etcd p50/p99 ms", "https p50/p99 ms", "writes/fsync"
    );
    let plain_http = plexus_api::client::http_builder().build()?;
    for size in [1usize, 3] {
        let edir = base.join(format!("etcd{size}"));
        std::fs::create_dir_all(&edir)?;
        let etcd = Etcd::start(size, &edir).await?;
        let leader = etcd.leader(&plain_http).await;
        let mut baseline: Vec<Figures> = Vec::new();
        if let Ok(url) = &leader {
            let value = base64(&[b'v'; 256]);
            let keys: Arc<Vec<String>> = Arc::new((0..100).map(|k| base64(format!("c{size}-{k}").as_bytes())).collect());
            for in_flight in LEVELS {
                let (keys, value) = (keys.clone(), value.clone());
                let make = Arc::new(move |i: usize| (reqwest::Method::POST, "/v3/kv/put".to_string(), json!({"key": keys[i % 100], "value": value})));
                baseline.push(load(&plain_http, url, writes_at(writes, in_flight), in_flight, make).await?);
            }
        }
        drop(etcd);
        leader?;
        let mut rows: Vec<Figures> = Vec::new();
        for tls in [false, true] {
            let c = Cluster::start(size, &base.join(format!("c{size}-{tls}")), tls).await?;
            let url = c.leader_url();
            let pad = "x".repeat(120);
            for (k, in_flight) in LEVELS.into_iter().enumerate() {
                let pad = pad.clone();
                let tag = format!("c{size}f{in_flight}");
                // ~256-byte bodies: a network replaced with a new label each time.
                let make = Arc::new(move |i: usize| {
                    let name = format!("{tag}-{}", i % 100);
                    (
                        reqwest::Method::PUT,
                        format!("/v1/networks/{name}"),
                        json!({"name": name, "kind": {"type": "overlay"}, "subnet": "10.0.0.0/24", "labels": {"seq": i.to_string(), "pad": pad}}),
                    )
                });
                let flushed = || {
                    use std::sync::atomic::Ordering::Relaxed;
                    (plexus_controller::store::FLUSHES.load(Relaxed), plexus_controller::store::COMMANDS_FLUSHED.load(Relaxed))
                };
                let before = flushed();
                let f = load(&c.http, &url, writes_at(writes, in_flight), in_flight, make).await?;
                let after = flushed();
                let per_flush = (after.1 - before.1) as f64 / (after.0 - before.0).max(1) as f64;
                if !tls {
                    rows.push(f);
                    continue;
                }
                let (plain, e) = (&rows[k], &baseline[k]);
                println!(
                    "{:<8} {:>9} {:>10.0} {:>10.0} {:>10.0} {:>11.2}x {:>10.2}x {:>16} {:>16} {:>14.1}",
                    format!("{size}-node"),
                    in_flight,
                    e.per_s,
                    plain.per_s,
                    f.per_s,
                    plain.per_s / e.per_s,
                    f.per_s / e.per_s,
                    format!("{:.2}/{:.2}", e.p50_ms, e.p99_ms),
                    format!("{:.2}/{:.2}", f.p50_ms, f.p99_ms),
                    per_flush,
                );
            }
            if size == 3 && tls {
                let http = &c.http;
                http.put(format!("{url}/v1/hosts/h1")).json(&json!({"name": "h1", "tunnel_ip": "192.0.2.1"})).send().await?.error_for_status()?;
                http.post(format!("{url}/v1/networks"))
                    .json(&json!({"name": "ipam", "kind": {"type": "overlay"}, "subnet": "10.128.0.0/16"}))
                    .send()
                    .await?
                    .error_for_status()?;
                let make = Arc::new(|_i: usize| (reqwest::Method::POST, "/v1/networks/ipam/endpoints".to_string(), json!({"host": "h1"})));
                let f = load(http, &url, writes, 16, make).await?;
                println!(
                    "endpoint creates (address allocation), 3-node, HTTPS, 16 in flight: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {:.2}x baseline",
                    f.per_s,
                    f.p50_ms,
                    f.p99_ms,
                    f.per_s / fsyncs
                );
            }
            c.stop().await;
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
    }
}
