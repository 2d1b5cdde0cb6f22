//! Controller clusters of real `plexus controller` processes on loopback.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A cluster of controller processes, each on its own loopback address (127.X.Y.id, X.Y from
/// this test's pid), killed by pid when dropped.
struct Cluster {
    procs: Vec<Option<Child>>,
    addrs: Vec<String>,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Cluster {
    fn new(n: usize, tag: u8) -> Cluster {
        let pid = std::process::id();
        let addrs: Vec<String> = (1..=n).map(|i| format!("127.{}.{}.{}:7000", (pid >> 8) & 0xff, pid & 0xff, tag as usize * 10 + i)).collect();
        let dir = std::env::temp_dir().join(format!("plexus-cluster-{pid}-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut c = Cluster { procs: (0..n).map(|_| None).collect(), addrs, dir, http: reqwest::Client::new() };
        for i in 1..=n {
            c.start(i);
        }
        c
    }

    fn start(&mut self, i: usize) {
        let peers: Vec<String> = self.addrs.iter().enumerate().map(|(j, a)| format!("{}={a}", j + 1)).collect();
        let log = std::fs::File::create(self.dir.join(format!("node{i}.log"))).ok();
        let _ = std::fs::create_dir_all(&self.dir);
        let log = log.or_else(|| std::fs::File::create(self.dir.join(format!("node{i}.log"))).ok()).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_plexus"))
            .args(["controller", "--id", &i.to_string(), "--listen", &self.addrs[i - 1]])
            .arg("--data-dir")
            .arg(self.dir.join(format!("node{i}")))
            .arg("--peers")
            .arg(peers.join(","))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start plexus controller");
        self.procs[i - 1] = Some(child);
    }

    fn signal(&mut self, i: usize, sig: i32) {
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

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{path}", self.addrs[i - 1])
    }

    async fn get(&self, i: usize, path: &str) -> Option<Value> {
        let r = self.http.get(self.url(i, path)).timeout(Duration::from_secs(5)).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    /// Waits until every live node names the same leader; returns it.
    async fn leader(&self, live: &[usize]) -> u64 {
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
    async fn converged(&self, live: &[usize], revision: u64) -> Vec<Value> {
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

fn net(name: &str) -> Value {
    json!({"name": name, "kind": {"type": "overlay"}, "subnet": "10.10.0.0/24"})
}

async fn create(c: &Cluster, node: usize, name: &str) -> reqwest::StatusCode {
    match c.http.post(c.url(node, "/v1/networks")).json(&net(name)).timeout(Duration::from_secs(10)).send().await {
        Ok(r) => r.status(),
        Err(_) => reqwest::StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_writes_spread_over_three_nodes_are_identical_everywhere() {
    let c = Cluster::new(3, 1);
    c.leader(&[1, 2, 3]).await;
    let c = std::sync::Arc::new(c);
    let mut tasks = Vec::new();
    for w in 0..16usize {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for k in (w..1000).step_by(16) {
                let status = create(&c, k % 3 + 1, &format!("n{k}")).await;
                assert_eq!(status, 201, "write n{k} through node {}", k % 3 + 1);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let lists = c.converged(&[1, 2, 3], 1000).await;
    assert_eq!(lists[0].as_array().unwrap().len(), 1000);
    assert_eq!(lists[0], lists[1]);
    assert_eq!(lists[1], lists[2]);
    let vnis: BTreeSet<u64> = lists[0].as_array().unwrap().iter().map(|n| n["kind"]["vni"].as_u64().unwrap()).collect();
    assert_eq!(vnis.len(), 1000, "every network got its own VNI");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_of_every_node_from_its_data_dir_keeps_the_state() {
    let mut c = Cluster::new(3, 2);
    c.leader(&[1, 2, 3]).await;
    for k in 0..30 {
        assert_eq!(create(&c, k % 3 + 1, &format!("r{k}")).await, 201);
    }
    let before = c.converged(&[1, 2, 3], 30).await;
    for i in 1..=3 {
        c.signal(i, libc::SIGKILL);
    }
    for i in 1..=3 {
        c.start(i);
    }
    c.leader(&[1, 2, 3]).await;
    let after = c.converged(&[1, 2, 3], 30).await;
    assert_eq!(before, after);
    assert_eq!(create(&c, 2, "r-after").await, 201, "the restarted cluster takes writes");
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_resume_after_the_leader_is_killed_and_nothing_acknowledged_is_lost() {
    let mut c = Cluster::new(3, 3);
    let leader = c.leader(&[1, 2, 3]).await as usize;
    let survivors: Vec<usize> = (1..=3).filter(|&i| i != leader).collect();
    let mut acked = Vec::new();
    let mut longest_gap = Duration::ZERO;
    let mut last_ok = Instant::now();
    let t = Instant::now();
    let mut killed = false;
    let mut k = 0;
    while t.elapsed() < Duration::from_secs(6) || !killed {
        if !killed && t.elapsed() > Duration::from_secs(1) {
            c.signal(leader, libc::SIGKILL);
            killed = true;
        }
        let live: Vec<usize> = if killed { survivors.clone() } else { vec![1, 2, 3] };
        let node = live[k % live.len()];
        let name = format!("w{k}");
        if create(&c, node, &name).await == 201 {
            acked.push(name);
            longest_gap = longest_gap.max(last_ok.elapsed());
            last_ok = Instant::now();
        }
        k += 1;
    }
    assert!(last_ok.elapsed() < Duration::from_secs(1), "writes resumed after the kill");
    assert!(longest_gap < Duration::from_secs(5), "writes stalled for {longest_gap:?}");
    c.start(leader);
    c.leader(&[1, 2, 3]).await;
    let rev = c.get(survivors[0], "/v1/cluster").await.unwrap()["revision"].as_u64().unwrap();
    let lists = c.converged(&[1, 2, 3], rev).await;
    for l in &lists {
        let names: BTreeSet<&str> = l.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
        for a in &acked {
            assert!(names.contains(a.as_str()), "acknowledged write {a} is missing");
        }
    }
    assert_eq!(lists[0], lists[2]);
    eprintln!("{} writes acknowledged; longest gap {longest_gap:?}", acked.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_cut_off_from_the_majority_refuses_writes() {
    let mut c = Cluster::new(3, 4);
    let leader = c.leader(&[1, 2, 3]).await as usize;
    assert_eq!(create(&c, leader, "before").await, 201);
    // Freeze the two others: the leader is now a minority of one.
    for i in (1..=3).filter(|&i| i != leader) {
        c.signal(i, libc::SIGSTOP);
    }
    let r = c.http.post(c.url(leader, "/v1/networks")).json(&net("during")).timeout(Duration::from_secs(15)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    assert!(p["detail"].as_str().unwrap().contains("majority"), "{p}");
    for i in (1..=3).filter(|&i| i != leader) {
        c.signal(i, libc::SIGCONT);
    }
    c.leader(&[1, 2, 3]).await;
    let names: Vec<String> = c.get(1, "/v1/networks").await.unwrap().as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_string()).collect();
    assert!(!names.contains(&"during".to_string()), "the refused write did not happen: {names:?}");
}
