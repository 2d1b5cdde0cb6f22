//! Controller processes for tests: each cluster on its own loopback addresses, killed by pid.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A cluster of controller processes, each on its own loopback address (127.X.Y.id, X.Y from
/// this test's pid), killed by pid when dropped.
#[derive(Debug)]
pub struct Cluster {
    /// The `plexus` binary the nodes run.
    pub bin: PathBuf,
    /// Each node's process, while it runs (node `i` at index `i - 1`).
    pub procs: Vec<Option<Child>>,
    /// Each node's API address.
    pub addrs: Vec<String>,
    /// Each node's cluster port (mutual TLS).
    pub cluster_addrs: Vec<String>,
    /// Where the nodes keep their data and logs.
    pub dir: PathBuf,
    /// An admin's client for their APIs (trusts the cluster's CA, sends an admin token).
    pub http: reqwest::Client,
    /// The admin token it sends.
    pub admin_token: String,
}

impl Cluster {
    /// A cluster of `n` nodes running `bin` (a test's `env!("CARGO_BIN_EXE_plexus")`), all
    /// started; `tag` tells apart the clusters of one test process.
    pub fn new(bin: &str, n: usize, tag: u8) -> Cluster {
        let mut c = Cluster::empty(bin, n, tag);
        for i in 1..=n {
            c.start(i);
        }
        c
    }

    /// Starts node `i` with the others as peers.
    pub fn start(&mut self, i: usize) {
        let peers: Vec<String> = self.cluster_addrs.iter().enumerate().map(|(j, a)| format!("{}={a}", j + 1)).collect();
        self.spawn(i, &["--peers", &peers.join(",")]);
    }

    /// A cluster whose nodes the test starts itself with [`Cluster::spawn`].
    pub fn empty(bin: &str, n: usize, tag: u8) -> Cluster {
        let pid = std::process::id();
        let ip = |i: usize| format!("127.{}.{}.{}", (pid >> 8) & 0xff, pid & 0xff, tag as usize * 10 + i);
        let addrs: Vec<String> = (1..=n).map(|i| format!("{}:7000", ip(i))).collect();
        let cluster_addrs: Vec<String> = (1..=n).map(|i| format!("{}:7001", ip(i))).collect();
        let dir = std::env::temp_dir().join(format!("plexus-cluster-{pid}-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        // The cluster's CA and token key exist before its first node starts (which finds
        // and uses them), so the test holds an admin's credentials from the start.
        let pki = dir.join("pki");
        plexus_pki::Ca::open_or_create(&pki).expect("a cluster CA");
        let admin_token = plexus_pki::TokenKey::open_or_create(&pki).and_then(|k| k.issue(&plexus_pki::Role::Admin)).expect("an admin token");
        let http = Cluster::client_for(&pki, Some(&admin_token));
        Cluster { bin: bin.into(), procs: (0..n).map(|_| None).collect(), addrs, cluster_addrs, dir, http, admin_token }
    }

    fn client_for(pki: &std::path::Path, token: Option<&str>) -> reqwest::Client {
        let creds = plexus_api::Credentials::from_files(Some(&pki.join("ca.crt")), token).expect("the cluster's CA");
        creds.http().expect("TLS configuration").build().expect("an HTTP client")
    }

    /// A client of this cluster's API that sends `token` (none: no credential at all).
    pub fn client_with(&self, token: Option<&str>) -> reqwest::Client {
        Cluster::client_for(&self.pki_dir(), token)
    }

    /// The environment the CLI needs to call node `i` as an admin.
    pub fn envs(&self, i: usize) -> Vec<(&'static str, String)> {
        vec![("PLEXUS_API", self.url(i, "")), ("PLEXUS_CA", self.pki_dir().join("ca.crt").display().to_string()), ("PLEXUS_TOKEN", self.admin_token.clone())]
    }

    /// A new token for `role` (`admin`, `reader`, `agent:HOST`).
    pub fn token(&self, role: &str) -> String {
        let role: plexus_pki::Role = role.parse().expect("a role");
        plexus_pki::TokenKey::open(&self.pki_dir()).and_then(|k| k.issue(&role)).expect("a token")
    }

    /// An admin's API client (the typed one) for node `i`.
    pub fn api(&self, i: usize) -> plexus_api::Client {
        let creds = plexus_api::Credentials::from_files(Some(&self.pki_dir().join("ca.crt")), Some(&self.admin_token)).expect("credentials");
        plexus_api::Client::new(&self.url(i, ""), &creds).expect("a client")
    }

    /// Starts node `i` with extra arguments.
    pub fn spawn(&mut self, i: usize, extra: &[&str]) {
        let pki = self.pki_dir();
        self.spawn_in(i, &pki, extra);
    }

    /// Starts node `i` with its own PKI directory `pki` (say, one that a join token fills).
    pub fn spawn_in(&mut self, i: usize, pki: &std::path::Path, extra: &[&str]) {
        let _ = std::fs::create_dir_all(&self.dir);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("node{i}.log"))).expect("log file");
        let child = Command::new(&self.bin)
            .args(["controller", "--id", &i.to_string(), "--listen", &self.addrs[i - 1], "--cluster-listen", &self.cluster_addrs[i - 1]])
            .arg("--pki-dir")
            .arg(pki)
            .arg("--data-dir")
            .arg(self.dir.join(format!("node{i}")))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start plexus controller");
        self.procs[i - 1] = Some(child);
    }

