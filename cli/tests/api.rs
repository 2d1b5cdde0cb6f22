//! The REST API of a controller: what NetOps do with it. What bad input gets back is in
//! `api_errors.rs`.

use std::time::Duration;

use plexus_tests::api::{net, Api};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn addresses_are_allocated_honoured_refused_and_freed() {
    let api = Api::start(env!("CARGO_BIN_EXE_plexus"), 6).await;
    api.ok("PUT", "/v1/hosts/h1", json!({"name": "h1", "tunnel_ip": "192.0.2.11"})).await;
    api.ok("POST", "/v1/networks", json!({"name": "tiny", "kind": {"type": "overlay"}, "subnet": "10.20.0.0/29"})).await;
    let ep = |ip: Option<&str>| match ip {
        Some(ip) => json!({"host": "h1", "ip": ip}),
        None => json!({"host": "h1"}),
    };
    // The Pipework case: a chosen address.
    let e = api.ok("POST", "/v1/networks/tiny/endpoints", ep(Some("10.20.0.5"))).await;
    assert_eq!(e["ip"], "10.20.0.5");
    assert_eq!(e["gateway"], "10.20.0.1");
    assert_eq!(e["mac"], "0a:58:0a:14:00:05");
    let mut got = vec![];
    for _ in 0..4 {
        got.push(api.ok("POST", "/v1/networks/tiny/endpoints", ep(None)).await["ip"].as_str().unwrap().to_string());
    }
    assert_eq!(got, ["10.20.0.2", "10.20.0.3", "10.20.0.4", "10.20.0.6"], "lowest free, skipping gateway and taken");
    let (s, _, p) = api.send("POST", "/v1/networks/tiny/endpoints", Some(ep(None).to_string()), &[]).await;
    assert_eq!(s, 409);
    assert!(p["detail"].as_str().unwrap().contains("no address left"), "{p}");
    // Freeing one makes it available again, to whoever asks for it.
    let id = e["id"].as_str().unwrap();
    assert_eq!(api.send("DELETE", &format!("/v1/networks/tiny/endpoints/{id}"), None, &[]).await.0, 204);
    assert_eq!(api.ok("POST", "/v1/networks/tiny/endpoints", ep(Some("10.20.0.5"))).await["ip"], "10.20.0.5");
    // A network with endpoints goes only when forced, and takes them along.
    assert_eq!(api.send("DELETE", "/v1/networks/tiny", None, &[]).await.0, 409);
    assert_eq!(api.send("DELETE", "/v1/networks/tiny?force=true", None, &[]).await.0, 204);
    assert_eq!(api.send("GET", "/v1/networks/tiny/endpoints", None, &[]).await.0, 404);
    // Conditional writes.
    let n = api.ok("POST", "/v1/networks", json!({"name": "cond", "kind": {"type": "overlay"}, "subnet": "10.21.0.0/24"})).await;
    let rev = n["revision"].as_u64().unwrap().to_string();
    let (s, _, _) = api
        .send(
            "PUT",
            "/v1/networks/cond",
            Some(json!({"name": "cond", "kind": {"type": "overlay"}, "subnet": "10.21.0.0/24", "mtu": 1400}).to_string()),
            &[("if-match", &rev)],
        )
        .await;
    assert_eq!(s, 200);
    let (s, _, _) = api
        .send(
            "PUT",
            "/v1/networks/cond",
            Some(json!({"name": "cond", "kind": {"type": "overlay"}, "subnet": "10.21.0.0/24", "mtu": 1300}).to_string()),
            &[("if-match", &rev)],
        )
        .await;
    assert_eq!(s, 412, "a stale revision is refused");
    // PUT of the same spec is idempotent: the revision does not move.
    let a = api.ok("PUT", "/v1/networks/cond", json!({"name": "cond", "kind": {"type": "overlay"}, "subnet": "10.21.0.0/24", "mtu": 1400})).await;
    let b = api.ok("PUT", "/v1/networks/cond", json!({"name": "cond", "kind": {"type": "overlay"}, "subnet": "10.21.0.0/24", "mtu": 1400})).await;
    assert_eq!(a, b);
    let metrics = api.c.http.get(api.c.url(1, "/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("plexus_raft_is_leader 1") && metrics.contains("plexus_networks 1"), "{metrics}");
    assert_eq!(api.send("GET", "/healthz", None, &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_manages_networks_and_endpoints() {
    let api = Api::start(env!("CARGO_BIN_EXE_plexus"), 7).await;
    api.ok("PUT", "/v1/hosts/h1", json!({"name": "h1", "tunnel_ip": "192.0.2.11"})).await;
    let envs = api.c.envs(1);
    let plexus = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_plexus")).args(args).envs(envs.clone()).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, out, err) = plexus(&["network", "create", "red", "--subnet", "10.30.0.0/24", "--vni", "42", "--label", "team=netops"]);
    assert!(ok, "{err}");
    assert!(out.contains("red") && out.contains("vni=42"), "{out}");
    let (ok, out, err) = plexus(&["endpoint", "create", "--network", "red", "--host", "h1", "--ip", "10.30.0.9", "-o", "json"]);
    assert!(ok, "{err}");
    let e: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["ip"], "10.30.0.9");
    let (ok, _, err) = plexus(&["endpoint", "create", "--network", "red", "--host", "h1", "--ip", "10.30.0.9"]);
    assert!(!ok && err.contains("already taken") && err.contains("field ip"), "a clear error: {err}");
    assert!(!err.contains("backtrace"), "{err}");
    let (ok, out, _) = plexus(&["network", "list", "-o", "json"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["labels"]["team"], "netops");
    let (ok, _, err) = plexus(&["network", "delete", "red"]);
    assert!(!ok && err.contains("force"), "{err}");
    let (ok, _, err) = plexus(&["network", "delete", "red", "--force"]);
    assert!(ok, "{err}");
    let (ok, out, _) = plexus(&["cluster", "status"]);
    assert!(ok && out.contains("Leader"), "{out}");
    let (ok, _, err) = plexus(&["network", "list", "--api", "http://127.0.0.1:1"]);
    assert!(!ok && err.contains("no controller answered"), "{err}");
    let (ok, _, err) = plexus(&["network", "create", "x", "--subnet", "10.0.0.0/24", "--label", "novalue"]);
    assert!(!ok && err.contains("KEY=VALUE"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_validates_and_lists_every_route() {
    let api = Api::start(env!("CARGO_BIN_EXE_plexus"), 8).await;
    let text = api.c.http.get(api.c.url(1, "/v1/openapi.json")).send().await.unwrap().text().await.unwrap();
    let spec = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    // Every error response is documented as a problem document.
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut errors = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, resp) in op["responses"].as_object().into_iter().flatten() {
                if status.starts_with('4') || status.starts_with('5') {
                    errors += 1;
                    let schema = &resp["content"]["application/problem+json"]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/Problem", "{method} {path} {status}: {resp}");
                }
            }
        }
    }
    assert!(errors >= 40, "only {errors} error responses documented");
    let paths = spec.paths.clone().unwrap_or_default();
    let mut listed = Vec::new();
    for (path, item) in &paths {
        for (method, _) in item.methods() {
            listed.push((method.to_string().to_uppercase(), path.clone()));
        }
    }
    listed.sort();
    let want = [
        ("DELETE", "/v1/networks/{name}"),
        ("DELETE", "/v1/networks/{name}/endpoints/{id}"),
        ("DELETE", "/v1/policies/{name}"),
        ("DELETE", "/v1/routers/{name}"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/readyz"),
        ("GET", "/v1/cluster"),
        ("GET", "/v1/cluster/state"),
        ("GET", "/v1/hosts"),
        ("GET", "/v1/hosts/{name}"),
        ("GET", "/v1/hosts/{name}/edge"),
        ("GET", "/v1/hosts/{name}/flows"),
        ("GET", "/v1/hosts/{name}/names"),
        ("GET", "/v1/hosts/{name}/trace-jobs"),
        ("GET", "/v1/networks"),
        ("GET", "/v1/networks/{name}"),
        ("GET", "/v1/networks/{name}/endpoints"),
        ("GET", "/v1/networks/{name}/endpoints/{id}"),
        ("GET", "/v1/networks/{name}/leases"),
        ("GET", "/v1/openapi.json"),
        ("GET", "/v1/policies"),
        ("GET", "/v1/policies/{name}"),
        ("GET", "/v1/policies/{name}/counters"),
        ("GET", "/v1/routers"),
        ("GET", "/v1/routers/{name}"),
        ("GET", "/v1/switches"),
        ("GET", "/v1/watch"),
        ("POST", "/v1/batch"),
        ("POST", "/v1/bootstrap/agent"),
        ("POST", "/v1/bootstrap/node"),
        ("POST", "/v1/hosts/{name}/trace-jobs/{id}"),
        ("POST", "/v1/networks"),
        ("POST", "/v1/networks/{name}/endpoints"),
        ("POST", "/v1/policies"),
        ("POST", "/v1/routers"),
        ("POST", "/v1/trace"),
        ("PUT", "/v1/hosts/{name}"),
        ("PUT", "/v1/networks/{name}"),
        ("PUT", "/v1/networks/{name}/endpoints/{id}/labels"),
        ("PUT", "/v1/networks/{name}/endpoints/{id}/publish"),
        ("PUT", "/v1/policies/{name}"),
        ("PUT", "/v1/routers/{name}"),
    ];
    let want: Vec<(String, String)> = want.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(listed, want);
    // Every documented route is served (the fallback answers "no such route" otherwise).
    for (method, path) in &listed {
        let concrete = path.replace("{name}", "nope").replace("{id}", "nope").replace("/v1/watch", "/v1/watch?since=0&timeout=0");
        let (s, _, p) = api.send(method, &concrete, Some("{}".into()), &[]).await;
        assert_ne!(s, 405, "{method} {path}");
        assert!(p["detail"] != "no such route", "{method} {path} is documented but not served");
    }
    let (s, _, p) = api.send("GET", "/v1/undocumented", None, &[]).await;
    assert_eq!((s, p["detail"].as_str()), (404, Some("no such route")));
    for schema in ["Network", "NetworkSpec", "Endpoint", "EndpointSpec", "Host", "HostSpec", "Problem", "ClusterStatus"] {
        assert!(text.contains(&format!("\"{schema}\"")), "schema {schema} is documented");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_returns_changes_as_they_are_committed() {
    let api = Api::start(env!("CARGO_BIN_EXE_plexus"), 9).await;
    let rev = api.c.get(1, "/v1/cluster").await.unwrap()["revision"].as_u64().unwrap();
    let url = api.c.url(1, &format!("/v1/watch?since={rev}&timeout=20"));
    let http = api.c.http.clone();
    let waiting = tokio::spawn(async move { http.get(url).send().await.unwrap().json::<Value>().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the watch waits for a change");
    api.ok("POST", "/v1/networks", net("w1", "10.40.0.0/24")).await;
    let got = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("the watch answers at once").unwrap();
    let changes = got["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{got}");
    assert_eq!((changes[0]["kind"].as_str(), changes[0]["key"].as_str()), (Some("network"), Some("w1")));
    assert_eq!(changes[0]["object"]["subnet"], "10.40.0.0/24");
    let rev2 = got["revision"].as_u64().unwrap();
    assert!(rev2 > rev);
    // Deletes come through too, and a watch from an old revision gets everything since.
    assert_eq!(api.send("DELETE", "/v1/networks/w1", None, &[]).await.0, 204);
    let all = api.c.get(1, &format!("/v1/watch?since={rev}&timeout=0")).await.unwrap();
    let kinds: Vec<(String, bool)> =
        all["changes"].as_array().unwrap().iter().map(|c| (c["key"].as_str().unwrap().to_string(), c["object"].is_null())).collect();
    assert_eq!(kinds, vec![("w1".to_string(), false), ("w1".to_string(), true)]);
    // Nothing new: an empty answer after the timeout, with the current revision.
    let none = api.c.get(1, &format!("/v1/watch?since={}&timeout=1", all["revision"])).await.unwrap();
    assert_eq!(none["changes"].as_array().map(Vec::len), Some(0));
    let (s, _, _) = api.send("GET", "/v1/watch", None, &[]).await;
    assert_eq!(s, 400, "since is required");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_subnet_leases_are_kept_by_heartbeats_and_reclaimed_after_expiry() {
    let api = Api::start(env!("CARGO_BIN_EXE_plexus"), 10).await;
    for (h, ip) in [("h1", "192.0.2.1"), ("h2", "192.0.2.2"), ("h3", "192.0.2.3")] {
        api.ok("PUT", &format!("/v1/hosts/{h}"), json!({"name": h, "tunnel_ip": ip})).await;
    }
    api.ok(
        "POST",
        "/v1/networks",
        json!({"name": "flat", "kind": {"type": "overlay"}, "subnet": "10.60.0.0/22", "ipam": "host-subnet", "host_prefix": 24, "lease_ttl_seconds": 2}),
    )
    .await;
    let ep = |h: &str| json!({"host": h});
    let a = api.ok("POST", "/v1/networks/flat/endpoints", ep("h1")).await;
    assert_eq!(a["ip"], "10.60.0.2", "h1 leases the first /24 (the gateway .1 is in it)");
    let b = api.ok("POST", "/v1/networks/flat/endpoints", ep("h2")).await;
    assert_eq!(b["ip"], "10.60.1.1", "h2 gets the next block");
    assert_eq!(api.ok("POST", "/v1/networks/flat/endpoints", ep("h1")).await["ip"], "10.60.0.3", "h1 stays in its block");
    let (s, _, p) = api.send("POST", "/v1/networks/flat/endpoints", Some(json!({"host": "h1", "ip": "10.60.1.9"}).to_string()), &[]).await;
    assert_eq!((s, p["field"].as_str()), (422, Some("ip")), "an address in another host's block is refused: {p}");
    let leases = api.c.get(1, "/v1/networks/flat/leases").await.unwrap();
    assert_eq!(leases.as_array().unwrap().len(), 2);
    // h2 goes away: its endpoint is deleted and it stops heartbeating. h1 keeps heartbeating.
    let id = b["id"].as_str().unwrap();
    assert_eq!(api.send("DELETE", &format!("/v1/networks/flat/endpoints/{id}"), None, &[]).await.0, 204);
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        api.ok("PUT", "/v1/hosts/h1", json!({"name": "h1", "tunnel_ip": "192.0.2.1"})).await;
    }
    // h2's lease expired with its block empty: h3 may take it. h1's lease held.
    let c = api.ok("POST", "/v1/networks/flat/endpoints", ep("h3")).await;
    assert_eq!(c["ip"], "10.60.1.1", "the expired, empty block is reclaimed");
    assert_eq!(api.ok("POST", "/v1/networks/flat/endpoints", ep("h1")).await["ip"], "10.60.0.4", "a heartbeating host keeps its block");
    let leases = api.c.get(1, "/v1/networks/flat/leases").await.unwrap();
    let holders: Vec<(&str, &str)> = leases.as_array().unwrap().iter().map(|l| (l["host"].as_str().unwrap(), l["block"].as_str().unwrap())).collect();
    assert_eq!(holders, vec![("h1", "10.60.0.0/24"), ("h3", "10.60.1.0/24")]);
    let (s, _, p) = api
        .send(
            "POST",
            "/v1/networks",
            Some(json!({"name": "bad", "kind": {"type": "overlay"}, "subnet": "10.61.0.0/24", "ipam": "host-subnet", "host_prefix": 20}).to_string()),
            &[],
        )
        .await;
    assert_eq!((s, p["field"].as_str()), (422, Some("host_prefix")), "{p}");
}
