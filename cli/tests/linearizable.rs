//! A Jepsen-style check of the controller cluster: clients read and write a few keys through
//! every node while the leader is killed, cut off by a partition, paused, and killed and
//! restarted at once; afterwards a linearizability checker ([`plexus_tests::linearizable`])
//! judges each key's history. Every acknowledged write must be there, in an order consistent
//! with real time, and no read may be stale — which is what the leader lease promises.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexus_tests::linearizable::{linearizable, Kind, Op};
use plexus_tests::Cluster;
use serde_json::json;

const KEYS: usize = 4;
const CLIENTS: usize = 5;

/// What one client saw of one operation.
struct Record {
    key: usize,
    op: Op,
}

/// A small generator per client (no shared state, no dependency).
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// How a write's answer classifies it: taken effect, certainly not, or unknown.
enum Outcome {
    Ok,
    Failed,
    Unknown,
}

fn write_outcome(status: Option<u16>, body: &str) -> Outcome {
    match status {
        Some(200 | 201) => Outcome::Ok,
        Some(400..=499) => Outcome::Failed,
        // Said before anything was proposed.
        Some(503) if body.contains("nothing was written") || body.contains("no leader") || body.contains("leadership is changing") => Outcome::Failed,
        // A timeout, a cut connection, a leader lost after proposing: it may yet take effect.
        _ => Outcome::Unknown,
    }
}

/// The nodes as clients see them: one HTTP client, each node's API base URL.
#[derive(Clone)]
struct Nodes {
    http: reqwest::Client,
    bases: Vec<String>,
}

impl Nodes {
    fn url(&self, node: usize, path: &str) -> String {
        format!("{}{path}", self.bases[node - 1])
    }
}

