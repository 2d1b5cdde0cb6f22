//! A controller node busy with flow work must not look dead to its peers: its Raft and its
//! cluster port (health probes, heartbeats) run on threads of their own. Here the node's main
//! runtime is stalled outright — both of its workers blocked for seconds, as a thousand
//! switches' compiles and bundles would keep them — while another thread probes the cluster
//! port's `/healthz` as the leader's assigner does (300 ms deadline) and commits through Raft.
//! Before the split, every probe in the stall went unanswered: the leader would have moved
//! all of the node's switches.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use plexus_controller::model::Command;
use plexus_controller::node::{Node, NodeConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_port_and_raft_answer_while_the_main_runtime_is_stalled() {
    let dir = std::env::temp_dir().join(format!("plx-clrt-{}-{}", std::process::id(), plexus_api::ids::fnv1a(&format!("{:?}", Instant::now()))));
    let _cleanup = Cleanup(dir.clone());
    let cfg = NodeConfig {
        id: 1,
        listen: "127.0.0.1:0".parse().unwrap(),
        cluster_listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        pki_dir: None,
        data_dir: dir.join("node1"),
        peers: BTreeMap::new(),
        join: None,
        join_token: None,
        join_api: None,
        join_ca: None,
        snapshot_every: 1000,
        openflow_listen: None,
        insecure_http: false,
        api_names: Vec::new(),
    };
    let node = Node::start(cfg).await.expect("the node starts");
    // A peer's identity, issued by the node's CA: the cluster port admits nothing else.
    let pki = dir.join("node1").join("pki");
    let peer = plexus_pki::Ca::identity_in(&pki, "node-2", &["127.0.0.1".to_string()], plexus_pki::Usage::Node).expect("a peer identity");
    let http = plexus_controller::store::cluster_client_from(&peer, None).expect("a cluster client");
    let url = format!("https://{}/healthz", node.cluster_addr);
    let raft = node.raft.clone();

    // The prober: its own thread and runtime, like a peer's.
    let prober = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while http.get(&url).timeout(Duration::from_secs(2)).send().await.map(|r| r.status().is_success()).ok() != Some(true) {
                assert!(Instant::now() < deadline, "the cluster port never answered");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            while raft.metrics().borrow().current_leader != Some(1) {
                assert!(Instant::now() < deadline, "the node never led its one-node cluster");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Ready: the stall may begin; it lasts 3 s from the main runtime's side.
            STALL.wait();
            let t = Instant::now();
            let (mut probes, mut missed, mut slowest, mut commits) = (0, Vec::new(), Duration::ZERO, 0);
            while t.elapsed() < Duration::from_millis(2500) {
                let p = Instant::now();
                match http.get(&url).timeout(Duration::from_millis(300)).send().await {
                    Ok(r) if r.status().is_success() => slowest = slowest.max(p.elapsed()),
                    other => missed.push(format!("at {:?}: {:?}", t.elapsed(), other.map(|r| r.status()))),
                }
                probes += 1;
                if tokio::time::timeout(Duration::from_millis(500), raft.client_write(Command::SetMasters { masters: BTreeMap::new() }))
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    commits += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (probes, missed, slowest, commits)
        })
    });
    STALL.wait();
    // Both workers of the node's main runtime blocked at once.
    let blockers: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async {
                std::thread::sleep(Duration::from_secs(3));
            })
        })
        .collect();
    for b in blockers {
        b.await.unwrap();
    }
    let (probes, missed, slowest, commits) = prober.join().expect("the prober ran");
    eprintln!("{probes} probes during the stall, slowest answer {slowest:?}; {commits} Raft commits");
    assert!(missed.is_empty(), "health probes went unanswered while the main runtime was stalled: {missed:?}");
    assert!(probes >= 5 && commits >= 5, "the prober ran through the stall: {probes} probes, {commits} commits");
    node.shutdown().await;
}

/// Where the prober, ready, and the test meet: the stall starts as both pass it.
static STALL: std::sync::Barrier = std::sync::Barrier::new(2);

struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
