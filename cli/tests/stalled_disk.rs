//! A leader replicates its new entries while its own disk is still flushing them, yet nobody
//! sees an entry before it is on the leader's disk too; a leader whose disk stays stuck gives
//! way to another. The leader's data directory is a filesystem of its own; freezing it stalls
//! the leader's disk as a stuck one would.

use std::time::{Duration, Instant};

use plexus_tests::{Cluster, LoopFs};
use serde_json::{json, Value};

async fn status(c: &Cluster, node: usize) -> Value {
    c.get(node, "/v1/cluster").await.unwrap_or_else(|| panic!("node {node} gave no cluster status (logs in {})", c.dir.display()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_leader_disk_holds_back_what_anybody_sees_then_another_node_leads() {
    let mut c = Cluster::empty(env!("CARGO_BIN_EXE_plexus"), 3, 14);
    // Declared after the cluster, dropped before it: thawed before its nodes are killed.
    let mut disks: Vec<LoopFs> = (1..=3).map(|i| LoopFs::new(&c.dir.join(format!("node{i}")))).collect();
    for i in 1..=3 {
        c.start(i);
    }
    let leader = c.leader(&[1, 2, 3]).await as usize;
    let net = |name: &str| json!({"name": name, "kind": {"type": "overlay"}, "subnet": "10.10.0.0/24"});
    let r = c.http.post(c.url(leader, "/v1/networks")).json(&net("before")).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let settled = c.identical(&[1, 2, 3]).await;
    let logged = status(&c, leader).await["last_log_index"].as_u64().unwrap();

    disks[leader - 1].freeze();
    let write = tokio::spawn({
        let (http, url, body) = (c.http.clone(), c.url(leader, "/v1/networks"), net("stalled"));
        async move { http.post(url).json(&body).timeout(Duration::from_secs(60)).send().await.map(|r| r.status()) }
    });
    // The entry reaches both followers' logs (they answer the leader only once it is on their
    // own disks): replication did not wait for the leader's flush.
    let followers: Vec<usize> = (1..=3).filter(|&i| i != leader).collect();
    let t = Instant::now();
    for &f in &followers {
        loop {
            let s = status(&c, f).await;
            assert_eq!(s["leader"].as_u64(), Some(leader as u64), "node {f} lost its leader over a slow disk: {s}");
            if s["last_log_index"].as_u64() > Some(logged) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(5), "node {f} did not get the leader's entry while the leader's disk was stalled: {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A majority has it on disk, but the leader does not: nobody applies it, the client is not
    // answered, and the followers keep their leader (a second: well within the stall limit).
    for _ in 0..5 {
        assert!(!write.is_finished(), "the write was answered before the leader had it on disk: {:?}", write.await);
        for i in 1..=3 {
            let s = status(&c, i).await;
            assert_eq!(s["revision"].as_u64(), Some(settled.revision), "node {i} applied the entry before the leader had it on disk: {s}");
            assert_eq!(s["leader"].as_u64(), Some(leader as u64), "node {i} lost its leader over a slow disk: {s}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Stuck for longer than the stall limit, the leader stops leading; the followers elect one
    // of themselves, which commits the entry they hold, and takes writes.
    let t = Instant::now();
    let new = loop {
        let seen: Vec<Option<u64>> = [status(&c, followers[0]).await, status(&c, followers[1]).await].iter().map(|s| s["leader"].as_u64()).collect();
        if seen[0] == seen[1] && seen[0].is_some_and(|l| l != leader as u64) {
            break seen[0].unwrap_or_default() as usize;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no other node took over from a leader with a stuck disk: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("node {new} leads after {:?} of the leader's disk stuck", t.elapsed());
    let r = c.http.post(c.url(new, "/v1/networks")).json(&net("after")).timeout(Duration::from_secs(10)).send().await.unwrap();
    assert_eq!(r.status(), 201);

    // Thawed, the old leader ends the write it held (its outcome was decided by the new
    // leader), rejoins, and every node has both networks.
    disks[leader - 1].thaw();
    let ended = tokio::time::timeout(Duration::from_secs(15), write).await.expect("the held write ends once the disk thaws").unwrap();
    eprintln!("the write held by the old leader ended with {ended:?}");
    let now = c.identical(&[1, 2, 3]).await;
    assert!(now.revision > settled.revision, "every node has the writes: {now:?}");
    for i in 1..=3 {
        for name in ["stalled", "after"] {
            assert!(c.get(i, &format!("/v1/networks/{name}")).await.is_some(), "node {i} lacks network {name}");
        }
    }
}
