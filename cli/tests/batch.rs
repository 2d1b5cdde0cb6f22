//! Batches (`POST /v1/batch`): many changes in one request and one log entry, all or nothing,
//! against a real controller.

use std::collections::BTreeSet;

use plexus_tests::api::{net, Api};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_one_log_entry_and_all_or_nothing() {
    let api = Api::start(env!("CARGO_BIN_EXE_plexus"), 21).await;
    api.ok("PUT", "/v1/hosts/h1", json!({"name": "h1", "tunnel_ip": "192.0.2.11"})).await;
    let before = api.log_index().await.expect("log index");
    // A network and 1,000 endpoints, addresses allocated by the state machine.
    let mut ops = vec![json!({"op": "put_network", "spec": net("big", "10.60.0.0/20")})];
    ops.extend((0..1000).map(|i| json!({"op": "create_endpoint", "network": "big", "spec": {"id": format!("e{i}"), "host": "h1", "labels": {"app": "web"}}})));
    let (s, _, out) = api.send("POST", "/v1/batch", Some(json!({"operations": ops}).to_string()), &[]).await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out.as_array().map(Vec::len), Some(1001), "one object per operation");
    assert_eq!(api.log_index().await, Some(before + 1), "the whole batch is one log entry");
    let eps = api.c.get(1, "/v1/networks/big/endpoints").await.expect("endpoints");
    let ips: BTreeSet<&str> = eps.as_array().into_iter().flatten().filter_map(|e| e["ip"].as_str()).collect();
    assert_eq!(ips.len(), 1000, "1,000 endpoints, every address distinct");

    // One bad operation anywhere refuses the batch, names it, and changes nothing.
    let snapshot = api.snapshot().await;
    let index = api.log_index().await;
    let cases: Vec<(Vec<Value>, u16, &str)> = vec![
        (
            vec![
                json!({"op": "put_network", "spec": net("more", "10.61.0.0/24")}),
                json!({"op": "create_endpoint", "network": "more", "spec": {"host": "h1"}}),
                json!({"op": "delete_endpoint", "network": "big", "id": "nope"}),
            ],
            404,
            "operations[2].id",
        ),
        (
            vec![json!({"op": "put_network", "spec": net("more", "10.61.0.0/24")}), json!({"op": "put_network", "spec": net("bad", "10.62.0.1/24")})],
            422,
            "operations[1].spec.subnet",
        ),
        (
            vec![
                json!({"op": "create_endpoint", "network": "big", "spec": {"host": "h1", "ip": "10.60.9.9"}}),
                json!({"op": "create_endpoint", "network": "big", "spec": {"host": "h1", "ip": "10.60.9.9"}}),
            ],
            409,
            "operations[1].ip",
        ),
        (vec![json!({"op": "set_endpoint_labels", "network": "big", "id": "e1", "labels": {"app": "a b"}})], 422, "operations[0].labels.app"),
        (vec![], 422, "operations"),
    ];
    for (ops, status, field) in cases {
        let (s, ct, p) = api.send("POST", "/v1/batch", Some(json!({"operations": ops}).to_string()), &[]).await;
        assert_eq!((s, ct.as_str()), (status, "application/problem+json"), "{p}");
        assert_eq!(p["field"], field, "{p}");
    }
    let (s, _, _) = api.send("POST", "/v1/batch", Some(json!({"operations": [{"op": "spend_token"}]}).to_string()), &[]).await;
    assert_eq!(s, 400, "an unknown operation is a malformed body");
    assert_eq!(api.snapshot().await, snapshot, "no refused batch changed anything");
    assert_eq!(api.log_index().await, index, "no refused batch reached the log");
}
