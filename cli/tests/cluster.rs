//! Controller clusters of real `plexus controller` processes on loopback.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use plexus_tests::Cluster;
use rustls::pki_types::pem::PemObject;
use serde_json::{json, Value};

fn net(name: &str) -> Value {
    json!({"name": name, "kind": {"type": "overlay"}, "subnet": "10.10.0.0/24"})
}

async fn create(c: &Cluster, node: usize, name: &str) -> reqwest::StatusCode {
    match c.http.post(c.url(node, "/v1/networks")).json(&net(name)).timeout(Duration::from_secs(10)).send().await {
        Ok(r) => {
            let s = r.status();
            if s != 201 {
                eprintln!("create {name} via node {node}: {s} {}", r.text().await.unwrap_or_default());
            }
            s
        }
        Err(e) => {
            eprintln!("create {name} via node {node}: {e}");
            reqwest::StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_writes_spread_over_three_nodes_are_identical_everywhere() {
    let c = Cluster::new(env!("CARGO_BIN_EXE_plexus"), 3, 1);
    c.leader(&[1, 2, 3]).await;
    let c = std::sync::Arc::new(c);
    let mut tasks = Vec::new();
    for w in 0..16usize {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for k in (w..1000).step_by(16) {
                // As any client should, retry a 503 (an election under load) a few times.
                let mut status = create(&c, k % 3 + 1, &format!("n{k}")).await;
                for _ in 0..5 {
                    if status != 503 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    status = create(&c, k % 3 + 1, &format!("n{k}")).await;
                    // A 503 may hide a write that did commit: then the retry finds it.
                    if status == 409 {
                        status = reqwest::StatusCode::CREATED;
                    }
                }
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
    let mut c = Cluster::new(env!("CARGO_BIN_EXE_plexus"), 3, 2);
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

async fn create_endpoint(c: &Cluster, node: usize, id: &str) -> reqwest::StatusCode {
    let body = json!({"id": id, "host": "h1"});
    match c.http.post(c.url(node, "/v1/networks/big/endpoints")).json(&body).timeout(Duration::from_secs(10)).send().await {
        Ok(r) => r.status(),
        Err(_) => reqwest::StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_resume_after_the_leader_is_killed_and_no_address_is_given_twice() {
    let mut c = Cluster::new(env!("CARGO_BIN_EXE_plexus"), 3, 3);
    let leader = c.leader(&[1, 2, 3]).await as usize;
    let ok = |r: reqwest::Response| assert!(r.status().is_success(), "{}", r.status());
    ok(c.http.put(c.url(1, "/v1/hosts/h1")).json(&json!({"name": "h1", "tunnel_ip": "192.0.2.11"})).send().await.unwrap());
    ok(c.http.post(c.url(2, "/v1/networks")).json(&json!({"name": "big", "kind": {"type": "overlay"}, "subnet": "10.50.0.0/16"})).send().await.unwrap());
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
        let id = format!("w{k}");
        if create_endpoint(&c, live[k % live.len()], &id).await == 201 {
            acked.push(id);
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
    c.converged(&[1, 2, 3], rev).await;
    let mut lists = Vec::new();
    for i in 1..=3 {
        lists.push(c.get(i, "/v1/networks/big/endpoints?local=true").await.unwrap());
    }
    assert_eq!(lists[0], lists[1]);
    assert_eq!(lists[1], lists[2]);
    let eps = lists[0].as_array().unwrap();
    let ids: BTreeSet<&str> = eps.iter().map(|e| e["id"].as_str().unwrap()).collect();
    for a in &acked {
        assert!(ids.contains(a.as_str()), "acknowledged endpoint {a} is missing");
    }
    let ips: BTreeSet<&str> = eps.iter().map(|e| e["ip"].as_str().unwrap()).collect();
    assert_eq!(ips.len(), eps.len(), "an address was allocated twice");
    eprintln!("{} endpoints acknowledged through a leader kill; longest gap {longest_gap:?}", acked.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_cut_off_from_the_majority_refuses_writes() {
    let mut c = Cluster::new(env!("CARGO_BIN_EXE_plexus"), 3, 4);
    let leader = c.leader(&[1, 2, 3]).await as usize;
    assert_eq!(create(&c, leader, "before").await, 201);
    // Freeze the two others: the leader is now a minority of one.
    for i in (1..=3).filter(|&i| i != leader) {
        c.signal(i, libc::SIGSTOP);
    }
    // Past an election timeout the leader knows nobody answers. (A write in the very
    // instant of a cut is answered 503 "may still be applied": Raft cannot know sooner.)
    tokio::time::sleep(Duration::from_millis(3000)).await;
    // It says it is not ready, and why, while it is still alive.
    let ready = c.http.get(c.url(leader, "/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "a node cut off from the majority is not ready");
    let why: Value = ready.json().await.unwrap();
    assert!(why["detail"].as_str().is_some_and(|d| d.contains("majority")), "{why}");
    assert!(c.get(leader, "/healthz").await.is_none(), "healthz answers text, not JSON");
    assert_eq!(c.http.get(c.url(leader, "/healthz")).send().await.unwrap().status(), 200, "alive all the same");
    let r = c.http.post(c.url(leader, "/v1/networks")).json(&net("during")).timeout(Duration::from_secs(15)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    assert!(p["detail"].as_str().unwrap().contains("majority") && p["detail"].as_str().unwrap().contains("nothing was written"), "{p}");
    for i in (1..=3).filter(|&i| i != leader) {
        c.signal(i, libc::SIGCONT);
    }
    c.leader(&[1, 2, 3]).await;
    let t = std::time::Instant::now();
    while c.http.get(c.url(leader, "/readyz")).send().await.unwrap().status() != 200 {
        assert!(t.elapsed() < Duration::from_secs(10), "ready again once the majority is back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The two nodes just thawed may still hold an election of their own (their timers ran
    // out while they were stopped); a read answers once it is over.
    let t = std::time::Instant::now();
    let list = loop {
        if let Some(v) = c.get(1, "/v1/networks").await {
            break v;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "node 1 answers reads again once the cluster has a leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names: Vec<String> = list.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_string()).collect();
    assert!(!names.contains(&"during".to_string()), "the refused write did not happen: {names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_join_and_leave_a_live_cluster_and_catch_up_from_a_snapshot() {
    let mut c = Cluster::empty(env!("CARGO_BIN_EXE_plexus"), 3, 5);
    // Alone, a node is a one-node cluster (the embedded default).
    c.spawn(1, &["--snapshot-every", "40"]);
    c.leader(&[1]).await;
    for k in 0..100 {
        assert_eq!(create(&c, 1, &format!("s{k}")).await, 201);
    }
    let st = c.get(1, "/v1/cluster").await.unwrap();
    assert!(st["snapshot_index"].as_u64().unwrap_or(0) >= 40, "a snapshot was taken: {st}");
    assert!(st["purged_index"].as_u64().is_some(), "the log was compacted: {st}");
    // Two more nodes join through node 1; the log they need is gone, so they start from
    // the snapshot.
    let a1 = c.cluster_addrs[0].clone();
    c.spawn(2, &["--join", &a1, "--snapshot-every", "40"]);
    c.spawn(3, &["--join", &a1, "--snapshot-every", "40"]);
    let t = Instant::now();
    loop {
        let m = c.get(1, "/v1/cluster").await.unwrap()["members"].as_array().map(Vec::len);
        if m == Some(3) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "nodes did not join");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lists = c.converged(&[1, 2, 3], 100).await;
    assert_eq!(lists[0], lists[1]);
    assert_eq!(lists[0], lists[2]);
    // Node 2 leaves, through the CLI; the other two carry on.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(["cluster", "remove-node", "2", "--cluster", &c.cluster_addrs[2]])
        .arg("--pki-dir")
        .arg(c.pki_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.signal(2, libc::SIGKILL);
    let members: Vec<u64> = c.get(1, "/v1/cluster").await.unwrap()["members"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(members, [1, 3]);
    assert_eq!(create(&c, 3, "after-leave").await, 201);
    // Node 1 restarts from its snapshot and log, without --join: it is still a member.
    c.signal(1, libc::SIGKILL);
    c.spawn(1, &["--snapshot-every", "40"]);
    c.leader(&[1, 3]).await;
    let lists = c.converged(&[1, 3], 101).await;
    assert_eq!(lists[0], lists[1]);
    assert_eq!(lists[0].as_array().unwrap().len(), 101);
}

/// A client for a node's cluster port that presents `client` and trusts `roots_from`'s CA.
fn cluster_client(client: &plexus_pki::Identity, roots_from: &plexus_pki::Identity) -> reqwest::Client {
    let id = plexus_pki::Identity { ca_pem: roots_from.ca_pem.clone(), ..client.clone() };
    plexus_controller::store::cluster_client(&id).expect("a cluster client")
}

/// What an attacker on the network could send, now refused harmlessly: Raft RPCs and
/// membership changes on the API port (gone), on the cluster port without a certificate,
/// with one of another CA or with a host's switch certificate (no TLS session), and with a
/// valid certificate but a term no honest peer can have (refused before openraft, which used to panic on it). After each, every node
/// agrees on a leader, the replicas are identical, and writes go on.
#[tokio::test(flavor = "multi_thread")]
async fn forged_raft_messages_and_anonymous_membership_changes_fail_harmlessly() {
    let c = Cluster::new(env!("CARGO_BIN_EXE_plexus"), 3, 6);
    c.leader(&[1, 2, 3]).await;
    assert_eq!(create(&c, 1, "before").await, 201);
    let absurd = json!({"vote": {"leader_id": {"term": u64::MAX, "node_id": 9}, "committed": true}, "last_log_id": null});
    let append = json!({"vote": {"leader_id": {"term": u64::MAX, "node_id": 9}, "committed": true}, "prev_log_id": null, "entries": [], "leader_commit": null});

    // The API port serves neither Raft nor membership any more.
    for (path, body) in [("/raft/vote", &absurd), ("/raft/append", &append), ("/v1/cluster/members", &json!({"id": 9, "addr": "192.0.2.99:7001"}))] {
        let r = c.http.post(c.url(1, path)).json(body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path} on the API port");
    }

    // The cluster port without a client certificate, or with one of another CA.
    let pki = c.pki_dir();
    let mine = plexus_pki::Ca::identity_in(&pki, "intruder", &[], plexus_pki::Usage::Operator).unwrap();
    // A host's switch certificate, from the same CA: good for OpenFlow, not for the cluster.
    let host = plexus_pki::Ca::identity_in(&pki, &plexus_pki::host_cert_name("h9"), &[], plexus_pki::Usage::Client).unwrap();
    let stranger_dir = c.dir.join("stranger-pki");
    let stranger = plexus_pki::Ca::identity_in(&stranger_dir, "node-9", &[], plexus_pki::Usage::Node).unwrap();
    let no_cert = {
        // Trusts the cluster's CA (so the server is accepted) but has no certificate to show.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from_pem_slice(mine.ca_pem.as_bytes()).unwrap()).unwrap();
        let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        plexus_api::client::http_builder().use_preconfigured_tls(tls).build().unwrap()
    };
    let wrong_ca = cluster_client(&stranger, &mine);
    let switch_cert = cluster_client(&host, &mine);
    for (who, client) in [("no certificate", &no_cert), ("another CA's certificate", &wrong_ca), ("a host's switch certificate", &switch_cert)] {
        for (path, body) in [("/raft/vote", &absurd), ("/cluster/members", &json!({"id": 9, "addr": "192.0.2.99:7001"}))] {
            let r = client.post(format!("https://{}{path}", c.cluster_addrs[0])).json(body).send().await;
            assert!(r.is_err(), "{who} reached {path}: {:?}", r.map(|r| r.status()));
        }
    }

    // A valid certificate, but a term no honest peer can send: refused, not applied.
    let member = cluster_client(&mine, &mine);
    for (path, body) in [("/raft/vote", &absurd), ("/raft/append", &append)] {
        for node in 0..3 {
            let r = member.post(format!("https://{}{path}", c.cluster_addrs[node])).json(body).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 422, "{path} with term u64::MAX on node {}", node + 1);
        }
    }

    // Every node still agrees on a leader, writes go on through any node, and the replicas
    // are identical.
    c.leader(&[1, 2, 3]).await;
    for node in 1..=3 {
        assert_eq!(create(&c, node, &format!("after{node}")).await, 201, "a write through node {node}");
    }
    let revision = c.get(1, "/v1/cluster").await.unwrap()["revision"].as_u64().unwrap();
    let lists = c.converged(&[1, 2, 3], revision).await;
    assert_eq!(lists[0], lists[1]);
    assert_eq!(lists[0], lists[2]);
    let digest = c.identical(&[1, 2, 3]).await;
    assert_eq!(digest.revision, revision, "every node ready, every replica the same");
    let members = c.get(1, "/v1/cluster").await.unwrap()["members"].as_array().map(Vec::len);
    assert_eq!(members, Some(3), "membership unchanged");
}

/// The writes that used to panic every replica or leave the model inconsistent, sent to a
/// 3-node cluster through different nodes: each is refused with a clear error naming the
/// field, no node dies, every node stays ready, the replicas stay identical, and writes go on.
#[tokio::test(flavor = "multi_thread")]
async fn writes_that_used_to_break_replicas_are_refused_and_every_node_stays_identical() {
    let c = Cluster::new(env!("CARGO_BIN_EXE_plexus"), 3, 7);
    c.leader(&[1, 2, 3]).await;
    let send = |node: usize, m: &'static str, path: &'static str, body: Value| {
        let r = c.http.request(reqwest::Method::from_bytes(m.as_bytes()).unwrap(), c.url(node, path)).json(&body).timeout(Duration::from_secs(10));
        async move {
            let r = r.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    for h in ["h1", "h2"] {
        let (s, b) = send(
            1,
            "PUT",
            if h == "h1" { "/v1/hosts/h1" } else { "/v1/hosts/h2" },
            json!({"name": h, "tunnel_ip": if h == "h1" { "192.0.2.11" } else { "192.0.2.12" }}),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }
    // The host-subnet sequence: h1 leases a block of 10.60.0.0/16; the subnet is then replaced
    // while h1 holds it, and an endpoint is created. It used to panic every node, for good.
    let hs = json!({"name": "hs", "kind": {"type": "overlay"}, "subnet": "10.60.0.0/16", "ipam": "host-subnet"});
    assert_eq!(send(2, "POST", "/v1/networks", hs).await.0, 201);
    assert_eq!(send(3, "POST", "/v1/networks/hs/endpoints", json!({"host": "h1"})).await.0, 201);
    let (s, p) = send(2, "PUT", "/v1/networks/hs", json!({"name": "hs", "kind": {"type": "overlay"}, "subnet": "10.61.0.0/16", "ipam": "host-subnet"})).await;
    assert_eq!(s, 409, "re-subnetting under live endpoints is refused: {p}");
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("endpoint")), "and says why: {p}");
    assert_eq!(send(3, "POST", "/v1/networks/hs/endpoints", json!({"host": "h1"})).await.0, 201, "the network still serves");
    assert_eq!(send(1, "POST", "/v1/networks/hs/endpoints", json!({"host": "h2"})).await.0, 201);
    c.identical(&[1, 2, 3]).await;

    // A gateway moved onto an address an endpoint holds.
    assert_eq!(send(1, "POST", "/v1/networks", json!({"name": "gw", "kind": {"type": "overlay"}, "subnet": "10.62.0.0/24"})).await.0, 201);
    assert_eq!(send(2, "POST", "/v1/networks/gw/endpoints", json!({"host": "h1", "ip": "10.62.0.9"})).await.0, 201);
    let (s, p) = send(3, "PUT", "/v1/networks/gw", json!({"name": "gw", "kind": {"type": "overlay"}, "subnet": "10.62.0.0/24", "gateway": "10.62.0.9"})).await;
    assert_eq!((s, p["field"].as_str()), (409, Some("gateway")), "{p}");
    c.identical(&[1, 2, 3]).await;

    // A MAC claimed by one endpoint (the one the next address would derive) blocks no one.
    assert_eq!(send(1, "POST", "/v1/networks", json!({"name": "mac", "kind": {"type": "overlay"}, "subnet": "10.63.0.0/24"})).await.0, 201);
    let (s, e) = send(2, "POST", "/v1/networks/mac/endpoints", json!({"host": "h1", "mac": "0a:58:0a:3f:00:03"})).await;
    assert_eq!(s, 201, "{e}");
    for _ in 0..5 {
        let (s, e) = send(3, "POST", "/v1/networks/mac/endpoints", json!({"host": "h2"})).await;
        assert_eq!(s, 201, "automatic allocation goes on: {e}");
    }
    let digest = c.identical(&[1, 2, 3]).await;
    // No node died on the way.
    for i in 1..=3 {
        assert_eq!(c.http.get(c.url(i, "/healthz")).send().await.unwrap().status(), 200, "node {i}");
    }
    assert!(digest.revision > 10, "{digest:?}");
}

/// Issue 16: a batch is one log entry, so a leader killed while batches are in flight leaves
/// each of them applied entirely or not at all, on every node, and every acknowledged batch
/// survives. 2,000-endpoint batches: one acknowledged, one in flight when the leader is
/// SIGKILLed, one sent to the dead leader.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_killed_in_the_middle_of_batches_leaves_each_whole_or_absent() {
    let mut c = Cluster::new(env!("CARGO_BIN_EXE_plexus"), 3, 8);
    let leader = c.leader(&[1, 2, 3]).await as usize;
    let ok = |r: reqwest::Response| assert!(r.status().is_success(), "{}", r.status());
    ok(c.http.put(c.url(leader, "/v1/hosts/h1")).json(&json!({"name": "h1", "tunnel_ip": "192.0.2.11"})).send().await.unwrap());
    const N: usize = 2000;
    let batch = |net: &str, subnet: &str| {
        let mut ops = vec![json!({"op": "put_network", "spec": {"name": net, "kind": {"type": "overlay"}, "subnet": subnet}})];
        ops.extend((0..N).map(|i| json!({"op": "create_endpoint", "network": net, "spec": {"id": format!("e{i}"), "host": "h1"}})));
        json!({"operations": ops})
    };
    // b0 acknowledged before the kill; b1 in flight when the leader dies; b2 sent to the dead
    // leader.
    let (http, url) = (c.http.clone(), c.url(leader, "/v1/batch"));
    let send = |k: usize| {
        let (http, url, body) = (http.clone(), url.clone(), batch(&format!("b{k}"), &format!("10.{}.0.0/16", 60 + k)));
        tokio::spawn(async move { http.post(url).json(&body).timeout(Duration::from_secs(20)).send().await.map(|r| r.status()) })
    };
    let first = send(0).await.unwrap();
    assert!(matches!(first, Ok(s) if s.is_success()), "b0: {first:?}");
    let in_flight = send(1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.signal(leader, libc::SIGKILL);
    let mut acked = vec!["b0".to_string()];
    if matches!(in_flight.await.unwrap(), Ok(s) if s.is_success()) {
        acked.push("b1".into());
    }
    let late = send(2).await.unwrap();
    assert!(!matches!(late, Ok(s) if s.is_success()), "a dead leader acknowledged b2: {late:?}");
    let survivors: Vec<usize> = (1..=3).filter(|&i| i != leader).collect();
    c.leader(&survivors).await;
    c.start(leader);
    c.leader(&[1, 2, 3]).await;
    let rev = c.get(survivors[0], "/v1/cluster").await.unwrap()["revision"].as_u64().unwrap();
    c.converged(&[1, 2, 3], rev).await;
    let mut whole = 0;
    for k in 0..3 {
        let net = format!("b{k}");
        let mut counts = Vec::new();
        for i in 1..=3 {
            let n = c.get(i, &format!("/v1/networks/{net}/endpoints?local=true")).await.and_then(|v| v.as_array().map(Vec::len));
            counts.push(n.unwrap_or(0));
        }
        assert!(counts.iter().all(|n| *n == counts[0]), "{net}: the nodes disagree: {counts:?}");
        assert!(counts[0] == 0 || counts[0] == N, "{net} is half applied: {} of {N} endpoints", counts[0]);
        if acked.contains(&net) {
            assert_eq!(counts[0], N, "{net} was acknowledged and is not all there");
        }
        whole += usize::from(counts[0] == N);
        if k == 2 {
            assert_eq!(counts[0], 0, "b2 never reached a live leader");
        }
    }
    eprintln!("acknowledged: {acked:?}; {whole} of 3 batches applied whole, the rest not at all");
}

/// Reads a counter from a node's Prometheus metrics.
async fn counter(c: &Cluster, node: usize, name: &str) -> f64 {
    let text = c.http.get(c.url(node, "/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(&format!("{name} ")).and_then(|v| v.trim().parse().ok())).unwrap_or_else(|| panic!("no {name} in the metrics"))
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_arriving_together_share_log_entries_and_each_gets_its_own_answer() {
    let c = std::sync::Arc::new(Cluster::new(env!("CARGO_BIN_EXE_plexus"), 3, 11));
    let leader = c.leader(&[1, 2, 3]).await as usize;
    let (flushes0, writes0) = (counter(&c, leader, "plexus_raft_log_flushes_total").await, counter(&c, leader, "plexus_raft_log_commands_flushed_total").await);
    // Every name twice, all at once: groups hold both creates of a name, and the model, applying
    // them one by one, accepts exactly one.
    let mut tasks = Vec::new();
    for k in 0..128usize {
        let c = c.clone();
        tasks.push(tokio::spawn(async move { (k % 64, create(&c, leader, &format!("g{}", k % 64)).await) }));
    }
    let mut by_name = std::collections::BTreeMap::<usize, Vec<u16>>::new();
    for t in tasks {
        let (n, s) = t.await.unwrap();
        by_name.entry(n).or_default().push(s.as_u16());
    }
    for (n, mut answers) in by_name {
        answers.sort();
        assert_eq!(answers, vec![201, 409], "g{n}: one create wins, the other is told it exists");
    }
    let (flushes, writes) =
        (counter(&c, leader, "plexus_raft_log_flushes_total").await - flushes0, counter(&c, leader, "plexus_raft_log_commands_flushed_total").await - writes0);
    // (A second create that arrives after the first was applied is refused before the log.)
    assert!(writes >= 64.0, "every accepted write went through the log: {writes}");
    assert!(writes / flushes > 1.5, "concurrent writes shared fsyncs: {writes} writes in {flushes} flushes");
    let names: BTreeSet<String> =
        c.get(leader, "/v1/networks").await.unwrap().as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names.len(), 64, "{names:?}");
    c.identical(&[1, 2, 3]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_watchers_of_one_change_cost_one_encoding() {
    let c = std::sync::Arc::new(Cluster::new(env!("CARGO_BIN_EXE_plexus"), 1, 13));
    c.leader(&[1]).await;
    assert_eq!(create(&c, 1, "before").await, 201);
    let since = c.get(1, "/v1/cluster").await.unwrap()["revision"].as_u64().unwrap();
    let (answers0, encodings0) = (counter(&c, 1, "plexus_watch_answers_total").await, counter(&c, 1, "plexus_watch_encodings_total").await);
    const WATCHERS: usize = 1000;
    let mut tasks = Vec::new();
    for _ in 0..WATCHERS {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let r = c.http.get(c.url(1, &format!("/v1/watch?since={since}&timeout=60"))).timeout(Duration::from_secs(90)).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }));
    }
    // Every watcher is waiting once the node has seen every connection; then one change.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(create(&c, 1, "after").await, 201);
    for t in tasks {
        let v = t.await.unwrap();
        let changes = v["changes"].as_array().unwrap();
        assert_eq!(changes.len(), 1, "{v}");
        assert_eq!(changes[0]["key"], "after", "{v}");
    }
    let (answers, encodings) =
        (counter(&c, 1, "plexus_watch_answers_total").await - answers0, counter(&c, 1, "plexus_watch_encodings_total").await - encodings0);
    assert_eq!(answers, WATCHERS as f64, "every watcher was answered by the node");
    assert_eq!(encodings, 1.0, "{WATCHERS} watchers of one change: one encoding");
}