    /// The cluster's PKI directory: one CA for all its nodes (the first to start makes it).
    pub fn pki_dir(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// Sends signal `sig` to node `i` (and reaps it after `SIGKILL`).
    pub fn signal(&mut self, i: usize, sig: i32) {
        if let Some(c) = &self.procs[i - 1] {
            // SAFETY: a pid of a child we spawned and have not yet waited for.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
        if sig == libc::SIGKILL {
            if let Some(mut c) = self.procs[i - 1].take() {
                let _ = c.wait();
            }
        }
    }

    /// Cuts node `i` off from the other nodes (both ways, every port) while clients still
    /// reach every node; healed when the guard drops. Nodes dial each other from their own
    /// cluster addresses, so loopback firewall rules on those addresses are the partition.
    pub fn isolate(&self, i: usize) -> Partition {
        let ip = |k: usize| self.cluster_addrs[k - 1].rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or_default();
        let mut rules = Vec::new();
        for j in (1..=self.addrs.len()).filter(|&j| j != i) {
            rules.push((ip(i), ip(j)));
            rules.push((ip(j), ip(i)));
        }
        for (a, b) in &rules {
            let o = Command::new("iptables").args(["-w", "-I", "OUTPUT", "-s", a, "-d", b, "-j", "DROP"]).output();
            assert!(o.as_ref().is_ok_and(|o| o.status.success()), "iptables (apt-get install iptables): {o:?}");
        }
        Partition { rules }
    }

    /// The URL of `path` on node `i`.
    pub fn url(&self, i: usize, path: &str) -> String {
        format!("https://{}{path}", self.addrs[i - 1])
    }

    /// GETs `path` from node `i`; `None` unless it answers 2xx with JSON within 5 s.
    pub async fn get(&self, i: usize, path: &str) -> Option<Value> {
        let r = self.http.get(self.url(i, path)).timeout(Duration::from_secs(5)).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    /// Waits until every live node names the same leader; returns it.
    pub async fn leader(&self, live: &[usize]) -> u64 {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            let mut seen = BTreeSet::new();
            for &i in live {
                match self.get(i, "/v1/cluster").await.and_then(|v| v["leader"].as_u64()) {
                    Some(l) => seen.insert(Some(l)),
                    None => seen.insert(None),
                };
            }
            if seen.len() == 1 {
                if let Some(Some(l)) = seen.into_iter().next() {
                    if live.contains(&(l as usize)) {
                        return l;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no agreed leader among {live:?} within 20 s (logs in {})", self.dir.display());
    }

    /// Waits until every node in `live` has applied the model at `revision`, and returns each
    /// one's own (local) list of networks.
    pub async fn converged(&self, live: &[usize], revision: u64) -> Vec<Value> {
        let t = Instant::now();
        loop {
            let mut revs = Vec::new();
            for &i in live {
                revs.push(self.get(i, "/v1/cluster").await.and_then(|v| v["revision"].as_u64()));
            }
            if revs.iter().all(|r| *r == Some(revision)) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "nodes did not converge on revision {revision}: {revs:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut out = Vec::new();
        for &i in live {
            out.push(self.get(i, "/v1/networks?local=true").await.expect("local list"));
        }
        out
    }
}

/// Firewall rules that cut a node off; removed when dropped, also when the test fails.
#[derive(Debug)]
pub struct Partition {
    rules: Vec<(String, String)>,
}

impl Drop for Partition {
    fn drop(&mut self) {
        for (a, b) in &self.rules {
            let _ = Command::new("iptables").args(["-w", "-D", "OUTPUT", "-s", a, "-d", b, "-j", "DROP"]).output();
        }
    }
}

/// Waits until every node at `bases` (`https://HOST:PORT`) is ready and all show the same
/// digest of their replica at the same revision; panics naming what differs after 20 s.
pub async fn identical_replicas(http: &reqwest::Client, bases: &[String]) -> plexus_api::StateDigest {
    let t = Instant::now();
    loop {
        let mut seen = Vec::new();
        for b in bases {
            let ready = http.get(format!("{b}/readyz")).timeout(Duration::from_secs(5)).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
            let digest = match http.get(format!("{b}/v1/cluster/state")).timeout(Duration::from_secs(5)).send().await {
                Ok(r) if r.status().is_success() => r.json::<plexus_api::StateDigest>().await.ok(),
                _ => None,
            };
            seen.push((b.clone(), ready, digest));
        }
        let first = seen.first().and_then(|(_, _, d)| d.clone());
        let same =
            seen.iter().all(|(_, ready, d)| *ready == 200 && d.as_ref().map(|d| (d.revision, &d.sha256)) == first.as_ref().map(|f| (f.revision, &f.sha256)));
        if let (true, Some(f)) = (same, first) {
            return f;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "replicas not ready and identical within 20 s: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Cluster {
    /// Waits until the nodes in `live` are ready with identical replicas (see
    /// [`identical_replicas`]).
    pub async fn identical(&self, live: &[usize]) -> plexus_api::StateDigest {
        let bases: Vec<String> = live.iter().map(|&i| self.url(i, "")).collect();
        identical_replicas(&self.http, &bases).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.procs.iter_mut().flatten() {
            // SAFETY: our own child; SIGCONT first in case a test stopped it.
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