async fn client(c: Nodes, n: usize, t0: Instant, stop: Arc<AtomicBool>, out: Arc<Mutex<Vec<Record>>>) {
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15 ^ ((n as u64 + 1) * 0x1234_5678));
    let mut seq = 0u32;
    let now = || t0.elapsed().as_nanos() as u64;
    while !stop.load(Ordering::Relaxed) {
        let key = rng.next() as usize % KEYS;
        let node = 1 + rng.next() as usize % 3;
        let name = format!("k{key}");
        if rng.next().is_multiple_of(2) {
            seq += 1;
            let v = (n as u32) * 1_000_000 + seq;
            let body = json!({"name": name, "kind": {"type": "overlay"}, "subnet": "10.10.0.0/24", "labels": {"v": v.to_string()}});
            let call = now();
            let r = c.http.put(c.url(node, &format!("/v1/networks/{name}"))).json(&body).timeout(Duration::from_secs(3)).send().await;
            let (status, text) = match r {
                Ok(r) => (Some(r.status().as_u16()), r.text().await.unwrap_or_default()),
                Err(_) => (None, String::new()),
            };
            let ret = now();
            let op = match write_outcome(status, &text) {
                Outcome::Ok => Some(Op { call, ret: Some(ret), kind: Kind::Write(v) }),
                Outcome::Unknown => Some(Op { call, ret: None, kind: Kind::Write(v) }),
                Outcome::Failed => None,
            };
            if let Some(op) = op {
                out.lock().unwrap().push(Record { key, op });
            }
        } else {
            let call = now();
            let r = c.http.get(c.url(node, &format!("/v1/networks/{name}"))).timeout(Duration::from_secs(3)).send().await;
            let read = match r {
                Ok(r) if r.status() == 404 => Some(None),
                Ok(r) if r.status() == 200 => {
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    Some(Some(v["labels"]["v"].as_str().and_then(|s| s.parse::<u32>().ok()).expect("a stored network without its value")))
                }
                // No answer: the read read nothing.
                _ => None,
            };
            let ret = now();
            if let Some(seen) = read {
                out.lock().unwrap().push(Record { key, op: Op { call, ret: Some(ret), kind: Kind::Read(seen) } });
            }
        }
        tokio::time::sleep(Duration::from_millis(3 + rng.next() % 10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_and_writes_stay_linearizable_through_leader_kills_a_partition_and_a_pause() {
    let mut c = Cluster::new(env!("CARGO_BIN_EXE_plexus"), 3, 12);
    c.leader(&[1, 2, 3]).await;
    let history = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    // The nemesis holds the cluster (to kill and restart nodes); clients hold its addresses.
    let nodes = Nodes { http: c.http.clone(), bases: (1..=3).map(|i| c.url(i, "")).collect() };
    let tasks: Vec<_> = (0..CLIENTS).map(|n| tokio::spawn(client(nodes.clone(), n, t0, stop.clone(), history.clone()))).collect();
    let settle = |ms| tokio::time::sleep(Duration::from_millis(ms));

    settle(2000).await;
    let l = c.leader(&[1, 2, 3]).await as usize;
    eprintln!("nemesis: SIGKILL of leader {l}");
    c.signal(l, libc::SIGKILL);
    settle(2500).await;
    c.start(l);
    let l = c.leader(&[1, 2, 3]).await as usize;
    settle(1500).await;
    eprintln!("nemesis: leader {l} cut off from the others");
    let cut = c.isolate(l);
    settle(5000).await;
    drop(cut);
    let l = c.leader(&[1, 2, 3]).await as usize;
    settle(1500).await;
    eprintln!("nemesis: leader {l} paused");
    c.signal(l, libc::SIGSTOP);
    settle(4000).await;
    c.signal(l, libc::SIGCONT);
    let l = c.leader(&[1, 2, 3]).await as usize;
    settle(1500).await;
    // Back before the others can elect anyone: the restart must not bring back its old term.
    eprintln!("nemesis: SIGKILL of leader {l} and a restart at once");
    c.signal(l, libc::SIGKILL);
    c.start(l);
    c.leader(&[1, 2, 3]).await;
    settle(2000).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let history = std::mem::take(&mut *history.lock().unwrap());
    let (mut reads, mut acked, mut unknown) = (0, 0, 0);
    for r in &history {
        match (r.op.kind, r.op.ret) {
            (Kind::Read(_), _) => reads += 1,
            (Kind::Write(_), Some(_)) => acked += 1,
            (Kind::Write(_), None) => unknown += 1,
        }
    }
    eprintln!("history: {reads} reads, {acked} acknowledged writes, {unknown} writes of unknown outcome over {KEYS} keys");
    assert!(reads > 200 && acked > 200, "too little traffic to judge: {reads} reads, {acked} writes");
    for key in 0..KEYS {
        let ops: Vec<Op> = history.iter().filter(|r| r.key == key).map(|r| r.op).collect();
        if !linearizable(&ops) {
            let dump = c.dir.join(format!("history-k{key}.txt"));
            let text: String = ops.iter().map(|o| format!("{:?}\n", o)).collect();
            let _ = std::fs::write(&dump, text);
            panic!("key k{key}: the history of {} operations is not linearizable (written to {})", ops.len(), dump.display());
        }
    }
    c.identical(&[1, 2, 3]).await;
}

/// A leader killed just after acknowledging a write and restarted at once must not answer
/// from a replica that lacks the write. (openraft would restore a restarted node as the leader
/// of its old term, with a state machine rebuilt only up to the last commit index it had
/// flushed; the lease then vouched for that replica. Found by the history test above.)
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_killed_and_restarted_at_once_answers_no_stale_read() {
    let mut c = Cluster::new(env!("CARGO_BIN_EXE_plexus"), 3, 14);
    let (mut answered, mut restored) = (0, 0);
    for round in 1..=6u32 {
        let l = c.leader(&[1, 2, 3]).await as usize;
        let body = json!({"name": "k", "kind": {"type": "overlay"}, "subnet": "10.10.0.0/24", "labels": {"v": round.to_string()}});
        let r = c.http.put(c.url(l, "/v1/networks/k")).json(&body).timeout(Duration::from_secs(5)).send().await.expect("a write through the leader");
        assert!(r.status().is_success(), "round {round}: the write was refused: {}", r.status());
        c.signal(l, libc::SIGKILL);
        c.start(l);
        // Read through the restarted node as soon as it answers (it forwards to the leader
        // when it does not lead), for 3 s.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            let r = c.http.get(c.url(l, "/v1/networks/k")).timeout(Duration::from_secs(2)).send().await;
            if let Ok(r) = r {
                if r.status().is_success() {
                    let v: serde_json::Value = r.json().await.expect("a network as JSON");
                    let seen = v["labels"]["v"].as_str().and_then(|s| s.parse::<u32>().ok());
                    assert_eq!(seen, Some(round), "round {round}: node {l}, restarted, answered a value older than the acknowledged write");
                    answered += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if c.leader(&[1, 2, 3]).await as usize == l {
            restored += 1;
        }
    }
    eprintln!("{answered} reads answered after restarts; the restarted node led again {restored} times of 6");
    assert!(answered > 50, "too few reads answered to judge: {answered}");
}
