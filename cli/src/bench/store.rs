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

pub(super) async fn run(writes: usize) -> anyhow::Result<()> {
    let base = std::env::temp_dir().join(format!("plexus-bench-store-{}", std::process::id()));
    std::fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
    let fsyncs = fsync_baseline(&base)?;
    println!("baseline: {fsyncs:.0} durable 256-byte commits/s on this disk (redb, one at a time)");
    println!("each cluster twice: API over plain HTTP (loopback, only for this comparison), then over HTTPS; tokens checked both times");
    println!(
        "{:<8} {:>9} {:>10} {:>10} {:>11} {:>9} {:>9} {:>13}",
        "cluster", "in-flight", "http w/s", "https w/s", "https/http", "p50 ms", "p99 ms", "vs baseline"
    );
    for size in [1usize, 3] {
        let mut rows: Vec<(usize, Figures)> = Vec::new();
        for tls in [false, true] {
            let c = Cluster::start(size, &base.join(format!("c{size}-{tls}")), tls).await?;
            let url = c.leader_url();
            let pad = "x".repeat(120);
            for (k, in_flight) in [1usize, 16, 64].into_iter().enumerate() {
                let n = if in_flight == 1 { writes / 4 } else { writes };
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
                let f = load(&c.http, &url, n, in_flight, make).await?;
                if !tls {
                    rows.push((in_flight, f));
                    continue;
                }
                let plain = &rows[k].1;
                println!(
                    "{:<8} {:>9} {:>10.0} {:>10.0} {:>10.2}x {:>9.2} {:>9.2} {:>12.2}x",
                    format!("{size}-node"),
                    in_flight,
                    plain.per_s,
                    f.per_s,
                    f.per_s / plain.per_s,
                    f.p50_ms,
                    f.p99_ms,
                    f.per_s / fsyncs
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
